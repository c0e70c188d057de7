//! Test data shared by the query engine's integration tests.

use std::sync::Arc;

use clew_model::{Attribute, InstrumentationScope, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, Value};

/// A small deterministic generator (no dependency needed for test data).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[allow(clippy::too_many_arguments)]
pub fn span(
    trace: TraceId,
    id: u64,
    parent: Option<u64>,
    resource: &Arc<Resource>,
    name: &str,
    kind: SpanKind,
    start: u64,
    duration: u64,
    status: StatusCode,
    attributes: Vec<(&str, Value)>,
) -> Span {
    Span {
        trace_id: trace,
        span_id: SpanId(id.to_be_bytes()),
        parent_span_id: parent.map(|p| SpanId(p.to_be_bytes())),
        trace_state: String::new(),
        flags: 0,
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        attributes: attributes.into_iter().map(|(k, v)| Attribute::new(k, v)).collect(),
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status_code: status,
        status_message: String::new(),
        resource: Arc::clone(resource),
        scope: Arc::new(InstrumentationScope::default()),
    }
}
