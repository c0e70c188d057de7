//! `GET /metrics` on the query port, in the OpenMetrics text format: span metrics and service
//! graph metrics under the names of Tempo's metrics generator (so Grafana's service graph and
//! RED panels built for them work), and Clew's own health: what the receivers took and refused,
//! the log, the blocks and what waits for assembly.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use clew_store::span_metrics::{LatencyBuckets, SpanMetrics};
use clew_store::{Storage, StoreStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::ReceiverStats;
use crate::api::ApiState;

/// Everything one scrape reports, read once.
#[derive(Debug)]
struct Scrape {
    spans: SpanMetrics,
    store: StoreStats,
    receiver: ReceiverStats,
}

fn span_kind(kind: &str) -> String {
    format!("SPAN_KIND_{}", kind.to_ascii_uppercase())
}

fn histogram(encoder: &mut prometheus_client::encoding::MetricEncoder<'_>, latency: &LatencyBuckets) -> Result<(), std::fmt::Error> {
    let bounds = clew_store::span_metrics::LATENCY_BUCKETS_SECONDS.iter().copied().chain([f64::MAX]);
    let buckets: Vec<(f64, u64)> = bounds.zip(latency.counts).collect();
    encoder.encode_histogram::<NoLabelSet>(latency.sum_seconds, latency.count, &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        const OVERFLOW: [(&str, &str); 1] = [("otel_metric_overflow", "true")];
        // Span metrics: calls by status, and latency.
        {
            let mut calls = encoder.encode_descriptor(
                "traces_spanmetrics_calls",
                "Spans by service, name, kind and status (non-error spans count as STATUS_CODE_UNSET), as traces are assembled.",
                None,
                MetricType::Counter,
            )?;
            for (labels, totals) in &self.spans.spans {
                for (status, count) in [("STATUS_CODE_UNSET", totals.calls - totals.errors), ("STATUS_CODE_ERROR", totals.errors)] {
                    if count == 0 && status == "STATUS_CODE_ERROR" {
                        continue;
                    }
                    match labels {
                        Some((service, name, kind)) => {
                            let kind = span_kind(kind);
                            let set = [("service", &**service), ("span_name", &**name), ("span_kind", &kind), ("status_code", status)];
                            calls.encode_family(&set)?.encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                        }
                        None => {
                            let set = [OVERFLOW[0], ("status_code", status)];
                            calls.encode_family(&set)?.encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                        }
                    }
                }
            }
        }
        {
            let mut latency = encoder.encode_descriptor(
                "traces_spanmetrics_latency",
                "Span durations in seconds by service, name and kind.",
                None,
                MetricType::Histogram,
            )?;
            for (labels, totals) in &self.spans.spans {
                match labels {
                    Some((service, name, kind)) => {
                        let kind = span_kind(kind);
                        let set = [("service", &**service), ("span_name", &**name), ("span_kind", &kind)];
                        histogram(&mut latency.encode_family(&set)?, &totals.latency)?;
                    }
                    None => histogram(&mut latency.encode_family(&OVERFLOW)?, &totals.latency)?,
                }
            }
        }
        // Service graph: requests between services (a `user` client for root spans; uninstrumented
        // peers as servers of connection type virtual_node).
        type Value = fn(&clew_store::span_metrics::EdgeTotals) -> u64;
        let counters: [(&str, &str, Value); 2] = [
            ("traces_service_graph_request", "Requests from client to server.", |t| t.requests),
            ("traces_service_graph_request_failed", "Failed requests from client to server.", |t| t.failed),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, totals) in &self.spans.edges {
                let count = value(totals);
                match labels {
                    Some((client, server, connection)) => {
                        let set = [("client", &**client), ("server", &**server), ("connection_type", *connection)];
                        family.encode_family(&set)?.encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                    }
                    None => family.encode_family(&OVERFLOW)?.encode_counter::<NoLabelSet, _, u64>(&count, None)?,
                }
            }
        }
        type Latency = fn(&clew_store::span_metrics::EdgeTotals) -> &LatencyBuckets;
        let histograms: [(&str, &str, Latency); 2] = [
            ("traces_service_graph_request_server_seconds", "Duration of requests as the server saw them.", |t| &t.server_latency),
            (
                "traces_service_graph_request_client_seconds",
                "Duration of requests to uninstrumented servers as the client saw them.",
                |t| &t.client_latency,
            ),
        ];
        for (name, help, latency) in histograms {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (labels, totals) in &self.spans.edges {
                let buckets = latency(totals);
                if buckets.count == 0 {
                    continue;
                }
                match labels {
                    Some((client, server, connection)) => {
                        let set = [("client", &**client), ("server", &**server), ("connection_type", *connection)];
                        histogram(&mut family.encode_family(&set)?, buckets)?;
                    }
                    None => histogram(&mut family.encode_family(&OVERFLOW)?, buckets)?,
                }
            }
        }
        // Clew's own health.
        let r = &self.receiver;
        let s = &self.store;
        let counters: [(&str, &str, u64); 9] = [
            ("clew_receiver_requests", "Export requests received by every receiver.", r.requests),
            ("clew_spans_accepted", "Spans acknowledged (durable).", r.spans_accepted),
            ("clew_spans_rejected", "Spans refused inside accepted requests (partial success).", r.spans_rejected),
            ("clew_spans_duplicate", "Spans received again with a stored trace and span ID, kept once.", s.duplicate_spans),
            ("clew_traces_assembled", "Traces assembled.", s.traces_assembled),
            ("clew_trace_fragments", "Spans that arrived after their trace was assembled.", s.fragments),
            ("clew_wal_syncs", "Write-ahead log syncs (group commits).", s.wal_syncs),
            ("clew_compactions_deferred", "Compaction rounds left for later while ingest was behind.", s.compactions_deferred),
            (
                "clew_spanmetrics_traces",
                "Traces counted in the span metrics, each sampled trace as the traffic it stands for.",
                self.spans.traces,
            ),
        ];
        for (name, help, value) in counters {
            encoder.encode_descriptor(name, help, None, MetricType::Counter)?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        {
            let mut refused =
                encoder.encode_descriptor("clew_requests_refused", "Export requests refused, by reason.", None, MetricType::Counter)?;
            for (reason, value) in [
                ("malformed", r.requests_refused_malformed),
                ("too_large", r.requests_refused_too_large),
                ("unavailable", r.requests_refused_unavailable),
            ] {
                refused.encode_family(&[("reason", reason)])?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
        {
            let mut stages = encoder.encode_descriptor(
                "clew_write_path_seconds",
                "Wall time of the write path's stages since start: take_ready, assembly and block_write_waits (assembly waiting for the previous block write) run one after another; block_writes beside them, compaction beside all.",
                None,
                MetricType::Counter,
            )?;
            let w = &s.write_path_seconds;
            for (stage, value) in [
                ("take_ready", w.take_ready),
                ("assembly", w.assembly),
                ("block_write_waits", w.block_write_waits),
                ("block_writes", w.block_writes),
                ("compaction", w.compaction),
            ] {
                stages.encode_family(&[("stage", stage)])?.encode_counter::<NoLabelSet, _, f64>(&value, None)?;
            }
        }
        let gauges: [(&str, &str, i64); 8] = [
            ("clew_pending_spans", "Spans waiting for their trace to go quiet.", s.pending_spans as i64),
            ("clew_assembled_unflushed_spans", "Assembled spans not yet in a block.", s.assembled_unflushed_spans as i64),
            ("clew_pending_bytes", "Memory held by spans waiting for their trace to go quiet.", s.pending_bytes as i64),
            ("clew_assembled_bytes", "Memory held by assembled spans not yet in a block.", s.assembled_bytes as i64),
            ("clew_blocks", "Blocks in the store.", s.blocks as i64),
            ("clew_block_spans", "Spans in blocks.", s.block_spans as i64),
            ("clew_block_bytes", "Bytes of block files.", s.block_bytes as i64),
            ("clew_wal_bytes", "Bytes of write-ahead log segments.", s.wal_bytes as i64),
        ];
        for (name, help, value) in gauges {
            encoder.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&value)?;
        }
        encoder
            .encode_descriptor(
                "clew_assembly_lag_seconds",
                "How long quiet traces waited for assembly beyond their quiet time (0 unless assembly falls behind).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&s.assembly_lag_seconds)?;
        Ok(())
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<ApiState>) -> Response {
    let storage: &dyn Storage = &state.store;
    let scrape = Scrape { spans: storage.span_metrics(), store: storage.stats(), receiver: state.receiver.stats() };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be written").into_response(),
    }
}
