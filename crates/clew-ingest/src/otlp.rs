//! OTLP protobuf messages ⇄ Clew's span model.

use std::collections::HashSet;
use std::sync::Arc;

use clew_model::{Attribute, Event, InstrumentationScope, Link, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::resource::v1 as resource;
use opentelemetry_proto::tonic::trace::v1 as trace;

use crate::Limits;

/// The outcome of converting one request: the spans kept, and what was refused or changed.
#[derive(Debug, Default)]
pub struct Accepted {
    pub spans: Vec<Span>,
    /// Spans refused whole (bad IDs, impossible timestamps).
    pub rejected: u64,
    /// Spans kept but cut down to the limits.
    pub truncated: u64,
    /// The first few reasons, for the partial-success message.
    pub reasons: Vec<String>,
}

impl Accepted {
    const MAX_REASONS: usize = 5;

    fn refuse(&mut self, reason: String) {
        self.rejected += 1;
        if self.reasons.len() < Self::MAX_REASONS {
            self.reasons.push(reason);
        }
    }

    /// The partial-success message, or `None` when everything was accepted as sent.
    pub fn message(&self) -> Option<String> {
        if self.rejected == 0 && self.truncated == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if self.rejected > 0 {
            parts.push(format!("{} span(s) rejected", self.rejected));
        }
        if self.truncated > 0 {
            parts.push(format!("{} span(s) truncated to the configured limits", self.truncated));
        }
        let mut message = parts.join(", ");
        if !self.reasons.is_empty() {
            message.push_str(": ");
            message.push_str(&self.reasons.join("; "));
        }
        Some(message)
    }
}

/// Converts and checks a request. `now_unix_nano` bounds timestamps from above.
pub fn from_otlp(request: ExportTraceServiceRequest, limits: &Limits, now_unix_nano: u64) -> Accepted {
    let mut accepted = Accepted::default();
    let min_start = limits.min_start_unix_seconds.saturating_mul(1_000_000_000);
    let max_start = now_unix_nano.saturating_add(limits.max_future_seconds.saturating_mul(1_000_000_000));
    for resource_spans in request.resource_spans {
        let resource = Arc::new(convert_resource(resource_spans.resource, resource_spans.schema_url, limits));
        for scope_spans in resource_spans.scope_spans {
            let scope = Arc::new(convert_scope(scope_spans.scope, scope_spans.schema_url, limits));
            for span in scope_spans.spans {
                match convert_span(span, &resource, &scope, limits, min_start, max_start) {
                    Ok((span, truncated)) => {
                        if truncated {
                            accepted.truncated += 1;
                            if accepted.reasons.len() < Accepted::MAX_REASONS {
                                accepted.reasons.push(format!("span {} exceeded a size or count limit", span.span_id));
                            }
                        }
                        accepted.spans.push(span);
                    }
                    Err(reason) => accepted.refuse(reason),
                }
            }
        }
    }
    accepted
}

fn convert_span(
    span: trace::Span,
    resource: &Arc<Resource>,
    scope: &Arc<InstrumentationScope>,
    limits: &Limits,
    min_start: u64,
    max_start: u64,
) -> Result<(Span, bool), String> {
    let trace_id = TraceId::from_slice(&span.trace_id).map_err(|error| format!("span {:?}: {error}", span.name))?;
    let span_id = SpanId::from_slice(&span.span_id).map_err(|error| format!("span {:?}: {error}", span.name))?;
    let parent_span_id = if span.parent_span_id.is_empty() || span.parent_span_id.iter().all(|b| *b == 0) {
        None
    } else {
        Some(SpanId::from_slice(&span.parent_span_id).map_err(|error| format!("span {span_id}: parent {error}"))?)
    };
    if span.start_time_unix_nano < min_start || span.start_time_unix_nano > max_start {
        return Err(format!(
            "span {span_id}: start time {} ns is outside the accepted range (after {} s since the Unix epoch, at most {} s in the future)",
            span.start_time_unix_nano,
            min_start / 1_000_000_000,
            (max_start.saturating_sub(min_start)) / 1_000_000_000
        ));
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(format!("span {span_id}: end time is before start time"));
    }
    // Times are stored as signed nanoseconds: an end past 2262 cannot be.
    if span.end_time_unix_nano > i64::MAX as u64 {
        return Err(format!(
            "span {span_id}: end time {} ns is beyond the latest time that can be stored (year 2262)",
            span.end_time_unix_nano
        ));
    }
    let mut truncated = false;
    let (attributes, dropped) = convert_attributes(span.attributes, limits, &mut truncated);
    let mut events = Vec::with_capacity(span.events.len().min(limits.max_events));
    let mut dropped_events = span.dropped_events_count;
    for event in span.events {
        if events.len() >= limits.max_events {
            dropped_events += 1;
            truncated = true;
            continue;
        }
        let (event_attributes, event_dropped) = convert_attributes(event.attributes, limits, &mut truncated);
        events.push(Event {
            time_unix_nano: event.time_unix_nano,
            name: cut(event.name, limits.max_name_bytes, &mut truncated),
            attributes: event_attributes,
            dropped_attributes_count: event.dropped_attributes_count.saturating_add(event_dropped),
        });
    }
    let mut links = Vec::with_capacity(span.links.len().min(limits.max_links));
    let mut dropped_links = span.dropped_links_count;
    for link in span.links {
        let (Ok(link_trace), Ok(link_span)) = (TraceId::from_slice(&link.trace_id), SpanId::from_slice(&link.span_id)) else {
            dropped_links += 1;
            truncated = true;
            continue;
        };
        if links.len() >= limits.max_links {
            dropped_links += 1;
            truncated = true;
            continue;
        }
        let (link_attributes, link_dropped) = convert_attributes(link.attributes, limits, &mut truncated);
        links.push(Link {
            trace_id: link_trace,
            span_id: link_span,
            trace_state: link.trace_state,
            attributes: link_attributes,
            dropped_attributes_count: link.dropped_attributes_count.saturating_add(link_dropped),
            flags: link.flags,
        });
    }
    let (status_code, status_message) = match span.status {
        Some(status) => (StatusCode::from_i32(status.code), cut(status.message, limits.max_attribute_value_bytes, &mut truncated)),
        None => (StatusCode::Unset, String::new()),
    };
    let span = Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: span.trace_state,
        flags: span.flags,
        name: cut(span.name, limits.max_name_bytes, &mut truncated),
        kind: SpanKind::from_i32(span.kind),
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        attributes,
        dropped_attributes_count: span.dropped_attributes_count.saturating_add(dropped),
        events,
        dropped_events_count: dropped_events,
        links,
        dropped_links_count: dropped_links,
        status_code,
        status_message,
        resource: Arc::clone(resource),
        scope: Arc::clone(scope),
    };
    Ok((span, truncated))
}

