use std::sync::Arc;

use clew_model::{Attribute, InstrumentationScope, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, Value as V, assemble};

use super::*;

/// frontend GET /checkout (server, 100 ms)
///   ├─ frontend call cart (client) → cart POST /cart (server, error, http 500)
///   │                                    └─ cart SELECT (client, db.system=postgresql, 40 ms)
///   └─ frontend call search (client) → search GET /search (server)
fn trace() -> clew_model::AssembledTrace {
    let resource = |service: &str| {
        Arc::new(Resource {
            attributes: vec![Attribute::new("service.name", V::Str(service.into())), Attribute::new("region", V::Str("eu".into()))],
            ..Default::default()
        })
    };
    let span = |id: u8, parent: Option<u8>, service: &str, name: &str, kind: SpanKind, start: u64, end: u64, attrs: Vec<(&str, V)>| Span {
        trace_id: TraceId([9; 16]),
        span_id: SpanId([id; 8]),
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        trace_state: String::new(),
        flags: 0,
        name: name.into(),
        kind,
        start_time_unix_nano: start * 1_000_000,
        end_time_unix_nano: end * 1_000_000,
        attributes: attrs.into_iter().map(|(k, v)| Attribute::new(k, v)).collect(),
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        resource: resource(service),
        scope: Arc::new(InstrumentationScope::default()),
    };
    let mut cart = span(4, Some(2), "cart", "POST /cart", SpanKind::Server, 12, 70, vec![("http.response.status_code", V::Int(500))]);
    cart.status_code = StatusCode::Error;
    cart.status_message = "db down".into();
    assemble(vec![
        span(1, None, "frontend", "GET /checkout", SpanKind::Server, 0, 100, vec![("http.route", V::Str("/checkout".into()))]),
        span(2, Some(1), "frontend", "call cart", SpanKind::Client, 10, 72, vec![("peer.service", V::Str("cart".into()))]),
        span(
            3,
            Some(1),
            "frontend",
            "call search",
            SpanKind::Client,
            75,
            95,
            vec![("tags", V::Array(vec![V::Str("a".into()), V::Str("b".into())]))],
        ),
        cart,
        span(
            5,
            Some(4),
            "cart",
            "SELECT",
            SpanKind::Client,
            20,
            60,
            vec![("db.system", V::Str("postgresql".into())), ("cached", V::Bool(false))],
        ),
        span(6, Some(3), "search", "GET /search", SpanKind::Server, 76, 94, vec![]),
    ])
}

