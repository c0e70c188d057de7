//! Tempo's streaming gRPC API (`tempopb.StreamingQuerier`) on the Tempo port, beside the HTTP
//! API, as Tempo offers it with `stream_over_http_enabled`: Grafana's Tempo data source sends
//! its searches, tag lists and TraceQL metrics here when streaming is on.
//!
//! Each call answers with a stream. A search sends the traces each page of candidates adds as
//! it finds them, then a last message with the whole result, as Tempo's query frontend does;
//! the other calls send their one answer. The messages are tempopb's, declared below with
//! Tempo's field numbers (attributes and labels are OTLP `KeyValue`s).

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use clew_query::QueryEngine;
use clew_query::traceql::{LabelValue, MetricsResult, TraceQlMatch};
use futures::future::BoxFuture;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{SearchParams, TempoError, run_metrics, step_nanos, tag_names, tag_scopes, tempo_labels, values, values_filter};

/// tempopb messages, as Tempo's `tempo.proto` numbers their fields.
pub mod proto {
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchRequest {
        #[prost(map = "string, string", tag = "1")]
        pub tags: HashMap<String, String>,
        #[prost(uint32, tag = "2")]
        pub min_duration_ms: u32,
        #[prost(uint32, tag = "3")]
        pub max_duration_ms: u32,
        #[prost(uint32, tag = "4")]
        pub limit: u32,
        /// Unix seconds.
        #[prost(uint32, tag = "5")]
        pub start: u32,
        #[prost(uint32, tag = "6")]
        pub end: u32,
        /// TraceQL.
        #[prost(string, tag = "8")]
        pub query: String,
        #[prost(uint32, tag = "9")]
        pub spans_per_span_set: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchResponse {
        #[prost(message, repeated, tag = "1")]
        pub traces: Vec<TraceSearchMetadata>,
        #[prost(message, optional, tag = "2")]
        pub metrics: Option<SearchMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TraceSearchMetadata {
        #[prost(string, tag = "1")]
        pub trace_id: String,
        #[prost(string, tag = "2")]
        pub root_service_name: String,
        #[prost(string, tag = "3")]
        pub root_trace_name: String,
        #[prost(uint64, tag = "4")]
        pub start_time_unix_nano: u64,
        #[prost(uint32, tag = "5")]
        pub duration_ms: u32,
        /// Deprecated in Tempo in favour of `span_sets`; still filled, as Tempo does.
        #[prost(message, optional, tag = "6")]
        pub span_set: Option<SpanSet>,
        #[prost(message, repeated, tag = "7")]
        pub span_sets: Vec<SpanSet>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SpanSet {
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
        #[prost(uint32, tag = "2")]
        pub matched: u32,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(string, tag = "1")]
        pub span_id: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(uint64, tag = "3")]
        pub start_time_unix_nano: u64,
        #[prost(uint64, tag = "4")]
        pub duration_nanos: u64,
        #[prost(message, repeated, tag = "5")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchMetrics {
        #[prost(uint32, tag = "1")]
        pub inspected_traces: u32,
        #[prost(uint64, tag = "2")]
        pub inspected_bytes: u64,
        #[prost(uint32, tag = "3")]
        pub total_blocks: u32,
        #[prost(uint32, tag = "4")]
        pub completed_jobs: u32,
        #[prost(uint32, tag = "5")]
        pub total_jobs: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchTagsRequest {
        #[prost(string, tag = "1")]
        pub scope: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchTagsResponse {
        #[prost(string, repeated, tag = "1")]
        pub tag_names: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchTagsV2Response {
        #[prost(message, repeated, tag = "1")]
        pub scopes: Vec<SearchTagsV2Scope>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchTagsV2Scope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, repeated, tag = "2")]
        pub tags: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchTagValuesRequest {
        #[prost(string, tag = "1")]
        pub tag_name: String,
        /// TraceQL: the spans whose values are listed.
        #[prost(string, tag = "2")]
        pub query: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchTagValuesResponse {
        #[prost(string, repeated, tag = "1")]
        pub tag_values: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TagValue {
        #[prost(string, tag = "1")]
        pub r#type: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SearchTagValuesV2Response {
        #[prost(message, repeated, tag = "1")]
        pub tag_values: Vec<TagValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryRangeRequest {
        #[prost(string, tag = "1")]
        pub query: String,
        /// Unix nanoseconds.
        #[prost(uint64, tag = "2")]
        pub start: u64,
        #[prost(uint64, tag = "3")]
        pub end: u64,
        /// Nanoseconds; 0 for Tempo's default.
        #[prost(uint64, tag = "4")]
        pub step: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryRangeResponse {
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<TimeSeries>,
        #[prost(message, optional, tag = "2")]
        pub metrics: Option<SearchMetrics>,
        /// 0 complete, 1 partial.
        #[prost(int32, tag = "3")]
        pub status: i32,
        #[prost(string, tag = "4")]
        pub message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<KeyValue>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(string, tag = "3")]
        pub prom_labels: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp_ms: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryInstantRequest {
        #[prost(string, tag = "1")]
        pub query: String,
        #[prost(uint64, tag = "2")]
        pub start: u64,
        #[prost(uint64, tag = "3")]
        pub end: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryInstantResponse {
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<InstantSeries>,
        #[prost(message, optional, tag = "2")]
        pub metrics: Option<SearchMetrics>,
        #[prost(int32, tag = "3")]
        pub status: i32,
        #[prost(string, tag = "4")]
        pub message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstantSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<KeyValue>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(string, tag = "3")]
        pub prom_labels: String,
    }
}

pub(super) use proto::SearchRequest;

/// The largest request message read: requests are a query and a few numbers.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The largest answer sent: gRPC clients refuse messages over 4 MiB unless told otherwise
/// (Grafana's is not), so longer answers are cut, and say so.
const MAX_RESPONSE_BYTES: usize = 4_000_000;

/// Keeps the items (at least one) whose encoded sizes add up to what one message may hold;
/// returns how many were dropped from the end.
fn fit<T: Message>(items: &mut Vec<T>) -> usize {
    let total = items.len();
    let mut bytes = 0;
    let keep = items
        .iter()
        .take_while(|item| {
            // The field's tag and length come before each item.
            let length = item.encoded_len();
            bytes += length + prost::length_delimiter_len(length) + 1;
            bytes <= MAX_RESPONSE_BYTES
        })
        .count();
    items.truncate(keep.max(1));
    total - items.len()
}

const SERVICE: &str = "/tempopb.StreamingQuerier";

pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route(&format!("{SERVICE}/Search"), post(|s: State<QueryEngine>, r: Request| serve(s, r, search)))
        .route(&format!("{SERVICE}/SearchTags"), post(|s: State<QueryEngine>, r: Request| serve(s, r, search_tags)))
        .route(&format!("{SERVICE}/SearchTagsV2"), post(|s: State<QueryEngine>, r: Request| serve(s, r, search_tags_v2)))
        .route(&format!("{SERVICE}/SearchTagValues"), post(|s: State<QueryEngine>, r: Request| serve(s, r, search_tag_values)))
        .route(&format!("{SERVICE}/SearchTagValuesV2"), post(|s: State<QueryEngine>, r: Request| serve(s, r, search_tag_values_v2)))
        .route(&format!("{SERVICE}/MetricsQueryRange"), post(|s: State<QueryEngine>, r: Request| serve(s, r, metrics_query_range)))
        .route(&format!("{SERVICE}/MetricsQueryInstant"), post(|s: State<QueryEngine>, r: Request| serve(s, r, metrics_query_instant)))
        .with_state(engine)
}

type Sender<T> = mpsc::Sender<Result<T, Status>>;

/// Work that answers one call: it sends its messages, or an error, and ends.
type Work<Req, Resp> = fn(QueryEngine, Req, Sender<Resp>) -> BoxFuture<'static, ()>;

struct Streaming<Req, Resp> {
    engine: QueryEngine,
    work: Work<Req, Resp>,
}

impl<Req: Send + 'static, Resp: Send + 'static> tonic::server::ServerStreamingService<Req> for Streaming<Req, Resp> {
    type Response = Resp;
    type ResponseStream = ReceiverStream<Result<Resp, Status>>;
    type Future = futures::future::Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    /// The work runs in a task of its own, watched: it is stopped when the client goes away
    /// (Grafana cancels a stream whenever the query is run again), and a failure ends the
    /// stream with an error rather than as an empty success.
    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let (sender, receiver) = mpsc::channel(16);
        let work = tokio::spawn((self.work)(self.engine.clone(), request.into_inner(), sender.clone()));
        tokio::spawn(async move {
            let abort = work.abort_handle();
            tokio::select! {
                () = sender.closed() => abort.abort(),
                finished = work => {
                    if let Err(error) = finished {
                        tracing::error!(message = "a Tempo streaming query failed", %error);
                        let _ = sender.send(Err(Status::internal("the query failed; the server log says why"))).await;
                    }
                }
            }
        });
        futures::future::ready(Ok(tonic::Response::new(ReceiverStream::new(receiver))))
    }
}

async fn serve<Req, Resp>(State(engine): State<QueryEngine>, request: Request, work: Work<Req, Resp>) -> Response
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default()).max_decoding_message_size(MAX_REQUEST_BYTES);
    grpc.server_streaming(Streaming { engine, work }, request).await.map(Body::new)
}

/// A Tempo API error as the gRPC status that means the same.
fn status(error: TempoError) -> Status {
    let TempoError(code, message) = error;
    match code {
        StatusCode::BAD_REQUEST => Status::invalid_argument(message),
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
        StatusCode::TOO_MANY_REQUESTS => Status::resource_exhausted(message),
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => Status::deadline_exceeded(message),
        _ => Status::internal(message),
    }
}

/// Sends the result of `answer`, or its error as a status.
async fn answer<T>(out: Sender<T>, answer: Result<T, TempoError>) {
    // A client that went away does not need its answer.
    let _ = out.send(answer.map_err(status)).await;
}

fn string_value(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }) }
}

