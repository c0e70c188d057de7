//! OTLP/HTTP: `POST /v1/traces`, protobuf or JSON, optionally gzip, answered exactly as the
//! OTLP specification says (see the table in docs/api.md).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clew_ingest::body::{self, BodyError, Encoding};
use clew_ingest::collector::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use http_body_util::BodyExt;
use prost::Message;

use crate::receiver::{Receiver, Refusal};

pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/v1/traces", post(export).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver)
}

async fn export(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, request: Request) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let encoding = match Encoding::from_content_type(content_type) {
        Ok(encoding) => encoding,
        Err(error) => {
            return status_response(Encoding::Protobuf, StatusCode::UNSUPPORTED_MEDIA_TYPE, 3, &error.to_string(), None);
        }
    };
    let limit = receiver.server.max_request_bytes;
    let raw = match http_body_util::Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let (status, message) = if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                receiver.refuse(Refusal::TooLarge(String::new()));
                (StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds the limit of {limit} bytes"))
            } else {
                (StatusCode::BAD_REQUEST, format!("could not read the request body: {error}"))
            };
            return status_response(encoding, status, 3, &message, None);
        }
    };
    // Pushing back costs the least before the body is decompressed and decoded.
    if let Err(refusal) = receiver.admit() {
        return refusal_response(&receiver, encoding, refusal);
    }
    let content_encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let decoded = body::decompress(content_encoding, &raw, limit).and_then(|bytes| Ok((body::decode_request(encoding, &bytes)?, bytes)));
    let (request, bytes) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            let status = match &error {
                BodyError::TooLarge { .. } => {
                    receiver.refuse(Refusal::TooLarge(String::new()));
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                BodyError::UnsupportedEncoding(_) | BodyError::UnsupportedContentType(_) => {
                    receiver.refuse(Refusal::Unsupported(String::new()));
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                }
                BodyError::Malformed(_) => {
                    receiver.refuse(Refusal::Malformed(String::new()));
                    StatusCode::BAD_REQUEST
                }
            };
            return status_response(encoding, status, 3, &error.to_string(), None);
        }
    };
    let encoded = (encoding == Encoding::Protobuf).then_some(bytes);
    match receiver.export(request, encoded).await {
        Ok(outcome) => {
            let partial_success = outcome
                .message
                .map(|message| ExportTracePartialSuccess { rejected_spans: outcome.rejected as i64, error_message: message });
            let response = ExportTraceServiceResponse { partial_success };
            let bytes = body::encode(encoding, &response);
            ([(header::CONTENT_TYPE, encoding.content_type())], bytes).into_response()
        }
        Err(refusal) => refusal_response(&receiver, encoding, refusal),
    }
}

fn refusal_response(receiver: &Receiver, encoding: Encoding, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unavailable(message) => status_response(
            encoding,
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            &format!("{message}; retry later"),
            Some(receiver.server.retry_after_seconds),
        ),
        Refusal::Malformed(message) | Refusal::Unsupported(message) | Refusal::TooLarge(message) => {
            status_response(encoding, StatusCode::BAD_REQUEST, 3, &message, None)
        }
    }
}

/// Every error answer carries a `google.rpc.Status` in the request's encoding.
fn status_response(encoding: Encoding, status: StatusCode, code: i32, message: &str, retry_after: Option<u64>) -> Response {
    let bytes = match encoding {
        Encoding::Protobuf => tonic_types::Status { code, message: message.to_string(), details: vec![] }.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({ "code": code, "message": message, "details": [] })).expect("json"),
    };
    let mut response = Response::new(Body::from(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

async fn method_not_allowed() -> Response {
    let mut response = status_response(Encoding::Protobuf, StatusCode::METHOD_NOT_ALLOWED, 12, "use POST /v1/traces", None);
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn not_found() -> Response {
    status_response(Encoding::Protobuf, StatusCode::NOT_FOUND, 5, "Clew receives traces at POST /v1/traces", None)
}
