//! The TraceQL conformance suite: queries with the set of traces each must match, over a fixed
//! dataset of five traces, and parse errors with their columns. Expected sets were worked out
//! by hand from TraceQL's documented semantics.

use std::sync::Arc;

use clew_model::{
    AssembledTrace, Attribute, Event, InstrumentationScope, Link, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, Value as V,
    assemble,
};

use super::*;

struct S {
    id: &'static str,
    parent: Option<&'static str>,
    service: &'static str,
    name: &'static str,
    kind: SpanKind,
    start_ms: u64,
    end_ms: u64,
    status: StatusCode,
    message: &'static str,
    attributes: Vec<(&'static str, V)>,
}

fn s(
    id: &'static str,
    parent: Option<&'static str>,
    service: &'static str,
    name: &'static str,
    kind: SpanKind,
    start_ms: u64,
    end_ms: u64,
) -> S {
    S { id, parent, service, name, kind, start_ms, end_ms, status: StatusCode::Unset, message: "", attributes: vec![] }
}

impl S {
    fn attrs(mut self, attributes: Vec<(&'static str, V)>) -> Self {
        self.attributes = attributes;
        self
    }
    fn status(mut self, status: StatusCode, message: &'static str) -> Self {
        self.status = status;
        self.message = message;
        self
    }
}

fn text(value: &str) -> V {
    V::Str(value.to_string())
}

fn span_id(label: &str) -> SpanId {
    let mut bytes = [0u8; 8];
    for (i, b) in label.bytes().enumerate() {
        bytes[i] = b;
    }
    SpanId(bytes)
}

fn trace_id(number: u8) -> TraceId {
    TraceId([number; 16])
}

fn build(number: u8, spans: Vec<S>, resources: &[(&str, Vec<(&'static str, V)>)]) -> AssembledTrace {
    let resources: Vec<(&str, Arc<Resource>)> = resources
        .iter()
        .map(|(service, attributes)| {
            let mut all = vec![Attribute::new("service.name", text(service))];
            all.extend(attributes.iter().map(|(k, v)| Attribute::new(*k, v.clone())));
            (*service, Arc::new(Resource { attributes: all, ..Default::default() }))
        })
        .collect();
    let spans = spans
        .into_iter()
        .map(|s| Span {
            trace_id: trace_id(number),
            span_id: span_id(s.id),
            parent_span_id: s.parent.map(span_id),
            trace_state: String::new(),
            flags: 0,
            name: s.name.into(),
            kind: s.kind,
            start_time_unix_nano: 1_000_000_000_000 + s.start_ms * 1_000_000,
            end_time_unix_nano: 1_000_000_000_000 + s.end_ms * 1_000_000,
            attributes: s.attributes.into_iter().map(|(k, v)| Attribute::new(k, v)).collect(),
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: s.status,
            status_message: s.message.into(),
            resource: Arc::clone(&resources.iter().find(|(name, _)| *name == s.service).expect("resource").1),
            scope: Arc::new(InstrumentationScope::default()),
        })
        .collect();
    assemble(spans)
}

/// The five traces every query runs over.
fn dataset() -> Vec<AssembledTrace> {
    use SpanKind::*;
    use StatusCode::{Error, Ok};
    let frontend = ("frontend", vec![("region", text("eu")), ("service.version", text("1.0"))]);
    let t1 = build(
        1,
        vec![
            s("a1", None, "frontend", "GET /checkout", Server, 0, 120).attrs(vec![
                ("http.route", text("/checkout")),
                ("http.response.status_code", V::Int(200)),
                ("http.request.method", text("GET")),
            ]),
            s("a2", Some("a1"), "frontend", "call cart", Client, 10, 80).attrs(vec![("peer.service", text("cart"))]),
            s("a3", Some("a2"), "cart", "POST /cart", Server, 15, 75)
                .attrs(vec![("http.route", text("/cart")), ("http.response.status_code", V::Int(200))]),
            s("a4", Some("a3"), "cart", "SELECT carts", Client, 20, 50)
                .attrs(vec![("db.system", text("postgresql")), ("db.statement", text("SELECT * FROM carts"))]),
        ],
        &[frontend.clone(), ("cart", vec![("region", text("eu")), ("service.version", text("2.3"))])],
    );
    let mut t2 = build(
        2,
        vec![
            s("b1", None, "frontend", "GET /checkout", Server, 0, 900)
                .attrs(vec![
                    ("http.route", text("/checkout")),
                    ("http.response.status_code", V::Int(500)),
                    ("http.request.method", text("GET")),
                ])
                .status(Error, ""),
            s("b2", Some("b1"), "frontend", "call cart", Client, 10, 890).attrs(vec![("peer.service", text("cart"))]).status(Error, ""),
            s("b3", Some("b2"), "cart", "POST /cart", Server, 15, 885)
                .attrs(vec![("http.route", text("/cart")), ("http.response.status_code", V::Int(500))])
                .status(Error, "db timeout"),
            s("b4", Some("b3"), "cart", "SELECT carts", Client, 20, 820).attrs(vec![("db.system", text("postgresql"))]).status(Error, ""),
        ],
        &[frontend.clone(), ("cart", vec![("region", text("eu")), ("service.version", text("2.4"))])],
    );
    let select = t2.spans.iter_mut().find(|s| s.name == "SELECT carts").expect("span");
    select.events.push(Event {
        time_unix_nano: select.end_time_unix_nano,
        name: "exception".into(),
        attributes: vec![Attribute::new("exception.type", text("Timeout"))],
        dropped_attributes_count: 0,
    });
    let mut t3 = build(
        3,
        vec![
            s("c1", None, "frontend", "GET /search", Server, 0, 50)
                .attrs(vec![("http.route", text("/search")), ("http.response.status_code", V::Int(200))])
                .status(Ok, ""),
            s("c2", Some("c1"), "frontend", "call search", Client, 5, 45).attrs(vec![("peer.service", text("search"))]),
            s("c3", Some("c2"), "search", "GET /search", Server, 6, 44).attrs(vec![("http.route", text("/search"))]),
            s("c4", Some("c3"), "search", "query es", Client, 10, 30).attrs(vec![("db.system", text("elasticsearch"))]),
        ],
        &[frontend, ("search", vec![("region", text("us"))])],
    );
    let query = t3.spans.iter_mut().find(|s| s.name == "query es").expect("span");
    query.links.push(Link {
        trace_id: trace_id(1),
        span_id: span_id("a1"),
        trace_state: String::new(),
        attributes: vec![],
        dropped_attributes_count: 0,
        flags: 0,
    });
    let t4 = build(
        4,
        vec![
            s("d1", None, "orders", "POST /order", Server, 0, 30).attrs(vec![("http.route", text("/order"))]),
            s("d2", Some("d1"), "orders", "publish order", Producer, 5, 10).attrs(vec![("messaging.system", text("kafka"))]),
            s("d3", Some("d2"), "notifications", "consume order", Consumer, 100, 300).attrs(vec![("messaging.system", text("kafka"))]),
            s("d4", Some("d3"), "notifications", "send email", Internal, 120, 270)
                .attrs(vec![("retries", V::Int(2)), ("vip", V::Bool(true))]),
        ],
        &[("orders", vec![("region", text("eu"))]), ("notifications", vec![("region", text("eu"))])],
    );
    let t5 = build(
        5,
        vec![
            s("e1", None, "batch", "nightly job", Internal, 0, 5000),
            s("e2", Some("e1"), "batch", "step 1", Internal, 0, 1000),
            s("e3", Some("e1"), "batch", "step 2", Internal, 1000, 3000)
                .attrs(vec![("tags", V::Array(vec![text("a"), text("b")])), ("rows", V::Double(1.5))]),
        ],
        &[("batch", vec![("region", text("us"))])],
    );
    // The trace number is the first byte of every trace ID.
    vec![t1, t2, t3, t4, t5]
}

fn matching(query: &str, traces: &[AssembledTrace]) -> Vec<u8> {
    let parsed = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    traces
        .iter()
        .filter(|trace| !evaluate(&parsed, &TraceContext::new(trace)).is_empty())
        .map(|trace| trace.spans[0].trace_id.0[0])
        .collect()
}

#[test]
fn conformance() {
    let traces = dataset();
    let a1 = span_id("a1").to_hex();
    let a3 = span_id("a3").to_hex();
    let t1 = trace_id(1).to_hex();
    let cases: Vec<(String, Vec<u8>)> = vec![
        // Filters on one span.
        ("{}".into(), vec![1, 2, 3, 4, 5]),
        (r#"{ resource.service.name = "cart" }"#.into(), vec![1, 2]),
        (r#"{ .service.name = "cart" }"#.into(), vec![1, 2]),
        (r#"{ resource.service.name != "frontend" }"#.into(), vec![1, 2, 3, 4, 5]),
        (r#"{ resource.service.name = "nope" }"#.into(), vec![]),
        (r#"{ name = "GET /checkout" }"#.into(), vec![1, 2]),
        (r#"{ span:name = "GET /search" }"#.into(), vec![3]),
        (r#"{ name =~ "GET .*" }"#.into(), vec![1, 2, 3]),
        (r#"{ name !~ "GET .*" && resource.service.name = "frontend" }"#.into(), vec![1, 2, 3]),
        (r#"{ name =~ "step [0-9]" }"#.into(), vec![5]),
        (r#"{ name =~ "step" }"#.into(), vec![]),
        ("{ status = error }".into(), vec![2]),
        ("{ status = ok }".into(), vec![3]),
        (r#"{ status = unset && resource.service.name = "batch" }"#.into(), vec![5]),
        (r#"{ status != error && name = "GET /checkout" }"#.into(), vec![1]),
        (r#"{ statusMessage = "db timeout" }"#.into(), vec![2]),
        ("{ kind = server }".into(), vec![1, 2, 3, 4]),
        ("{ kind = consumer }".into(), vec![4]),
        ("{ kind = internal }".into(), vec![4, 5]),
        ("{ kind = producer || kind = consumer }".into(), vec![4]),
        (r#"{ span:kind = client && span.db.system = "postgresql" }"#.into(), vec![1, 2]),
        ("{ duration > 500ms }".into(), vec![2, 5]),
        ("{ duration >= 5s }".into(), vec![5]),
        ("{ duration < 10ms }".into(), vec![4]),
        ("{ duration > 100ms && duration < 200ms }".into(), vec![1, 4]),
        ("{ span:duration = 60ms }".into(), vec![1]),
        ("{ trace:duration > 500ms }".into(), vec![2, 5]),
        ("{ traceDuration < 100ms }".into(), vec![3]),
        (r#"{ trace:rootService = "orders" }"#.into(), vec![4]),
        (r#"{ rootServiceName = "frontend" }"#.into(), vec![1, 2, 3]),
        (r#"{ trace:rootName = "GET /search" }"#.into(), vec![3]),
        (r#"{ rootName = "nightly job" }"#.into(), vec![5]),
        ("{ span.http.response.status_code = 500 }".into(), vec![2]),
        ("{ span.http.response.status_code >= 200 && span.http.response.status_code < 300 }".into(), vec![1, 3]),
        ("{ .http.response.status_code > 499 }".into(), vec![2]),
        (r#"{ span.http.route = "/cart" }"#.into(), vec![1, 2]),
        (r#"{ span.http.route =~ "/(cart|order)" }"#.into(), vec![1, 2, 4]),
        (r#"{ span.http.route != "/checkout" }"#.into(), vec![1, 2, 3, 4]),
        ("{ span.db.system = nil && kind = client }".into(), vec![1, 2, 3]),
        ("{ span.db.system != nil }".into(), vec![1, 2, 3]),
        (r#"{ resource.region = "us" }"#.into(), vec![3, 5]),
        (r#"{ resource.region = "us" && kind = server }"#.into(), vec![3]),
        (r#"{ .region = "eu" && name = "send email" }"#.into(), vec![4]),
        (r#"{ resource.service.version = "2.4" }"#.into(), vec![2]),
        (r#"{ resource.service.version =~ "2\\..*" }"#.into(), vec![1, 2]),
        ("{ span.retries = 2 }".into(), vec![4]),
        ("{ span.retries > 1 && span.vip = true }".into(), vec![4]),
        ("{ span.vip }".into(), vec![4]),
        ("{ !span.vip && kind = internal }".into(), vec![5]),
        ("{ span.rows = 1.5 }".into(), vec![5]),
        ("{ span.rows > 1 }".into(), vec![5]),
        (r#"{ span.tags = "a" }"#.into(), vec![5]),
        (r#"{ span.tags =~ "b|c" }"#.into(), vec![5]),
        (r#"{ span.tags != "c" }"#.into(), vec![5]),
        (r#"{ span.tags != "a" }"#.into(), vec![]),
        (r#"{ event:name = "exception" }"#.into(), vec![2]),
        (r#"{ event.exception.type = "Timeout" }"#.into(), vec![2]),
        (format!(r#"{{ link:traceID = "{t1}" }}"#), vec![3]),
        (format!(r#"{{ span:id = "{a3}" }}"#), vec![1]),
        (format!(r#"{{ span:parentID = "{a1}" }}"#), vec![1]),
        ("{ span:childCount = 2 }".into(), vec![5]),
        ("{ span:childCount = 0 && kind = client }".into(), vec![1, 2, 3]),
        ("{ duration > 2 * 100ms }".into(), vec![2, 5]),
        ("{ (kind = server || kind = consumer) && duration > 150ms }".into(), vec![2, 4]),
        ("{ kind = server && !(status = error) }".into(), vec![1, 3, 4]),
        // Spanset operators.
        (r#"{ status = error } && { resource.service.name = "frontend" }"#.into(), vec![2]),
        (r#"{ resource.service.name = "search" } || { resource.service.name = "orders" }"#.into(), vec![3, 4]),
        ("{ kind = consumer } && { kind = producer }".into(), vec![4]),
        (r#"{ kind = consumer } && { kind = server && resource.service.name = "cart" }"#.into(), vec![]),
        // Structure.
        (r#"{ resource.service.name = "frontend" } >> { resource.service.name = "cart" && status = error }"#.into(), vec![2]),
        (r#"{ resource.service.name = "frontend" } >> { span.db.system = "postgresql" }"#.into(), vec![1, 2]),
        (r#"{ resource.service.name = "frontend" } > { span.db.system != nil }"#.into(), vec![]),
        ("{ kind = client } > { kind = server }".into(), vec![1, 2, 3]),
        ("{ kind = producer } > { kind = consumer }".into(), vec![4]),
        (r#"{ name = "SELECT carts" } < { kind = server }"#.into(), vec![1, 2]),
        (r#"{ name = "send email" } << { kind = server }"#.into(), vec![4]),
        (r#"{ name = "step 1" } ~ { name = "step 2" }"#.into(), vec![5]),
        (r#"{ name = "step 1" } ~ { name = "step 1" }"#.into(), vec![]),
        ("{ } !< { kind = client }".into(), vec![1, 2, 3]),
        (r#"{ resource.service.name = "cart" } &>> { span.db.system = "postgresql" }"#.into(), vec![1, 2]),
        (r#"{ kind = server } !>> { span.db.system = "postgresql" }"#.into(), vec![]),
        ("{ kind = server } !>> { kind = internal }".into(), vec![5]),
        // Pipelines.
        (r#"{ resource.service.name = "frontend" } | count() = 2"#.into(), vec![1, 2, 3]),
        ("{ status = error } | count() > 3".into(), vec![2]),
        ("{ kind = client } | avg(duration) > 100ms".into(), vec![2]),
        ("{ } | max(duration) >= 5s".into(), vec![5]),
        ("{ } | min(duration) < 10ms".into(), vec![4]),
        ("{ } | sum(duration) > 7s".into(), vec![5]),
        ("{ } | by(resource.service.name) | count() = 3".into(), vec![5]),
        (r#"{ resource.region = "eu" } | by(resource.service.name) | count() > 1"#.into(), vec![1, 2, 3, 4]),
        ("count() > 3".into(), vec![1, 2, 3, 4]),
        ("{ kind = server } | select(span.http.route)".into(), vec![1, 2, 3, 4]),
        (r#"({ kind = server } | count() > 1) && { resource.region = "us" }"#.into(), vec![3]),
        ("{ status = error } with (most_recent=true)".into(), vec![2]),
    ];
    let mut failures = Vec::new();
    for (query, expected) in &cases {
        let actual = matching(query, &traces);
        if actual != *expected {
            failures.push(format!("{query}: expected {expected:?}, got {actual:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} queries disagree:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(cases.len() >= 90);
}

#[test]
fn conformance_parse_errors() {
    for (query, column) in [
        ("{ name = }", 10),
        ("{ .a = 1", 9),
        ("{ foo = 1 }", 3),
        ("{ duration > 3parsecs }", 14),
        (r#"{ name =~ "[" }"#, 11),
        ("{ } | rate() | avg()", 16),
        ("{ } | quantile_over_time(duration)", 34),
        ("{ } | topk(3)", 7),
        ("{ } |", 6),
        ("{ .a = 1 } && ", 15),
        (r#"{ .a = "x }"#, 8),
        ("{ span.a = 1 } | count() >", 27),
        ("{ .a = 1 } | by()", 17),
        ("{ .a @ 1 }", 6),
    ] {
        let error = parse(query).expect_err(query);
        assert_eq!(error.column, column, "{query}: {error}");
    }
}