fn convert_resource(resource: Option<resource::Resource>, schema_url: String, limits: &Limits) -> Resource {
    let mut ignored = false;
    let resource = resource.unwrap_or_default();
    let (attributes, dropped) = convert_attributes(resource.attributes, limits, &mut ignored);
    Resource { attributes, dropped_attributes_count: resource.dropped_attributes_count.saturating_add(dropped), schema_url }
}

fn convert_scope(scope: Option<common::InstrumentationScope>, schema_url: String, limits: &Limits) -> InstrumentationScope {
    let mut ignored = false;
    let scope = scope.unwrap_or_default();
    let (attributes, dropped) = convert_attributes(scope.attributes, limits, &mut ignored);
    InstrumentationScope {
        name: scope.name,
        version: scope.version,
        attributes,
        dropped_attributes_count: scope.dropped_attributes_count.saturating_add(dropped),
        schema_url,
    }
}

/// Keeps at most `max_attributes`, the first of any repeated key, values cut to size.
fn convert_attributes(attributes: Vec<common::KeyValue>, limits: &Limits, truncated: &mut bool) -> (Vec<Attribute>, u32) {
    let mut out: Vec<Attribute> = Vec::with_capacity(attributes.len().min(limits.max_attributes));
    let mut dropped = 0u32;
    // A key seen before is dropped (the first value wins). Most spans carry a few attributes:
    // they are compared directly; a long list is indexed by key instead.
    let mut seen: Option<HashSet<String>> = (attributes.len() > 32).then(HashSet::new);
    for key_value in attributes {
        if out.len() >= limits.max_attributes {
            dropped = dropped.saturating_add(1);
            *truncated = true;
            continue;
        }
        let key = cut(key_value.key, limits.max_name_bytes, truncated);
        let repeated = match seen.as_mut() {
            Some(seen) => !seen.insert(key.clone()),
            None => out.iter().any(|attribute| attribute.key == key),
        };
        if repeated {
            continue;
        }
        let value = convert_value(key_value.value, limits, truncated, 0);
        out.push(Attribute { key, value });
    }
    (out, dropped)
}

