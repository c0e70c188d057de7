//! Trace assembly: the trace-level and per-span facts computed once, when a trace has gone quiet.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::critical_path::{CriticalSegment, Interval, critical_path_over};
use crate::ids::SpanId;
use crate::span::{Span, SpanKind};

/// Bits of [`SpanFacts::flags`].
pub mod span_flags {
    /// The span names a parent that is not in the trace.
    pub const ORPHAN: u32 = 1;
    /// The span has no parent.
    pub const ROOT: u32 = 1 << 1;
    /// A CLIENT (PRODUCER) span with no SERVER (CONSUMER) child: the callee is not instrumented,
    /// or it drops or does not extract the propagated context.
    pub const UNMATCHED_CLIENT: u32 = 1 << 2;
    /// The span has some time on the critical path.
    pub const ON_CRITICAL_PATH: u32 = 1 << 3;
}

/// Bits of [`TraceFacts::flags`].
pub mod trace_flags {
    /// More than one span without a parent.
    pub const MULTIPLE_ROOTS: u32 = 1;
    /// Some span's parent is missing.
    pub const HAS_ORPHANS: u32 = 1 << 1;
    /// Some CLIENT/PRODUCER span has no matching SERVER/CONSUMER child.
    pub const HAS_UNMATCHED_CLIENT: u32 = 1 << 2;
    /// No span without a parent: the root is missing, the earliest orphan stands in for it.
    pub const NO_ROOT: u32 = 1 << 3;
    /// Spans that arrived after their trace was assembled and stored.
    pub const FRAGMENT: u32 = 1 << 4;
}

/// Facts about one span, relative to its trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanFacts {
    /// The parent's index among the trace's spans, when the parent is in the trace: its
    /// service and name are the parent service and operation.
    pub parent: Option<usize>,
    /// Distance from the root (or from the top of the orphaned subtree).
    pub depth: u32,
    /// Span time not covered by any child.
    pub self_nanos: u64,
    /// Span time on the trace's critical path.
    pub critical_path_nanos: u64,
    pub flags: u32,
}

/// Facts about a whole trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceFacts {
    /// Index of the root span in [`AssembledTrace::spans`].
    pub root_index: Option<usize>,
    pub root_service: String,
    pub root_name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub span_count: u32,
    pub error_count: u32,
    /// Distinct service names, sorted.
    pub services: Vec<String>,
    pub flags: u32,
    /// How many traces of real traffic this one stands for (1 unless it was sampled; see
    /// [`crate::sampling`]).
    pub adjusted_count: u32,
}

impl TraceFacts {
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

/// A trace ready to be stored: spans sorted by start time, with their facts.
#[derive(Debug, Clone)]
pub struct AssembledTrace {
    pub spans: Vec<Span>,
    pub span_facts: Vec<SpanFacts>,
    pub facts: TraceFacts,
    pub critical_path: Vec<CriticalSegment>,
}

/// The facts of a trace whose spans stay where they are (see [`assemble_borrowed`]).
#[derive(Debug, Clone)]
pub struct BorrowedTrace<'a> {
    pub spans: Vec<&'a Span>,
    pub span_facts: Vec<SpanFacts>,
    pub facts: TraceFacts,
    pub critical_path: Vec<CriticalSegment>,
}

fn span_order(a: &Span, b: &Span) -> std::cmp::Ordering {
    a.start_time_unix_nano
        .cmp(&b.start_time_unix_nano)
        .then(b.end_time_unix_nano.cmp(&a.end_time_unix_nano))
        .then(a.span_id.cmp(&b.span_id))
}

/// Assembles one trace. Duplicate span IDs keep their first occurrence. All spans must share
/// one trace ID; the caller guarantees it.
pub fn assemble(mut spans: Vec<Span>) -> AssembledTrace {
    spans.sort_by(span_order);
    let mut seen = HashSet::with_capacity(spans.len());
    spans.retain(|span| seen.insert(span.span_id));
    let refs: Vec<&Span> = spans.iter().collect();
    let (span_facts, facts, critical_path) = analyse(&refs);
    AssembledTrace { spans, span_facts, facts, critical_path }
}

/// [`assemble`] without moving or copying the spans: they are referred to in trace order.
pub fn assemble_borrowed(spans: &[Span]) -> BorrowedTrace<'_> {
    let mut refs: Vec<&Span> = spans.iter().collect();
    refs.sort_by(|a, b| span_order(a, b));
    let mut seen = HashSet::with_capacity(refs.len());
    refs.retain(|span| seen.insert(span.span_id));
    let (span_facts, facts, critical_path) = analyse(&refs);
    BorrowedTrace { spans: refs, span_facts, facts, critical_path }
}

