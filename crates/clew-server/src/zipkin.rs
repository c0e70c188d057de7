//! Zipkin on its own port (9411), as a Zipkin server serves it: `POST /api/v2/spans` (JSON or
//! protobuf, optionally gzip) and `POST /api/v1/spans` (JSON), answered 202 once the spans are
//! durable; and the v2 query API (`/api/v2/services`, `/spans`, `/remoteServices`, `/traces`,
//! `/trace/{id}`, `/traceMany`, `/dependencies`, `/autocompleteKeys`, `/autocompleteValues`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clew_ingest::zipkin::{self as codec, SHARED_SPAN_ID, ZipkinSpan};
use clew_model::{Span, SpanKind, StatusCode as SpanStatus, TraceId, Value};
use clew_query::{AttributeFilter, QueryEngine, QueryError, SearchRequest, SortOrder, TraceView};
use serde_json::{Value as Json, json};

use crate::intake::{self, text as text_error};
use crate::receiver::{Receiver, Refusal};

#[derive(Clone)]
pub struct ZipkinState {
    pub receiver: Arc<Receiver>,
    pub query: QueryEngine,
}

pub fn router(state: ZipkinState) -> Router {
    Router::new()
        .route("/api/v2/spans", post(post_v2).get(span_names))
        .route("/api/v1/spans", post(post_v1))
        .route("/api/v2/services", get(services))
        .route("/api/v2/remoteServices", get(remote_services))
        .route("/api/v2/traces", get(find_traces))
        .route("/api/v2/trace/{trace_id}", get(get_trace))
        .route("/api/v2/traceMany", get(trace_many))
        .route("/api/v2/dependencies", get(dependencies))
        .route("/api/v2/autocompleteKeys", get(autocomplete_keys))
        .route("/api/v2/autocompleteValues", get(autocomplete_values))
        .route("/health", get(|| async { axum::Json(json!({ "status": "UP", "zipkin": { "status": "UP" } })) }))
        .fallback(|| async { text_error(StatusCode::NOT_FOUND, "no such endpoint: Clew's Zipkin API is under /api/v2") })
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

// ---- ingest ----

#[derive(Clone, Copy)]
enum Format {
    V2Json,
    V2Proto,
    V1Json,
}

async fn post_v2(State(state): State<ZipkinState>, headers: HeaderMap, request: Request) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let format = match media.as_str() {
        "application/json" | "" => Format::V2Json,
        "application/x-protobuf" | "application/protobuf" => Format::V2Proto,
        other => {
            state.receiver.refuse(Refusal::Unsupported(String::new()));
            return text_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("unsupported Content-Type {other:?}: send application/json or application/x-protobuf"),
            );
        }
    };
    ingest(&state, &headers, request, format).await
}

async fn post_v1(State(state): State<ZipkinState>, headers: HeaderMap, request: Request) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        state.receiver.refuse(Refusal::Unsupported(String::new()));
        return text_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "v1 spans are accepted as application/json (Thrift is not supported)");
    }
    ingest(&state, &headers, request, Format::V1Json).await
}

async fn ingest(state: &ZipkinState, headers: &HeaderMap, request: Request, format: Format) -> Response {
    let receiver = &state.receiver;
    let bytes = match intake::read_body(receiver, headers, request).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let decoded = match format {
        Format::V2Json => codec::decode_v2_json(&bytes),
        Format::V2Proto => codec::decode_v2_proto(&bytes),
        Format::V1Json => codec::decode_v1_json(&bytes),
    };
    let spans: Vec<ZipkinSpan> = match decoded {
        Ok(spans) => spans,
        Err(error) => {
            receiver.refuse(Refusal::Malformed(String::new()));
            return text_error(StatusCode::BAD_REQUEST, &format!("cannot read the spans: {error}"));
        }
    };
    intake::answer(receiver, receiver.export(codec::to_otlp(spans), None).await)
}

// ---- query ----

struct ZipkinError(StatusCode, String);

impl IntoResponse for ZipkinError {
    fn into_response(self) -> Response {
        text_error(self.0, &self.1)
    }
}

