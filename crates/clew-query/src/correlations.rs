//! The counts behind correlations: for the spans in a scope (a service, an operation, or every
//! span) within a window, split into a selection (a latency range, optionally within a time
//! range; the failed spans; or what a TraceQL query matches) and the baseline (the rest), how
//! many of each carry each attribute value: span attributes, resource attributes, and the
//! services their trace passes through; and, for numeric attributes, a sample of their values
//! on each side, to compare as distributions.
//!
//! Totals, the latency histogram and the time × latency heatmap count every span of the scope
//! (one scan of narrow columns). Attribute values are the expensive part (two maps decoded per
//! span), so over a large scope they are counted on a uniform sample of traces: blocks are
//! sorted by trace ID, so "trace IDs below T" is a random share of the traces that Parquet
//! reads without touching the other row groups. When the sample holds few selected spans and
//! SQL can state the selection, every selected span is counted (a stratified sample: the whole
//! selection against a sample of the baseline), so a small selection keeps its support.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

/// Maps counted into once per attribute of every span: a fast hash (no untrusted keys choose
/// the buckets' fate here beyond one request).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use clew_model::{LatencyHistogram, SpanId, TraceId};
use datafusion::arrow::array::{Array, AsArray, BooleanArray, DictionaryArray, MapArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type};
use futures::StreamExt;
use serde::Serialize;

use crate::traceql::{Query, SpanSelection};
use crate::{QueryEngine, QueryError, quote};
use clew_store::block::ADJUSTED_COUNT;

/// Which spans are compared.
#[derive(Debug, Clone, Default)]
pub struct CorrelationScope {
    /// Every service when absent.
    pub service: Option<String>,
    /// The span name; every operation of the service when absent.
    pub operation: Option<String>,
    /// `server`, `client`, …; any kind when absent.
    pub kind: Option<String>,
}

/// The selection within the scope; the rest is the baseline.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Spans at least `min` and below `max` long (either bound may be open), and, when given,
    /// started within [from, to): a region of the time × latency heatmap.
    Latency { min_nanos: Option<i64>, max_nanos: Option<i64>, from_unix_nano: Option<u64>, to_unix_nano: Option<u64> },
    /// Spans with an error status.
    Errors,
    /// The spans a TraceQL spanset query matches.
    TraceQl(Box<Query>),
}

impl Selection {
    fn sql(&self) -> Option<String> {
        match self {
            Selection::Latency { min_nanos, max_nanos, from_unix_nano, to_unix_nano } => {
                let mut parts = vec!["TRUE".to_string()];
                parts.extend(min_nanos.map(|n| format!("duration_nanos >= {n}")));
                parts.extend(max_nanos.map(|n| format!("duration_nanos < {n}")));
                parts.extend(from_unix_nano.map(|n| format!("start_time_unix_nano >= {n}")));
                parts.extend(to_unix_nano.map(|n| format!("start_time_unix_nano < {n}")));
                Some(parts.join(" AND "))
            }
            Selection::Errors => Some("status_code = 'error'".into()),
            Selection::TraceQl(_) => None,
        }
    }
}

/// How many spans of the selection and of the baseline carry `key` = `value`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueCounts {
    pub key: String,
    pub value: String,
    pub selected: u64,
    pub baseline: u64,
}

/// The values of a numeric attribute on each side: a uniform sample of at most
/// [`NUMERIC_SAMPLE`] each, and how many spans carried the key.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct NumericValues {
    pub key: String,
    pub selected: Vec<f64>,
    pub baseline: Vec<f64>,
    pub selected_spans: u64,
    pub baseline_spans: u64,
}

/// One cell of the time × latency heatmap: spans started in column `column` (of the window cut
/// into [`HEATMAP_COLUMNS`]) lasting from `min_nanos` to below `max_nanos`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeatCell {
    pub column: u32,
    pub min_nanos: f64,
    pub max_nanos: f64,
    pub spans: u64,
    pub selected: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CorrelationFacts {
    /// Every span of the scope, in the selection and not.
    pub selected: u64,
    pub baseline: u64,
    /// The spans whose attributes were counted (fewer when sampled); when traces of unequal
    /// adjusted counts are among them, their effective number (see `Scale`), which the value
    /// counts are scaled to.
    pub compared_selected: u64,
    pub compared_baseline: u64,
    /// Share of the traces whose spans were compared, when attributes were counted on a sample.
    pub sampled_traces: Option<f64>,
    pub values: Vec<ValueCounts>,
    /// Attributes whose every value is a number and which take more than a handful of values.
    pub numeric: Vec<NumericValues>,
    /// Keys with more distinct values than are compared (IDs and the like) that are not numbers.
    pub high_cardinality: Vec<String>,
    /// The scope's latency distribution: (nanoseconds, spans) per logarithmic bucket.
    pub latency: Vec<(f64, u64)>,
    /// Spans in the scope that the selection holds, per latency bucket (same buckets).
    pub selected_latency: Vec<(f64, u64)>,
    /// Width of a heatmap column (ns); the first starts at the window's start.
    pub heatmap_step_nanos: u64,
    pub heatmap: Vec<HeatCell>,
    /// What the reader should know about how the counts were made.
    pub notes: Vec<String>,
}

