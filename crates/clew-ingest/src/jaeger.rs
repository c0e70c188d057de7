//! Jaeger spans → OTLP: Thrift batches (HTTP `POST /api/traces` in binary Thrift; the agent's
//! UDP `emitBatch` in compact or binary Thrift) and protobuf `jaeger.api_v2` batches (gRPC
//! `CollectorService/PostSpans`). Mapped as OpenTelemetry's Jaeger translation maps them:
//!
//! - the process becomes the resource (`service.name` plus its tags);
//! - `parentSpanId`, or else the first CHILD_OF reference, is the parent; other references
//!   become links with `opentracing.ref_type`;
//! - tags keep their types; `span.kind` gives the kind; `error`, `otel.status_code` and
//!   `otel.status_description` the status; `otel.scope.*` (or `otel.library.*`) the scope;
//!   `w3c.tracestate` the trace state;
//! - logs become events named by their `event` field.
//!
//! The Thrift codec is the `thrift` crate's; Clew only says which field is which.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use thrift::protocol::{TBinaryInputProtocol, TCompactInputProtocol, TInputProtocol, TMessageType, TType};

/// A Jaeger batch as received, whatever the encoding: one process and its spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JaegerBatch {
    pub service_name: String,
    pub process_tags: Vec<KeyValue>,
    pub spans: Vec<JaegerSpan>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JaegerSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Zero when the span names no parent this way.
    pub parent_span_id: [u8; 8],
    pub operation_name: String,
    pub references: Vec<Reference>,
    pub flags: u32,
    pub start_nanos: u64,
    pub duration_nanos: u64,
    pub tags: Vec<KeyValue>,
    /// (time in ns, fields)
    pub logs: Vec<(u64, Vec<KeyValue>)>,
    /// A process of the span's own (protobuf only), which wins over the batch's.
    pub process: Option<(String, Vec<KeyValue>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    pub follows_from: bool,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// Why a Jaeger request could not be read: the client's fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JaegerError(pub String);

fn error(message: impl Into<String>) -> JaegerError {
    JaegerError(message.into())
}

// ---------------------------------------------------------------------------------------------
// Thrift

/// Which Thrift protocol a payload is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThriftProtocol {
    Binary,
    Compact,
}

fn with_protocol<R>(
    bytes: &[u8],
    protocol: ThriftProtocol,
    read: impl FnOnce(&mut dyn TInputProtocol) -> thrift::Result<R>,
) -> Result<R, JaegerError> {
    // No string, binary or list can be longer than the payload holding it.
    let config = thrift::TConfiguration::builder()
        .max_string_size(Some(bytes.len()))
        .max_container_size(Some(bytes.len()))
        .max_recursion_depth(Some(32))
        .build()
        .map_err(|e| error(e.to_string()))?;
    let result = match protocol {
        ThriftProtocol::Binary => read(&mut TBinaryInputProtocol::with_config(bytes, true, config)),
        ThriftProtocol::Compact => read(&mut TCompactInputProtocol::with_config(bytes, config)),
    };
    result.map_err(|e| error(format!("invalid Thrift: {e}")))
}

/// Decodes a binary-Thrift `Batch`, the body of the collector's `POST /api/traces`.
pub fn decode_thrift_batch(bytes: &[u8]) -> Result<JaegerBatch, JaegerError> {
    with_protocol(bytes, ThriftProtocol::Binary, read_batch)
}

/// Decodes one agent datagram: a Thrift `Agent.emitBatch` message. Returns `Ok(None)` for
/// messages that carry no Jaeger batch (such as the legacy `emitZipkinBatch`).
pub fn decode_agent_datagram(bytes: &[u8], protocol: ThriftProtocol) -> Result<Option<JaegerBatch>, JaegerError> {
    with_protocol(bytes, protocol, |p| {
        let message = p.read_message_begin()?;
        if message.name != "emitBatch" || !matches!(message.message_type, TMessageType::OneWay | TMessageType::Call) {
            return Ok(None);
        }
        let mut batch = None;
        read_struct(p, |p, id, kind| match (id, kind) {
            (1, TType::Struct) => {
                batch = Some(read_batch(p)?);
                Ok(true)
            }
            _ => Ok(false),
        })?;
        p.read_message_end()?;
        Ok(batch)
    })
}

