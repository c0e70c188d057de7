//! Zipkin spans (v2 JSON, v2 protobuf `ListOfSpans`, v1 JSON) → OTLP, mapped the way
//! OpenTelemetry's Zipkin translation maps them:
//!
//! - a 64-bit trace ID is padded with zeros to 128 bits;
//! - `kind` gives the span kind (absent: a `span.kind` tag, else unspecified);
//! - the local endpoint's service name becomes `service.name`; tags with resource
//!   semantic-convention names (`host.*`, `telemetry.sdk.*`, …) move to the resource;
//! - the remote endpoint becomes `peer.service`, `network.peer.address`/`port`, and for client
//!   and producer spans `server.address`/`server.port`;
//! - `otel.status_code`/`otel.status_description` and `error` give the status;
//!   `otel.scope.*` (or `otel.library.*`) the instrumentation scope;
//! - annotations become events (`"name": {json}` values are split into name and attributes).
//!
//! A `shared` server span (the v1 RPC model: client and server report one span ID) gets a
//! span ID of its own, derived from the shared one so that a resent span is still recognised
//! as a duplicate, and the client half becomes its parent. The shared ID is kept in the
//! attribute [`SHARED_SPAN_ID`] so the Zipkin API can give the span back as it came.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::Value as Json;

/// The attribute holding the span ID a `shared` server span was reported with.
pub const SHARED_SPAN_ID: &str = "zipkin.shared_span_id";

/// A Zipkin span as received, whatever the encoding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZipkinSpan {
    /// 8 or 16 bytes.
    pub trace_id: Vec<u8>,
    pub parent_id: Option<[u8; 8]>,
    pub id: [u8; 8],
    pub kind: Option<Kind>,
    pub name: String,
    pub timestamp_nanos: u64,
    pub duration_nanos: u64,
    pub local_endpoint: Option<Endpoint>,
    pub remote_endpoint: Option<Endpoint>,
    /// (time in ns, value)
    pub annotations: Vec<(u64, String)>,
    pub tags: Vec<(String, String)>,
    pub debug: bool,
    pub shared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "CLIENT" => Some(Self::Client),
            "SERVER" => Some(Self::Server),
            "PRODUCER" => Some(Self::Producer),
            "CONSUMER" => Some(Self::Consumer),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoint {
    pub service_name: Option<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub port: Option<u16>,
}

impl Endpoint {
    fn address(&self) -> Option<&str> {
        self.ipv4.as_deref().or(self.ipv6.as_deref())
    }
}

/// Why a Zipkin request could not be read: the client's fault, answered with 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ZipkinError(pub String);

fn error(message: impl Into<String>) -> ZipkinError {
    ZipkinError(message.into())
}

// ---------------------------------------------------------------------------------------------
// v2 JSON

/// Decodes a v2 JSON `ListOfSpans`.
pub fn decode_v2_json(bytes: &[u8]) -> Result<Vec<ZipkinSpan>, ZipkinError> {
    let value: Json = serde_json::from_slice(bytes).map_err(|e| error(format!("invalid JSON: {e}")))?;
    let Json::Array(items) = value else {
        return Err(error("expected a JSON array of spans (ListOfSpans)"));
    };
    items.iter().enumerate().map(|(index, item)| v2_span(item).map_err(|e| error(format!("span {index}: {}", e.0)))).collect()
}

fn v2_span(item: &Json) -> Result<ZipkinSpan, ZipkinError> {
    let object = item.as_object().ok_or_else(|| error("a span must be a JSON object"))?;
    let text = |key: &str| object.get(key).and_then(Json::as_str);
    let trace_id = trace_id_hex(text("traceId").ok_or_else(|| error("traceId is required"))?)?;
    let id = span_id_hex(text("id").ok_or_else(|| error("id is required"))?, "id")?;
    let parent_id = match text("parentId") {
        Some(parent) if !parent.is_empty() => Some(span_id_hex(parent, "parentId")?),
        _ => None,
    };
    let kind = match text("kind") {
        Some(kind) => Some(Kind::parse(kind).ok_or_else(|| error(format!("kind {kind:?} is not CLIENT, SERVER, PRODUCER or CONSUMER")))?),
        None => None,
    };
    let mut annotations = Vec::new();
    if let Some(list) = object.get("annotations") {
        for annotation in list.as_array().ok_or_else(|| error("annotations must be an array"))? {
            let timestamp = micros_to_nanos(annotation.get("timestamp"), "annotation timestamp")?;
            let value = annotation.get("value").and_then(Json::as_str).unwrap_or_default().to_string();
            annotations.push((timestamp, value));
        }
    }
    let mut tags = Vec::new();
    if let Some(map) = object.get("tags") {
        for (key, value) in map.as_object().ok_or_else(|| error("tags must be an object of strings"))? {
            tags.push((key.clone(), scalar_text(value).ok_or_else(|| error(format!("tag {key:?} must be a string")))?));
        }
    }
    Ok(ZipkinSpan {
        trace_id,
        parent_id,
        id,
        kind,
        name: text("name").unwrap_or_default().to_string(),
        timestamp_nanos: micros_to_nanos(object.get("timestamp"), "timestamp")?,
        duration_nanos: micros_to_nanos(object.get("duration"), "duration")?,
        local_endpoint: object.get("localEndpoint").map(json_endpoint).transpose()?,
        remote_endpoint: object.get("remoteEndpoint").map(json_endpoint).transpose()?,
        annotations,
        tags,
        debug: object.get("debug").and_then(Json::as_bool).unwrap_or(false),
        shared: object.get("shared").and_then(Json::as_bool).unwrap_or(false),
    })
}

