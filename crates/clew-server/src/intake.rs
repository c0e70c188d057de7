//! What the receivers that answer in plain text (Zipkin, Jaeger's collector) share: reading a
//! body under the size limit, decompressed under the same limit, and answering an export.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clew_ingest::body::{self, BodyError};
use http_body_util::BodyExt;

use crate::receiver::{ExportOutcome, Receiver, Refusal};

/// A plain-text answer.
pub fn text(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

/// The request body, decompressed; or the answer that refuses it (413, 415 or 400).
pub async fn read_body(receiver: &Receiver, headers: &HeaderMap, request: Request) -> Result<Bytes, Response> {
    let limit = receiver.server.max_request_bytes;
    let raw: Bytes = match http_body_util::Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            receiver.refuse(Refusal::TooLarge(String::new()));
            return Err(text(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body exceeds the limit of {limit} bytes")));
        }
        Err(error) => return Err(text(StatusCode::BAD_REQUEST, &format!("could not read the request body: {error}"))),
    };
    let content_encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    body::decompress(content_encoding, &raw, limit).map_err(|error| {
        let (status, refusal) = match &error {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Refusal::TooLarge(String::new())),
            BodyError::Malformed(_) => (StatusCode::BAD_REQUEST, Refusal::Malformed(String::new())),
            BodyError::UnsupportedEncoding(_) | BodyError::UnsupportedContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, Refusal::Unsupported(String::new()))
            }
        };
        receiver.refuse(refusal);
        text(status, &error.to_string())
    })
}

/// 202 once the spans are durable (with a message naming what was refused, if anything: these
/// protocols have no partial-success answer); 503 with `Retry-After` on push-back.
pub fn answer(receiver: &Receiver, result: Result<ExportOutcome, Refusal>) -> Response {
    match result {
        Ok(outcome) => match outcome.message {
            None => StatusCode::ACCEPTED.into_response(),
            Some(message) => (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response(),
        },
        Err(Refusal::Unavailable(message)) => {
            let mut response = text(StatusCode::SERVICE_UNAVAILABLE, &format!("{message}; retry later"));
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(receiver.server.retry_after_seconds));
            response
        }
        Err(Refusal::Malformed(message) | Refusal::Unsupported(message) | Refusal::TooLarge(message)) => {
            text(StatusCode::BAD_REQUEST, &message)
        }
    }
}

/// A query error as a status and message: the caller's fault is a 400; anything else is
/// logged and a 500.
pub fn query_error(error: clew_query::QueryError) -> (StatusCode, String) {
    match error {
        clew_query::QueryError::Invalid(message) => (StatusCode::BAD_REQUEST, message),
        other => {
            tracing::error!(message = "query failed", error = %other);
            (StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
        }
    }
}
