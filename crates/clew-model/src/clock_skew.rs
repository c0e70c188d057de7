//! Clock-skew adjustment, as Jaeger's query service does it: when a child span ran on another
//! host than its parent and does not fit inside the parent's time, the child's host clock is
//! taken to be off; the child (and every descendant on its host) is shifted so that it sits in
//! the middle of its parent, the latency split evenly between request and response. A child
//! longer than its parent (asynchronous work) is only moved when it starts before the parent.
//!
//! Hosts are told apart by resource attributes (`host.id`, `host.name`, Jaeger's `hostname`
//! and `ip`, then `service.instance.id`); spans whose host is unknown are never moved, since
//! they may well share the parent's clock.

use std::collections::HashMap;

use crate::span::{Span, Value, find};

/// One shift made to the spans of one host below one parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkewAdjustment {
    /// Indexes (into the slice given) of the spans shifted.
    pub spans: Vec<usize>,
    /// Nanoseconds added to their timestamps (negative: moved earlier).
    pub delta_nanos: i64,
    pub host: String,
}

const HOST_KEYS: &[&str] = &["host.id", "host.name", "hostname", "ip", "service.instance.id"];

fn host_key(span: &Span) -> Option<String> {
    HOST_KEYS.iter().find_map(|key| find(&span.resource.attributes, key).map(Value::render).filter(|v| !v.is_empty()))
}

/// Shifts spans whose host clock is off relative to their parent's; shifts larger than
/// `max_nanos` in magnitude are left undone (that is no clock error but a broken trace).
/// Returns what was moved, for the trace's warnings.
pub fn adjust_clock_skew(spans: &mut [Span], max_nanos: u64) -> Vec<SkewAdjustment> {
    let index: HashMap<_, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span.parent_span_id.and_then(|p| index.get(&p)).filter(|p| **p != i) {
            Some(&parent) => children[parent].push(i),
            None => roots.push(i),
        }
    }
    let hosts: Vec<Option<String>> = spans.iter().map(host_key).collect();
    let mut deltas = vec![0i64; spans.len()];
    let mut visited = vec![false; spans.len()];
    // Depth-first from each root: a node on its parent's host inherits the parent's delta; a
    // node on another known host gets its own.
    let mut stack: Vec<(usize, Option<usize>)> = roots.into_iter().rev().map(|r| (r, None)).collect();
    while let Some((node, parent)) = stack.pop() {
        if std::mem::replace(&mut visited[node], true) {
            continue;
        }
        if let Some(parent) = parent {
            deltas[node] = match (&hosts[node], &hosts[parent]) {
                (Some(host), Some(parent_host)) if host != parent_host => {
                    let skew = skew(&spans[node], &spans[parent], deltas[parent]);
                    if skew.unsigned_abs() > max_nanos { 0 } else { skew }
                }
                _ => deltas[parent],
            };
        }
        for &child in children[node].iter().rev() {
            stack.push((child, Some(node)));
        }
    }
    let mut groups: Vec<SkewAdjustment> = Vec::new();
    for (i, delta) in deltas.iter().enumerate() {
        if *delta == 0 {
            continue;
        }
        shift(&mut spans[i], *delta);
        let host = hosts[i].clone().unwrap_or_default();
        match groups.iter_mut().find(|g| g.delta_nanos == *delta && g.host == host) {
            Some(group) => group.spans.push(i),
            None => groups.push(SkewAdjustment { spans: vec![i], delta_nanos: *delta, host }),
        }
    }
    groups
}

