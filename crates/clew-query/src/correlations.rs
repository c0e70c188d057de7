//! The counts behind correlations: for the spans of one operation in a window, split into a
//! selection (a latency range, or the failed ones) and the baseline (the rest), how many of each
//! carry each attribute value: span attributes, resource attributes, and the services their
//! trace passes through. Counted in one streaming pass over the operation's spans.

use std::collections::HashMap;

use clew_model::LatencyHistogram;
use datafusion::arrow::array::{Array, AsArray, MapArray, StringArray};
use datafusion::arrow::datatypes::Int64Type;
use futures::StreamExt;
use serde::Serialize;

use crate::{QueryEngine, QueryError, quote};

/// Which spans are compared.
#[derive(Debug, Clone, Default)]
pub struct CorrelationScope {
    pub service: String,
    /// The span name; every operation of the service when absent.
    pub operation: Option<String>,
    /// `server`, `client`, …; any kind when absent.
    pub kind: Option<String>,
}

/// The selection within the scope; the rest is the baseline.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Spans at least `min` and below `max` long (either bound may be open).
    Latency { min_nanos: Option<i64>, max_nanos: Option<i64> },
    /// Spans with an error status.
    Errors,
}

impl Selection {
    fn holds(&self, duration: i64, error: bool) -> bool {
        match self {
            Selection::Latency { min_nanos, max_nanos } => {
                min_nanos.is_none_or(|min| duration >= min) && max_nanos.is_none_or(|max| duration < max)
            }
            Selection::Errors => error,
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

#[derive(Debug, Clone, Serialize, Default)]
pub struct CorrelationFacts {
    pub selected: u64,
    pub baseline: u64,
    pub values: Vec<ValueCounts>,
    /// Keys with more distinct values than are compared (IDs and the like): left out.
    pub high_cardinality: Vec<String>,
    /// The scope's latency distribution: (nanoseconds, spans) per logarithmic bucket.
    pub latency: Vec<(f64, u64)>,
    /// Spans in the scope that the selection holds, per latency bucket (same buckets).
    pub selected_latency: Vec<(f64, u64)>,
}

/// More distinct values than this for one key and the key is left out.
pub const MAX_VALUES_PER_KEY: usize = 500;
/// At most this many keys are compared.
pub const MAX_KEYS: usize = 1_000;
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
/// Attribute values longer than this are not compared.
const MAX_VALUE_LENGTH: usize = 200;

#[derive(Default)]
struct Counter {
    keys: HashMap<String, KeyCounts>,
}

#[derive(Default)]
struct KeyCounts {
    values: HashMap<String, (u64, u64)>,
    too_many: bool,
}

impl Counter {
    fn count(&mut self, key: &str, value: &str, selected: bool) {
        if value.len() > MAX_VALUE_LENGTH {
            return;
        }
        if !self.keys.contains_key(key) {
            if self.keys.len() >= MAX_KEYS {
                return;
            }
            self.keys.insert(key.to_string(), KeyCounts::default());
        }
        let counts = self.keys.get_mut(key).expect("inserted above");
        if counts.too_many {
            return;
        }
        if !counts.values.contains_key(value) {
            if counts.values.len() >= MAX_VALUES_PER_KEY {
                counts.too_many = true;
                counts.values.clear();
                return;
            }
            counts.values.insert(value.to_string(), (0, 0));
        }
        let slot = counts.values.get_mut(value).expect("inserted above");
        if selected {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
    }

    fn map(&mut self, prefix: &str, map: &MapArray, row: usize, selected: bool, key: &mut String, skip: &[&str]) {
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
            self.count(key, values.value(i), selected);
        }
    }
}

impl QueryEngine {
    /// Attribute value counts of the scope's spans started within [start, end] (Unix ns).
    pub async fn correlation_facts(
        &self,
        scope: &CorrelationScope,
        selection: &Selection,
        start_unix_nano: u64,
        end_unix_nano: u64,
    ) -> Result<CorrelationFacts, QueryError> {
        if end_unix_nano <= start_unix_nano {
            return Err(QueryError::Invalid("the window must end after it starts".into()));
        }
        let mut conditions = vec![
            format!("service_name = {}", quote(&scope.service)),
            format!("start_time_unix_nano >= {start_unix_nano} AND start_time_unix_nano < {end_unix_nano}"),
        ];
        if let Some(operation) = &scope.operation {
            conditions.push(format!("name = {}", quote(operation)));
        }
        if let Some(kind) = &scope.kind {
            conditions.push(format!("kind = {}", quote(kind)));
        }
        let sql = format!(
            "SELECT duration_nanos, status_code, attributes, resource_attributes, trace_services FROM spans WHERE {}",
            conditions.join(" AND ")
        );
        let mut stream = self.context.sql(&sql).await?.execute_stream().await?;
        let mut counter = Counter::default();
        let (mut all, mut chosen) = (LatencyHistogram::default(), LatencyHistogram::default());
        let (mut selected_total, mut baseline_total) = (0u64, 0u64);
        let mut key = String::new();
        // Failures are compared on what could explain them, not on how they were recorded.
        let skip: &[&str] = if matches!(selection, Selection::Errors) { ERROR_RECORDS } else { &[] };
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let duration = batch.column(0).as_primitive::<Int64Type>();
            let status: &StringArray = batch.column(1).as_string::<i32>();
            let (attributes, resource) = (batch.column(2).as_map(), batch.column(3).as_map());
            let services: &StringArray = batch.column(4).as_string::<i32>();
            for row in 0..batch.num_rows() {
                let error = status.value(row) == "error";
                let selected = selection.holds(duration.value(row), error);
                all.record(duration.value(row));
                if selected {
                    selected_total += 1;
                    chosen.record(duration.value(row));
                } else {
                    baseline_total += 1;
                }
                counter.map("span.", attributes, row, selected, &mut key, skip);
                counter.map("resource.", resource, row, selected, &mut key, &[]);
                if matches!(selection, Selection::Latency { .. }) {
                    counter.count("status", status.value(row), selected);
                }
                for service in services.value(row).split(',').filter(|s| !s.is_empty() && *s != scope.service) {
                    counter.count("trace.service", service, selected);
                }
            }
        }
        let mut values = Vec::new();
        let mut high_cardinality = Vec::new();
        for (key, counts) in counter.keys {
            if counts.too_many {
                high_cardinality.push(key);
                continue;
            }
            for (value, (selected, baseline)) in counts.values {
                values.push(ValueCounts { key: key.clone(), value, selected, baseline });
            }
        }
        values.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
        high_cardinality.sort();
        Ok(CorrelationFacts {
            selected: selected_total,
            baseline: baseline_total,
            values,
            high_cardinality,
            latency: all.values().collect(),
            selected_latency: chosen.values().collect(),
        })
    }
}