impl From<QueryError> for ZipkinError {
    fn from(error: QueryError) -> Self {
        let (status, message) = intake::query_error(error);
        Self(status, message)
    }
}

fn bad_request(message: impl Into<String>) -> ZipkinError {
    ZipkinError(StatusCode::BAD_REQUEST, message.into())
}

type ZipkinResult = Result<axum::Json<Json>, ZipkinError>;

fn pairs(raw: Option<String>) -> Result<Vec<(String, String)>, ZipkinError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).map_err(|e| bad_request(format!("query string: {e}")))
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn number(pairs: &[(String, String)], key: &str) -> Result<Option<u64>, ZipkinError> {
    param(pairs, key).map(|v| v.parse::<u64>().map_err(|_| bad_request(format!("{key} must be a whole number, not {v:?}")))).transpose()
}

async fn services(State(state): State<ZipkinState>) -> ZipkinResult {
    let names: Vec<String> = state.query.services().await?.into_iter().map(|(name, _)| name).collect();
    Ok(axum::Json(json!(names)))
}

async fn span_names(State(state): State<ZipkinState>, RawQuery(raw): RawQuery) -> ZipkinResult {
    let pairs = pairs(raw)?;
    let service = param(&pairs, "serviceName").ok_or_else(|| bad_request("serviceName is required"))?;
    let mut names: Vec<String> = state.query.operations(service).await?.into_iter().map(|(name, _, _)| name).collect();
    names.dedup();
    Ok(axum::Json(json!(names)))
}

async fn remote_services(State(state): State<ZipkinState>, RawQuery(raw): RawQuery) -> ZipkinResult {
    let pairs = pairs(raw)?;
    let service = param(&pairs, "serviceName").ok_or_else(|| bad_request("serviceName is required"))?;
    Ok(axum::Json(json!(state.query.remote_services(service).await?)))
}

/// Zipkin's default query window: a day.
const DEFAULT_LOOKBACK_MS: u64 = 24 * 3600 * 1000;

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn find_traces(State(state): State<ZipkinState>, RawQuery(raw): RawQuery) -> ZipkinResult {
    let pairs = pairs(raw)?;
    let mut request = SearchRequest { limit: 10, sort: SortOrder::Newest, ..SearchRequest::default() };
    request.service = param(&pairs, "serviceName").map(str::to_string);
    request.operation = param(&pairs, "spanName").filter(|name| *name != "all").map(str::to_string);
    request.min_duration_nanos = number(&pairs, "minDuration")?.map(|us| us.saturating_mul(1000));
    request.max_duration_nanos = number(&pairs, "maxDuration")?.map(|us| us.saturating_mul(1000));
    let end = number(&pairs, "endTs")?.unwrap_or_else(now_millis);
    let lookback = number(&pairs, "lookback")?.unwrap_or(DEFAULT_LOOKBACK_MS);
    request.start_unix_nano = Some(end.saturating_sub(lookback).saturating_mul(1_000_000));
    request.end_unix_nano = Some(end.saturating_mul(1_000_000));
    if let Some(limit) = number(&pairs, "limit")? {
        request.limit = limit as usize;
    }
    if let Some(query) = param(&pairs, "annotationQuery") {
        for term in query.split(" and ").map(str::trim).filter(|t| !t.is_empty()) {
            match term.split_once('=') {
                Some((key, value)) => request.attributes.push(AttributeFilter::equals(key.trim(), value.trim())),
                // A bare word: the span failed (`error`), or carries that tag.
                None if term == "error" => request.status = Some(SpanStatus::Error),
                None => request.attributes.push(AttributeFilter::exists(term)),
            }
        }
    }
    let summaries = state.query.search(&request).await?;
    let ids: Vec<TraceId> = summaries.iter().filter_map(|s| TraceId::from_hex(&s.trace_id).ok()).collect();
    let traces: Vec<Json> = state.query.traces(&ids, false).await?.iter().map(trace_json).collect();
    Ok(axum::Json(Json::Array(traces)))
}