fn convert_value(value: Option<common::AnyValue>, limits: &Limits, truncated: &mut bool, depth: usize) -> Value {
    use common::any_value::Value as V;
    let Some(value) = value.and_then(|v| v.value) else {
        return Value::Empty;
    };
    if depth > 16 {
        *truncated = true;
        return Value::Empty;
    }
    match value {
        V::StringValue(text) => Value::Str(cut(text, limits.max_attribute_value_bytes, truncated)),
        V::BoolValue(b) => Value::Bool(b),
        V::IntValue(i) => Value::Int(i),
        V::DoubleValue(d) => Value::Double(d),
        V::BytesValue(mut bytes) => {
            if bytes.len() > limits.max_attribute_value_bytes {
                bytes.truncate(limits.max_attribute_value_bytes);
                *truncated = true;
            }
            Value::Bytes(bytes)
        }
        V::ArrayValue(array) => {
            let mut items = array.values;
            if items.len() > limits.max_attributes {
                items.truncate(limits.max_attributes);
                *truncated = true;
            }
            Value::Array(items.into_iter().map(|item| convert_value(Some(item), limits, truncated, depth + 1)).collect())
        }
        V::KvlistValue(list) => {
            let mut entries = list.values;
            if entries.len() > limits.max_attributes {
                entries.truncate(limits.max_attributes);
                *truncated = true;
            }
            Value::Map(
                entries
                    .into_iter()
                    .map(|kv| Attribute {
                        key: cut(kv.key, limits.max_name_bytes, truncated),
                        value: convert_value(kv.value, limits, truncated, depth + 1),
                    })
                    .collect(),
            )
        }
    }
}

/// Cuts a string to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize, truncated: &mut bool) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        *truncated = true;
    }
    text
}

/// Spans back to an OTLP request, grouping spans that share a resource and scope (by
/// identity, as conversion shares them) into one `ResourceSpans`/`ScopeSpans`.
pub fn to_otlp<'a>(spans: impl IntoIterator<Item = &'a Span>) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<trace::ResourceSpans> = Vec::new();
    let mut last_resource: Option<*const Resource> = None;
    let mut last_scope: Option<*const InstrumentationScope> = None;
    for span in spans {
        let resource_ptr = Arc::as_ptr(&span.resource);
        let scope_ptr = Arc::as_ptr(&span.scope);
        if last_resource != Some(resource_ptr) {
            resource_spans.push(trace::ResourceSpans {
                resource: Some(resource::Resource {
                    attributes: attributes_to_otlp(&span.resource.attributes),
                    dropped_attributes_count: span.resource.dropped_attributes_count,
                    entity_refs: Vec::new(),
                }),
                scope_spans: Vec::new(),
                schema_url: span.resource.schema_url.clone(),
            });
            last_resource = Some(resource_ptr);
            last_scope = None;
        }
        let current = resource_spans.last_mut().expect("pushed above");
        if last_scope != Some(scope_ptr) {
            current.scope_spans.push(trace::ScopeSpans {
                scope: Some(common::InstrumentationScope {
                    name: span.scope.name.clone(),
                    version: span.scope.version.clone(),
                    attributes: attributes_to_otlp(&span.scope.attributes),
                    dropped_attributes_count: span.scope.dropped_attributes_count,
                }),
                spans: Vec::new(),
                schema_url: span.scope.schema_url.clone(),
            });
            last_scope = Some(scope_ptr);
        }
        current.scope_spans.last_mut().expect("pushed above").spans.push(span_to_otlp(span));
    }
    ExportTraceServiceRequest { resource_spans }
}

/// One span as an OTLP span message.
pub fn span_to_otlp(span: &Span) -> trace::Span {
    trace::Span {
        trace_id: span.trace_id.0.to_vec(),
        span_id: span.span_id.0.to_vec(),
        parent_span_id: span.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        name: span.name.clone(),
        kind: span.kind as i32,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        status: (span.status_code != StatusCode::Unset || !span.status_message.is_empty())
            .then(|| trace::Status { message: span.status_message.clone(), code: span.status_code as i32 }),
        ..span_detail_to_otlp(span)
    }
}

