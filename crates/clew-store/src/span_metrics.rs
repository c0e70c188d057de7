//! Span and service-graph metrics counted since the process started, as traces are assembled:
//! what a Prometheus scrape of `/metrics` reads, under the names of Tempo's metrics generator
//! (`traces_spanmetrics_*`, `traces_service_graph_*`) so that dashboards built for those work.
//! They are added from each assembled batch's rollup, so they cost one pass over a few rows per
//! batch, not per span. The number of series is bounded: beyond the limit, further label sets
//! are counted in one overflow series.

use std::collections::BTreeMap;
use std::sync::Arc;

use clew_model::LatencyHistogram;

use crate::paths::{OVERFLOW_PATH, REQUEST_PATH};
use crate::rollup::{EdgeKind, Rollup};

/// The upper bounds (`le`) of the latency buckets, in seconds: Tempo's defaults.
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] = [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096];

/// At most this many label sets per metric family, the overflow series aside.
pub const MAX_SERIES: usize = 10_000;

/// A latency distribution in the fixed buckets: per bucket (not cumulative), the last for +Inf.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyBuckets {
    pub counts: [u64; LATENCY_BUCKETS_SECONDS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyBuckets {
    /// Adds a rollup histogram: each of its logarithmic buckets (4.4% wide) goes to the fixed
    /// bucket its midpoint falls in. `sum_nanos` is the exact sum of the recorded durations.
    fn add(&mut self, histogram: &LatencyHistogram, sum_nanos: i64) {
        for (nanos, count) in histogram.values() {
            let seconds = nanos / 1e9;
            let index = LATENCY_BUCKETS_SECONDS.iter().position(|le| seconds <= *le).unwrap_or(LATENCY_BUCKETS_SECONDS.len());
            self.counts[index] += count;
            self.count += count;
        }
        self.sum_seconds += sum_nanos as f64 / 1e9;
    }

    /// (upper bound, cumulative count) pairs, +Inf last.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let bounds = LATENCY_BUCKETS_SECONDS.iter().copied().chain([f64::INFINITY]);
        bounds
            .zip(self.counts)
            .map(|(le, count)| {
                total += count;
                (le, total)
            })
            .collect()
    }
}

/// The labels of a span series: `None` for the overflow series.
pub type SpanLabels = Option<(Arc<str>, Arc<str>, Arc<str>)>;
/// The labels of a service-graph series (client, server, connection type): `None` for overflow.
pub type EdgeLabels = Option<(Arc<str>, Arc<str>, &'static str)>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanTotals {
    pub calls: u64,
    pub errors: u64,
    pub latency: LatencyBuckets,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeTotals {
    pub requests: u64,
    pub failed: u64,
    /// The callee's SERVER/CONSUMER spans (the root span for the `user` client).
    pub server_latency: LatencyBuckets,
    /// The caller's CLIENT/PRODUCER spans, for calls to uninstrumented peers.
    pub client_latency: LatencyBuckets,
}

/// Every series counted so far.
#[derive(Debug, Clone, Default)]
pub struct SpanMetrics {
    /// Per (service, span name, span kind).
    pub spans: BTreeMap<SpanLabels, SpanTotals>,
    /// Per (client, server, connection type).
    pub edges: BTreeMap<EdgeLabels, EdgeTotals>,
    /// Traces counted.
    pub traces: u64,
}

impl SpanMetrics {
    /// Adds the spans and calls of one rollup.
    pub fn add(&mut self, rollup: &Rollup) {
        for row in &rollup.paths {
            if row.path == REQUEST_PATH {
                self.traces += row.traces;
                continue;
            }
            let labels = (row.path != OVERFLOW_PATH).then(|| (Arc::clone(&row.service), Arc::clone(&row.operation), Arc::clone(&row.kind)));
            let totals = bounded(&mut self.spans, labels);
            totals.calls += row.spans;
            totals.errors += row.errors;
            totals.latency.add(&row.latency, row.duration_nanos);
        }
        let user: Arc<str> = Arc::from("user");
        for row in &rollup.edges {
            let (client, connection_type) = match row.kind {
                EdgeKind::Present => continue,
                EdgeKind::Root => (Arc::clone(&user), ""),
                EdgeKind::Call => (row.parent.clone().unwrap_or_else(|| Arc::clone(&user)), ""),
                EdgeKind::Virtual => (row.parent.clone().unwrap_or_else(|| Arc::clone(&user)), "virtual_node"),
            };
            let totals = bounded(&mut self.edges, Some((client, Arc::clone(&row.child), connection_type)));
            totals.requests += row.calls;
            totals.failed += row.errors;
            if row.kind == EdgeKind::Virtual {
                totals.client_latency.add(&row.histogram, row.duration_nanos);
            } else {
                totals.server_latency.add(&row.histogram, row.duration_nanos);
            }
        }
    }
}

/// The totals of `labels`, or of the overflow series once the family has [`MAX_SERIES`] others.
fn bounded<K: Ord + Clone, T: Default>(series: &mut BTreeMap<Option<K>, T>, labels: Option<K>) -> &mut T {
    let known = labels.as_ref().is_some_and(|l| series.contains_key(&Some(l.clone())));
    let full = series.len() - usize::from(series.contains_key(&None)) >= MAX_SERIES;
    let key = if known || !full { labels } else { None };
    series.entry(key).or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_land_in_the_bucket_of_their_values() {
        let mut histogram = LatencyHistogram::default();
        for millis in [1, 3, 3, 50, 5_000] {
            histogram.record(millis * 1_000_000);
        }
        let mut buckets = LatencyBuckets::default();
        buckets.add(&histogram, 5_057_000_000);
        assert_eq!(buckets.count, 5);
        assert!((buckets.sum_seconds - 5.057).abs() < 1e-9);
        let cumulative = buckets.cumulative();
        assert_eq!(cumulative[0], (0.002, 1), "1 ms ≤ 2 ms");
        assert_eq!(cumulative[1], (0.004, 3), "3 ms ≤ 4 ms");
        assert_eq!(cumulative[5], (0.064, 4), "50 ms ≤ 64 ms");
        assert_eq!(cumulative[11], (4.096, 4));
        assert_eq!(cumulative[12].1, 5, "5 s only in +Inf");
    }

    #[test]
    fn series_beyond_the_limit_share_one_overflow_series() {
        let mut series: BTreeMap<Option<u32>, u64> = BTreeMap::new();
        for i in 0..(MAX_SERIES as u32 + 10) {
            *bounded(&mut series, Some(i)) += 1;
        }
        *bounded(&mut series, Some(3)) += 1;
        assert_eq!(series.len(), MAX_SERIES + 1);
        assert_eq!(series[&None], 10);
        assert_eq!(series[&Some(3)], 2, "a known series keeps counting");
    }
}