fn json_endpoint(value: &Json) -> Result<Endpoint, ZipkinError> {
    if value.is_null() {
        return Ok(Endpoint::default());
    }
    let object = value.as_object().ok_or_else(|| error("an endpoint must be an object"))?;
    let text = |key: &str| object.get(key).and_then(Json::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let port = match object.get("port") {
        None | Some(Json::Null) => None,
        Some(port) => {
            let number =
                port.as_u64().filter(|p| *p <= u16::MAX as u64).ok_or_else(|| error(format!("port {port} is not a port number")))?;
            (number > 0).then_some(number as u16)
        }
    };
    Ok(Endpoint { service_name: text("serviceName"), ipv4: text("ipv4"), ipv6: text("ipv6"), port })
}

/// A number of microseconds (integer or, as OpenTelemetry exporters may send, fractional).
fn micros_to_nanos(value: Option<&Json>, what: &str) -> Result<u64, ZipkinError> {
    match value {
        None | Some(Json::Null) => Ok(0),
        Some(Json::Number(number)) => {
            if let Some(micros) = number.as_u64() {
                Ok(micros.saturating_mul(1000))
            } else if let Some(micros) = number.as_f64().filter(|m| *m >= 0.0 && m.is_finite()) {
                Ok((micros * 1000.0).round() as u64)
            } else {
                Err(error(format!("{what} {number} is not a number of microseconds")))
            }
        }
        Some(Json::String(text)) => {
            text.parse::<u64>().map(|m| m.saturating_mul(1000)).map_err(|_| error(format!("{what} {text:?} is not a number")))
        }
        Some(other) => Err(error(format!("{what} {other} is not a number of microseconds"))),
    }
}

fn scalar_text(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Zipkin is lenient about leading zeros: an ID shorter than its width is padded.
fn hex_id(text: &str, width: usize, what: &str) -> Result<Vec<u8>, ZipkinError> {
    if text.is_empty() || text.len() > width || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(error(format!("{what} {text:?} must be up to {width} hex characters")));
    }
    let padded = format!("{text:0>width$}");
    let bytes = hex::decode(padded.to_ascii_lowercase()).map_err(|e| error(format!("{what}: {e}")))?;
    if bytes.iter().all(|b| *b == 0) {
        return Err(error(format!("{what} must not be all zeros")));
    }
    Ok(bytes)
}

fn trace_id_hex(text: &str) -> Result<Vec<u8>, ZipkinError> {
    hex_id(text, if text.len() > 16 { 32 } else { 16 }, "traceId")
}

fn span_id_hex(text: &str, what: &str) -> Result<[u8; 8], ZipkinError> {
    let bytes = hex_id(text, 16, what)?;
    Ok(bytes.try_into().expect("16 hex characters are 8 bytes"))
}

// ---------------------------------------------------------------------------------------------
// v2 protobuf (zipkin.proto3), declared here; prost does the encoding.

pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListOfSpans {
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub parent_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub id: Vec<u8>,
        /// 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
        #[prost(int32, tag = "4")]
        pub kind: i32,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(fixed64, tag = "6")]
        pub timestamp: u64,
        #[prost(uint64, tag = "7")]
        pub duration: u64,
        #[prost(message, optional, tag = "8")]
        pub local_endpoint: Option<Endpoint>,
        #[prost(message, optional, tag = "9")]
        pub remote_endpoint: Option<Endpoint>,
        #[prost(message, repeated, tag = "10")]
        pub annotations: Vec<Annotation>,
        #[prost(map = "string, string", tag = "11")]
        pub tags: std::collections::HashMap<String, String>,
        #[prost(bool, tag = "12")]
        pub debug: bool,
        #[prost(bool, tag = "13")]
        pub shared: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Endpoint {
        #[prost(string, tag = "1")]
        pub service_name: String,
        #[prost(bytes = "vec", tag = "2")]
        pub ipv4: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub ipv6: Vec<u8>,
        #[prost(int32, tag = "4")]
        pub port: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Annotation {
        #[prost(fixed64, tag = "1")]
        pub timestamp: u64,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// Decodes a v2 protobuf `ListOfSpans`.
pub fn decode_v2_proto(bytes: &[u8]) -> Result<Vec<ZipkinSpan>, ZipkinError> {
    use prost::Message;
    let list = proto::ListOfSpans::decode(bytes).map_err(|e| error(format!("invalid protobuf ListOfSpans: {e}")))?;
    list.spans.into_iter().enumerate().map(|(index, span)| proto_span(span).map_err(|e| error(format!("span {index}: {}", e.0)))).collect()
}

fn proto_span(span: proto::Span) -> Result<ZipkinSpan, ZipkinError> {
    if span.trace_id.len() != 8 && span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(error("trace_id must be 8 or 16 bytes, not all zero"));
    }
    let id: [u8; 8] = span.id.as_slice().try_into().map_err(|_| error("id must be 8 bytes"))?;
    if id == [0; 8] {
        return Err(error("id must not be all zeros"));
    }
    let parent_id = match span.parent_id.len() {
        0 => None,
        8 if span.parent_id.iter().all(|b| *b == 0) => None,
        8 => Some(span.parent_id.as_slice().try_into().expect("8 bytes")),
        _ => return Err(error("parent_id must be 8 bytes")),
    };
    let kind = match span.kind {
        0 => None,
        1 => Some(Kind::Client),
        2 => Some(Kind::Server),
        3 => Some(Kind::Producer),
        4 => Some(Kind::Consumer),
        other => return Err(error(format!("kind {other} is not a Zipkin span kind"))),
    };
    let endpoint = |endpoint: proto::Endpoint| -> Result<Endpoint, ZipkinError> {
        let ipv4 = match endpoint.ipv4.len() {
            0 => None,
            4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(endpoint.ipv4.as_slice()).expect("4 bytes")).to_string()),
            _ => return Err(error("endpoint ipv4 must be 4 bytes")),
        };
        let ipv6 = match endpoint.ipv6.len() {
            0 => None,
            16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(endpoint.ipv6.as_slice()).expect("16 bytes")).to_string()),
            _ => return Err(error("endpoint ipv6 must be 16 bytes")),
        };
        let port = u16::try_from(endpoint.port).map_err(|_| error(format!("port {} is not a port number", endpoint.port)))?;
        Ok(Endpoint { service_name: Some(endpoint.service_name).filter(|s| !s.is_empty()), ipv4, ipv6, port: (port > 0).then_some(port) })
    };
    let mut tags: Vec<(String, String)> = span.tags.into_iter().collect();
    tags.sort();
    Ok(ZipkinSpan {
        trace_id: span.trace_id,
        parent_id,
        id,
        kind,
        name: span.name,
        timestamp_nanos: span.timestamp.saturating_mul(1000),
        duration_nanos: span.duration.saturating_mul(1000),
        local_endpoint: span.local_endpoint.map(endpoint).transpose()?,
        remote_endpoint: span.remote_endpoint.map(endpoint).transpose()?,
        annotations: span.annotations.into_iter().map(|a| (a.timestamp.saturating_mul(1000), a.value)).collect(),
        tags,
        debug: span.debug,
        shared: span.shared,
    })
}