/// How far `child` must move to fit its parent (already shifted by `parent_delta`).
fn skew(child: &Span, parent: &Span, parent_delta: i64) -> i64 {
    let parent_start = parent.start_time_unix_nano as i128 + parent_delta as i128;
    let parent_duration = parent.duration_nanos() as i128;
    let child_start = child.start_time_unix_nano as i128;
    let child_duration = child.duration_nanos() as i128;
    let delta = if child_duration > parent_duration {
        // Longer than its parent: asynchronous, or the clocks tick differently; only a start
        // before the parent's is surely wrong.
        if child_start < parent_start { parent_start - child_start } else { 0 }
    } else if child_start >= parent_start && child_start + child_duration <= parent_start + parent_duration {
        0
    } else {
        let latency = (parent_duration - child_duration) / 2;
        parent_start + latency - child_start
    };
    delta.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn shift(span: &mut Span, delta: i64) {
    let moved = |time: u64| (time as i128 + delta as i128).clamp(0, u64::MAX as i128) as u64;
    span.start_time_unix_nano = moved(span.start_time_unix_nano);
    span.end_time_unix_nano = moved(span.end_time_unix_nano);
    for event in &mut span.events {
        event.time_unix_nano = moved(event.time_unix_nano);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Attribute, InstrumentationScope, Resource, SpanId, SpanKind, StatusCode, TraceId};

    fn span(id: u8, parent: Option<u8>, host: Option<&str>, start: u64, end: u64) -> Span {
        let mut attributes = vec![Attribute::new("service.name", Value::Str(format!("svc-{id}")))];
        if let Some(host) = host {
            attributes.push(Attribute::new("host.name", Value::Str(host.into())));
        }
        Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            trace_state: String::new(),
            flags: 0,
            name: format!("op-{id}"),
            kind: SpanKind::Server,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: vec![crate::Event { time_unix_nano: start + 1, name: "e".into(), attributes: vec![], dropped_attributes_count: 0 }],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            resource: Arc::new(Resource { attributes, ..Default::default() }),
            scope: Arc::new(InstrumentationScope::default()),
        }
    }

    #[test]
    fn child_on_a_fast_clock_is_centred_in_its_parent_with_its_subtree() {
        // Parent 1000..2000 on host a; child 100 ns long but stamped 5000..5100 on host b, and
        // its own child on host b too; a grandchild on host c fits already after the shift.
        let mut spans = vec![
            span(1, None, Some("a"), 1000, 2000),
            span(2, Some(1), Some("b"), 5000, 5100),
            span(3, Some(2), Some("b"), 5010, 5090),
            span(4, Some(3), Some("c"), 1470, 1480),
        ];
        let adjustments = adjust_clock_skew(&mut spans, u64::MAX);
        // Centred: 1000 + (1000 - 100) / 2 = 1450.
        assert_eq!((spans[1].start_time_unix_nano, spans[1].end_time_unix_nano), (1450, 1550));
        assert_eq!((spans[2].start_time_unix_nano, spans[2].end_time_unix_nano), (1460, 1540));
        assert_eq!(spans[1].events[0].time_unix_nano, 1451);
        assert_eq!((spans[3].start_time_unix_nano, spans[3].end_time_unix_nano), (1470, 1480));
        assert_eq!(adjustments, vec![SkewAdjustment { spans: vec![1, 2], delta_nanos: -3550, host: "b".into() }]);
    }

    #[test]
    fn same_host_unknown_host_fitting_and_too_large_are_left_alone() {
        let mut spans = vec![
            span(1, None, Some("a"), 1000, 2000),
            span(2, Some(1), Some("a"), 5000, 5100),
            span(3, Some(1), None, 5000, 5100),
            span(4, Some(1), Some("b"), 1200, 1300),
            span(5, Some(1), Some("c"), 1_000_000, 1_000_100),
        ];
        let before: Vec<u64> = spans.iter().map(|s| s.start_time_unix_nano).collect();
        assert!(adjust_clock_skew(&mut spans, 10_000).is_empty());
        assert_eq!(spans.iter().map(|s| s.start_time_unix_nano).collect::<Vec<_>>(), before);
    }

    #[test]
    fn longer_child_moves_only_if_it_starts_before_its_parent() {
        let mut spans = vec![span(1, None, Some("a"), 1000, 2000), span(2, Some(1), Some("b"), 900, 3000)];
        adjust_clock_skew(&mut spans, u64::MAX);
        assert_eq!((spans[1].start_time_unix_nano, spans[1].end_time_unix_nano), (1000, 3100));
        let mut spans = vec![span(1, None, Some("a"), 1000, 2000), span(2, Some(1), Some("b"), 1500, 5000)];
        assert!(adjust_clock_skew(&mut spans, u64::MAX).is_empty());
    }
}
