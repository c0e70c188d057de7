//! Call rollups: per minute and entry point, every call between services counted once, with
//! errors, summed and critical-path time and a latency histogram. They are computed from the
//! rows of assembled traces (when a trace is assembled, and again from the deduplicated rows when
//! a block is written or compacted) and stored beside each block, so that the service map and
//! the dependency graph over days of data read a few thousand rows instead of every span.
//!
//! Which span is which call is the same rule the span-level queries use:
//! - `Root`: a span without a parent, called by the user;
//! - `Call`: a SERVER/CONSUMER span whose parent is in another service;
//! - `Virtual`: a CLIENT/PRODUCER span no SERVER/CONSUMER span answered, to the peer it names
//!   (`peer.service`, `server.address`, `db.system`, `messaging.destination.name`);
//! - `Present`: every span of a service (so that services nobody calls are on the map too).
//!
//! Beside the calls, an [`AdoptionRollup`] keeps what the coverage report reads: per service
//! and minute the span counts behind its quality findings and the resource attributes seen; per
//! trace, whether it is whole and which uncalled peers it names; unanswered client calls; root
//! operations; and uses of deprecated attribute names.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, LazyLock, OnceLock};

use clew_model::{DEPRECATED_ATTRIBUTES, LatencyHistogram, span_flags, trace_flags};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, DictionaryArray, FixedSizeBinaryArray, Int32Array, Int32Builder, Int64Array, Int64Builder,
    MapArray, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

// Rollups hash several keys per span: foldhash, seeded per map like the standard SipHash
// but several times faster on short keys.
use foldhash::{HashMap, HashMapExt, HashSet};

use crate::StoreError;
use crate::block::{ADJUSTED_COUNT, resource_attribute_pairs};
use crate::paths::{PathBuilder, PathRow, PathSpan, PathTrace, merge_paths};

/// Rollup rows are bucketed by the minute their span started in.
pub const ROLLUP_BUCKET_NANOS: i64 = 60_000_000_000;

/// What a rollup row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    Present = 0,
    Root = 1,
    Call = 2,
    Virtual = 3,
}

impl EdgeKind {
    fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => Self::Present,
            1 => Self::Root,
            2 => Self::Call,
            3 => Self::Virtual,
            _ => return None,
        })
    }
}

/// One row: the calls of one kind from `parent` into `child` in one minute, in traces of one
/// entry point.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRow {
    pub minute_unix_nano: i64,
    pub entry_service: Arc<str>,
    pub entry_operation: Arc<str>,
    pub kind: EdgeKind,
    /// The caller: `None` for `Root` and `Present` rows.
    pub parent: Option<Arc<str>>,
    pub child: Arc<str>,
    pub calls: u64,
    pub errors: u64,
    pub duration_nanos: i64,
    pub critical_path_nanos: i64,
    /// Latency of the calls (empty for `Present` rows).
    pub histogram: LatencyHistogram,
}

impl EdgeRow {
    /// Adds the totals of a row with the same key.
    fn add(&mut self, other: &EdgeRow) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.duration_nanos = self.duration_nanos.saturating_add(other.duration_nanos);
        self.critical_path_nanos = self.critical_path_nanos.saturating_add(other.critical_path_nanos);
        self.histogram.merge(&other.histogram);
    }
}

#[derive(Default)]
struct Totals {
    calls: u64,
    errors: u64,
    duration_nanos: i64,
    critical_path_nanos: i64,
    histogram: LatencyHistogram,
}

type Key = (i64, Arc<str>, Arc<str>, EdgeKind, Option<Arc<str>>, Arc<str>);

/// Gathers rollup rows from span-table batches. Rows must come trace by trace (a trace may
/// continue into the next batch), as assembly and block files order them.
#[derive(Default)]
pub struct RollupBuilder {
    rows: HashMap<Key, Totals>,
    names: Names,
    services: HashMap<(i64, Arc<str>), (ServiceCounts, BTreeSet<(Arc<str>, Arc<str>)>)>,
    trace_classes: HashMap<(i64, Arc<str>, bool, Vec<Arc<str>>, bool), u64>,
    unanswered: HashMap<UnansweredKey, UnansweredTotals>,
    roots: HashMap<(i64, Arc<str>, Arc<str>, Arc<str>), (u64, u64, i64)>,
    deprecated: HashMap<(i64, Arc<str>, &'static str), u64>,
    trace: TraceState,
    paths: PathBuilder,
    /// The attribute naming the traffic source (none: every trace's source is empty).
    source_key: Option<Arc<str>>,
    /// Unanswered calls to a named peer that is not a database, while they were in flight.
    in_flight: Vec<(UnansweredKey, i64, i64)>,
    /// Start times of root SERVER and CONSUMER spans, per service.
    root_starts: HashMap<Arc<str>, Vec<i64>>,
    /// Both of the above, once the rollup is finished.
    evidence: Option<Arc<Evidence>>,
}

type UnansweredKey = (i64, Arc<str>, Arc<str>, Arc<str>, Arc<str>, Arc<str>);

#[derive(Default)]
struct UnansweredTotals {
    is_database: bool,
    roots_in_peer: u64,
    calls: u64,
    errors: u64,
    traces: u64,
    duration_nanos: i64,
    critical_path_nanos: i64,
}

/// What the builder remembers of the trace whose rows it is reading.
#[derive(Default)]
struct TraceState {
    id: Option<[u8; 16]>,
    /// How many traces of real traffic it stands for.
    weight: u64,
    whole_shape: bool,
    /// Per service: the minute of its first span in the trace.
    services: Vec<(Arc<str>, i64)>,
    unanswered_peers: BTreeSet<Arc<str>>,
    uncovered: bool,
    unanswered_groups: HashSet<UnansweredKey>,
}

/// A resource's facts, found once per resource of a batch.
struct ResourceFacts {
    missing_version: bool,
    missing_environment: bool,
    pairs: Vec<(Arc<str>, Arc<str>)>,
    /// The traffic source the resource names.
    source: Option<Arc<str>>,
}

/// At most this many distinct resource attributes are kept per service and minute.
const MAX_RESOURCE_PAIRS: usize = 64;
/// Resource attribute values longer than this are not kept.
const MAX_RESOURCE_VALUE: usize = 256;

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    batch.column_by_name(name).expect("the span table has this column")
}

/// The value of `key` in a map column's row, if present.
fn map_value<'a>(map: &'a MapArray, row: usize, key: &str) -> Option<&'a str> {
    if map.is_null(row) {
        return None;
    }
    let offsets = map.value_offsets();
    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
    let keys = map.keys().as_string::<i32>();
    let values = map.values().as_string::<i32>();
    (start..end).find(|i| keys.value(*i) == key).and_then(|i| (!values.is_null(i)).then(|| values.value(i)))
}

fn text(array: &StringArray, row: usize) -> Option<&str> {
    (!array.is_null(row)).then(|| array.value(row))
}