fn parse_id(text: &str) -> Result<TraceId, ZipkinError> {
    if !(text.len() == 16 || text.len() == 32) {
        return Err(bad_request(format!("traceId {text:?} must be 16 or 32 lowercase hex characters")));
    }
    TraceId::from_hex(text).map_err(|e| bad_request(format!("traceId {text:?}: {e}")))
}

async fn get_trace(State(state): State<ZipkinState>, Path(trace_id): Path<String>) -> Result<axum::Json<Json>, ZipkinError> {
    let id = parse_id(&trace_id)?;
    let view =
        state.query.trace_with(id, false).await?.ok_or_else(|| ZipkinError(StatusCode::NOT_FOUND, format!("{trace_id} not found")))?;
    Ok(axum::Json(trace_json(&view)))
}

async fn trace_many(State(state): State<ZipkinState>, RawQuery(raw): RawQuery) -> ZipkinResult {
    let pairs = pairs(raw)?;
    let list = param(&pairs, "traceIds").ok_or_else(|| bad_request("traceIds is required"))?;
    let ids = list.split(',').map(|id| parse_id(id.trim())).collect::<Result<Vec<_>, _>>()?;
    let traces: Vec<Json> = state.query.traces(&ids, false).await?.iter().map(trace_json).collect();
    Ok(axum::Json(Json::Array(traces)))
}

async fn dependencies(State(state): State<ZipkinState>, RawQuery(raw): RawQuery) -> ZipkinResult {
    let pairs = pairs(raw)?;
    let end = number(&pairs, "endTs")?.ok_or_else(|| bad_request("endTs is required"))?;
    let lookback = number(&pairs, "lookback")?.unwrap_or(DEFAULT_LOOKBACK_MS);
    let edges = state.query.dependencies(end.saturating_sub(lookback).saturating_mul(1_000_000), end.saturating_mul(1_000_000)).await?;
    Ok(axum::Json(Json::Array(
        edges
            .into_iter()
            .map(|d| json!({ "parent": d.parent, "child": d.child, "callCount": d.call_count, "errorCount": d.error_count }))
            .collect(),
    )))
}

async fn autocomplete_keys(State(state): State<ZipkinState>) -> ZipkinResult {
    let keys: Vec<String> = state.query.attribute_keys(clew_query::AttributeScope::Span).await?.into_iter().map(|(k, _)| k).collect();
    Ok(axum::Json(json!(keys)))
}

async fn autocomplete_values(State(state): State<ZipkinState>, RawQuery(raw): RawQuery) -> ZipkinResult {
    let pairs = pairs(raw)?;
    let key = param(&pairs, "key").ok_or_else(|| bad_request("key is required"))?;
    let values: Vec<String> =
        state.query.attribute_values(clew_query::AttributeScope::Span, key, 1000).await?.into_iter().map(|(v, _)| v).collect();
    Ok(axum::Json(json!(values)))
}

// ---- the Zipkin v2 span model ----

fn endpoint(service: Option<&str>, address: Option<&Value>, port: Option<&Value>) -> Option<Json> {
    let mut object = serde_json::Map::new();
    if let Some(service) = service {
        object.insert("serviceName".into(), json!(service));
    }
    if let Some(address) = address.map(Value::render) {
        match address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => object.insert("ipv4".into(), json!(address)),
            Ok(std::net::IpAddr::V6(_)) => object.insert("ipv6".into(), json!(address)),
            Err(_) => None,
        };
    }
    if let Some(port) = port.and_then(Value::as_int).filter(|p| (1..=65535).contains(p)) {
        object.insert("port".into(), json!(port));
    }
    (!object.is_empty()).then_some(Json::Object(object))
}

/// The spans of a trace as Zipkin v2 JSON, in the trace's order.
pub fn trace_json(view: &TraceView) -> Json {
    let spans = &view.trace.spans;
    Json::Array(spans.iter().map(|span| span_json(span, spans)).collect())
}

