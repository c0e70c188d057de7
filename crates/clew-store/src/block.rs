//! The columnar form of assembled traces: one row per span, the schema shared by the in-memory
//! head and the Parquet blocks, and the way back from rows to spans.

use std::sync::{Arc, LazyLock};

use clew_model::{
    Attribute, BorrowedTrace, Event, InstrumentationScope, Link, Resource, Span, SpanFacts, SpanId, SpanKind, StatusCode, TraceId, Value,
};
use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BinaryBuilder, DictionaryArray, FixedSizeBinaryBuilder, GenericByteBuilder, Int32Array,
    Int32Builder, Int64Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{ByteArrayType, DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::resource::v1 as resource_proto;
use opentelemetry_proto::tonic::trace::v1 as trace_proto;
use prost::Message;

// Looked up once per row: foldhash, seeded per map like SipHash but faster on short keys.
use foldhash::{HashMap, HashMapExt};

use crate::StoreError;

/// Attributes with a column of their own: the ones searches and analyses read most. They are
/// also kept in the generic `attributes` map so that one filter syntax finds them.
pub const DEDICATED: &[(&str, &str)] = &[
    ("http.route", "http_route"),
    ("http.request.method", "http_method"),
    ("db.system", "db_system"),
    ("server.address", "server_address"),
    ("peer.service", "peer_service"),
];

/// The type of the `attributes` column (and of the query layer's `resource_attributes`): a
/// map of keys to rendered values.
pub fn map_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(vec![Field::new("keys", DataType::Utf8, false), Field::new("values", DataType::Utf8, true)].into()),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The span table's schema, in the order of the columns.
pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        // Start relative to the trace's start: far fewer bits than an absolute time. The
        // query layer's `spans` view adds `start_time_unix_nano` and `end_time_unix_nano`.
        Field::new("start_offset_nanos", DataType::Int64, false),
        Field::new("duration_nanos", DataType::Int64, false),
        Field::new("status_code", DataType::Utf8, false),
        Field::new("status_message", DataType::Utf8, false),
        Field::new("scope_name", DataType::Utf8, false),
        Field::new("scope_version", DataType::Utf8, false),
    ];
    for (_, column) in DEDICATED {
        fields.push(Field::new(*column, DataType::Utf8, true));
    }
    fields.extend([
        Field::new("http_status_code", DataType::Int64, true),
        Field::new("attributes", map_type(), true),
        Field::new("parent_service", DataType::Utf8, true),
        Field::new("parent_name", DataType::Utf8, true),
        Field::new("depth", DataType::Int32, false),
        Field::new("self_nanos", DataType::Int64, false),
        Field::new("critical_path_nanos", DataType::Int64, false),
        Field::new("span_flags", DataType::Int32, false),
        Field::new("trace_root_service", DataType::Utf8, false),
        Field::new("trace_root_name", DataType::Utf8, false),
        Field::new("trace_start_unix_nano", DataType::Int64, false),
        Field::new("trace_duration_nanos", DataType::Int64, false),
        Field::new("trace_span_count", DataType::Int32, false),
        Field::new("trace_error_count", DataType::Int32, false),
        Field::new("trace_flags", DataType::Int32, false),
        // The same for every span of a trace, and of a resource: a key per row into values
        // held once, in memory as on disk. A resource's attributes are not repeated per row:
        // the query layer's `resource_attributes` is read from `resource`, once per value
        // ([`resource_attribute_maps`]).
        Field::new("trace_services", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), false),
        Field::new("detail", DataType::Binary, false),
        Field::new("resource", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Binary)), false),
        // How many traces of real traffic the trace stands for when it was sampled (see
        // `clew_model::sampling`). Last, and nullable: blocks written before it read as null (1).
        Field::new(ADJUSTED_COUNT, DataType::Int32, true),
    ]);
    Arc::new(Schema::new(fields))
});

/// The column of each trace's adjusted count.
pub const ADJUSTED_COUNT: &str = "trace_adjusted_count";