/// More distinct values than this for one key and the key is left out of the value counts.
pub const MAX_VALUES_PER_KEY: usize = 500;
/// At most this many keys are compared.
pub const MAX_KEYS: usize = 1_000;
/// Over a scope of more spans than this, attribute values are counted on a sample of traces
/// (every selected span still counted when SQL states the selection).
pub const DEFAULT_SAMPLE_SPANS: u64 = 200_000;
/// A sampled selection smaller than this is completed with the selected spans outside the
/// sample (a larger one is compared as sampled).
const WHOLE_SELECTION_BELOW: u64 = 20_000;
/// Values kept per side of a numeric attribute.
pub const NUMERIC_SAMPLE: usize = 2_000;
/// A numeric attribute is compared as a distribution when it takes more distinct values.
const NUMERIC_MIN_DISTINCT: usize = 10;
pub const HEATMAP_COLUMNS: u64 = 60;
/// Heatmap rows per power of two of latency.
const HEATMAP_ROWS_PER_OCTAVE: f64 = 2.0;
/// Span attributes that record a failure rather than explain it (a key ending in `.` is a
/// prefix): left out of an error selection, where they would trivially rank first.
const ERROR_RECORDS: &[&str] = &[
    "http.response.status_code",
    "http.status_code",
    "rpc.grpc.status_code",
    "error",
    "error.type",
    "otel.status_code",
    "otel.status_description",
    "exception.",
];
/// Distinct resources remembered per counting task; spans of further ones are counted one by one.
const MAX_RESOURCES: usize = 50_000;
/// Attribute values longer than this are not compared.
const MAX_VALUE_LENGTH: usize = 200;

/// A uniform sample of a stream of numbers (Vitter's algorithm R), seeded so that the same
/// data gives the same answer.
#[derive(Debug, Clone)]
struct Reservoir {
    values: Vec<f64>,
    seen: u64,
    state: u64,
}

impl Default for Reservoir {
    fn default() -> Self {
        Self { values: Vec::new(), seen: 0, state: 0x5DEE_CE66_D1CE_4E5B }
    }
}

impl Reservoir {
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn push(&mut self, value: f64) {
        self.seen += 1;
        if self.values.len() < NUMERIC_SAMPLE {
            self.values.push(value);
        } else {
            let slot = self.next() % self.seen;
            if (slot as usize) < NUMERIC_SAMPLE {
                self.values[slot as usize] = value;
            }
        }
    }

    /// Puts a random `n` of the values first.
    fn shuffle_prefix(&mut self, n: usize) {
        for i in 0..n.min(self.values.len()) {
            let j = i + (self.next() % (self.values.len() - i) as u64) as usize;
            self.values.swap(i, j);
        }
    }

    /// A uniform sample of both streams together: each side contributes in proportion to what
    /// it saw.
    fn merge(&mut self, mut other: Reservoir) {
        let seen = self.seen + other.seen;
        if self.values.len() + other.values.len() <= NUMERIC_SAMPLE {
            self.values.append(&mut other.values);
        } else {
            let from_self = ((NUMERIC_SAMPLE as f64 * self.seen as f64 / seen as f64).round() as usize).min(self.values.len());
            let from_other = (NUMERIC_SAMPLE - from_self).min(other.values.len());
            self.shuffle_prefix(from_self);
            other.shuffle_prefix(from_other);
            self.values.truncate(from_self);
            self.values.extend_from_slice(&other.values[..from_other]);
        }
        self.seen = seen;
    }
}

#[derive(Debug, Default)]
enum Numbers {
    /// Every value so far was a number.
    #[default]
    Unknown,
    Numeric {
        selected: Box<Reservoir>,
        baseline: Box<Reservoir>,
    },
    NotNumeric,
}

#[derive(Default)]
struct KeyCounts {
    values: HashMap<String, (u64, u64)>,
    too_many: bool,
    numbers: Numbers,
}

impl KeyCounts {
    /// Counts `value` on each side: `sides.weighted` in traffic, from `sides.spans` stored spans.
    fn add(&mut self, value: &str, sides: Sides) {
        let Sides { weighted: (selected, baseline), spans } = sides;
        self.number(value, spans.0, spans.1);
        if self.too_many {
            return;
        }
        if let Some(slot) = self.values.get_mut(value) {
            slot.0 += selected;
            slot.1 += baseline;
        } else if self.values.len() >= MAX_VALUES_PER_KEY {
            self.too_many = true;
            self.values.clear();
        } else {
            self.values.insert(value.to_string(), (selected, baseline));
        }
    }

    /// Records `value` on each side, `selected` and `baseline` times.
    fn number(&mut self, value: &str, selected: u64, baseline: u64) {
        if matches!(self.numbers, Numbers::NotNumeric) {
            return;
        }
        let starts_like_a_number = value.as_bytes().first().is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'.');
        match value.parse::<f64>().ok().filter(|v| starts_like_a_number && v.is_finite()) {
            Some(number) => {
                if matches!(self.numbers, Numbers::Unknown) {
                    self.numbers = Numbers::Numeric { selected: Box::default(), baseline: Box::default() };
                }
                if let Numbers::Numeric { selected: s, baseline: b } = &mut self.numbers {
                    (0..selected).for_each(|_| s.push(number));
                    (0..baseline).for_each(|_| b.push(number));
                }
            }
            None => self.numbers = Numbers::NotNumeric,
        }
    }

    fn merge(&mut self, other: KeyCounts) {
        if !self.too_many {
            if other.too_many {
                self.too_many = true;
                self.values.clear();
            } else {
                for (value, (s, b)) in other.values {
                    let slot = self.values.entry(value).or_default();
                    slot.0 += s;
                    slot.1 += b;
                }
                if self.values.len() > MAX_VALUES_PER_KEY {
                    self.too_many = true;
                    self.values.clear();
                }
            }
        }
        self.numbers = match (std::mem::take(&mut self.numbers), other.numbers) {
            (Numbers::NotNumeric, _) | (_, Numbers::NotNumeric) => Numbers::NotNumeric,
            (Numbers::Unknown, other) => other,
            (mine, Numbers::Unknown) => mine,
            (Numbers::Numeric { selected: mut s1, baseline: mut b1 }, Numbers::Numeric { selected: s2, baseline: b2 }) => {
                s1.merge(*s2);
                b1.merge(*b2);
                Numbers::Numeric { selected: s1, baseline: b1 }
            }
        };
    }
}

