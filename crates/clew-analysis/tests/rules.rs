//! The coverage rules on hand-built traces, through the real store and query engine: spans are
//! appended, assembled and read back as the server would, then reported on.

use std::sync::Arc;

use clew_analysis::{Catalog, CoverageReport, ServiceStatus, coverage};
use clew_model::{Attribute, InstrumentationScope, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, Value};
use clew_query::QueryEngine;
use clew_store::{EmbeddedStore, Storage, StoreConfig};

const SECOND: u64 = 1_000_000_000;

/// Builds the spans of one test, all within the last minutes.
struct Traces {
    spans: Vec<Span>,
    next_id: u64,
    base: u64,
}

impl Traces {
    fn new() -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        Self { spans: Vec::new(), next_id: 1, base: now - 600 * SECOND }
    }

    fn trace(&mut self) -> TraceId {
        self.next_id += 1;
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&self.next_id.to_be_bytes());
        TraceId(id)
    }

    /// A span of `service`, starting `at` ms after the test's base time, lasting `ms`.
    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        trace: TraceId,
        parent: Option<SpanId>,
        service: &str,
        name: &str,
        kind: SpanKind,
        at: u64,
        ms: u64,
        attributes: &[(&str, Value)],
    ) -> SpanId {
        self.next_id += 1;
        let id = SpanId(self.next_id.to_be_bytes());
        let start = self.base + at * 1_000_000;
        self.spans.push(Span {
            trace_id: trace,
            span_id: id,
            parent_span_id: parent,
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + ms * 1_000_000,
            attributes: attributes.iter().map(|(k, v)| Attribute::new(*k, v.clone())).collect(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            resource: Arc::new(Resource {
                attributes: vec![
                    Attribute::new("service.name", Value::Str(service.into())),
                    Attribute::new("service.version", Value::Str("1.0.0".into())),
                    Attribute::new("deployment.environment.name", Value::Str("test".into())),
                ],
                ..Default::default()
            }),
            scope: Arc::new(InstrumentationScope::default()),
        });
        id
    }

    /// A call from `caller` to `callee` over HTTP: a CLIENT span and, when `answered`, the
    /// callee's SERVER span under it. Returns the server span.
    fn call(&mut self, trace: TraceId, parent: SpanId, caller: &str, callee: &str, at: u64, answered: bool) -> Option<SpanId> {
        let client = self.span(
            trace,
            Some(parent),
            caller,
            &format!("GET {callee}"),
            SpanKind::Client,
            at,
            10,
            &[("peer.service", Value::Str(callee.into())), ("http.request.method", Value::Str("GET".into()))],
        );
        answered.then(|| self.server(trace, Some(client), callee, at + 1))
    }

    fn server(&mut self, trace: TraceId, parent: Option<SpanId>, service: &str, at: u64) -> SpanId {
        self.span(
            trace,
            parent,
            service,
            "GET /work",
            SpanKind::Server,
            at,
            8,
            &[("http.request.method", Value::Str("GET".into())), ("http.route", Value::Str("/work".into()))],
        )
    }

    async fn report(self, catalog: &str) -> CoverageReport {
        static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let directory = std::env::temp_dir().join(format!("clew-rules-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        let store = EmbeddedStore::open(StoreConfig { data_dir: directory.clone(), wal_sync: false, ..Default::default() }).unwrap();
        store.append(self.spans).await.unwrap();
        store.flush().await.unwrap();
        let storage: Arc<dyn Storage> = Arc::new(store);
        let engine = QueryEngine::new(storage).await.unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let facts = engine.adoption_facts(now - 3600 * SECOND, now, &["team".to_string()]).await.unwrap();
        let report = coverage(&facts, &Catalog::parse(catalog).unwrap());
        let _ = std::fs::remove_dir_all(&directory);
        report
    }
}

const CATALOG: &str = "services:\n  - service: gateway\n    team: edge\n    customer_facing: true\n";

fn service<'a>(report: &'a CoverageReport, name: &str) -> &'a clew_analysis::ServiceCoverage {
    report.services.iter().find(|s| s.service == name).unwrap_or_else(|| panic!("{name} is not in the report"))
}

