//! Spans waiting for their trace to go quiet.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::borrow::Cow;
use std::sync::Arc;

use clew_model::{Attribute, Event, InstrumentationScope, Link, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, Value};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::SpanFilter;
use crate::wal::SegmentId;

const SHARDS: usize = 32;

/// A span waiting for its trace to go quiet, kept compact: everything but its span ID,
/// resource and scope (its trace ID is the head's key) is one serialized buffer (postcard).
/// A demo span takes a few hundred bytes so, instead of about a kilobyte as a decoded `Span`
/// (its attributes, their keys and string values are each a separate allocation). Pending
/// spans are most of the server's memory under load. A span is decoded when its trace is
/// assembled, and when a query reads pending spans.
#[derive(Clone)]
pub struct PendingSpan {
    span_id: SpanId,
    resource: Arc<Resource>,
    scope: Arc<InstrumentationScope>,
    body: Box<[u8]>,
}

/// The serialized part of a pending span. Its end time is kept as the (wrapping) difference
/// from its start, which is shorter when the span ends after it starts, and restored exactly.
type Body<'a> = (
    Option<SpanId>,
    String,
    u32,
    String,
    SpanKind,
    u64,
    u64,
    Vec<(Key<'a>, Value)>,
    u32,
    Vec<Event>,
    u32,
    Vec<Link>,
    u32,
    StatusCode,
    String,
);

/// A span attribute's key in a packed span: the number of a known key, or the key itself.
#[derive(Serialize, Deserialize)]
enum Key<'a> {
    Known(u32),
    Inline(#[serde(borrow)] Cow<'a, str>),
}

/// The span attribute keys of pending spans, each kept once: a packed span names a known key
/// by its number instead of writing its text. Keys are few (semantic
/// conventions), but a client may send endless new ones, so only `limit` keys of at most
/// `MAX_KEY_BYTES` are remembered; others are written out in each span.
pub struct Keys {
    table: RwLock<KeyTable>,
    limit: usize,
}

#[derive(Default)]
struct KeyTable {
    numbers: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    names: Vec<Arc<str>>,
}

const MAX_KEY_BYTES: usize = 128;

impl Default for Keys {
    fn default() -> Self {
        Self::with_limit(4096)
    }
}

impl Keys {
    fn with_limit(limit: usize) -> Self {
        Self { table: RwLock::new(KeyTable::default()), limit }
    }

    /// The span's attributes with their keys numbered where known (new keys are learnt).
    fn number<'a>(&self, attributes: &'a [Attribute]) -> Vec<(Key<'a>, &'a Value)> {
        let mut numbered = Vec::with_capacity(attributes.len());
        // Whether some key could be learnt: only then is the table locked for writing, so that
        // keys that cannot be (too long, or the table full) do not serialize every insert.
        let mut learnable = false;
        {
            let table = self.table.read();
            let room = table.names.len() < self.limit;
            for attribute in attributes {
                let key = match table.numbers.get(attribute.key.as_str()) {
                    Some(number) => Key::Known(*number),
                    None => {
                        learnable |= room && attribute.key.len() <= MAX_KEY_BYTES;
                        Key::Inline(Cow::Borrowed(&attribute.key))
                    }
                };
                numbered.push((key, &attribute.value));
            }
        }
        if learnable {
            let mut table = self.table.write();
            for (key, _) in &mut numbered {
                let Key::Inline(name) = key else { continue };
                if let Some(number) = table.numbers.get(name.as_ref()) {
                    *key = Key::Known(*number);
                } else if table.names.len() < self.limit && name.len() <= MAX_KEY_BYTES {
                    let number = table.names.len() as u32;
                    let name: Arc<str> = Arc::from(name.as_ref());
                    table.names.push(Arc::clone(&name));
                    table.numbers.insert(name, number);
                    *key = Key::Known(number);
                }
            }
        }
        numbered
    }
}

