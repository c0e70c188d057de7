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

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use clew_model::{LatencyHistogram, span_flags};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int32Builder, Int64Builder, MapArray, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::StoreError;

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

#[derive(Default)]
struct Totals {
    calls: u64,
    errors: u64,
    duration_nanos: i64,
    critical_path_nanos: i64,
    histogram: LatencyHistogram,
}

type Key = (i64, Arc<str>, Arc<str>, EdgeKind, Option<Arc<str>>, Arc<str>);

/// Gathers rollup rows from span-table batches.
#[derive(Default)]
pub struct RollupBuilder {
    rows: HashMap<Key, Totals>,
    names: HashSet<Arc<str>>,
}

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

impl RollupBuilder {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(existing) = self.names.get(name) {
            return Arc::clone(existing);
        }
        let name: Arc<str> = Arc::from(name);
        self.names.insert(Arc::clone(&name));
        name
    }

    /// Adds the calls of every row of a span-table batch.
    pub fn add(&mut self, batch: &RecordBatch) {
        let service = column(batch, "service_name").as_string::<i32>();
        let kind = column(batch, "kind").as_string::<i32>();
        let parent_span = column(batch, "parent_span_id");
        let parent_service = column(batch, "parent_service").as_string::<i32>();
        let flags = column(batch, "span_flags").as_primitive::<Int32Type>();
        let peer_service = column(batch, "peer_service").as_string::<i32>();
        let server_address = column(batch, "server_address").as_string::<i32>();
        let db_system = column(batch, "db_system").as_string::<i32>();
        let attributes = column(batch, "attributes").as_map();
        let status = column(batch, "status_code").as_string::<i32>();
        let duration = column(batch, "duration_nanos").as_primitive::<Int64Type>();
        let critical = column(batch, "critical_path_nanos").as_primitive::<Int64Type>();
        let root_service = column(batch, "trace_root_service").as_string::<i32>();
        let root_name = column(batch, "trace_root_name").as_string::<i32>();
        let trace_start = column(batch, "trace_start_unix_nano").as_primitive::<Int64Type>();
        let offset = column(batch, "start_offset_nanos").as_primitive::<Int64Type>();
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
            let count = |builder: &mut Self, edge: EdgeKind, parent: Option<Arc<str>>, child: Arc<str>| {
                let totals = builder
                    .rows
                    .entry((minute, Arc::clone(&entry_service), Arc::clone(&entry_operation), edge, parent, child))
                    .or_default();
                totals.calls += 1;
                totals.errors += error as u64;
                totals.duration_nanos = totals.duration_nanos.saturating_add(nanos);
                totals.critical_path_nanos = totals.critical_path_nanos.saturating_add(on_path);
                if edge != EdgeKind::Present {
                    totals.histogram.record(nanos);
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
                let peer = text(peer_service, row)
                    .or_else(|| text(server_address, row))
                    .or_else(|| text(db_system, row))
                    .or_else(|| map_value(attributes, row, "messaging.destination.name"));
                if let Some(peer) = peer {
                    let peer = self.intern(peer);
                    count(self, EdgeKind::Virtual, Some(child), peer);
                }
            }
        }
    }

    /// The rows, ordered by minute.
    pub fn finish(self) -> Vec<EdgeRow> {
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
        rows
    }

    pub fn from_batches<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> Vec<EdgeRow> {
        let mut builder = Self::default();
        for batch in batches {
            builder.add(batch);
        }
        builder.finish()
    }
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
    let batch = RecordBatch::try_new(Arc::clone(&ROLLUP_SCHEMA), columns)?;
    let temporary = path.with_extension("tmp");
    {
        let properties = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
        let mut writer = ArrowWriter::try_new(fs::File::create(&temporary)?, Arc::clone(&ROLLUP_SCHEMA), Some(properties))?;
        writer.write(&batch)?;
        writer.into_inner()?.sync_all()?;
    }
    fs::rename(&temporary, path)?;
    Ok(())
}

/// Reads rollup rows written by [`write_rollup`].
pub fn read_rollup(path: &Path) -> Result<Vec<EdgeRow>, StoreError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path)?)?.build()?;
    let mut names: HashSet<Arc<str>> = HashSet::new();
    let mut intern = |name: &str| -> Arc<str> {
        if let Some(existing) = names.get(name) {
            return Arc::clone(existing);
        }
        let name: Arc<str> = Arc::from(name);
        names.insert(Arc::clone(&name));
        name
    };
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
    use crate::block::BatchBuilder;

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
    fn each_span_is_counted_as_the_call_it_is() {
        let db = vec![Attribute::new("db.system", Value::Str("postgresql".into()))];
        let queue = vec![Attribute::new("messaging.destination.name", Value::Str("orders".into()))];
        let trace = vec![
            span("gateway", 1, None, SpanKind::Server, T0, 100, vec![]),
            span("gateway", 2, Some(1), SpanKind::Client, T0 + 1_000_000, 90, vec![]),
            span("api", 3, Some(2), SpanKind::Server, T0 + 2_000_000, 80, vec![]),
            span("api", 4, Some(3), SpanKind::Client, T0 + 3_000_000, 20, db),
            // A minute later: the same trace's message that nobody instrumented consumes.
            span("api", 5, Some(3), SpanKind::Producer, T0 + 60_000_000_000, 1, queue),
        ];
        let mut builder = BatchBuilder::default();
        builder.push_trace(&assemble_borrowed(&trace), 0);
        let rows = RollupBuilder::from_batches([&builder.finish()]);
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

        let path = std::env::temp_dir().join(format!("clew-rollup-test-{}.rollup.parquet", std::process::id()));
        write_rollup(&path, &rows).unwrap();
        let read = read_rollup(&path).unwrap();
        let _ = fs::remove_file(&path);
        assert_eq!(read.len(), rows.len());
        for row in &rows {
            assert!(read.contains(row), "{row:?} survives the file");
        }
    }
}