fn rules(report: &CoverageReport, name: &str) -> Vec<&'static str> {
    service(report, name).findings.iter().map(|f| f.rule).collect()
}

#[tokio::test]
async fn a_whole_trace_has_no_break_and_retries_count_as_calls() {
    let mut t = Traces::new();
    for i in 0..5 {
        let trace = t.trace();
        let root = t.server(trace, None, "gateway", i * 100);
        let api = t.call(trace, root, "gateway", "api", i * 100 + 1, true).unwrap();
        // A retry: the first attempt and the second are both answered.
        t.call(trace, api, "api", "orders", i * 100 + 2, true);
        t.call(trace, api, "api", "orders", i * 100 + 20, true);
    }
    let report = t.report(CATALOG).await;
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    for name in ["gateway", "api", "orders"] {
        assert_eq!(service(&report, name).status, ServiceStatus::Instrumented);
        assert_eq!(service(&report, name).whole_share, Some(1.0), "{name}");
        assert!(!rules(&report, name).contains(&"context_lost_upstream"), "{name}");
    }
}

#[tokio::test]
async fn a_callee_that_does_not_extract_starts_its_own_traces() {
    let mut t = Traces::new();
    for i in 0..4 {
        let trace = t.trace();
        let root = t.server(trace, None, "gateway", i * 100);
        let api = t.call(trace, root, "gateway", "api", i * 100 + 1, true).unwrap();
        // api's client sends the context (orders continues the trace)...
        t.call(trace, api, "api", "orders", i * 100 + 2, true);
        // ...but billing answers in a trace of its own.
        t.call(trace, api, "api", "billing", i * 100 + 2, false);
        let other = t.trace();
        t.server(other, None, "billing", i * 100 + 3);
    }
    let report = t.report(CATALOG).await;
    let found: Vec<(&str, &str, &str)> = report.breaks.iter().map(|b| (b.caller.as_str(), b.callee.as_str(), b.diagnosis)).collect();
    assert_eq!(found, vec![("api", "billing", "callee_does_not_extract")]);
    assert_eq!(report.breaks[0].broken_calls, 4);
    assert!(rules(&report, "billing").contains(&"context_lost_upstream"));
    assert_eq!(service(&report, "api").whole_share, Some(0.0));
}

#[tokio::test]
async fn a_caller_that_does_not_inject_is_told_apart() {
    let mut t = Traces::new();
    for i in 0..3 {
        let trace = t.trace();
        let root = t.server(trace, None, "gateway", i * 100);
        // billing continues the gateway's traces...
        t.call(trace, root, "gateway", "billing", i * 100 + 1, true);
        // ...but not api's: api's client does not send the context.
        let api = t.call(trace, root, "gateway", "api", i * 100 + 20, true).unwrap();
        t.call(trace, api, "api", "billing", i * 100 + 21, false);
        let other = t.trace();
        t.server(other, None, "billing", i * 100 + 22);
    }
    let report = t.report(CATALOG).await;
    let found: Vec<(&str, &str, &str)> = report.breaks.iter().map(|b| (b.caller.as_str(), b.callee.as_str(), b.diagnosis)).collect();
    assert_eq!(found, vec![("api", "billing", "caller_does_not_inject")]);
}

#[tokio::test]
async fn messaging_pairs_producer_and_consumer() {
    let mut t = Traces::new();
    for i in 0..3 {
        let trace = t.trace();
        let root = t.server(trace, None, "gateway", i * 100);
        let publish = t.span(
            trace,
            Some(root),
            "gateway",
            "orders publish",
            SpanKind::Producer,
            i * 100 + 1,
            2,
            &[("messaging.destination.name", Value::Str("orders".into()))],
        );
        t.span(trace, Some(publish), "worker", "orders process", SpanKind::Consumer, i * 100 + 50, 5, &[]);
    }
    let report = t.report(CATALOG).await;
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(service(&report, "worker").status, ServiceStatus::Instrumented);
    assert!(!rules(&report, "worker").contains(&"context_lost_upstream"));
    assert!(!report.services.iter().any(|s| s.service == "orders"), "a consumed topic is not a missing service");
}

