//! Commands and flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use clew_server::Config;

#[derive(Parser, Debug)]
#[command(name = "clew", version, about = "Clew: a distributed-tracing backend that follows every request through your services")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// How a graph is printed.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum GraphOutput {
    Table,
    Json,
    Markdown,
    Dot,
    Mermaid,
    /// A picture: `clew topology --output svg > services.svg`.
    Svg,
}

/// How a report is printed.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ReportOutput {
    Table,
    Json,
    Markdown,
}

impl ReportOutput {
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// Where a report reads from: a running Clew, over a window.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Spans within this long before now.
    #[arg(long, default_value = "1h")]
    pub lookback: String,
    /// The query API of a running Clew.
    #[arg(long, env = "CLEW_SERVER", default_value = "http://127.0.0.1:16686")]
    pub server: String,
    #[arg(long, value_enum, default_value = "table")]
    pub output: ReportOutput,
}

/// Flags shared by the commands that start a server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// A TOML configuration file (see `clew config --print-default`).
    #[arg(long, env = "CLEW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides store.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address (overrides server.otlp_grpc_address).
    #[arg(long)]
    pub otlp_grpc: Option<String>,
    /// OTLP/HTTP listen address (overrides server.otlp_http_address).
    #[arg(long)]
    pub otlp_http: Option<String>,
    /// Query API and UI listen address (overrides server.query_address).
    #[arg(long)]
    pub query: Option<String>,
    /// Zipkin intake and API listen address (overrides server.zipkin_address).
    #[arg(long)]
    pub zipkin: Option<String>,
    /// Seconds a trace must be quiet before it is assembled (overrides store.trace_idle_seconds).
    #[arg(long)]
    pub trace_idle_seconds: Option<f64>,
    /// A YAML service catalog: teams, tiers, entry points, services not instrumented yet
    /// (overrides adoption.catalog_file).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
}

