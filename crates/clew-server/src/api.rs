//! The native query API on the query port (JSON; documented in docs/openapi.yaml), and the
//! pages served beside it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use clew_model::{SpanKind, StatusCode as SpanStatus, TraceId};
use clew_query::{AttributeFilter, AttributeScope, QueryEngine, QueryError, SearchRequest, SortOrder, TraceView};
use clew_store::{EmbeddedStore, Storage};
use serde_json::{Value as Json, json};

use crate::receiver::Receiver;

#[derive(Clone)]
pub struct ApiState {
    pub query: QueryEngine,
    pub receiver: Arc<Receiver>,
    pub store: Arc<EmbeddedStore>,
    pub adoption: Arc<crate::AdoptionConfig>,
    /// Critical operations registered over the API.
    pub operations: Arc<crate::registry::Registry>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{service}/operations", get(operations))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/traces/{trace_id}/otlp", get(trace_otlp))
        .route("/api/v1/services/{service}/red", get(service_red))
        .route("/api/v1/service-graph", get(service_graph))
        .route("/api/v1/search", get(search))
        .route("/api/v1/attributes", get(attribute_keys))
        .route("/api/v1/attributes/{key}/values", get(attribute_values))
        .route("/api/v1/sql", get(sql_get).post(sql_post))
        .route("/api/v1/coverage", get(crate::adoption::coverage))
        .route("/api/v1/rollout-plan", get(crate::adoption::rollout_plan))
        .route("/api/v1/catalog", get(crate::adoption::catalog))
        .route("/api/v1/directory/{key}", get(crate::adoption::directory))
        .route("/api/v1/critical-operations", get(crate::adoption::critical_operations))
        .route("/api/v1/flows", get(crate::adoption::entry_operations))
        .route("/api/v1/flow", get(crate::adoption::flow))
        .route(
            "/api/v1/critical-operations/{name}",
            get(crate::adoption::critical_operation).put(crate::adoption::register_operation).delete(crate::adoption::remove_operation),
        )
        .route("/metrics", get(crate::prometheus::metrics))
        .route("/api/v1/critical-path", get(crate::performance::critical_path))
        .route("/api/v1/bottlenecks", get(crate::performance::bottlenecks))
        .route("/api/v1/correlations", get(crate::performance::correlations))
        .route("/api/v1/compare-groups", get(crate::performance::compare_groups))
        .route("/api/v1/compare-traces", get(crate::performance::compare_traces))
        .route("/api/v1/traffic-estimate", get(crate::performance::traffic_estimate))
        .route("/api/v1/metrics/query_range", get(crate::performance::traceql_metrics))
        .route("/api/v1/openapi.yaml", get(openapi))
        .merge(crate::jaeger::routes())
        .fallback(page)
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .layer(tower_http::compression::CompressionLayer::new().quality(tower_http::CompressionLevel::Fastest))
        .with_state(state)
}

/// An API error: a status and `{"error": {"code", "message"}}`.
pub struct ApiError(pub(crate) StatusCode, pub(crate) &'static str, pub(crate) String);

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, "bad_request", message.into())
    }

    /// A picture that could not be drawn: Clew's fault, said plainly.
    pub(crate) fn drawing(message: String) -> Self {
        tracing::error!(message = "drawing a graph failed", error = %message);
        Self(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the graph could not be drawn as SVG: {message}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": { "code": self.1, "message": self.2 } }))).into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::Invalid(message) => Self::bad_request(message),
            other => {
                tracing::error!(message = "query failed", error = %other);
                Self(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string())
            }
        }
    }
}

pub(crate) type ApiResult = Result<axum::Json<Json>, ApiError>;

/// The web UI, built from `ui/` by the build script and embedded in the binary.
#[derive(rust_embed::Embed)]
#[folder = "$OUT_DIR/ui"]
struct Ui;