/// Reads a struct, handing each field to `field`, which returns whether it read it (the rest
/// are skipped).
fn read_struct(
    p: &mut dyn TInputProtocol,
    mut field: impl FnMut(&mut dyn TInputProtocol, i16, TType) -> thrift::Result<bool>,
) -> thrift::Result<()> {
    p.read_struct_begin()?;
    loop {
        let identifier = p.read_field_begin()?;
        if identifier.field_type == TType::Stop {
            break;
        }
        if !field(p, identifier.id.unwrap_or(0), identifier.field_type)? {
            p.skip(identifier.field_type)?;
        }
        p.read_field_end()?;
    }
    p.read_struct_end()
}

fn read_list<T>(p: &mut dyn TInputProtocol, mut item: impl FnMut(&mut dyn TInputProtocol) -> thrift::Result<T>) -> thrift::Result<Vec<T>> {
    let list = p.read_list_begin()?;
    let mut out = Vec::with_capacity((list.size.max(0) as usize).min(1024));
    for _ in 0..list.size {
        out.push(item(p)?);
    }
    p.read_list_end()?;
    Ok(out)
}

fn read_batch(p: &mut dyn TInputProtocol) -> thrift::Result<JaegerBatch> {
    let mut batch = JaegerBatch::default();
    read_struct(p, |p, id, kind| {
        match (id, kind) {
            (1, TType::Struct) => {
                read_struct(p, |p, id, kind| {
                    match (id, kind) {
                        (1, TType::String) => batch.service_name = p.read_string()?,
                        (2, TType::List) => batch.process_tags = read_list(p, read_tag)?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
            }
            (2, TType::List) => batch.spans = read_list(p, read_span)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(batch)
}

fn read_tag(p: &mut dyn TInputProtocol) -> thrift::Result<KeyValue> {
    let mut key = String::new();
    let mut value_type = 0;
    let (mut text, mut double, mut boolean, mut long, mut binary) = (None, None, None, None, None);
    read_struct(p, |p, id, kind| {
        match (id, kind) {
            (1, TType::String) => key = p.read_string()?,
            (2, TType::I32) => value_type = p.read_i32()?,
            (3, TType::String) => text = Some(p.read_string()?),
            (4, TType::Double) => double = Some(p.read_double()?),
            (5, TType::Bool) => boolean = Some(p.read_bool()?),
            (6, TType::I64) => long = Some(p.read_i64()?),
            (7, TType::String) => binary = Some(p.read_bytes()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // TagType: STRING, DOUBLE, BOOL, LONG, BINARY
    let value = match value_type {
        1 => any_value::Value::DoubleValue(double.unwrap_or_default()),
        2 => any_value::Value::BoolValue(boolean.unwrap_or_default()),
        3 => any_value::Value::IntValue(long.unwrap_or_default()),
        4 => any_value::Value::BytesValue(binary.unwrap_or_default()),
        _ => any_value::Value::StringValue(text.unwrap_or_default()),
    };
    Ok(KeyValue { key, value: Some(AnyValue { value: Some(value) }) })
}

fn id_bytes(high: i64, low: i64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&high.to_be_bytes());
    out[8..].copy_from_slice(&low.to_be_bytes());
    out
}

fn read_span(p: &mut dyn TInputProtocol) -> thrift::Result<JaegerSpan> {
    let mut span = JaegerSpan::default();
    let (mut high, mut low, mut start_us, mut duration_us) = (0i64, 0i64, 0i64, 0i64);
    read_struct(p, |p, id, kind| {
        match (id, kind) {
            (1, TType::I64) => low = p.read_i64()?,
            (2, TType::I64) => high = p.read_i64()?,
            (3, TType::I64) => span.span_id = p.read_i64()?.to_be_bytes(),
            (4, TType::I64) => span.parent_span_id = p.read_i64()?.to_be_bytes(),
            (5, TType::String) => span.operation_name = p.read_string()?,
            (6, TType::List) => {
                span.references = read_list(p, |p| {
                    let (mut kind, mut ref_low, mut ref_high, mut ref_span) = (0, 0i64, 0i64, 0i64);
                    read_struct(p, |p, id, field| {
                        match (id, field) {
                            (1, TType::I32) => kind = p.read_i32()?,
                            (2, TType::I64) => ref_low = p.read_i64()?,
                            (3, TType::I64) => ref_high = p.read_i64()?,
                            (4, TType::I64) => ref_span = p.read_i64()?,
                            _ => return Ok(false),
                        }
                        Ok(true)
                    })?;
                    Ok(Reference { follows_from: kind == 1, trace_id: id_bytes(ref_high, ref_low), span_id: ref_span.to_be_bytes() })
                })?
            }
            (7, TType::I32) => span.flags = p.read_i32()? as u32,
            (8, TType::I64) => start_us = p.read_i64()?,
            (9, TType::I64) => duration_us = p.read_i64()?,
            (10, TType::List) => span.tags = read_list(p, read_tag)?,
            (11, TType::List) => {
                span.logs = read_list(p, |p| {
                    let (mut timestamp, mut fields) = (0i64, Vec::new());
                    read_struct(p, |p, id, kind| {
                        match (id, kind) {
                            (1, TType::I64) => timestamp = p.read_i64()?,
                            (2, TType::List) => fields = read_list(p, read_tag)?,
                            _ => return Ok(false),
                        }
                        Ok(true)
                    })?;
                    Ok((micros(timestamp), fields))
                })?
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    span.trace_id = id_bytes(high, low);
    span.start_nanos = micros(start_us);
    span.duration_nanos = micros(duration_us);
    Ok(span)
}

fn micros(value: i64) -> u64 {
    (value.max(0) as u64).saturating_mul(1000)
}

// ---------------------------------------------------------------------------------------------
// Protobuf (jaeger.api_v2), declared here; prost does the encoding.

pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PostSpansRequest {
        #[prost(message, optional, tag = "1")]
        pub batch: Option<Batch>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PostSpansResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Batch {
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
        #[prost(message, optional, tag = "2")]
        pub process: Option<Process>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Process {
        #[prost(string, tag = "1")]
        pub service_name: String,
        #[prost(message, repeated, tag = "2")]
        pub tags: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        /// STRING 0, BOOL 1, INT64 2, FLOAT64 3, BINARY 4.
        #[prost(int32, tag = "2")]
        pub v_type: i32,
        #[prost(string, tag = "3")]
        pub v_str: String,
        #[prost(bool, tag = "4")]
        pub v_bool: bool,
        #[prost(int64, tag = "5")]
        pub v_int64: i64,
        #[prost(double, tag = "6")]
        pub v_float64: f64,
        #[prost(bytes = "vec", tag = "7")]
        pub v_binary: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Log {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<prost_types::Timestamp>,
        #[prost(message, repeated, tag = "2")]
        pub fields: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SpanRef {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        /// CHILD_OF 0, FOLLOWS_FROM 1.
        #[prost(int32, tag = "3")]
        pub ref_type: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub operation_name: String,
        #[prost(message, repeated, tag = "4")]
        pub references: Vec<SpanRef>,
        #[prost(uint32, tag = "5")]
        pub flags: u32,
        #[prost(message, optional, tag = "6")]
        pub start_time: Option<prost_types::Timestamp>,
        #[prost(message, optional, tag = "7")]
        pub duration: Option<prost_types::Duration>,
        #[prost(message, repeated, tag = "8")]
        pub tags: Vec<KeyValue>,
        #[prost(message, repeated, tag = "9")]
        pub logs: Vec<Log>,
        #[prost(message, optional, tag = "10")]
        pub process: Option<Process>,
        #[prost(string, tag = "11")]
        pub process_id: String,
        #[prost(string, repeated, tag = "12")]
        pub warnings: Vec<String>,
    }
}

fn proto_tags(tags: Vec<proto::KeyValue>) -> Vec<KeyValue> {
    tags.into_iter()
        .map(|tag| {
            let value = match tag.v_type {
                1 => any_value::Value::BoolValue(tag.v_bool),
                2 => any_value::Value::IntValue(tag.v_int64),
                3 => any_value::Value::DoubleValue(tag.v_float64),
                4 => any_value::Value::BytesValue(tag.v_binary),
                _ => any_value::Value::StringValue(tag.v_str),
            };
            KeyValue { key: tag.key, value: Some(AnyValue { value: Some(value) }) }
        })
        .collect()
}

fn timestamp_nanos(seconds: i64, nanos: i32) -> u64 {
    (seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(nanos.max(0) as u64)
}

/// A protobuf ID: trace IDs are 16 bytes (8 are accepted and padded), span IDs 8.
fn proto_id<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], JaegerError> {
    if bytes.len() == N {
        return Ok(bytes.try_into().expect("checked"));
    }
    if N == 16 && bytes.len() == 8 {
        let mut out = [0u8; N];
        out[8..].copy_from_slice(bytes);
        return Ok(out);
    }
    Err(error(format!("{what} must be {N} bytes, got {}", bytes.len())))
}

/// Converts a protobuf batch.
pub fn from_proto_batch(batch: proto::Batch) -> Result<JaegerBatch, JaegerError> {
    let process = batch.process.unwrap_or_default();
    let mut spans = Vec::with_capacity(batch.spans.len());
    for (index, span) in batch.spans.into_iter().enumerate() {
        let context = |e: JaegerError| error(format!("span {index}: {}", e.0));
        let mut references = Vec::new();
        for reference in span.references {
            references.push(Reference {
                follows_from: reference.ref_type == 1,
                trace_id: proto_id::<16>(&reference.trace_id, "reference trace_id").map_err(context)?,
                span_id: proto_id::<8>(&reference.span_id, "reference span_id").map_err(context)?,
            });
        }
        let start = span.start_time.map(|t| timestamp_nanos(t.seconds, t.nanos)).unwrap_or(0);
        let duration = span.duration.map(|d| timestamp_nanos(d.seconds, d.nanos)).unwrap_or(0);
        spans.push(JaegerSpan {
            trace_id: proto_id::<16>(&span.trace_id, "trace_id").map_err(context)?,
            span_id: proto_id::<8>(&span.span_id, "span_id").map_err(context)?,
            parent_span_id: [0; 8],
            operation_name: span.operation_name,
            references,
            flags: span.flags,
            start_nanos: start,
            duration_nanos: duration,
            tags: proto_tags(span.tags),
            logs: span
                .logs
                .into_iter()
                .map(|log| (log.timestamp.map(|t| timestamp_nanos(t.seconds, t.nanos)).unwrap_or(0), proto_tags(log.fields)))
                .collect(),
            process: span.process.map(|p| (p.service_name, proto_tags(p.tags))),
        });
    }
    Ok(JaegerBatch { service_name: process.service_name, process_tags: proto_tags(process.tags), spans })
}

// ---------------------------------------------------------------------------------------------
// → OTLP

fn text(value: &Option<AnyValue>) -> Option<String> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

/// Converts batches to one OTLP request, grouped by process and scope.
pub fn to_otlp(batches: Vec<JaegerBatch>) -> ExportTraceServiceRequest {
    // (service, process tags as encoded text for grouping) → (tags, scope → spans)
    type Scopes = BTreeMap<(String, String), Vec<Span>>;
    let mut resources: Vec<(String, Vec<KeyValue>, Scopes)> = Vec::new();
    for batch in batches {
        for mut jaeger in batch.spans {
            let (service, tags) = jaeger.process.take().unwrap_or_else(|| (batch.service_name.clone(), batch.process_tags.clone()));
            let (scope, span) = convert(jaeger);
            let position = match resources.iter().position(|(s, t, _)| *s == service && *t == tags) {
                Some(position) => position,
                None => {
                    resources.push((service, tags, BTreeMap::new()));
                    resources.len() - 1
                }
            };
            resources[position].2.entry(scope).or_default().push(span);
        }
    }
    let resource_spans = resources
        .into_iter()
        .map(|(service, tags, scopes)| {
            let mut attributes = vec![string_kv("service.name", if service.is_empty() { "unknown_service" } else { &service })];
            attributes.extend(tags.into_iter().filter(|kv| kv.key != "service.name"));
            ResourceSpans {
                resource: Some(Resource { attributes, ..Default::default() }),
                scope_spans: scopes
                    .into_iter()
                    .map(|((name, version), spans)| ScopeSpans {
                        scope: (!name.is_empty() || !version.is_empty()).then(|| InstrumentationScope {
                            name,
                            version,
                            ..Default::default()
                        }),
                        spans,
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn convert(jaeger: JaegerSpan) -> ((String, String), Span) {
    let mut tags = jaeger.tags;
    let mut take = |key: &str| -> Option<Option<AnyValue>> {
        let position = tags.iter().position(|kv| kv.key == key)?;
        Some(tags.remove(position).value)
    };
    let kind = match take("span.kind").and_then(|v| text(&v)).as_deref() {
        Some("client") => span::SpanKind::Client,
        Some("server") => span::SpanKind::Server,
        Some("producer") => span::SpanKind::Producer,
        Some("consumer") => span::SpanKind::Consumer,
        Some("internal") => span::SpanKind::Internal,
        _ => span::SpanKind::Unspecified,
    };
    let mut status = Status::default();
    if let Some(code) = take("otel.status_code").and_then(|v| text(&v)) {
        status.code = match code.to_ascii_uppercase().as_str() {
            "OK" => 1,
            "ERROR" => 2,
            _ => 0,
        };
    }
    if let Some(message) = take("otel.status_description").and_then(|v| text(&v)) {
        status.message = message;
    }
    let error_flag = take("error");
    match error_flag.as_ref().and_then(text).as_deref() {
        Some("true") => status.code = 2,
        Some("false") | None => {}
        // Not the boolean OpenTracing means: keep it as it came.
        Some(_) => tags.push(KeyValue { key: "error".into(), value: error_flag.flatten() }),
    }
    let mut take = |key: &str| -> Option<String> {
        let position = tags.iter().position(|kv| kv.key == key)?;
        text(&tags.remove(position).value)
    };
    let scope_name = take("otel.scope.name").or_else(|| take("otel.library.name")).unwrap_or_default();
    let scope_version = take("otel.scope.version").or_else(|| take("otel.library.version")).unwrap_or_default();
    let trace_state = take("w3c.tracestate").unwrap_or_default();

    let mut parent = (jaeger.parent_span_id != [0; 8]).then_some(jaeger.parent_span_id);
    let mut links = Vec::new();
    for reference in jaeger.references {
        let is_parent = !reference.follows_from && reference.trace_id == jaeger.trace_id;
        if is_parent && parent.is_none() {
            parent = Some(reference.span_id);
            continue;
        }
        if is_parent && parent == Some(reference.span_id) {
            continue;
        }
        links.push(span::Link {
            trace_id: reference.trace_id.to_vec(),
            span_id: reference.span_id.to_vec(),
            attributes: vec![string_kv("opentracing.ref_type", if reference.follows_from { "follows_from" } else { "child_of" })],
            ..Default::default()
        });
    }
    let events = jaeger
        .logs
        .into_iter()
        .map(|(time, mut fields)| {
            let name = match fields.iter().position(|kv| kv.key == "event") {
                Some(position) => text(&fields.remove(position).value).unwrap_or_default(),
                None => String::new(),
            };
            span::Event { time_unix_nano: time, name, attributes: fields, dropped_attributes_count: 0 }
        })
        .collect();
    let span = Span {
        trace_id: jaeger.trace_id.to_vec(),
        span_id: jaeger.span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        trace_state,
        // Jaeger's sampled bit is W3C's; 0x100 says the flags are known.
        flags: 0x100 | (jaeger.flags & 0x01),
        name: jaeger.operation_name,
        kind: kind as i32,
        start_time_unix_nano: jaeger.start_nanos,
        end_time_unix_nano: jaeger.start_nanos.saturating_add(jaeger.duration_nanos),
        attributes: tags,
        events,
        links,
        status: (status.code != 0 || !status.message.is_empty()).then_some(status),
        ..Default::default()
    };
    ((scope_name, scope_version), span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::protocol::{
        TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier, TListIdentifier, TMessageIdentifier, TOutputProtocol,
        TStructIdentifier,
    };

    fn field(p: &mut dyn TOutputProtocol, id: i16, kind: TType) {
        p.write_field_begin(&TFieldIdentifier::new("f", kind, id)).unwrap();
    }

    /// A Tag struct; `value` writes the value's field header and the value.
    fn write_tag(p: &mut dyn TOutputProtocol, key: &str, kind: i32, value: impl FnOnce(&mut dyn TOutputProtocol)) {
        p.write_struct_begin(&TStructIdentifier::new("Tag")).unwrap();
        field(p, 1, TType::String);
        p.write_string(key).unwrap();
        p.write_field_end().unwrap();
        field(p, 2, TType::I32);
        p.write_i32(kind).unwrap();
        p.write_field_end().unwrap();
        value(p);
        p.write_field_end().unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
    }

    /// A batch written by the `thrift` crate's own encoder, field by field as jaeger.thrift says.
    fn write_batch(p: &mut dyn TOutputProtocol) {
        p.write_struct_begin(&TStructIdentifier::new("Batch")).unwrap();
        field(p, 1, TType::Struct);
        p.write_struct_begin(&TStructIdentifier::new("Process")).unwrap();
        field(p, 1, TType::String);
        p.write_string("inventory").unwrap();
        p.write_field_end().unwrap();
        field(p, 2, TType::List);
        p.write_list_begin(&TListIdentifier::new(TType::Struct, 1)).unwrap();
        write_tag(p, "hostname", 0, |p| {
            field(p, 3, TType::String);
            p.write_string("box-7").unwrap();
        });
        p.write_list_end().unwrap();
        p.write_field_end().unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
        p.write_field_end().unwrap();

        field(p, 2, TType::List);
        p.write_list_begin(&TListIdentifier::new(TType::Struct, 1)).unwrap();
        p.write_struct_begin(&TStructIdentifier::new("Span")).unwrap();
        for (id, value) in [(1, 0x0102_0304_0506_0708_i64), (2, 0), (3, 0x11), (4, 0x22)] {
            field(p, id, TType::I64);
            p.write_i64(value).unwrap();
            p.write_field_end().unwrap();
        }
        field(p, 5, TType::String);
        p.write_string("reserve").unwrap();
        p.write_field_end().unwrap();
        field(p, 7, TType::I32);
        p.write_i32(1).unwrap();
        p.write_field_end().unwrap();
        field(p, 8, TType::I64);
        p.write_i64(1_700_000_000_000_000).unwrap();
        p.write_field_end().unwrap();
        field(p, 9, TType::I64);
        p.write_i64(1500).unwrap();
        p.write_field_end().unwrap();
        field(p, 10, TType::List);
        p.write_list_begin(&TListIdentifier::new(TType::Struct, 3)).unwrap();
        write_tag(p, "span.kind", 0, |p| {
            field(p, 3, TType::String);
            p.write_string("server").unwrap();
        });
        write_tag(p, "error", 2, |p| {
            field(p, 5, TType::Bool);
            p.write_bool(true).unwrap();
        });
        write_tag(p, "items", 3, |p| {
            field(p, 6, TType::I64);
            p.write_i64(42).unwrap();
        });
        p.write_list_end().unwrap();
        p.write_field_end().unwrap();
        field(p, 11, TType::List);
        p.write_list_begin(&TListIdentifier::new(TType::Struct, 1)).unwrap();
        p.write_struct_begin(&TStructIdentifier::new("Log")).unwrap();
        field(p, 1, TType::I64);
        p.write_i64(1_700_000_000_000_100).unwrap();
        p.write_field_end().unwrap();
        field(p, 2, TType::List);
        p.write_list_begin(&TListIdentifier::new(TType::Struct, 2)).unwrap();
        write_tag(p, "event", 0, |p| {
            field(p, 3, TType::String);
            p.write_string("lock wait").unwrap();
        });
        write_tag(p, "ms", 1, |p| {
            field(p, 4, TType::Double);
            p.write_double(2.5).unwrap();
        });
        p.write_list_end().unwrap();
        p.write_field_end().unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
        p.write_list_end().unwrap();
        p.write_field_end().unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
        p.write_list_end().unwrap();
        p.write_field_end().unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
    }

    fn check(batch: JaegerBatch) {
        assert_eq!(batch.service_name, "inventory");
        let request = to_otlp(vec![batch]);
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[1].key, "hostname");
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(hex::encode(&span.trace_id), "00000000000000000102030405060708");
        assert_eq!(hex::encode(&span.span_id), "0000000000000011");
        assert_eq!(hex::encode(&span.parent_span_id), "0000000000000022");
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_500_000);
        assert_eq!(span.attributes.len(), 1);
        assert_eq!(span.attributes[0].value.as_ref().unwrap().value, Some(any_value::Value::IntValue(42)));
        assert_eq!(span.events[0].name, "lock wait");
        assert_eq!(span.events[0].time_unix_nano, 1_700_000_000_000_100_000);
        assert_eq!(span.events[0].attributes[0].value.as_ref().unwrap().value, Some(any_value::Value::DoubleValue(2.5)));
    }

    #[test]
    fn binary_batch_and_compact_datagram() {
        let mut bytes = Vec::new();
        write_batch(&mut TBinaryOutputProtocol::new(&mut bytes, true));
        check(decode_thrift_batch(&bytes).unwrap());

        for protocol in [ThriftProtocol::Compact, ThriftProtocol::Binary] {
            let mut datagram = Vec::new();
            {
                let mut p: Box<dyn TOutputProtocol> = match protocol {
                    ThriftProtocol::Compact => Box::new(TCompactOutputProtocol::new(&mut datagram)),
                    ThriftProtocol::Binary => Box::new(TBinaryOutputProtocol::new(&mut datagram, true)),
                };
                p.write_message_begin(&TMessageIdentifier::new("emitBatch", TMessageType::OneWay, 1)).unwrap();
                p.write_struct_begin(&TStructIdentifier::new("emitBatch_args")).unwrap();
                field(p.as_mut(), 1, TType::Struct);
                write_batch(p.as_mut());
                p.write_field_end().unwrap();
                p.write_field_stop().unwrap();
                p.write_struct_end().unwrap();
                p.write_message_end().unwrap();
                p.flush().unwrap();
            }
            check(decode_agent_datagram(&datagram, protocol).unwrap().unwrap());
        }
    }

    #[test]
    fn hostile_thrift_is_refused() {
        // A string claiming 2 GB in a 20-byte payload.
        let mut bytes = vec![0x0c, 0x00, 0x01, 0x0b, 0x00, 0x01, 0x7f, 0xff, 0xff, 0xff];
        bytes.extend_from_slice(b"0123456789");
        assert!(decode_thrift_batch(&bytes).is_err());
        assert!(decode_thrift_batch(b"garbage").is_err());
        assert!(decode_agent_datagram(&[0x82, 0x81], ThriftProtocol::Compact).is_err());
    }

    #[test]
    fn proto_references_pick_the_parent_and_keep_the_rest_as_links() {
        let trace = vec![7u8; 16];
        let batch = proto::Batch {
            process: Some(proto::Process { service_name: "api".into(), tags: vec![] }),
            spans: vec![proto::Span {
                trace_id: trace.clone(),
                span_id: vec![1; 8],
                operation_name: "op".into(),
                references: vec![
                    proto::SpanRef { trace_id: trace.clone(), span_id: vec![2; 8], ref_type: 1 },
                    proto::SpanRef { trace_id: trace.clone(), span_id: vec![3; 8], ref_type: 0 },
                ],
                start_time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
                duration: Some(prost_types::Duration { seconds: 0, nanos: 1_234 }),
                ..Default::default()
            }],
        };
        let request = to_otlp(vec![from_proto_batch(batch).unwrap()]);
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.parent_span_id, vec![3; 8]);
        assert_eq!(span.links.len(), 1);
        assert_eq!(span.links[0].span_id, vec![2; 8]);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_005);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_234);
    }
}