/// Where the CLI finds a running Clew.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// The query API of a running Clew.
    #[arg(long, env = "CLEW_SERVER", default_value = "http://127.0.0.1:16686")]
    pub server: String,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start Clew: OTLP receivers, the embedded store and the query API.
    Serve(ServeArgs),
    /// Start Clew with a simulated online shop sending traces to it.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Traces per second the shop sends.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Print the shop's ground truth as JSON and exit.
        #[arg(long)]
        print_truth: bool,
        /// Print the shop's service catalog (YAML) and exit.
        #[arg(long)]
        print_catalog: bool,
        /// Only these teams' services send spans (comma-separated), as in an organisation
        /// part way through adopting tracing; e.g. `edge` or `edge,storefront,checkout`.
        #[arg(long, value_delimiter = ',')]
        traced_teams: Vec<String>,
        /// Send this much past traffic first (e.g. `30m`), at the same rate, so that there is
        /// a history to look at from the start.
        #[arg(long, default_value = "0s")]
        history: String,
        /// Plant known causes for the performance analyses to find: a deploy half way through
        /// the history (ten minutes from now without one) brings an N+1 loop into the catalog
        /// and a failing cart version; search is slow in one region; six minutes before the
        /// deploy, a three-minute load test (tagged `traffic.source=load_test`, payments mocked).
        #[arg(long)]
        incidents: bool,
    },
    /// Show configuration.
    Config {
        /// Print the default configuration as TOML.
        #[arg(long)]
        print_default: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Show one trace as a tree.
    Trace {
        trace_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Search traces.
    Search {
        /// A TraceQL query, e.g. `{ resource.service.name = "cart" } >> { status = error }`;
        /// combines with --lookback and --limit only.
        #[arg(long, short = 'q')]
        traceql: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        operation: Option<String>,
        /// span kind: server, client, producer, consumer, internal
        #[arg(long)]
        kind: Option<String>,
        /// unset, ok or error
        #[arg(long)]
        status: Option<String>,
        /// Attribute filter `key op value` (op: = != > >= < <= =~); repeatable.
        #[arg(long = "attr")]
        attributes: Vec<String>,
        /// e.g. 100ms
        #[arg(long)]
        min_duration: Option<String>,
        #[arg(long)]
        max_duration: Option<String>,
        /// Only spans started within this long before now, e.g. 1h.
        #[arg(long)]
        lookback: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// newest or longest
        #[arg(long, default_value = "newest")]
        sort: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The service topology: who calls whom, with rate, errors and latency, uninstrumented
    /// peers included. `--output dot` or `mermaid` draws it; `markdown` makes a table to share.
    Topology {
        /// Calls within this long before now.
        #[arg(long, default_value = "1h")]
        lookback: String,
        /// Only the traces that enter through this service...
        #[arg(long)]
        entry_service: Option<String>,
        /// ...and this operation of it.
        #[arg(long)]
        entry_operation: Option<String>,
        /// The query API of a running Clew.
        #[arg(long, env = "CLEW_SERVER", default_value = "http://127.0.0.1:16686")]
        server: String,
        #[arg(long, value_enum, default_value = "table")]
        output: GraphOutput,
    },
    /// What an entry operation does: its aggregated call tree of (service, operation), with
    /// calls per request (mean and p95), the share of requests reaching each, errors and
    /// latency. Without arguments, lists the entry operations.
    Flow {
        /// The service the requests enter.
        service: Option<String>,
        /// The entry operation (the root span's name), e.g. "POST /checkout".
        operation: Option<String>,
        #[arg(long, default_value = "1h")]
        lookback: String,
        #[arg(long, env = "CLEW_SERVER", default_value = "http://127.0.0.1:16686")]
        server: String,
        #[arg(long, value_enum, default_value = "table")]
        output: GraphOutput,
    },
    /// Write living documentation of the system as seen in its traces: services and owners,
    /// entry points and their flows, dependencies, versions; Markdown with Mermaid diagrams, and
    /// the same pages as self-contained HTML with the diagrams drawn (open index.html).
    Docs {
        /// The directory to write (created; files in it are replaced).
        #[arg(long, default_value = "clew-docs")]
        out: PathBuf,
        #[arg(long, default_value = "24h")]
        lookback: String,
        #[arg(long, env = "CLEW_SERVER", default_value = "http://127.0.0.1:16686")]
        server: String,
    },
    /// The critical path of an entry operation across its requests: each calling context's
    /// time on it (a flame graph as a tree), the operations that cost the most, and with
    /// `--baseline` what got slower.
    CriticalPath {
        /// The service the requests enter.
        service: String,
        /// The entry operation (the root span's name), e.g. "GET /product/{id}".
        operation: String,
        /// The percentage in "time saved if it were N% faster".
        #[arg(long, default_value_t = 20.0)]
        faster: f64,
        /// Compare with `previous` (the window before) or the window shifted back by a duration (`1d`).
        #[arg(long)]
        baseline: Option<String>,
        /// Print folded stacks (for flamegraph.pl or speedscope) instead of the report.
        #[arg(long)]
        folded: bool,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Which attribute values set slow (or failed, or TraceQL-selected) spans apart from the
    /// rest: span and resource attributes and the services their traces pass through, ranked;
    /// numeric attributes compared as distributions.
    Correlations {
        /// The service whose spans are compared; every service when left out (with --query).
        service: Option<String>,
        /// The span name; every operation of the service when left out.
        operation: Option<String>,
        /// The selection: the spans a TraceQL query matches, e.g. '{ span.http.route = "/search" && duration > 100ms }'.
        #[arg(long, short = 'q')]
        query: Option<String>,
        /// Count attribute values on a sample of traces when the scope holds more spans than
        /// this (`all`: every span).
        #[arg(long)]
        sample: Option<String>,
        /// The selection: spans at least this long (e.g. 250ms).
        #[arg(long)]
        min_duration: Option<String>,
        /// The selection: spans shorter than this.
        #[arg(long)]
        max_duration: Option<String>,
        /// The selection: failed spans.
        #[arg(long)]
        errors: bool,
        /// Only spans of this kind (server, client, …).
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Two groups of spans compared by the calls below them, path by path: e.g. version A
    /// against B, `--a '{ resource.service.version = "4.4.0" }' --b '{ resource.service.version = "4.5.0" }'`.
    CompareGroups {
        /// Group A: a TraceQL spanset query.
        #[arg(long)]
        a: String,
        /// Group B: a TraceQL spanset query.
        #[arg(long)]
        b: String,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Two traces aligned by the path of calls from the root: per path, calls and time in each,
    /// what changed, and where on the critical path B's extra (or saved) latency comes from.
    CompareTraces {
        /// Trace A (e.g. a fast one, or one from before a deploy), in hex.
        a: String,
        /// Trace B, in hex.
        b: String,
        /// Compare the spans as received, without clock-skew adjustment.
        #[arg(long)]
        raw: bool,
        /// The query API of a running Clew.
        #[arg(long, env = "CLEW_SERVER", default_value = "http://127.0.0.1:16686")]
        server: String,
        #[arg(long, value_enum, default_value = "table")]
        output: ReportOutput,
    },
    /// A TraceQL metrics query as time series, e.g.
    /// `{ status = error } | rate() by (resource.service.name)`,
    /// `{ kind = server } | quantile_over_time(duration, .99, .5)`, `… | topk(5)`.
    Metrics {
        /// The query: a spanset filter, then `| rate()`, `count_over_time()`,
        /// `min/max/avg/sum_over_time(field)`, `quantile_over_time(field, q…)` or
        /// `histogram_over_time(field)`, optionally `by (fields)`.
        query: String,
        /// The width of each step (default: the window in 240 steps).
        #[arg(long)]
        step: Option<String>,
        /// One value per series over the whole window.
        #[arg(long)]
        instant: bool,
        /// One CSV row per sample instead of the report.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Operations ranked by their time on the critical path over every entry operation.
    Bottlenecks {
        #[arg(long, default_value_t = 20.0)]
        faster: f64,
        /// Which traffic: all, production (load tests left out), load-test, or source:<name>.
        #[arg(long, default_value = "all")]
        traffic: String,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// The rate every service operation should expect under planned entry rates, against the
    /// busiest minute it has handled: what to scale or load-test first.
    Traffic {
        /// A planned rate: `<rate> <service> <operation>`, e.g. "50/s web-gateway POST /checkout"
        /// (per second, or `/m`, `/h`). Repeat for several entry operations.
        #[arg(long)]
        plan: Vec<String>,
        /// Entry operations the plan does not name run at this factor of their observed mean rate.
        #[arg(long, default_value_t = 1.0)]
        others: f64,
        /// Which traffic the fan-out is read from: production (load tests left out), load-test,
        /// all, or source:<name>.
        #[arg(long, default_value = "production")]
        traffic: String,
        /// During a load test: its measured entry rates are the plan, and every operation shows
        /// what the test measured against what production's fan-out expects.
        #[arg(long, conflicts_with = "plan")]
        measure_load_test: bool,
        /// Print CSV instead of the report.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Instrumentation coverage and propagation health per service and team: what sends spans,
    /// what is only seen from its callers, where trace context is lost, and what to fix.
    Coverage {
        #[command(flatten)]
        report: ReportArgs,
    },
    /// The order in which teams should adopt tracing, with the reasons in numbers;
    /// `--output markdown` gives a document to share with the teams.
    Plan {
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Which services carry which values of an attribute (e.g. telemetry.sdk.version,
    /// service.version, db.system): "who still uses version X?".
    Directory {
        /// The attribute key; `scope.name` and `scope.version` read the instrumentation scope.
        key: String,
        /// Only this value.
        #[arg(long)]
        value: Option<String>,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Critical user operations (defined in the service catalog or registered with
    /// `register-operation`): rate, errors, latency against
    /// the window before, and how much of each one's call tree is traced, with the gaps' teams.
    Operations {
        /// Only this operation, with every service its requests reach.
        name: Option<String>,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Register a critical operation on a running Clew (kept in its data directory), or replace
    /// the registered one of that name: e.g. `Checkout --service web-gateway --operation "POST
    /// /checkout"`, or `--route /checkout --traceql '{ span.http.request.method = "POST" }'`.
    RegisterOperation {
        name: String,
        /// The service the requests enter.
        #[arg(long)]
        service: String,
        /// The entry span's name.
        #[arg(long, conflicts_with = "route")]
        operation: Option<String>,
        /// The entry span's `http.route`.
        #[arg(long)]
        route: Option<String>,
        /// A TraceQL filter the entry span must match too.
        #[arg(long)]
        traceql: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// The query API of a running Clew.
        #[arg(long, env = "CLEW_SERVER", default_value = "http://127.0.0.1:16686")]
        server: String,
    },
    /// Forget a critical operation registered with `register-operation`.
    RemoveOperation {
        name: String,
        /// The query API of a running Clew.
        #[arg(long, env = "CLEW_SERVER", default_value = "http://127.0.0.1:16686")]
        server: String,
    },
    /// Check a service catalog file: every error with its line and field.
    Catalog { file: PathBuf },
    /// Run read-only SQL over the `spans` table.
    Sql {
        query: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Measure ingest, storage and query performance on the demo dataset (not part of the tests).
    Bench {
        #[command(flatten)]
        serve: ServeArgs,
        /// Spans to send.
        #[arg(long, default_value_t = 1_000_000)]
        spans: u64,
        /// Concurrent OTLP/HTTP connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Traces per export request.
        #[arg(long, default_value_t = 20)]
        traces_per_request: usize,
        /// Trace-by-ID lookups and searches to time.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Keep the benchmark's data directory afterwards (its path is printed), to serve and
        /// query it again.
        #[arg(long)]
        keep: bool,
    },
    /// Send a file of OTLP/JSON export requests (one per line) to a running Clew.
    Import {
        file: PathBuf,
        /// OTLP/HTTP traces endpoint.
        #[arg(long, default_value = "http://127.0.0.1:4318/v1/traces")]
        endpoint: String,
    },
}

pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let text = match &args.config {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?),
        None => None,
    };
    let mut config = Config::load(text.as_deref(), std::env::vars())?;
    if let Some(dir) = &args.data_dir {
        config.store.data_dir = dir.clone();
    }
    if let Some(address) = &args.otlp_grpc {
        config.server.otlp_grpc_address = address.clone();
    }
    if let Some(address) = &args.otlp_http {
        config.server.otlp_http_address = address.clone();
    }
    if let Some(address) = &args.query {
        config.server.query_address = address.clone();
    }
    if let Some(address) = &args.zipkin {
        config.server.zipkin_address = address.clone();
    }
    if let Some(seconds) = args.trace_idle_seconds {
        config.store.trace_idle_seconds = seconds;
    }
    if let Some(path) = &args.catalog {
        config.adoption.catalog_file = path.display().to_string();
    }
    Ok(config)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(&args)?;
            let running = clew_server::start(config).await?;
            serve_until_signal(running).await
        }
        Command::Demo { serve, rate, seed, print_truth, print_catalog, traced_teams, history, incidents } => {
            let history = clew_server::parse_duration_nanos(&history).map_err(|e| anyhow::anyhow!("--history: {e}"))?;
            anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be a positive number of traces per second");
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
            let deploy_at = if history > 0 { now - history / 2 } else { now + 600_000_000_000 };
            let shop = || {
                let mut shop = clew_demo::Shop::new(seed);
                if incidents {
                    shop = shop.with_incidents(deploy_at);
                }
                if traced_teams.is_empty() { Ok(shop) } else { shop.with_traced_teams(&traced_teams).map_err(|e| anyhow::anyhow!(e)) }
            };
            if print_truth {
                println!("{}", serde_json::to_string_pretty(&shop()?.ground_truth())?);
                return Ok(ExitCode::SUCCESS);
            }
            if print_catalog {
                print!("{}", clew_demo::catalog_yaml());
                return Ok(ExitCode::SUCCESS);
            }
            let shop = shop()?;
            let mut config = load_config(&serve)?;
            if config.adoption.catalog_file.is_empty() {
                // The shop's own catalog, so that the adoption reports know its teams.
                std::fs::create_dir_all(&config.store.data_dir)?;
                let path = config.store.data_dir.join("demo-catalog.yaml");
                std::fs::write(&path, clew_demo::catalog_yaml())?;
                config.adoption.catalog_file = path.display().to_string();
            }
            let running = clew_server::start(config).await?;
            let endpoint = format!("http://{}/v1/traces", running.addresses.otlp_http);
            println!("Clew demo: a simulated shop sends {rate} traces/s. Open http://{}/", running.addresses.query);
            tokio::spawn(crate::demo::run(endpoint, rate, shop, history));
            serve_until_signal(running).await
        }
        Command::Config { print_default, serve } => {
            let config = if print_default { Config::default() } else { load_config(&serve)? };
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace { trace_id, client } => crate::client::trace(&client, &trace_id).await,
        Command::Search { traceql: Some(q), lookback, limit, client, .. } => {
            let mut pairs: Vec<(&str, String)> = vec![("q", q), ("limit", limit.to_string())];
            pairs.extend(lookback.map(|l| ("lookback", l)));
            crate::client::search(&client, &pairs).await
        }
        Command::Search {
            traceql: None,
            service,
            operation,
            kind,
            status,
            attributes,
            min_duration,
            max_duration,
            lookback,
            limit,
            sort,
            client,
        } => {
            let mut pairs: Vec<(&str, String)> = vec![("limit", limit.to_string()), ("sort", sort)];
            let optional = [
                ("service", service),
                ("operation", operation),
                ("kind", kind),
                ("status", status),
                ("minDuration", min_duration),
                ("maxDuration", max_duration),
                ("lookback", lookback),
            ];
            pairs.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            pairs.extend(attributes.into_iter().map(|a| ("attr", a)));
            crate::client::search(&client, &pairs).await
        }
        Command::Topology { lookback, entry_service, entry_operation, server, output } => {
            let format = output.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
            let mut pairs: Vec<(&str, String)> = vec![("lookback", lookback), ("format", format)];
            pairs.extend(entry_service.map(|s| ("service", s)));
            pairs.extend(entry_operation.map(|o| ("operation", o)));
            crate::client::print_text(&server, "/api/v1/service-graph", &pairs).await
        }
        Command::Flow { service, operation, lookback, server, output } => match (service, operation) {
            (Some(service), Some(operation)) => {
                let format = output.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
                let pairs = [("lookback", lookback), ("format", format), ("service", service), ("operation", operation)];
                crate::client::print_text(&server, "/api/v1/flow", &pairs).await
            }
            (None, None) => crate::docs::list_entries(&server, &lookback, output == GraphOutput::Json).await,
            _ => {
                eprintln!("error: give both the service and the operation, or neither to list the entry operations");
                Ok(ExitCode::from(2))
            }
        },
        Command::Docs { out, lookback, server } => crate::docs::write(&server, &lookback, &out).await,
        Command::CriticalPath { service, operation, faster, baseline, folded, report } => {
            let format = if folded { "folded".to_string() } else { report.output.name() };
            let mut pairs = vec![
                ("lookback", report.lookback),
                ("format", format),
                ("service", service),
                ("operation", operation),
                ("faster", faster.to_string()),
            ];
            pairs.extend(baseline.map(|b| ("baseline", b)));
            crate::client::print_text(&report.server, "/api/v1/critical-path", &pairs).await
        }
        Command::Correlations { service, operation, query, sample, min_duration, max_duration, errors, kind, report } => {
            let mut pairs = vec![("lookback", report.lookback), ("format", report.output.name())];
            pairs.extend(service.map(|s| ("service", s)));
            pairs.extend(operation.map(|o| ("operation", o)));
            pairs.extend(query.map(|q| ("q", q)));
            pairs.extend(sample.map(|s| ("sample", s)));
            pairs.extend(min_duration.map(|d| ("min_duration", d)));
            pairs.extend(max_duration.map(|d| ("max_duration", d)));
            pairs.extend(kind.map(|k| ("kind", k)));
            if errors {
                pairs.push(("errors", "true".into()));
            }
            crate::client::print_text(&report.server, "/api/v1/correlations", &pairs).await
        }
        Command::CompareGroups { a, b, report } => {
            let pairs = vec![("lookback", report.lookback), ("format", report.output.name()), ("a", a), ("b", b)];
            crate::client::print_text(&report.server, "/api/v1/compare-groups", &pairs).await
        }
        Command::RegisterOperation { name, service, operation, route, traceql, description, server } => {
            let body = serde_json::json!({
                "service": service, "operation": operation, "route": route, "traceql": traceql, "description": description,
            });
            let path = format!("/api/v1/critical-operations/{}", crate::client::path_segment(&name));
            let done = format!("registered {name:?}: `clew operations {name:?}` reports on it");
            crate::client::change(&server, reqwest::Method::PUT, &path, Some(&body), &done).await
        }
        Command::RemoveOperation { name, server } => {
            let path = format!("/api/v1/critical-operations/{}", crate::client::path_segment(&name));
            crate::client::change(&server, reqwest::Method::DELETE, &path, None, &format!("removed {name:?}")).await
        }
        Command::CompareTraces { a, b, raw, server, output } => {
            let pairs = [("format", output.name()), ("a", a), ("b", b), ("raw", raw.to_string())];
            crate::client::print_text(&server, "/api/v1/compare-traces", &pairs).await
        }
        Command::Metrics { query, step, instant, csv, report } => {
            let format = if csv { "csv".to_string() } else { report.output.name() };
            let mut pairs = vec![("lookback", report.lookback), ("format", format), ("q", query)];
            pairs.extend(step.map(|s| ("step", s)));
            if instant {
                pairs.push(("instant", "true".into()));
            }
            crate::client::print_text(&report.server, "/api/v1/metrics/query_range", &pairs).await
        }
        Command::Bottlenecks { faster, traffic, report } => {
            let pairs =
                [("lookback", report.lookback), ("format", report.output.name()), ("faster", faster.to_string()), ("traffic", traffic)];
            crate::client::print_text(&report.server, "/api/v1/bottlenecks", &pairs).await
        }
        Command::Traffic { plan, others, traffic, measure_load_test, csv, report } => {
            let format = if csv { "csv".to_string() } else { report.output.name() };
            let mut pairs = vec![("lookback", report.lookback), ("format", format), ("traffic", traffic)];
            if measure_load_test {
                pairs.push(("measure", "load-test".into()));
            } else {
                pairs.push(("others", others.to_string()));
            }
            pairs.extend(plan.into_iter().map(|p| ("plan", p)));
            crate::client::print_text(&report.server, "/api/v1/traffic-estimate", &pairs).await
        }
        Command::Coverage { report } => {
            let pairs = [("lookback", report.lookback), ("format", report.output.name())];
            crate::client::print_text(&report.server, "/api/v1/coverage", &pairs).await
        }
        Command::Plan { report } => {
            let pairs = [("lookback", report.lookback), ("format", report.output.name())];
            crate::client::print_text(&report.server, "/api/v1/rollout-plan", &pairs).await
        }
        Command::Directory { key, value, report } => {
            let mut pairs = vec![("lookback", report.lookback), ("format", report.output.name())];
            pairs.extend(value.map(|v| ("value", v)));
            let path = format!("/api/v1/directory/{}", crate::client::path_segment(&key));
            crate::client::print_text(&report.server, &path, &pairs).await
        }
        Command::Operations { name, report } => {
            let pairs = [("lookback", report.lookback), ("format", report.output.name())];
            let path = match name {
                Some(name) => format!("/api/v1/critical-operations/{}", crate::client::path_segment(&name)),
                None => "/api/v1/critical-operations".into(),
            };
            crate::client::print_text(&report.server, &path, &pairs).await
        }
        Command::Catalog { file } => match clew_analysis::Catalog::load(&file) {
            Ok(catalog) => {
                let teams: std::collections::BTreeSet<&str> = catalog.services.iter().map(|s| s.team.as_str()).collect();
                println!(
                    "{}: {} services, {} teams, {} critical operations",
                    file.display(),
                    catalog.services.len(),
                    teams.len(),
                    catalog.critical_operations.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("{}: {error}", file.display());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Sql { query, client } => crate::client::sql(&client, &query).await,
        Command::Bench { serve, spans, connections, traces_per_request, queries, keep } => {
            crate::bench::run(&serve, crate::bench::BenchOptions { spans, connections, traces_per_request, queries, keep }).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { file, endpoint } => crate::client::import(&file, &endpoint).await,
    }
}

async fn serve_until_signal(running: clew_server::Running) -> anyhow::Result<ExitCode> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!(message = "stopping: writing pending traces");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