// ---------------------------------------------------------------------------------------------
// v1 JSON: one span may hold both sides of an RPC, told apart by the core annotations
// (cs/cr client, sr/ss server, ms/mr messaging) and their endpoints.

/// Decodes a v1 JSON list of spans into v2 spans.
pub fn decode_v1_json(bytes: &[u8]) -> Result<Vec<ZipkinSpan>, ZipkinError> {
    let value: Json = serde_json::from_slice(bytes).map_err(|e| error(format!("invalid JSON: {e}")))?;
    let Json::Array(items) = value else {
        return Err(error("expected a JSON array of v1 spans"));
    };
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        out.extend(v1_span(item).map_err(|e| error(format!("span {index}: {}", e.0)))?);
    }
    Ok(out)
}

fn v1_span(item: &Json) -> Result<Vec<ZipkinSpan>, ZipkinError> {
    let object = item.as_object().ok_or_else(|| error("a span must be a JSON object"))?;
    let text = |key: &str| object.get(key).and_then(Json::as_str);
    let mut trace_id = text("traceId").ok_or_else(|| error("traceId is required"))?.to_string();
    if let Some(high) = text("traceIdHigh") {
        trace_id = format!("{high:0>16}{trace_id:0>16}");
    }
    let base = ZipkinSpan {
        trace_id: trace_id_hex(&trace_id)?,
        id: span_id_hex(text("id").ok_or_else(|| error("id is required"))?, "id")?,
        parent_id: match text("parentId") {
            Some(parent) if !parent.is_empty() => Some(span_id_hex(parent, "parentId")?),
            _ => None,
        },
        name: text("name").unwrap_or_default().to_string(),
        debug: object.get("debug").and_then(Json::as_bool).unwrap_or(false),
        ..ZipkinSpan::default()
    };
    let span_timestamp = micros_to_nanos(object.get("timestamp"), "timestamp")?;
    let span_duration = micros_to_nanos(object.get("duration"), "duration")?;

    let mut annotations = Vec::new();
    for annotation in object.get("annotations").and_then(Json::as_array).into_iter().flatten() {
        let timestamp = micros_to_nanos(annotation.get("timestamp"), "annotation timestamp")?;
        let value = annotation.get("value").and_then(Json::as_str).unwrap_or_default().to_string();
        let endpoint = annotation.get("endpoint").map(json_endpoint).transpose()?;
        annotations.push((timestamp, value, endpoint));
    }
    let mut binary = Vec::new();
    for annotation in object.get("binaryAnnotations").and_then(Json::as_array).into_iter().flatten() {
        let key = annotation.get("key").and_then(Json::as_str).unwrap_or_default().to_string();
        let value = annotation.get("value").and_then(scalar_text).unwrap_or_default();
        let endpoint = annotation.get("endpoint").map(json_endpoint).transpose()?;
        binary.push((key, value, endpoint));
    }
    let core = |name: &str| annotations.iter().find(|(_, value, _)| value == name).map(|(ts, _, ep)| (*ts, ep.clone()));
    let (cs, cr, sr, ss, ms, mr) = (core("cs"), core("cr"), core("sr"), core("ss"), core("ms"), core("mr"));
    let address = |key: &str| binary.iter().find(|(k, _, _)| k == key).and_then(|(_, _, ep)| ep.clone());

    let mut spans: Vec<ZipkinSpan> = Vec::new();
    let side = |kind: Kind, begin: &Option<(u64, Option<Endpoint>)>, end: &Option<(u64, Option<Endpoint>)>, remote: Option<Endpoint>| {
        let local = begin.as_ref().and_then(|(_, ep)| ep.clone()).or_else(|| end.as_ref().and_then(|(_, ep)| ep.clone()));
        let timestamp = begin.as_ref().map(|(ts, _)| *ts).unwrap_or(0);
        let duration = match (begin, end) {
            (Some((b, _)), Some((e, _))) if e >= b => e - b,
            _ => 0,
        };
        ZipkinSpan {
            kind: Some(kind),
            timestamp_nanos: timestamp,
            duration_nanos: duration,
            local_endpoint: local,
            remote_endpoint: remote,
            ..base.clone()
        }
    };
    if cs.is_some() || cr.is_some() {
        spans.push(side(Kind::Client, &cs, &cr, address("sa")));
    }
    if sr.is_some() || ss.is_some() {
        let mut server = side(Kind::Server, &sr, &ss, address("ca"));
        // Shared with a client: reported in this same span, or (v1's convention) elsewhere, in
        // which case the server side leaves the span's timestamp to the client.
        server.shared = !spans.is_empty() || span_timestamp == 0;
        spans.push(server);
    }
    if ms.is_some() {
        spans.push(side(Kind::Producer, &ms, &None, address("ma")));
    }
    if mr.is_some() {
        spans.push(side(Kind::Consumer, &mr, &None, address("ma")));
    }
    if spans.is_empty() {
        // A local span: its endpoint is the first one named anywhere.
        let local = binary
            .iter()
            .find(|(key, _, _)| key == "lc")
            .and_then(|(_, _, ep)| ep.clone())
            .or_else(|| annotations.iter().find_map(|(_, _, ep)| ep.clone()))
            .or_else(|| binary.iter().find_map(|(_, _, ep)| ep.clone()));
        spans.push(ZipkinSpan { local_endpoint: local, ..base.clone() });
    }
    // The span-level timestamp and duration belong to whoever started the span: the first side.
    if spans[0].timestamp_nanos == 0 {
        spans[0].timestamp_nanos = span_timestamp;
    }
    if spans[0].duration_nanos == 0 {
        spans[0].duration_nanos = span_duration;
    }

    // Everything else goes to the side whose endpoint recorded it, else to the first.
    let owner = |spans: &[ZipkinSpan], endpoint: &Option<Endpoint>| -> usize {
        let name = endpoint.as_ref().and_then(|e| e.service_name.as_deref());
        spans
            .iter()
            .position(|span| name.is_some() && span.local_endpoint.as_ref().and_then(|e| e.service_name.as_deref()) == name)
            .unwrap_or(0)
    };
    for (timestamp, value, endpoint) in &annotations {
        if ["cs", "cr", "sr", "ss", "ms", "mr"].contains(&value.as_str()) {
            continue;
        }
        let index = owner(&spans, endpoint);
        spans[index].annotations.push((*timestamp, value.clone()));
    }
    for (key, value, endpoint) in &binary {
        if ["ca", "sa", "ma"].contains(&key.as_str()) {
            continue;
        }
        let index = owner(&spans, endpoint);
        spans[index].tags.push((key.clone(), value.clone()));
    }
    Ok(spans)
}