fn label(key: &str, value: &LabelValue) -> KeyValue {
    let value = match value {
        LabelValue::Nil => None,
        LabelValue::Str(s) => Some(any_value::Value::StringValue(s.clone())),
        LabelValue::Float(f) => Some(any_value::Value::DoubleValue(*f)),
    };
    KeyValue { key: key.to_string(), value: Some(AnyValue { value }) }
}

fn metadata(found: &TraceQlMatch) -> proto::TraceSearchMetadata {
    let span_sets: Vec<proto::SpanSet> = found
        .spansets
        .iter()
        .map(|set| proto::SpanSet {
            spans: set
                .spans
                .iter()
                .map(|span| proto::Span {
                    span_id: span.span_id.clone(),
                    name: span.name.clone(),
                    start_time_unix_nano: span.start_unix_nano,
                    duration_nanos: span.duration_nanos,
                    attributes: span.attributes.iter().map(|(k, v)| string_value(k, v)).collect(),
                })
                .collect(),
            matched: u32::try_from(set.matched).unwrap_or(u32::MAX),
            attributes: set.group.iter().map(|(k, v)| string_value(k, v)).collect(),
        })
        .collect();
    proto::TraceSearchMetadata {
        trace_id: found.trace_id.to_compact_hex(),
        root_service_name: found.root_service.clone(),
        root_trace_name: found.root_name.clone(),
        start_time_unix_nano: found.start_unix_nano,
        duration_ms: u32::try_from(found.duration_nanos / 1_000_000).unwrap_or(u32::MAX),
        span_set: span_sets.first().cloned(),
        span_sets,
    }
}

