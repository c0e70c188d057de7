//! Trace search through the real store over thirty hours of traces, written as a backlog in
//! several parts (so that blocks are cut by time window and compacted within it): newest-first
//! search reads slices of time and must still return exactly the newest matches, and longest
//! first exactly the longest, as computed here from the generated spans.

use std::collections::BTreeMap;
use std::sync::Arc;

use clew_model::{Attribute, Resource, Span, SpanKind, StatusCode, TraceId, Value};
use clew_query::{AttributeFilter, QueryEngine, SearchRequest, SortOrder, TraceSummary};
use clew_store::{EmbeddedStore, Storage, StoreConfig};

mod common;
use common::{Lcg, span};

const SECOND: u64 = 1_000_000_000;
const HOUR: u64 = 3_600 * SECOND;

struct Trace {
    id: String,
    start: u64,
    duration: u64,
    spans: Vec<Span>,
}

struct Fixture {
    engine: QueryEngine,
    traces: Vec<Trace>,
    store: Arc<EmbeddedStore>,
    now: u64,
    directory: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A server span of `service` answering with `status`.
#[allow(clippy::too_many_arguments)]
fn server(trace: TraceId, id: u64, parent: Option<u64>, service: &str, name: &str, start: u64, duration: u64, status: i64) -> Span {
    let resource =
        Arc::new(Resource { attributes: vec![Attribute::new("service.name", Value::Str(service.into()))], ..Default::default() });
    let code = if status >= 500 { StatusCode::Error } else { StatusCode::Unset };
    span(
        trace,
        id,
        parent,
        &resource,
        name,
        SpanKind::Server,
        start,
        duration,
        code,
        vec![("http.response.status_code", Value::Int(status))],
    )
}

async fn fixture() -> Fixture {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut random = Lcg(11);
    let mut traces = Vec::new();
    // Busier in the last two hours than before, as after a deploy; "audit" is rare.
    for i in 0..2_400u64 {
        let age = if i % 2 == 0 { random.next(2 * HOUR / SECOND) } else { random.next(30 * HOUR / SECOND) } * SECOND + i;
        let start = now - age;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
        bytes[15] = 1;
        let trace = TraceId(bytes);
        // Distinct durations, so that "longest" has one answer.
        let duration = 10_000_000 + i * 1_000 + random.next(500);
        let status = if i % 13 == 0 { 503 } else { 200 };
        let mut spans = vec![server(trace, 1, None, "frontend", "GET /", start, duration, 200)];
        if i % 3 == 0 {
            spans.push(server(trace, 2, Some(1), "checkout", "POST /pay", start + 1_000, duration / 2, status));
        }
        if i % 97 == 0 {
            spans.push(server(trace, 3, Some(1), "audit", "record", start + 2_000, duration / 4, 200));
        }
        traces.push(Trace { id: hex(&bytes), start, duration, spans });
    }
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let directory = std::env::temp_dir().join(format!("clew-search-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let store = EmbeddedStore::open(StoreConfig {
        data_dir: directory.clone(),
        wal_sync: false,
        trace_idle_seconds: 3_600.0,
        ..Default::default()
    })
    .unwrap();
    // Four parts, each flushed: the blocks of one part are cut by hour, and compaction merges
    // the parts' blocks hour by hour.
    for part in traces.chunks(600) {
        store.append(part.iter().flat_map(|t| t.spans.iter().cloned()).collect()).await.unwrap();
        store.flush().await.unwrap();
    }
    let storage: Arc<dyn Storage> = Arc::new(Arc::clone(&store));
    let engine = QueryEngine::new(storage).await.unwrap();
    Fixture { engine, traces, store, now, directory }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Fixture {
    /// The answer computed from the generated spans: matching traces with their matched spans,
    /// in the request's order.
    fn expected(&self, request: &SearchRequest, matches: impl Fn(&Span) -> bool) -> Vec<(String, i64)> {
        let mut found: Vec<(&Trace, i64)> = self
            .traces
            .iter()
            .filter_map(|trace| {
                let matched = trace
                    .spans
                    .iter()
                    .filter(|s| matches(s))
                    .filter(|s| request.start_unix_nano.is_none_or(|start| s.start_time_unix_nano >= start))
                    .count() as i64;
                (matched > 0).then_some((trace, matched))
            })
            .collect();
        match request.sort {
            SortOrder::Newest => found.sort_by(|a, b| b.0.start.cmp(&a.0.start).then(a.0.id.cmp(&b.0.id))),
            SortOrder::Longest => found.sort_by(|a, b| b.0.duration.cmp(&a.0.duration).then(a.0.id.cmp(&b.0.id))),
        }
        found.into_iter().take(request.limit).map(|(trace, matched)| (trace.id.clone(), matched)).collect()
    }

    async fn search(&self, request: &SearchRequest) -> Vec<(String, i64)> {
        let found: Vec<TraceSummary> = self.engine.search(request).await.unwrap();
        for summary in &found {
            let trace = self.traces.iter().find(|t| t.id == summary.trace_id).expect("a generated trace");
            assert_eq!((summary.start_unix_nano as u64, summary.duration_nanos as u64), (trace.start, trace.duration), "trace facts");
            assert_eq!(summary.root_service, "frontend");
        }
        found.into_iter().map(|s| (s.trace_id, s.matched_spans)).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn newest_and_longest_searches_are_exact_across_time_slices() {
    let fixture = fixture().await;
    // Each block holds the traces of one hour (compacted across the four parts).
    let blocks = fixture.store.blocks();
    let mut per_hour: BTreeMap<i64, usize> = BTreeMap::new();
    for block in &blocks {
        let hour = block.min_start_unix_nano.div_euclid(HOUR as i64);
        assert!(block.max_end_unix_nano.div_euclid(HOUR as i64) <= hour + 1, "a block within its hour: {block:?}");
        *per_hour.entry(hour).or_default() += 1;
    }
    assert!(per_hour.len() >= 30, "{} hours", per_hour.len());
    assert!(per_hour.values().all(|n| *n == 1), "one block per hour once compacted: {per_hour:?}");

    let newest = |limit| SearchRequest { limit, ..Default::default() };
    let cases: Vec<(&str, SearchRequest, Box<dyn Fn(&Span) -> bool>)> = vec![
        (
            "a common service",
            SearchRequest { service: Some("checkout".into()), ..newest(20) },
            Box::new(|s: &Span| s.service_name() == "checkout"),
        ),
        (
            "a rare service: the slices reach back to the beginning",
            SearchRequest { service: Some("audit".into()), ..newest(100) },
            Box::new(|s: &Span| s.service_name() == "audit"),
        ),
        (
            "a status code",
            SearchRequest { attributes: vec![AttributeFilter::parse("http.response.status_code>=500").unwrap()], ..newest(15) },
            Box::new(|s: &Span| s.attribute("http.response.status_code").and_then(Value::as_int).is_some_and(|c| c >= 500)),
        ),
        (
            "a start six hours back",
            SearchRequest { service: Some("audit".into()), start_unix_nano: Some(fixture.now - 6 * HOUR), ..newest(50) },
            Box::new(|s: &Span| s.service_name() == "audit"),
        ),
        (
            "longest",
            SearchRequest { operation: Some("POST /pay".into()), sort: SortOrder::Longest, ..newest(12) },
            Box::new(|s: &Span| s.name == "POST /pay"),
        ),
        (
            "longest, rare",
            SearchRequest { service: Some("audit".into()), sort: SortOrder::Longest, ..newest(40) },
            Box::new(|s: &Span| s.service_name() == "audit"),
        ),
    ];
    for (what, request, matches) in cases {
        let expected = fixture.expected(&request, matches);
        assert!(!expected.is_empty(), "{what}: the fixture has matches");
        assert_eq!(fixture.search(&request).await, expected, "{what}");
    }
}
