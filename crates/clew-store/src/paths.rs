//! Calling-context rollups: per minute and entry point, every (service, operation, kind) reached
//! along one chain of calls from the trace's root, counted once per trace. This is what the
//! critical path across traces (a flame graph per entry point, the operations ranked by their
//! time on it) and the fan-out of an entry point (calls per request of each operation, for
//! traffic estimation) are read from, without the spans.
//!
//! A calling context is named by a hash of its chain: `hash(parent's hash, service, operation,
//! kind)`, with [`REQUEST_PATH`] for the request itself (the whole trace, of which the root spans
//! are the children). The hash is xxHash64, the same in every process and version, so rows of
//! different blocks add up.
//!
//! Rows are also split by the trace's traffic source: the value of a configurable attribute
//! (`traffic.source` by default: `web`, `app`, `load_test`…) on its root span, or on the first
//! span that carries it. That is how load tests are left out of a baseline, or looked at alone.
//!
//! Per context and minute: the traces it occurs in, its spans, errors, summed and critical-path
//! time, the latency of its spans, and per trace the number of its spans and its critical-path
//! time (as histograms, for "calls per request" and critical-path percentiles).

use std::fs;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use clew_model::LatencyHistogram;
use datafusion::arrow::array::{ArrayRef, AsArray, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, UInt64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use twox_hash::XxHash64;

// Calling contexts are hashed per span: foldhash rather than the slower SipHash.
use foldhash::{HashMap, HashMapExt};

use crate::StoreError;
use crate::rollup::{Names, write_parquet};

/// The request itself: the whole trace, from its first span's start to its last span's end.
pub const REQUEST_PATH: u64 = 0;
/// Where the spans of a trace's contexts beyond [`MAX_CONTEXTS_PER_TRACE`] are counted.
pub const OVERFLOW_PATH: u64 = 1;
/// The kind of the request row.
pub const REQUEST_KIND: &str = "request";
/// The kind of the overflow row.
pub const OVERFLOW_KIND: &str = "overflow";
/// A trace with more distinct calling contexts than this (a generated span name per call, say)
/// has the rest counted in one overflow context.
pub const MAX_CONTEXTS_PER_TRACE: usize = 1_024;
/// Chains longer than this (or a cycle of parents) start again from the request.
const MAX_DEPTH: usize = 256;
/// At most this many distinct traffic sources are kept per part; the rest count as [`OTHER_SOURCE`].
pub const MAX_SOURCES: usize = 32;
/// Where the traces of sources beyond [`MAX_SOURCES`] (or with a value longer than
/// [`MAX_SOURCE_BYTES`]) are counted.
pub const OTHER_SOURCE: &str = "(other)";
pub const MAX_SOURCE_BYTES: usize = 64;

/// Which traffic sources' rows a reader wants. The empty source is traffic that names none.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum TrafficFilter {
    #[default]
    All,
    Only(Vec<String>),
    Except(Vec<String>),
}

impl TrafficFilter {
    pub fn admits(&self, source: &str) -> bool {
        match self {
            TrafficFilter::All => true,
            TrafficFilter::Only(sources) => sources.iter().any(|s| s == source),
            TrafficFilter::Except(sources) => !sources.iter().any(|s| s == source),
        }
    }
}

/// One calling context of one entry point in one minute (the minute its traces started).
#[derive(Debug, Clone, PartialEq)]
pub struct PathRow {
    pub minute_unix_nano: i64,
    pub entry_service: Arc<str>,
    pub entry_operation: Arc<str>,
    /// The trace's traffic source (empty when it names none).
    pub source: Arc<str>,
    pub path: u64,
    /// The caller's context ([`REQUEST_PATH`] for a root span; itself for the request).
    pub parent: u64,
    pub service: Arc<str>,
    pub operation: Arc<str>,
    pub kind: Arc<str>,
    /// 0 for the request, 1 for root spans.
    pub depth: u32,
    /// Traces in which the context occurs.
    pub traces: u64,
    pub spans: u64,
    /// Σw² over the spans, w being each span's trace's adjusted count (`spans` is Σw): how much
    /// a count of sampled spans varies. Equal to `spans` when nothing was sampled.
    pub weight_squares: u64,
    pub errors: u64,
    pub duration_nanos: i64,
    pub critical_path_nanos: i64,
    /// Duration of each span (of each trace, for the request).
    pub latency: LatencyHistogram,
    /// Per trace in which it occurs: how many of its spans (all spans, for the request).
    pub per_trace_spans: LatencyHistogram,
    /// Per trace in which it occurs: its critical-path time (the trace's duration, for the request).
    pub per_trace_critical: LatencyHistogram,
}