/// The span-table columns the rollups read, looked up once per batch.
struct Columns<'a> {
    trace_ids: &'a FixedSizeBinaryArray,
    span_ids: &'a FixedSizeBinaryArray,
    service: &'a StringArray,
    name: &'a StringArray,
    kind: &'a StringArray,
    parent_span: &'a ArrayRef,
    parent_service: &'a StringArray,
    flags: &'a Int32Array,
    shape: &'a Int32Array,
    peer_service: &'a StringArray,
    server_address: &'a StringArray,
    db_system: &'a StringArray,
    http_method: &'a StringArray,
    http_route: &'a StringArray,
    http_status: &'a Int64Array,
    attributes: &'a MapArray,
    /// Each row's key into the batch's distinct resources.
    resource: &'a DictionaryArray<Int32Type>,
    status: &'a StringArray,
    duration: &'a Int64Array,
    critical: &'a Int64Array,
    root_service: &'a StringArray,
    root_name: &'a StringArray,
    trace_start: &'a Int64Array,
    trace_duration: &'a Int64Array,
    trace_errors: &'a Int32Array,
    offset: &'a Int64Array,
    /// How many traces of real traffic each row's trace stands for.
    weight: &'a Int32Array,
}

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch) -> Self {
        Self {
            trace_ids: batch.column(0).as_fixed_size_binary(),
            span_ids: column(batch, "span_id").as_fixed_size_binary(),
            service: column(batch, "service_name").as_string::<i32>(),
            name: column(batch, "name").as_string::<i32>(),
            kind: column(batch, "kind").as_string::<i32>(),
            parent_span: column(batch, "parent_span_id"),
            parent_service: column(batch, "parent_service").as_string::<i32>(),
            flags: column(batch, "span_flags").as_primitive::<Int32Type>(),
            shape: column(batch, "trace_flags").as_primitive::<Int32Type>(),
            peer_service: column(batch, "peer_service").as_string::<i32>(),
            server_address: column(batch, "server_address").as_string::<i32>(),
            db_system: column(batch, "db_system").as_string::<i32>(),
            http_method: column(batch, "http_method").as_string::<i32>(),
            http_route: column(batch, "http_route").as_string::<i32>(),
            http_status: column(batch, "http_status_code").as_primitive::<Int64Type>(),
            attributes: column(batch, "attributes").as_map(),
            resource: column(batch, "resource").as_dictionary::<Int32Type>(),
            status: column(batch, "status_code").as_string::<i32>(),
            duration: column(batch, "duration_nanos").as_primitive::<Int64Type>(),
            critical: column(batch, "critical_path_nanos").as_primitive::<Int64Type>(),
            root_service: column(batch, "trace_root_service").as_string::<i32>(),
            root_name: column(batch, "trace_root_name").as_string::<i32>(),
            trace_start: column(batch, "trace_start_unix_nano").as_primitive::<Int64Type>(),
            trace_duration: column(batch, "trace_duration_nanos").as_primitive::<Int64Type>(),
            trace_errors: column(batch, "trace_error_count").as_primitive::<Int32Type>(),
            offset: column(batch, "start_offset_nanos").as_primitive::<Int64Type>(),
            weight: column(batch, ADJUSTED_COUNT).as_primitive::<Int32Type>(),
        }
    }

    /// The adjusted count of a row's trace: 1 when it was not sampled (or the row predates it).
    fn weight(&self, row: usize) -> u64 {
        if self.weight.is_null(row) { 1 } else { self.weight.value(row).max(1) as u64 }
    }

    /// The peer a client span names: `peer.service`, `server.address`, `db.system`, then
    /// `messaging.destination.name`.
    fn peer(&self, row: usize) -> Option<&'a str> {
        text(self.peer_service, row)
            .or_else(|| text(self.server_address, row))
            .or_else(|| text(self.db_system, row))
            .or_else(|| map_value(self.attributes, row, "messaging.destination.name"))
    }
}

impl RollupBuilder {
    /// A builder that reads each trace's traffic source from the attribute `source_key`.
    pub fn new(source_key: &str) -> Self {
        Self { source_key: (!source_key.is_empty()).then(|| Arc::from(source_key)), ..Self::default() }
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        self.names.get(name)
    }

    /// Adds the calls and adoption facts of every row of a span-table batch.
    pub fn add(&mut self, batch: &RecordBatch) {
        self.add_calls(batch);
        self.add_adoption(batch);
    }

    fn add_calls(&mut self, batch: &RecordBatch) {
        let columns = Columns::new(batch);
        let Columns {
            service,
            kind,
            parent_span,
            parent_service,
            flags,
            status,
            duration,
            critical,
            root_service,
            root_name,
            trace_start,
            offset,
            ..
        } = columns;
        // Rows of a batch come trace by trace: the entry point's names are interned once per run.
        let mut entry: Option<(usize, Arc<str>, Arc<str>)> = None;
        for row in 0..batch.num_rows() {
            let start = trace_start.value(row).saturating_add(offset.value(row));
            let minute = start.div_euclid(ROLLUP_BUCKET_NANOS) * ROLLUP_BUCKET_NANOS;
            let same_entry = entry
                .as_ref()
                .is_some_and(|(previous, s, o)| *previous + 1 == row && &**s == root_service.value(row) && &**o == root_name.value(row));
            if !same_entry {
                entry = Some((row, self.intern(root_service.value(row)), self.intern(root_name.value(row))));
            } else if let Some(e) = entry.as_mut() {
                e.0 = row;
            }
            let (_, entry_service, entry_operation) = entry.clone().expect("set above");
            let child = self.intern(service.value(row));
            let error = status.value(row) == "error";
            let (nanos, on_path) = (duration.value(row), critical.value(row));
            // A sampled trace's calls count as many times as the traces it stands for.
            let weight = columns.weight(row);
            let count = |builder: &mut Self, edge: EdgeKind, parent: Option<Arc<str>>, child: Arc<str>| {
                let totals = builder
                    .rows
                    .entry((minute, Arc::clone(&entry_service), Arc::clone(&entry_operation), edge, parent, child))
                    .or_default();
                totals.calls += weight;
                totals.errors += error as u64 * weight;
                totals.duration_nanos = totals.duration_nanos.saturating_add(nanos.saturating_mul(weight as i64));
                totals.critical_path_nanos = totals.critical_path_nanos.saturating_add(on_path.saturating_mul(weight as i64));
                if edge != EdgeKind::Present {
                    totals.histogram.record_n(nanos, weight);
                }
            };
            count(self, EdgeKind::Present, None, Arc::clone(&child));
            if parent_span.is_null(row) {
                count(self, EdgeKind::Root, None, Arc::clone(&child));
            }
            let span_kind = kind.value(row);
            if (span_kind == "server" || span_kind == "consumer")
                && let Some(caller) = text(parent_service, row)
                && caller != service.value(row)
            {
                let caller = self.intern(caller);
                count(self, EdgeKind::Call, Some(caller), Arc::clone(&child));
            }
            if flags.value(row) as u32 & span_flags::UNMATCHED_CLIENT != 0 {
                let peer = columns.peer(row);
                if let Some(peer) = peer {
                    let peer = self.intern(peer);
                    count(self, EdgeKind::Virtual, Some(child), peer);
                }
            }
        }
    }