/// How a block file is read: with the span schema's type of each column as a hint, so that a
/// block written before a column became a dictionary reads as one, and batches of old and new
/// blocks merge. Columns are matched by name: a block written before the adjusted count
/// existed lacks that last column, and [`upgrade`] adds it; one written when resource
/// attributes had a column per row has that column, which [`open_block`] leaves unread.
pub fn block_metadata(file: &std::fs::File, options: ArrowReaderOptions) -> Result<ArrowReaderMetadata, StoreError> {
    let plain = ArrowReaderMetadata::load(file, options.clone())?;
    let fields: Vec<Field> = plain
        .schema()
        .fields()
        .iter()
        .map(|field| match SCHEMA.field_with_name(field.name()) {
            Ok(known) => known.clone(),
            Err(_) => field.as_ref().clone(),
        })
        .collect();
    let hint = Arc::new(Schema::new(fields));
    Ok(ArrowReaderMetadata::try_new(Arc::clone(plain.metadata()), options.with_schema(hint))?)
}

/// The block's columns that the span schema has, by name, in the block's order (the schema's).
pub fn known_columns(schema: &Schema, wanted: impl Fn(&str) -> bool) -> Vec<usize> {
    schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| SCHEMA.field_with_name(field.name()).is_ok() && wanted(field.name()))
        .map(|(index, _)| index)
        .collect()
}

/// A block file opened for reading with [`block_metadata`]'s hint, reading the span schema's
/// columns only.
pub fn open_block(
    path: &std::path::Path,
    options: ArrowReaderOptions,
) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>, StoreError> {
    let file = std::fs::File::open(path)?;
    let metadata = block_metadata(&file, options)?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    let known = known_columns(builder.schema(), |_| true);
    if known.len() == builder.schema().fields().len() {
        return Ok(builder);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), known);
    Ok(builder.with_projection(mask))
}

/// A batch of every column of a block, with the columns a block written by an older Clew
/// lacks: each trace's adjusted count is then 1.
pub fn upgrade(batch: RecordBatch) -> Result<RecordBatch, StoreError> {
    if batch.num_columns() + 1 != SCHEMA.fields().len() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int32Array::from(vec![1; batch.num_rows()])));
    Ok(RecordBatch::try_new(Arc::clone(&SCHEMA), columns)?)
}

/// Builds record batches from assembled traces.
pub struct BatchBuilder {
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    service_name: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    start_offset: Int64Builder,
    duration: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    dedicated: Vec<StringBuilder>,
    http_status_code: Int64Builder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    parent_service: StringBuilder,
    parent_name: StringBuilder,
    depth: Int32Builder,
    self_nanos: Int64Builder,
    critical_path_nanos: Int64Builder,
    span_flags: Int32Builder,
    root_service: StringBuilder,
    root_name: StringBuilder,
    trace_start: Int64Builder,
    trace_duration: Int64Builder,
    trace_span_count: Int32Builder,
    trace_error_count: Int32Builder,
    trace_flags: Int32Builder,
    adjusted_count: Int32Builder,
    /// Keys into `services`, whose index finds a list's key by its text.
    trace_services: Int32Builder,
    services: StringBuilder,
    services_index: HashMap<String, i32>,
    detail: BinaryBuilder,
    detail_buffer: Vec<u8>,
    /// Where non-string attribute values are rendered, one after another.
    text_buffer: String,
    /// The detail message of the last span, refilled for the next.
    detail_message: trace_proto::Span,
    /// Keys into `resources`: each resource+scope pair is encoded once, found by the shared
    /// `Arc`s' addresses (the map holds a clone of each, so no address is reused while the
    /// builder lives) and, for equal pairs received apart, by the encoded bytes.
    resource: Int32Builder,
    resources: BinaryBuilder,
    resource_by_address: HashMap<(usize, usize), (Arc<Resource>, Arc<InstrumentationScope>, i32)>,
    resource_by_bytes: HashMap<Vec<u8>, i32>,
    rows: usize,
}

