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
        match self.receiver.export(request.into_inner()).await {
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

pub async fn serve(listener: TcpListener, receiver: Arc<Receiver>, config: ServerConfig) {
    let service = TraceServiceServer::new(Service { receiver })
        .max_decoding_message_size(config.max_request_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    if let Err(error) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await {
        tracing::error!(message = "OTLP/gRPC server stopped", %error);
    }
}
