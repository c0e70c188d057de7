//! Request bodies: decompression under a size limit, and the two OTLP encodings.

use std::io::Read;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Why a body could not be read. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// 413: the body (after decompression) is larger than allowed.
    #[error("request body exceeds the limit of {limit} bytes (after decompression)")]
    TooLarge { limit: usize },
    /// 415: an encoding Clew does not read.
    #[error("unsupported Content-Encoding {0:?}: send identity or gzip")]
    UnsupportedEncoding(String),
    /// 415: a content type Clew does not read.
    #[error("unsupported Content-Type {0:?}: send application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    /// 400: the body is not what its headers say.
    #[error("{0}")]
    Malformed(String),
}

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a Content-Type header value; parameters such as `charset` are ignored.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, BodyError> {
        let raw = content_type.unwrap_or("");
        let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            _ => Err(BodyError::UnsupportedContentType(raw.to_string())),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Undoes `Content-Encoding`, refusing to produce more than `limit` bytes (a gzip bomb stops
/// at the limit, it is never inflated in full).
pub fn decompress(content_encoding: Option<&str>, body: &bytes::Bytes, limit: usize) -> Result<bytes::Bytes, BodyError> {
    let encoding = content_encoding.unwrap_or("identity").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => {
            if body.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            Ok(body.clone())
        }
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            let mut decoder = flate2::read::MultiGzDecoder::new(body.as_ref()).take(limit as u64 + 1);
            decoder.read_to_end(&mut out).map_err(|error| BodyError::Malformed(format!("gzip body could not be decompressed: {error}")))?;
            if out.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            Ok(out.into())
        }
        other => Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
}

/// Decodes an OTLP trace export request.
pub fn decode_request(encoding: Encoding, bytes: &[u8]) -> Result<ExportTraceServiceRequest, BodyError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(bytes)
            .map_err(|error| BodyError::Malformed(format!("body is not a valid OTLP protobuf ExportTraceServiceRequest: {error}"))),
        Encoding::Json => decode_json(bytes),
    }
}

/// OTLP/JSON. The generated serde code is strict where the protobuf JSON mapping is lenient,
/// so the document is normalised first: 64-bit integers may come as numbers or strings, enums
/// as integers or (wrongly, but commonly) names, and an empty AnyValue `{}` is allowed.
pub fn decode_json(bytes: &[u8]) -> Result<ExportTraceServiceRequest, BodyError> {
    let mut document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|error| BodyError::Malformed(format!("body is not valid JSON: {error}")))?;
    if !document.is_object() {
        return Err(BodyError::Malformed("OTLP/JSON body must be a JSON object".into()));
    }
    normalise_json(&mut document, None);
    serde_json::from_value(document)
        .map_err(|error| BodyError::Malformed(format!("body is not a valid OTLP/JSON ExportTraceServiceRequest: {error}")))
}

fn normalise_json(value: &mut serde_json::Value, key: Option<&str>) {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            // snake_case keys are accepted too, as the protobuf JSON mapping allows.
            let snake: Vec<String> = map.keys().filter(|k| k.contains('_')).cloned().collect();
            for old in snake {
                let camel = to_camel(&old);
                if !map.contains_key(&camel) {
                    if let Some(moved) = map.remove(&old) {
                        map.insert(camel, moved);
                    }
                }
            }
            for (child_key, child) in map.iter_mut() {
                normalise_json(child, Some(child_key.as_str()));
            }
            // An attribute whose value is `{}` or missing becomes an empty string-less value.
            if map.contains_key("key") && matches!(map.get("value"), Some(J::Object(o)) if o.is_empty()) {
                map.remove("value");
            }
        }
        J::Array(items) => {
            for item in items {
                normalise_json(item, key);
            }
        }
        J::Number(number) => {
            if matches!(key, Some("startTimeUnixNano" | "endTimeUnixNano" | "timeUnixNano")) {
                *value = J::String(number.to_string());
            }
        }
        J::String(text) => match key {
            Some("kind") => {
                if let Some(kind) = clew_model::SpanKind::parse(text) {
                    *value = J::from(kind as u8);
                }
            }
            Some("code") => {
                if let Some(code) = clew_model::StatusCode::parse(text) {
                    *value = J::from(code as u8);
                }
            }
            Some("flags" | "droppedAttributesCount" | "droppedEventsCount" | "droppedLinksCount") => {
                if let Ok(number) = text.parse::<u64>() {
                    *value = J::from(number);
                }
            }
            _ => {}
        },
        _ => {}
    }
}

fn to_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Encodes a response or status in the request's encoding.
pub fn encode<M: Message + serde::Serialize>(encoding: Encoding, message: &M) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 50 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 200_000);
        assert!(matches!(decompress(Some("gzip"), &bomb.into(), 4 << 20), Err(BodyError::TooLarge { .. })));
    }

    #[test]
    fn json_with_numbers_names_and_unknown_fields() {
        let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},
          "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
          "spanId":"eee19b7ec3c1b174","parentSpanId":"","name":"GET","kind":"SPAN_KIND_SERVER",
          "startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1700000000500000000",
          "attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"e","value":{}}],
          "status":{"code":2,"message":"boom"},"someFutureField":{"x":1}}]}]}]}"#;
        let request = decode_json(json).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_500_000_000);
        assert_eq!(span.trace_id.len(), 16);
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.attributes.len(), 2);
    }

    #[test]
    fn content_types() {
        assert_eq!(Encoding::from_content_type(Some("application/json; charset=utf-8")).unwrap(), Encoding::Json);
        assert!(Encoding::from_content_type(Some("text/plain")).is_err());
        assert!(Encoding::from_content_type(None).is_err());
    }
}
