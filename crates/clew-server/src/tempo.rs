//! The Tempo HTTP API on Tempo's port (3200), so that Grafana's Tempo data source works against
//! Clew: `/api/echo`, `/ready`, `/api/status/buildinfo`, trace by ID (`/api/traces/{id}` and
//! `/api/v2/traces/{id}`, OTLP JSON or protobuf by `Accept`), `/api/search` (TraceQL `q`, or
//! logfmt `tags` with `minDuration`/`maxDuration`), the tag name and value lists, and TraceQL
//! metrics (`/api/metrics/query_range`, `/api/metrics/query`); and on the same port, Tempo's
//! streaming gRPC API ([`grpc`]).

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clew_model::{SpanKind, StatusCode as SpanStatus, TraceId};
use clew_query::traceql::{
    self, AttrScope, CompareOp, Expr, Field, Intrinsic, Query, SpansetExpr, TraceContext, TraceQlMatch, TraceQlRequest, Value,
};
use clew_query::{AttributeScope, QueryEngine, QueryError, TraceView};
use prost::Message;
use serde_json::{Value as Json, json};

use crate::api::parse_duration_nanos;

mod grpc;

pub fn router(query: QueryEngine) -> Router {
    Router::new()
        .route("/ready", get(|| async { "ready\n" }))
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{trace_id}", get(trace_v1))
        .route("/api/v2/traces/{trace_id}", get(trace_v2))
        .route("/api/search", get(search))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{tag}/values", get(tag_values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tag_values_v2))
        .route("/api/metrics/query_range", get(metrics_query_range))
        .route("/api/metrics/query", get(metrics_query_instant))
        .fallback(|| async { TempoError(StatusCode::NOT_FOUND, "no such endpoint in Clew's Tempo API".into()) })
        .with_state(query.clone())
        .merge(grpc::router(query))
}

/// Tempo answers errors in plain text.
#[derive(Debug)]
struct TempoError(StatusCode, String);

impl IntoResponse for TempoError {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{}\n", self.1)).into_response()
    }
}

impl From<QueryError> for TempoError {
    fn from(error: QueryError) -> Self {
        let (status, message) = crate::intake::query_error(error);
        Self(status, message)
    }
}

fn bad_request(message: impl Into<String>) -> TempoError {
    TempoError(StatusCode::BAD_REQUEST, message.into())
}

fn pairs(raw: Option<String>) -> Result<Vec<(String, String)>, TempoError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).map_err(|e| bad_request(format!("query string: {e}")))
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

async fn buildinfo() -> axum::Json<Json> {
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"), "revision": "", "branch": "", "buildUser": "", "buildDate": "", "goVersion": "",
    }))
}

// ---- trace by ID ----

/// tempopb's `TraceByIDResponse`: the trace (field 1, the same wire form as an OTLP
/// `TracesData`) with room for metrics.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<clew_ingest::collector::ExportTraceServiceRequest>,
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("application/protobuf"))
}

async fn load(query: &QueryEngine, trace_id: &str) -> Result<TraceView, TempoError> {
    let id = TraceId::from_hex(trace_id).map_err(|e| bad_request(format!("invalid trace ID {trace_id:?}: {e}")))?;
    query.trace_with(id, false).await?.ok_or_else(|| TempoError(StatusCode::NOT_FOUND, "trace not found".into()))
}