/// Resource attributes are the same for every span a process sends. Rows name their resource
/// by a key into the batch's distinct encoded resources: spans are counted per key, and each
/// distinct resource's attributes are decoded once and added as often as its spans were.
#[derive(Default)]
struct Resources {
    /// By encoded resource: its attributes (at most [`MAX_RESOURCES`] remembered).
    decoded: HashMap<Vec<u8>, Arc<Vec<(String, String)>>>,
}

impl Resources {
    /// The attributes of an encoded resource; an undecodable one has none.
    fn attributes(&mut self, bytes: &[u8]) -> Arc<Vec<(String, String)>> {
        if let Some(found) = self.decoded.get(bytes) {
            return Arc::clone(found);
        }
        let pairs = Arc::new(clew_store::resource_attribute_pairs(bytes).unwrap_or_default());
        if self.decoded.len() < MAX_RESOURCES {
            self.decoded.insert(bytes.to_vec(), Arc::clone(&pairs));
        }
        pairs
    }
}

/// Spans counted on each side (selected, baseline): as the traffic they stand for (each span
/// weighed by its trace's adjusted count) and as stored spans.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Sides {
    weighted: (u64, u64),
    spans: (u64, u64),
}

impl Sides {
    fn one(selected: bool, weight: u64) -> Self {
        if selected { Sides { weighted: (weight, 0), spans: (1, 0) } } else { Sides { weighted: (0, weight), spans: (0, 1) } }
    }

    fn add(&mut self, other: Sides) {
        self.weighted = (self.weighted.0 + other.weighted.0, self.weighted.1 + other.weighted.1);
        self.spans = (self.spans.0 + other.spans.0, self.spans.1 + other.spans.1);
    }

    fn is_empty(&self) -> bool {
        self.spans == (0, 0)
    }
}

#[derive(Default)]
struct Counter {
    keys: HashMap<String, KeyCounts>,
    resources: Resources,
    selected: u64,
    baseline: u64,
    /// The same spans weighed by their traces' adjusted counts, and the sums of the squared
    /// weights (for the effective sample size).
    selected_weight: u64,
    baseline_weight: u64,
    selected_squares: u128,
    baseline_squares: u128,
}

impl Counter {
    fn count(&mut self, key: &str, value: &str, selected: bool, weight: u64) {
        self.add(key, value, Sides::one(selected, weight));
    }

    /// Counts the spans of `sides` with key = value.
    fn add(&mut self, key: &str, value: &str, sides: Sides) {
        if value.len() > MAX_VALUE_LENGTH {
            return;
        }
        if let Some(counts) = self.keys.get_mut(key) {
            counts.add(value, sides);
        } else if self.keys.len() < MAX_KEYS {
            self.keys.entry(key.to_string()).or_default().add(value, sides);
        }
    }

    /// Adds the attributes of a resource, as often as its spans were counted on each side.
    fn add_resource(&mut self, bytes: &[u8], sides: Sides, key: &mut String) {
        for (name, value) in self.resources.attributes(bytes).iter() {
            key.clear();
            key.push_str("resource.");
            key.push_str(name);
            self.add(key, value, sides);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn map(&mut self, prefix: &str, map: &MapArray, row: usize, selected: bool, weight: u64, key: &mut String, skip: &[&str]) {
        if map.is_null(row) {
            return;
        }
        let offsets = map.value_offsets();
        let (keys, values) = (map.keys().as_string::<i32>(), map.values().as_string::<i32>());
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            if values.is_null(i) {
                continue;
            }
            let name = keys.value(i);
            if skip.iter().any(|s| name == *s || (s.ends_with('.') && name.starts_with(s))) {
                continue;
            }
            key.clear();
            key.push_str(prefix);
            key.push_str(name);
            self.count(key, values.value(i), selected, weight);
        }
    }

    fn merge(&mut self, other: Counter) {
        self.selected += other.selected;
        self.baseline += other.baseline;
        self.selected_weight += other.selected_weight;
        self.baseline_weight += other.baseline_weight;
        self.selected_squares += other.selected_squares;
        self.baseline_squares += other.baseline_squares;
        for (key, counts) in other.keys {
            let room = self.keys.len() < MAX_KEYS;
            match self.keys.get_mut(&key) {
                Some(mine) => mine.merge(counts),
                None if room => {
                    self.keys.insert(key, counts);
                }
                None => {}
            }
        }
    }
}

/// What every counting task needs to know.
#[derive(Clone)]
struct Pass {
    /// Spans of this service are not counted as a service their trace passes through.
    service: Option<String>,
    spans: Option<Arc<HashSet<(TraceId, SpanId)>>>,
    skip: &'static [&'static str],
    compare_status: bool,
    /// Count only selected spans (the rest of a stratified sample).
    only_selected: bool,
}