/// The attribute map's builder, for `rows` spans that took `packed_bytes` packed.
fn map_builder(rows: usize, packed_bytes: usize) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::with_capacity(
        Some(MapFieldNames { entry: "entries".into(), key: "keys".into(), value: "values".into() }),
        StringBuilder::with_capacity(rows * 8, packed_bytes * 5 / 8),
        StringBuilder::with_capacity(rows * 8, packed_bytes * 3 / 8),
        rows,
    )
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl BatchBuilder {
    /// A builder sized for `rows` spans whose packed pending form took `packed_bytes`, so
    /// that its columns rarely grow (each growth copies what they hold, and may double the
    /// memory held). On the demo shop, per packed byte, the detail takes 0.97 bytes, the
    /// attribute keys 0.47 and their values 0.26; names and services 11–16 bytes a row.
    pub fn with_capacity(rows: usize, packed_bytes: usize) -> Self {
        let strings = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        Self {
            trace_id: FixedSizeBinaryBuilder::with_capacity(rows, 16),
            span_id: FixedSizeBinaryBuilder::with_capacity(rows, 8),
            parent_span_id: FixedSizeBinaryBuilder::with_capacity(rows, 8),
            service_name: strings(16),
            name: strings(20),
            kind: strings(6),
            start_offset: Int64Builder::with_capacity(rows),
            duration: Int64Builder::with_capacity(rows),
            status_code: strings(5),
            status_message: strings(0),
            scope_name: strings(24),
            scope_version: strings(4),
            dedicated: DEDICATED.iter().map(|_| strings(8)).collect(),
            http_status_code: Int64Builder::with_capacity(rows),
            attributes: map_builder(rows, packed_bytes),
            parent_service: strings(16),
            parent_name: strings(20),
            depth: Int32Builder::with_capacity(rows),
            self_nanos: Int64Builder::with_capacity(rows),
            critical_path_nanos: Int64Builder::with_capacity(rows),
            span_flags: Int32Builder::with_capacity(rows),
            root_service: strings(16),
            root_name: strings(16),
            trace_start: Int64Builder::with_capacity(rows),
            trace_duration: Int64Builder::with_capacity(rows),
            trace_span_count: Int32Builder::with_capacity(rows),
            trace_error_count: Int32Builder::with_capacity(rows),
            trace_flags: Int32Builder::with_capacity(rows),
            adjusted_count: Int32Builder::with_capacity(rows),
            trace_services: Int32Builder::with_capacity(rows),
            services: StringBuilder::new(),
            services_index: HashMap::new(),
            detail: BinaryBuilder::with_capacity(rows, packed_bytes * 9 / 8),
            detail_buffer: Vec::new(),
            text_buffer: String::new(),
            detail_message: trace_proto::Span::default(),
            resource: Int32Builder::with_capacity(rows),
            resources: BinaryBuilder::new(),
            resource_by_address: HashMap::new(),
            resource_by_bytes: HashMap::new(),
            rows: 0,
        }
    }
}

impl BatchBuilder {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends every span of a trace; `extra_trace_flags` are or-ed in (e.g. FRAGMENT).
    pub fn push_trace(&mut self, trace: &BorrowedTrace<'_>, extra_trace_flags: u32) {
        let facts = &trace.facts;
        let services = facts.services.join(",");
        let services = key_of(&mut self.services_index, &mut self.services, services);
        for (span, span_facts) in trace.spans.iter().zip(&trace.span_facts) {
            self.push_span(span, span_facts, &trace.spans, facts.start_unix_nano);
            self.root_service.append_value(&facts.root_service);
            self.root_name.append_value(&facts.root_name);
            self.trace_start.append_value(facts.start_unix_nano as i64);
            self.trace_duration.append_value(facts.duration_nanos() as i64);
            self.trace_span_count.append_value(facts.span_count as i32);
            self.trace_error_count.append_value(facts.error_count as i32);
            self.trace_flags.append_value((facts.flags | extra_trace_flags) as i32);
            self.trace_services.append_value(services);
            self.adjusted_count.append_value(facts.adjusted_count.clamp(1, i32::MAX as u32) as i32);
        }
    }