    fn add_adoption(&mut self, batch: &RecordBatch) {
        let columns = Columns::new(batch);
        let Columns {
            trace_ids,
            span_ids,
            service,
            name,
            kind,
            parent_span,
            flags,
            shape,
            peer_service,
            server_address,
            db_system,
            http_method,
            http_route,
            http_status,
            attributes,
            resource,
            status,
            duration,
            critical,
            root_service,
            root_name,
            trace_start,
            trace_duration,
            trace_errors,
            offset,
            ..
        } = columns;
        let broken_shape = (trace_flags::MULTIPLE_ROOTS | trace_flags::HAS_ORPHANS | trace_flags::NO_ROOT) as i32;
        let mut resource_facts: Vec<Option<ResourceFacts>> = Vec::new();
        resource_facts.resize_with(resource.values().len(), || None);
        // (minute, interned service, resource) whose pairs were added to the service's minute:
        // each resource's pairs are added once, not once per span.
        let mut pairs_added: HashSet<(i64, usize, usize)> = HashSet::default();
        for row in 0..batch.num_rows() {
            let trace_id: [u8; 16] = trace_ids.value(row).try_into().expect("16-byte trace IDs");
            if self.trace.id != Some(trace_id) {
                self.end_trace();
                self.trace.id = Some(trace_id);
                self.trace.whole_shape = shape.value(row) & broken_shape == 0;
                self.trace.weight = columns.weight(row);
                let trace = PathTrace {
                    minute_unix_nano: trace_start.value(row).div_euclid(ROLLUP_BUCKET_NANOS) * ROLLUP_BUCKET_NANOS,
                    entry_service: self.intern(root_service.value(row)),
                    entry_operation: self.intern(root_name.value(row)),
                    duration_nanos: trace_duration.value(row),
                    error: trace_errors.value(row) > 0,
                    weight: self.trace.weight,
                };
                self.paths.begin(trace);
            }
            let start = trace_start.value(row).saturating_add(offset.value(row));
            let minute = start.div_euclid(ROLLUP_BUCKET_NANOS) * ROLLUP_BUCKET_NANOS;
            let service_name = self.intern(service.value(row));
            match self.trace.services.iter_mut().find(|(s, _)| *s == service_name) {
                Some((_, first)) => *first = (*first).min(minute),
                None => self.trace.services.push((Arc::clone(&service_name), minute)),
            }
            let resource_key = resource.keys().value(row) as usize;
            if resource_facts[resource_key].is_none() {
                let values = resource.values().as_binary::<i32>();
                // Undecodable bytes count as a resource without attributes: a rollup is counted
                // from rows that were written whole.
                let decoded = if values.is_null(resource_key) {
                    Vec::new()
                } else {
                    resource_attribute_pairs(values.value(resource_key)).unwrap_or_default()
                };
                let pairs: Vec<_> = decoded
                    .iter()
                    .filter(|(_, value)| value.len() <= MAX_RESOURCE_VALUE)
                    .map(|(key, value)| (self.intern(key), self.intern(value)))
                    .collect();
                let has = |key: &str| pairs.iter().any(|(k, _)| &**k == key);
                let source = self.source_key.as_ref().and_then(|key| pairs.iter().find(|(k, _)| k == key)).map(|(_, v)| Arc::clone(v));
                resource_facts[resource_key] = Some(ResourceFacts {
                    missing_version: !has("service.version"),
                    missing_environment: !has("deployment.environment.name") && !has("deployment.environment"),
                    pairs,
                    source,
                });
            }
            let facts = resource_facts[resource_key].as_ref().expect("set above");
            let span_kind = kind.value(row);
            let is_entry = span_kind == "server" || span_kind == "consumer";
            let is_exit = span_kind == "client" || span_kind == "producer";
            let is_root = parent_span.is_null(row);
            let unmatched = flags.value(row) as u32 & span_flags::UNMATCHED_CLIENT != 0;
            let error = status.value(row) == "error";
            let span_id: [u8; 8] = span_ids.value(row).try_into().expect("8-byte span IDs");
            let parent_id = parent_span.as_fixed_size_binary();
            let source = match self.source_key.clone() {
                Some(key) => match map_value(attributes, row, &key) {
                    Some(value) => Some(self.intern(value)),
                    None => facts.source.clone(),
                },
                None => None,
            };
            let path_span = PathSpan {
                span: span_id,
                parent: (!parent_id.is_null(row)).then(|| parent_id.value(row).try_into().expect("8-byte span IDs")),
                service: Arc::clone(&service_name),
                operation: self.intern(name.value(row)),
                kind: self.intern(span_kind),
                duration_nanos: duration.value(row),
                critical_path_nanos: critical.value(row),
                error,
                source,
            };
            self.paths.push(path_span);
            let http_failed =
                !http_status.is_null(row) && (http_status.value(row) >= 500 || (span_kind == "client" && http_status.value(row) >= 400));
            let (entry, pairs) = self.services.entry((minute, Arc::clone(&service_name))).or_default();
            if entry.spans == 0 {
                (entry.first_seen_unix_nano, entry.last_seen_unix_nano) = (start, start);
            }
            entry.spans += 1;
            entry.first_seen_unix_nano = entry.first_seen_unix_nano.min(start);
            entry.last_seen_unix_nano = entry.last_seen_unix_nano.max(start);
            entry.entry_spans += is_entry as u64;
            entry.root_entry_spans += (is_entry && is_root) as u64;
            entry.orphan_spans += (flags.value(row) as u32 & span_flags::ORPHAN != 0) as u64;
            entry.exit_spans += is_exit as u64;
            entry.unmatched_exit_spans += unmatched as u64;
            entry.error_spans += error as u64;
            entry.missing_version += facts.missing_version as u64;
            entry.missing_environment += facts.missing_environment as u64;
            entry.errors_without_status += (http_failed && !error) as u64;
            entry.server_without_route += (span_kind == "server" && !http_method.is_null(row) && http_route.is_null(row)) as u64;
            entry.internal_like_server += (span_kind == "internal" && !http_method.is_null(row) && !http_route.is_null(row)) as u64;
            entry.internal_like_client +=
                (span_kind == "internal" && (!peer_service.is_null(row) || !server_address.is_null(row) || !db_system.is_null(row))) as u64;
            if pairs.len() < MAX_RESOURCE_PAIRS
                && pairs_added.insert((minute, Arc::as_ptr(&service_name) as *const u8 as usize, resource_key))
            {
                for pair in &facts.pairs {
                    if pairs.len() >= MAX_RESOURCE_PAIRS {
                        break;
                    }
                    if !pairs.contains(pair) {
                        pairs.insert(pair.clone());
                    }
                }
            }
            if !attributes.is_null(row) {
                let offsets = attributes.value_offsets();
                let keys = attributes.keys().as_string::<i32>();
                for i in offsets[row] as usize..offsets[row + 1] as usize {
                    if let Some((old, _)) = DEPRECATED_ATTRIBUTES.iter().find(|(old, _)| *old == keys.value(i)) {
                        *self.deprecated.entry((minute, Arc::clone(&service_name), *old)).or_default() += 1;
                    }
                }
            }
            if is_root && is_entry {
                self.root_starts.entry(Arc::clone(&service_name)).or_default().push(start);
            }
            if is_root {
                let key = (minute, Arc::clone(&service_name), self.intern(name.value(row)), self.intern(span_kind));
                let weight = self.trace.weight;
                let root = self.roots.entry(key).or_default();
                root.0 += weight;
                root.1 += error as u64 * weight;
                root.2 = root.2.saturating_add(duration.value(row).saturating_mul(weight as i64));
            }
            if unmatched {
                let peer = columns.peer(row);
                self.trace.uncovered |= db_system.is_null(row);
                if let Some(peer) = peer {
                    let peer = self.intern(peer);
                    self.trace.unanswered_peers.insert(Arc::clone(&peer));
                    let key = (
                        minute,
                        Arc::clone(&service_name),
                        self.intern(name.value(row)),
                        peer,
                        self.intern(root_service.value(row)),
                        self.intern(root_name.value(row)),
                    );
                    if db_system.is_null(row) {
                        self.in_flight.push((key.clone(), start, start.saturating_add(duration.value(row))));
                    }
                    let first_in_trace = self.trace.unanswered_groups.insert(key.clone());
                    // Traffic, like the answered calls it is compared with: weighted.
                    let weight = self.trace.weight;
                    let totals = self.unanswered.entry(key).or_default();
                    totals.is_database |= !db_system.is_null(row);
                    totals.calls += weight;
                    totals.errors += error as u64 * weight;
                    totals.traces += first_in_trace as u64 * weight;
                    totals.duration_nanos = totals.duration_nanos.saturating_add(duration.value(row).saturating_mul(weight as i64));
                    totals.critical_path_nanos =
                        totals.critical_path_nanos.saturating_add(critical.value(row).saturating_mul(weight as i64));
                }
            }
        }
    }

    /// Counts the trace just read once for each of its services.
    fn end_trace(&mut self) {
        let trace = std::mem::take(&mut self.trace);
        self.paths.end();
        if trace.id.is_none() {
            return;
        }
        let peers: Vec<Arc<str>> = trace.unanswered_peers.into_iter().collect();
        for (service, minute) in trace.services {
            *self.trace_classes.entry((minute, service, trace.whole_shape, peers.clone(), trace.uncovered)).or_default() +=
                trace.weight.max(1);
        }
    }

    /// The rollup, every part ordered by minute.
    pub fn finish(mut self) -> Rollup {
        self.end_trace();
        let adoption = self.adoption();
        let paths = std::mem::take(&mut self.paths).finish();
        let mut rows: Vec<EdgeRow> = self
            .rows
            .into_iter()
            .map(|((minute, entry_service, entry_operation, kind, parent, child), t)| EdgeRow {
                minute_unix_nano: minute,
                entry_service,
                entry_operation,
                kind,
                parent,
                child,
                calls: t.calls,
                errors: t.errors,
                duration_nanos: t.duration_nanos,
                critical_path_nanos: t.critical_path_nanos,
                histogram: t.histogram,
            })
            .collect();
        sort_edges(&mut rows);
        Rollup { evidence: self.evidence.take(), ..Rollup::new(rows, adoption, paths) }
    }

