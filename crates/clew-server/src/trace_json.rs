//! A trace as the native API answers it (`GET /api/v1/traces/{id}`), serialized straight from
//! the model: a 20,000-span trace is tens of megabytes of JSON, too much to build as a tree of
//! `serde_json::Value`s first.

use base64::Engine as _;
use clew_model::{Attribute, Event, InstrumentationScope, Link, Resource, Span, SpanFacts, Value, span_flags, trace_flags};
use clew_query::TraceView;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

/// A Unix-nanosecond time, as a string (it exceeds JavaScript's safe integers).
struct Nanos(u64);

impl Serialize for Nanos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// An attribute value in OTLP/JSON form (`{"intValue": "42"}`, …).
pub struct AnyValue<'a>(pub &'a Value);

impl Serialize for AnyValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match self.0 {
            Value::Empty => {}
            Value::Str(s) => map.serialize_entry("stringValue", s)?,
            Value::Bool(b) => map.serialize_entry("boolValue", b)?,
            Value::Int(i) => map.serialize_entry("intValue", &i.to_string())?,
            Value::Double(d) => map.serialize_entry("doubleValue", d)?,
            Value::Bytes(b) => map.serialize_entry("bytesValue", &base64::engine::general_purpose::STANDARD.encode(b))?,
            Value::Array(items) => map.serialize_entry("arrayValue", &Values(items))?,
            Value::Map(entries) => map.serialize_entry("kvlistValue", &KeyValues { values: Attributes(entries) })?,
        }
        map.end()
    }
}

struct Values<'a>(&'a [Value]);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("values", &Sequence(self.0.iter().map(AnyValue)))?;
        map.end()
    }
}

#[derive(Serialize)]
struct KeyValues<'a> {
    values: Attributes<'a>,
}

/// Attributes as `[{"key", "value"}]`.
pub struct Attributes<'a>(pub &'a [Attribute]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct KeyValue<'a> {
            key: &'a str,
            value: AnyValue<'a>,
        }
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for attribute in self.0 {
            seq.serialize_element(&KeyValue { key: &attribute.key, value: AnyValue(&attribute.value) })?;
        }
        seq.end()
    }
}

/// Any iterator of serializable items, as a JSON array (the iterator is cloned to be walked).
struct Sequence<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Sequence<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

fn flag_names(flags: u32, names: &[(u32, &'static str)]) -> Vec<&'static str> {
    names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, name)| *name).collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventJson<'a> {
    time_unix_nano: Nanos,
    name: &'a str,
    attributes: Attributes<'a>,
    dropped_attributes_count: u32,
}

impl<'a> From<&'a Event> for EventJson<'a> {
    fn from(e: &'a Event) -> Self {
        Self {
            time_unix_nano: Nanos(e.time_unix_nano),
            name: &e.name,
            attributes: Attributes(&e.attributes),
            dropped_attributes_count: e.dropped_attributes_count,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkJson<'a> {
    trace_id: String,
    span_id: String,
    trace_state: &'a str,
    attributes: Attributes<'a>,
    dropped_attributes_count: u32,
    flags: u32,
}

impl<'a> From<&'a Link> for LinkJson<'a> {
    fn from(l: &'a Link) -> Self {
        Self {
            trace_id: l.trace_id.to_hex(),
            span_id: l.span_id.to_hex(),
            trace_state: &l.trace_state,
            attributes: Attributes(&l.attributes),
            dropped_attributes_count: l.dropped_attributes_count,
            flags: l.flags,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceJson<'a> {
    attributes: Attributes<'a>,
    dropped_attributes_count: u32,
    schema_url: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopeJson<'a> {
    name: &'a str,
    version: &'a str,
    attributes: Attributes<'a>,
    dropped_attributes_count: u32,
    schema_url: &'a str,
}

#[derive(Serialize)]
struct Status<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanJson<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    trace_state: &'a str,
    flags: u32,
    name: &'a str,
    kind: &'a str,
    start_time_unix_nano: Nanos,
    end_time_unix_nano: Nanos,
    duration_nanos: u64,
    status: Status<'a>,
    attributes: Attributes<'a>,
    dropped_attributes_count: u32,
    events: Sequence<std::iter::Map<std::slice::Iter<'a, Event>, fn(&'a Event) -> EventJson<'a>>>,
    dropped_events_count: u32,
    links: Sequence<std::iter::Map<std::slice::Iter<'a, Link>, fn(&'a Link) -> LinkJson<'a>>>,
    dropped_links_count: u32,
    service: &'a str,
    resource: ResourceJson<'a>,
    scope: ScopeJson<'a>,
    depth: u32,
    self_nanos: u64,
    critical_path_nanos: u64,
    problems: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_name: Option<&'a str>,
}

