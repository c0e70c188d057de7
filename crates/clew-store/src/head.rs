//! Spans waiting for their trace to go quiet.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clew_model::{Span, SpanId, TraceId};
use parking_lot::Mutex;

use crate::wal::SegmentId;

const SHARDS: usize = 32;

/// The spans of one trace gathered so far.
pub struct PendingTrace {
    pub trace_id: TraceId,
    pub spans: Vec<Span>,
    /// The span IDs of a trace with many spans; a small trace's are compared directly.
    span_ids: Option<HashSet<SpanId, foldhash::fast::RandomState>>,
    first_seen: Instant,
    last_seen: Instant,
    /// Spans held per WAL segment, released when the trace reaches a block.
    pub segments: Vec<(SegmentId, u64)>,
}

impl PendingTrace {
    /// Whether a span with this ID is already pending; if not, it is remembered.
    fn is_duplicate(&mut self, span_id: SpanId) -> bool {
        const INDEXED_FROM: usize = 32;
        match &mut self.span_ids {
            Some(ids) => !ids.insert(span_id),
            None if self.spans.iter().any(|span| span.span_id == span_id) => true,
            None => {
                if self.spans.len() >= INDEXED_FROM {
                    let mut ids: HashSet<SpanId, foldhash::fast::RandomState> = self.spans.iter().map(|span| span.span_id).collect();
                    ids.insert(span_id);
                    self.span_ids = Some(ids);
                }
                false
            }
        }
    }
}

/// Pending traces, sharded by trace ID so that concurrent requests rarely contend.
pub struct Head {
    shards: Vec<Mutex<HashMap<TraceId, PendingTrace, foldhash::fast::RandomState>>>,
    spans: AtomicU64,
    generation: AtomicU64,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            spans: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }
}

/// What `insert` did with the spans it was given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    pub added: u64,
    pub duplicates: u64,
}

impl Head {
    fn shard(trace_id: &TraceId) -> usize {
        // Trace IDs are random: their last byte spreads evenly.
        trace_id.0[15] as usize % SHARDS
    }

    /// Adds spans logged in `segment`; a span whose (trace, span) ID is already pending is a
    /// duplicate delivery and is dropped.
    pub fn insert(&self, spans: Vec<Span>, segment: SegmentId, now: Instant) -> Inserted {
        let mut result = Inserted::default();
        let mut by_shard: Vec<Vec<Span>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for span in spans {
            by_shard[Self::shard(&span.trace_id)].push(span);
        }
        for (index, spans) in by_shard.into_iter().enumerate() {
            if spans.is_empty() {
                continue;
            }
            let mut shard = self.shards[index].lock();
            for span in spans {
                let trace = shard.entry(span.trace_id).or_insert_with(|| PendingTrace {
                    trace_id: span.trace_id,
                    spans: Vec::new(),
                    span_ids: None,
                    first_seen: now,
                    last_seen: now,
                    segments: Vec::new(),
                });
                if trace.is_duplicate(span.span_id) {
                    result.duplicates += 1;
                    continue;
                }
                trace.last_seen = now;
                match trace.segments.last_mut() {
                    Some((last, count)) if *last == segment => *count += 1,
                    _ => trace.segments.push((segment, 1)),
                }
                trace.spans.push(span);
                result.added += 1;
            }
        }
        self.spans.fetch_add(result.added, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Removes and returns traces quiet for `idle`, or older than `max_age`, or all with
    /// `flush_all`, oldest first (by when their first span came); stops once about `max_spans`
    /// spans are taken (the rest wait for the next call). Oldest first matters when much is
    /// pending: a backlog arrives in time order, and its chunks then hold consecutive time.
    pub fn take_ready(&self, now: Instant, idle: Duration, max_age: Duration, flush_all: bool, max_spans: usize) -> Vec<PendingTrace> {
        let is_ready =
            |t: &PendingTrace| flush_all || now.duration_since(t.last_seen) >= idle || now.duration_since(t.first_seen) >= max_age;
        let mut candidates: Vec<(Instant, u8, TraceId, usize)> = Vec::new();
        for (index, shard) in self.shards.iter().enumerate() {
            let shard = shard.lock();
            candidates.extend(shard.values().filter(|t| is_ready(t)).map(|t| (t.first_seen, index as u8, t.trace_id, t.spans.len())));
        }
        candidates.sort_unstable_by_key(|(first_seen, ..)| *first_seen);
        let mut wanted: Vec<Vec<TraceId>> = vec![Vec::new(); SHARDS];
        let mut counted = 0;
        for (_, index, trace_id, spans) in candidates {
            if counted >= max_spans {
                break;
            }
            counted += spans;
            wanted[index as usize].push(trace_id);
        }
        let mut ready = Vec::new();
        for (shard, ids) in self.shards.iter().zip(wanted) {
            if ids.is_empty() {
                continue;
            }
            let mut shard = shard.lock();
            for id in ids {
                // A span may have joined the trace since: it is taken only if still ready.
                if shard.get(&id).is_some_and(|t| is_ready(t)) {
                    ready.extend(shard.remove(&id));
                }
            }
        }
        let taken: u64 = ready.iter().map(|t| t.spans.len() as u64).sum();
        self.spans.fetch_sub(taken, Ordering::Relaxed);
        if !ready.is_empty() {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        ready
    }

    /// Calls `visit` with the spans of every pending trace, in place (one shard locked at a
    /// time): queries see pending spans without copying them.
    pub fn visit(&self, mut visit: impl FnMut(&[Span])) {
        for shard in &self.shards {
            let shard = shard.lock();
            for trace in shard.values() {
                visit(&trace.spans);
            }
        }
    }

    pub fn span_count(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// Changes whenever the pending set changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: u8, span: u8) -> Span {
        Span { trace_id: TraceId([trace; 16]), span_id: SpanId([span; 8]), name: "op".into(), ..Span::default() }
    }

    #[test]
    fn ready_traces_are_taken_oldest_first_and_duplicates_dropped() {
        let head = Head::default();
        let start = Instant::now();
        // Trace IDs in descending order of arrival time, so that shard order is not age order.
        for (age, trace) in (1..=40u8).rev().enumerate() {
            let spans: Vec<Span> = (1..=3).map(|s| span(trace, s)).collect();
            head.insert(spans, 0, start + Duration::from_millis(age as u64));
        }
        // 40 spans in one trace: the duplicate check switches to an index on the way.
        let inserted = head.insert((1..=40).map(|s| span(99, s)).chain([span(99, 7), span(99, 40)]).collect(), 0, start);
        assert_eq!(inserted, Inserted { added: 40, duplicates: 2 });
        assert_eq!(head.insert(vec![span(99, 33), span(99, 41)], 0, start), Inserted { added: 1, duplicates: 1 });
        let later = start + Duration::from_secs(10);
        let taken = head.take_ready(later, Duration::from_secs(1), Duration::from_secs(60), false, 50);
        let mut ids: Vec<u8> = taken.iter().map(|t| t.trace_id.0[0]).collect();
        ids.sort();
        // Traces 99 and 40 came first (41 + 3 spans), then 39 and 38 bring it to 50 spans.
        assert_eq!(ids, vec![38, 39, 40, 99]);
        assert_eq!(head.span_count(), 37 * 3);
    }
}