    fn adoption(&mut self) -> AdoptionRollup {
        let text = |s: &Arc<str>| s.to_string();
        let mut out = AdoptionRollup::default();
        for ((minute, service), (counts, pairs)) in self.services.drain() {
            let resource = pairs.iter().map(|(k, v)| (text(k), text(v))).collect();
            out.services.push(ServiceMinute { minute_unix_nano: minute, service: text(&service), counts, resource });
        }
        for ((minute, service, whole_shape, peers, uncovered), traces) in self.trace_classes.drain() {
            let unanswered_peers = peers.iter().map(text).collect();
            out.traces.push(TraceClass {
                minute_unix_nano: minute,
                service: text(&service),
                whole_shape,
                unanswered_peers,
                uncovered,
                traces,
            });
        }
        // Root spans of the peer that started while an unanswered call to it was in flight:
        // evidence that the peer starts a new trace for each call (it does not extract the
        // context). Counted within this part; a block adds up its batches' evidence first.
        for starts in self.root_starts.values_mut() {
            starts.sort_unstable();
        }
        let evidence = Evidence { in_flight: std::mem::take(&mut self.in_flight), root_starts: std::mem::take(&mut self.root_starts) };
        for ((minute, caller, operation, peer, entry_service, entry_operation), roots) in Evidence::count(&[&evidence], None) {
            let key =
                (minute, Arc::from(caller), Arc::from(operation), Arc::from(peer), Arc::from(entry_service), Arc::from(entry_operation));
            if let Some(totals) = self.unanswered.get_mut(&key) {
                totals.roots_in_peer += roots;
            }
        }
        self.evidence = Some(Arc::new(evidence));
        for ((minute, caller, operation, peer, entry_service, entry_operation), t) in self.unanswered.drain() {
            out.unanswered.push(UnansweredMinute {
                minute_unix_nano: minute,
                caller: text(&caller),
                operation: text(&operation),
                peer: text(&peer),
                is_database: t.is_database,
                entry_service: text(&entry_service),
                entry_operation: text(&entry_operation),
                calls: t.calls,
                errors: t.errors,
                traces: t.traces,
                duration_nanos: t.duration_nanos,
                critical_path_nanos: t.critical_path_nanos,
                roots_in_peer: t.roots_in_peer,
            });
        }
        for ((minute, service, operation, kind), (spans, errors, duration_nanos)) in self.roots.drain() {
            out.roots.push(RootMinute {
                minute_unix_nano: minute,
                service: text(&service),
                operation: text(&operation),
                kind: text(&kind),
                spans,
                errors,
                duration_nanos,
            });
        }
        for ((minute, service, key), spans) in self.deprecated.drain() {
            out.deprecated.push(DeprecatedMinute { minute_unix_nano: minute, service: text(&service), key: key.to_string(), spans });
        }
        out.sort();
        out
    }

    pub fn from_batches<'a>(source_key: &str, batches: impl IntoIterator<Item = &'a RecordBatch>) -> Rollup {
        let mut builder = Self::new(source_key);
        for batch in batches {
            builder.add(batch);
        }
        builder.finish()
    }
}

/// A part of the store's rollups: its calls and its adoption facts.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    pub edges: Vec<EdgeRow>,
    pub adoption: AdoptionRollup,
    /// Calling contexts per entry point (ordered by minute).
    pub paths: Vec<PathRow>,
    /// The same rows with their minutes merged, made on first use: a window that covers every
    /// minute of this part reads these instead.
    whole: OnceLock<Arc<Rollup>>,
    /// The first and last minute of the rows (made on first use).
    minutes: OnceLock<(i64, i64)>,
    /// Set on such merged rows: every window this part is read for covers its minutes.
    merged: bool,
    /// Kept by rollups of assembled batches until their block is written: the unanswered calls
    /// and root spans behind `roots_in_peer`, so that the block counts the pairs across batches.
    evidence: Option<Arc<Evidence>>,
}

/// Unanswered calls to a named peer with the time they were in flight, and the start times of
/// root SERVER and CONSUMER spans per service (sorted).
#[derive(Debug, Default)]
struct Evidence {
    in_flight: Vec<(UnansweredKey, i64, i64)>,
    root_starts: HashMap<Arc<str>, Vec<i64>>,
}

impl Evidence {
    /// Per unanswered group (dated `into` when given): the roots of its peer that started while
    /// one of its calls was in flight.
    fn count<'a>(parts: &[&'a Evidence], into: Option<i64>) -> HashMap<(i64, &'a str, &'a str, &'a str, &'a str, &'a str), u64> {
        let mut starts: HashMap<&str, Vec<i64>> = HashMap::new();
        for part in parts {
            for (service, times) in &part.root_starts {
                starts.entry(service).or_default().extend(times);
            }
        }
        if parts.len() > 1 {
            starts.values_mut().for_each(|times| times.sort_unstable());
        }
        let mut out = HashMap::new();
        for ((minute, caller, operation, peer, entry_service, entry_operation), from, to) in parts.iter().flat_map(|p| &p.in_flight) {
            let Some(times) = starts.get(&**peer) else { continue };
            let during = times.partition_point(|s| s <= to) - times.partition_point(|s| s < from);
            let key = (into.unwrap_or(*minute), &**caller, &**operation, &**peer, &**entry_service, &**entry_operation);
            *out.entry(key).or_default() += during as u64;
        }
        out
    }
}

impl Rollup {
    pub fn new(edges: Vec<EdgeRow>, adoption: AdoptionRollup, paths: Vec<PathRow>) -> Self {
        Self { edges, adoption, paths, whole: OnceLock::new(), minutes: OnceLock::new(), merged: false, evidence: None }
    }

    /// The rows to read for the minutes [first, last]: these, or when the window covers every
    /// minute of the part, the same totals in one row per key (dated at the part's first minute).
    pub fn for_window(&self, first: i64, last: i64) -> &Rollup {
        if self.merged {
            return self;
        }
        let (from, to) = self.minutes();
        if first <= from && to <= last { self.whole.get_or_init(|| Arc::new(self.merged())) } else { self }
    }

    /// The first and last minute of any row (found once).
    fn minutes(&self) -> (i64, i64) {
        *self.minutes.get_or_init(|| self.minute_range())
    }

    fn minute_range(&self) -> (i64, i64) {
        let a = &self.adoption;
        let minutes = self
            .edges
            .iter()
            .map(|r| r.minute_unix_nano)
            .chain(a.services.iter().map(|r| r.minute_unix_nano))
            .chain(a.traces.iter().map(|r| r.minute_unix_nano))
            .chain(a.unanswered.iter().map(|r| r.minute_unix_nano))
            .chain(a.roots.iter().map(|r| r.minute_unix_nano))
            .chain(a.deprecated.iter().map(|r| r.minute_unix_nano))
            .chain(self.paths.iter().map(|r| r.minute_unix_nano));
        minutes.fold((i64::MAX, i64::MIN), |(lo, hi), m| (lo.min(m), hi.max(m)))
    }

    /// The rows merged across minutes (dated at the first; made once), and the first and last
    /// minute: the form to read for a window that covers them all.
    pub(crate) fn merged_form(&self) -> (i64, i64, Arc<Rollup>) {
        let whole = Arc::clone(self.whole.get_or_init(|| Arc::new(self.merged())));
        let (from, to) = self.minutes();
        (from, to, whole)
    }

    /// Takes `whole`, made earlier from the same rows over minutes [first, last], as its
    /// merged form, instead of merging them again.
    pub(crate) fn share_merged(&self, whole: &Arc<Rollup>, first: i64, last: i64) {
        let _ = self.whole.set(Arc::clone(whole));
        let _ = self.minutes.set((first, last));
    }