impl PendingSpan {
    pub fn pack(span: &Span, keys: &Keys) -> Self {
        let body = (
            &span.parent_span_id,
            &span.trace_state,
            span.flags,
            &span.name,
            span.kind,
            span.start_time_unix_nano,
            span.end_time_unix_nano.wrapping_sub(span.start_time_unix_nano),
            keys.number(&span.attributes),
            span.dropped_attributes_count,
            &span.events,
            span.dropped_events_count,
            &span.links,
            span.dropped_links_count,
            span.status_code,
            &span.status_message,
        );
        thread_local! {
            /// Serialized into a buffer kept per thread, then copied once at its final size: a
            /// fresh vector would grow several times per span.
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let body = BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            let filled = postcard::to_extend(&body, std::mem::take(buffer)).expect("a span serializes: every field is plain data");
            let body = Box::<[u8]>::from(filled.as_slice());
            // A huge span's buffer is not kept.
            if filled.capacity() <= 64 * 1024 {
                *buffer = filled;
            }
            body
        });
        Self { span_id: span.span_id, resource: Arc::clone(&span.resource), scope: Arc::clone(&span.scope), body }
    }

    /// The span again; `names` are the key table's (`Head::unpack` reads it once per trace).
    fn unpack(&self, trace_id: TraceId, names: &[Arc<str>]) -> Span {
        let body: Body = postcard::from_bytes(&self.body).expect("a pending span deserializes: it was serialized by `pack`");
        let (parent_span_id, trace_state, flags, name, kind, start, duration, attributes, dropped_attributes_count) =
            (body.0, body.1, body.2, body.3, body.4, body.5, body.6, body.7, body.8);
        let (events, dropped_events_count, links, dropped_links_count, status_code, status_message) =
            (body.9, body.10, body.11, body.12, body.13, body.14);
        Span {
            trace_id,
            span_id: self.span_id,
            parent_span_id,
            trace_state,
            flags,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start.wrapping_add(duration),
            attributes: attributes
                .into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Key::Known(number) => names.get(number as usize).expect("a known key number is in the table").to_string(),
                        Key::Inline(name) => name.into_owned(),
                    };
                    Attribute { key, value }
                })
                .collect(),
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status_code,
            status_message,
            resource: Arc::clone(&self.resource),
            scope: Arc::clone(&self.scope),
        }
    }

    /// Whether the span meets `filter`: its service from its resource, its name read from the
    /// front of its packed form, nothing decoded beyond.
    pub fn meets(&self, filter: &SpanFilter) -> bool {
        if filter.service_name.as_deref().is_some_and(|service| service != self.resource.service_name()) {
            return false;
        }
        let Some(wanted) = filter.name.as_deref() else { return true };
        // The fields of `Body` up to the name.
        match postcard::from_bytes::<(Option<SpanId>, &str, u32, &str)>(&self.body) {
            Ok((_, _, _, name)) => name == wanted,
            Err(_) => true,
        }
    }

    /// Bytes this span holds on the heap, beside its share of the resource and scope.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.body.len()
    }
}

/// The spans of one trace gathered so far.
pub struct PendingTrace {
    pub trace_id: TraceId,
    pub spans: Vec<PendingSpan>,
    /// The span IDs of a trace with many spans; a small trace's are compared directly.
    span_ids: Option<HashSet<SpanId, foldhash::fast::RandomState>>,
    first_seen: Instant,
    last_seen: Instant,
    /// Spans held per WAL segment, released when the trace reaches a block.
    pub segments: Vec<(SegmentId, u64)>,
    /// Memory held, as counted by `Head`.
    bytes: u64,
}

/// What a pending trace costs beside its spans: its entry in the head, its span list.
const TRACE_BYTES: u64 = (std::mem::size_of::<PendingTrace>() + std::mem::size_of::<TraceId>() + 16) as u64;

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
    bytes: AtomicU64,
    generation: AtomicU64,
    keys: Keys,
    /// How long the longest-waiting quiet trace left by the last `take_ready` had been ready.
    lag_nanos: AtomicU64,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            spans: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            keys: Keys::default(),
            lag_nanos: AtomicU64::new(0),
        }
    }
}