impl PathRow {
    /// Adds the totals of a row with the same context.
    pub fn add(&mut self, other: &PathRow) {
        self.traces += other.traces;
        self.spans += other.spans;
        self.weight_squares = self.weight_squares.saturating_add(other.weight_squares);
        self.errors += other.errors;
        self.duration_nanos = self.duration_nanos.saturating_add(other.duration_nanos);
        self.critical_path_nanos = self.critical_path_nanos.saturating_add(other.critical_path_nanos);
        self.latency.merge(&other.latency);
        self.per_trace_spans.merge(&other.per_trace_spans);
        self.per_trace_critical.merge(&other.per_trace_critical);
    }

    pub fn key(&self) -> (&str, &str, &str, u64) {
        (&self.entry_service, &self.entry_operation, &self.source, self.path)
    }
}

/// The hash naming the context of a span called from `parent`.
pub fn context_hash(parent: u64, service: &str, operation: &str, kind: &str) -> u64 {
    use std::hash::Hasher;
    // Streamed: the same value as hashing the bytes `service 0x1f operation 0x1f kind` at once.
    let mut hasher = XxHash64::with_seed(parent);
    hasher.write(service.as_bytes());
    hasher.write(&[0x1f]);
    hasher.write(operation.as_bytes());
    hasher.write(&[0x1f]);
    hasher.write(kind.as_bytes());
    match hasher.finish() {
        // The two reserved names are never a span's context.
        REQUEST_PATH | OVERFLOW_PATH => 2,
        hash => hash,
    }
}

/// A span of the trace being read.
pub(crate) struct PathSpan {
    pub span: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub service: Arc<str>,
    pub operation: Arc<str>,
    pub kind: Arc<str>,
    pub duration_nanos: i64,
    pub critical_path_nanos: i64,
    pub error: bool,
    /// The value of the traffic-source attribute, when the span carries it.
    pub source: Option<Arc<str>>,
}

/// The trace being read: its entry point, start minute and whole-trace facts.
pub(crate) struct PathTrace {
    pub minute_unix_nano: i64,
    pub entry_service: Arc<str>,
    pub entry_operation: Arc<str>,
    pub duration_nanos: i64,
    pub error: bool,
    /// How many traces of real traffic this one stands for.
    pub weight: u64,
}

type EntryKey = (i64, Arc<str>, Arc<str>, Arc<str>);

/// Gathers path rows trace by trace.
#[derive(Default)]
pub(crate) struct PathBuilder {
    rows: HashMap<EntryKey, HashMap<u64, PathRow>>,
    trace: Option<PathTrace>,
    spans: Vec<PathSpan>,
    sources: Vec<Arc<str>>,
    no_source: Option<Arc<str>>,
}

impl PathBuilder {
    pub fn begin(&mut self, trace: PathTrace) {
        self.end();
        self.trace = Some(trace);
    }

    pub fn push(&mut self, span: PathSpan) {
        self.spans.push(span);
    }