/// A file of the UI, or for any other path outside `/api` the UI's page (its router shows
/// the view the path names, so every view has a shareable address).
async fn page(uri: axum::http::Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        return not_found().await.into_response();
    }
    if let Some(file) = Ui::get(path).filter(|_| !path.is_empty()) {
        // Vite names assets by their content hash: they never change.
        let cache = if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
        return ([(header::CONTENT_TYPE, file.metadata.mimetype().to_string()), (header::CACHE_CONTROL, cache.to_string())], file.data)
            .into_response();
    }
    match Ui::get("index.html") {
        Some(file) => ([(header::CACHE_CONTROL, "no-cache")], Html(file.data)).into_response(),
        None => ApiError(StatusCode::NOT_FOUND, "not_found", "this build has no web UI".into()).into_response(),
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], include_str!("../../../docs/openapi.yaml"))
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /api/v1/openapi.yaml".into())
}

async fn status(State(state): State<ApiState>) -> ApiResult {
    let storage: &dyn Storage = &state.store;
    Ok(axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": storage.stats(),
        "receiver": state.receiver.stats(),
    })))
}

async fn services(State(state): State<ApiState>) -> ApiResult {
    let services = state.query.services().await?;
    Ok(axum::Json(json!({
        "services": services.into_iter().map(|(name, spans)| json!({ "name": name, "spans": spans })).collect::<Vec<_>>()
    })))
}

async fn operations(State(state): State<ApiState>, Path(service): Path<String>) -> ApiResult {
    let operations = state.query.operations(&service).await?;
    Ok(axum::Json(json!({
        "service": service,
        "operations": operations.into_iter().map(|(name, kind, spans)| json!({ "name": name, "kind": kind, "spans": spans })).collect::<Vec<_>>()
    })))
}

fn parse_trace_id(text: &str) -> Result<TraceId, ApiError> {
    TraceId::from_hex(text).map_err(|e| ApiError::bad_request(format!("invalid trace ID: {e}")))
}

pub(crate) async fn load_trace(state: &ApiState, trace_id: &str, adjust_skew: bool) -> Result<TraceView, ApiError> {
    let id = parse_trace_id(trace_id)?;
    state
        .query
        .trace_with(id, adjust_skew)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "trace_not_found", format!("trace {id} not found")))
}

async fn trace(State(state): State<ApiState>, Path(trace_id): Path<String>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    // `raw=true`: the spans exactly as received, without clock-skew adjustment.
    let raw = pairs(raw)?.iter().any(|(k, v)| k == "raw" && v == "true");
    let view = load_trace(&state, &trace_id, !raw).await?;
    Ok(axum::Json(crate::trace_json::TraceJson(&view)).into_response())
}

async fn trace_otlp(State(state): State<ApiState>, Path(trace_id): Path<String>) -> Result<Response, ApiError> {
    // An export holds the spans as received.
    let view = load_trace(&state, &trace_id, false).await?;
    let request = clew_ingest::to_otlp(&view.trace.spans);
    let body = serde_json::to_vec(&request).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"trace-{}.json\"", view.trace.spans[0].trace_id)),
        ],
        body,
    )
        .into_response())
}

/// Query-string pairs, keys repeated as often as given.
pub(crate) fn pairs(raw: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("query string: {e}")))
}