#[tokio::test]
async fn a_skewed_clock_does_not_break_a_trace() {
    let mut t = Traces::new();
    for i in 0..3 {
        let trace = t.trace();
        let root = t.server(trace, None, "gateway", i * 100 + 50);
        let client = t.span(
            trace,
            Some(root),
            "gateway",
            "GET api",
            SpanKind::Client,
            i * 100 + 51,
            10,
            &[("peer.service", Value::Str("api".into()))],
        );
        // api's clock runs 40 ms behind: its server span starts before the client span.
        t.server(trace, Some(client), "api", i * 100 + 12);
    }
    let report = t.report(CATALOG).await;
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(service(&report, "api").whole_share, Some(1.0));
}

#[tokio::test]
async fn partial_traces_and_uninstrumented_peers() {
    let mut t = Traces::new();
    for i in 0..3 {
        let trace = t.trace();
        let root = t.server(trace, None, "gateway", i * 100);
        // A call to a service that sends nothing, named by its address.
        t.span(
            trace,
            Some(root),
            "gateway",
            "GET",
            SpanKind::Client,
            i * 100 + 1,
            10,
            &[("server.address", Value::Str("legacy.internal".into()))],
        );
        // A span whose parent never arrived: an orphan.
        let lost = SpanId((0xdead_0000_u64 + i).to_be_bytes());
        t.span(trace, Some(lost), "api", "GET /orphan", SpanKind::Server, i * 100 + 2, 3, &[("http.route", Value::Str("/orphan".into()))]);
    }
    let report = t.report("services:\n  - service: legacy\n    team: stock\n    aliases: [legacy.internal]\n").await;
    let legacy = service(&report, "legacy");
    assert_eq!(legacy.status, ServiceStatus::NotInstrumented);
    assert_eq!(legacy.team.as_deref(), Some("stock"));
    assert_eq!(service(&report, "api").orphan_spans, 3);
    assert_eq!(service(&report, "gateway").whole_share, Some(0.0));
}

#[tokio::test]
async fn deprecated_names_and_errors_without_status_are_findings() {
    let mut t = Traces::new();
    for i in 0..4 {
        let trace = t.trace();
        t.span(
            trace,
            None,
            "old",
            "GET /x",
            SpanKind::Server,
            i * 100,
            5,
            &[
                ("http.method", Value::Str("GET".into())),
                ("http.status_code", Value::Int(500)),
                ("http.response.status_code", Value::Int(500)),
                ("http.route", Value::Str("/x".into())),
            ],
        );
    }
    let report = t.report("").await;
    let found = rules(&report, "old");
    assert!(found.contains(&"deprecated_attribute"), "{found:?}");
    assert!(found.contains(&"error_without_status"), "{found:?}");
    assert!(service(&report, "old").quality_score.unwrap() < 100);
}

#[tokio::test]
async fn a_break_with_no_evidence_either_way_is_not_blamed_on_a_side() {
    let mut t = Traces::new();
    for i in 0..3 {
        let trace = t.trace();
        let root = t.server(trace, None, "gateway", i * 100);
        let api = t.call(trace, root, "gateway", "api", i * 100 + 1, true).unwrap();
        // api calls only billing, and billing is never called by anyone else: either side may be at fault.
        t.call(trace, api, "api", "billing", i * 100 + 2, false);
        let other = t.trace();
        t.server(other, None, "billing", i * 100 + 3);
    }
    let report = t.report(CATALOG).await;
    let found: Vec<(&str, &str, &str)> = report.breaks.iter().map(|b| (b.caller.as_str(), b.callee.as_str(), b.diagnosis)).collect();
    assert_eq!(found, vec![("api", "billing", "unknown")]);
    assert!(!report.breaks[0].fix.is_empty());
}