/// The facts of spans already sorted by start and free of duplicate IDs.
fn analyse(spans: &[&Span]) -> (Vec<SpanFacts>, TraceFacts, Vec<CriticalSegment>) {
    let count = spans.len();
    let mut index: HashMap<SpanId, usize> = HashMap::with_capacity(count);
    index.extend(spans.iter().enumerate().map(|(i, span)| (span.span_id, i)));
    let mut parent_of: Vec<Option<usize>> = vec![None; count];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut span_facts: Vec<SpanFacts> = vec![SpanFacts::default(); count];
    let mut roots = Vec::new();
    let mut orphans = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span.parent_span_id {
            None => {
                roots.push(i);
                span_facts[i].flags |= span_flags::ROOT;
            }
            Some(parent_id) => match index.get(&parent_id) {
                Some(&parent) if parent != i => {
                    parent_of[i] = Some(parent);
                    children[parent].push(i);
                }
                _ => {
                    orphans.push(i);
                    span_facts[i].flags |= span_flags::ORPHAN;
                }
            },
        }
    }

    let mut facts = TraceFacts { span_count: count as u32, ..TraceFacts::default() };
    if roots.len() > 1 {
        facts.flags |= trace_flags::MULTIPLE_ROOTS;
    }
    if !orphans.is_empty() {
        facts.flags |= trace_flags::HAS_ORPHANS;
    }
    // Spans are sorted by start, so the first root is the earliest (the longest among equals).
    let root = roots.first().copied().or_else(|| {
        if count > 0 {
            facts.flags |= trace_flags::NO_ROOT;
        }
        orphans.first().copied()
    });
    facts.root_index = root;
    if let Some(root) = root {
        facts.root_service = spans[root].service_name().to_string();
        facts.root_name = spans[root].name.clone();
    }

    let mut services = BTreeSet::new();
    facts.start_unix_nano = u64::MAX;
    for (i, span) in spans.iter().enumerate() {
        services.insert(span.service_name());
        facts.start_unix_nano = facts.start_unix_nano.min(span.start_time_unix_nano);
        facts.end_unix_nano = facts.end_unix_nano.max(span.end_time_unix_nano);
        if span.is_error() {
            facts.error_count += 1;
        }
        span_facts[i].parent = parent_of[i];
        let wanted_child_kind = match span.kind {
            SpanKind::Client => Some(SpanKind::Server),
            SpanKind::Producer => Some(SpanKind::Consumer),
            _ => None,
        };
        if let Some(wanted) = wanted_child_kind {
            if !children[i].iter().any(|&child| spans[child].kind == wanted) {
                span_facts[i].flags |= span_flags::UNMATCHED_CLIENT;
                facts.flags |= trace_flags::HAS_UNMATCHED_CLIENT;
            }
        }
        span_facts[i].self_nanos = self_time(span, &children[i], &spans);
    }
    if count == 0 {
        facts.start_unix_nano = 0;
    }
    facts.services = services.into_iter().map(str::to_string).collect();
    facts.adjusted_count = crate::sampling::trace_adjusted_count(root.map(|r| spans[r]), spans.iter().copied());

    // Depth, top-down from every subtree top (roots and orphans).
    let mut stack: Vec<(usize, u32)> = roots.iter().chain(orphans.iter()).map(|&i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        span_facts[i].depth = depth;
        stack.extend(children[i].iter().map(|&child| (child, depth + 1)));
    }

    let mut critical_path = Vec::new();
    if let Some(root) = root {
        let windows: Vec<Interval> = spans
            .iter()
            .map(|span| Interval { start: span.start_time_unix_nano, end: span.end_time_unix_nano.max(span.start_time_unix_nano) })
            .collect();
        critical_path = critical_path_over(root, &windows, &children);
        for segment in &critical_path {
            let facts = &mut span_facts[segment.span_index];
            facts.critical_path_nanos += segment.end - segment.start;
            facts.flags |= span_flags::ON_CRITICAL_PATH;
        }
    }

    (span_facts, facts, critical_path)
}