/// `250ms`, `1.5s`, `2m`, `100us`, `3h`, or a bare number of nanoseconds.
pub fn parse_duration_nanos(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(nanos) = text.parse::<u64>() {
        return Ok(nanos);
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| format!("invalid duration {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("invalid duration {text:?}"))?;
    let scale = clew_query::traceql::unit_nanos(unit).ok_or_else(|| format!("invalid duration {text:?}: units are ns, us, ms, s, m, h"))?;
    Ok((number * scale) as u64)
}

pub fn search_request(pairs: &[(String, String)]) -> Result<SearchRequest, ApiError> {
    let mut request = SearchRequest { limit: 20, ..SearchRequest::default() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let duration = |value: &str| parse_duration_nanos(value).map_err(ApiError::bad_request);
    for (key, value) in pairs {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "service" => request.service = Some(value.clone()),
            "operation" | "name" => request.operation = Some(value.clone()),
            "kind" => {
                request.kind = Some(SpanKind::parse(value).ok_or_else(|| ApiError::bad_request(format!("unknown span kind {value:?}")))?)
            }
            "status" => {
                request.status = Some(SpanStatus::parse(value).ok_or_else(|| ApiError::bad_request(format!("unknown status {value:?}")))?)
            }
            "attr" | "attribute" => request.attributes.push(AttributeFilter::parse(value)?),
            "minDuration" => request.min_duration_nanos = Some(duration(value)?),
            "maxDuration" => request.max_duration_nanos = Some(duration(value)?),
            "minTraceDuration" => request.min_trace_duration_nanos = Some(duration(value)?),
            "maxTraceDuration" => request.max_trace_duration_nanos = Some(duration(value)?),
            "start" => {
                request.start_unix_nano = Some(value.parse().map_err(|_| ApiError::bad_request("start is Unix time in nanoseconds"))?)
            }
            "end" => request.end_unix_nano = Some(value.parse().map_err(|_| ApiError::bad_request("end is Unix time in nanoseconds"))?),
            "lookback" => request.start_unix_nano = Some(now.saturating_sub(duration(value)?)),
            "limit" => request.limit = value.parse().map_err(|_| ApiError::bad_request("limit is a number"))?,
            "sort" => {
                request.sort = match value.as_str() {
                    "newest" => SortOrder::Newest,
                    "longest" => SortOrder::Longest,
                    _ => return Err(ApiError::bad_request("sort is newest or longest")),
                }
            }
            other => {
                return Err(ApiError::bad_request(format!("unknown search parameter {other:?}")));
            }
        }
    }
    Ok(request)
}

async fn search(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let pairs = pairs(raw)?;
    if let Some((_, q)) = pairs.iter().find(|(k, _)| k == "q") {
        return traceql_search(&state, q, &pairs).await;
    }
    let request = search_request(&pairs)?;
    let traces = state.query.search(&request).await?;
    Ok(axum::Json(json!({ "traces": traces })))
}

/// `q=<TraceQL>`: the other parameters may bound time (`start`, `end`, `lookback`) and
/// `limit` the results.
async fn traceql_search(state: &ApiState, q: &str, pairs: &[(String, String)]) -> ApiResult {
    let (start_unix_nano, end_unix_nano) = time_bounds(pairs)?;
    let mut limit = 20;
    for (key, value) in pairs {
        match key.as_str() {
            "q" | "start" | "end" | "lookback" => {}
            "limit" => limit = value.parse().map_err(|_| ApiError::bad_request("limit is a number"))?,
            other => return Err(ApiError::bad_request(format!("parameter {other:?} does not combine with q (put it in the TraceQL)"))),
        }
    }
    let request = clew_query::traceql::TraceQlRequest { query: q.to_string(), start_unix_nano, end_unix_nano, limit, spans_per_spanset: 3 };
    let (matches, metrics) = state.query.traceql(&request).await?;
    Ok(axum::Json(json!({ "traces": matches, "inspectedTraces": metrics.inspected_traces })))
}

/// The bounds that `start`/`end` (Unix ns) and `lookback` (a duration before now) give, read
/// as a search reads them.
fn time_bounds(pairs: &[(String, String)]) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let bounds: Vec<(String, String)> = pairs.iter().filter(|(k, _)| matches!(k.as_str(), "start" | "end" | "lookback")).cloned().collect();
    let parsed = search_request(&bounds)?;
    Ok((parsed.start_unix_nano, parsed.end_unix_nano))
}

/// `start`/`end` or `lookback`; the last hour by default.
/// `step`, the width of a series' buckets: given, or the window in 60 steps of at least 1 s.
pub(crate) fn step_param(pairs: &[(String, String)], start: u64, end: u64) -> Result<u64, ApiError> {
    match param(pairs, "step") {
        Some(step) => parse_duration_nanos(step).map_err(ApiError::bad_request),
        None => Ok(((end - start) / 60).max(1_000_000_000)),
    }
}

pub(crate) fn window(pairs: &[(String, String)]) -> Result<(u64, u64), ApiError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let (start, end) = time_bounds(pairs)?;
    let end = end.unwrap_or(now);
    let start = start.unwrap_or(end.saturating_sub(3_600_000_000_000));
    if start >= end {
        return Err(ApiError::bad_request("start must be before end"));
    }
    Ok((start, end))
}

pub(crate) fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
}