// ---------------------------------------------------------------------------------------------
// → OTLP

/// Tags that describe the process rather than the operation, moved to the resource.
const RESOURCE_TAG_PREFIXES: &[&str] = &[
    "service.",
    "telemetry.sdk.",
    "telemetry.distro.",
    "host.",
    "os.",
    "process.",
    "container.",
    "k8s.",
    "cloud.",
    "deployment.",
    "device.",
    "faas.",
];

/// Converts Zipkin spans to one OTLP request, grouped by resource and scope.
pub fn to_otlp(mut spans: Vec<ZipkinSpan>) -> ExportTraceServiceRequest {
    // A server span sent together with a client span of the same ID is that client's other
    // half, whether or not the tracer said so.
    let clients: std::collections::HashSet<(Vec<u8>, [u8; 8])> =
        spans.iter().filter(|s| s.kind == Some(Kind::Client)).map(|s| (s.trace_id.clone(), s.id)).collect();
    for span in spans.iter_mut().filter(|s| s.kind == Some(Kind::Server)) {
        if clients.contains(&(span.trace_id.clone(), span.id)) {
            span.shared = true;
        }
    }
    // (resource attributes, scope name, scope version) → spans
    let mut groups: BTreeMap<(Vec<(String, String)>, String, String), Vec<Span>> = BTreeMap::new();
    for span in spans {
        let (key, converted) = convert(span);
        groups.entry(key).or_default().push(converted);
    }
    let mut by_resource: BTreeMap<Vec<(String, String)>, Vec<ScopeSpans>> = BTreeMap::new();
    for ((resource, scope_name, scope_version), spans) in groups {
        let scope = (!scope_name.is_empty() || !scope_version.is_empty()).then(|| InstrumentationScope {
            name: scope_name,
            version: scope_version,
            ..Default::default()
        });
        by_resource.entry(resource).or_default().push(ScopeSpans { scope, spans, schema_url: String::new() });
    }
    let resource_spans = by_resource
        .into_iter()
        .map(|(attributes, scope_spans)| ResourceSpans {
            resource: Some(Resource { attributes: attributes.into_iter().map(|(k, v)| string_kv(k, v)).collect(), ..Default::default() }),
            scope_spans,
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn string_kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

/// A stable 64-bit FNV-1a hash: the derived ID of a shared server span must come out the
/// same on every delivery and every version of Clew.
fn derived_span_id(trace_id: &[u8], span_id: &[u8; 8]) -> [u8; 8] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in trace_id.iter().chain(span_id).chain(b"zipkin-shared-server") {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if hash == 0 {
        hash = 1;
    }
    hash.to_be_bytes()
}

type GroupKey = (Vec<(String, String)>, String, String);

fn convert(mut zipkin: ZipkinSpan) -> (GroupKey, Span) {
    let mut trace_id = zipkin.trace_id.clone();
    if trace_id.len() == 8 {
        let mut padded = vec![0u8; 8];
        padded.extend_from_slice(&trace_id);
        trace_id = padded;
    }
    let take = |tags: &mut Vec<(String, String)>, key: &str| -> Option<String> {
        let position = tags.iter().position(|(k, _)| k == key)?;
        Some(tags.remove(position).1)
    };

    let kind = match zipkin.kind {
        Some(Kind::Client) => span::SpanKind::Client,
        Some(Kind::Server) => span::SpanKind::Server,
        Some(Kind::Producer) => span::SpanKind::Producer,
        Some(Kind::Consumer) => span::SpanKind::Consumer,
        None => match take(&mut zipkin.tags, "span.kind").as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("client") => span::SpanKind::Client,
            Some("server") => span::SpanKind::Server,
            Some("producer") => span::SpanKind::Producer,
            Some("consumer") => span::SpanKind::Consumer,
            Some("internal") => span::SpanKind::Internal,
            _ => span::SpanKind::Unspecified,
        },
    };

    // Status, as the OpenTelemetry Zipkin exporters write it (and the older `ot.` names).
    let mut status = Status::default();
    let status_code = take(&mut zipkin.tags, "otel.status_code").or_else(|| take(&mut zipkin.tags, "ot.status_code"));
    let description = take(&mut zipkin.tags, "otel.status_description").or_else(|| take(&mut zipkin.tags, "ot.status_description"));
    if let Some(code) = status_code {
        status.code = match code.to_ascii_uppercase().as_str() {
            "OK" => 1,
            "ERROR" => 2,
            "UNSET" | "" => 0,
            _ => 2, // a gRPC code name other than OK, from the oldest exporters
        };
        status.message = description.unwrap_or_default();
    }
    if let Some(position) = zipkin.tags.iter().position(|(k, _)| k == "error") {
        status.code = 2;
        let value = &zipkin.tags[position].1;
        if value.eq_ignore_ascii_case("true") || value.is_empty() {
            zipkin.tags.remove(position);
        } else if status.message.is_empty() {
            status.message = value.clone();
        }
    }

    let scope_name = take(&mut zipkin.tags, "otel.scope.name").or_else(|| take(&mut zipkin.tags, "otel.library.name")).unwrap_or_default();
    let scope_version =
        take(&mut zipkin.tags, "otel.scope.version").or_else(|| take(&mut zipkin.tags, "otel.library.version")).unwrap_or_default();

    let service = zipkin.local_endpoint.as_ref().and_then(|e| e.service_name.clone()).unwrap_or_else(|| "unknown_service".to_string());
    let mut resource = vec![("service.name".to_string(), service)];
    let mut attributes = Vec::new();
    for (key, value) in std::mem::take(&mut zipkin.tags) {
        if key == "service.name" {
            continue;
        }
        if RESOURCE_TAG_PREFIXES.iter().any(|prefix| key.starts_with(prefix)) {
            resource.push((key, value));
        } else {
            attributes.push(string_kv(key, value));
        }
    }
    resource[1..].sort();

    let has = |attributes: &[KeyValue], key: &str| attributes.iter().any(|kv| kv.key == key);
    if let Some(local) = &zipkin.local_endpoint {
        if let Some(address) = local.address()
            && !has(&attributes, "network.local.address")
        {
            attributes.push(string_kv("network.local.address", address));
        }
        if let Some(port) = local.port
            && !has(&attributes, "network.local.port")
        {
            attributes.push(int_kv("network.local.port", port.into()));
        }
    }
    if let Some(remote) = &zipkin.remote_endpoint {
        let calls_out = matches!(zipkin.kind, Some(Kind::Client | Kind::Producer));
        if let Some(name) = &remote.service_name
            && !has(&attributes, "peer.service")
        {
            attributes.push(string_kv("peer.service", name.clone()));
        }
        if let Some(address) = remote.address() {
            if !has(&attributes, "network.peer.address") {
                attributes.push(string_kv("network.peer.address", address));
            }
            if calls_out && !has(&attributes, "server.address") {
                attributes.push(string_kv("server.address", address));
            }
        }
        if let Some(port) = remote.port {
            if !has(&attributes, "network.peer.port") {
                attributes.push(int_kv("network.peer.port", port.into()));
            }
            if calls_out && !has(&attributes, "server.port") {
                attributes.push(int_kv("server.port", port.into()));
            }
        }
    }

    let (span_id, parent_id) = if zipkin.shared && zipkin.kind == Some(Kind::Server) {
        attributes.push(string_kv(SHARED_SPAN_ID, hex::encode(zipkin.id)));
        (derived_span_id(&trace_id, &zipkin.id), Some(zipkin.id))
    } else {
        (zipkin.id, zipkin.parent_id)
    };

    let events = zipkin
        .annotations
        .into_iter()
        .map(|(time, value)| {
            let (name, attributes) = split_annotation(&value);
            span::Event { time_unix_nano: time, name, attributes, dropped_attributes_count: 0 }
        })
        .collect();

    let span = Span {
        trace_id,
        span_id: span_id.to_vec(),
        parent_span_id: parent_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0x100 | 0x01, // W3C sampled; 0x100: the flags are known
        name: zipkin.name,
        kind: kind as i32,
        start_time_unix_nano: zipkin.timestamp_nanos,
        end_time_unix_nano: zipkin.timestamp_nanos.saturating_add(zipkin.duration_nanos),
        attributes,
        events,
        status: (status.code != 0 || !status.message.is_empty()).then_some(status),
        ..Default::default()
    };
    ((resource, scope_name, scope_version), span)
}

/// OpenTelemetry's Zipkin exporters write an event with attributes as `{"name": {json}}` (or,
/// as the specification's example has it, `"name": {json}`).
fn split_annotation(value: &str) -> (String, Vec<KeyValue>) {
    let parsed = if value.starts_with('{') {
        match serde_json::from_str::<Json>(value) {
            Ok(Json::Object(outer)) if outer.len() == 1 => outer.into_iter().next().filter(|(_, inner)| inner.is_object()),
            _ => None,
        }
    } else if let Some(rest) = value.strip_prefix('"')
        && let Some(end) = rest.find("\": {")
    {
        serde_json::from_str::<Json>(&rest[end + 3..]).ok().map(|inner| (rest[..end].to_string(), inner))
    } else {
        None
    };
    if let Some((name, Json::Object(map))) = parsed {
        let attributes = map
            .into_iter()
            .map(|(key, value)| {
                let value = match value {
                    Json::String(text) => any_value::Value::StringValue(text),
                    Json::Bool(b) => any_value::Value::BoolValue(b),
                    Json::Number(n) if n.is_i64() => any_value::Value::IntValue(n.as_i64().expect("checked")),
                    Json::Number(n) => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
                    other => any_value::Value::StringValue(other.to_string()),
                };
                KeyValue { key, value: Some(AnyValue { value: Some(value) }) }
            })
            .collect();
        return (name, attributes);
    }
    (value.to_string(), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
    }

    #[test]
    fn v2_json_maps_like_opentelemetry() {
        let body = br#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","parentId":"6b221d5bc9e6496c",
            "name":"get /api","kind":"CLIENT","timestamp":1556604172355737,"duration":1431,
            "localEndpoint":{"serviceName":"frontend","ipv4":"192.168.99.1","port":3306},
            "remoteEndpoint":{"serviceName":"backend","ipv4":"172.19.0.2","port":58648},
            "annotations":[{"timestamp":1556604172355800,"value":"ws"},{"timestamp":1556604172355900,"value":"\"retry\": {\"attempt\":2}"},{"timestamp":1556604172355950,"value":"{\"gc\": {\"ms\":7}}"}],
            "tags":{"http.method":"GET","error":"boom","otel.scope.name":"lib","host.name":"h1"}}]"#;
        let spans = decode_v2_json(body).unwrap();
        let request = to_otlp(spans);
        assert_eq!(request.resource_spans.len(), 1);
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        let keys: Vec<&str> = resource.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["service.name", "host.name"]);
        let scope = &request.resource_spans[0].scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "lib");
        let span = &scope.spans[0];
        assert_eq!(hex::encode(&span.trace_id), "00000000000000005af7183fb1d4cf5f");
        assert_eq!(hex::encode(&span.parent_span_id), "6b221d5bc9e6496c");
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(span.start_time_unix_nano, 1_556_604_172_355_737_000);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_431_000);
        let status = span.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom"));
        assert_eq!(attr(span, "peer.service"), Some(&any_value::Value::StringValue("backend".into())));
        assert_eq!(attr(span, "server.address"), Some(&any_value::Value::StringValue("172.19.0.2".into())));
        assert_eq!(attr(span, "network.peer.port"), Some(&any_value::Value::IntValue(58648)));
        assert_eq!(attr(span, "network.local.address"), Some(&any_value::Value::StringValue("192.168.99.1".into())));
        assert_eq!(attr(span, "error"), Some(&any_value::Value::StringValue("boom".into())));
        assert_eq!(span.events.len(), 3);
        assert_eq!(span.events[1].name, "retry");
        assert_eq!(span.events[1].attributes[0].key, "attempt");
        assert_eq!(span.events[2].name, "gc");
        assert_eq!(span.events[2].attributes[0].value, Some(AnyValue { value: Some(any_value::Value::IntValue(7)) }));
    }

    #[test]
    fn shared_server_span_gets_its_own_id_under_the_client() {
        let body = br#"[
            {"traceId":"a","id":"b","parentId":"c","kind":"CLIENT","name":"x","timestamp":10,"duration":5,"localEndpoint":{"serviceName":"a"}},
            {"traceId":"a","id":"b","parentId":"c","kind":"SERVER","shared":true,"name":"x","timestamp":11,"duration":3,"localEndpoint":{"serviceName":"b"}}]"#;
        let request = to_otlp(decode_v2_json(body).unwrap());
        let spans: Vec<&Span> = request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        let server = spans.iter().find(|s| s.kind == span::SpanKind::Server as i32).unwrap();
        let client = spans.iter().find(|s| s.kind == span::SpanKind::Client as i32).unwrap();
        assert_eq!(server.parent_span_id, client.span_id);
        assert_ne!(server.span_id, client.span_id);
        // The same span sent again gets the same ID, so it is recognised as a duplicate.
        let again = to_otlp(decode_v2_json(body).unwrap());
        let again: Vec<&Span> = again.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        assert!(again.iter().any(|s| s.span_id == server.span_id));
    }

    #[test]
    fn proto_and_json_agree() {
        use prost::Message;
        let list = proto::ListOfSpans {
            spans: vec![proto::Span {
                trace_id: hex::decode("463ac35c9f6413ad48485a3953bb6124").unwrap(),
                id: hex::decode("48485a3953bb6124").unwrap(),
                kind: 2,
                name: "get".into(),
                timestamp: 1_472_470_996_199_000,
                duration: 207_000,
                local_endpoint: Some(proto::Endpoint { service_name: "frontend".into(), ipv4: vec![127, 0, 0, 1], ..Default::default() }),
                tags: [("http.path".to_string(), "/api".to_string())].into_iter().collect(),
                ..Default::default()
            }],
        };
        let from_proto = decode_v2_proto(&list.encode_to_vec()).unwrap();
        let json = br#"[{"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"48485a3953bb6124","kind":"SERVER","name":"get",
            "timestamp":1472470996199000,"duration":207000,"localEndpoint":{"serviceName":"frontend","ipv4":"127.0.0.1"},"tags":{"http.path":"/api"}}]"#;
        assert_eq!(from_proto, decode_v2_json(json).unwrap());
    }

    #[test]
    fn v1_rpc_span_splits_into_client_and_shared_server() {
        let body = br#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","parentId":"6b221d5bc9e6496c","name":"get",
            "timestamp":1000,"duration":500,
            "annotations":[
              {"timestamp":1000,"value":"cs","endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"}},
              {"timestamp":1100,"value":"sr","endpoint":{"serviceName":"backend","ipv4":"10.0.0.2"}},
              {"timestamp":1200,"value":"cache-miss","endpoint":{"serviceName":"backend"}},
              {"timestamp":1400,"value":"ss","endpoint":{"serviceName":"backend","ipv4":"10.0.0.2"}},
              {"timestamp":1500,"value":"cr","endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"}}],
            "binaryAnnotations":[
              {"key":"http.path","value":"/api","endpoint":{"serviceName":"backend"}},
              {"key":"sa","value":true,"endpoint":{"serviceName":"backend","ipv4":"10.0.0.2","port":8080}}]}]"#;
        let spans = decode_v1_json(body).unwrap();
        assert_eq!(spans.len(), 2);
        let (client, server) = (&spans[0], &spans[1]);
        assert_eq!((client.kind, client.timestamp_nanos, client.duration_nanos), (Some(Kind::Client), 1_000_000, 500_000));
        assert_eq!(client.remote_endpoint.as_ref().unwrap().port, Some(8080));
        assert_eq!(
            (server.kind, server.shared, server.timestamp_nanos, server.duration_nanos),
            (Some(Kind::Server), true, 1_100_000, 300_000)
        );
        assert_eq!(server.annotations, vec![(1_200_000, "cache-miss".to_string())]);
        assert_eq!(server.tags, vec![("http.path".to_string(), "/api".to_string())]);
        assert_eq!(server.local_endpoint.as_ref().unwrap().service_name.as_deref(), Some("backend"));
    }

    #[test]
    fn bad_input_is_explained() {
        for (body, expected) in [
            (&b"{"[..], "invalid JSON"),
            (b"{}", "array"),
            (br#"[{"id":"1"}]"#, "traceId is required"),
            (br#"[{"traceId":"xyz","id":"1"}]"#, "hex"),
            (br#"[{"traceId":"1","id":"0"}]"#, "zeros"),
            (br#"[{"traceId":"1","id":"2","kind":"SIDEWAYS"}]"#, "kind"),
            (br#"[{"traceId":"1","id":"2","timestamp":"soon"}]"#, "timestamp"),
        ] {
            let error = decode_v2_json(body).unwrap_err().0;
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
        assert!(decode_v2_proto(&[0xff, 0xff]).is_err());
    }
}
