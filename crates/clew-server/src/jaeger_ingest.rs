//! Jaeger intake, on Jaeger's own ports: the collector's Thrift over HTTP (`POST /api/traces`,
//! 14268) and gRPC `jaeger.api_v2.CollectorService/PostSpans` (14250), and the agent's UDP
//! ports for compact (6831) and binary (6832) Thrift, so that OpenTracing clients can keep
//! sending to "the agent" with no agent in between.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use clew_ingest::jaeger::{self as codec, ThriftProtocol, proto};
use tokio::net::UdpSocket;
use tonic::codec::CompressionEncoding;

use crate::intake::{self, text};
use crate::receiver::{Receiver, Refusal};

// ---- Thrift over HTTP ----

pub fn thrift_http_router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/api/traces", post(post_traces))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "Clew's Jaeger collector takes Thrift batches at POST /api/traces") })
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver)
}

async fn post_traces(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, request: Request) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if !matches!(media.as_str(), "application/x-thrift" | "application/vnd.apache.thrift.binary") {
        receiver.refuse(Refusal::Unsupported(String::new()));
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("unsupported Content-Type {media:?}: send a binary Thrift Batch as application/x-thrift"),
        );
    }
    let bytes = match intake::read_body(&receiver, &headers, request).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let batch = match codec::decode_thrift_batch(&bytes) {
        Ok(batch) => batch,
        Err(error) => {
            receiver.refuse(Refusal::Malformed(String::new()));
            return text(StatusCode::BAD_REQUEST, &format!("cannot read the Thrift batch: {error}"));
        }
    };
    intake::answer(&receiver, receiver.export(codec::to_otlp(vec![batch]), None).await)
}

// ---- gRPC ----

/// `jaeger.api_v2.CollectorService/PostSpans`, served by tonic's gRPC machinery on an axum
/// route (the service has one method, so no generated server is needed).
pub fn grpc_router(receiver: Arc<Receiver>) -> Router {
    Router::new().route("/jaeger.api_v2.CollectorService/PostSpans", post(post_spans)).with_state(receiver)
}

#[derive(Clone)]
struct PostSpans(Arc<Receiver>);

impl tonic::server::UnaryService<proto::PostSpansRequest> for PostSpans {
    type Response = proto::PostSpansResponse;
    type Future = futures::future::BoxFuture<'static, Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<proto::PostSpansRequest>) -> Self::Future {
        let receiver = Arc::clone(&self.0);
        Box::pin(async move {
            let batch = request.into_inner().batch.unwrap_or_default();
            let batch = codec::from_proto_batch(batch).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            match receiver.export(codec::to_otlp(vec![batch]), None).await {
                Ok(_) => Ok(tonic::Response::new(proto::PostSpansResponse {})),
                Err(Refusal::Unavailable(message)) => Err(tonic::Status::unavailable(format!("{message}; retry later"))),
                Err(Refusal::Malformed(message) | Refusal::Unsupported(message) | Refusal::TooLarge(message)) => {
                    Err(tonic::Status::invalid_argument(message))
                }
            }
        })
    }
}

async fn post_spans(State(receiver): State<Arc<Receiver>>, request: Request) -> Response {
    let limit = receiver.server.max_request_bytes;
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<proto::PostSpansResponse, proto::PostSpansRequest>::default())
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip);
    grpc.unary(PostSpans(receiver), request).await.map(axum::body::Body::new)
}

// ---- the agent's UDP ports ----

/// Receives agent datagrams until the socket fails. UDP has no answer: refused datagrams are
/// counted in the status.
pub async fn serve_agent(socket: UdpSocket, receiver: Arc<Receiver>, protocol: ThriftProtocol) {
    let mut buffer = vec![0u8; 65_535];
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        let length = match socket.recv(&mut buffer).await {
            Ok(length) => length,
            Err(error) => {
                tracing::error!(message = "Jaeger agent socket failed", %error);
                return;
            }
        };
        match codec::decode_agent_datagram(&buffer[..length], protocol) {
            // Each datagram is stored on its own, so a slow sync does not stop the socket; past
            // a bound on those in flight, datagrams are dropped (and counted), as UDP allows.
            Ok(Some(batch)) => match Arc::clone(&in_flight).try_acquire_owned() {
                Ok(permit) => {
                    let receiver = Arc::clone(&receiver);
                    tokio::spawn(async move {
                        let _ = receiver.export(codec::to_otlp(vec![batch]), None).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    receiver.refuse(Refusal::Unavailable(String::new()));
                }
            },
            Ok(None) => {}
            Err(error) => {
                receiver.refuse(Refusal::Malformed(String::new()));
                tracing::debug!(message = "unreadable Jaeger agent datagram", %error);
            }
        }
    }
}
