use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{SpanId, TraceId};

/// An attribute value, with every type OTLP can carry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Value {
    #[default]
    Empty,
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<Attribute>),
}

impl Value {
    /// The value as text, the way search and SQL see it: strings as they are, numbers in
    /// decimal, booleans as `true`/`false`, bytes as hex, arrays and maps as JSON.
    pub fn render(&self) -> String {
        self.rendered().into_owned()
    }

    /// [`Value::render`], borrowing a string value instead of copying it.
    pub fn rendered(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Value::Str(text) => Cow::Borrowed(text),
            other => {
                let mut text = String::new();
                other.render_into(&mut text);
                Cow::Owned(text)
            }
        }
    }

    /// [`Value::render`], appended to `out`: a caller rendering many values reuses one buffer.
    pub fn render_into(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            Value::Str(text) => out.push_str(text),
            Value::Empty => {}
            Value::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Value::Int(value) => write!(out, "{value}").expect("writing to a String succeeds"),
            Value::Double(value) => write!(out, "{value}").expect("writing to a String succeeds"),
            Value::Bytes(bytes) => out.push_str(&hex::encode(bytes)),
            Value::Array(_) | Value::Map(_) => write!(out, "{}", self.to_json()).expect("writing to a String succeeds"),
        }
    }

    /// A plain JSON form (no type tags), used for nested values.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Empty => J::Null,
            Value::Str(text) => J::String(text.clone()),
            Value::Bool(value) => J::Bool(*value),
            Value::Int(value) => J::from(*value),
            Value::Double(value) => serde_json::Number::from_f64(*value).map(J::Number).unwrap_or(J::Null),
            Value::Bytes(bytes) => J::String(hex::encode(bytes)),
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|entry| (entry.key.clone(), entry.value.to_json())).collect()),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(value) => Some(*value),
            Value::Str(text) => text.parse().ok(),
            Value::Double(value) if value.fract() == 0.0 => Some(*value as i64),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub key: String,
    pub value: Value,
}

impl Attribute {
    pub fn new(key: impl Into<String>, value: Value) -> Self {
        Self { key: key.into(), value }
    }
}

/// Finds an attribute by key in a list.
pub fn find<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|attribute| attribute.key == key).map(|attribute| &attribute.value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum SpanKind {
    #[default]
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    pub fn from_i32(value: i32) -> Self {
        match value {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.trim().to_ascii_lowercase();
        let lower = lower.strip_prefix("span_kind_").unwrap_or(&lower);
        Some(match lower {
            "unspecified" => Self::Unspecified,
            "internal" => Self::Internal,
            "server" => Self::Server,
            "client" => Self::Client,
            "producer" => Self::Producer,
            "consumer" => Self::Consumer,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[repr(u8)]
pub enum StatusCode {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl StatusCode {
    pub fn from_i32(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.trim().to_ascii_lowercase();
        let lower = lower.strip_prefix("status_code_").unwrap_or(&lower);
        Some(match lower {
            "unset" => Self::Unset,
            "ok" => Self::Ok,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub trace_state: String,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

/// The entity that produced spans: its attributes name the service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    pub attributes: Vec<Attribute>,
    pub dropped_attributes_count: u32,
    pub schema_url: String,
}

impl Resource {
    /// `service.name`, or `unknown_service` as the OpenTelemetry specification says.
    pub fn service_name(&self) -> &str {
        find(&self.attributes, "service.name").and_then(Value::as_str).unwrap_or("unknown_service")
    }
}

/// The instrumentation library that made a span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstrumentationScope {
    pub name: String,
    pub version: String,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes_count: u32,
    pub schema_url: String,
}

/// One span, with the resource and scope it came with. The default (all-zero IDs, no name)
/// is not a valid span: it is a base to fill in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: String,
    pub flags: u32,
    pub name: String,
    pub kind: SpanKind,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes_count: u32,
    pub events: Vec<Event>,
    pub dropped_events_count: u32,
    pub links: Vec<Link>,
    pub dropped_links_count: u32,
    pub status_code: StatusCode,
    pub status_message: String,
    pub resource: Arc<Resource>,
    pub scope: Arc<InstrumentationScope>,
}

impl Span {
    pub fn service_name(&self) -> &str {
        self.resource.service_name()
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano.saturating_sub(self.start_time_unix_nano)
    }

    pub fn attribute(&self, key: &str) -> Option<&Value> {
        find(&self.attributes, key)
    }

    pub fn is_error(&self) -> bool {
        self.status_code == StatusCode::Error
    }
}