fn otlp_json(request: &clew_ingest::collector::ExportTraceServiceRequest) -> Result<Json, TempoError> {
    serde_json::to_value(request).map_err(|e| TempoError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn trace_v1(State(query): State<QueryEngine>, Path(trace_id): Path<String>, headers: HeaderMap) -> Result<Response, TempoError> {
    let view = load(&query, &trace_id).await?;
    let request = clew_ingest::to_otlp(&view.trace.spans);
    if wants_protobuf(&headers) {
        return Ok(([(header::CONTENT_TYPE, "application/protobuf")], request.encode_to_vec()).into_response());
    }
    let mut body = otlp_json(&request)?;
    let batches = body.as_object_mut().and_then(|o| o.remove("resourceSpans")).unwrap_or(Json::Array(vec![]));
    Ok(axum::Json(json!({ "batches": batches })).into_response())
}

async fn trace_v2(
    State(query): State<QueryEngine>,
    Path(trace_id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, TempoError> {
    let pairs = pairs(raw)?;
    let view = load(&query, &trace_id).await?;
    let spans: Vec<&clew_model::Span> = match param(&pairs, "q") {
        None => view.trace.spans.iter().collect(),
        Some(q) => {
            // One spanset filter picks spans; their ancestors are kept unless keep_hierarchy=false.
            let parsed = traceql::parse(q).map_err(|e| bad_request(e.to_string()))?;
            let SpansetExpr::Filter(_) = &parsed.first else {
                return Err(bad_request("q must be a single spanset filter such as { span.http.route = \"/x\" }"));
            };
            if !parsed.stages.is_empty() {
                return Err(bad_request("q must be a single spanset filter: pipelines are not allowed here"));
            }
            let context = TraceContext::new(&view.trace);
            let mut keep = traceql::evaluate(&parsed, &context).into_iter().flat_map(|s| s.spans).collect::<Vec<_>>();
            if param(&pairs, "keep_hierarchy") != Some("false") {
                let index: std::collections::HashMap<_, usize> = view.trace.spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
                let mut extra = Vec::new();
                for &span in &keep {
                    let mut current = view.trace.spans[span].parent_span_id.and_then(|p| index.get(&p).copied());
                    while let Some(parent) = current.filter(|p| !extra.contains(p)) {
                        extra.push(parent);
                        current = view.trace.spans[parent].parent_span_id.and_then(|p| index.get(&p).copied());
                    }
                }
                keep.extend(extra);
            }
            keep.sort_unstable();
            keep.dedup();
            keep.into_iter().map(|i| &view.trace.spans[i]).collect()
        }
    };
    let request = clew_ingest::to_otlp(spans);
    if wants_protobuf(&headers) {
        let response = TraceByIdResponse { trace: Some(request) };
        return Ok(([(header::CONTENT_TYPE, "application/protobuf")], response.encode_to_vec()).into_response());
    }
    Ok(axum::Json(json!({ "trace": otlp_json(&request)? })).into_response())
}

// ---- search ----

fn seconds(pairs: &[(String, String)], key: &str) -> Result<Option<u64>, TempoError> {
    param(pairs, key)
        .map(|v| {
            v.parse::<u64>().map(|s| s.saturating_mul(1_000_000_000)).map_err(|_| bad_request(format!("{key} is Unix time in seconds")))
        })
        .transpose()
}

/// A logfmt `tags` value (`service.name="api" http.status_code=500 error=true`) as pairs.
fn logfmt(tags: &str) -> Result<Vec<(String, String)>, TempoError> {
    let mut pairs = Vec::new();
    let mut rest = tags.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or_else(|| bad_request(format!("tags: expected key=value in {rest:?}")))?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(|| bad_request("tags: unterminated quoted value"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(' ').unwrap_or((after, ""))
        };
        pairs.push((key.trim().to_string(), value.to_string()));
        rest = after.trim_start();
    }
    Ok(pairs)
}

/// Tags as a spanset filter: every tag on one span; `name`, `status` and `error=true` mean the
/// span's own.
fn tags_filter(tags: &[(String, String)]) -> Result<Expr, TempoError> {
    let mut conditions = Vec::new();
    for (key, value) in tags {
        let condition = match key.as_str() {
            "name" => (Field::Intrinsic(Intrinsic::Name), Value::Str(value.to_string())),
            "status" | "status.code" => (
                Field::Intrinsic(Intrinsic::Status),
                Value::Status(SpanStatus::parse(value).ok_or_else(|| bad_request(format!("tags: unknown status {value:?}")))?),
            ),
            "kind" => (
                Field::Intrinsic(Intrinsic::Kind),
                Value::Kind(SpanKind::parse(value).ok_or_else(|| bad_request(format!("tags: unknown kind {value:?}")))?),
            ),
            "error" if value == "true" => (Field::Intrinsic(Intrinsic::Status), Value::Status(SpanStatus::Error)),
            _ => (Field::Attribute { scope: AttrScope::Any, key: key.to_string() }, Value::Str(value.to_string())),
        };
        conditions.push(Expr::Compare(CompareOp::Eq, Box::new(Expr::Field(condition.0)), Box::new(Expr::Literal(condition.1))));
    }
    Ok(conditions.into_iter().reduce(|a, b| Expr::And(Box::new(a), Box::new(b))).unwrap_or(Expr::Literal(Value::Bool(true))))
}

fn string_attribute(key: &str, value: &str) -> Json {
    json!({ "key": key, "value": { "stringValue": value } })
}

/// Spans listed per spanset at most, whatever `spss` asks (Tempo's default bound).
const MAX_SPANS_PER_SPANSET: usize = 100;

/// A search as Tempo takes one, over HTTP (`/api/search`) or its streaming gRPC API.
struct SearchParams {
    query: Query,
    min: Option<u64>,
    max: Option<u64>,
    limit: usize,
    spans_per_spanset: usize,
    start: Option<u64>,
    end: Option<u64>,
}

impl SearchParams {
    /// `q` (TraceQL) or `tags` (logfmt), `minDuration`/`maxDuration`, `start`/`end` (Unix
    /// seconds), `limit` (20) and `spss` (3).
    fn from_pairs(pairs: &[(String, String)]) -> Result<Self, TempoError> {
        let duration = |key: &str| -> Result<Option<u64>, TempoError> {
            param(pairs, key).map(|v| parse_duration_nanos(v).map_err(|e| bad_request(format!("{key}: {e}")))).transpose()
        };
        let number = |key: &str, default: usize| -> Result<usize, TempoError> {
            param(pairs, key)
                .map(|v| v.parse().map_err(|_| bad_request(format!("{key} is a number"))))
                .transpose()
                .map(|n| n.unwrap_or(default))
        };
        // A tag search is a TraceQL filter built directly, not printed and parsed again.
        let query = match (param(pairs, "q"), param(pairs, "tags")) {
            (Some(q), _) => traceql::parse(q).map_err(|e| bad_request(e.to_string()))?,
            (None, tags) => filter_query(tags_filter(&logfmt(tags.unwrap_or(""))?)?),
        };
        Ok(Self {
            query,
            min: duration("minDuration")?,
            max: duration("maxDuration")?,
            // 0, as for the gRPC API, means the default.
            limit: Some(number("limit", 0)?).filter(|&n| n > 0).unwrap_or(20),
            spans_per_spanset: number("spss", 3)?.min(MAX_SPANS_PER_SPANSET),
            start: seconds(pairs, "start")?,
            end: seconds(pairs, "end")?,
        })
    }

    /// tempopb's `SearchRequest`: `Query`, or else `Tags`; zero means "not given".
    fn from_request(request: &grpc::SearchRequest) -> Result<Self, TempoError> {
        let query = if request.query.trim().is_empty() {
            let mut tags: Vec<(String, String)> = request.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            tags.sort();
            filter_query(tags_filter(&tags)?)
        } else {
            traceql::parse(&request.query).map_err(|e| bad_request(e.to_string()))?
        };
        let given = |n: u32| (n > 0).then_some(n);
        Ok(Self {
            query,
            min: given(request.min_duration_ms).map(|ms| u64::from(ms) * 1_000_000),
            max: given(request.max_duration_ms).map(|ms| u64::from(ms) * 1_000_000),
            limit: given(request.limit).map_or(20, |n| n as usize),
            spans_per_spanset: given(request.spans_per_span_set).map_or(3, |n| n as usize).min(MAX_SPANS_PER_SPANSET),
            start: given(request.start).map(|s| u64::from(s) * 1_000_000_000),
            end: given(request.end).map(|s| u64::from(s) * 1_000_000_000),
        })
    }

    fn wanted(&self, found: &TraceQlMatch) -> bool {
        self.min.is_none_or(|min| found.duration_nanos >= min) && self.max.is_none_or(|max| found.duration_nanos <= max)
    }

    /// Runs the search. `progress` gets each batch of newly found traces that the duration
    /// bounds keep (at most `limit` in all) with the number of traces inspected so far.
    async fn run(
        &self,
        engine: &QueryEngine,
        mut progress: impl FnMut(&[TraceQlMatch], usize) + Send,
    ) -> Result<(Vec<TraceQlMatch>, usize), TempoError> {
        let request = TraceQlRequest {
            query: String::new(),
            start_unix_nano: self.start,
            end_unix_nano: self.end.map(|e| e.saturating_add(999_999_999)),
            // Duration bounds are checked after the query, so ask for more.
            limit: if self.min.is_some() || self.max.is_some() { self.limit.saturating_mul(5) } else { self.limit },
            spans_per_spanset: self.spans_per_spanset,
        };
        let mut reported = 0;
        let (matches, metrics) = engine
            .run_traceql_with_progress(&self.query, &request, |found, metrics| {
                let kept: Vec<TraceQlMatch> =
                    found.iter().filter(|m| self.wanted(m)).take(self.limit.saturating_sub(reported)).cloned().collect();
                reported += kept.len();
                progress(&kept, metrics.inspected_traces);
            })
            .await?;
        let matches = matches.into_iter().filter(|m| self.wanted(m)).take(self.limit).collect();
        Ok((matches, metrics.inspected_traces))
    }
}

fn filter_query(filter: Expr) -> Query {
    Query { first: SpansetExpr::Filter(filter), stages: vec![], metrics: None, hints: vec![] }
}

fn trace_json(found: &TraceQlMatch) -> Json {
    let spansets: Vec<Json> = found
        .spansets
        .iter()
        .map(|set| {
            json!({
                "spans": set.spans.iter().map(|span| json!({
                    "spanID": span.span_id,
                    "name": span.name,
                    "startTimeUnixNano": span.start_unix_nano.to_string(),
                    "durationNanos": span.duration_nanos.to_string(),
                    "attributes": span.attributes.iter().map(|(k, v)| string_attribute(k, v)).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "matched": set.matched,
                "attributes": set.group.iter().map(|(k, v)| string_attribute(k, v)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "traceID": found.trace_id.to_compact_hex(),
        "rootServiceName": found.root_service,
        "rootTraceName": found.root_name,
        "startTimeUnixNano": found.start_unix_nano.to_string(),
        "durationMs": found.duration_nanos / 1_000_000,
        "spanSet": spansets.first().cloned().unwrap_or(Json::Null),
        "spanSets": spansets,
    })
}

async fn search(State(engine): State<QueryEngine>, RawQuery(raw): RawQuery) -> Result<axum::Json<Json>, TempoError> {
    let params = SearchParams::from_pairs(&pairs(raw)?)?;
    let (matches, inspected) = params.run(&engine, |_, _| {}).await?;
    Ok(axum::Json(json!({
        "traces": matches.iter().map(trace_json).collect::<Vec<_>>(),
        "metrics": { "inspectedTraces": inspected, "completedJobs": 1, "totalJobs": 1 },
    })))
}

// ---- tags ----

const INTRINSICS: &[&str] = &[
    "duration",
    "kind",
    "name",
    "rootName",
    "rootServiceName",
    "status",
    "statusMessage",
    "traceDuration",
    "event:name",
    "span:id",
    "trace:id",
];

async fn keys(query: &QueryEngine, scope: AttributeScope) -> Result<Vec<String>, TempoError> {
    Ok(query.attribute_keys(scope).await?.into_iter().map(|(k, _)| k).collect())
}

/// Tag names, one list: every scope, or `span`, `resource` or `intrinsic`.
async fn tag_names(query: &QueryEngine, scope: Option<&str>) -> Result<Vec<String>, TempoError> {
    let mut names = Vec::new();
    match scope.filter(|s| !s.is_empty()) {
        Some("span") => names = keys(query, AttributeScope::Span).await?,
        Some("resource") => names = keys(query, AttributeScope::Resource).await?,
        Some("intrinsic") => names = INTRINSICS.iter().map(|s| s.to_string()).collect(),
        None | Some("all") => {
            names.extend(keys(query, AttributeScope::Span).await?);
            names.extend(keys(query, AttributeScope::Resource).await?);
        }
        Some(other) => return Err(bad_request(format!("unknown scope {other:?}: use span, resource or intrinsic"))),
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Tag names by scope: every scope, or `resource`, `span` or `intrinsic`.
async fn tag_scopes(query: &QueryEngine, scope: Option<&str>) -> Result<Vec<(&'static str, Vec<String>)>, TempoError> {
    let wanted = scope.filter(|s| !s.is_empty()).unwrap_or("all");
    let mut scopes = Vec::new();
    if matches!(wanted, "all" | "resource") {
        scopes.push(("resource", keys(query, AttributeScope::Resource).await?));
    }
    if matches!(wanted, "all" | "span") {
        scopes.push(("span", keys(query, AttributeScope::Span).await?));
    }
    if matches!(wanted, "all" | "intrinsic") {
        scopes.push(("intrinsic", INTRINSICS.iter().map(|s| s.to_string()).collect()));
    }
    if scopes.is_empty() {
        return Err(bad_request(format!("unknown scope {wanted:?}: use resource, span or intrinsic")));
    }
    Ok(scopes)
}

async fn tags_v1(State(query): State<QueryEngine>, RawQuery(raw): RawQuery) -> Result<axum::Json<Json>, TempoError> {
    let names = tag_names(&query, param(&pairs(raw)?, "scope")).await?;
    Ok(axum::Json(json!({ "tagNames": names, "metrics": {} })))
}

async fn tags_v2(State(query): State<QueryEngine>, RawQuery(raw): RawQuery) -> Result<axum::Json<Json>, TempoError> {
    let scopes = tag_scopes(&query, param(&pairs(raw)?, "scope")).await?;
    let scopes: Vec<Json> = scopes.into_iter().map(|(name, tags)| json!({ "name": name, "tags": tags })).collect();
    Ok(axum::Json(json!({ "scopes": scopes, "metrics": {} })))
}

/// The SQL condition of a tag-value request's `q`: the spans whose values are listed. Tempo
/// narrows values by the conditions of a spanset filter (`{}` narrows nothing); a query SQL
/// cannot state exactly (structure, pipelines) lists every value, as Tempo does when it cannot
/// narrow.
///
/// Grafana sends the query being typed, often with a condition still unfinished
/// (`{ resource.service.name = "api" && name = }`): as Tempo does, the conditions that are
/// complete narrow the values and the unfinished one is left out.
fn values_filter(q: Option<&str>) -> Option<String> {
    let q = q.map(str::trim).filter(|q| !q.is_empty())?;
    let exact = traceql::parse(q).ok().map(|parsed| traceql::exact_filter(&parsed));
    let sql = match exact {
        Some(Some(sql)) => Some(sql),
        // Unfinished, or not all of it SQL: its complete conditions, when they are all ANDed.
        _ => {
            let complete: Vec<String> = and_conditions(q)?
                .into_iter()
                .filter_map(|condition| traceql::parse(&format!("{{ {condition} }}")).ok())
                .filter_map(|parsed| traceql::exact_filter(&parsed))
                .collect();
            (!complete.is_empty()).then(|| complete.join(" AND "))
        }
    };
    sql.filter(|sql| sql != "TRUE")
}

/// The conditions of a one-filter query joined by `&&` at its top level, split apart; `None`
/// when the query has anything else outside quoted strings (`||`, a `!` that is not part of
/// `!=` or `!~`, brackets, a second spanset), since a condition taken alone would then not
/// mean what it meant in the query.
fn and_conditions(q: &str) -> Option<Vec<&str>> {
    let inner = q.trim().strip_prefix('{')?;
    let inner = inner.strip_suffix('}').unwrap_or(inner);
    let bytes = inner.as_bytes();
    let (mut parts, mut start, mut quoted, mut index) = (Vec::new(), 0, false, 0);
    while index < bytes.len() {
        match (bytes[index], bytes.get(index + 1)) {
            (b'\\', _) if quoted => index += 1,
            (b'"', _) => quoted = !quoted,
            _ if quoted => {}
            (b'&', Some(b'&')) => {
                parts.push(&inner[start..index]);
                start = index + 2;
                index += 1;
            }
            (b'!', Some(b'=' | b'~')) => index += 1,
            (b'|' | b'!' | b'(' | b')' | b'{' | b'}', _) => return None,
            _ => {}
        }
        index += 1;
    }
    parts.push(&inner[start..]);
    Some(parts)
}

/// Values of a tag, typed as Tempo types them: `(type, value)`; among the spans `filter_sql`
/// keeps, when given.
async fn values(query: &QueryEngine, tag: &str, filter_sql: Option<&str>) -> Result<Vec<(&'static str, String)>, TempoError> {
    const LIMIT: usize = 1000;
    let column = |values: Vec<(String, i64)>, kind: &'static str| values.into_iter().map(move |(v, _)| (kind, v)).collect::<Vec<_>>();
    let intrinsic = match tag {
        "name" | "span:name" => Some(("name", "string")),
        "status" | "span:status" => Some(("status_code", "keyword")),
        "kind" | "span:kind" => Some(("kind", "keyword")),
        "statusMessage" | "span:statusMessage" => Some(("status_message", "string")),
        "rootName" | "trace:rootName" => Some(("trace_root_name", "string")),
        "rootServiceName" | "trace:rootService" => Some(("trace_root_service", "string")),
        _ => None,
    };
    if let Some((name, kind)) = intrinsic {
        return Ok(column(query.column_values_where(name, filter_sql, LIMIT).await?, kind));
    }
    let field = traceql::field(tag).or_else(|| traceql::field(&format!(".{tag}")));
    let Some(Field::Attribute { scope, key }) = field else {
        return Err(bad_request(format!("{tag:?} is not a tag")));
    };
    let mut out = Vec::new();
    if matches!(scope, AttrScope::Span | AttrScope::Any) {
        out.extend(column(query.attribute_values_where(AttributeScope::Span, &key, filter_sql, LIMIT).await?, "string"));
    }
    if matches!(scope, AttrScope::Resource | AttrScope::Any) {
        out.extend(column(query.attribute_values_where(AttributeScope::Resource, &key, filter_sql, LIMIT).await?, "string"));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup_by(|a, b| a.1 == b.1);
    Ok(out)
}

async fn tag_values_v1(
    State(query): State<QueryEngine>,
    Path(tag): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Json>, TempoError> {
    let filter = values_filter(param(&pairs(raw)?, "q"));
    let values: Vec<String> = values(&query, &tag, filter.as_deref()).await?.into_iter().map(|(_, v)| v).collect();
    Ok(axum::Json(json!({ "tagValues": values, "metrics": {} })))
}

async fn tag_values_v2(
    State(query): State<QueryEngine>,
    Path(tag): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Json>, TempoError> {
    let filter = values_filter(param(&pairs(raw)?, "q"));
    let values: Vec<Json> =
        values(&query, &tag, filter.as_deref()).await?.into_iter().map(|(kind, value)| json!({ "type": kind, "value": value })).collect();
    Ok(axum::Json(json!({ "tagValues": values, "metrics": {} })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_top_level_and_conditions_narrow_tag_values() {
        assert_eq!(and_conditions(r#"{ a = "x" && b = }"#), Some(vec![r#" a = "x" "#, " b = "]));
        // `&&` inside a quoted value is part of the value.
        assert_eq!(and_conditions(r#"{ name = "x && y" && kind = }"#), Some(vec![r#" name = "x && y" "#, " kind = "]));
        assert_eq!(and_conditions(r#"{ a != "x" && b !~ "y" }"#).map(|p| p.len()), Some(2));
        for other in [r#"{ a = "x" && b = "y" || c = }"#, r#"{ !(a = "x" && b = "y") && d = }"#, "{ a = 1 } >> { b = }", "a = 1"] {
            assert_eq!(and_conditions(other), None, "{other}");
        }
        // An unfinished condition is left out; what is complete narrows.
        let narrowed = values_filter(Some(r#"{ resource.service.name = "api" && span.http.route = }"#)).expect("narrowed");
        assert!(narrowed.contains("api") && !narrowed.contains("http.route"), "{narrowed}");
        assert_eq!(values_filter(Some(r#"{ a = "x" && b = "y" || c = }"#)), None);
        assert_eq!(values_filter(Some("{}")), None);
        assert_eq!(values_filter(Some("{ nope")), None);
    }

    #[test]
    fn tag_searches_become_traceql() {
        let filter = tags_filter(&logfmt(r#"service.name="my api" http.status_code=500 error=true"#).unwrap()).unwrap();
        let compare =
            |field: Field, value: Value| Expr::Compare(CompareOp::Eq, Box::new(Expr::Field(field)), Box::new(Expr::Literal(value)));
        let any = |key: &str| Field::Attribute { scope: AttrScope::Any, key: key.into() };
        let expected = Expr::And(
            Box::new(Expr::And(
                Box::new(compare(any("service.name"), Value::Str("my api".into()))),
                Box::new(compare(any("http.status_code"), Value::Str("500".into()))),
            )),
            Box::new(compare(Field::Intrinsic(Intrinsic::Status), Value::Status(SpanStatus::Error))),
        );
        assert_eq!(filter, expected);
        assert_eq!(tags_filter(&logfmt("").unwrap()).unwrap(), Expr::Literal(Value::Bool(true)));
        assert!(logfmt("novalue").is_err());
    }
}

// ---- TraceQL metrics ----

/// A time as Tempo reads one: with a `.`, float seconds; up to 10 digits, Unix seconds; more,
/// nanoseconds; otherwise RFC 3339.
fn tempo_time(key: &str, text: &str) -> Result<u64, TempoError> {
    let invalid = || bad_request(format!("{key} is Unix seconds, Unix nanoseconds or RFC 3339, not {text:?}"));
    if text.contains('.') && !text.contains('-') {
        let seconds: f64 = text.parse().map_err(|_| invalid())?;
        return if seconds >= 0.0 { Ok((seconds * 1e9) as u64) } else { Err(invalid()) };
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let number: u64 = text.parse().map_err(|_| invalid())?;
        return Ok(if text.len() <= 10 { number.saturating_mul(1_000_000_000) } else { number });
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| invalid())?;
    u64::try_from(time.timestamp_nanos_opt().ok_or_else(invalid)?).map_err(|_| invalid())
}

/// `q` (or `query`), and the window: `end` (now by default), `start` (`end` − `since`, one
/// hour by default).
fn metrics_params(pairs: &[(String, String)]) -> Result<(String, u64, u64), TempoError> {
    let q = param(pairs, "q").or_else(|| param(pairs, "query")).ok_or_else(|| bad_request("q is required: a TraceQL metrics query"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let end = param(pairs, "end").map(|v| tempo_time("end", v)).transpose()?.unwrap_or(now);
    let start = match param(pairs, "start") {
        Some(v) => tempo_time("start", v)?,
        None => {
            let since =
                param(pairs, "since").map(|v| parse_duration_nanos(v).map_err(|e| bad_request(format!("since: {e}")))).transpose()?;
            end.min(now).saturating_sub(since.unwrap_or(3_600_000_000_000))
        }
    };
    Ok((q.to_string(), start, end))
}

/// A label as an OTLP `KeyValue` in JSON.
fn metrics_label(key: &str, value: &traceql::LabelValue) -> Json {
    match value {
        traceql::LabelValue::Nil => json!({ "key": key, "value": {} }),
        traceql::LabelValue::Str(s) => json!({ "key": key, "value": { "stringValue": s } }),
        traceql::LabelValue::Float(f) => json!({ "key": key, "value": { "doubleValue": f } }),
    }
}

/// A series' labels as Tempo gives them: `__name__` = the function when nothing else names the
/// series; nil group values left out unless all are nil. With the Prometheus-style text.
fn tempo_labels(result: &traceql::MetricsResult, series: &traceql::Series) -> (Vec<(String, traceql::LabelValue)>, String) {
    let mut labels: Vec<(String, traceql::LabelValue)> =
        series.labels.iter().filter(|(_, v)| *v != traceql::LabelValue::Nil).cloned().collect();
    if labels.is_empty() && !series.labels.is_empty() {
        labels.push(series.labels[0].clone());
    }
    if labels.is_empty() {
        labels.push(("__name__".into(), traceql::LabelValue::Str(result.function.clone())));
    }
    let prom: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.text().replace('"', "\\\""))).collect();
    (labels, format!("{{{}}}", prom.join(", ")))
}

fn metrics_stats(result: &traceql::MetricsResult) -> Json {
    json!({ "inspectedTraces": result.inspected_traces, "completedJobs": 1, "totalJobs": 1 })
}

/// A range query's step: Tempo's default for the window, a bare number of seconds (as in
/// Prometheus) or a duration.
fn step_nanos(step: Option<&str>, start: u64, end: u64) -> Result<u64, TempoError> {
    match step {
        None => Ok(traceql::default_step(start, end)),
        Some(v) => match v.parse::<f64>() {
            Ok(seconds) if seconds > 0.0 => Ok((seconds * 1e9) as u64),
            Ok(_) => Err(bad_request("step must be greater than 0")),
            Err(_) => parse_duration_nanos(v).map_err(|e| bad_request(format!("step: {e}"))),
        },
    }
}

/// Runs a metrics query over [start, end) in steps; `step == end - start` gives one value per
/// series (an instant query). Series come sorted by their labels' text.
async fn run_metrics(engine: &QueryEngine, q: &str, start: u64, end: u64, step: u64) -> Result<traceql::MetricsResult, TempoError> {
    if end <= start {
        return Err(bad_request("end must be greater than start"));
    }
    let request = traceql::MetricsRequest { start_unix_nano: start, end_unix_nano: end, step_nanos: step, evaluate_traces: false };
    let mut result = engine.traceql_metrics(q, &request).await?;
    let mut keyed: Vec<(String, traceql::Series)> =
        std::mem::take(&mut result.series).into_iter().map(|series| (tempo_labels(&result, &series).1, series)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    result.series = keyed.into_iter().map(|(_, series)| series).collect();
    Ok(result)
}

/// `GET /api/metrics/query_range?q=&start=&end=&since=&step=`: Tempo's series (labels,
/// `timestampMs` as a string, value), sorted by their labels.
async fn metrics_query_range(State(engine): State<QueryEngine>, RawQuery(raw): RawQuery) -> Result<axum::Json<Json>, TempoError> {
    let pairs = pairs(raw)?;
    let (q, start, end) = metrics_params(&pairs)?;
    let step = step_nanos(param(&pairs, "step"), start, end)?;
    let result = run_metrics(&engine, &q, start, end, step).await?;
    let series: Vec<Json> = result
        .series
        .iter()
        .map(|s| {
            let (labels, prom) = tempo_labels(&result, s);
            let labels: Vec<Json> = labels.iter().map(|(k, v)| metrics_label(k, v)).collect();
            let samples: Vec<Json> = s.samples.iter().map(|(t, v)| json!({ "timestampMs": t.to_string(), "value": v })).collect();
            json!({ "labels": labels, "samples": samples, "promLabels": prom })
        })
        .collect();
    let mut body = json!({ "series": series, "metrics": metrics_stats(&result) });
    if let Some(partial) = &result.partial {
        body["status"] = json!("PARTIAL");
        body["message"] = json!(partial);
    }
    Ok(axum::Json(body))
}

/// `GET /api/metrics/query?q=&start=&end=&since=`: one value per series over the whole window.
async fn metrics_query_instant(State(engine): State<QueryEngine>, RawQuery(raw): RawQuery) -> Result<axum::Json<Json>, TempoError> {
    let pairs = pairs(raw)?;
    let (q, start, end) = metrics_params(&pairs)?;
    // One step exactly as long as the window (alignment then keeps it one step).
    let result = run_metrics(&engine, &q, start, end, end.saturating_sub(start)).await?;
    let series: Vec<Json> = result
        .series
        .iter()
        .filter_map(|s| {
            let value = s.samples.first()?.1;
            let (labels, prom) = tempo_labels(&result, s);
            let labels: Vec<Json> = labels.iter().map(|(k, v)| metrics_label(k, v)).collect();
            Some(json!({ "labels": labels, "value": value, "promLabels": prom }))
        })
        .collect();
    Ok(axum::Json(json!({ "series": series, "metrics": metrics_stats(&result) })))
}
