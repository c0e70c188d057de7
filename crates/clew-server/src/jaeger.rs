//! The Jaeger query API (`/api/*` on the query port, as Jaeger's own query service serves it),
//! so that Jaeger UI and Grafana's Jaeger data source work against Clew unchanged. Shapes follow
//! Jaeger's `structuredResponse` envelope and its UI JSON model: IDs in lowercase hex (a 64-bit
//! trace ID as 16 characters), times and durations in microseconds, typed tags, processes.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use clew_model::{Attribute, Resource, Span, SpanKind, StatusCode as SpanStatus, TraceId, Value, span_flags};
use clew_query::{AttributeFilter, QueryError, SearchRequest, SortOrder, TraceView};
use serde_json::{Value as Json, json};

use crate::api::{ApiState, parse_duration_nanos};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/services", get(services))
        .route("/api/services/{service}/operations", get(service_operations))
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/dependencies", get(dependencies))
        .route("/api/v3/services", get(v3_services))
        .route("/api/v3/operations", get(v3_operations))
        .route("/api/v3/traces/{trace_id}", get(v3_trace))
        .route("/api/v3/traces", get(v3_find_traces))
        .route("/api/v3/dependencies", get(v3_dependencies))
}

/// A Jaeger error: `{"data": null, …, "errors": [{"code", "msg"}]}` with the same HTTP status.
pub struct JaegerError(StatusCode, String);

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{ "code": self.0.as_u16(), "msg": self.1 }],
        });
        (self.0, axum::Json(body)).into_response()
    }
}

impl From<QueryError> for JaegerError {
    fn from(error: QueryError) -> Self {
        let (status, message) = crate::intake::query_error(error);
        Self(status, message)
    }
}

fn bad_request(message: impl Into<String>) -> JaegerError {
    JaegerError(StatusCode::BAD_REQUEST, message.into())
}

type JaegerResult = Result<axum::Json<Json>, JaegerError>;

fn envelope(data: Json, total: usize) -> axum::Json<Json> {
    axum::Json(json!({ "data": data, "total": total, "limit": 0, "offset": 0, "errors": null }))
}

fn pairs(raw: Option<String>) -> Result<Vec<(String, String)>, JaegerError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).map_err(|e| bad_request(format!("query string: {e}")))
}

async fn services(State(state): State<ApiState>) -> JaegerResult {
    let names: Vec<String> = state.query.services().await?.into_iter().map(|(name, _)| name).collect();
    let total = names.len();
    Ok(envelope(json!(names), total))
}

async fn service_operations(State(state): State<ApiState>, Path(service): Path<String>) -> JaegerResult {
    let mut names: Vec<String> = state.query.operations(&service).await?.into_iter().map(|(name, _, _)| name).collect();
    names.dedup();
    let total = names.len();
    Ok(envelope(json!(names), total))
}

async fn operations(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> JaegerResult {
    let pairs = pairs(raw)?;
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let service = get("service").ok_or_else(|| bad_request("parameter 'service' is required"))?;
    let operations = operation_list(&state, service, get("spanKind")).await?;
    let total = operations.len();
    Ok(envelope(Json::Array(operations), total))
}

/// `[{"name", "spanKind"}]` of a service, of one kind if asked.
async fn operation_list(state: &ApiState, service: &str, kind: Option<&str>) -> Result<Vec<Json>, QueryError> {
    let wanted = kind.map(str::to_ascii_lowercase);
    Ok(state
        .query
        .operations(service)
        .await?
        .into_iter()
        .map(|(name, kind, _)| (name, jaeger_kind(&kind)))
        .filter(|(_, kind)| wanted.as_deref().is_none_or(|wanted| wanted == *kind))
        .map(|(name, kind)| json!({ "name": name, "spanKind": kind }))
        .collect())
}

/// Jaeger's span kind names; an unspecified kind has none.
fn jaeger_kind(kind: &str) -> &'static str {
    match SpanKind::parse(kind) {
        Some(SpanKind::Server) => "server",
        Some(SpanKind::Client) => "client",
        Some(SpanKind::Producer) => "producer",
        Some(SpanKind::Consumer) => "consumer",
        Some(SpanKind::Internal) => "internal",
        _ => "",
    }
}

fn micros_param(value: &str, name: &str) -> Result<u64, JaegerError> {
    value.parse::<u64>().map_err(|_| bad_request(format!("unable to parse param '{name}': {value:?} is not a Unix time in microseconds")))
}