fn search_metrics(inspected: usize, completed: u32, total: u32) -> Option<proto::SearchMetrics> {
    Some(proto::SearchMetrics {
        inspected_traces: u32::try_from(inspected).unwrap_or(u32::MAX),
        completed_jobs: completed,
        total_jobs: total,
        ..Default::default()
    })
}

/// A job is a page of candidate traces. How many pages a search takes is known only at its
/// end, so until then the total is one more than those done.
fn search(engine: QueryEngine, request: proto::SearchRequest, out: Sender<proto::SearchResponse>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let params = match SearchParams::from_request(&request) {
            Ok(params) => params,
            Err(error) => return answer(out, Err(error)).await,
        };
        let mut pages = 0u32;
        let progress = out.clone();
        let result = params
            .run(&engine, |found, inspected| {
                pages += 1;
                if !found.is_empty() {
                    // Progress is sent only while the client keeps up; the last message
                    // carries every trace in any case.
                    let mut traces: Vec<proto::TraceSearchMetadata> = found.iter().map(metadata).collect();
                    fit(&mut traces);
                    let _ = progress.try_send(Ok(proto::SearchResponse { traces, metrics: search_metrics(inspected, pages, pages + 1) }));
                }
            })
            .await;
        let done = pages.max(1);
        let last = result.map(|(matches, inspected)| {
            let mut traces: Vec<proto::TraceSearchMetadata> = matches.iter().map(metadata).collect();
            // Traces past the size a client takes are left out, as a smaller limit would.
            fit(&mut traces);
            proto::SearchResponse { traces, metrics: search_metrics(inspected, done, done) }
        });
        answer(out, last).await
    })
}

fn search_tags(engine: QueryEngine, request: proto::SearchTagsRequest, out: Sender<proto::SearchTagsResponse>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let names = tag_names(&engine, Some(&request.scope)).await;
        answer(out, names.map(|tag_names| proto::SearchTagsResponse { tag_names })).await
    })
}