fn span_json<'a>(span: &'a Span, facts: &'a SpanFacts, parent: Option<&'a Span>) -> SpanJson<'a> {
    let resource: &Resource = &span.resource;
    let scope: &InstrumentationScope = &span.scope;
    SpanJson {
        trace_id: span.trace_id.to_hex(),
        span_id: span.span_id.to_hex(),
        parent_span_id: span.parent_span_id.map(|p| p.to_hex()),
        trace_state: &span.trace_state,
        flags: span.flags,
        name: &span.name,
        kind: span.kind.as_str(),
        start_time_unix_nano: Nanos(span.start_time_unix_nano),
        end_time_unix_nano: Nanos(span.end_time_unix_nano),
        duration_nanos: span.duration_nanos(),
        status: Status { code: span.status_code.as_str(), message: &span.status_message },
        attributes: Attributes(&span.attributes),
        dropped_attributes_count: span.dropped_attributes_count,
        events: Sequence(span.events.iter().map(EventJson::from as fn(&'a Event) -> EventJson<'a>)),
        dropped_events_count: span.dropped_events_count,
        links: Sequence(span.links.iter().map(LinkJson::from as fn(&'a Link) -> LinkJson<'a>)),
        dropped_links_count: span.dropped_links_count,
        service: span.service_name(),
        resource: ResourceJson {
            attributes: Attributes(&resource.attributes),
            dropped_attributes_count: resource.dropped_attributes_count,
            schema_url: &resource.schema_url,
        },
        scope: ScopeJson {
            name: &scope.name,
            version: &scope.version,
            attributes: Attributes(&scope.attributes),
            dropped_attributes_count: scope.dropped_attributes_count,
            schema_url: &scope.schema_url,
        },
        depth: facts.depth,
        self_nanos: facts.self_nanos,
        critical_path_nanos: facts.critical_path_nanos,
        problems: flag_names(facts.flags, &[(span_flags::ORPHAN, "orphan"), (span_flags::UNMATCHED_CLIENT, "unmatched_client")]),
        parent_service: parent.map(Span::service_name),
        parent_name: parent.map(|parent| parent.name.as_str()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Segment {
    span_id: String,
    start_time_unix_nano: Nanos,
    end_time_unix_nano: Nanos,
}

/// `GET /api/v1/traces/{id}`: the trace's facts, warnings and critical path, and every span.
pub struct TraceJson<'a>(pub &'a TraceView);

impl Serialize for TraceJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let trace = &self.0.trace;
        let facts = &trace.facts;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("traceId", &trace.spans.first().map(|s| s.trace_id.to_hex()).unwrap_or_default())?;
        map.serialize_entry("rootService", &facts.root_service)?;
        map.serialize_entry("rootName", &facts.root_name)?;
        map.serialize_entry("startTimeUnixNano", &Nanos(facts.start_unix_nano))?;
        map.serialize_entry("endTimeUnixNano", &Nanos(facts.end_unix_nano))?;
        map.serialize_entry("durationNanos", &facts.duration_nanos())?;
        map.serialize_entry("spanCount", &facts.span_count)?;
        map.serialize_entry("errorCount", &facts.error_count)?;
        map.serialize_entry("services", &facts.services)?;
        map.serialize_entry(
            "problems",
            &flag_names(
                facts.flags,
                &[
                    (trace_flags::MULTIPLE_ROOTS, "multiple_roots"),
                    (trace_flags::HAS_ORPHANS, "orphans"),
                    (trace_flags::HAS_UNMATCHED_CLIENT, "unmatched_client"),
                    (trace_flags::NO_ROOT, "no_root"),
                ],
            ),
        )?;
        map.serialize_entry("warnings", &self.0.warnings)?;
        let segments: Vec<Segment> = trace
            .critical_path
            .iter()
            .map(|segment| Segment {
                span_id: trace.spans[segment.span_index].span_id.to_hex(),
                start_time_unix_nano: Nanos(segment.start),
                end_time_unix_nano: Nanos(segment.end),
            })
            .collect();
        map.serialize_entry("criticalPath", &segments)?;
        map.serialize_entry(
            "spans",
            &Sequence(
                trace
                    .spans
                    .iter()
                    .zip(&trace.span_facts)
                    .map(|(span, facts)| span_json(span, facts, facts.parent.map(|parent| &trace.spans[parent]))),
            ),
        )?;
        map.end()
    }
}