fn go_duration(value: &str, name: &str) -> Result<u64, JaegerError> {
    // Jaeger takes Go durations; a bare number is not one.
    if value.parse::<f64>().is_ok() {
        return Err(bad_request(format!("unable to parse param '{name}': missing unit in duration {value:?}")));
    }
    parse_duration_nanos(value).map_err(|e| bad_request(format!("unable to parse param '{name}': {e}")))
}

/// A Jaeger tag condition: the few tags Jaeger derives from the span itself map to its fields.
fn tag_condition(request: &mut SearchRequest, key: &str, value: &str) -> Result<(), JaegerError> {
    match key {
        "error" if value == "true" => request.status = Some(SpanStatus::Error),
        "otel.status_code" => {
            request.status = Some(SpanStatus::parse(value).ok_or_else(|| bad_request(format!("unknown otel.status_code {value:?}")))?)
        }
        "span.kind" => request.kind = Some(SpanKind::parse(value).ok_or_else(|| bad_request(format!("unknown span.kind {value:?}")))?),
        _ => request.attributes.push(AttributeFilter::equals(key, value)),
    }
    Ok(())
}

async fn find_traces(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> JaegerResult {
    let pairs = pairs(raw)?;
    let ids: Vec<&str> = pairs.iter().filter(|(k, v)| k == "traceID" && !v.is_empty()).map(|(_, v)| v.as_str()).collect();
    if !ids.is_empty() {
        let trace_ids = ids
            .iter()
            .map(|id| TraceId::from_hex(id).map_err(|e| bad_request(format!("malformed traceID {id:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let views = state.query.traces(&trace_ids, true).await?;
        let found: Vec<Json> = views.iter().map(trace_json).collect();
        let errors: Vec<Json> = ids
            .iter()
            .zip(&trace_ids)
            .filter(|(_, id)| !views.iter().any(|v| v.trace.spans[0].trace_id == **id))
            .map(|(text, _)| json!({ "code": 404, "msg": "trace not found", "traceID": text }))
            .collect();
        let total = found.len();
        return Ok(axum::Json(json!({
            "data": found, "total": total, "limit": 0, "offset": 0,
            "errors": if errors.is_empty() { Json::Null } else { Json::Array(errors) },
        })));
    }

    let mut request = SearchRequest { limit: 100, sort: SortOrder::Newest, ..SearchRequest::default() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut lookback = None;
    for (key, value) in &pairs {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "service" => request.service = Some(value.clone()),
            "operation" => request.operation = Some(value.clone()),
            "start" => request.start_unix_nano = Some(micros_param(value, "start")?.saturating_mul(1000)),
            "end" => request.end_unix_nano = Some(micros_param(value, "end")?.saturating_mul(1000)),
            "minDuration" => request.min_duration_nanos = Some(go_duration(value, "minDuration")?),
            "maxDuration" => request.max_duration_nanos = Some(go_duration(value, "maxDuration")?),
            "limit" => {
                request.limit =
                    value.parse().map_err(|_| bad_request(format!("unable to parse param 'limit': {value:?} is not a number")))?
            }
            "lookback" if value != "custom" => lookback = Some(go_duration(value, "lookback")?),
            "tags" => {
                let map: HashMap<String, Json> =
                    serde_json::from_str(value).map_err(|e| bad_request(format!("malformed 'tags' parameter: {e}")))?;
                for (tag, tag_value) in map {
                    let text = match tag_value {
                        Json::String(text) => text,
                        other => other.to_string(),
                    };
                    tag_condition(&mut request, &tag, &text)?;
                }
            }
            "tag" => {
                let (tag, tag_value) =
                    value.split_once(':').ok_or_else(|| bad_request(format!("malformed 'tag' parameter {value:?}: expected key:value")))?;
                tag_condition(&mut request, tag, tag_value)?;
            }
            // Sent by Jaeger UI and harmless.
            "lookback" | "prettyPrint" | "raw" | "spanKind" => {}
            other => return Err(bad_request(format!("unknown parameter {other:?}"))),
        }
    }
    if request.service.is_none() {
        return Err(bad_request("parameter 'service' is required"));
    }
    if let (Some(min), Some(max)) = (request.min_duration_nanos, request.max_duration_nanos)
        && max < min
    {
        return Err(bad_request("'maxDuration' should be greater than 'minDuration'"));
    }
    if request.start_unix_nano.is_none()
        && let Some(lookback) = lookback
    {
        request.start_unix_nano = Some(request.end_unix_nano.unwrap_or(now).saturating_sub(lookback));
    }
    let summaries = state.query.search(&request).await?;
    let ids: Vec<TraceId> = summaries.iter().filter_map(|s| TraceId::from_hex(&s.trace_id).ok()).collect();
    let traces: Vec<Json> = state.query.traces(&ids, true).await?.iter().map(trace_json).collect();
    let total = traces.len();
    Ok(envelope(Json::Array(traces), total))
}

async fn get_trace(State(state): State<ApiState>, Path(trace_id): Path<String>, RawQuery(raw): RawQuery) -> JaegerResult {
    let id = TraceId::from_hex(&trace_id).map_err(|e| bad_request(format!("malformed trace ID {trace_id:?}: {e}")))?;
    // `raw=true` skips the adjusters (clock skew), as in Jaeger.
    let adjust = !pairs(raw)?.iter().any(|(k, v)| k == "raw" && v == "true");
    let view = state.query.trace_with(id, adjust).await?.ok_or_else(|| JaegerError(StatusCode::NOT_FOUND, "trace not found".into()))?;
    Ok(envelope(json!([trace_json(&view)]), 1))
}

async fn dependencies(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> JaegerResult {
    let pairs = pairs(raw)?;
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let millis = |name: &str, default: u64| -> Result<u64, JaegerError> {
        match get(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| bad_request(format!("unable to parse param '{name}': {value:?} is not milliseconds"))),
        }
    };
    let end = millis("endTs", now_ms)?;
    let lookback = millis("lookback", 24 * 3600 * 1000)?;
    let service = get("service");
    let edges: Vec<Json> = state
        .query
        .dependencies(end.saturating_sub(lookback).saturating_mul(1_000_000), end.saturating_mul(1_000_000))
        .await?
        .into_iter()
        .filter(|d| service.is_none_or(|s| d.parent == s || d.child == s))
        .map(|d| json!({ "parent": d.parent, "child": d.child, "callCount": d.call_count }))
        .collect();
    let total = edges.len();
    Ok(envelope(Json::Array(edges), total))
}

// ---- api_v3: OTLP JSON in grpc-gateway envelopes ----

/// An api_v3 error: `{"error": {"httpCode", "message"}}`.
struct V3Error(StatusCode, String);

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": { "httpCode": self.0.as_u16(), "message": self.1 } }))).into_response()
    }
}

impl From<QueryError> for V3Error {
    fn from(error: QueryError) -> Self {
        let (status, message) = crate::intake::query_error(error);
        Self(status, message)
    }
}

impl From<JaegerError> for V3Error {
    fn from(error: JaegerError) -> Self {
        Self(error.0, error.1)
    }
}

type V3Result = Result<axum::Json<Json>, V3Error>;

/// A parameter under either spelling (the gateway's snake_case or the OpenAPI camelCase).
fn v3_param<'a>(pairs: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    pairs.iter().find(|(k, v)| names.contains(&k.as_str()) && !v.is_empty()).map(|(_, v)| v.as_str())
}

fn rfc3339_nanos(value: &str, name: &str) -> Result<u64, V3Error> {
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| V3Error(StatusCode::BAD_REQUEST, format!("{name} must be an RFC 3339 time, not {value:?}")))
}

fn otlp_result(spans: &[&Span]) -> Result<Json, V3Error> {
    let request = clew_ingest::to_otlp(spans.iter().copied());
    let value = serde_json::to_value(&request).map_err(|e| V3Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(json!({ "result": value }))
}

async fn v3_services(State(state): State<ApiState>) -> V3Result {
    let names: Vec<String> = state.query.services().await?.into_iter().map(|(name, _)| name).collect();
    Ok(axum::Json(json!({ "services": names })))
}

async fn v3_operations(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> V3Result {
    let pairs = pairs(raw)?;
    let service = v3_param(&pairs, &["service"]).ok_or_else(|| V3Error(StatusCode::BAD_REQUEST, "service is required".into()))?;
    let operations = operation_list(&state, service, v3_param(&pairs, &["span_kind", "spanKind"])).await?;
    Ok(axum::Json(json!({ "operations": operations })))
}

async fn v3_trace(State(state): State<ApiState>, Path(trace_id): Path<String>, RawQuery(raw): RawQuery) -> V3Result {
    let pairs = pairs(raw)?;
    let id = TraceId::from_hex(&trace_id).map_err(|e| V3Error(StatusCode::BAD_REQUEST, format!("malformed trace ID {trace_id:?}: {e}")))?;
    let adjust = v3_param(&pairs, &["raw_traces", "rawTraces"]) != Some("true");
    let view = state.query.trace_with(id, adjust).await?.ok_or_else(|| V3Error(StatusCode::NOT_FOUND, "trace not found".into()))?;
    Ok(axum::Json(otlp_result(&view.trace.spans.iter().collect::<Vec<_>>())?))
}

async fn v3_find_traces(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> V3Result {
    let pairs = pairs(raw)?;
    let p = |names: &[&str]| v3_param(&pairs, names);
    let required = |names: &[&str]| p(names).ok_or_else(|| V3Error(StatusCode::BAD_REQUEST, format!("{} is required", names[0])));
    let start = rfc3339_nanos(required(&["query.start_time_min", "query.startTimeMin"])?, "query.start_time_min")?;
    let end = rfc3339_nanos(required(&["query.start_time_max", "query.startTimeMax"])?, "query.start_time_max")?;
    let mut request = SearchRequest {
        service: p(&["query.service_name", "query.serviceName"]).map(str::to_string),
        operation: p(&["query.operation_name", "query.operationName"]).map(str::to_string),
        start_unix_nano: Some(start),
        end_unix_nano: Some(end),
        limit: 20,
        sort: SortOrder::Newest,
        ..SearchRequest::default()
    };
    if let Some(min) = p(&["query.duration_min", "query.durationMin"]) {
        request.min_duration_nanos = Some(go_duration(min, "query.duration_min")?);
    }
    if let Some(max) = p(&["query.duration_max", "query.durationMax"]) {
        request.max_duration_nanos = Some(go_duration(max, "query.duration_max")?);
    }
    if let Some(limit) = p(&["query.num_traces", "query.searchDepth", "query.search_depth"]) {
        request.limit = limit.parse().map_err(|_| V3Error(StatusCode::BAD_REQUEST, "query.num_traces is a number".into()))?;
    }
    let adjust = p(&["query.raw_traces", "query.rawTraces"]) != Some("true");
    let summaries = state.query.search(&request).await?;
    let ids: Vec<TraceId> = summaries.iter().filter_map(|s| TraceId::from_hex(&s.trace_id).ok()).collect();
    let views = state.query.traces(&ids, adjust).await?;
    if views.is_empty() {
        return Err(V3Error(StatusCode::NOT_FOUND, "No traces found".into()));
    }
    // The spans of every trace in one resourceSpans array, as Jaeger's gateway answers.
    Ok(axum::Json(otlp_result(&views.iter().flat_map(|v| v.trace.spans.iter()).collect::<Vec<_>>())?))
}

async fn v3_dependencies(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> V3Result {
    let pairs = pairs(raw)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let end = v3_param(&pairs, &["endTime", "end_time"]).map(|v| rfc3339_nanos(v, "endTime")).transpose()?.unwrap_or(now);
    let start = v3_param(&pairs, &["startTime", "start_time"])
        .map(|v| rfc3339_nanos(v, "startTime"))
        .transpose()?
        .unwrap_or(end.saturating_sub(24 * 3600 * 1_000_000_000));
    let edges: Vec<Json> = state
        .query
        .dependencies(start, end)
        .await?
        .into_iter()
        .map(|d| json!({ "parent": d.parent, "child": d.child, "callCount": d.call_count.to_string() }))
        .collect();
    Ok(axum::Json(json!({ "dependencies": edges })))
}

// ---- the Jaeger UI model ----

fn tag(key: &str, value: &Value) -> Json {
    match value {
        Value::Str(text) => json!({ "key": key, "type": "string", "value": text }),
        Value::Bool(b) => json!({ "key": key, "type": "bool", "value": b }),
        Value::Int(i) => json!({ "key": key, "type": "int64", "value": i }),
        Value::Double(d) => json!({ "key": key, "type": "float64", "value": d }),
        Value::Bytes(bytes) => {
            json!({ "key": key, "type": "binary", "value": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
        Value::Empty | Value::Array(_) | Value::Map(_) => json!({ "key": key, "type": "string", "value": value.render() }),
    }
}

fn tags(attributes: &[Attribute]) -> Vec<Json> {
    attributes.iter().map(|a| tag(&a.key, &a.value)).collect()
}

fn string_tag(key: &str, value: &str) -> Json {
    json!({ "key": key, "type": "string", "value": value })
}

/// One trace in Jaeger UI's JSON model. What OTLP has and Jaeger lacks becomes tags, as
/// Jaeger's own OTLP translation does: `span.kind`, `otel.status_code`, `error`,
/// `otel.status_description`, `otel.scope.name`/`version`, `w3c.tracestate`.
pub fn trace_json(view: &TraceView) -> Json {
    let trace = &view.trace;
    let mut processes: Vec<(&Resource, String)> = Vec::new();
    let mut process_json = serde_json::Map::new();
    let mut spans = Vec::with_capacity(trace.spans.len());
    for (span, facts) in trace.spans.iter().zip(&trace.span_facts) {
        let process_id = match processes.iter().find(|(resource, _)| **resource == *span.resource) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("p{}", processes.len() + 1);
                let resource_tags: Vec<Json> =
                    span.resource.attributes.iter().filter(|a| a.key != "service.name").map(|a| tag(&a.key, &a.value)).collect();
                process_json.insert(id.clone(), json!({ "serviceName": span.service_name(), "tags": resource_tags }));
                processes.push((&span.resource, id.clone()));
                id
            }
        };
        spans.push(span_json(span, facts.flags, process_id));
    }
    let trace_id = trace.spans.first().map(|s| s.trace_id.to_compact_hex()).unwrap_or_default();
    let warnings: Vec<&str> = view.warnings.iter().map(|w| w.message.as_str()).collect();
    json!({
        "traceID": trace_id,
        "spans": spans,
        "processes": process_json,
        "warnings": if warnings.is_empty() { Json::Null } else { json!(warnings) },
    })
}

fn span_json(span: &Span, flags: u32, process_id: String) -> Json {
    let trace_id = span.trace_id.to_compact_hex();
    let mut references = Vec::new();
    if let Some(parent) = span.parent_span_id {
        references.push(json!({ "refType": "CHILD_OF", "traceID": trace_id, "spanID": parent.to_hex() }));
    }
    for link in &span.links {
        let child_of = link.attributes.iter().any(|a| a.key == "opentracing.ref_type" && a.value.as_str() == Some("child_of"));
        references.push(json!({
            "refType": if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" },
            "traceID": link.trace_id.to_compact_hex(),
            "spanID": link.span_id.to_hex(),
        }));
    }
    let mut span_tags = tags(&span.attributes);
    let kind = jaeger_kind(span.kind.as_str());
    if !kind.is_empty() && !span.attributes.iter().any(|a| a.key == "span.kind") {
        span_tags.push(string_tag("span.kind", kind));
    }
    match span.status_code {
        SpanStatus::Ok => span_tags.push(string_tag("otel.status_code", "OK")),
        SpanStatus::Error => {
            span_tags.push(string_tag("otel.status_code", "ERROR"));
            if !span.attributes.iter().any(|a| a.key == "error") {
                span_tags.push(json!({ "key": "error", "type": "bool", "value": true }));
            }
        }
        SpanStatus::Unset => {}
    }
    if !span.status_message.is_empty() {
        span_tags.push(string_tag("otel.status_description", &span.status_message));
    }
    if !span.scope.name.is_empty() {
        span_tags.push(string_tag("otel.scope.name", &span.scope.name));
    }
    if !span.scope.version.is_empty() {
        span_tags.push(string_tag("otel.scope.version", &span.scope.version));
    }
    if !span.trace_state.is_empty() {
        span_tags.push(string_tag("w3c.tracestate", &span.trace_state));
    }
    let logs: Vec<Json> = span
        .events
        .iter()
        .map(|event| {
            let mut fields = Vec::with_capacity(event.attributes.len() + 1);
            if !event.name.is_empty() {
                fields.push(string_tag("event", &event.name));
            }
            fields.extend(tags(&event.attributes));
            json!({ "timestamp": event.time_unix_nano / 1000, "fields": fields })
        })
        .collect();
    let mut warnings = Vec::new();
    if flags & span_flags::ORPHAN != 0 {
        warnings.push(format!(
            "invalid parent span IDs={}; the parent is not in the trace",
            span.parent_span_id.map(|p| p.to_hex()).unwrap_or_default()
        ));
    }
    if flags & span_flags::UNMATCHED_CLIENT != 0 {
        warnings.push("no server span answers this client span: the callee is not instrumented or drops the context".to_string());
    }
    let mut object = json!({
        "traceID": trace_id,
        "spanID": span.span_id.to_hex(),
        "flags": span.flags & 0xff,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_time_unix_nano / 1000,
        "duration": span.duration_nanos() / 1000,
        "tags": span_tags,
        "logs": logs,
        "processID": process_id,
        "warnings": if warnings.is_empty() { Json::Null } else { json!(warnings) },
    });
    if span.flags & 0xff == 0 {
        object.as_object_mut().expect("object").remove("flags");
    }
    object
}