impl Pass {
    /// Which rows of a batch are in the selection: the `selected` column, or membership of the
    /// matched spans.
    fn flags(&self, batch: &RecordBatch) -> Vec<bool> {
        match &self.spans {
            None => {
                let column: &BooleanArray = batch.column_by_name("selected").expect("selected is projected").as_boolean();
                (0..batch.num_rows()).map(|row| column.is_valid(row) && column.value(row)).collect()
            }
            Some(spans) => {
                let trace = batch.column_by_name("trace_id").expect("trace_id is projected").as_fixed_size_binary();
                let span = batch.column_by_name("span_id").expect("span_id is projected").as_fixed_size_binary();
                (0..batch.num_rows())
                    .map(|row| match (TraceId::from_slice(trace.value(row)), SpanId::from_slice(span.value(row))) {
                        (Ok(t), Ok(s)) => spans.contains(&(t, s)),
                        _ => false,
                    })
                    .collect()
            }
        }
    }

    fn count(&self, batch: &RecordBatch, counter: &mut Counter) {
        let flags = self.flags(batch);
        let status: &StringArray = batch.column_by_name("status_code").expect("projected").as_string::<i32>();
        let attributes = batch.column_by_name("attributes").expect("projected").as_map();
        // Encoded resources, a dictionary: spans are counted per key, resources once per batch.
        let resource = &keyed(batch, "resource", DataType::Binary);
        let resource_bytes = resource.values().as_binary::<i32>();
        let mut per_resource = vec![Sides::default(); resource_bytes.len()];
        // Each span weighs as many spans of traffic as its trace stands for.
        let weights = batch.column_by_name(ADJUSTED_COUNT).expect("projected").as_primitive::<Int32Type>();
        // One service list per trace, stored as a dictionary: spans are counted per list, and
        // each list is split once per batch.
        let services = &keyed(batch, "trace_services", DataType::Utf8);
        let service_lists = services.values().as_string::<i32>();
        let mut per_list = vec![Sides::default(); service_lists.len()];
        let mut key = String::new();
        for (row, &selected) in flags.iter().enumerate() {
            if self.only_selected && !selected {
                continue;
            }
            let weight = if weights.is_valid(row) { weights.value(row).max(1) as u64 } else { 1 };
            if selected {
                counter.selected += 1;
                counter.selected_weight += weight;
                counter.selected_squares += (weight as u128).pow(2);
            } else {
                counter.baseline += 1;
                counter.baseline_weight += weight;
                counter.baseline_squares += (weight as u128).pow(2);
            }
            counter.map("span.", attributes, row, selected, weight, &mut key, self.skip);
            tally(&mut per_resource, resource, row, Sides::one(selected, weight));
            if self.compare_status {
                counter.count("status", status.value(row), selected, weight);
            }
            tally(&mut per_list, services, row, Sides::one(selected, weight));
        }
        for (index, sides) in per_list.into_iter().enumerate() {
            if sides.is_empty() || service_lists.is_null(index) {
                continue;
            }
            for service in service_lists.value(index).split(',').filter(|s| !s.is_empty() && Some(*s) != self.service.as_deref()) {
                counter.add("trace.service", service, sides);
            }
        }
        for (index, sides) in per_resource.into_iter().enumerate() {
            if !sides.is_empty() && resource_bytes.is_valid(index) {
                counter.add_resource(resource_bytes.value(index), sides, &mut key);
            }
        }
    }
}

/// A projected column as a dictionary of `values` (as which it is stored: the cast is then a
/// copy of references; anything else is encoded here).
fn keyed(batch: &RecordBatch, column: &str, values: DataType) -> DictionaryArray<Int32Type> {
    let column = batch.column_by_name(column).expect("projected");
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(values));
    datafusion::arrow::compute::cast(column, &dictionary).expect("casts to a dictionary").as_dictionary::<Int32Type>().clone()
}

/// Counts a row once for its dictionary key.
fn tally(counts: &mut [Sides], column: &DictionaryArray<Int32Type>, row: usize, sides: Sides) {
    if column.is_valid(row) {
        counts[column.keys().value(row) as usize].add(sides);
    }
}

/// One side's weighted counts as a share of its effective sample size.
struct Scale {
    /// The effective sample size, (Σw)² / Σw², rounded: the spans compared when every weight
    /// is equal.
    size: u64,
    /// Σw.
    weighted: u64,
}

impl Scale {
    fn new(spans: u64, weighted: u64, squares: u128) -> Self {
        if weighted == 0 || squares == 0 {
            return Scale { size: spans, weighted };
        }
        // Equal weights give the span count exactly, whatever the rounding of the floats.
        let size = if squares * spans as u128 == (weighted as u128).pow(2) {
            spans
        } else {
            ((weighted as f64).powi(2) / squares as f64).round() as u64
        };
        Scale { size, weighted }
    }

    /// A weighted count as a number of spans of the effective sample, rounded down, so that a
    /// key's values never add up to more than the sample.
    fn effective(&self, weighted: u64) -> u64 {
        if self.weighted == self.size || self.weighted == 0 {
            return weighted;
        }
        (weighted as u128 * self.size as u128 / self.weighted as u128) as u64
    }
}