fn search_tags_v2(
    engine: QueryEngine,
    request: proto::SearchTagsRequest,
    out: Sender<proto::SearchTagsV2Response>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let scopes = tag_scopes(&engine, Some(&request.scope)).await.map(|scopes| proto::SearchTagsV2Response {
            scopes: scopes.into_iter().map(|(name, tags)| proto::SearchTagsV2Scope { name: name.to_string(), tags }).collect(),
        });
        answer(out, scopes).await
    })
}

async fn tag_values(engine: &QueryEngine, request: &proto::SearchTagValuesRequest) -> Result<Vec<(&'static str, String)>, TempoError> {
    values(engine, &request.tag_name, values_filter(Some(&request.query)).as_deref()).await
}

fn search_tag_values(
    engine: QueryEngine,
    request: proto::SearchTagValuesRequest,
    out: Sender<proto::SearchTagValuesResponse>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let values = tag_values(&engine, &request).await;
        answer(out, values.map(|values| proto::SearchTagValuesResponse { tag_values: values.into_iter().map(|(_, v)| v).collect() })).await
    })
}

fn search_tag_values_v2(
    engine: QueryEngine,
    request: proto::SearchTagValuesRequest,
    out: Sender<proto::SearchTagValuesV2Response>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let values = tag_values(&engine, &request).await.map(|values| proto::SearchTagValuesV2Response {
            tag_values: values.into_iter().map(|(kind, value)| proto::TagValue { r#type: kind.to_string(), value }).collect(),
        });
        answer(out, values).await
    })
}

fn metrics_status(result: &MetricsResult) -> (i32, String) {
    match &result.partial {
        Some(message) => (1, message.clone()),
        None => (0, String::new()),
    }
}

/// Cuts series that do not fit in one message, and marks the answer partial when it does.
fn fit_series<T: Message>(series: &mut Vec<T>, status: &mut i32, message: &mut String) {
    let total = series.len();
    let dropped = fit(series);
    if dropped > 0 {
        *status = 1;
        let note = format!(
            "{} of {total} series fit in one gRPC message of {MAX_RESPONSE_BYTES} bytes; narrow the query, use a longer step, or ask the HTTP API",
            total - dropped
        );
        *message = if message.is_empty() { note } else { format!("{message}; {note}") };
    }
}

fn metrics_query_range(
    engine: QueryEngine,
    request: proto::QueryRangeRequest,
    out: Sender<proto::QueryRangeResponse>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let step = if request.step > 0 { Ok(request.step) } else { step_nanos(None, request.start, request.end) };
        let result = match step {
            Ok(step) => run_metrics(&engine, &request.query, request.start, request.end, step).await,
            Err(error) => Err(error),
        };
        let response = result.map(|result| {
            let (mut status, mut message) = metrics_status(&result);
            let mut series: Vec<proto::TimeSeries> = result
                .series
                .iter()
                .map(|series| {
                    let (labels, prom_labels) = tempo_labels(&result, series);
                    proto::TimeSeries {
                        labels: labels.iter().map(|(k, v)| label(k, v)).collect(),
                        samples: series
                            .samples
                            .iter()
                            .map(|&(ms, value)| proto::Sample { value, timestamp_ms: i64::try_from(ms).unwrap_or(i64::MAX) })
                            .collect(),
                        prom_labels,
                    }
                })
                .collect();
            fit_series(&mut series, &mut status, &mut message);
            proto::QueryRangeResponse { series, metrics: search_metrics(result.inspected_traces, 1, 1), status, message }
        });
        answer(out, response).await
    })
}

fn metrics_query_instant(
    engine: QueryEngine,
    request: proto::QueryInstantRequest,
    out: Sender<proto::QueryInstantResponse>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let result = run_metrics(&engine, &request.query, request.start, request.end, request.end.saturating_sub(request.start)).await;
        let response = result.map(|result| {
            let (mut status, mut message) = metrics_status(&result);
            let mut series: Vec<proto::InstantSeries> = result
                .series
                .iter()
                .filter_map(|series| {
                    let value = series.samples.first()?.1;
                    let (labels, prom_labels) = tempo_labels(&result, series);
                    Some(proto::InstantSeries { labels: labels.iter().map(|(k, v)| label(k, v)).collect(), value, prom_labels })
                })
                .collect();
            fit_series(&mut series, &mut status, &mut message);
            proto::QueryInstantResponse { series, metrics: search_metrics(result.inspected_traces, 1, 1), status, message }
        });
        answer(out, response).await
    })
}