    fn push_span(&mut self, span: &Span, facts: &SpanFacts, spans: &[&Span], trace_start: u64) {
        self.rows += 1;
        self.trace_id.append_value(span.trace_id.0).expect("16 bytes");
        self.span_id.append_value(span.span_id.0).expect("8 bytes");
        match span.parent_span_id {
            Some(parent) => self.parent_span_id.append_value(parent.0).expect("8 bytes"),
            None => self.parent_span_id.append_null(),
        }
        self.service_name.append_value(span.service_name());
        self.name.append_value(&span.name);
        self.kind.append_value(span.kind.as_str());
        self.start_offset.append_value(span.start_time_unix_nano.saturating_sub(trace_start) as i64);
        self.duration.append_value(span.duration_nanos() as i64);
        self.status_code.append_value(span.status_code.as_str());
        self.status_message.append_value(&span.status_message);
        self.scope_name.append_value(&span.scope.name);
        self.scope_version.append_value(&span.scope.version);
        // One pass over the attributes finds the dedicated ones (the first of each key, as
        // `Span::attribute` would) and the HTTP status, and fills the map column.
        let mut dedicated: [Option<&Value>; DEDICATED.len()] = [None; DEDICATED.len()];
        let (mut status, mut old_status) = (None, None);
        for attribute in &span.attributes {
            let key = attribute.key.as_str();
            if let Some(index) = DEDICATED.iter().position(|(name, _)| *name == key) {
                dedicated[index].get_or_insert(&attribute.value);
            } else if key == "http.response.status_code" {
                status.get_or_insert(&attribute.value);
            } else if key == "http.status_code" {
                old_status.get_or_insert(&attribute.value);
            }
            self.attributes.keys().append_value(key);
            append_rendered(self.attributes.values(), &attribute.value, &mut self.text_buffer);
        }
        self.attributes.append(true).expect("keys and values appended together");
        for (value, builder) in dedicated.into_iter().zip(self.dedicated.iter_mut()) {
            match value {
                Some(value) => append_rendered(builder, value, &mut self.text_buffer),
                None => builder.append_null(),
            }
        }
        self.http_status_code.append_option(status.or(old_status).and_then(Value::as_int));
        let parent = facts.parent.map(|parent| spans[parent]);
        self.parent_service.append_option(parent.map(Span::service_name));
        self.parent_name.append_option(parent.map(|parent| parent.name.as_str()));
        self.depth.append_value(facts.depth as i32);
        self.self_nanos.append_value(facts.self_nanos as i64);
        self.critical_path_nanos.append_value(facts.critical_path_nanos as i64);
        self.span_flags.append_value(facts.flags as i32);
        encode_detail(span, &mut self.detail_message, &mut self.detail_buffer);
        self.detail.append_value(&self.detail_buffer);
        let address = (Arc::as_ptr(&span.resource) as usize, Arc::as_ptr(&span.scope) as usize);
        let key = match self.resource_by_address.get(&address) {
            Some((_, _, key)) => *key,
            None => {
                let key = key_of(&mut self.resource_by_bytes, &mut self.resources, encode_resource(span));
                self.resource_by_address.insert(address, (Arc::clone(&span.resource), Arc::clone(&span.scope), key));
                key
            }
        };
        self.resource.append_value(key);
    }