    /// Counts the trace read since [`begin`](Self::begin).
    pub fn end(&mut self) {
        let spans = std::mem::take(&mut self.spans);
        let Some(trace) = self.trace.take() else {
            return;
        };
        let contexts = contexts(&spans);
        let source = self.source(&spans);
        let entry = (trace.minute_unix_nano, Arc::clone(&trace.entry_service), Arc::clone(&trace.entry_operation), Arc::clone(&source));
        let rows = self.rows.entry(entry).or_default();
        let new_row = |path: u64, parent: u64, service: &Arc<str>, operation: &Arc<str>, kind: &Arc<str>, depth: u32| PathRow {
            minute_unix_nano: trace.minute_unix_nano,
            entry_service: Arc::clone(&trace.entry_service),
            entry_operation: Arc::clone(&trace.entry_operation),
            source: Arc::clone(&source),
            path,
            parent,
            service: Arc::clone(service),
            operation: Arc::clone(operation),
            kind: Arc::clone(kind),
            depth,
            traces: 0,
            spans: 0,
            weight_squares: 0,
            errors: 0,
            duration_nanos: 0,
            critical_path_nanos: 0,
            latency: LatencyHistogram::default(),
            per_trace_spans: LatencyHistogram::default(),
            per_trace_critical: LatencyHistogram::default(),
        };
        let request = rows.entry(REQUEST_PATH).or_insert_with(|| {
            let kind: Arc<str> = Arc::from(REQUEST_KIND);
            new_row(REQUEST_PATH, REQUEST_PATH, &trace.entry_service, &trace.entry_operation, &kind, 0)
        });
        // A sampled trace counts as the traces it stands for: counts, sums and distributions
        // are weighted, so means and quantiles across traces are too.
        let weight = trace.weight.max(1);
        let times = |nanos: i64| nanos.saturating_mul(weight as i64);
        request.traces += weight;
        request.spans += spans.len() as u64 * weight;
        request.weight_squares = request.weight_squares.saturating_add((spans.len() as u64).saturating_mul(weight * weight));
        request.errors += trace.error as u64 * weight;
        request.duration_nanos = request.duration_nanos.saturating_add(times(trace.duration_nanos));
        request.critical_path_nanos = request.critical_path_nanos.saturating_add(times(trace.duration_nanos));
        request.latency.record_n(trace.duration_nanos, weight);
        request.per_trace_spans.record_n(spans.len() as i64, weight);
        request.per_trace_critical.record_n(trace.duration_nanos, weight);

        // Per context in this trace: spans and critical-path time.
        let mut in_trace: HashMap<u64, (u64, i64)> = HashMap::new();
        for (span, (path, parent, depth)) in spans.iter().zip(contexts) {
            let (path, parent, depth) = if in_trace.len() >= MAX_CONTEXTS_PER_TRACE && !in_trace.contains_key(&path) {
                (OVERFLOW_PATH, REQUEST_PATH, 1)
            } else {
                (path, parent, depth)
            };
            let row = rows.entry(path).or_insert_with(|| {
                if path == OVERFLOW_PATH {
                    let (operation, kind): (Arc<str>, Arc<str>) = (Arc::from("(other calling contexts)"), Arc::from(OVERFLOW_KIND));
                    new_row(path, parent, &trace.entry_service, &operation, &kind, depth)
                } else {
                    new_row(path, parent, &span.service, &span.operation, &span.kind, depth)
                }
            });
            row.spans += weight;
            row.weight_squares = row.weight_squares.saturating_add(weight * weight);
            row.errors += span.error as u64 * weight;
            row.duration_nanos = row.duration_nanos.saturating_add(times(span.duration_nanos));
            row.critical_path_nanos = row.critical_path_nanos.saturating_add(times(span.critical_path_nanos));
            row.latency.record_n(span.duration_nanos, weight);
            let counted = in_trace.entry(path).or_default();
            counted.0 += 1;
            counted.1 = counted.1.saturating_add(span.critical_path_nanos);
        }
        for (path, (count, critical)) in in_trace {
            let row = rows.get_mut(&path).expect("counted above");
            row.traces += weight;
            row.per_trace_spans.record_n(count as i64, weight);
            row.per_trace_critical.record_n(critical, weight);
        }
    }

    /// The trace's traffic source: its root span's, else the first span's that names one;
    /// bounded in length and in distinct values.
    fn source(&mut self, spans: &[PathSpan]) -> Arc<str> {
        let named = spans.iter().find(|s| s.parent.is_none() && s.source.is_some()).or_else(|| spans.iter().find(|s| s.source.is_some()));
        let Some(value) = named.and_then(|s| s.source.as_ref()) else {
            return Arc::clone(self.no_source.get_or_insert_with(|| Arc::from("")));
        };
        if let Some(known) = self.sources.iter().find(|s| ***s == **value) {
            return Arc::clone(known);
        }
        let value =
            if value.len() > MAX_SOURCE_BYTES || self.sources.len() >= MAX_SOURCES { Arc::from(OTHER_SOURCE) } else { Arc::clone(value) };
        if !self.sources.contains(&value) {
            self.sources.push(Arc::clone(&value));
        }
        value
    }

    /// Every row, ordered by minute.
    pub fn finish(mut self) -> Vec<PathRow> {
        self.end();
        let mut out: Vec<PathRow> = self.rows.into_values().flat_map(|rows| rows.into_values()).collect();
        out.sort_by(|a, b| {
            (a.minute_unix_nano, &a.entry_service, &a.entry_operation, &a.source, a.depth, a.path).cmp(&(
                b.minute_unix_nano,
                &b.entry_service,
                &b.entry_operation,
                &b.source,
                b.depth,
                b.path,
            ))
        });
        out
    }
}