fn span_json(span: &Span, trace: &[Span]) -> Json {
    let attribute = |key: &str| span.attribute(key);
    // Attributes that Zipkin carries in endpoints rather than tags.
    let peer_address = attribute("network.peer.address");
    let peer_port = attribute("network.peer.port");
    let in_endpoints = |key: &str| match key {
        "network.local.address" | "network.local.port" | "peer.service" | "network.peer.address" | "network.peer.port" => true,
        "server.address" => peer_address.is_some() && attribute("server.address") == peer_address,
        "server.port" => peer_port.is_some() && attribute("server.port") == peer_port,
        _ => key == SHARED_SPAN_ID,
    };
    let mut tags = serde_json::Map::new();
    for attribute in span.resource.attributes.iter().filter(|a| a.key != "service.name") {
        tags.insert(attribute.key.clone(), json!(attribute.value.render()));
    }
    for attribute in span.attributes.iter().filter(|a| !in_endpoints(&a.key)) {
        tags.insert(attribute.key.clone(), json!(attribute.value.render()));
    }
    match span.status_code {
        SpanStatus::Error if !tags.contains_key("error") => {
            let message = if span.status_message.is_empty() { "true" } else { span.status_message.as_str() };
            tags.insert("error".into(), json!(message));
        }
        SpanStatus::Ok => {
            tags.insert("otel.status_code".into(), json!("OK"));
        }
        _ => {}
    }
    if !span.scope.name.is_empty() {
        tags.insert("otel.scope.name".into(), json!(span.scope.name));
    }
    if !span.scope.version.is_empty() {
        tags.insert("otel.scope.version".into(), json!(span.scope.version));
    }

    let shared = attribute(SHARED_SPAN_ID).and_then(Value::as_str);
    let (id, parent) = match shared {
        // Given back as it came: the shared ID, under the client's parent.
        Some(shared) => {
            let client_parent = trace.iter().find(|s| s.span_id.to_hex() == shared).and_then(|client| client.parent_span_id);
            (shared.to_string(), client_parent.map(|p| p.to_hex()))
        }
        None => (span.span_id.to_hex(), span.parent_span_id.map(|p| p.to_hex())),
    };
    let mut object = serde_json::Map::new();
    object.insert("traceId".into(), json!(span.trace_id.to_compact_hex()));
    if let Some(parent) = parent {
        object.insert("parentId".into(), json!(parent));
    }
    object.insert("id".into(), json!(id));
    let kind = match span.kind {
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Server => Some("SERVER"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        _ => None,
    };
    if let Some(kind) = kind {
        object.insert("kind".into(), json!(kind));
    }
    if !span.name.is_empty() {
        object.insert("name".into(), json!(span.name));
    }
    object.insert("timestamp".into(), json!(span.start_time_unix_nano / 1000));
    // Zipkin rounds durations below one microsecond up.
    object.insert("duration".into(), json!((span.duration_nanos() / 1000).max(1)));
    if let Some(local) = endpoint(Some(span.service_name()), attribute("network.local.address"), attribute("network.local.port")) {
        object.insert("localEndpoint".into(), local);
    }
    if let Some(remote) = endpoint(attribute("peer.service").and_then(Value::as_str), peer_address, peer_port) {
        object.insert("remoteEndpoint".into(), remote);
    }
    if !span.events.is_empty() {
        let annotations: Vec<Json> = span
            .events
            .iter()
            .map(|event| {
                let value = if event.attributes.is_empty() {
                    event.name.clone()
                } else {
                    let attributes: serde_json::Map<String, Json> =
                        event.attributes.iter().map(|a| (a.key.clone(), a.value.to_json())).collect();
                    // As OpenTelemetry's Zipkin exporters write it.
                    json!({ event.name.clone(): Json::Object(attributes) }).to_string()
                };
                json!({ "timestamp": event.time_unix_nano / 1000, "value": value })
            })
            .collect();
        object.insert("annotations".into(), Json::Array(annotations));
    }
    if !tags.is_empty() {
        object.insert("tags".into(), Json::Object(tags));
    }
    if shared.is_some() {
        object.insert("shared".into(), json!(true));
    }
    Json::Object(object)
}