pub(crate) fn only_params(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((key, _)) => Err(ApiError::bad_request(format!("unknown parameter {key:?}; expected one of {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

/// The service map: `start`/`end`/`lookback`, and `service` + `operation` to draw only the
/// traces of one entry point.
async fn service_graph(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "service", "operation", "format"])?;
    let (start, end) = window(&pairs)?;
    let entry = clew_query::EntryFilter {
        service: param(&pairs, "service").map(str::to_string),
        operation: param(&pairs, "operation").map(str::to_string),
    };
    let format = param(&pairs, "format").unwrap_or("json");
    if !matches!(format, "json" | "dot" | "svg" | "mermaid" | "markdown" | "table") {
        return Err(ApiError::bad_request(format!("format is json, dot, svg, mermaid, markdown or table, not {format:?}")));
    }
    let graph = state.query.service_graph(start, end, &entry).await?;
    let (content_type, text) = match format {
        "dot" => ("text/vnd.graphviz; charset=utf-8", graph.to_dot()),
        "svg" => ("image/svg+xml", crate::svg::dot_to_svg(&graph.to_dot()).map_err(ApiError::drawing)?),
        "mermaid" => ("text/plain; charset=utf-8", graph.to_mermaid()),
        "markdown" => ("text/markdown; charset=utf-8", graph.to_markdown()),
        "table" => ("text/plain; charset=utf-8", graph.to_table()),
        _ => return Ok(axum::Json(graph).into_response()),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// A service's rate, errors and duration over time: `start`/`end`/`lookback`, `step` (a
/// duration; by default the window in 60 steps) and optionally one `operation`.
async fn service_red(
    State(state): State<ApiState>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<clew_query::ServiceRed>, ApiError> {
    let pairs = pairs(raw)?;
    only_params(&pairs, &["start", "end", "lookback", "step", "operation"])?;
    let (start, end) = window(&pairs)?;
    let step = step_param(&pairs, start, end)?;
    let red = state.query.service_red(&service, param(&pairs, "operation"), start, end, step).await?;
    Ok(axum::Json(red))
}

fn scope_param(pairs: &[(String, String)]) -> Result<AttributeScope, ApiError> {
    match pairs.iter().find(|(k, _)| k == "scope").map(|(_, v)| v.as_str()) {
        None | Some("span") => Ok(AttributeScope::Span),
        Some("resource") => Ok(AttributeScope::Resource),
        Some(other) => Err(ApiError::bad_request(format!("scope is span or resource, not {other:?}"))),
    }
}

async fn attribute_keys(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let scope = scope_param(&pairs(raw)?)?;
    let keys = state.query.attribute_keys(scope).await?;
    Ok(axum::Json(json!({ "keys": keys.into_iter().map(|(key, spans)| json!({ "key": key, "spans": spans })).collect::<Vec<_>>() })))
}

async fn attribute_values(State(state): State<ApiState>, Path(key): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let pairs = pairs(raw)?;
    let scope = scope_param(&pairs)?;
    let limit = pairs.iter().find(|(k, _)| k == "limit").and_then(|(_, v)| v.parse().ok()).unwrap_or(100);
    let values = state.query.attribute_values(scope, &key, limit).await?;
    Ok(axum::Json(
        json!({ "key": key, "values": values.into_iter().map(|(value, spans)| json!({ "value": value, "spans": spans })).collect::<Vec<_>>() }),
    ))
}

async fn run_sql(state: &ApiState, query: &str) -> ApiResult {
    if query.trim().is_empty() {
        return Err(ApiError::bad_request("empty query"));
    }
    let batches = state.query.sql(query).await?;
    let rows = clew_query::batches_to_json(&batches)?;
    Ok(axum::Json(json!({ "rows": rows })))
}

async fn sql_get(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let pairs = pairs(raw)?;
    let query = pairs.iter().find(|(k, _)| k == "q").map(|(_, v)| v.clone()).ok_or_else(|| ApiError::bad_request("missing q"))?;
    run_sql(&state, &query).await
}

async fn sql_post(State(state): State<ApiState>, body: String) -> ApiResult {
    let query = match serde_json::from_str::<Json>(&body) {
        Ok(Json::Object(object)) => object.get("query").and_then(Json::as_str).map(str::to_string).unwrap_or_default(),
        _ => body,
    };
    run_sql(&state, &query).await
}

#[cfg(test)]
mod tests {
    use super::parse_duration_nanos;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_nanos("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration_nanos("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration_nanos("100us"), Ok(100_000));
        assert_eq!(parse_duration_nanos("42"), Ok(42));
        assert!(parse_duration_nanos("3 parsecs").is_err());
    }
}