/// The names of the spans the query returns (empty: the trace does not match).
fn names(query: &str) -> Vec<String> {
    let trace = trace();
    let parsed = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let context = TraceContext::new(&trace);
    let mut out: Vec<String> =
        evaluate(&parsed, &context).iter().flat_map(|set| set.spans.iter().map(|i| trace.spans[*i].name.clone())).collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn spanset_filters() {
    assert_eq!(names(r#"{ resource.service.name = "cart" }"#), ["POST /cart", "SELECT"]);
    assert_eq!(names(r#"{ .service.name = "cart" && kind = server }"#), ["POST /cart"]);
    assert_eq!(names("{ status = error }"), ["POST /cart"]);
    assert_eq!(names("{ span.http.response.status_code >= 500 }"), ["POST /cart"]);
    assert_eq!(names("{ duration > 50ms }"), ["GET /checkout", "POST /cart", "call cart"]);
    assert_eq!(names("{ duration > 50ms && duration < 70ms }"), ["POST /cart", "call cart"]);
    assert_eq!(names(r#"{ name =~ "GET .*" }"#), ["GET /checkout", "GET /search"]);
    assert_eq!(names(r#"{ name !~ "GET .*" && kind = server }"#), ["POST /cart"]);
    assert_eq!(names(r#"{ span.db.system = nil && kind = client }"#), ["call cart", "call search"]);
    assert_eq!(names(r#"{ span.db.system != nil }"#), ["SELECT"]);
    assert_eq!(names(r#"{ span.tags = "b" }"#), ["call search"]);
    // `!=` needs the attribute: spans without it do not match.
    assert_eq!(names(r#"{ span.tags != "b" && kind = client }"#), Vec::<String>::new());
    assert_eq!(names(r#"{ span.tags != "c" }"#), ["call search"]);
    assert_eq!(names("{ !span.cached && span.cached != nil }"), ["SELECT"]);
    assert_eq!(names(r#"{ statusMessage = "db down" }"#), ["POST /cart"]);
    assert_eq!(
        names(r#"{ trace:rootService = "frontend" && trace:duration = 100ms && kind = server && name = "GET /search" }"#),
        ["GET /search"]
    );
    assert_eq!(names("{ duration > 10 * 4ms && span:childCount = 0 }"), Vec::<String>::new());
    assert_eq!(names("{ duration >= 40ms && span:childCount = 0 }"), ["SELECT"]);
    assert!(names("{}").len() == 6);
    assert_eq!(names(r#"{ resource.service.name = "nope" }"#), Vec::<String>::new());
}

#[test]
fn spanset_operators_and_structure() {
    assert_eq!(names(r#"{ status = error } && { name = "GET /search" }"#), ["GET /search", "POST /cart"]);
    assert_eq!(names(r#"{ status = error } && { name = "nope" }"#), Vec::<String>::new());
    assert_eq!(names(r#"{ status = error } || { name = "nope" }"#), ["POST /cart"]);
    assert_eq!(names(r#"{ resource.service.name = "frontend" } > { kind = server }"#), ["GET /search", "POST /cart"]);
    assert_eq!(names(r#"{ name = "GET /checkout" } >> { kind = client && resource.service.name = "cart" }"#), ["SELECT"]);
    assert_eq!(names(r#"{ name = "GET /checkout" } > { resource.service.name = "cart" }"#), Vec::<String>::new());
    assert_eq!(names(r#"{ name = "SELECT" } < { }"#), ["POST /cart"]);
    assert_eq!(names(r#"{ name = "SELECT" } << { kind = server }"#), ["GET /checkout", "POST /cart"]);
    assert_eq!(names(r#"{ name = "call cart" } ~ { }"#), ["call search"]);
    assert_eq!(names(r#"{ name = "call cart" } &> { kind = server }"#), ["POST /cart", "call cart"]);
    // Leaf spans: no child at all.
    assert_eq!(names("{ } !< { }"), ["GET /search", "SELECT"]);
}

#[test]
fn pipelines() {
    assert_eq!(names(r#"{ resource.service.name = "frontend" } | count() > 2"#), ["GET /checkout", "call cart", "call search"]);
    assert_eq!(names(r#"{ resource.service.name = "frontend" } | count() > 3"#), Vec::<String>::new());
    assert_eq!(names("{ kind = client } | avg(duration) > 40ms"), ["SELECT", "call cart", "call search"]);
    assert_eq!(names("{ kind = client } | max(duration) < 40ms"), Vec::<String>::new());
    assert_eq!(names("{ } | by(resource.service.name) | count() = 2"), ["POST /cart", "SELECT"]);
    assert_eq!(names("count() > 5"), names("{}"));
    assert_eq!(names(r#"({ kind = server } | count() > 2) && { status = error }"#), ["GET /checkout", "GET /search", "POST /cart"]);
    let trace = trace();
    let context = TraceContext::new(&trace);
    let groups = evaluate(&parse("{ } | by(resource.service.name)").unwrap(), &context);
    assert_eq!(groups.len(), 3);
    let query = parse("{ kind = server } | select(span.http.route) with (most_recent=true)").unwrap();
    assert_eq!(query.hint("most_recent"), Some(&Value::Bool(true)));
    assert_eq!(evaluate(&query, &context)[0].selected.len(), 1);
}

#[test]
fn parse_errors_point_at_the_column() {
    for (query, column, words) in [
        ("{ name = }", 10, "expected a value"),
        ("{ name = \"x\"", 13, "} closing"),
        ("{ foo = 1 }", 3, "not an attribute"),
        ("{ duration > 5parsecs }", 14, "duration unit"),
        ("{ name =~ \"(\" }", 11, "regular expression"),
        ("{ .a = 1 } | rate() | sum()", 23, "metrics function"),
        ("{ .a = 1 } |", 13, "after |"),
        ("name = \"x\"", 1, "expected {"),
        ("{ .a = \"unterminated }", 8, "unterminated string"),
        ("{ .a = 1 } }", 12, "after the end"),
        ("{ .a = 1 } | count() 3", 22, "comparison"),
        ("{ .a # 1 }", 6, "unexpected character"),
    ] {
        let error = parse(query).expect_err(query);
        assert_eq!(error.column, column, "{query}: {error}");
        assert!(error.message.contains(words), "{query}: {error}");
    }
}

#[test]
fn prefilter_is_a_necessary_condition() {
    let sql = |q: &str| prefilter(&parse(q).unwrap());
    let (spans, traces) = sql(r#"{ resource.service.name = "cart" && span.http.route =~ "/a.*" }"#).unwrap();
    assert_eq!(spans, "((service_name = 'cart' AND regexp_like(http_route, '^(?:/a.*)$')))");
    assert_eq!(traces, "bool_or((service_name = 'cart' AND regexp_like(http_route, '^(?:/a.*)$')))");
    assert_eq!(sql("{ duration > 1s }").unwrap().0, "(duration_nanos > 1000000000)");
    assert_eq!(sql("{ span.http.response.status_code >= 500 }").unwrap().0, "(http_status_code >= 500)");
    assert_eq!(sql("{ span.retries >= 5 }").unwrap().0, "(try_cast(attributes['retries'] AS DOUBLE) >= 5)");
    // Of the parts a structural query needs, the most selective narrows the scan.
    let (spans, traces) = sql(r#"{ resource.service.name = "x" && span.http.response.status_code >= 500 } >> { kind = client }"#).unwrap();
    assert_eq!(spans, "((service_name = 'x' AND http_status_code >= 500))");
    assert_eq!(traces, "bool_or((service_name = 'x' AND http_status_code >= 500))");
    assert_eq!(sql("{ status = error } >> { kind = client }").unwrap().0, "(status_code = 'error')");
    assert_eq!(sql("{ status = error } || { kind = client }").unwrap().1, "(bool_or(status_code = 'error') OR bool_or(kind = 'client'))");
    assert_eq!(sql("{ status = error } || { .a != 1 }"), None);
    assert_eq!(sql("{ status = error } && { .a != 1 }").unwrap().1, "bool_or(status_code = 'error')");
    assert_eq!(sql("{ } !< { kind = server }").unwrap().1, "bool_or(kind = 'server')");
    assert_eq!(sql("{ !(.a = 1) }"), None);
}

#[test]
fn a_one_spanset_query_names_the_service_and_operation_its_rows_have() {
    let filter = |q: &str| span_filter(&parse(q).unwrap());
    let both = filter(r#"{ resource.service.name = "cart" && name = "GET /" && duration > 1s }"#);
    assert_eq!((both.service_name.as_deref(), both.name.as_deref()), (Some("cart"), Some("GET /")));
    assert_eq!(filter(r#"{ "cart" = resource.service.name } | count() > 2"#).service_name.as_deref(), Some("cart"));
    // Not a plain equality of every row, or not one spanset: nothing is said.
    for query in [
        r#"{ resource.service.name = "cart" || name = "GET /" }"#,
        r#"{ resource.service.name != "cart" }"#,
        r#"{ .service.name = "cart" }"#,
        r#"{ !(resource.service.name = "cart") }"#,
        r#"{ resource.service.name = "cart" } >> { kind = client }"#,
        r#"{ resource.service.name = "cart" } && { name = "GET /" }"#,
    ] {
        assert!(filter(query).is_empty(), "{query}");
    }
}