/// Time of `span` not covered by the union of its children, each clipped to the span.
fn self_time(span: &Span, children: &[usize], spans: &[&Span]) -> u64 {
    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano.max(span.start_time_unix_nano));
    let mut windows: Vec<(u64, u64)> = children
        .iter()
        .map(|&child| {
            let child = &spans[child];
            (child.start_time_unix_nano.max(start), child.end_time_unix_nano.min(end))
        })
        .filter(|(s, e)| s < e)
        .collect();
    windows.sort_unstable();
    let mut covered = 0;
    let mut cursor = start;
    for (s, e) in windows {
        let s = s.max(cursor);
        if e > s {
            covered += e - s;
            cursor = e;
        }
    }
    (end - start).saturating_sub(covered)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::span::{Attribute, Resource, StatusCode, Value};
    use crate::{InstrumentationScope, TraceId};

    fn span(id: u8, parent: Option<u8>, service: &str, kind: SpanKind, start: u64, end: u64) -> Span {
        Span {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            trace_state: String::new(),
            flags: 0,
            name: format!("op{id}"),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            resource: Arc::new(Resource {
                attributes: vec![Attribute::new("service.name", Value::Str(service.into()))],
                ..Resource::default()
            }),
            scope: Arc::new(InstrumentationScope::default()),
        }
    }

    #[test]
    fn facts_of_a_small_trace() {
        let mut error = span(3, Some(2), "db-proxy", SpanKind::Server, 20, 60);
        error.status_code = StatusCode::Error;
        let trace = assemble(vec![
            error,
            span(1, None, "frontend", SpanKind::Server, 0, 100),
            span(2, Some(1), "frontend", SpanKind::Client, 10, 70),
            span(4, Some(1), "frontend", SpanKind::Client, 75, 90),
            span(9, Some(8), "mailer", SpanKind::Consumer, 200, 210),
            span(1, None, "frontend", SpanKind::Server, 0, 100), // a duplicate delivery
        ]);
        let facts = &trace.facts;
        assert_eq!(facts.span_count, 5);
        assert_eq!(facts.root_service, "frontend");
        assert_eq!(facts.root_name, "op1");
        assert_eq!(facts.duration_nanos(), 210);
        assert_eq!(facts.error_count, 1);
        assert_eq!(facts.services, vec!["db-proxy", "frontend", "mailer"]);
        assert_eq!(facts.flags, trace_flags::HAS_ORPHANS | trace_flags::HAS_UNMATCHED_CLIENT);

        let by_id = |id: u8| trace.spans.iter().position(|s| s.span_id == SpanId([id; 8])).unwrap();
        let db = &trace.span_facts[by_id(3)];
        let parent = &trace.spans[db.parent.unwrap()];
        assert_eq!((parent.service_name(), parent.name.as_str()), ("frontend", "op2"));
        assert_eq!(db.depth, 2);
        // Client 2 has a server child; client 4 does not.
        assert_eq!(trace.span_facts[by_id(2)].flags & span_flags::UNMATCHED_CLIENT, 0);
        assert_ne!(trace.span_facts[by_id(4)].flags & span_flags::UNMATCHED_CLIENT, 0);
        assert_ne!(trace.span_facts[by_id(9)].flags & span_flags::ORPHAN, 0);
        // Self time of the root: 100 minus children 10..70 and 75..90.
        assert_eq!(trace.span_facts[by_id(1)].self_nanos, 25);
        // Critical path: root 90..100, span4 75..90, root 70..75, span2 60..70, span3 20..60, span2 10..20, root 0..10.
        assert_eq!(trace.span_facts[by_id(1)].critical_path_nanos, 25);
        assert_eq!(trace.span_facts[by_id(2)].critical_path_nanos, 20);
        assert_eq!(trace.span_facts[by_id(3)].critical_path_nanos, 40);
        assert_eq!(trace.span_facts[by_id(4)].critical_path_nanos, 15);
        assert_eq!(trace.span_facts[by_id(9)].critical_path_nanos, 0);
    }

    #[test]
    fn missing_root_uses_earliest_orphan() {
        let trace = assemble(vec![span(5, Some(1), "b", SpanKind::Server, 50, 60), span(4, Some(1), "a", SpanKind::Server, 10, 40)]);
        assert_eq!(trace.facts.root_service, "a");
        assert_ne!(trace.facts.flags & trace_flags::NO_ROOT, 0);
        assert_eq!(trace.span_facts[0].critical_path_nanos, 30);
    }

    #[test]
    fn several_roots_are_flagged() {
        let trace = assemble(vec![span(1, None, "a", SpanKind::Server, 0, 10), span(2, None, "b", SpanKind::Server, 5, 10)]);
        assert_ne!(trace.facts.flags & trace_flags::MULTIPLE_ROOTS, 0);
        assert_eq!(trace.facts.root_service, "a");
    }
}
