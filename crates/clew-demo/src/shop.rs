use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
const INTERNAL: i32 = 1;

/// How many times a call happens per invocation of its parent.
#[derive(Clone, Copy, Debug)]
enum Count {
    Once,
    /// Uniformly between the two bounds, inclusive.
    Between(u32, u32),
    /// With this probability.
    Sometimes(f64),
}

impl Count {
    fn mean(self) -> f64 {
        match self {
            Count::Once => 1.0,
            Count::Between(a, b) => (a + b) as f64 / 2.0,
            Count::Sometimes(p) => p,
        }
    }

    fn draw(self, rng: &mut SmallRng) -> u32 {
        match self {
            Count::Once => 1,
            Count::Between(a, b) => rng.random_range(a..=b),
            Count::Sometimes(p) => u32::from(rng.random_bool(p)),
        }
    }
}

/// An operation of an instrumented service, as a SERVER (or CONSUMER) span and what it does.
#[derive(Clone, Debug)]
struct Operation {
    service: &'static str,
    name: &'static str,
    route: Option<&'static str>,
    method: Option<&'static str>,
    /// Own work, milliseconds: base plus an exponential tail with this mean.
    self_ms: (f64, f64),
    error_rate: f64,
    calls: Vec<(Count, Call)>,
}

#[derive(Clone, Debug)]
enum Call {
    /// An instrumented service over HTTP: CLIENT span here, SERVER span there.
    Http(Operation),
    /// Like Http, but retried once when the first attempt fails.
    HttpWithRetry(Operation),
    /// The callee does not extract the context: its SERVER span starts a new trace.
    HttpBroken(Operation),
    /// A service that sends no spans: only the CLIENT span exists.
    Uninstrumented { peer_service: &'static str, address: &'static str, name: &'static str, ms: (f64, f64), error_rate: f64 },
    /// A database call (CLIENT span with db.* attributes).
    Database { system: &'static str, namespace: &'static str, statement: &'static str, ms: (f64, f64) },
    /// Publish to a topic; each consumer gets a CONSUMER span as a child of the PRODUCER span.
    Publish { topic: &'static str, consumers: Vec<Operation> },
    /// In-process work.
    Internal { name: &'static str, ms: (f64, f64) },
}

fn op(service: &'static str, name: &'static str, self_ms: (f64, f64), calls: Vec<(Count, Call)>) -> Operation {
    Operation { service, name, route: None, method: None, self_ms, error_rate: 0.004, calls }
}

fn http(service: &'static str, method: &'static str, route: &'static str, self_ms: (f64, f64), calls: Vec<(Count, Call)>) -> Operation {
    let name: &'static str = Box::leak(format!("{method} {route}").into_boxed_str());
    Operation { service, name, route: Some(route), method: Some(method), self_ms, error_rate: 0.008, calls }
}

fn failing(mut operation: Operation, error_rate: f64) -> Operation {
    operation.error_rate = error_rate;
    operation
}

fn db(system: &'static str, namespace: &'static str, statement: &'static str, ms: (f64, f64)) -> Call {
    Call::Database { system, namespace, statement, ms }
}

/// Service → (team, versions, SDK versions).
const SERVICES: &[(&str, &str, &[&str], &str)] = &[
    ("web-gateway", "edge", &["3.2.0", "3.3.0"], "1.27.0"),
    ("frontend", "storefront", &["2024.11.2"], "1.27.0"),
    ("image-service", "storefront", &["1.0.4"], "1.24.0"),
    ("auth-service", "identity", &["5.1.0"], "1.30.0"),
    ("user-service", "identity", &["2.0.1", "2.1.0"], "1.30.0"),
    ("loyalty-service", "identity", &["0.9.3"], "1.24.0"),
    ("product-catalog", "catalog", &["4.4.0"], "1.27.0"),
    ("pricing-service", "catalog", &["1.8.2"], "1.27.0"),
    ("currency-service", "catalog", &["1.1.0"], "1.24.0"),
    ("review-service", "catalog", &["0.3.1"], "1.24.0"),
    ("search-service", "discovery", &["6.0.0"], "1.30.0"),
    ("recommendation-service", "discovery", &["2.2.0"], "1.27.0"),
    ("ad-service", "discovery", &["1.0.0"], "1.24.0"),
    ("cart-service", "checkout", &["3.0.2"], "1.30.0"),
    ("checkout-service", "checkout", &["7.1.0", "7.2.0"], "1.30.0"),
    ("tax-service", "checkout", &["1.2.0"], "1.27.0"),
    ("order-service", "orders", &["2.5.1"], "1.27.0"),
    ("inventory-service", "fulfillment", &["1.9.0"], "1.24.0"),
    ("shipping-service", "fulfillment", &["3.3.3"], "1.24.0"),
    ("warehouse-service", "fulfillment", &["0.8.0"], "1.24.0"),
    ("payment-service", "payments", &["4.0.0"], "1.30.0"),
    ("fraud-detection", "payments", &["1.5.0"], "1.30.0"),
    ("notification-service", "messaging", &["2.0.0"], "1.27.0"),
    ("email-service", "messaging", &["1.3.0"], "1.27.0"),
    ("audit-service", "platform", &["1.0.1"], "1.24.0"),
    ("feature-flags", "platform", &["0.5.0"], "1.30.0"),
];

fn topology() -> Vec<Operation> {
    let flags = || {
        (
            Count::Once,
            Call::Http(op("feature-flags", "GET /flags", (0.3, 0.2), vec![(Count::Once, db("redis", "flags", "GET flags:*", (0.2, 0.1)))])),
        )
    };
    let session = || {
        (
            Count::Once,
            Call::Http(op(
                "auth-service",
                "POST /session/validate",
                (0.8, 0.5),
                vec![(Count::Once, db("redis", "sessions", "GET session:?", (0.3, 0.2)))],
            )),
        )
    };
    let price = || {
        Call::Http(op(
            "pricing-service",
            "GET /price/{sku}",
            (1.0, 0.8),
            vec![
                (Count::Once, Call::Http(op("currency-service", "GET /convert", (0.5, 0.3), vec![]))),
                (Count::Once, db("postgresql", "pricing", "SELECT price FROM prices WHERE sku = $1", (1.2, 1.0))),
            ],
        ))
    };
    let product = || {
        Call::Http(op(
            "product-catalog",
            "GET /products/{id}",
            (2.0, 1.5),
            vec![(Count::Once, db("postgresql", "catalog", "SELECT * FROM products WHERE id = $1", (2.0, 2.0))), (Count::Once, price())],
        ))
    };
    let recommendations = || {
        // The slow dependency: a heavy tail.
        (
            Count::Once,
            Call::Http(op("recommendation-service", "GET /recommendations", (35.0, 60.0), vec![(Count::Between(2, 4), product())])),
        )
    };
    let inventory = || {
        failing(
            op(
                "inventory-service",
                "GET /stock/{sku}",
                (1.0, 1.0),
                vec![(
                    Count::Once,
                    Call::Uninstrumented {
                        peer_service: "legacy-inventory",
                        address: "inventory.legacy.internal",
                        name: "GET /stock",
                        ms: (8.0, 6.0),
                        error_rate: 0.01,
                    },
                )],
            ),
            0.05,
        )
    };
    vec![
        http(
            "web-gateway",
            "GET",
            "/",
            (1.0, 0.5),
            vec![(
                Count::Once,
                Call::Http(op(
                    "frontend",
                    "GET /",
                    (4.0, 2.0),
                    vec![
                        flags(),
                        recommendations(),
                        (Count::Once, Call::Http(op("ad-service", "GET /ads", (3.0, 2.0), vec![]))),
                        (Count::Between(4, 8), Call::Http(op("image-service", "GET /images/{id}", (0.8, 0.6), vec![]))),
                    ],
                )),
            )],
        ),
        http(
            "web-gateway",
            "GET",
            "/product/{id}",
            (1.0, 0.5),
            vec![(
                Count::Once,
                Call::Http(op(
                    "frontend",
                    "GET /product/{id}",
                    (3.0, 2.0),
                    vec![
                        flags(),
                        (Count::Once, product()),
                        (
                            Count::Sometimes(0.7),
                            Call::Http(failing(
                                op(
                                    "review-service",
                                    "GET /reviews/{id}",
                                    (2.0, 2.0),
                                    vec![(Count::Once, db("mongodb", "reviews", "find reviews", (2.0, 1.5)))],
                                ),
                                0.03,
                            )),
                        ),
                        recommendations(),
                        (
                            Count::Once,
                            Call::Http(op(
                                "inventory-service",
                                "GET /stock/{sku}",
                                (1.0, 1.0),
                                vec![(
                                    Count::Once,
                                    Call::Uninstrumented {
                                        peer_service: "legacy-inventory",
                                        address: "inventory.legacy.internal",
                                        name: "GET /stock",
                                        ms: (8.0, 6.0),
                                        error_rate: 0.01,
                                    },
                                )],
                            )),
                        ),
                    ],
                )),
            )],
        ),
        http(
            "web-gateway",
            "POST",
            "/cart",
            (1.0, 0.5),
            vec![
                session(),
                (
                    Count::Once,
                    Call::Http(op(
                        "cart-service",
                        "POST /cart/items",
                        (2.0, 1.0),
                        vec![
                            (Count::Once, Call::HttpWithRetry(inventory())),
                            (
                                Count::Once,
                                Call::Http(op(
                                    "pricing-service",
                                    "GET /price/{sku}",
                                    (1.0, 0.8),
                                    vec![
                                        (Count::Once, Call::Http(op("currency-service", "GET /convert", (0.5, 0.3), vec![]))),
                                        (Count::Once, db("postgresql", "pricing", "SELECT price FROM prices WHERE sku = $1", (1.2, 1.0))),
                                    ],
                                )),
                            ),
                            (Count::Once, db("redis", "carts", "HSET cart:?", (0.4, 0.2))),
                        ],
                    )),
                ),
            ],
        ),
        http(
            "web-gateway",
            "POST",
            "/checkout",
            (1.5, 0.5),
            vec![
                session(),
                (
                    Count::Once,
                    Call::Http(op(
                        "checkout-service",
                        "POST /checkout",
                        (5.0, 3.0),
                        vec![
                            (
                                Count::Once,
                                Call::Http(op(
                                    "cart-service",
                                    "GET /cart",
                                    (1.0, 0.5),
                                    vec![(Count::Once, db("redis", "carts", "HGETALL cart:?", (0.4, 0.2)))],
                                )),
                            ),
                            (Count::Once, Call::Http(op("tax-service", "POST /tax/quote", (3.0, 2.0), vec![]))),
                            (
                                Count::Once,
                                Call::Http(failing(
                                    op(
                                        "payment-service",
                                        "POST /payments",
                                        (4.0, 3.0),
                                        vec![
                                            (
                                                Count::Once,
                                                Call::Http(op(
                                                    "fraud-detection",
                                                    "POST /score",
                                                    (12.0, 8.0),
                                                    vec![(Count::Once, Call::Internal { name: "model.evaluate", ms: (6.0, 4.0) })],
                                                )),
                                            ),
                                            (
                                                Count::Once,
                                                Call::Uninstrumented {
                                                    peer_service: "payment-provider",
                                                    address: "api.payments.example.com",
                                                    name: "POST /v2/charges",
                                                    ms: (120.0, 80.0),
                                                    error_rate: 0.02,
                                                },
                                            ),
                                        ],
                                    ),
                                    0.01,
                                )),
                            ),
                            (
                                Count::Once,
                                Call::Http(op(
                                    "order-service",
                                    "POST /orders",
                                    (3.0, 2.0),
                                    vec![
                                        (Count::Once, db("postgresql", "orders", "INSERT INTO orders VALUES ($1, $2, $3)", (3.0, 2.0))),
                                        (
                                            Count::Once,
                                            Call::Publish {
                                                topic: "order-events",
                                                consumers: vec![
                                                    op(
                                                        "notification-service",
                                                        "order-events process",
                                                        (2.0, 1.0),
                                                        vec![(
                                                            Count::Once,
                                                            Call::Http(op("email-service", "POST /emails", (5.0, 4.0), vec![])),
                                                        )],
                                                    ),
                                                    op(
                                                        "audit-service",
                                                        "order-events process",
                                                        (1.0, 0.5),
                                                        vec![(
                                                            Count::Once,
                                                            db("postgresql", "audit", "INSERT INTO audit_log VALUES ($1)", (1.0, 0.5)),
                                                        )],
                                                    ),
                                                ],
                                            },
                                        ),
                                    ],
                                )),
                            ),
                            // Context propagation breaks here: shipping-service ignores the incoming traceparent.
                            (
                                Count::Once,
                                Call::HttpBroken(op(
                                    "shipping-service",
                                    "POST /shipments/quote",
                                    (4.0, 2.0),
                                    vec![(Count::Once, Call::Http(op("warehouse-service", "GET /warehouses/nearest", (2.0, 1.0), vec![])))],
                                )),
                            ),
                            (Count::Sometimes(0.5), Call::Http(op("loyalty-service", "POST /points", (2.0, 1.0), vec![]))),
                        ],
                    )),
                ),
            ],
        ),
        http(
            "web-gateway",
            "POST",
            "/login",
            (1.0, 0.5),
            vec![(
                Count::Once,
                Call::Http(failing(
                    op(
                        "auth-service",
                        "POST /login",
                        (6.0, 3.0),
                        vec![
                            (
                                Count::Once,
                                Call::Http(op(
                                    "user-service",
                                    "GET /users/by-email",
                                    (2.0, 1.0),
                                    vec![(Count::Once, db("postgresql", "users", "SELECT * FROM users WHERE email = $1", (1.5, 1.0)))],
                                )),
                            ),
                            (Count::Once, Call::Internal { name: "bcrypt.verify", ms: (25.0, 5.0) }),
                            (Count::Once, db("redis", "sessions", "SET session:?", (0.3, 0.2))),
                        ],
                    ),
                    0.04,
                )),
            )],
        ),
        http(
            "web-gateway",
            "GET",
            "/search",
            (1.0, 0.5),
            vec![(
                Count::Once,
                Call::Http(op(
                    "search-service",
                    "GET /search",
                    (4.0, 3.0),
                    vec![
                        (Count::Once, db("elasticsearch", "products", "POST /products/_search", (15.0, 10.0))),
                        // N+1: every hit is priced one call at a time.
                        (Count::Between(3, 7), price()),
                        (Count::Sometimes(0.3), Call::Http(op("ad-service", "GET /ads", (3.0, 2.0), vec![]))),
                    ],
                )),
            )],
        ),
    ]
}

/// What the simulated shop is, for tests to compare analyses with.
#[derive(Debug, Clone, Serialize)]
pub struct GroundTruth {
    /// Instrumented services with their team and versions.
    pub services: BTreeMap<String, ServiceTruth>,
    /// Called but not instrumented: name → kind (`http`, `database`).
    pub uninstrumented: BTreeMap<String, String>,
    /// Distinct caller → callee edges, callee named as Clew names virtual peers.
    pub edges: BTreeSet<(String, String)>,
    /// Entry operations (root service + operation).
    pub entry_operations: Vec<String>,
    /// Mean calls per request of each `service operation` (SERVER/CONSUMER spans), per entry operation.
    pub fan_out: BTreeMap<String, BTreeMap<String, f64>>,
    /// Calls where context propagation breaks: (caller, callee, reason).
    pub propagation_breaks: Vec<(String, String, String)>,
    pub message_topics: Vec<String>,
    /// Services that send spans (all of them unless only some teams trace).
    pub traced: BTreeSet<String>,
    /// Services that do not send spans but are called by one that does: the virtual nodes.
    pub untraced_called: BTreeSet<String>,
    /// Traced services called by an untraced one: their server spans start new traces.
    pub roots_behind_untraced: BTreeSet<String>,
    /// Instrumentation mistakes planted per traced service, by the name of the rule that finds them.
    pub quality_gaps: BTreeMap<String, BTreeSet<String>>,
    /// Per entry operation, the services its traces show (traced, reached with the context)
    /// with the probability that a request reaches each.
    pub entry_services: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per entry operation, the services its traces call that answer with no span in the same
    /// trace (not traced, a third party, or dropping the context; databases left out), with
    /// the probability that a request calls each.
    pub entry_gaps: BTreeMap<String, BTreeMap<String, f64>>,
    /// What was planted for the performance analyses, when it was.
    pub incidents: Option<IncidentTruth>,
    /// The load test run beside production traffic, when there is one.
    pub load_test: Option<LoadTestTruth>,
}

/// A load test: extra traffic on some entry operations, tagged with a traffic source, with one
/// dependency answered by a mock (so its service never sees the test's requests).
#[derive(Debug, Clone, Serialize)]
pub struct LoadTestTruth {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// The attribute on every span of its traces, and its value.
    pub attribute: String,
    pub source: String,
    /// The entry operations it calls (`service operation`), equally often.
    pub entries: Vec<String>,
    /// Traces per second of the test, for each trace per second of production traffic.
    pub rate_factor: f64,
    /// The service a mock stands in for.
    pub mocked: String,
    /// Its operations and every one below them (`service operation`): what the test never reaches.
    pub mocked_operations: Vec<String>,
}

/// `service operation` of `operation` and of every server or consumer operation below it
/// (a callee that drops the context starts traces of its own: not below it).
fn below(operation: &Operation, out: &mut Vec<String>) {
    let name = format!("{} {}", operation.service, operation.name);
    if !out.contains(&name) {
        out.push(name);
    }
    for (_, call) in &operation.calls {
        match call {
            Call::Http(callee) | Call::HttpWithRetry(callee) => below(callee, out),
            Call::Publish { consumers, .. } => consumers.iter().for_each(|c| below(c, out)),
            _ => {}
        }
    }
}

/// The operations of `service` reachable from `operation`, and everything below them.
fn mocked_operations(operation: &Operation, service: &str, out: &mut Vec<String>) {
    if operation.service == service {
        below(operation, out);
        return;
    }
    for (_, call) in &operation.calls {
        match call {
            Call::Http(callee) | Call::HttpWithRetry(callee) | Call::HttpBroken(callee) => mocked_operations(callee, service, out),
            Call::Publish { consumers, .. } => consumers.iter().for_each(|c| mocked_operations(c, service, out)),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceTruth {
    pub team: String,
    pub versions: Vec<String>,
    pub sdk_version: String,
}

/// Known causes planted in the traffic, for the performance analyses to find.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentTruth {
    /// Traces that start at or after this time see the deployed versions.
    pub deploy_at_unix_nano: u64,
    /// Services deployed then, with their new version.
    pub deployed: BTreeMap<String, String>,
    /// (service, operation, callee operation, calls per request before, after): an N+1 loop
    /// the deploy brought in.
    pub n_plus_one: (String, String, String, f64, f64),
    /// (service, version, error rate of its server spans): a version that fails.
    pub erroring_version: (String, String, f64),
    /// (service, `cloud.region`, extra milliseconds per span): one region is slow.
    pub slow_region: (String, String, f64),
    /// The dependency with a heavy latency tail: the largest share of the critical path.
    pub slow_dependency: String,
    /// Mean calls per request after the deploy, as `fan_out`.
    pub fan_out_after_deploy: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The deploy: (service, new version).
const DEPLOYED: &[(&str, &str)] = &[("product-catalog", "4.5.0"), ("cart-service", "3.1.0")];
/// The N+1 loop: the deployed catalog asks for the price of every variant of a product.
const N_PLUS_ONE: (&str, &str, Count) = ("product-catalog", "pricing-service", Count::Between(4, 6));
/// The deployed cart fails this often.
const ERRORING_RATE: f64 = 0.15;
/// Search in one region is slow.
const SLOW_REGION: (&str, &str, f64) = ("search-service", "us-east-1", 60.0);
const SLOW_DEPENDENCY: &str = "recommendation-service";
/// Search takes longer the more hits it returns: (service, attribute, most hits, µs per hit).
pub const HITS: (&str, &str, u16, u64) = ("search-service", "app.search.hits", 400, 40);

/// The load test: (attribute, value, entry operations of the gateway, the mocked service,
/// minutes before the deploy it starts, minutes it lasts). Before the deploy, so that the
/// failures the deploy brings are not confounded with the test's traffic.
const LOAD_TEST: (&str, &str, &[&str], &str, u64, u64) =
    ("traffic.source", "load_test", &["POST /checkout", "GET /product/{id}"], "payment-service", 6, 3);

/// The topology after the deploy.
fn deploy(operation: &mut Operation) {
    if operation.service == DEPLOYED[1].0 {
        operation.error_rate = ERRORING_RATE;
    }
    let loops = operation.service == N_PLUS_ONE.0;
    for (count, call) in &mut operation.calls {
        match call {
            Call::Http(callee) | Call::HttpWithRetry(callee) | Call::HttpBroken(callee) => {
                if loops && callee.service == N_PLUS_ONE.1 {
                    *count = N_PLUS_ONE.2;
                }
                deploy(callee);
            }
            Call::Publish { consumers, .. } => consumers.iter_mut().for_each(deploy),
            _ => {}
        }
    }
}

/// The simulator. Deterministic for a given seed.
pub struct Shop {
    entries: Vec<Operation>,
    /// With incidents: the topology after the deploy, and when it happens.
    deployed: Option<(Vec<Operation>, u64)>,
    rng: SmallRng,
    /// Relative traffic per entry operation (same order as the entries).
    weights: Vec<f64>,
    id_counter: u64,
    /// Services that send no spans: those of the teams that have not adopted tracing.
    untraced: BTreeSet<&'static str>,
    /// With incidents: when the load test runs, and its own random draws and IDs (so that
    /// production traffic is the same with or without it).
    load_test: Option<(u64, u64)>,
    load_rng: SmallRng,
    load_ids: u64,
}

struct Builder<'a> {
    spans: BTreeMap<&'static str, Vec<Span>>,
    rng: &'a mut SmallRng,
    id_counter: &'a mut u64,
    untraced: &'a BTreeSet<&'static str>,
    /// Whether search in the slow region is slow.
    slow_region: bool,
    /// Traces of the load test: every span tagged, the mocked service never called. A callee
    /// that drops the context starts a trace without the tag (baggage travels with the context).
    load_test: BTreeSet<Vec<u8>>,
}

/// Services whose SDK predates the stable HTTP semantic conventions: their server spans say
/// `http.method` and `http.status_code`.
const OLD_CONVENTIONS_SDK: &str = "1.24.0";
/// A service deployed without `service.version` on its resource.
const WITHOUT_VERSION: &str = "ad-service";
/// A service that answers 500 without setting the span status to error.
const ERRORS_WITHOUT_STATUS: &str = "review-service";

fn sdk_of(service: &str) -> &'static str {
    SERVICES.iter().find(|s| s.0 == service).map_or("", |s| s.3)
}

/// The teams of the shop, in the order of [`SERVICES`].
pub fn teams() -> Vec<&'static str> {
    let mut teams: Vec<&'static str> = Vec::new();
    for (_, team, _, _) in SERVICES {
        if !teams.contains(team) {
            teams.push(team);
        }
    }
    teams
}

/// The shop's service catalog as YAML: every service with its team and tier, the gateway as the
/// customer-facing entry point, and the services that never send spans (a third-party provider,
/// a legacy system).
pub fn catalog_yaml() -> String {
    let mut out = String::from("# The demo shop's service catalog.\nservices:\n");
    for (service, team, _, _) in SERVICES {
        let tier = match *service {
            "web-gateway" | "checkout-service" | "payment-service" | "cart-service" | "auth-service" => 1,
            "frontend" | "product-catalog" | "pricing-service" | "search-service" | "order-service" | "inventory-service" => 2,
            _ => 3,
        };
        out.push_str(&format!("  - service: {service}\n    team: {team}\n    tier: {tier}\n"));
        if *service == "web-gateway" {
            out.push_str("    customer_facing: true\n    notes: Every request from the apps and the website enters here.\n");
        }
    }
    out.push_str(
        "  - service: legacy-inventory\n    team: fulfillment\n    tier: 2\n    aliases: [inventory.legacy.internal]\n    notes: The old stock system; cannot be instrumented before its replacement.\n",
    );
    out.push_str("  - service: payment-provider\n    team: payments\n    tier: 1\n    external: true\n    notes: Third-party API.\n");
    out.push_str("critical_operations:\n");
    for (name, operation, description) in CRITICAL_OPERATIONS {
        out.push_str(&format!("  - name: {name}\n    service: web-gateway\n    operation: {operation}\n    description: {description}\n"));
    }
    out
}

/// The shop's critical user operations: (name, entry operation of the gateway, description).
pub const CRITICAL_OPERATIONS: &[(&str, &str, &str)] = &[
    ("Checkout", "POST /checkout", "A customer pays for their cart."),
    ("Product page", "GET /product/{id}", "A customer looks at a product."),
    ("Login", "POST /login", "A customer signs in."),
];

impl Shop {
    pub fn new(seed: u64) -> Self {
        Self {
            entries: topology(),
            deployed: None,
            rng: SmallRng::seed_from_u64(seed),
            weights: vec![30.0, 30.0, 12.0, 6.0, 7.0, 15.0],
            id_counter: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            untraced: BTreeSet::new(),
            load_test: None,
            load_rng: SmallRng::seed_from_u64(seed ^ 0x10AD_7E57),
            load_ids: (seed ^ 0x10AD_7E57).wrapping_mul(0xD1B5_4A32_D192_ED03),
        }
    }

    /// Only the services of these teams send spans, as in an organisation half way through
    /// adopting tracing. Unknown team names are an error.
    pub fn with_traced_teams(mut self, teams: &[String]) -> Result<Self, String> {
        let known = self::teams();
        if let Some(unknown) = teams.iter().find(|t| !known.contains(&t.as_str())) {
            return Err(format!("unknown team {unknown}; the shop's teams are {}", known.join(", ")));
        }
        self.untraced = SERVICES.iter().filter(|(_, team, _, _)| !teams.iter().any(|t| t == team)).map(|(s, _, _, _)| *s).collect();
        Ok(self)
    }

    /// Plants known causes for the performance analyses: a deploy at `deploy_at_unix_nano`
    /// (an N+1 loop in the catalog, a failing cart version), a slow region for search, beside
    /// the recommendation service's heavy tail that is always there; and six minutes before
    /// the deploy, a three-minute load test of checkout and the product page (as many traces
    /// as production sends, tagged `traffic.source=load_test`, with payments mocked).
    pub fn with_incidents(mut self, deploy_at_unix_nano: u64) -> Self {
        let mut after = topology();
        after.iter_mut().for_each(deploy);
        self.deployed = Some((after, deploy_at_unix_nano));
        let start = deploy_at_unix_nano.saturating_sub(LOAD_TEST.4 * 60_000_000_000);
        self.load_test = Some((start, start + LOAD_TEST.5 * 60_000_000_000));
        self
    }

    /// One export request per service that took part, for `traces` traces starting around `now_unix_nano`.
    pub fn generate(&mut self, traces: usize, now_unix_nano: u64) -> ExportTraceServiceRequest {
        let total: f64 = self.weights.iter().sum();
        let deployed = self.deployed.as_ref().is_some_and(|(_, at)| now_unix_nano >= *at);
        let entries = match &self.deployed {
            Some((after, _)) if deployed => after,
            _ => &self.entries,
        };
        let mut builder = Builder::new(&mut self.rng, &mut self.id_counter, &self.untraced, self.deployed.is_some());
        for _ in 0..traces {
            let mut pick = builder.rng.random_range(0.0..total);
            let mut index = 0;
            while pick >= self.weights[index] && index + 1 < self.weights.len() {
                pick -= self.weights[index];
                index += 1;
            }
            let entry = &entries[index];
            let trace_id = builder.trace_id();
            let offset = builder.rng.random_range(0..50_000_000u64);
            builder.server(entry, trace_id, None, now_unix_nano.saturating_sub(offset), SERVER);
        }
        let mut spans = builder.spans;
        if self.load_test.is_some_and(|(from, to)| (from..to).contains(&now_unix_nano)) {
            let tested: Vec<&Operation> =
                LOAD_TEST.2.iter().filter_map(|name| entries.iter().find(|e| e.service == "web-gateway" && e.name == *name)).collect();
            let mut builder = Builder::new(&mut self.load_rng, &mut self.load_ids, &self.untraced, self.deployed.is_some());
            for i in 0..traces {
                let entry = tested[i % tested.len()];
                let trace_id = builder.trace_id();
                builder.load_test.insert(trace_id.clone());
                let offset = builder.rng.random_range(0..50_000_000u64);
                builder.server(entry, trace_id, None, now_unix_nano.saturating_sub(offset), SERVER);
            }
            for (service, tested_spans) in builder.spans {
                spans.entry(service).or_default().extend(tested_spans);
            }
        }
        let resource_spans = spans
            .into_iter()
            .map(|(service, spans)| {
                let (_, team, versions, sdk) = SERVICES.iter().find(|s| s.0 == service).expect("every service is listed");
                let deployed_version = DEPLOYED.iter().find(|(s, _)| deployed && *s == service).map(|(_, v)| *v);
                let version = deployed_version.unwrap_or(versions[(spans.len() + spans[0].span_id[0] as usize) % versions.len()]);
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: [
                            kv("service.name", service),
                            kv("service.namespace", team),
                            kv("service.version", version),
                            kv("deployment.environment.name", "production"),
                            kv("telemetry.sdk.name", "opentelemetry"),
                            kv("telemetry.sdk.language", if service.contains("service") { "java" } else { "go" }),
                            kv("telemetry.sdk.version", sdk),
                            kv("host.name", &format!("{service}-{}", spans[0].span_id[1] % 3)),
                        ]
                        .into_iter()
                        .filter(|a| !(a.key == "service.version" && service == WITHOUT_VERSION))
                        .collect(),
                        dropped_attributes_count: 0,
                        entity_refs: vec![],
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "io.opentelemetry.http".into(),
                            version: sdk.to_string(),
                            attributes: vec![],
                            dropped_attributes_count: 0,
                        }),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                }
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    /// The shop's ground truth, computed from the same topology that generates traffic.
    pub fn ground_truth(&self) -> GroundTruth {
        let mut truth = GroundTruth {
            services: SERVICES
                .iter()
                .map(|(name, team, versions, sdk)| {
                    (
                        name.to_string(),
                        ServiceTruth {
                            team: team.to_string(),
                            versions: versions.iter().map(|v| v.to_string()).collect(),
                            sdk_version: sdk.to_string(),
                        },
                    )
                })
                .collect(),
            uninstrumented: BTreeMap::new(),
            edges: BTreeSet::new(),
            entry_operations: Vec::new(),
            fan_out: BTreeMap::new(),
            propagation_breaks: Vec::new(),
            message_topics: Vec::new(),
            traced: SERVICES.iter().filter(|(s, _, _, _)| !self.untraced.contains(s)).map(|(s, _, _, _)| s.to_string()).collect(),
            untraced_called: BTreeSet::new(),
            roots_behind_untraced: BTreeSet::new(),
            quality_gaps: BTreeMap::new(),
            entry_services: BTreeMap::new(),
            entry_gaps: BTreeMap::new(),
            incidents: None,
            load_test: None,
        };
        for entry in &self.entries {
            let key = format!("{} {}", entry.service, entry.name);
            truth.entry_operations.push(key.clone());
            truth.edges.insert(("user".into(), entry.service.into()));
            let mut fan_out = BTreeMap::new();
            walk_truth(entry, 1.0, &mut fan_out, &mut truth);
            walk_tracing(entry, true, true, &self.untraced, &mut truth);
            let (mut services, mut gaps) = (BTreeMap::new(), BTreeMap::new());
            walk_entry(entry, 1.0, &self.untraced, &mut services, &mut gaps);
            truth.entry_services.insert(key.clone(), services);
            truth.entry_gaps.insert(key.clone(), gaps);
            truth.fan_out.insert(key, fan_out);
        }
        if let Some((after, at)) = &self.deployed {
            let mut fan_out_after_deploy = BTreeMap::new();
            for entry in after {
                let mut fan_out = BTreeMap::new();
                walk_truth(entry, 1.0, &mut fan_out, &mut truth);
                fan_out_after_deploy.insert(format!("{} {}", entry.service, entry.name), fan_out);
            }
            let callee = "pricing-service GET /price/{sku}";
            truth.incidents = Some(IncidentTruth {
                deploy_at_unix_nano: *at,
                deployed: DEPLOYED.iter().map(|(s, v)| (s.to_string(), v.to_string())).collect(),
                n_plus_one: (N_PLUS_ONE.0.into(), "GET /products/{id}".into(), callee.into(), 1.0, N_PLUS_ONE.2.mean()),
                erroring_version: (DEPLOYED[1].0.into(), DEPLOYED[1].1.into(), ERRORING_RATE),
                slow_region: (SLOW_REGION.0.into(), SLOW_REGION.1.into(), SLOW_REGION.2),
                slow_dependency: SLOW_DEPENDENCY.into(),
                fan_out_after_deploy,
            });
        }
        if let Some((start, end)) = self.load_test {
            let mut mocked = Vec::new();
            for entry in self.entries.iter().filter(|e| e.service == "web-gateway" && LOAD_TEST.2.contains(&e.name)) {
                mocked_operations(entry, LOAD_TEST.3, &mut mocked);
            }
            truth.load_test = Some(LoadTestTruth {
                start_unix_nano: start,
                end_unix_nano: end,
                attribute: LOAD_TEST.0.into(),
                source: LOAD_TEST.1.into(),
                entries: LOAD_TEST.2.iter().map(|name| format!("web-gateway {name}")).collect(),
                rate_factor: 1.0,
                mocked: LOAD_TEST.3.into(),
                mocked_operations: mocked,
            });
        }
        truth.propagation_breaks.dedup();
        truth.message_topics.sort();
        truth.message_topics.dedup();
        truth
    }
}

/// What one entry operation's traces show: the traced services they reach, and the calls
/// that end in a CLIENT span with nothing under it; `reach` is the probability of getting here.
fn walk_entry(
    operation: &Operation,
    reach: f64,
    untraced: &BTreeSet<&'static str>,
    services: &mut BTreeMap<String, f64>,
    gaps: &mut BTreeMap<String, f64>,
) {
    let note = |map: &mut BTreeMap<String, f64>, name: &str, p: f64| {
        let entry = map.entry(name.to_string()).or_insert(0.0);
        *entry = entry.max(p);
    };
    note(services, operation.service, reach);
    for (count, call) in &operation.calls {
        let p = reach * count.mean().min(1.0);
        match call {
            Call::Http(callee) | Call::HttpWithRetry(callee) if !untraced.contains(callee.service) => {
                walk_entry(callee, p, untraced, services, gaps)
            }
            Call::Http(callee) | Call::HttpWithRetry(callee) | Call::HttpBroken(callee) => note(gaps, callee.service, p),
            Call::Uninstrumented { peer_service, .. } => note(gaps, peer_service, p),
            Call::Publish { consumers, .. } => {
                for consumer in consumers.iter().filter(|c| !untraced.contains(c.service)) {
                    walk_entry(consumer, p, untraced, services, gaps);
                }
            }
            Call::Database { .. } | Call::Internal { .. } => {}
        }
    }
}

/// Which services the traces show, and where an untraced service cuts a trace in two.
fn walk_tracing(operation: &Operation, server: bool, caller_traced: bool, untraced: &BTreeSet<&'static str>, truth: &mut GroundTruth) {
    let traced = !untraced.contains(operation.service);
    if traced {
        let mut gaps = Vec::new();
        if server && sdk_of(operation.service) == OLD_CONVENTIONS_SDK {
            gaps.push("deprecated_attribute");
        }
        if operation.service == WITHOUT_VERSION {
            gaps.push("missing_service_version");
        }
        if operation.service == ERRORS_WITHOUT_STATUS {
            gaps.push("error_without_status");
        }
        for gap in gaps {
            truth.quality_gaps.entry(operation.service.into()).or_default().insert(gap.into());
        }
    }
    if traced && !caller_traced {
        truth.roots_behind_untraced.insert(operation.service.into());
    }
    if !traced && caller_traced {
        truth.untraced_called.insert(operation.service.into());
    }
    for (_, call) in &operation.calls {
        match call {
            Call::Http(callee) | Call::HttpWithRetry(callee) | Call::HttpBroken(callee) => {
                walk_tracing(callee, true, traced, untraced, truth)
            }
            Call::Publish { consumers, .. } => {
                for consumer in consumers {
                    walk_tracing(consumer, false, traced, untraced, truth);
                }
            }
            Call::Uninstrumented { .. } | Call::Database { .. } | Call::Internal { .. } => {}
        }
    }
}

fn walk_truth(operation: &Operation, multiplier: f64, fan_out: &mut BTreeMap<String, f64>, truth: &mut GroundTruth) {
    *fan_out.entry(format!("{} {}", operation.service, operation.name)).or_insert(0.0) += multiplier;
    for (count, call) in &operation.calls {
        let calls = multiplier * count.mean();
        match call {
            Call::Http(callee) => {
                truth.edges.insert((operation.service.into(), callee.service.into()));
                walk_truth(callee, calls, fan_out, truth);
            }
            Call::HttpWithRetry(callee) => {
                truth.edges.insert((operation.service.into(), callee.service.into()));
                walk_truth(callee, calls * (1.0 + callee.error_rate), fan_out, truth);
            }
            Call::HttpBroken(callee) => {
                truth.edges.insert((operation.service.into(), callee.service.into()));
                truth.propagation_breaks.push((
                    operation.service.into(),
                    callee.service.into(),
                    "callee does not extract the propagated context".into(),
                ));
                // The callee's spans land in separate traces: not part of this entry's fan-out.
                let mut elsewhere = BTreeMap::new();
                walk_truth(callee, calls, &mut elsewhere, truth);
            }
            Call::Uninstrumented { peer_service, .. } => {
                truth.uninstrumented.insert(peer_service.to_string(), "http".into());
                truth.edges.insert((operation.service.into(), peer_service.to_string()));
            }
            Call::Database { system, .. } => {
                truth.uninstrumented.insert(system.to_string(), "database".into());
                truth.edges.insert((operation.service.into(), system.to_string()));
            }
            Call::Publish { topic, consumers } => {
                truth.message_topics.push(topic.to_string());
                for consumer in consumers {
                    truth.edges.insert((operation.service.into(), consumer.service.into()));
                    walk_truth(consumer, calls, fan_out, truth);
                }
            }
            Call::Internal { .. } => {}
        }
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

impl<'a> Builder<'a> {
    fn new(rng: &'a mut SmallRng, id_counter: &'a mut u64, untraced: &'a BTreeSet<&'static str>, slow_region: bool) -> Self {
        Self { spans: BTreeMap::new(), rng, id_counter, untraced, slow_region, load_test: BTreeSet::new() }
    }

    fn next_id(&mut self) -> u64 {
        // splitmix64: distinct, well-spread IDs without a global RNG lock.
        *self.id_counter = self.id_counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *self.id_counter;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) | 1
    }

    fn trace_id(&mut self) -> Vec<u8> {
        let mut id = self.next_id().to_be_bytes().to_vec();
        id.extend(self.next_id().to_be_bytes());
        id
    }

    fn span_id(&mut self) -> Vec<u8> {
        self.next_id().to_be_bytes().to_vec()
    }

    fn duration(&mut self, (base, tail): (f64, f64)) -> u64 {
        let exponential: f64 = -tail * (1.0 - self.rng.random::<f64>()).ln();
        ((base + exponential) * 1e6) as u64
    }

    /// Emits a SERVER/CONSUMER span for `operation` and everything below it; returns its end time.
    fn server(&mut self, operation: &Operation, trace_id: Vec<u8>, parent: Option<Vec<u8>>, start: u64, kind: i32) -> (u64, bool) {
        let span_id = self.span_id();
        let region = ["eu-central-1", "eu-west-1", "us-east-1"][span_id[3] as usize % 3];
        let mut self_time = self.duration(operation.self_ms);
        if self.slow_region && operation.service == SLOW_REGION.0 && region == SLOW_REGION.1 {
            self_time += (SLOW_REGION.2 * 1e6) as u64;
        }
        // Drawn from the span ID, so that the other draws stay as they were.
        let hits = (operation.service == HITS.0).then(|| u16::from_be_bytes([span_id[4], span_id[5]]) % (HITS.2 + 1));
        if let Some(hits) = hits {
            self_time += hits as u64 * HITS.3 * 1_000;
        }
        let mut cursor = start + self_time / 2;
        let mut child_failed = false;
        let traced = !self.untraced.contains(operation.service);
        for (count, call) in &operation.calls {
            for _ in 0..count.draw(self.rng) {
                let (end, failed) =
                    if traced { self.call(operation, call, &trace_id, &span_id, cursor) } else { self.untraced_call(call, cursor) };
                cursor = end;
                child_failed |= failed;
            }
        }
        let end = cursor + self_time / 2;
        let failed = self.rng.random_bool(operation.error_rate) || (child_failed && self.rng.random_bool(0.7));
        if !traced {
            return (end, failed);
        }
        let mut attributes = Vec::new();
        let old = sdk_of(operation.service) == OLD_CONVENTIONS_SDK;
        let (method_key, status_key) =
            if old { ("http.method", "http.status_code") } else { ("http.request.method", "http.response.status_code") };
        if let (Some(route), Some(method)) = (operation.route, operation.method) {
            attributes.push(kv(method_key, method));
            attributes.push(kv("http.route", route));
            attributes.push(kv("url.path", &route.replace("{id}", &format!("{}", span_id[2]))));
            attributes.push(kv_int(status_key, if failed { 500 } else { 200 }));
        } else if kind == SERVER {
            let (method, route) = operation.name.split_once(' ').unwrap_or(("GET", operation.name));
            attributes.push(kv(method_key, method));
            attributes.push(kv("http.route", route));
            attributes.push(kv_int(status_key, if failed { 500 } else { 200 }));
        } else {
            attributes.push(kv("messaging.system", "kafka"));
            attributes.push(kv("messaging.operation.type", "process"));
            attributes.push(kv("messaging.destination.name", "order-events"));
        }
        attributes.push(kv("cloud.region", region));
        if let Some(hits) = hits {
            attributes.push(kv_int(HITS.1, hits as i64));
        }
        let events = if failed { vec![exception(end, operation.service)] } else { vec![] };
        self.push(
            operation.service,
            Span {
                trace_id,
                span_id,
                parent_span_id: parent.unwrap_or_default(),
                name: operation.name.into(),
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events,
                status: (failed && operation.service != ERRORS_WITHOUT_STATUS)
                    .then(|| Status { code: 2, message: "internal error".into() }),
                ..Default::default()
            },
        );
        (end, failed)
    }

    /// A call made by a service without tracing: nothing of it is recorded, and whatever it
    /// calls starts a trace of its own, because no context travels with the request.
    fn untraced_call(&mut self, call: &Call, start: u64) -> (u64, bool) {
        let network = 300_000;
        match call {
            Call::Http(callee) | Call::HttpBroken(callee) | Call::HttpWithRetry(callee) => {
                let trace_id = self.trace_id();
                let (end, failed) = self.server(callee, trace_id, None, start + network, SERVER);
                (end + network, failed)
            }
            Call::Uninstrumented { ms, error_rate, .. } => {
                let end = start + self.duration(*ms);
                (end, self.rng.random_bool(*error_rate))
            }
            Call::Database { ms, .. } | Call::Internal { ms, .. } => (start + self.duration(*ms), false),
            Call::Publish { consumers, .. } => {
                let end = start + self.duration((0.5, 0.3));
                for consumer in consumers {
                    let delay = self.duration((2.0, 3.0));
                    let trace_id = self.trace_id();
                    self.server(consumer, trace_id, None, end + delay, CONSUMER);
                }
                (end, false)
            }
        }
    }

    fn call(&mut self, caller: &Operation, call: &Call, trace_id: &[u8], parent: &[u8], start: u64) -> (u64, bool) {
        let network = 300_000;
        if let Call::Http(callee) | Call::HttpBroken(callee) | Call::HttpWithRetry(callee) = call
            && callee.service == LOAD_TEST.3
            && self.load_test.contains(trace_id)
        {
            // The load test's requests to this service are answered by a mock: a quick reply,
            // and no span of the service's own.
            let (client_id, end) = (self.span_id(), start + self.duration((1.0, 0.5)));
            self.client(caller.service, callee, trace_id, parent, client_id, start, end, false);
            return (end, false);
        }
        match call {
            Call::Http(callee) | Call::HttpBroken(callee) => {
                let client_id = self.span_id();
                let broken = matches!(call, Call::HttpBroken(_));
                let (callee_trace, callee_parent) =
                    if broken { (self.trace_id(), None) } else { (trace_id.to_vec(), Some(client_id.clone())) };
                let (end, failed) = self.server(callee, callee_trace, callee_parent, start + network, SERVER);
                self.client(caller.service, callee, trace_id, parent, client_id, start, end + network, failed);
                (end + network, failed)
            }
            Call::HttpWithRetry(callee) => {
                let client_id = self.span_id();
                let (end, failed) = self.server(callee, trace_id.to_vec(), Some(client_id.clone()), start + network, SERVER);
                self.client(caller.service, callee, trace_id, parent, client_id, start, end + network, failed);
                if !failed {
                    return (end + network, false);
                }
                let retry_start = end + network + 5_000_000;
                let retry_id = self.span_id();
                let (end, failed) = self.server(callee, trace_id.to_vec(), Some(retry_id.clone()), retry_start + network, SERVER);
                self.client(caller.service, callee, trace_id, parent, retry_id, retry_start, end + network, failed);
                (end + network, failed)
            }
            Call::Uninstrumented { peer_service, address, name, ms, error_rate } => {
                let end = start + self.duration(*ms);
                let failed = self.rng.random_bool(*error_rate);
                let span_id = self.span_id();
                let mut attributes = vec![
                    kv("peer.service", peer_service),
                    kv("server.address", address),
                    kv_int("server.port", 443),
                    kv("http.request.method", name.split(' ').next().unwrap_or("GET")),
                    kv("url.full", &format!("https://{address}{}", name.split(' ').nth(1).unwrap_or("/"))),
                    kv_int("http.response.status_code", if failed { 503 } else { 200 }),
                ];
                if *peer_service == "payment-provider" {
                    attributes.push(kv("payment.provider.region", "eu"));
                }
                self.push(
                    caller.service,
                    Span {
                        trace_id: trace_id.to_vec(),
                        span_id,
                        parent_span_id: parent.to_vec(),
                        name: name.to_string(),
                        kind: CLIENT,
                        start_time_unix_nano: start,
                        end_time_unix_nano: end,
                        attributes,
                        events: if failed { vec![exception(end, peer_service)] } else { vec![] },
                        status: failed.then(|| Status { code: 2, message: format!("{peer_service} unavailable") }),
                        ..Default::default()
                    },
                );
                (end, failed)
            }
            Call::Database { system, namespace, statement, ms } => {
                let end = start + self.duration(*ms);
                let span_id = self.span_id();
                let operation = statement.split_whitespace().next().unwrap_or("QUERY");
                self.push(
                    caller.service,
                    Span {
                        trace_id: trace_id.to_vec(),
                        span_id,
                        parent_span_id: parent.to_vec(),
                        name: format!("{operation} {namespace}"),
                        kind: CLIENT,
                        start_time_unix_nano: start,
                        end_time_unix_nano: end,
                        attributes: vec![
                            kv("db.system", system),
                            kv("db.namespace", namespace),
                            kv("db.query.text", statement),
                            kv("db.operation.name", operation),
                        ],
                        ..Default::default()
                    },
                );
                (end, false)
            }
            Call::Publish { topic, consumers } => {
                let end = start + self.duration((0.5, 0.3));
                let producer_id = self.span_id();
                self.push(
                    caller.service,
                    Span {
                        trace_id: trace_id.to_vec(),
                        span_id: producer_id.clone(),
                        parent_span_id: parent.to_vec(),
                        name: format!("{topic} publish"),
                        kind: PRODUCER,
                        start_time_unix_nano: start,
                        end_time_unix_nano: end,
                        attributes: vec![
                            kv("messaging.system", "kafka"),
                            kv("messaging.destination.name", topic),
                            kv("messaging.operation.type", "publish"),
                        ],
                        ..Default::default()
                    },
                );
                for consumer in consumers {
                    let delay = self.duration((2.0, 3.0));
                    self.server(consumer, trace_id.to_vec(), Some(producer_id.clone()), end + delay, CONSUMER);
                }
                (end, false)
            }
            Call::Internal { name, ms } => {
                let end = start + self.duration(*ms);
                let span_id = self.span_id();
                self.push(
                    caller.service,
                    Span {
                        trace_id: trace_id.to_vec(),
                        span_id,
                        parent_span_id: parent.to_vec(),
                        name: name.to_string(),
                        kind: INTERNAL,
                        start_time_unix_nano: start,
                        end_time_unix_nano: end,
                        ..Default::default()
                    },
                );
                (end, false)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn client(
        &mut self,
        service: &'static str,
        callee: &Operation,
        trace_id: &[u8],
        parent: &[u8],
        span_id: Vec<u8>,
        start: u64,
        end: u64,
        failed: bool,
    ) {
        let (method, route) = callee.name.split_once(' ').unwrap_or(("GET", callee.name));
        self.push(
            service,
            Span {
                trace_id: trace_id.to_vec(),
                span_id,
                parent_span_id: parent.to_vec(),
                name: format!("{method} {}", callee.service),
                kind: CLIENT,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes: vec![
                    kv("http.request.method", method),
                    kv("server.address", callee.service),
                    kv_int("server.port", 8080),
                    kv("url.template", route),
                    kv_int("http.response.status_code", if failed { 500 } else { 200 }),
                ],
                status: failed.then(|| Status { code: 2, message: String::new() }),
                ..Default::default()
            },
        );
    }

    fn push(&mut self, service: &'static str, mut span: Span) {
        if self.load_test.contains(&span.trace_id) {
            // As a baggage span processor would copy the propagated traffic source.
            span.attributes.push(kv(LOAD_TEST.0, LOAD_TEST.1));
        }
        self.spans.entry(service).or_default().push(span);
    }
}

fn exception(time: u64, service: &str) -> span::Event {
    span::Event {
        time_unix_nano: time,
        name: "exception".into(),
        attributes: vec![
            kv("exception.type", "java.lang.IllegalStateException"),
            kv("exception.message", &format!("{service}: request failed")),
            kv(
                "exception.stacktrace",
                &format!("java.lang.IllegalStateException: {service}: request failed\n\tat com.shop.Handler.handle(Handler.java:42)"),
            ),
        ],
        dropped_attributes_count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_service_and_a_sane_error_rate() {
        let mut shop = Shop::new(7);
        let request = shop.generate(2000, 1_700_000_000_000_000_000);
        let services: BTreeSet<String> = request
            .resource_spans
            .iter()
            .map(|r| match &r.resource.as_ref().unwrap().attributes[0].value.as_ref().unwrap().value {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert!(services.len() >= 25, "{services:?}");
        let spans: Vec<&Span> = request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        let errors = spans.iter().filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2)).count() as f64;
        let roots = spans.iter().filter(|s| s.parent_span_id.is_empty()).count() as f64;
        assert!(roots > 2000.0, "broken propagation adds roots");
        let ratio = errors / spans.len() as f64;
        let gateway_roots: Vec<&&Span> =
            spans.iter().filter(|s| s.parent_span_id.is_empty() && s.name != "POST /shipments/quote").collect();
        let failed_roots = gateway_roots.iter().filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2)).count() as f64;
        let request_ratio = failed_roots / gateway_roots.len() as f64;
        assert!((0.01..0.04).contains(&request_ratio), "request error ratio {request_ratio} (span ratio {ratio})");
    }

    #[test]
    fn untraced_teams_send_nothing_and_cut_traces() {
        let mut shop = Shop::new(3).with_traced_teams(&["edge".to_string(), "catalog".to_string()]).unwrap();
        let request = shop.generate(500, 1_700_000_000_000_000_000);
        let service_of = |r: &ResourceSpans| match &r.resource.as_ref().unwrap().attributes[0].value.as_ref().unwrap().value {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => unreachable!(),
        };
        let services: BTreeSet<String> = request.resource_spans.iter().map(service_of).collect();
        let truth = shop.ground_truth();
        assert_eq!(services, truth.traced.iter().filter(|s| services.contains(*s)).cloned().collect());
        assert!(services.contains("product-catalog") && services.contains("web-gateway") && !services.contains("frontend"));
        // product-catalog is called by the untraced frontend: its server spans are roots.
        assert!(truth.roots_behind_untraced.contains("product-catalog"));
        assert!(truth.untraced_called.contains("frontend"));
        let roots = request
            .resource_spans
            .iter()
            .filter(|r| service_of(r) == "product-catalog")
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| s.parent_span_id.is_empty() && s.kind == SERVER)
            .count();
        assert!(roots > 100, "{roots}");
        assert!(Shop::new(1).with_traced_teams(&["nobody".to_string()]).is_err());
    }

    #[test]
    fn a_load_test_runs_beside_production_with_its_mock() {
        let deploy = 1_000 * 60_000_000_000u64;
        let mut shop = Shop::new(3).with_incidents(deploy);
        let truth = shop.ground_truth().load_test.expect("planted with the incidents");
        assert_eq!(truth.mocked_operations, vec!["payment-service POST /payments", "fraud-detection POST /score"]);
        let tagged = |request: &ExportTraceServiceRequest| {
            let mut by_service: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            for resource in &request.resource_spans {
                let service = resource.resource.as_ref().unwrap().attributes.iter().find(|a| a.key == "service.name").unwrap();
                let Some(any_value::Value::StringValue(service)) = service.value.as_ref().unwrap().value.clone() else { panic!() };
                for span in &resource.scope_spans[0].spans {
                    let counts = by_service.entry(service.clone()).or_default();
                    counts.0 += 1;
                    counts.1 += span.attributes.iter().any(|a| a.key == truth.attribute) as usize;
                }
            }
            by_service
        };
        let before = tagged(&shop.generate(200, truth.start_unix_nano - 1));
        assert!(before.values().all(|(_, tagged)| *tagged == 0));
        let during = tagged(&shop.generate(200, truth.start_unix_nano + 1));
        let gateway = during["web-gateway"];
        assert!(gateway.1 >= 200 && gateway.1 < gateway.0, "as many tagged traces as production ones: {gateway:?}");
        assert_eq!(during[&truth.mocked].1, 0, "the mocked service sees none of the test");
        assert!(during["checkout-service"].1 > 50);
    }

    #[test]
    fn ground_truth_names_the_planted_facts() {
        let truth = Shop::new(1).ground_truth();
        assert_eq!(truth.entry_operations.len(), 6);
        assert!(truth.uninstrumented.contains_key("payment-provider"));
        assert!(truth.uninstrumented.contains_key("legacy-inventory"));
        assert_eq!(truth.propagation_breaks[0].0, "checkout-service");
        assert_eq!(truth.propagation_breaks[0].1, "shipping-service");
        let search = &truth.fan_out["web-gateway GET /search"];
        assert!((search["pricing-service GET /price/{sku}"] - 5.0).abs() < 1e-9);
        assert_eq!(truth.message_topics, vec!["order-events"]);
    }
}
