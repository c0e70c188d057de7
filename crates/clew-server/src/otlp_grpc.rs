//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

use std::sync::Arc;
use std::time::Duration;

use clew_ingest::collector::trace_service_server::{TraceService, TraceServiceServer};
use clew_ingest::collector::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::ServerConfig;
use crate::receiver::{Receiver, Refusal};

struct Service {
    receiver: Arc<Receiver>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(&self, request: Request<ExportTraceServiceRequest>) -> Result<Response<ExportTraceServiceResponse>, Status> {
        match self.receiver.export(request.into_inner(), None).await {
            Ok(outcome) => Ok(Response::new(ExportTraceServiceResponse {
                partial_success: outcome
                    .message
                    .map(|message| ExportTracePartialSuccess { rejected_spans: outcome.rejected as i64, error_message: message }),
            })),
            Err(Refusal::Unavailable(message)) => {
                let delay = Duration::from_secs(self.receiver.server.retry_after_seconds);
                Err(Status::with_error_details(
                    Code::Unavailable,
                    format!("{message}; retry later"),
                    ErrorDetails::with_retry_info(Some(delay)),
                ))
            }
            Err(Refusal::Malformed(message) | Refusal::Unsupported(message) | Refusal::TooLarge(message)) => {
                Err(Status::invalid_argument(message))
            }
        }
    }
}

/// tonic answers a body that does not decode with INTERNAL and an oversized message with
/// OUT_OF_RANGE, both of which OTLP clients would retry forever. The OTLP specification wants
/// INVALID_ARGUMENT for bad data and a non-retryable RESOURCE_EXHAUSTED (no RetryInfo) for a
/// message that can never fit; this rewrites those trailers-only answers.
fn otlp_status(mut response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
    let message = percent_decode(headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or(""));
    let rewritten = match code {
        Some(13) if message.contains("decod") || message.contains("invalid") => {
            Some((Code::InvalidArgument, format!("request is not a valid OTLP ExportTraceServiceRequest: {message}")))
        }
        Some(11) if message.contains("too large") => Some((Code::ResourceExhausted, message.clone())),
        _ => None,
    };
    if let Some((code, text)) = rewritten {
        headers.insert("grpc-status", http::HeaderValue::from((code as i32) as u32));
        let encoded: String = text
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b" .,:;-_()".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        if let Ok(value) = http::HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

/// `grpc-message` is percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn serve(listener: TcpListener, receiver: Arc<Receiver>, config: ServerConfig) {
    let service = TraceServiceServer::new(Service { receiver })
        .max_decoding_message_size(config.max_request_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder().layer(tower::util::MapResponseLayer::new(otlp_status)).add_service(service);
    if let Err(error) = server.serve_with_incoming(incoming).await {
        tracing::error!(message = "OTLP/gRPC server stopped", %error);
    }
}