    pub fn finish(mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start_offset.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
        ];
        for mut builder in self.dedicated.drain(..) {
            columns.push(Arc::new(builder.finish()));
        }
        columns.extend::<Vec<ArrayRef>>(vec![
            Arc::new(self.http_status_code.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.parent_service.finish()),
            Arc::new(self.parent_name.finish()),
            Arc::new(self.depth.finish()),
            Arc::new(self.self_nanos.finish()),
            Arc::new(self.critical_path_nanos.finish()),
            Arc::new(self.span_flags.finish()),
            Arc::new(self.root_service.finish()),
            Arc::new(self.root_name.finish()),
            Arc::new(self.trace_start.finish()),
            Arc::new(self.trace_duration.finish()),
            Arc::new(self.trace_span_count.finish()),
            Arc::new(self.trace_error_count.finish()),
            Arc::new(self.trace_flags.finish()),
            Arc::new(DictionaryArray::<Int32Type>::new(self.trace_services.finish(), Arc::new(self.services.finish()))),
            Arc::new(self.detail.finish()),
            Arc::new(DictionaryArray::<Int32Type>::new(self.resource.finish(), Arc::new(self.resources.finish()))),
            Arc::new(self.adjusted_count.finish()),
        ]);
        // A builder sized for more rows than it got (its traces fell into several windows)
        // gives back what it did not use: memory held and counted is memory used.
        for column in &mut columns {
            column.shrink_to_fit();
        }
        RecordBatch::try_new(Arc::clone(&SCHEMA), columns).expect("builder columns match the schema")
    }
}

/// The key of `value` in a dictionary column being built: found in `index`, or appended to
/// `values` and remembered.
fn key_of<T: ByteArrayType, K: std::hash::Hash + Eq + AsRef<T::Native>>(
    index: &mut HashMap<K, i32>,
    values: &mut GenericByteBuilder<T>,
    value: K,
) -> i32 {
    if let Some(key) = index.get(&value) {
        return *key;
    }
    let key = values.len() as i32;
    values.append_value(&value);
    index.insert(value, key);
    key
}

/// Appends a value as text, rendered (when it is not a string already) into `buffer`.
fn append_rendered(builder: &mut StringBuilder, value: &Value, buffer: &mut String) {
    match value {
        Value::Str(text) => builder.append_value(text),
        other => {
            buffer.clear();
            other.render_into(buffer);
            builder.append_value(buffer.as_str());
        }
    }
}

/// What the columns do not hold with full fidelity (typed attributes, events, links), encoded
/// into `buffer` (cleared first; one buffer serves every row of a batch).
fn encode_detail(span: &Span, message: &mut trace_proto::Span, buffer: &mut Vec<u8>) {
    buffer.clear();
    clew_ingest::otlp::span_detail_into_otlp(span, message);
    message.encode(buffer).expect("a Vec grows as needed");
}

fn encode_resource(span: &Span) -> Vec<u8> {
    trace_proto::ResourceSpans {
        resource: Some(resource_proto::Resource {
            attributes: clew_ingest::otlp::attributes_to_otlp(&span.resource.attributes),
            dropped_attributes_count: span.resource.dropped_attributes_count,
            entity_refs: Vec::new(),
        }),
        scope_spans: vec![trace_proto::ScopeSpans {
            scope: Some(common::InstrumentationScope {
                name: span.scope.name.clone(),
                version: span.scope.version.clone(),
                attributes: clew_ingest::otlp::attributes_to_otlp(&span.scope.attributes),
                dropped_attributes_count: span.scope.dropped_attributes_count,
            }),
            spans: Vec::new(),
            schema_url: span.scope.schema_url.clone(),
        }],
        schema_url: span.resource.schema_url.clone(),
    }
    .encode_to_vec()
}

/// The columns [`spans_from_batches`] reads; the rest only serve search and SQL. A span's
/// facts (depth, self time, ...) are not among them: whoever reads a trace assembles it again
/// from all its pieces, and the facts with it.
pub const SPAN_COLUMNS: &[&str] = &[
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_offset_nanos",
    "duration_nanos",
    "status_code",
    "status_message",
    "trace_start_unix_nano",
    "trace_flags",
    "detail",
    "resource",
];

/// A span read back from a row, with the flags of the trace piece it was stored in.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    pub span: Span,
    pub trace_flags: u32,
}

