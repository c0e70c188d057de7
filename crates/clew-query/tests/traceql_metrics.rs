//! TraceQL metrics through the real store and query engine. Every query is answered twice, by
//! the grouped SQL scan and by evaluating each trace, and the two must agree; counts, sums and
//! quantiles are also checked against values computed here from the generated spans.

use std::collections::BTreeMap;
use std::sync::Arc;

use clew_model::{Attribute, Resource, Span, SpanKind, StatusCode, TraceId, Value};
use clew_query::QueryEngine;
use clew_query::traceql::{LabelValue, MetricsRequest, MetricsResult};
use clew_store::{EmbeddedStore, Storage, StoreConfig};

mod common;
use common::{Lcg, span};

const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
const TRACES: u64 = 300;

struct Fixture {
    engine: QueryEngine,
    spans: Vec<Span>,
    start: u64,
    end: u64,
    directory: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn resource(service: &str, region: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![Attribute::new("service.name", Value::Str(service.into())), Attribute::new("region", Value::Str(region.into()))],
        ..Default::default()
    })
}

async fn fixture() -> Fixture {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let start = (now - 3_600 * SECOND) / MINUTE * MINUTE;
    let mut random = Lcg(7);
    let mut spans = Vec::new();
    let mut next_id = 1u64;
    let mut id = || {
        next_id += 1;
        next_id
    };
    let gateway = resource("gateway", "eu-west");
    for i in 0..TRACES {
        let mut trace_id = [0u8; 16];
        trace_id[8..].copy_from_slice(&(i + 1).to_be_bytes());
        let trace = TraceId(trace_id);
        let at = start + i * 2 * SECOND + random.next(1_000) * 1_000_000;
        let cart = resource("cart", if i % 3 == 0 { "us-east" } else { "eu-west" });
        let failed = i % 17 == 0;
        let (root, client, server) = (id(), id(), id());
        let cart_ms = 5 + random.next(120);
        let route = if i % 4 == 0 { "/checkout" } else { "/cart" };
        spans.push(span(
            trace,
            root,
            None,
            &gateway,
            &format!("GET {route}"),
            SpanKind::Server,
            at,
            (cart_ms + 10 + random.next(30)) * 1_000_000,
            if failed { StatusCode::Error } else { StatusCode::Unset },
            vec![("http.route", Value::Str(route.into())), ("http.response.status_code", Value::Int(if failed { 500 } else { 200 }))],
        ));
        spans.push(span(
            trace,
            client,
            Some(root),
            &gateway,
            "GET cart",
            SpanKind::Client,
            at + 1_000_000,
            (cart_ms + 2) * 1_000_000,
            StatusCode::Unset,
            vec![("peer.service", Value::Str("cart".into()))],
        ));
        spans.push(span(
            trace,
            server,
            Some(client),
            &cart,
            "GET /cart",
            SpanKind::Server,
            at + 2_000_000,
            cart_ms * 1_000_000,
            if failed { StatusCode::Error } else { StatusCode::Unset },
            vec![
                ("user.tier", Value::Str(if i % 2 == 0 { "gold" } else { "silver" }.into())),
                ("items", Value::Int((i % 7) as i64)),
                ("retry", Value::Bool(i % 5 == 0)),
            ],
        ));
        if i % 5 == 0 {
            let db = id();
            spans.push(span(
                trace,
                db,
                Some(server),
                &cart,
                "SELECT carts",
                SpanKind::Client,
                at + 3_000_000,
                (1 + random.next(4)) * 1_000_000,
                StatusCode::Unset,
                vec![("db.system", Value::Str("postgresql".into()))],
            ));
        }
    }
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let directory = std::env::temp_dir().join(format!("clew-traceql-metrics-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let store = EmbeddedStore::open(StoreConfig { data_dir: directory.clone(), wal_sync: false, ..Default::default() }).unwrap();
    store.append(spans.clone()).await.unwrap();
    store.flush().await.unwrap();
    let storage: Arc<dyn Storage> = Arc::new(store);
    let engine = QueryEngine::new(storage).await.unwrap();
    Fixture { engine, spans, start, end: start + 11 * MINUTE, directory }
}

impl Fixture {
    async fn run(&self, query: &str, step: u64, evaluate_traces: bool) -> MetricsResult {
        let request = MetricsRequest { start_unix_nano: self.start, end_unix_nano: self.end, step_nanos: step, evaluate_traces };
        self.engine.traceql_metrics(query, &request).await.unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// Both ways of answering, checked against each other; the scan's answer is returned.
    async fn both(&self, query: &str) -> MetricsResult {
        let scan = self.run(query, MINUTE, false).await;
        let evaluated = self.run(query, MINUTE, true).await;
        assert_eq!(scan.path, "sql", "{query} should be one scan");
        assert_eq!(evaluated.path, "traces");
        assert_eq!(scan.matched_spans, evaluated.matched_spans, "{query}: spans matched");
        assert_eq!(scan.series.len(), evaluated.series.len(), "{query}: series\n{:?}\n{:?}", scan.series, evaluated.series);
        for (a, b) in scan.series.iter().zip(&evaluated.series) {
            assert_eq!(a.labels, b.labels, "{query}");
            assert_eq!(a.samples.len(), b.samples.len(), "{query} {:?}", a.labels);
            for ((ta, va), (tb, vb)) in a.samples.iter().zip(&b.samples) {
                assert_eq!(ta, tb, "{query}");
                assert!((va - vb).abs() <= 1e-9 * va.abs().max(1.0), "{query} {:?} at {ta}: {va} vs {vb}", a.labels);
            }
        }
        scan
    }

    /// Per minute of the window, how many spans satisfy `keep`.
    fn per_minute(&self, keep: impl Fn(&Span) -> bool) -> BTreeMap<u64, f64> {
        let mut out = BTreeMap::new();
        for span in self.spans.iter().filter(|s| keep(s)) {
            let minute = (span.start_time_unix_nano - self.start) / MINUTE;
            *out.entry((self.start + minute * MINUTE) / 1_000_000).or_insert(0.0) += 1.0;
        }
        out
    }
}

fn service(span: &Span) -> &str {
    span.service_name()
}

fn label<'a>(result: &'a MetricsResult, key: &str, value: &str) -> &'a clew_query::traceql::Series {
    result
        .series
        .iter()
        .find(|s| s.labels.iter().any(|(k, v)| k == key && v.text() == value))
        .unwrap_or_else(|| panic!("no series {key}={value} in {:?}", result.series.iter().map(|s| &s.labels).collect::<Vec<_>>()))
}

fn nonzero(samples: &[(u64, f64)]) -> BTreeMap<u64, f64> {
    samples.iter().filter(|(_, v)| *v != 0.0).copied().collect()
}

#[tokio::test]
async fn counts_and_rates_match_the_spans() {
    let f = fixture().await;
    let all = f.both("{ } | count_over_time()").await;
    assert_eq!(all.series.len(), 1);
    assert_eq!(all.series[0].labels, vec![]);
    assert_eq!(all.matched_spans as usize, f.spans.len());
    assert_eq!(nonzero(&all.series[0].samples), f.per_minute(|_| true));
    // Every step of the window has a sample, empty ones at zero.
    assert_eq!(all.series[0].samples.len(), 11);

    let rate = f.both("{ resource.service.name = \"cart\" && kind = server } | rate() by (resource.region)").await;
    assert_eq!(rate.series.len(), 2);
    for region in ["us-east", "eu-west"] {
        let expected: BTreeMap<u64, f64> = f
            .per_minute(|s| {
                service(s) == "cart"
                    && s.kind == SpanKind::Server
                    && s.resource.attributes.iter().any(|a| a.value == Value::Str(region.into()))
            })
            .into_iter()
            .map(|(t, n)| (t, n / 60.0))
            .collect();
        assert_eq!(nonzero(&label(&rate, "resource.region", region).samples), expected, "{region}");
    }

    let errors = f.both("{ status = error } | count_over_time() by (resource.service.name)").await;
    let failed_traces = (0..TRACES).filter(|i| i % 17 == 0).count() as f64;
    for name in ["gateway", "cart"] {
        assert_eq!(label(&errors, "resource.service.name", name).samples.iter().map(|(_, v)| v).sum::<f64>(), failed_traces);
    }

    let status = f.both("{ span.http.response.status_code >= 500 } | count_over_time()").await;
    assert_eq!(status.matched_spans as f64, failed_traces);

    let tiers = f.both("{ name = \"GET /cart\" && span.user.tier != \"gold\" } | count_over_time()").await;
    assert_eq!(tiers.matched_spans, TRACES / 2);

    // Spans without the attribute form the nil group.
    let db = f.both("{ } | count_over_time() by (span.db.system)").await;
    assert_eq!(db.series.len(), 2);
    let nil = db.series.iter().find(|s| s.labels[0].1 == LabelValue::Nil).expect("a nil group");
    let with_db = TRACES.div_ceil(5) as f64;
    assert_eq!(nil.samples.iter().map(|(_, v)| v).sum::<f64>(), f.spans.len() as f64 - with_db);
}

#[tokio::test]
async fn aggregates_quantiles_and_histograms_match_the_spans() {
    let f = fixture().await;
    let cart: Vec<&Span> = f.spans.iter().filter(|s| service(s) == "cart" && s.kind == SpanKind::Server).collect();
    let durations: Vec<f64> = cart.iter().map(|s| s.duration_nanos() as f64 / 1e9).collect();

    let sum = f.both("{ resource.service.name = \"cart\" && kind = server } | sum_over_time(duration)").await;
    let total: f64 = sum.series[0].samples.iter().map(|(_, v)| v).sum();
    assert!((total - durations.iter().sum::<f64>()).abs() < 1e-6, "{total}");

    let max = f.both("{ resource.service.name = \"cart\" && kind = server } | max_over_time(duration)").await;
    let highest = max.series[0].samples.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    assert_eq!(highest, durations.iter().copied().fold(0.0, f64::max));

    let items = f.both("{ span.items > 3 } | avg_over_time(span.items) by (name)").await;
    assert_eq!(items.series.len(), 1);
    for (_, v) in &items.series[0].samples {
        assert!((4.0..=6.0).contains(v), "{v}");
    }

    // Quantiles over the whole window (one step) come within 5% of the exact ones.
    let mut sorted = durations.clone();
    sorted.sort_by(f64::total_cmp);
    let request = MetricsRequest { start_unix_nano: f.start, end_unix_nano: f.end, step_nanos: f.end - f.start, evaluate_traces: false };
    let quantiles = f
        .engine
        .traceql_metrics("{ resource.service.name = \"cart\" && kind = server } | quantile_over_time(duration, .5, .9)", &request)
        .await
        .unwrap();
    assert_eq!(quantiles.series.len(), 2);
    for (q, series) in [(0.5, &quantiles.series[0]), (0.9, &quantiles.series[1])] {
        assert_eq!(series.labels, vec![("p".to_string(), LabelValue::Float(q))]);
        let exact = sorted[((q * sorted.len() as f64).ceil() as usize).saturating_sub(1)];
        let estimate = series.samples[0].1;
        assert!((estimate - exact).abs() / exact < 0.05, "p{q}: {estimate} vs exact {exact}");
    }
    f.both("{ kind = server } | quantile_over_time(duration, .5, .99) by (resource.service.name)").await;

    // Power-of-two buckets, upper bounds in seconds.
    let histogram = f.both("{ resource.service.name = \"cart\" && kind = server } | histogram_over_time(duration)").await;
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for s in &cart {
        let upper = (s.duration_nanos() as f64).log2().ceil().exp2() / 1e9;
        *expected.entry(upper.to_string()).or_default() += 1.0;
    }
    let actual: BTreeMap<String, f64> = histogram
        .series
        .iter()
        .map(|s| (s.labels.iter().find(|(k, _)| k == "__bucket").unwrap().1.text(), s.samples.iter().map(|(_, v)| v).sum()))
        .collect();
    assert_eq!(actual, expected);
}

#[tokio::test]
async fn structural_queries_and_topk() {
    let f = fixture().await;
    // Only evaluation can answer a structural query.
    let children = f.run("{ kind = client } > { resource.service.name = \"cart\" } | count_over_time()", MINUTE, false).await;
    assert_eq!(children.path, "traces");
    assert_eq!(children.inspected_traces as u64, TRACES);
    // The cart SERVER spans (children of a client span); the database client's parent is a server.
    assert_eq!(children.matched_spans, TRACES);

    // A window that starts between a trace's gateway span and its cart spans: the cart spans
    // in it are matched although the ancestor the query names started before the window
    // (and the prefilter looks for that ancestor, the more selective part).
    let mut trace_id = [0u8; 16];
    trace_id[8..].copy_from_slice(&101u64.to_be_bytes());
    let root = f.spans.iter().find(|s| s.trace_id == TraceId(trace_id) && s.parent_span_id.is_none()).unwrap();
    let from = root.start_time_unix_nano + 1_500_000;
    let query =
        clew_query::traceql::parse("{ resource.service.name = \"gateway\" && kind = server } >> { resource.service.name = \"cart\" }")
            .unwrap();
    let selection = f.engine.select_spans(&query, from, f.end).await.unwrap();
    let clew_query::traceql::SpanSelection::Spans { spans, .. } = selection else { panic!("a structural query is evaluated") };
    let expected: std::collections::HashSet<_> = f
        .spans
        .iter()
        .filter(|s| service(s) == "cart" && (from..f.end).contains(&s.start_time_unix_nano))
        .map(|s| (s.trace_id, s.span_id))
        .collect();
    assert!(expected.iter().any(|(trace, _)| *trace == root.trace_id));
    assert_eq!(spans, expected);
    // A window that ends between the same trace's gateway client span and its cart server
    // span: the gateway spans in it are matched although the descendant the query names (the
    // more selective part) starts after the window.
    let until = root.start_time_unix_nano + 1_500_000;
    let query =
        clew_query::traceql::parse("{ resource.service.name = \"cart\" && kind = server } << { resource.service.name = \"gateway\" }")
            .unwrap();
    let selection = f.engine.select_spans(&query, f.start, until).await.unwrap();
    let clew_query::traceql::SpanSelection::Spans { spans, .. } = selection else { panic!("a structural query is evaluated") };
    let expected: std::collections::HashSet<_> = f
        .spans
        .iter()
        .filter(|s| service(s) == "gateway" && (f.start..until).contains(&s.start_time_unix_nano))
        .map(|s| (s.trace_id, s.span_id))
        .collect();
    assert_eq!(expected.iter().filter(|(trace, _)| *trace == root.trace_id).count(), 2);
    assert_eq!(spans, expected);
    // Search, over one second that holds only that trace's cart spans, finds the trace.
    let request = clew_query::traceql::TraceQlRequest {
        query: "{ resource.service.name = \"gateway\" && kind = server } >> { resource.service.name = \"cart\" }".into(),
        start_unix_nano: Some(from),
        end_unix_nano: Some(from + SECOND),
        limit: 20,
        spans_per_spanset: 3,
    };
    let (found, _) = f.engine.traceql(&request).await.unwrap();
    assert_eq!(found.iter().map(|m| m.trace_id).collect::<Vec<_>>(), vec![root.trace_id]);

    let top = f.both("{ resource.service.name = \"gateway\" } | count_over_time() by (name) | topk(1)").await;
    // Two names per minute; at each step only the busier one keeps its sample.
    let steps: usize = top.series.iter().map(|s| s.samples.len()).sum();
    assert_eq!(steps, 11);

    let bad = f
        .engine
        .traceql_metrics(
            "{ } | rate()",
            &MetricsRequest { start_unix_nano: 0, end_unix_nano: 12_000 * SECOND, step_nanos: 1, evaluate_traces: false },
        )
        .await;
    assert!(bad.unwrap_err().to_string().contains("points per series"));
    let search = f
        .engine
        .traceql_metrics(
            "{ status = error }",
            &MetricsRequest { start_unix_nano: f.start, end_unix_nano: f.end, step_nanos: MINUTE, evaluate_traces: false },
        )
        .await;
    assert!(search.unwrap_err().to_string().contains("not a metrics query"));
}
