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
    span_ids: HashSet<SpanId>,
    first_seen: Instant,
    last_seen: Instant,
    /// Spans held per WAL segment, released when the trace reaches a block.
    pub segments: Vec<(SegmentId, u64)>,
}

/// Pending traces, sharded by trace ID so that concurrent requests rarely contend.
pub struct Head {
    shards: Vec<Mutex<HashMap<TraceId, PendingTrace>>>,
    spans: AtomicU64,
    generation: AtomicU64,
}

impl Default for Head {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), spans: AtomicU64::new(0), generation: AtomicU64::new(0) }
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
                    span_ids: HashSet::new(),
                    first_seen: now,
                    last_seen: now,
                    segments: Vec::new(),
                });
                if !trace.span_ids.insert(span.span_id) {
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
    /// `flush_all`; stops once about `max_spans` spans are taken (the rest wait for the next call).
    pub fn take_ready(&self, now: Instant, idle: Duration, max_age: Duration, flush_all: bool, max_spans: usize) -> Vec<PendingTrace> {
        let mut ready = Vec::new();
        let mut taken_spans = 0;
        for shard in &self.shards {
            if taken_spans >= max_spans {
                break;
            }
            let mut shard = shard.lock();
            let keys: Vec<TraceId> = shard
                .values()
                .filter(|t| flush_all || now.duration_since(t.last_seen) >= idle || now.duration_since(t.first_seen) >= max_age)
                .map(|t| t.trace_id)
                .collect();
            for key in keys {
                if taken_spans >= max_spans {
                    break;
                }
                if let Some(trace) = shard.remove(&key) {
                    taken_spans += trace.spans.len();
                    ready.push(trace);
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