/// What the first pass counts over every span of the scope.
#[derive(Default)]
struct Totals {
    all: LatencyHistogram,
    chosen: LatencyHistogram,
    cells: HashMap<(u32, i32), (u64, u64)>,
    selected: u64,
    baseline: u64,
}

impl Totals {
    fn merge(&mut self, other: Totals) {
        self.all.merge(&other.all);
        self.chosen.merge(&other.chosen);
        for (cell, (spans, selected)) in other.cells {
            let mine = self.cells.entry(cell).or_default();
            mine.0 += spans;
            mine.1 += selected;
        }
        self.selected += other.selected;
        self.baseline += other.baseline;
    }
}

/// The heatmap row of a duration: `floor(2 · log2(nanos))`.
fn heat_row(nanos: i64) -> i32 {
    if nanos <= 1 { 0 } else { ((nanos as f64).log2() * HEATMAP_ROWS_PER_OCTAVE).floor() as i32 }
}

fn heat_bound(row: i32) -> f64 {
    (row as f64 / HEATMAP_ROWS_PER_OCTAVE).exp2()
}

/// The smallest 16-byte trace ID at or above `share` of the ID space (big-endian).
fn trace_id_threshold(share: f64) -> [u8; 16] {
    let mut id = [0u8; 16];
    let prefix = (share.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    id[..8].copy_from_slice(&prefix.to_be_bytes());
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl QueryEngine {
    /// Attribute value counts of the scope's spans started within [start, end) (Unix ns).
    /// `sample_spans`: count attributes on a sample of traces when the scope holds more spans
    /// (`None`: every span).
    pub async fn correlation_facts(
        &self,
        scope: &CorrelationScope,
        selection: &Selection,
        start_unix_nano: u64,
        end_unix_nano: u64,
        sample_spans: Option<u64>,
    ) -> Result<CorrelationFacts, QueryError> {
        if end_unix_nano <= start_unix_nano {
            return Err(QueryError::Invalid("the window must end after it starts".into()));
        }
        // One snapshot for every pass, so that the sample and the totals agree.
        let engine = self.pinned().await?;
        let mut conditions = vec![format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano < {end_unix_nano}")];
        if let Some(service) = &scope.service {
            conditions.push(format!("service_name = {}", quote(service)));
        }
        if let Some(operation) = &scope.operation {
            conditions.push(format!("name = {}", quote(operation)));
        }
        if let Some(kind) = &scope.kind {
            conditions.push(format!("kind = {}", quote(kind)));
        }
        let scope_sql = conditions.join(" AND ");
        let mut facts = CorrelationFacts::default();
        // How a row is known to be selected: a SQL column, or the matched span IDs.
        let (selected_sql, spans) = match selection {
            Selection::TraceQl(query) => match engine.select_spans(query, start_unix_nano, end_unix_nano).await? {
                SpanSelection::Sql(sql) => (Some(sql), None),
                SpanSelection::Spans { spans, inspected_traces, partial } => {
                    if partial {
                        facts.notes.push(format!(
                            "the query needed each trace evaluated: only the newest {inspected_traces} candidate traces were, so older matches count as baseline"
                        ));
                    }
                    (None, Some(Arc::new(spans)))
                }
            },
            other => (other.sql(), None),
        };
        let selected_column = match &selected_sql {
            Some(sql) => format!("({sql}) IS TRUE AS selected"),
            None => "trace_id, span_id".to_string(),
        };
        let pass = Pass {
            service: scope.service.clone(),
            spans,
            skip: if matches!(selection, Selection::Errors) { ERROR_RECORDS } else { &[] },
            compare_status: matches!(selection, Selection::Latency { .. }),
            only_selected: false,
        };

        // Every span: totals, the latency histogram and the heatmap.
        let step = (end_unix_nano - start_unix_nano).div_ceil(HEATMAP_COLUMNS).max(1);
        facts.heatmap_step_nanos = step;
        let sql = format!("SELECT duration_nanos, start_time_unix_nano, {selected_column} FROM spans WHERE {scope_sql}");
        let started = Instant::now();
        let pass = Arc::new(pass);
        let mut tasks = Vec::new();
        // One task per partition of the plan: each its own histograms and cells, added up after.
        for mut stream in engine.context.sql(&sql).await?.execute_stream_partitioned().await? {
            let pass = Arc::clone(&pass);
            tasks.push(tokio::spawn(async move {
                let mut totals = Totals::default();
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    let flags = pass.flags(&batch);
                    let duration = batch.column(0).as_primitive::<Int64Type>();
                    let started = batch.column(1).as_primitive::<Int64Type>();
                    for (row, &selected) in flags.iter().enumerate() {
                        let nanos = duration.value(row);
                        totals.all.record(nanos);
                        let column = ((started.value(row) as u64).saturating_sub(start_unix_nano) / step) as u32;
                        let cell = totals.cells.entry((column, heat_row(nanos))).or_default();
                        cell.0 += 1;
                        if selected {
                            totals.selected += 1;
                            totals.chosen.record(nanos);
                            cell.1 += 1;
                        } else {
                            totals.baseline += 1;
                        }
                    }
                }
                Ok::<_, QueryError>(totals)
            }));
        }
        let mut totals = Totals::default();
        for task in tasks {
            let part = task.await.map_err(|e| QueryError::Encode(format!("a counting task failed: {e}")))??;
            totals.merge(part);
        }
        let Totals { all, chosen, cells, selected, baseline } = totals;
        (facts.selected, facts.baseline) = (selected, baseline);
        tracing::debug!(
            message = "correlations: totals counted",
            spans = selected + baseline,
            millis = started.elapsed().as_millis() as u64
        );
        let mut heatmap: Vec<HeatCell> = cells
            .into_iter()
            .map(|((column, row), (spans, selected))| HeatCell {
                column,
                min_nanos: heat_bound(row),
                max_nanos: heat_bound(row + 1),
                spans,
                selected,
            })
            .collect();
        heatmap.sort_by(|a, b| (a.column, a.min_nanos).partial_cmp(&(b.column, b.min_nanos)).expect("finite"));
        facts.heatmap = heatmap;
        facts.latency = all.values().collect();
        facts.selected_latency = chosen.values().collect();

        // Attribute values: of every span, or of a sample of traces.
        let total = facts.selected + facts.baseline;
        let attributes = "status_code, attributes, resource, trace_services, trace_adjusted_count";
        let project = format!("{selected_column}, {attributes}");
        let share = match sample_spans {
            Some(limit) if total > limit.max(1) => limit.max(1) as f64 / total as f64,
            _ => 1.0,
        };
        let counter;
        let started = Instant::now();
        if share < 1.0 {
            let threshold = format!("arrow_cast(X'{}', 'FixedSizeBinary(16)')", hex(&trace_id_threshold(share)));
            let sampled = engine
                .count_attributes(
                    &format!("SELECT {project} FROM span_rows WHERE {scope_sql} AND trace_id < {threshold}"),
                    Arc::clone(&pass),
                )
                .await?;
            let expected = share * total as f64;
            let seen = (sampled.selected + sampled.baseline) as f64;
            if expected >= 1_000.0 && (seen < 0.5 * expected || seen > 2.0 * expected) {
                // IDs that are not random (a timestamp or zeros in their first bytes) give no
                // fair sample by range: count every span instead.
                facts.notes.push(format!(
                    "trace IDs are not uniformly spread ({seen} spans where {expected:.0} were expected in a {:.1}% sample), so every span was compared",
                    100.0 * share
                ));
                counter = engine.count_attributes(&format!("SELECT {project} FROM span_rows WHERE {scope_sql}"), Arc::clone(&pass)).await?;
            } else {
                let mut sampled = sampled;
                facts.sampled_traces = Some(share);
                if let Some(sql) = selected_sql.as_ref().filter(|_| sampled.selected < WHOLE_SELECTION_BELOW) {
                    // A small selection: the rest of it too, so that it is compared whole.
                    let rest = Pass { only_selected: true, ..(*pass).clone() };
                    let more = engine
                        .count_attributes(
                            &format!("SELECT {project} FROM span_rows WHERE {scope_sql} AND ({sql}) IS TRUE AND trace_id >= {threshold}"),
                            Arc::new(rest),
                        )
                        .await?;
                    sampled.merge(more);
                    facts.notes.push(format!(
                        "attribute values compare all {} selected spans with the baseline spans of a uniform {:.1}% sample of traces ({} spans)",
                        sampled.selected,
                        100.0 * share,
                        sampled.baseline
                    ));
                } else {
                    facts.notes.push(format!(
                        "attribute values were counted on a uniform {:.1}% sample of traces ({} selected and {} baseline spans)",
                        100.0 * share,
                        sampled.selected,
                        sampled.baseline
                    ));
                }
                counter = sampled;
            }
        } else {
            counter = engine.count_attributes(&format!("SELECT {project} FROM span_rows WHERE {scope_sql}"), Arc::clone(&pass)).await?;
        }
        // Values were counted as the traffic they stand for. Each side is scaled to its
        // effective sample size (Kish: (Σw)² / Σw²), so that shares are the traffic's and the
        // tests weigh no more evidence than the spans hold: the spans themselves when every
        // weight on a side is equal.
        let selected_scale = Scale::new(counter.selected, counter.selected_weight, counter.selected_squares);
        let baseline_scale = Scale::new(counter.baseline, counter.baseline_weight, counter.baseline_squares);
        facts.compared_selected = selected_scale.size;
        facts.compared_baseline = baseline_scale.size;
        tracing::debug!(
            message = "correlations: attribute values counted",
            spans = counter.selected + counter.baseline,
            millis = started.elapsed().as_millis() as u64
        );

        if counter.selected_weight + counter.baseline_weight != counter.selected + counter.baseline {
            facts.notes.push(format!(
                "some traces were sampled: attribute values are weighed by the traffic each trace stands for ({} spans compared stand for {}; as evidence they count as {} selected and {} baseline spans)",
                counter.selected + counter.baseline,
                counter.selected_weight + counter.baseline_weight,
                selected_scale.size,
                baseline_scale.size,
            ));
        }
        for (key, counts) in counter.keys {
            let distinct = if counts.too_many { usize::MAX } else { counts.values.len() };
            // A number that takes many values is compared as a distribution, not value by value.
            match counts.numbers {
                Numbers::Numeric { selected, baseline } if distinct > NUMERIC_MIN_DISTINCT => {
                    facts.numeric.push(NumericValues {
                        key: key.clone(),
                        selected_spans: selected.seen,
                        baseline_spans: baseline.seen,
                        selected: selected.values,
                        baseline: baseline.values,
                    });
                    continue;
                }
                _ if counts.too_many => {
                    facts.high_cardinality.push(key.clone());
                    continue;
                }
                _ => {}
            }
            for (value, (selected, baseline)) in counts.values {
                let (selected, baseline) = (selected_scale.effective(selected), baseline_scale.effective(baseline));
                facts.values.push(ValueCounts { key: key.clone(), value, selected, baseline });
            }
        }
        facts.values.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
        facts.numeric.sort_by(|a, b| a.key.cmp(&b.key));
        facts.high_cardinality.sort();
        Ok(facts)
    }

    /// Counts attribute values over the rows of `sql`, one task per partition of the plan.
    async fn count_attributes(&self, sql: &str, pass: Arc<Pass>) -> Result<Counter, QueryError> {
        let streams = self.context.sql(sql).await?.execute_stream_partitioned().await?;
        let mut tasks = Vec::new();
        for mut stream in streams {
            let pass = Arc::clone(&pass);
            tasks.push(tokio::spawn(async move {
                let mut counter = Counter::default();
                while let Some(batch) = stream.next().await {
                    pass.count(&batch?, &mut counter);
                }
                Ok::<_, QueryError>(counter)
            }));
        }
        let mut counter = Counter::default();
        for task in tasks {
            let part = task.await.map_err(|e| QueryError::Encode(format!("a counting task failed: {e}")))??;
            counter.merge(part);
        }
        Ok(counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merged_reservoir_is_a_fair_sample_of_both() {
        let (mut a, mut b) = (Reservoir::default(), Reservoir::default());
        for i in 0..30_000 {
            a.push(i as f64);
        }
        for _ in 0..10_000 {
            b.push(-1.0);
        }
        a.merge(b);
        assert_eq!(a.seen, 40_000);
        assert_eq!(a.values.len(), NUMERIC_SAMPLE);
        let negative = a.values.iter().filter(|v| **v < 0.0).count();
        assert_eq!(negative, NUMERIC_SAMPLE / 4, "a quarter of what was seen came from the second stream");
        // The first stream's sample is spread over its whole range, not its first values.
        let mean = a.values.iter().filter(|v| **v >= 0.0).sum::<f64>() / (NUMERIC_SAMPLE - negative) as f64;
        assert!((mean - 15_000.0).abs() < 1_500.0, "mean {mean}");
    }

    #[test]
    fn a_key_with_one_word_among_numbers_is_not_numeric() {
        let mut counter = Counter::default();
        for i in 0..50 {
            counter.count("span.size", &format!("{i}"), i % 2 == 0, 1);
        }
        assert!(matches!(counter.keys["span.size"].numbers, Numbers::Numeric { .. }));
        counter.count("span.size", "large", true, 1);
        assert!(matches!(counter.keys["span.size"].numbers, Numbers::NotNumeric));
        // Hexadecimal IDs that start with a digit are words too.
        counter.count("span.id", "1e3f0a", true, 1);
        assert!(matches!(counter.keys["span.id"].numbers, Numbers::NotNumeric));
    }

    #[test]
    fn merging_counters_keeps_the_cap_on_values() {
        let (mut a, mut b) = (Counter::default(), Counter::default());
        for i in 0..300 {
            a.count("span.k", &format!("a{i}"), true, 1);
            b.count("span.k", &format!("b{i}"), false, 1);
        }
        a.count("span.region", "eu", true, 1);
        b.count("span.region", "eu", false, 1);
        a.merge(b);
        assert!(a.keys["span.k"].too_many);
        assert_eq!(a.keys["span.region"].values["eu"], (1, 1));
    }

    /// The rows correlations read of these traces, as stored, with `selected` set on the spans
    /// whose ID `chosen` picks.
    fn stored_rows(traces: &[Vec<clew_model::Span>], chosen: impl Fn(&[u8]) -> bool) -> RecordBatch {
        let mut builder = clew_store::block::BatchBuilder::default();
        for spans in traces {
            builder.push_trace(&clew_model::assemble_borrowed(spans), 0);
        }
        let stored = builder.finish();
        let selected: Vec<bool> =
            stored.column_by_name("span_id").unwrap().as_fixed_size_binary().iter().map(|id| chosen(id.unwrap())).collect();
        let columns = ["status_code", "attributes", "resource", "trace_services", ADJUSTED_COUNT];
        let mut fields: Vec<_> = columns.iter().map(|c| stored.schema().field_with_name(c).unwrap().clone()).collect();
        let mut arrays: Vec<datafusion::arrow::array::ArrayRef> =
            columns.iter().map(|c| Arc::clone(stored.column_by_name(c).unwrap())).collect();
        fields.push(datafusion::arrow::datatypes::Field::new("selected", DataType::Boolean, false));
        arrays.push(Arc::new(BooleanArray::from(selected)));
        RecordBatch::try_new(Arc::new(datafusion::arrow::datatypes::Schema::new(fields)), arrays).unwrap()
    }

    /// A trace kept with probability 1/4 weighs four times a trace that was not sampled; the
    /// significance tests still see the spans compared.
    #[test]
    fn spans_of_sampled_traces_weigh_what_their_trace_stands_for() {
        use clew_model::{Attribute, Span, SpanId, Value};
        let trace = |id: u8, trace_state: &str, region: &str| -> Vec<Span> {
            (1..=2u8)
                .map(|i| Span {
                    trace_id: TraceId([id; 16]),
                    span_id: SpanId([id * 10 + i; 8]),
                    parent_span_id: (i > 1).then_some(SpanId([id * 10 + 1; 8])),
                    trace_state: trace_state.into(),
                    name: "op".into(),
                    start_time_unix_nano: 1_000 + i as u64,
                    end_time_unix_nano: 2_000,
                    attributes: vec![
                        Attribute::new("region", Value::Str(region.into())),
                        Attribute::new("size", Value::Int(i as i64 * 100)),
                    ],
                    ..Span::default()
                })
                .collect()
        };
        // Each trace's first span is selected.
        let batch = stored_rows(&[trace(1, "ot=th:c", "eu"), trace(2, "", "us")], |id| id[0] % 10 == 1);
        let pass = Pass { service: None, spans: None, skip: &[], compare_status: false, only_selected: false };
        let mut counter = Counter::default();
        pass.count(&batch, &mut counter);
        assert_eq!((counter.selected, counter.baseline, counter.selected_weight, counter.baseline_weight), (2, 2, 5, 5));
        assert_eq!(counter.keys["span.region"].values["eu"], (4, 4));
        assert_eq!(counter.keys["span.region"].values["us"], (1, 1));
        assert_eq!(counter.keys["trace.service"].values.values().next(), Some(&(5, 5)));
        // Numeric values are sampled from the spans compared, one each.
        match &counter.keys["span.size"].numbers {
            Numbers::Numeric { selected, baseline } => assert_eq!((selected.seen, baseline.seen), (2, 2)),
            _ => panic!("size is numeric"),
        }
        // Each side holds a span of weight 4 and one of weight 1: as evidence, (4+1)²/(16+1)
        // = 1.47 spans, rounded to 1, of which four in five are in eu: less than a span.
        let scale = Scale::new(counter.selected, counter.selected_weight, counter.selected_squares);
        assert_eq!((scale.size, scale.effective(4), scale.effective(1), scale.effective(5)), (1, 0, 0, 1));
        // Equal weights: the spans themselves, however heavy.
        let equal = Scale::new(300, 3_000, 300 * 100);
        assert_eq!((equal.size, equal.effective(1_000), equal.effective(2_000)), (300, 100, 200));
        assert_eq!(Scale::new(7, 7, 7).effective(3), 3, "no sampling: the counts themselves");
        // One heavy span among many light ones is little evidence: 99 spans of weight 1 and
        // one of weight 1,000 count as about one span.
        let lopsided = Scale::new(100, 1_099, 99 + 1_000_000);
        assert_eq!((lopsided.size, lopsided.effective(1_000), lopsided.effective(99)), (1, 0, 0));
        // Two groups of 100 spans, weights 1 and 3: (400)² / (100 + 900) = 160 spans.
        let two = Scale::new(200, 400, 1_000);
        assert_eq!((two.size, two.effective(300), two.effective(100)), (160, 120, 40));
    }

    /// Rows as they are stored: resources and service lists are dictionary columns.
    #[test]
    fn each_resource_is_counted_as_often_as_its_spans() {
        use clew_model::{Attribute, InstrumentationScope, Resource, Span, SpanId, Value};
        let resource = |version: &str| {
            Arc::new(Resource {
                attributes: vec![
                    Attribute::new("service.name", Value::Str("api".into())),
                    Attribute::new("service.version", Value::Str(version.into())),
                    Attribute::new("process.pid", Value::Int(7)),
                ],
                ..Default::default()
            })
        };
        // Equal resources received apart are one resource.
        let resources = [resource("1.0"), resource("1.0"), resource("2.0"), resource("1.0")];
        let scope = Arc::new(InstrumentationScope::default());
        let spans: Vec<Span> = resources
            .iter()
            .enumerate()
            .map(|(i, resource)| Span {
                trace_id: TraceId([1; 16]),
                span_id: SpanId([i as u8 + 1; 8]),
                parent_span_id: (i > 0).then_some(SpanId([1; 8])),
                name: "op".into(),
                start_time_unix_nano: 1_000 + i as u64,
                end_time_unix_nano: 2_000,
                resource: Arc::clone(resource),
                scope: Arc::clone(&scope),
                ..Span::default()
            })
            .collect();
        // Rows are in span order; the first and third are selected.
        let batch = stored_rows(&[spans], |id| matches!(id, [1, ..] | [3, ..]));
        assert!(matches!(batch.column_by_name("resource").unwrap().data_type(), DataType::Dictionary(..)));
        let pass = Pass { service: None, spans: None, skip: &[], compare_status: false, only_selected: false };
        let mut counter = Counter::default();
        pass.count(&batch, &mut counter);
        assert_eq!(counter.resources.decoded.len(), 2, "two distinct resources decoded");
        assert_eq!((counter.selected, counter.baseline), (2, 2));
        assert_eq!(counter.keys["resource.service.version"].values["1.0"], (1, 2));
        assert_eq!(counter.keys["resource.service.version"].values["2.0"], (1, 0));
        assert_eq!(counter.keys["resource.process.pid"].values["7"], (2, 2));
        assert_eq!(counter.keys["trace.service"].values["api"], (2, 2));
    }

    #[test]
    fn the_threshold_splits_the_id_space() {
        assert_eq!(trace_id_threshold(0.5)[..2], [0x80, 0x00]);
        assert_eq!(trace_id_threshold(0.25)[..2], [0x40, 0x00]);
        assert_eq!(trace_id_threshold(1.0)[..8], [0xff; 8]);
        assert_eq!(trace_id_threshold(0.0), [0u8; 16]);
    }
}