/// What `insert` did with the spans it was given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    pub added: u64,
    pub duplicates: u64,
    /// Memory the added spans hold, with the bookkeeping of the traces they started.
    pub bytes: u64,
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
        // Spans are packed before any shard is locked.
        let mut by_shard: Vec<Vec<(TraceId, PendingSpan)>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for span in &spans {
            by_shard[Self::shard(&span.trace_id)].push((span.trace_id, PendingSpan::pack(span, &self.keys)));
        }
        drop(spans);
        for (index, spans) in by_shard.into_iter().enumerate() {
            if spans.is_empty() {
                continue;
            }
            let mut shard = self.shards[index].lock();
            for (trace_id, span) in spans {
                let trace = shard.entry(trace_id).or_insert_with(|| PendingTrace {
                    trace_id,
                    spans: Vec::new(),
                    span_ids: None,
                    first_seen: now,
                    last_seen: now,
                    segments: Vec::new(),
                    bytes: TRACE_BYTES,
                });
                if trace.spans.is_empty() {
                    result.bytes += TRACE_BYTES;
                }
                if trace.is_duplicate(span.span_id) {
                    result.duplicates += 1;
                    continue;
                }
                trace.last_seen = now;
                match trace.segments.last_mut() {
                    Some((last, count)) if *last == segment => *count += 1,
                    _ => trace.segments.push((segment, 1)),
                }
                let bytes = span.heap_bytes() as u64;
                trace.bytes += bytes;
                result.bytes += bytes;
                trace.spans.push(span);
                result.added += 1;
            }
        }
        self.spans.fetch_add(result.added, Ordering::Relaxed);
        self.bytes.fetch_add(result.bytes, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        result
    }

    /// Removes and returns traces quiet for `idle`, or older than `max_age`, or all with
    /// `flush_all`, oldest first (by when their first span came); stops once about `max_spans`
    /// spans are taken (the rest wait for the next call). Oldest first matters when much is
    /// pending: a backlog arrives in time order, and its chunks then hold consecutive time.
    /// How long quiet traces wait for assembly beyond their quiet time: zero unless assembly
    /// falls behind.
    pub fn assembly_lag(&self) -> Duration {
        Duration::from_nanos(self.lag_nanos.load(Ordering::Relaxed))
    }

    pub fn take_ready(&self, now: Instant, idle: Duration, max_age: Duration, flush_all: bool, max_spans: usize) -> Vec<PendingTrace> {
        let is_ready =
            |t: &PendingTrace| flush_all || now.duration_since(t.last_seen) >= idle || now.duration_since(t.first_seen) >= max_age;
        let mut candidates: Vec<(Instant, u8, TraceId, usize, Instant)> = Vec::new();
        for (index, shard) in self.shards.iter().enumerate() {
            let shard = shard.lock();
            candidates.extend(
                shard.values().filter(|t| is_ready(t)).map(|t| (t.first_seen, index as u8, t.trace_id, t.spans.len(), t.last_seen)),
            );
        }
        candidates.sort_unstable_by_key(|(first_seen, ..)| *first_seen);
        let mut wanted: Vec<Vec<TraceId>> = vec![Vec::new(); SHARDS];
        let mut counted = 0;
        // The assembly lag: how long the traces left for a later call have been ready.
        let mut lag = Duration::ZERO;
        for (_, index, trace_id, spans, last_seen) in candidates {
            if counted >= max_spans {
                lag = lag.max(now.duration_since(last_seen).saturating_sub(idle));
                continue;
            }
            counted += spans;
            wanted[index as usize].push(trace_id);
        }
        self.lag_nanos.store(if flush_all { 0 } else { lag.as_nanos() as u64 }, Ordering::Relaxed);
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
        self.bytes.fetch_sub(ready.iter().map(|t| t.bytes).sum(), Ordering::Relaxed);
        if !ready.is_empty() {
            self.generation.fetch_add(1, Ordering::Release);
        }
        ready
    }

    /// Calls `visit` with the decoded spans of each trace in `ids` that is pending: a lookup
    /// by trace ID decodes those traces only, however many spans are pending.
    pub fn visit_traces(&self, ids: &[TraceId], mut visit: impl FnMut(&[Span])) {
        for id in ids {
            let spans = self.shards[Self::shard(id)].lock().get(id).map(|trace| self.unpack(*id, &trace.spans));
            if let Some(spans) = spans {
                visit(&spans);
            }
        }
    }

    /// Every pending trace's spans, still packed: copying them is a small part of decoding
    /// them, so a query that reads everything pending holds up assembly (which waits for the
    /// stage lock its callers hold) only that long, and decodes them afterwards. A shard is
    /// locked while its traces are copied.
    pub fn copy_where(&self, wanted: impl Fn(&[PendingSpan]) -> bool) -> Vec<(TraceId, Vec<PendingSpan>)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(shard.lock().iter().filter(|(_, trace)| wanted(&trace.spans)).map(|(id, trace)| (*id, trace.spans.clone())));
        }
        out
    }

    /// Decodes a trace's pending spans.
    pub fn unpack(&self, trace_id: TraceId, spans: &[PendingSpan]) -> Vec<Span> {
        let table = self.keys.table.read();
        spans.iter().map(|span| span.unpack(trace_id, &table.names)).collect()
    }

    pub fn span_count(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// Memory the pending spans hold (their packed form and the traces' bookkeeping).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Changes whenever the pending set changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: u8, span: u8) -> Span {
        Span { trace_id: TraceId([trace; 16]), span_id: SpanId([span; 8]), name: "op".into(), ..Span::default() }
    }

    #[test]
    fn a_packed_span_unpacks_to_every_field() {
        let attributes = vec![
            Attribute::new("s", Value::Str("text".into())),
            Attribute::new("b", Value::Bool(true)),
            Attribute::new("i", Value::Int(-7)),
            Attribute::new("d", Value::Double(2.5)),
            Attribute::new("bytes", Value::Bytes(vec![0, 255])),
            Attribute::new("a", Value::Array(vec![Value::Int(1), Value::Str("x".into()), Value::Empty])),
            Attribute::new("m", Value::Map(vec![Attribute::new("inner", Value::Double(-0.0))])),
        ];
        let resource =
            Arc::new(Resource { attributes: vec![Attribute::new("service.name", Value::Str("api".into()))], ..Resource::default() });
        let span = Span {
            trace_id: TraceId([3; 16]),
            span_id: SpanId([4; 8]),
            parent_span_id: Some(SpanId([5; 8])),
            trace_state: "k=v".into(),
            flags: 0x301,
            name: "GET /cart".into(),
            kind: SpanKind::Server,
            start_time_unix_nano: 1_700_000_000_123_456_789,
            // An end before the start (a clock that went back) survives as it came.
            end_time_unix_nano: 1_700_000_000_000_000_001,
            attributes: attributes.clone(),
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: 9,
                name: "exception".into(),
                attributes: attributes.clone(),
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![Link {
                trace_id: TraceId([6; 16]),
                span_id: SpanId([7; 8]),
                trace_state: "a=b".into(),
                attributes,
                dropped_attributes_count: 4,
                flags: 1,
            }],
            dropped_links_count: 5,
            status_code: StatusCode::Error,
            status_message: "boom".into(),
            resource: Arc::clone(&resource),
            scope: Arc::new(InstrumentationScope { name: "lib".into(), ..InstrumentationScope::default() }),
        };
        let head = Head::default();
        let packed = PendingSpan::pack(&span, &head.keys);
        let unpacked = head.unpack(span.trace_id, std::slice::from_ref(&packed)).remove(0);
        assert_eq!(unpacked, span);
        assert!(Arc::ptr_eq(&unpacked.resource, &resource), "the resource is shared, not copied");
        assert!(Arc::ptr_eq(&unpacked.scope, &span.scope), "the scope is shared, not copied");
        // Equality does not tell -0.0 from 0.0: the sign must survive too.
        let Some(Value::Map(entries)) = unpacked.attribute("m") else { panic!("the map attribute is lost") };
        assert!(matches!(entries[0].value, Value::Double(d) if d.to_bits() == (-0.0f64).to_bits()));
        // A zero ID (which a `Span` can hold) packs and unpacks like any other.
        let zero = Span { parent_span_id: Some(SpanId([0; 8])), ..span.clone() };
        assert_eq!(head.unpack(zero.trace_id, &[PendingSpan::pack(&zero, &head.keys)]), vec![zero]);
        // The plain span (IDs, name, times, no attributes) takes a few dozen bytes.
        let plain = PendingSpan::pack(&Span { attributes: Vec::new(), events: Vec::new(), links: Vec::new(), ..span.clone() }, &head.keys);
        assert!(plain.body.len() < 60, "{} bytes", plain.body.len());
    }

    #[test]
    fn attribute_keys_are_numbered_up_to_a_limit() {
        let head = Head { keys: Keys::with_limit(2), ..Head::default() };
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let attributes = vec![
            Attribute::new(long, Value::Int(1)),
            Attribute::new("http.request.method", Value::Str("GET".into())),
            Attribute::new("http.route", Value::Str("/cart".into())),
            Attribute::new("db.system", Value::Str("postgresql".into())),
        ];
        let span = Span { attributes, ..span(1, 1) };
        let numbered = PendingSpan::pack(&span, &head.keys);
        assert_eq!(head.unpack(span.trace_id, std::slice::from_ref(&numbered)), vec![span.clone()]);
        // The over-long key and the one past the limit are written out; the others are learnt.
        let names: Vec<String> = head.keys.table.read().names.iter().map(|name| name.to_string()).collect();
        assert_eq!(names, ["http.request.method", "http.route"]);
        // A known key costs its number (one byte here) instead of its length and text.
        let inline = PendingSpan::pack(&span, &Keys::with_limit(0));
        assert_eq!(inline.body.len() - numbered.body.len(), "http.request.method".len() + "http.route".len());
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
        assert_eq!((inserted.added, inserted.duplicates), (40, 2));
        let again = head.insert(vec![span(99, 33), span(99, 41)], 0, start);
        assert_eq!((again.added, again.duplicates), (1, 1));
        // One more span in a known trace costs its packed size only.
        assert_eq!(again.bytes, PendingSpan::pack(&span(99, 41), &head.keys).heap_bytes() as u64);
        let before = head.bytes();
        let later = start + Duration::from_secs(10);
        let taken = head.take_ready(later, Duration::from_secs(1), Duration::from_secs(60), false, 50);
        let mut ids: Vec<u8> = taken.iter().map(|t| t.trace_id.0[0]).collect();
        ids.sort();
        // Traces 99 and 40 came first (41 + 3 spans), then 39 and 38 bring it to 50 spans.
        assert_eq!(ids, vec![38, 39, 40, 99]);
        assert_eq!(head.span_count(), 37 * 3);
        let taken_bytes: u64 = taken.iter().map(|t| t.bytes).sum();
        assert_eq!(head.bytes(), before - taken_bytes);
        // The traces left are ready and waiting: the longest-waiting one (trace 37, last seen
        // 3 ms after the start) for 9 s less 3 ms beyond its 1 s of quiet.
        assert_eq!(head.assembly_lag(), Duration::from_secs(9) - Duration::from_millis(3));
        let rest = head.take_ready(later, Duration::from_secs(1), Duration::from_secs(60), true, usize::MAX);
        assert_eq!(rest.len(), 37);
        assert_eq!(head.assembly_lag(), Duration::ZERO, "nothing left waiting");
        assert_eq!((head.span_count(), head.bytes()), (0, 0), "memory is counted back to nothing");
    }
}