/// Reads spans back from batches of the span schema (any subset of rows, all columns).
pub fn spans_from_batches(batches: &[RecordBatch]) -> Result<Vec<StoredSpan>, StoreError> {
    let mut resources: HashMap<Vec<u8>, (Arc<Resource>, Arc<InstrumentationScope>)> = HashMap::new();
    let mut out = Vec::new();
    for batch in batches {
        let column = |name: &str| -> Result<&ArrayRef, StoreError> {
            batch.column_by_name(name).ok_or_else(|| StoreError::Corrupt(format!("column {name} missing")))
        };
        let trace_id = column("trace_id")?.as_fixed_size_binary();
        let span_id = column("span_id")?.as_fixed_size_binary();
        let parent = column("parent_span_id")?.as_fixed_size_binary();
        let name = column("name")?.as_string::<i32>();
        let kind = column("kind")?.as_string::<i32>();
        let start_offset = column("start_offset_nanos")?.as_primitive::<Int64Type>();
        let duration = column("duration_nanos")?.as_primitive::<Int64Type>();
        let trace_start = column("trace_start_unix_nano")?.as_primitive::<Int64Type>();
        let status_code = column("status_code")?.as_string::<i32>();
        let status_message = column("status_message")?.as_string::<i32>();
        let trace_flags = column("trace_flags")?.as_primitive::<Int32Type>();
        let detail = column("detail")?.as_binary::<i32>();
        let resource = column("resource")?
            .as_dictionary_opt::<Int32Type>()
            .ok_or_else(|| StoreError::Corrupt("column resource is no dictionary".into()))?;
        let (resource_keys, resource_values) = (resource.keys(), resource.values().as_binary::<i32>());
        // Decoded once per distinct value of the batch (and once per bytes across batches).
        let mut decoded: Vec<Option<(Arc<Resource>, Arc<InstrumentationScope>)>> = vec![None; resource_values.len()];
        for row in 0..batch.num_rows() {
            let key = resource_keys.value(row) as usize;
            if key >= decoded.len() {
                return Err(StoreError::Corrupt(format!("resource key {key} out of range")));
            }
            let (resource, scope) = match &decoded[key] {
                Some(found) => found.clone(),
                None => {
                    let bytes = resource_values.value(key);
                    let pair = match resources.get(bytes) {
                        Some(found) => found.clone(),
                        None => {
                            let pair = decode_resource(bytes)?;
                            resources.insert(bytes.to_vec(), pair.clone());
                            pair
                        }
                    };
                    decoded[key] = Some(pair.clone());
                    pair
                }
            };
            let detail = trace_proto::Span::decode(detail.value(row)).map_err(|e| StoreError::Corrupt(format!("span detail: {e}")))?;
            let span = Span {
                trace_id: TraceId::from_slice(trace_id.value(row)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                span_id: SpanId::from_slice(span_id.value(row)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                parent_span_id: if parent.is_null(row) { None } else { SpanId::from_slice(parent.value(row)).ok() },
                trace_state: detail.trace_state,
                flags: detail.flags,
                name: name.value(row).to_string(),
                kind: SpanKind::parse(kind.value(row)).unwrap_or_default(),
                start_time_unix_nano: (trace_start.value(row) + start_offset.value(row)) as u64,
                end_time_unix_nano: (trace_start.value(row) + start_offset.value(row) + duration.value(row)) as u64,
                attributes: attributes_from_otlp(detail.attributes),
                dropped_attributes_count: detail.dropped_attributes_count,
                events: detail
                    .events
                    .into_iter()
                    .map(|event| Event {
                        time_unix_nano: event.time_unix_nano,
                        name: event.name,
                        attributes: attributes_from_otlp(event.attributes),
                        dropped_attributes_count: event.dropped_attributes_count,
                    })
                    .collect(),
                dropped_events_count: detail.dropped_events_count,
                links: detail
                    .links
                    .into_iter()
                    .filter_map(|link| {
                        Some(Link {
                            trace_id: TraceId::from_slice(&link.trace_id).ok()?,
                            span_id: SpanId::from_slice(&link.span_id).ok()?,
                            trace_state: link.trace_state,
                            attributes: attributes_from_otlp(link.attributes),
                            dropped_attributes_count: link.dropped_attributes_count,
                            flags: link.flags,
                        })
                    })
                    .collect(),
                dropped_links_count: detail.dropped_links_count,
                status_code: StatusCode::parse(status_code.value(row)).unwrap_or_default(),
                status_message: status_message.value(row).to_string(),
                resource,
                scope,
            };
            out.push(StoredSpan { span, trace_flags: trace_flags.value(row) as u32 });
        }
    }
    Ok(out)
}

/// The attributes of an encoded resource (a value of the `resource` column) as the
/// `resource_attributes` map holds them: key and rendered value, in order.
pub fn resource_attribute_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>, StoreError> {
    let (resource, _) = decode_resource(bytes)?;
    Ok(resource.attributes.iter().map(|a| (a.key.clone(), a.value.rendered().into_owned())).collect())
}

/// The `resource_attributes` map of each row of a `resource` column: each distinct resource
/// a row refers to is decoded once. Takes the dictionary the span schema declares, or plain
/// binary. A null or undecodable resource gives a null map: one damaged value does not fail
/// a query over millions of rows (rollups and correlations read it as no attributes too).
pub fn resource_attribute_maps(column: &dyn Array) -> Result<ArrayRef, StoreError> {
    let mut builder = map_builder(0, 0);
    let append = |builder: &mut MapBuilder<StringBuilder, StringBuilder>, pairs: Option<&Vec<(String, String)>>| {
        for (key, value) in pairs.into_iter().flatten() {
            builder.keys().append_value(key);
            builder.values().append_value(value);
        }
        builder.append(pairs.is_some()).expect("keys and values appended together");
    };
    if let Some(dictionary) = column.as_dictionary_opt::<Int32Type>() {
        let values =
            dictionary.values().as_binary_opt::<i32>().ok_or_else(|| StoreError::Corrupt("resource values are not binary".into()))?;
        // A batch carries its column chunk's whole dictionary: only the values its rows use
        // are decoded.
        // Outer `None`: not decoded yet; inner `None`: null or undecodable.
        let mut decoded: Vec<Option<Option<Vec<(String, String)>>>> = vec![None; values.len()];
        for key in dictionary.keys().iter().flatten() {
            let key = key as usize;
            if key < values.len() && decoded[key].is_none() {
                decoded[key] = Some(if values.is_null(key) { None } else { resource_attribute_pairs(values.value(key)).ok() });
            }
        }
        for row in 0..dictionary.len() {
            let pairs = dictionary.key(row).and_then(|key| decoded.get(key)).and_then(|pairs| pairs.as_ref()?.as_ref());
            append(&mut builder, pairs);
        }
    } else if let Some(values) = column.as_binary_opt::<i32>() {
        let mut decoded: HashMap<&[u8], Option<Vec<(String, String)>>> = HashMap::new();
        for row in 0..values.len() {
            if values.is_null(row) {
                append(&mut builder, None);
                continue;
            }
            let bytes = values.value(row);
            let pairs = decoded.entry(bytes).or_insert_with(|| resource_attribute_pairs(bytes).ok());
            append(&mut builder, pairs.as_ref());
        }
    } else if column.data_type() == &DataType::Null {
        for _ in 0..column.len() {
            append(&mut builder, None);
        }
    } else {
        return Err(StoreError::Corrupt(format!("resource column of type {}", column.data_type())));
    }
    Ok(Arc::new(builder.finish()))
}

fn decode_resource(bytes: &[u8]) -> Result<(Arc<Resource>, Arc<InstrumentationScope>), StoreError> {
    let decoded = trace_proto::ResourceSpans::decode(bytes).map_err(|e| StoreError::Corrupt(format!("resource: {e}")))?;
    let resource = decoded.resource.unwrap_or_default();
    let scope_spans = decoded.scope_spans.into_iter().next().unwrap_or_default();
    let scope = scope_spans.scope.unwrap_or_default();
    Ok((
        Arc::new(Resource {
            attributes: attributes_from_otlp(resource.attributes),
            dropped_attributes_count: resource.dropped_attributes_count,
            schema_url: decoded.schema_url,
        }),
        Arc::new(InstrumentationScope {
            name: scope.name,
            version: scope.version,
            attributes: attributes_from_otlp(scope.attributes),
            dropped_attributes_count: scope.dropped_attributes_count,
            schema_url: scope_spans.schema_url,
        }),
    ))
}

fn attributes_from_otlp(attributes: Vec<common::KeyValue>) -> Vec<Attribute> {
    attributes.into_iter().map(|kv| Attribute { key: kv.key, value: value_from_otlp(kv.value) }).collect()
}

fn value_from_otlp(value: Option<common::AnyValue>) -> Value {
    use common::any_value::Value as V;
    match value.and_then(|v| v.value) {
        None => Value::Empty,
        Some(V::StringValue(s)) => Value::Str(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::Int(i),
        Some(V::DoubleValue(d)) => Value::Double(d),
        Some(V::BytesValue(b)) => Value::Bytes(b),
        Some(V::ArrayValue(a)) => Value::Array(a.values.into_iter().map(|v| value_from_otlp(Some(v))).collect()),
        Some(V::KvlistValue(l)) => Value::Map(attributes_from_otlp(l.values)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BinaryArray, NullArray};

    fn resource_bytes(attributes: Vec<Attribute>) -> Vec<u8> {
        let span = Span { resource: Arc::new(Resource { attributes, ..Default::default() }), ..Span::default() };
        encode_resource(&span)
    }

    fn rows(maps: &ArrayRef) -> Vec<Option<Vec<(String, String)>>> {
        let maps = maps.as_map();
        (0..maps.len())
            .map(|row| {
                (!maps.is_null(row)).then(|| {
                    let entries = maps.value(row);
                    let (keys, values) = (entries.column(0).as_string::<i32>(), entries.column(1).as_string::<i32>());
                    (0..entries.len()).map(|i| (keys.value(i).to_string(), values.value(i).to_string())).collect()
                })
            })
            .collect()
    }

    #[test]
    fn resource_attribute_maps_decode_each_row_and_leave_damaged_or_missing_resources_null() {
        let shop = resource_bytes(vec![Attribute::new("service.name", Value::Str("shop".into())), Attribute::new("pod", Value::Int(3))]);
        let values = BinaryArray::from_iter_values([shop.as_slice(), b"\xff\xff not a resource", b"\x0a"]);
        let keys = Int32Array::from(vec![Some(0), Some(1), None, Some(0)]);
        let dictionary = DictionaryArray::<Int32Type>::new(keys, Arc::new(values));
        let expected = Some(vec![("service.name".to_string(), "shop".to_string()), ("pod".to_string(), "3".to_string())]);
        assert_eq!(rows(&resource_attribute_maps(&dictionary).unwrap()), vec![expected.clone(), None, None, expected.clone()]);
        assert_eq!(resource_attribute_maps(&dictionary).unwrap().data_type(), &map_type());
        // Plain binary, as an older block stored it, and a NULL literal.
        let plain = BinaryArray::from(vec![Some(shop.as_slice()), None, Some(b"\xff\xff".as_slice())]);
        assert_eq!(rows(&resource_attribute_maps(&plain).unwrap()), vec![expected, None, None]);
        assert_eq!(rows(&resource_attribute_maps(&NullArray::new(2)).unwrap()), vec![None, None]);
        assert!(resource_attribute_maps(&Int32Array::from(vec![1])).is_err(), "not a resource column");
    }
}