    /// Memory the rows take, estimated: their structs, strings and histograms (names shared
    /// between rows are counted once per row as a pointer).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let strings = |items: &[String]| items.iter().map(|s| s.capacity()).sum::<usize>() + items.len() * size_of::<String>();
        let edges = self.edges.iter().map(|r| size_of::<EdgeRow>() + r.histogram.heap_bytes()).sum::<usize>();
        let paths = self
            .paths
            .iter()
            .map(|r| size_of::<PathRow>() + r.latency.heap_bytes() + r.per_trace_spans.heap_bytes() + r.per_trace_critical.heap_bytes())
            .sum::<usize>();
        let a = &self.adoption;
        let services = a
            .services
            .iter()
            .map(|r| {
                size_of::<ServiceMinute>()
                    + r.service.capacity()
                    + r.resource.iter().map(|(k, v)| 2 * size_of::<String>() + k.capacity() + v.capacity()).sum::<usize>()
            })
            .sum::<usize>();
        let traces = a.traces.iter().map(|r| size_of::<TraceClass>() + r.service.capacity() + strings(&r.unanswered_peers)).sum::<usize>();
        let unanswered = a
            .unanswered
            .iter()
            .map(|r| {
                size_of::<UnansweredMinute>()
                    + [&r.caller, &r.operation, &r.peer, &r.entry_service, &r.entry_operation].iter().map(|s| s.capacity()).sum::<usize>()
            })
            .sum::<usize>();
        let roots = a
            .roots
            .iter()
            .map(|r| size_of::<RootMinute>() + r.service.capacity() + r.operation.capacity() + r.kind.capacity())
            .sum::<usize>();
        let deprecated =
            a.deprecated.iter().map(|r| size_of::<DeprecatedMinute>() + r.service.capacity() + r.key.capacity()).sum::<usize>();
        edges + paths + services + traces + unanswered + roots + deprecated
    }

    fn merged(&self) -> Rollup {
        let (from, _) = self.minutes();
        Rollup { merged: true, ..Rollup::combine([self], Some(from)) }
    }

    /// The rollup of parts that hold disjoint traces (each trace wholly in one part): their
    /// rows added up per key and minute, or all dated `into` (minutes merged too).
    pub fn combine<'a>(parts: impl IntoIterator<Item = &'a Rollup> + Clone, into: Option<i64>) -> Rollup {
        let at = |minute: i64| into.unwrap_or(minute);
        type EdgeKey<'b> = (i64, &'b Arc<str>, &'b Arc<str>, EdgeKind, &'b Option<Arc<str>>, &'b Arc<str>);
        let mut edges: HashMap<EdgeKey, EdgeRow> = HashMap::new();
        for row in parts.clone().into_iter().flat_map(|p| &p.edges) {
            let key = (at(row.minute_unix_nano), &row.entry_service, &row.entry_operation, row.kind, &row.parent, &row.child);
            match edges.get_mut(&key) {
                Some(total) => total.add(row),
                None => {
                    edges.insert(key, EdgeRow { minute_unix_nano: key.0, ..row.clone() });
                }
            }
        }
        let adoptions = || parts.clone().into_iter().map(|p| &p.adoption);
        let mut services: HashMap<(i64, &str), ServiceMinute> = HashMap::new();
        for row in adoptions().flat_map(|a| &a.services) {
            let minute = at(row.minute_unix_nano);
            let total = services.entry((minute, &row.service)).or_insert_with(|| ServiceMinute {
                minute_unix_nano: minute,
                service: row.service.clone(),
                counts: ServiceCounts::default(),
                resource: Vec::new(),
            });
            total.counts.merge(&row.counts);
            for pair in &row.resource {
                if total.resource.len() < MAX_RESOURCE_PAIRS && !total.resource.contains(pair) {
                    total.resource.push(pair.clone());
                }
            }
        }
        let mut traces: HashMap<(i64, &str, bool, &[String], bool), TraceClass> = HashMap::new();
        for row in adoptions().flat_map(|a| &a.traces) {
            let minute = at(row.minute_unix_nano);
            traces
                .entry((minute, &row.service, row.whole_shape, &row.unanswered_peers, row.uncovered))
                .or_insert_with(|| TraceClass { minute_unix_nano: minute, traces: 0, ..row.clone() })
                .traces += row.traces;
        }
        let mut unanswered: HashMap<(i64, (&str, &str, &str, &str, &str)), UnansweredMinute> = HashMap::new();
        for row in adoptions().flat_map(|a| &a.unanswered) {
            let key = (at(row.minute_unix_nano), row.key());
            match unanswered.get_mut(&key) {
                Some(total) => total.add(row),
                None => {
                    unanswered.insert(key, UnansweredMinute { minute_unix_nano: key.0, ..row.clone() });
                }
            }
        }
        let mut roots: HashMap<(i64, (&str, &str, &str)), RootMinute> = HashMap::new();
        for row in adoptions().flat_map(|a| &a.roots) {
            let key = (at(row.minute_unix_nano), row.key());
            match roots.get_mut(&key) {
                Some(total) => total.add(row),
                None => {
                    roots.insert(key, RootMinute { minute_unix_nano: key.0, ..row.clone() });
                }
            }
        }
        let mut deprecated: HashMap<(i64, &str, &str), DeprecatedMinute> = HashMap::new();
        for row in adoptions().flat_map(|a| &a.deprecated) {
            let minute = at(row.minute_unix_nano);
            deprecated
                .entry((minute, &row.service, &row.key))
                .or_insert_with(|| DeprecatedMinute { minute_unix_nano: minute, spans: 0, ..row.clone() })
                .spans += row.spans;
        }
        let mut adoption = AdoptionRollup {
            services: services.into_values().collect(),
            traces: traces.into_values().collect(),
            unanswered: unanswered.into_values().collect(),
            roots: roots.into_values().collect(),
            deprecated: deprecated.into_values().collect(),
        };
        // With every part's evidence, calls and roots that fell into different parts pair up too.
        let evidence: Option<Vec<&Evidence>> = parts.clone().into_iter().map(|p| p.evidence.as_deref()).collect();
        if let Some(evidence) = evidence {
            let roots = Evidence::count(&evidence, into);
            for row in &mut adoption.unanswered {
                let key = (
                    row.minute_unix_nano,
                    row.caller.as_str(),
                    row.operation.as_str(),
                    row.peer.as_str(),
                    row.entry_service.as_str(),
                    row.entry_operation.as_str(),
                );
                let counted = roots.get(&key).copied().unwrap_or(0);
                row.roots_in_peer = counted;
            }
        }
        adoption.sort();
        let mut edges: Vec<EdgeRow> = edges.into_values().collect();
        sort_edges(&mut edges);
        let paths = merge_paths(parts.into_iter().flat_map(|p| &p.paths), into, true);
        Rollup::new(edges, adoption, paths)
    }
}

fn sort_edges(rows: &mut [EdgeRow]) {
    rows.sort_by(|a, b| {
        (a.minute_unix_nano, &a.entry_service, &a.entry_operation, a.kind, &a.parent, &a.child).cmp(&(
            b.minute_unix_nano,
            &b.entry_service,
            &b.entry_operation,
            b.kind,
            &b.parent,
            &b.child,
        ))
    });
}

/// Span counts of one service in one minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCounts {
    pub spans: u64,
    pub entry_spans: u64,
    pub root_entry_spans: u64,
    pub orphan_spans: u64,
    pub exit_spans: u64,
    pub unmatched_exit_spans: u64,
    pub error_spans: u64,
    pub missing_version: u64,
    pub missing_environment: u64,
    pub errors_without_status: u64,
    pub server_without_route: u64,
    pub internal_like_server: u64,
    pub internal_like_client: u64,
    pub first_seen_unix_nano: i64,
    pub last_seen_unix_nano: i64,
}