/// Per span of one trace: its context, its caller's context and its depth (1 for a root span).
/// A span whose parent is not in the trace starts a chain of its own.
fn contexts(spans: &[PathSpan]) -> Vec<(u64, u64, u32)> {
    let mut index: HashMap<[u8; 8], usize> = HashMap::with_capacity(spans.len());
    for (i, span) in spans.iter().enumerate() {
        index.entry(span.span).or_insert(i);
    }
    let parent_of = |i: usize| spans[i].parent.and_then(|p| index.get(&p).copied()).filter(|p| *p != i);
    let mut resolved: Vec<Option<(u64, u64, u32)>> = vec![None; spans.len()];
    let mut chain = Vec::new();
    for i in 0..spans.len() {
        if resolved[i].is_some() {
            continue;
        }
        chain.clear();
        chain.push(i);
        while let Some(parent) = parent_of(*chain.last().expect("not empty")) {
            if resolved[parent].is_some() || chain.len() >= MAX_DEPTH {
                break;
            }
            chain.push(parent);
        }
        for &j in chain.iter().rev() {
            let (parent, depth) = match parent_of(j).and_then(|p| resolved[p]) {
                Some((path, _, depth)) if (depth as usize) < MAX_DEPTH => (path, depth + 1),
                _ => (REQUEST_PATH, 1),
            };
            let span = &spans[j];
            resolved[j] = Some((context_hash(parent, &span.service, &span.operation, &span.kind), parent, depth));
        }
    }
    resolved.into_iter().map(|r| r.expect("every span resolved")).collect()
}

/// Merges rows of many parts into one row per (entry point, traffic source, context): dated
/// `into` when given (minutes merged too), else one per minute (ordered by minute). With
/// `sources` false, the sources are merged too (the rows then carry the first one's name).
pub fn merge_paths<'a>(rows: impl IntoIterator<Item = &'a PathRow>, into: Option<i64>, sources: bool) -> Vec<PathRow> {
    let mut merged: HashMap<(i64, &str, &str, &str, u64), PathRow> = HashMap::new();
    for row in rows {
        let minute = into.unwrap_or(row.minute_unix_nano);
        let (service, operation, source, path) = row.key();
        let key = (minute, service, operation, if sources { source } else { "" }, path);
        match merged.get_mut(&key) {
            Some(total) => total.add(row),
            None => {
                merged.insert(key, PathRow { minute_unix_nano: minute, ..row.clone() });
            }
        }
    }
    let mut out: Vec<PathRow> = merged.into_values().collect();
    if into.is_none() {
        out.sort_by_key(|r| r.minute_unix_nano);
    }
    out
}

static PATH_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("minute_unix_nano", DataType::Int64, false),
        Field::new("entry_service", DataType::Utf8, false),
        Field::new("entry_operation", DataType::Utf8, false),
        Field::new("path", DataType::UInt64, false),
        Field::new("parent", DataType::UInt64, false),
        Field::new("service", DataType::Utf8, false),
        Field::new("operation", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("depth", DataType::Int32, false),
        Field::new("traces", DataType::Int64, false),
        Field::new("spans", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("duration_nanos", DataType::Int64, false),
        Field::new("critical_path_nanos", DataType::Int64, false),
        Field::new("latency", DataType::Binary, false),
        Field::new("per_trace_spans", DataType::Binary, false),
        Field::new("per_trace_critical", DataType::Binary, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("weight_squares", DataType::Int64, false),
    ]))
});