/// The part of a span that columns do not hold with full fidelity, as an OTLP span message
/// with the other fields left empty: trace state, flags, typed attributes, events, links
/// and the dropped counts.
pub fn span_detail_to_otlp(span: &Span) -> trace::Span {
    trace::Span {
        trace_state: span.trace_state.clone(),
        flags: span.flags,
        attributes: attributes_to_otlp(&span.attributes),
        dropped_attributes_count: span.dropped_attributes_count,
        events: span
            .events
            .iter()
            .map(|event| trace::span::Event {
                time_unix_nano: event.time_unix_nano,
                name: event.name.clone(),
                attributes: attributes_to_otlp(&event.attributes),
                dropped_attributes_count: event.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: span.dropped_events_count,
        links: span_detail_links(span).collect(),
        dropped_links_count: span.dropped_links_count,
        ..Default::default()
    }
}

fn span_detail_links(span: &Span) -> impl Iterator<Item = trace::span::Link> + '_ {
    span.links.iter().map(|link| trace::span::Link {
        trace_id: link.trace_id.0.to_vec(),
        span_id: link.span_id.0.to_vec(),
        trace_state: link.trace_state.clone(),
        attributes: attributes_to_otlp(&link.attributes),
        dropped_attributes_count: link.dropped_attributes_count,
        flags: link.flags,
    })
}

/// [`span_detail_to_otlp`] into a message kept from an earlier span: the strings and vectors
/// it already holds are refilled rather than allocated again, which is most of the cost when
/// a batch encodes the detail of every span. The fields outside the detail are emptied.
pub fn span_detail_into_otlp(span: &Span, into: &mut trace::Span) {
    into.trace_id.clear();
    into.span_id.clear();
    into.parent_span_id.clear();
    into.name.clear();
    into.kind = 0;
    into.start_time_unix_nano = 0;
    into.end_time_unix_nano = 0;
    into.status = None;
    refill(&mut into.trace_state, &span.trace_state);
    into.flags = span.flags;
    attributes_into_otlp(&span.attributes, &mut into.attributes);
    into.dropped_attributes_count = span.dropped_attributes_count;
    into.events.resize_with(span.events.len(), Default::default);
    for (target, event) in into.events.iter_mut().zip(&span.events) {
        target.time_unix_nano = event.time_unix_nano;
        refill(&mut target.name, &event.name);
        attributes_into_otlp(&event.attributes, &mut target.attributes);
        target.dropped_attributes_count = event.dropped_attributes_count;
    }
    into.dropped_events_count = span.dropped_events_count;
    // Links are rare: built afresh.
    into.links.clear();
    into.links.extend(span_detail_links(span));
    into.dropped_links_count = span.dropped_links_count;
}

fn refill(target: &mut String, source: &str) {
    target.clear();
    target.push_str(source);
}

fn attributes_into_otlp(attributes: &[Attribute], into: &mut Vec<common::KeyValue>) {
    use common::any_value::Value as V;
    into.resize_with(attributes.len(), Default::default);
    for (target, attribute) in into.iter_mut().zip(attributes) {
        refill(&mut target.key, &attribute.key);
        match (&attribute.value, target.value.as_mut()) {
            // A string into a string value already there: its buffer is reused.
            (Value::Str(text), Some(common::AnyValue { value: Some(V::StringValue(held)) })) => refill(held, text),
            (value, _) => target.value = value_to_otlp(value),
        }
    }
}

pub fn attributes_to_otlp(attributes: &[Attribute]) -> Vec<common::KeyValue> {
    attributes.iter().map(|a| common::KeyValue { key: a.key.clone(), value: value_to_otlp(&a.value) }).collect()
}

fn value_to_otlp(value: &Value) -> Option<common::AnyValue> {
    use common::any_value::Value as V;
    let inner = match value {
        Value::Empty => return None,
        Value::Str(text) => V::StringValue(text.clone()),
        Value::Bool(b) => V::BoolValue(*b),
        Value::Int(i) => V::IntValue(*i),
        Value::Double(d) => V::DoubleValue(*d),
        Value::Bytes(bytes) => V::BytesValue(bytes.clone()),
        // An empty element keeps its place, as an AnyValue without a value.
        Value::Array(items) => {
            V::ArrayValue(common::ArrayValue { values: items.iter().map(|item| value_to_otlp(item).unwrap_or_default()).collect() })
        }
        Value::Map(entries) => V::KvlistValue(common::KeyValueList { values: attributes_to_otlp(entries) }),
    };
    Some(common::AnyValue { value: Some(inner) })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn request(spans: Vec<trace::Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![trace::ResourceSpans {
                resource: Some(resource::Resource {
                    attributes: vec![common::KeyValue {
                        key: "service.name".into(),
                        value: Some(common::AnyValue { value: Some(common::any_value::Value::StringValue("svc".into())) }),
                    }],
                    dropped_attributes_count: 0,
                    entity_refs: vec![],
                }),
                scope_spans: vec![trace::ScopeSpans { scope: None, spans, schema_url: String::new() }],
                schema_url: String::new(),
            }],
        }
    }

    fn good(id: u8) -> trace::Span {
        trace::Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            name: "op".into(),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn partial_success_keeps_the_good_spans() {
        let now = 1_700_000_001_000_000_000;
        let mut zero_trace = good(2);
        zero_trace.trace_id = vec![0; 16];
        let mut short_span = good(3);
        short_span.span_id = vec![1; 4];
        let mut ancient = good(4);
        ancient.start_time_unix_nano = 5;
        let mut backwards = good(5);
        backwards.end_time_unix_nano = 1;
        let mut endless = good(6);
        endless.end_time_unix_nano = u64::MAX;
        let accepted = from_otlp(request(vec![good(1), zero_trace, short_span, ancient, backwards, endless]), &Limits::default(), now);
        assert_eq!(accepted.spans.len(), 1);
        assert_eq!(accepted.rejected, 5);
        let message = accepted.message().unwrap();
        assert!(message.starts_with("5 span(s) rejected"), "{message}");
        assert!(message.contains("year 2262"), "{message}");
        assert!(message.contains("must not be all zeros"), "{message}");
    }

    #[test]
    fn too_many_attributes_are_dropped_and_counted() {
        let mut span = good(1);
        span.attributes = (0..10_000)
            .map(|i| common::KeyValue {
                key: format!("k{i}"),
                value: Some(common::AnyValue { value: Some(common::any_value::Value::IntValue(i)) }),
            })
            .collect();
        let accepted = from_otlp(request(vec![span]), &Limits::default(), 1_700_000_001_000_000_000);
        assert_eq!(accepted.spans[0].attributes.len(), 128);
        assert_eq!(accepted.spans[0].dropped_attributes_count, 10_000 - 128);
        assert_eq!(accepted.truncated, 1);
    }

    #[test]
    fn round_trip_through_otlp() {
        let accepted = from_otlp(request(vec![good(1), good(2)]), &Limits::default(), 1_700_000_001_000_000_000);
        let back = to_otlp(&accepted.spans);
        assert_eq!(back.resource_spans.len(), 1);
        assert_eq!(back.resource_spans[0].scope_spans[0].spans.len(), 2);
        let again = from_otlp(back, &Limits::default(), 1_700_000_001_000_000_000);
        assert_eq!(again.spans[0].trace_id, accepted.spans[0].trace_id);
        assert_eq!(again.spans[1].end_time_unix_nano, accepted.spans[1].end_time_unix_nano);
        // An array's empty elements keep their places, in a span's and a resource's attributes.
        let array = Value::Array(vec![Value::Str("a".into()), Value::Empty, Value::Int(1)]);
        let mut span = accepted.spans[0].clone();
        span.attributes = vec![Attribute::new("list", array.clone())];
        span.resource = Arc::new(Resource { attributes: vec![Attribute::new("list", array.clone())], ..(*span.resource).clone() });
        let again = from_otlp(to_otlp([&span]), &Limits::default(), 1_700_000_001_000_000_000);
        assert_eq!(again.spans[0].attributes, span.attributes);
        assert_eq!(again.spans[0].resource.attributes, span.resource.attributes);
    }

    #[test]
    fn a_refilled_detail_message_equals_a_fresh_one() {
        let accepted = from_otlp(request(vec![good(1)]), &Limits::default(), 1_700_000_001_000_000_000);
        let base = accepted.spans[0].clone();
        let with = |attributes: Vec<Attribute>, events: usize, state: &str| {
            let mut span = base.clone();
            span.attributes = attributes;
            span.trace_state = state.into();
            span.events = (0..events)
                .map(|i| Event {
                    time_unix_nano: i as u64,
                    name: format!("event {i}"),
                    attributes: vec![Attribute::new("n", Value::Int(i as i64))],
                    dropped_attributes_count: 1,
                })
                .collect();
            span
        };
        let spans = [
            with(vec![Attribute::new("a", Value::Str("long text value".into())), Attribute::new("b", Value::Int(1))], 2, "k=v"),
            // Fewer attributes, a string where an integer was, an integer where a string was.
            with(vec![Attribute::new("b", Value::Int(7)), Attribute::new("c", Value::Str("x".into()))], 0, ""),
            with(
                vec![
                    Attribute::new("e", Value::Empty),
                    Attribute::new("l", Value::Array(vec![Value::Str("a".into()), Value::Empty])),
                    Attribute::new("s", Value::Str(String::new())),
                ],
                3,
                "",
            ),
            with(vec![], 1, "z=1"),
        ];
        // A message that held a whole span first: the fields outside the detail are emptied.
        let mut message = span_to_otlp(&spans[0]);
        for span in &spans {
            span_detail_into_otlp(span, &mut message);
            assert_eq!(message, span_detail_to_otlp(span));
            assert_eq!(message.encode_to_vec(), span_detail_to_otlp(span).encode_to_vec());
        }
    }
}