impl ServiceCounts {
    pub fn merge(&mut self, other: &ServiceCounts) {
        if other.spans == 0 {
            return;
        }
        if self.spans == 0 {
            (self.first_seen_unix_nano, self.last_seen_unix_nano) = (other.first_seen_unix_nano, other.last_seen_unix_nano);
        }
        self.first_seen_unix_nano = self.first_seen_unix_nano.min(other.first_seen_unix_nano);
        self.last_seen_unix_nano = self.last_seen_unix_nano.max(other.last_seen_unix_nano);
        self.spans += other.spans;
        self.entry_spans += other.entry_spans;
        self.root_entry_spans += other.root_entry_spans;
        self.orphan_spans += other.orphan_spans;
        self.exit_spans += other.exit_spans;
        self.unmatched_exit_spans += other.unmatched_exit_spans;
        self.error_spans += other.error_spans;
        self.missing_version += other.missing_version;
        self.missing_environment += other.missing_environment;
        self.errors_without_status += other.errors_without_status;
        self.server_without_route += other.server_without_route;
        self.internal_like_server += other.internal_like_server;
        self.internal_like_client += other.internal_like_client;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceMinute {
    pub minute_unix_nano: i64,
    pub service: String,
    pub counts: ServiceCounts,
    /// Distinct resource attributes of its spans (at most 64; values up to 256 bytes).
    pub resource: Vec<(String, String)>,
}

/// Traces of a service that share their health: counted in the minute of the service's first
/// span in each trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceClass {
    pub minute_unix_nano: i64,
    pub service: String,
    /// One root, no orphan.
    pub whole_shape: bool,
    /// The peers the trace's unanswered client calls name: the trace is broken if one of them
    /// turns out to be an instrumented service.
    pub unanswered_peers: Vec<String>,
    /// Some unanswered call is not to a database.
    pub uncovered: bool,
    pub traces: u64,
}

/// Client calls no server answered, by caller operation, peer and entry point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnansweredMinute {
    pub minute_unix_nano: i64,
    pub caller: String,
    pub operation: String,
    pub peer: String,
    pub is_database: bool,
    pub entry_service: String,
    pub entry_operation: String,
    pub calls: u64,
    pub errors: u64,
    /// Traces with such calls, counted in the minute of the first one.
    pub traces: u64,
    pub duration_nanos: i64,
    pub critical_path_nanos: i64,
    /// Root SERVER/CONSUMER spans of the peer that started while one of these calls was in
    /// flight (counted within each part of the store; absent from rollups written before).
    #[serde(default)]
    pub roots_in_peer: u64,
}

impl UnansweredMinute {
    /// What the rows are grouped by, besides the minute.
    pub fn key(&self) -> (&str, &str, &str, &str, &str) {
        (&self.caller, &self.operation, &self.peer, &self.entry_service, &self.entry_operation)
    }

    /// Adds the totals of a row with the same key.
    pub fn add(&mut self, other: &UnansweredMinute) {
        self.is_database |= other.is_database;
        self.calls += other.calls;
        self.errors += other.errors;
        self.traces += other.traces;
        self.duration_nanos = self.duration_nanos.saturating_add(other.duration_nanos);
        self.critical_path_nanos = self.critical_path_nanos.saturating_add(other.critical_path_nanos);
        self.roots_in_peer += other.roots_in_peer;
    }
}

/// Spans without a parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMinute {
    pub minute_unix_nano: i64,
    pub service: String,
    pub operation: String,
    pub kind: String,
    pub spans: u64,
    pub errors: u64,
    pub duration_nanos: i64,
}

impl RootMinute {
    /// What the rows are grouped by, besides the minute.
    pub fn key(&self) -> (&str, &str, &str) {
        (&self.service, &self.operation, &self.kind)
    }

    /// Adds the totals of a row with the same key.
    pub fn add(&mut self, other: &RootMinute) {
        self.spans += other.spans;
        self.errors += other.errors;
        self.duration_nanos = self.duration_nanos.saturating_add(other.duration_nanos);
    }
}

/// Spans carrying an attribute name that newer conventions replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprecatedMinute {
    pub minute_unix_nano: i64,
    pub service: String,
    pub key: String,
    pub spans: u64,
}

/// The coverage report's facts, per minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptionRollup {
    pub services: Vec<ServiceMinute>,
    pub traces: Vec<TraceClass>,
    pub unanswered: Vec<UnansweredMinute>,
    pub roots: Vec<RootMinute>,
    pub deprecated: Vec<DeprecatedMinute>,
}

impl AdoptionRollup {
    fn sort(&mut self) {
        self.services.sort_by(|a, b| (a.minute_unix_nano, &a.service).cmp(&(b.minute_unix_nano, &b.service)));
        self.traces.sort_by_key(|t| t.minute_unix_nano);
        self.unanswered.sort_by_key(|u| u.minute_unix_nano);
        self.roots.sort_by_key(|r| r.minute_unix_nano);
        self.deprecated.sort_by_key(|d| d.minute_unix_nano);
    }
}

/// Rows of `rows` whose minute is within [first, last], for rows ordered by minute.
pub fn in_minutes<T>(rows: &[T], first: i64, last: i64, minute: impl Fn(&T) -> i64) -> &[T] {
    let from = rows.partition_point(|r| minute(r) < first);
    let to = rows.partition_point(|r| minute(r) <= last);
    &rows[from..to.max(from)]
}

/// Writes the adoption rollup as JSON (synced; under a temporary name first).
pub fn write_adoption(path: &Path, rollup: &AdoptionRollup) -> Result<(), StoreError> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = std::io::BufWriter::new(fs::File::create(&temporary)?);
        serde_json::to_writer(&mut file, rollup).map_err(|e| StoreError::Invalid(e.to_string()))?;
        std::io::Write::flush(&mut file)?;
        file.get_ref().sync_all()?;
    }
    fs::rename(&temporary, path)?;
    Ok(())
}

pub fn read_adoption(path: &Path) -> Result<AdoptionRollup, StoreError> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(format!("rollup {}: {e}", path.display())))
}

static ROLLUP_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("minute_unix_nano", DataType::Int64, false),
        Field::new("entry_service", DataType::Utf8, false),
        Field::new("entry_operation", DataType::Utf8, false),
        Field::new("kind", DataType::Int32, false),
        Field::new("parent", DataType::Utf8, true),
        Field::new("child", DataType::Utf8, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("duration_nanos", DataType::Int64, false),
        Field::new("critical_path_nanos", DataType::Int64, false),
        Field::new("histogram", DataType::Binary, false),
    ]))
});

/// Writes rollup rows as a small Parquet file (synced; written under a temporary name first).
pub fn write_rollup(path: &Path, rows: &[EdgeRow]) -> Result<(), StoreError> {
    let mut minute = Int64Builder::new();
    let (mut entry_service, mut entry_operation, mut parent, mut child) =
        (StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut kind = Int32Builder::new();
    let (mut calls, mut errors, mut duration, mut critical) =
        (Int64Builder::new(), Int64Builder::new(), Int64Builder::new(), Int64Builder::new());
    let mut histogram = BinaryBuilder::new();
    for row in rows {
        minute.append_value(row.minute_unix_nano);
        entry_service.append_value(&row.entry_service);
        entry_operation.append_value(&row.entry_operation);
        kind.append_value(row.kind as i32);
        parent.append_option(row.parent.as_deref());
        child.append_value(&row.child);
        calls.append_value(row.calls as i64);
        errors.append_value(row.errors as i64);
        duration.append_value(row.duration_nanos);
        critical.append_value(row.critical_path_nanos);
        histogram.append_value(row.histogram.to_bytes());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(minute.finish()),
        Arc::new(entry_service.finish()),
        Arc::new(entry_operation.finish()),
        Arc::new(kind.finish()),
        Arc::new(parent.finish()),
        Arc::new(child.finish()),
        Arc::new(calls.finish()),
        Arc::new(errors.finish()),
        Arc::new(duration.finish()),
        Arc::new(critical.finish()),
        Arc::new(histogram.finish()),
    ];
    write_parquet(path, RecordBatch::try_new(Arc::clone(&ROLLUP_SCHEMA), columns)?)
}

/// Writes one batch as a small zstd Parquet file, under a temporary name first, synced.
pub(crate) fn write_parquet(path: &Path, batch: RecordBatch) -> Result<(), StoreError> {
    let temporary = path.with_extension("tmp");
    {
        let properties = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
        let mut writer = ArrowWriter::try_new(fs::File::create(&temporary)?, batch.schema(), Some(properties))?;
        writer.write(&batch)?;
        writer.into_inner()?.sync_all()?;
    }
    fs::rename(&temporary, path)?;
    Ok(())
}

/// One shared copy of each name read.
#[derive(Default)]
pub(crate) struct Names(HashSet<Arc<str>>);

impl Names {
    pub(crate) fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(existing) = self.0.get(name) {
            return Arc::clone(existing);
        }
        let name: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&name));
        name
    }
}