/// Writes path rows as a Parquet file (synced; written under a temporary name first).
pub fn write_paths(path: &Path, rows: &[PathRow]) -> Result<(), StoreError> {
    let mut minute = Int64Builder::new();
    let (mut entry_service, mut entry_operation) = (StringBuilder::new(), StringBuilder::new());
    let (mut context, mut parent) = (UInt64Builder::new(), UInt64Builder::new());
    let (mut service, mut operation, mut kind) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut depth = Int32Builder::new();
    let mut counters: [Int64Builder; 5] = std::array::from_fn(|_| Int64Builder::new());
    let mut histograms: [BinaryBuilder; 3] = std::array::from_fn(|_| BinaryBuilder::new());
    let mut source = StringBuilder::new();
    let mut weight_squares = Int64Builder::new();
    for row in rows {
        weight_squares.append_value(row.weight_squares.min(i64::MAX as u64) as i64);
        source.append_value(&row.source);
        minute.append_value(row.minute_unix_nano);
        entry_service.append_value(&row.entry_service);
        entry_operation.append_value(&row.entry_operation);
        context.append_value(row.path);
        parent.append_value(row.parent);
        service.append_value(&row.service);
        operation.append_value(&row.operation);
        kind.append_value(&row.kind);
        depth.append_value(row.depth as i32);
        let values = [row.traces as i64, row.spans as i64, row.errors as i64, row.duration_nanos, row.critical_path_nanos];
        for (builder, value) in counters.iter_mut().zip(values) {
            builder.append_value(value);
        }
        for (builder, histogram) in histograms.iter_mut().zip([&row.latency, &row.per_trace_spans, &row.per_trace_critical]) {
            builder.append_value(histogram.to_bytes());
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(minute.finish()),
        Arc::new(entry_service.finish()),
        Arc::new(entry_operation.finish()),
        Arc::new(context.finish()),
        Arc::new(parent.finish()),
        Arc::new(service.finish()),
        Arc::new(operation.finish()),
        Arc::new(kind.finish()),
        Arc::new(depth.finish()),
    ];
    columns.extend(counters.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend(histograms.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(source.finish()));
    columns.push(Arc::new(weight_squares.finish()));
    write_parquet(path, RecordBatch::try_new(Arc::clone(&PATH_SCHEMA), columns)?)
}

/// Reads path rows written by [`write_paths`], ordered by minute.
pub fn read_paths(path: &Path) -> Result<Vec<PathRow>, StoreError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path)?)?.build()?;
    let mut names = Names::default();
    let mut intern = |name: &str| names.get(name);
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        // Files written before traffic sources lack the last two columns (their traffic names
        // none), files written before adjusted counts the last one (every span counted once).
        let columns = batch.schema().fields().len();
        let all = PATH_SCHEMA.fields().len();
        if !(all - 2..=all).contains(&columns) {
            return Err(StoreError::Corrupt(format!("path rollup {}: unexpected columns", path.display())));
        }
        let source = (columns > all - 2).then(|| batch.column(17).as_string::<i32>());
        let squares = (columns == all).then(|| batch.column(18).as_primitive::<Int64Type>());
        let minute = batch.column(0).as_primitive::<Int64Type>();
        let (entry_service, entry_operation) = (batch.column(1).as_string::<i32>(), batch.column(2).as_string::<i32>());
        let (context, parent) = (batch.column(3).as_primitive::<UInt64Type>(), batch.column(4).as_primitive::<UInt64Type>());
        let (service, operation, kind) =
            (batch.column(5).as_string::<i32>(), batch.column(6).as_string::<i32>(), batch.column(7).as_string::<i32>());
        let depth = batch.column(8).as_primitive::<Int32Type>();
        let counter = |i: usize| batch.column(9 + i).as_primitive::<Int64Type>();
        let histogram = |i: usize| batch.column(14 + i).as_binary::<i32>();
        for row in 0..batch.num_rows() {
            rows.push(PathRow {
                minute_unix_nano: minute.value(row),
                entry_service: intern(entry_service.value(row)),
                entry_operation: intern(entry_operation.value(row)),
                source: intern(source.map_or("", |s| s.value(row))),
                path: context.value(row),
                parent: parent.value(row),
                service: intern(service.value(row)),
                operation: intern(operation.value(row)),
                kind: intern(kind.value(row)),
                depth: depth.value(row).max(0) as u32,
                traces: counter(0).value(row) as u64,
                spans: counter(1).value(row) as u64,
                weight_squares: squares.map_or(counter(1).value(row), |s| s.value(row)) as u64,
                errors: counter(2).value(row) as u64,
                duration_nanos: counter(3).value(row),
                critical_path_nanos: counter(4).value(row),
                latency: LatencyHistogram::from_bytes(histogram(0).value(row)),
                per_trace_spans: LatencyHistogram::from_bytes(histogram(1).value(row)),
                per_trace_critical: LatencyHistogram::from_bytes(histogram(2).value(row)),
            });
        }
    }
    rows.sort_by_key(|r| r.minute_unix_nano);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u8, parent: Option<u8>, service: &str, operation: &str, kind: &str, millis: i64, critical: i64) -> PathSpan {
        PathSpan {
            span: [id; 8],
            parent: parent.map(|p| [p; 8]),
            service: Arc::from(service),
            operation: Arc::from(operation),
            kind: Arc::from(kind),
            duration_nanos: millis * 1_000_000,
            critical_path_nanos: critical * 1_000_000,
            error: id == 4,
            source: None,
        }
    }

    fn trace(builder: &mut PathBuilder, loops: u8) {
        let entry: Arc<str> = Arc::from("gateway");
        builder.begin(PathTrace {
            minute_unix_nano: 0,
            entry_service: Arc::clone(&entry),
            entry_operation: Arc::from("GET /"),
            duration_nanos: 100_000_000,
            error: false,
            weight: 1,
        });
        // Children listed before their parents: the order of rows is by span ID, not by call.
        for i in 0..loops {
            builder.push(span(10 + i, Some(3), "db", "SELECT", "client", 2, 2));
        }
        builder.push(span(1, None, "gateway", "GET /", "server", 100, 40));
        builder.push(span(2, Some(1), "gateway", "GET /cart", "client", 60, 0));
        builder.push(span(3, Some(2), "cart", "GET /cart", "server", 58, 58 - 2 * loops as i64));
        // The same operation called from the gateway directly: another context.
        builder.push(span(4, Some(1), "db", "SELECT", "client", 2, 2));
        // An orphan: its parent never arrived.
        builder.push(span(5, Some(99), "audit", "write", "consumer", 1, 0));
    }

    #[test]
    fn each_calling_context_counts_its_spans_once_per_trace() {
        let mut builder = PathBuilder::default();
        trace(&mut builder, 3);
        trace(&mut builder, 1);
        let rows = builder.finish();
        let find = |service: &str, depth: u32| rows.iter().filter(|r| &*r.service == service && r.depth == depth).collect::<Vec<_>>();
        let request = rows.iter().find(|r| r.path == REQUEST_PATH).unwrap();
        assert_eq!((request.traces, request.spans, request.duration_nanos), (2, 14, 200_000_000));
        assert_eq!((&*request.kind, request.depth), (REQUEST_KIND, 0));
        let root = &find("gateway", 1)[0];
        assert_eq!((root.parent, root.traces, root.spans, root.critical_path_nanos), (REQUEST_PATH, 2, 2, 80_000_000));
        let cart = &find("cart", 3)[0];
        assert_eq!(cart.parent, find("gateway", 2)[0].path);
        // The loop under the cart: 3 calls in one trace, 1 in the other.
        let looped = &find("db", 4)[0];
        assert_eq!((looped.parent, looped.traces, looped.spans), (cart.path, 2, 4));
        assert_eq!(looped.per_trace_spans.quantile(1.0), 3.0);
        assert_eq!(looped.per_trace_spans.quantile(0.5), 1.0);
        assert_eq!(looped.per_trace_critical.quantile(1.0), 6e6);
        // Same operation, another caller: a context of its own, with the errors of its spans.
        let direct = &find("db", 2)[0];
        assert_ne!(direct.path, looped.path);
        assert_eq!((direct.parent, direct.spans, direct.errors), (root.path, 2, 2));
        let orphan = &find("audit", 1)[0];
        assert_eq!(orphan.parent, REQUEST_PATH, "a span whose parent is missing starts a chain");
        assert_eq!(rows.iter().filter(|r| r.path != REQUEST_PATH).map(|r| r.spans).sum::<u64>(), 14);

        let file = std::env::temp_dir().join(format!("clew-paths-test-{}.paths.parquet", std::process::id()));
        write_paths(&file, &rows).unwrap();
        let read = read_paths(&file).unwrap();
        let _ = fs::remove_file(&file);
        assert_eq!(read.len(), rows.len());
        for row in &rows {
            assert!(read.contains(row), "{row:?} survives the file");
        }
        let merged = merge_paths(rows.iter().chain(&read), Some(0), true);
        assert_eq!(merged.len(), rows.len());
        assert_eq!(merged.iter().find(|r| r.path == looped.path).unwrap().spans, 8);
    }

    #[test]
    fn traffic_sources_split_the_rows_by_the_root_spans_value() {
        let mut builder = PathBuilder::default();
        let begin = |builder: &mut PathBuilder| {
            builder.begin(PathTrace {
                minute_unix_nano: 0,
                entry_service: Arc::from("gateway"),
                entry_operation: Arc::from("GET /"),
                duration_nanos: 10,
                error: false,
                weight: 1,
            })
        };
        let tagged = |id: u8, parent: Option<u8>, source: Option<&str>| PathSpan {
            source: source.map(Arc::from),
            ..span(id, parent, "gateway", "GET /", "server", 1, 1)
        };
        // The root names the source; a child saying otherwise does not change it.
        begin(&mut builder);
        builder.push(tagged(2, Some(1), Some("web")));
        builder.push(tagged(1, None, Some("load_test")));
        // Only a child names it.
        begin(&mut builder);
        builder.push(tagged(1, None, None));
        builder.push(tagged(2, Some(1), Some("load_test")));
        // None does.
        begin(&mut builder);
        builder.push(tagged(1, None, None));
        // Too long a value counts as another source.
        begin(&mut builder);
        builder.push(tagged(1, None, Some(&"x".repeat(MAX_SOURCE_BYTES + 1))));
        let rows = builder.finish();
        let requests = |source: &str| rows.iter().filter(|r| r.path == REQUEST_PATH && &*r.source == source).map(|r| r.traces).sum::<u64>();
        assert_eq!((requests("load_test"), requests(""), requests(OTHER_SOURCE), requests("web")), (2, 1, 1, 0));
        // Merged without sources, the request counts add up again.
        let merged = merge_paths(rows.iter().filter(|r| TrafficFilter::Except(vec!["load_test".into()]).admits(&r.source)), Some(0), false);
        assert_eq!(merged.iter().find(|r| r.path == REQUEST_PATH).unwrap().traces, 2);
        let file = std::env::temp_dir().join(format!("clew-paths-source-{}.paths.parquet", std::process::id()));
        write_paths(&file, &rows).unwrap();
        let read = read_paths(&file).unwrap();
        assert!(rows.iter().all(|r| read.contains(r)));
        // A file written before adjusted counts: every span counted once.
        let old: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|batch| {
                let batch = batch.unwrap();
                batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>()).unwrap()
            })
            .collect();
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(fs::File::create(&file).unwrap(), old[0].schema(), None).unwrap();
        old.iter().for_each(|batch| writer.write(batch).unwrap());
        writer.close().unwrap();
        let read = read_paths(&file).unwrap();
        let _ = fs::remove_file(&file);
        assert_eq!(read.len(), rows.len());
        assert!(read.iter().all(|r| r.weight_squares == r.spans && rows.iter().any(|w| w.key() == r.key() && w.spans == r.spans)));
    }

    #[test]
    fn a_context_is_named_by_the_hash_of_its_chain() {
        let parent = context_hash(REQUEST_PATH, "gateway", "GET /", "server");
        assert_eq!(parent, XxHash64::oneshot(0, b"gateway\x1fGET /\x1fserver"), "the documented bytes, stable across processes");
        assert_eq!(context_hash(parent, "db", "SELECT", "client"), XxHash64::oneshot(parent, b"db\x1fSELECT\x1fclient"));
        assert_ne!(context_hash(parent, "db", "SELECT", "client"), context_hash(REQUEST_PATH, "db", "SELECT", "client"));
    }

    #[test]
    fn cycles_and_too_many_contexts_stay_bounded() {
        let mut builder = PathBuilder::default();
        builder.begin(PathTrace {
            minute_unix_nano: 0,
            entry_service: Arc::from("a"),
            entry_operation: Arc::from("x"),
            duration_nanos: 1,
            error: false,
            weight: 1,
        });
        // Two spans that name each other as parent.
        builder.push(span(1, Some(2), "a", "x", "server", 1, 1));
        builder.push(span(2, Some(1), "a", "y", "internal", 1, 1));
        for i in 0..2_000u32 {
            let mut generated = span(3, Some(1), "a", "op", "internal", 1, 0);
            generated.span = [3, 3, 3, 3, (i >> 8) as u8, i as u8, 0, 0];
            generated.operation = Arc::from(format!("generated-{i}"));
            builder.push(generated);
        }
        let rows = builder.finish();
        assert!(rows.len() <= MAX_CONTEXTS_PER_TRACE + 2, "{} rows", rows.len());
        let overflow = rows.iter().find(|r| r.path == OVERFLOW_PATH).unwrap();
        assert_eq!(rows.iter().filter(|r| r.path != REQUEST_PATH).map(|r| r.spans).sum::<u64>(), 2_002);
        assert!(overflow.spans > 900 && &*overflow.kind == OVERFLOW_KIND);
    }
}