/// Reads rollup rows written by [`write_rollup`].
pub fn read_rollup(path: &Path) -> Result<Vec<EdgeRow>, StoreError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path)?)?.build()?;
    let mut names = Names::default();
    let mut intern = |name: &str| names.get(name);
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        let minute = batch.column(0).as_primitive::<Int64Type>();
        let entry_service = batch.column(1).as_string::<i32>();
        let entry_operation = batch.column(2).as_string::<i32>();
        let kind = batch.column(3).as_primitive::<Int32Type>();
        let parent = batch.column(4).as_string::<i32>();
        let child = batch.column(5).as_string::<i32>();
        let calls = batch.column(6).as_primitive::<Int64Type>();
        let errors = batch.column(7).as_primitive::<Int64Type>();
        let duration = batch.column(8).as_primitive::<Int64Type>();
        let critical = batch.column(9).as_primitive::<Int64Type>();
        let histogram = batch.column(10).as_binary::<i32>();
        for row in 0..batch.num_rows() {
            let kind = EdgeKind::from_code(kind.value(row))
                .ok_or_else(|| StoreError::Corrupt(format!("rollup {}: unknown kind {}", path.display(), kind.value(row))))?;
            rows.push(EdgeRow {
                minute_unix_nano: minute.value(row),
                entry_service: intern(entry_service.value(row)),
                entry_operation: intern(entry_operation.value(row)),
                kind,
                parent: text(parent, row).map(&mut intern),
                child: intern(child.value(row)),
                calls: calls.value(row) as u64,
                errors: errors.value(row) as u64,
                duration_nanos: duration.value(row),
                critical_path_nanos: critical.value(row),
                histogram: LatencyHistogram::from_bytes(histogram.value(row)),
            });
        }
    }
    rows.sort_by_key(|r| r.minute_unix_nano);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use clew_model::{Attribute, InstrumentationScope, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, Value, assemble_borrowed};

    use super::*;
    use crate::block::{BatchBuilder, upgrade};
    use crate::paths::REQUEST_PATH;

    const T0: u64 = 1_700_000_000_000_000_000;

    fn span(service: &str, id: u8, parent: Option<u8>, kind: SpanKind, start: u64, millis: u64, attributes: Vec<Attribute>) -> Span {
        Span {
            trace_id: TraceId([9; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            trace_state: String::new(),
            flags: 0,
            name: format!("op{id}"),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + millis * 1_000_000,
            attributes,
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: if id == 3 { StatusCode::Error } else { StatusCode::Unset },
            status_message: String::new(),
            resource: Arc::new(Resource {
                attributes: vec![Attribute::new("service.name", Value::Str(service.into()))],
                ..Default::default()
            }),
            scope: Arc::new(InstrumentationScope::default()),
        }
    }

    #[test]
    fn roots_of_the_peer_started_during_an_unanswered_call_are_counted() {
        let peer = vec![Attribute::new("peer.service", Value::Str("api".into()))];
        let in_trace = |id: u8, mut spans: Vec<Span>| {
            for span in &mut spans {
                span.trace_id = TraceId([id; 16]);
            }
            spans
        };
        // The gateway calls the api for 50 ms; the api answers in traces of its own.
        let call = in_trace(
            1,
            vec![
                span("gateway", 1, None, SpanKind::Server, T0, 60, vec![]),
                span("gateway", 2, Some(1), SpanKind::Client, T0 + 5_000_000, 50, peer),
            ],
        );
        let during = in_trace(2, vec![span("api", 7, None, SpanKind::Server, T0 + 6_000_000, 40, vec![])]);
        let after = in_trace(3, vec![span("api", 8, None, SpanKind::Server, T0 + 90_000_000, 40, vec![])]);
        let rollup_of = |traces: &[&Vec<Span>]| {
            let mut builder = BatchBuilder::default();
            for trace in traces {
                builder.push_trace(&assemble_borrowed(trace), 0);
            }
            RollupBuilder::from_batches("traffic.source", [&builder.finish()])
        };
        let roots = |rollup: &Rollup| {
            let unanswered: Vec<_> = rollup.adoption.unanswered.iter().filter(|u| u.peer == "api").collect();
            assert_eq!((unanswered.len(), unanswered[0].calls), (1, 1), "{:?}", rollup.adoption.unanswered);
            unanswered[0].roots_in_peer
        };
        assert_eq!(roots(&rollup_of(&[&call, &during, &after])), 1, "the root that started after the call is not counted");
        // The call and the roots assembled in different batches: each alone sees no root, the
        // block they are written to pairs them.
        let (calls, answers) = (rollup_of(&[&call]), rollup_of(&[&during, &after]));
        assert_eq!(roots(&calls), 0);
        assert_eq!(roots(&Rollup::combine([&calls, &answers], None)), 1);
        // A rollup read back from its files has no evidence left: parts then add up.
        let read = Rollup::new(calls.edges.clone(), calls.adoption.clone(), calls.paths.clone());
        assert_eq!(roots(&Rollup::combine([&read, &answers], None)), 0);
    }

    #[test]
    fn a_sampled_trace_counts_as_the_traces_it_stands_for() {
        // Two traces of the same entry: one kept with probability 1/4 (tracestate `ot=th:c`)
        // whose request calls the api once; one not sampled, calling the api five times.
        let sampled_trace = |id: u8, trace_state: &str, calls: u8| {
            let mut spans = vec![span("gateway", 1, None, SpanKind::Server, T0, 100, vec![])];
            for call in 0..calls {
                spans.push(span("api", 10 + call, Some(1), SpanKind::Server, T0 + 1_000_000, 10, vec![]));
            }
            for span in &mut spans {
                span.trace_id = TraceId([id; 16]);
                span.name = if span.span_id.0[0] == 1 { "GET /".into() } else { "work".into() };
            }
            spans[0].trace_state = trace_state.to_string();
            spans
        };
        let (quarter, whole) = (sampled_trace(1, "ot=th:c", 1), sampled_trace(2, "", 5));
        let mut builder = BatchBuilder::default();
        builder.push_trace(&assemble_borrowed(&quarter), 0);
        builder.push_trace(&assemble_borrowed(&whole), 0);
        let batch = builder.finish();
        let weights = batch.column_by_name(ADJUSTED_COUNT).unwrap().as_primitive::<Int32Type>();
        assert_eq!(weights.values().to_vec(), vec![4, 4, 1, 1, 1, 1, 1, 1]);
        let rollup = RollupBuilder::from_batches("traffic.source", [&batch]);

        let calls = |kind: EdgeKind, child: &str| {
            rollup.edges.iter().filter(|r| r.kind == kind && &*r.child == child).map(|r| r.calls).sum::<u64>()
        };
        assert_eq!(calls(EdgeKind::Root, "gateway"), 4 + 1, "requests: 4 stood for by the sampled trace, 1 kept whole");
        assert_eq!(calls(EdgeKind::Call, "api"), 4 + 5);
        let call = rollup.edges.iter().find(|r| r.kind == EdgeKind::Call).unwrap();
        assert_eq!(call.histogram.count(), 9, "the latency distribution is weighted too");
        assert_eq!(call.duration_nanos, 9 * 10_000_000);
        assert_eq!(rollup.adoption.roots[0].spans, 5);

        // Per request: the api is called 1 time in 4 of 5 requests and 5 times in 1 of 5.
        let request = rollup.paths.iter().find(|r| r.path == REQUEST_PATH).unwrap();
        let api = rollup.paths.iter().find(|r| &*r.service == "api").unwrap();
        assert_eq!((request.traces, api.traces, api.spans), (5, 5, 9));
        assert_eq!((request.spans, request.weight_squares, api.weight_squares), (2 * 4 + 6, 2 * 16 + 6, 16 + 5), "Σw and Σw²");
        assert_eq!(api.per_trace_spans.count(), 5);
        assert!((api.per_trace_spans.quantile(0.8) - 1.0).abs() < 0.05, "four requests in five call it once");
        assert!((api.per_trace_spans.quantile(0.95) - 5.0).abs() < 0.15);

        // Rows of a block written before the adjusted count existed count once.
        let old = upgrade(batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>()).unwrap()).unwrap();
        let unweighted = RollupBuilder::from_batches("traffic.source", [&old]);
        assert_eq!(unweighted.paths.iter().find(|r| r.path == REQUEST_PATH).unwrap().traces, 2);
    }

    #[test]
    fn each_span_is_counted_as_the_call_it_is() {
        let db = vec![Attribute::new("db.system", Value::Str("postgresql".into()))];
        let queue = vec![Attribute::new("messaging.destination.name", Value::Str("orders".into()))];
        let trace = vec![
            span("gateway", 1, None, SpanKind::Server, T0, 100, vec![]),
            span("gateway", 2, Some(1), SpanKind::Client, T0 + 1_000_000, 90, vec![]),
            span("api", 3, Some(2), SpanKind::Server, T0 + 2_000_000, 80, vec![Attribute::new("http.status_code", Value::Int(500))]),
            span("api", 4, Some(3), SpanKind::Client, T0 + 3_000_000, 20, db),
            // A minute later: the same trace's message that nobody instrumented consumes.
            span("api", 5, Some(3), SpanKind::Producer, T0 + 60_000_000_000, 1, queue),
        ];
        let mut builder = BatchBuilder::default();
        builder.push_trace(&assemble_borrowed(&trace), 0);
        let rollup = RollupBuilder::from_batches("traffic.source", [&builder.finish()]);
        let rows = rollup.edges.clone();
        let find = |kind: EdgeKind, parent: Option<&str>, child: &str| {
            rows.iter().filter(|r| r.kind == kind && r.parent.as_deref() == parent && &*r.child == child).collect::<Vec<_>>()
        };
        let user = find(EdgeKind::Root, None, "gateway");
        assert_eq!((user.len(), user[0].calls, user[0].errors), (1, 1, 0));
        let call = find(EdgeKind::Call, Some("gateway"), "api");
        assert_eq!((call[0].calls, call[0].errors, call[0].duration_nanos), (1, 1, 80_000_000));
        assert!((call[0].histogram.quantile(0.5) - 80e6).abs() < 80e6 * 0.023);
        assert_eq!(find(EdgeKind::Virtual, Some("api"), "postgresql")[0].calls, 1);
        let late = find(EdgeKind::Virtual, Some("api"), "orders");
        assert_eq!(late[0].minute_unix_nano - user[0].minute_unix_nano, ROLLUP_BUCKET_NANOS, "bucketed by the span's own start");
        let present: u64 = rows.iter().filter(|r| r.kind == EdgeKind::Present).map(|r| r.calls).sum();
        assert_eq!(present, 5);
        assert!(rows.iter().all(|r| &*r.entry_service == "gateway" && &*r.entry_operation == "op1"));
        // The gateway's client span was answered by the api: no virtual node for it.
        assert_eq!(rows.iter().filter(|r| r.kind == EdgeKind::Virtual).count(), 2);
        assert!(rows.windows(2).all(|w| w[0].minute_unix_nano <= w[1].minute_unix_nano));

        // The coverage report's facts of the same trace.
        let adoption = &rollup.adoption;
        let service = |name: &str| {
            adoption.services.iter().filter(|s| s.service == name).fold(ServiceCounts::default(), |mut total, s| {
                total.merge(&s.counts);
                total
            })
        };
        let (gateway, api) = (service("gateway"), service("api"));
        assert_eq!((gateway.spans, gateway.entry_spans, gateway.root_entry_spans, gateway.exit_spans), (2, 1, 1, 1));
        assert_eq!((api.spans, api.exit_spans, api.unmatched_exit_spans, api.error_spans), (3, 2, 2, 1));
        assert_eq!((api.missing_version, api.missing_environment), (3, 3), "no service.version or environment on these resources");
        assert_eq!(api.first_seen_unix_nano, (T0 + 2_000_000) as i64);
        assert_eq!(api.last_seen_unix_nano, (T0 + 60_000_000_000) as i64);
        assert!(adoption.services.iter().any(|s| s.resource.contains(&("service.name".into(), "api".into()))));
        assert_eq!(adoption.traces.len(), 2, "one class per service of the trace");
        for class in &adoption.traces {
            assert!(class.whole_shape && class.uncovered && class.traces == 1);
            assert_eq!(class.unanswered_peers, ["orders", "postgresql"]);
        }
        let database = adoption.unanswered.iter().find(|u| u.peer == "postgresql").unwrap();
        assert!(database.is_database && database.caller == "api" && database.operation == "op4" && database.traces == 1);
        assert_eq!((database.entry_service.as_str(), database.entry_operation.as_str()), ("gateway", "op1"));
        assert!(!adoption.unanswered.iter().find(|u| u.peer == "orders").unwrap().is_database);
        assert_eq!(adoption.roots.len(), 1);
        assert_eq!(
            (adoption.roots[0].service.as_str(), adoption.roots[0].kind.as_str(), adoption.roots[0].spans),
            ("gateway", "server", 1)
        );
        assert_eq!(adoption.deprecated.len(), 1);
        assert_eq!((adoption.deprecated[0].service.as_str(), adoption.deprecated[0].key.as_str()), ("api", "http.status_code"));

        // A window over every minute reads the merged rows: the same totals, one row per key.
        let (first, last) = (user[0].minute_unix_nano, late[0].minute_unix_nano);
        assert!(std::ptr::eq(rollup.for_window(first, last - 1), &rollup), "a window that misses a minute reads the minutes");
        let whole = rollup.for_window(first, last);
        assert!(!std::ptr::eq(whole, &rollup));
        assert!(whole.edges.len() < rows.len() && whole.edges.iter().all(|r| r.minute_unix_nano == first));
        let calls = |rows: &[EdgeRow], kind: EdgeKind| rows.iter().filter(|r| r.kind == kind).map(|r| r.calls).sum::<u64>();
        for kind in [EdgeKind::Present, EdgeKind::Root, EdgeKind::Call, EdgeKind::Virtual] {
            assert_eq!(calls(&whole.edges, kind), calls(&rows, kind), "{kind:?}");
        }
        let merged_api = whole.adoption.services.iter().find(|s| s.service == "api").unwrap();
        assert_eq!(merged_api.counts, api);
        assert_eq!(whole.adoption.traces.len(), 2);
        assert_eq!(whole.adoption.unanswered.iter().map(|u| u.calls).sum::<u64>(), 2);

        let path = std::env::temp_dir().join(format!("clew-rollup-test-{}.rollup.parquet", std::process::id()));
        write_rollup(&path, &rows).unwrap();
        let read = read_rollup(&path).unwrap();
        let _ = fs::remove_file(&path);
        assert_eq!(read.len(), rows.len());
        for row in &rows {
            assert!(read.contains(row), "{row:?} survives the file");
        }
        let path = std::env::temp_dir().join(format!("clew-rollup-test-{}.adoption.json", std::process::id()));
        write_adoption(&path, adoption).unwrap();
        assert_eq!(&read_adoption(&path).unwrap(), adoption);
        let _ = fs::remove_file(&path);
    }
}
