"""The Jaeger query API (what Jaeger UI and Grafana's Jaeger data source call), checked against
response shapes written from Jaeger's API documents: the `structuredResponse` envelope, the UI
trace model (µs times, typed tags, processes, references) and its error answers."""
import time

import requests

from conftest import wait_for_trace

TRACE = "5b8efff798038103d269b633813fc60c"
OTHER = "00000000000000000000000000000abc"


def kv(key, **value):
    return {"key": key, "value": value}


def post_otlp(clew, resource_spans):
    response = requests.post(clew.otlp_http, json={"resourceSpans": resource_spans}, timeout=10)
    assert response.status_code == 200, response.text


def seed(clew):
    """frontend (server) → frontend (client) → backend (server) → postgres (uninstrumented)."""
    t0 = (int(time.time()) - 5) * 1_000_000_000
    post_otlp(clew, [
        {"resource": {"attributes": [kv("service.name", stringValue="frontend"), kv("host.name", stringValue="web-1")]},
         "scopeSpans": [{"scope": {"name": "shop-http", "version": "1.4"}, "spans": [
             {"traceId": TRACE, "spanId": "eee19b7ec3c1b174", "name": "GET /checkout", "kind": 2,
              "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 80_000_000),
              "attributes": [kv("http.route", stringValue="/checkout"), kv("http.response.status_code", intValue="200"),
                             kv("vip", boolValue=True), kv("ratio", doubleValue=0.25)],
              "status": {"code": 1}},
             {"traceId": TRACE, "spanId": "00f067aa0ba902b7", "parentSpanId": "eee19b7ec3c1b174", "name": "POST /reserve", "kind": 3,
              "startTimeUnixNano": str(t0 + 10_000_000), "endTimeUnixNano": str(t0 + 60_000_000),
              "events": [{"timeUnixNano": str(t0 + 11_000_000), "name": "retry", "attributes": [kv("attempt", intValue="2")]}],
              "links": [{"traceId": OTHER, "spanId": "0000000000000def"}]},
         ]}]},
        {"resource": {"attributes": [kv("service.name", stringValue="backend")]},
         "scopeSpans": [{"spans": [
             {"traceId": TRACE, "spanId": "1111111111111111", "parentSpanId": "00f067aa0ba902b7", "name": "POST /reserve", "kind": 2,
              "startTimeUnixNano": str(t0 + 12_000_000), "endTimeUnixNano": str(t0 + 58_000_000),
              "status": {"code": 2, "message": "stock locked"}},
             {"traceId": TRACE, "spanId": "2222222222222222", "parentSpanId": "1111111111111111", "name": "SELECT stock", "kind": 3,
              "startTimeUnixNano": str(t0 + 20_000_000), "endTimeUnixNano": str(t0 + 50_000_000),
              "attributes": [kv("db.system", stringValue="postgresql"), kv("peer.service", stringValue="postgres")]},
         ]}]},
    ])
    wait_for_trace(clew, TRACE, 4)
    return t0


def envelope(data, total=None):
    return {"data": data, "total": len(data) if total is None else total, "limit": 0, "offset": 0, "errors": None}


def error(code, message):
    return {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": code, "msg": message}]}


def sort_tags(trace):
    for span in trace["spans"]:
        span["tags"] = sorted(span["tags"], key=lambda t: t["key"])
    return trace


def test_jaeger_trace_model(clew):
    t0 = seed(clew)
    us = t0 // 1000
    response = clew.get(f"/api/traces/{TRACE}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "total", "limit", "offset", "errors"} and body["total"] == 1 and body["errors"] is None
    trace = sort_tags(body["data"][0])
    processes = trace.pop("processes")
    assert sorted(processes.values(), key=lambda p: p["serviceName"]) == [
        {"serviceName": "backend", "tags": []},
        {"serviceName": "frontend", "tags": [{"key": "host.name", "type": "string", "value": "web-1"}]},
    ]
    process = {p["serviceName"]: pid for pid, p in processes.items()}
    spans = {s["spanID"]: s for s in trace.pop("spans")}
    # Trace-level findings go into the trace's warnings.
    assert trace["traceID"] == TRACE
    assert len(trace["warnings"]) == 1 and "no server/consumer child" in trace["warnings"][0]
    assert spans["eee19b7ec3c1b174"] == {
        "traceID": TRACE, "spanID": "eee19b7ec3c1b174", "operationName": "GET /checkout", "references": [],
        "startTime": us, "duration": 80_000, "processID": process["frontend"], "logs": [], "warnings": None,
        "tags": [
            {"key": "http.response.status_code", "type": "int64", "value": 200},
            {"key": "http.route", "type": "string", "value": "/checkout"},
            {"key": "otel.scope.name", "type": "string", "value": "shop-http"},
            {"key": "otel.scope.version", "type": "string", "value": "1.4"},
            {"key": "otel.status_code", "type": "string", "value": "OK"},
            {"key": "ratio", "type": "float64", "value": 0.25},
            {"key": "span.kind", "type": "string", "value": "server"},
            {"key": "vip", "type": "bool", "value": True},
        ],
    }
    client = spans["00f067aa0ba902b7"]
    assert client["references"] == [
        {"refType": "CHILD_OF", "traceID": TRACE, "spanID": "eee19b7ec3c1b174"},
        {"refType": "FOLLOWS_FROM", "traceID": "abc".rjust(16, "0"), "spanID": "0000000000000def"},
    ]
    assert client["logs"] == [{"timestamp": us + 11_000, "fields": [
        {"key": "event", "type": "string", "value": "retry"}, {"key": "attempt", "type": "int64", "value": 2}]}]
    server = spans["1111111111111111"]
    assert server["processID"] == process["backend"]
    assert {"key": "error", "type": "bool", "value": True} in server["tags"]
    assert {"key": "otel.status_code", "type": "string", "value": "ERROR"} in server["tags"]
    assert {"key": "otel.status_description", "type": "string", "value": "stock locked"} in server["tags"]
    # The database call has no server side: Jaeger UI shows the span's warning.
    assert spans["2222222222222222"]["warnings"] and "not instrumented" in spans["2222222222222222"]["warnings"][0]

    # A 64-bit ID is asked for and printed as 16 characters; both forms of a 128-bit one work.
    assert clew.get(f"/api/traces/{TRACE.upper()}").status_code == 200
    missing = clew.get("/api/traces/" + "f" * 32)
    assert missing.status_code == 404 and missing.json() == error(404, "trace not found")
    bad = clew.get("/api/traces/not-hex")
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == 400


def test_jaeger_lists_and_search(clew):
    t0 = seed(clew)
    assert clew.get("/api/services").json() == envelope(["backend", "frontend"])
    assert clew.get("/api/services/frontend/operations").json() == envelope(["GET /checkout", "POST /reserve"])
    assert clew.get("/api/operations", service="frontend").json() == envelope(
        [{"name": "GET /checkout", "spanKind": "server"}, {"name": "POST /reserve", "spanKind": "client"}])
    assert clew.get("/api/operations", service="frontend", spanKind="server").json() == envelope([{"name": "GET /checkout", "spanKind": "server"}])
    missing = clew.get("/api/operations")
    assert missing.status_code == 400 and missing.json() == error(400, "parameter 'service' is required")

    start, end = t0 // 1000 - 60_000_000, t0 // 1000 + 60_000_000

    def found(**params):
        response = clew.get("/api/traces", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] == len(body["data"]) and body["errors"] is None
        return [trace["traceID"] for trace in body["data"]]

    assert found(service="frontend", start=start, end=end, limit=20, lookback="1h") == [TRACE]
    assert found(service="frontend", operation="GET /checkout") == [TRACE]
    assert found(service="frontend", operation="SELECT stock") == []
    assert found(service="backend", tags='{"error":"true"}') == [TRACE]
    assert found(service="backend", tags='{"db.system":"postgresql","span.kind":"client"}') == [TRACE]
    assert found(service="backend", tag="db.system:mysql") == []
    assert found(service="frontend", tag="http.response.status_code:200", minDuration="70ms") == [TRACE]
    assert found(service="frontend", minDuration="100ms") == []
    assert found(service="frontend", maxDuration="1ms") == []
    assert found(service="frontend", start=end, end=end + 1_000_000) == []

    no_service = clew.get("/api/traces")
    assert no_service.status_code == 400 and no_service.json() == error(400, "parameter 'service' is required")
    inverted = clew.get("/api/traces", service="frontend", minDuration="1s", maxDuration="1ms")
    assert inverted.status_code == 400 and "maxDuration" in inverted.json()["errors"][0]["msg"]
    unitless = clew.get("/api/traces", service="frontend", minDuration="100")
    assert unitless.status_code == 400 and "minDuration" in unitless.json()["errors"][0]["msg"]

    by_ids = clew.get("/api/traces", traceID=[TRACE, "f" * 32]).json()
    assert [t["traceID"] for t in by_ids["data"]] == [TRACE]
    assert by_ids["errors"] == [{"code": 404, "msg": "trace not found", "traceID": "f" * 32}]

    now_ms = int(time.time() * 1000)
    links = clew.get("/api/dependencies", endTs=now_ms, lookback=3_600_000).json()
    assert links == envelope([
        {"parent": "backend", "child": "postgres", "callCount": 1},
        {"parent": "frontend", "child": "backend", "callCount": 1},
    ])
    assert clew.get("/api/dependencies", endTs=now_ms - 3_600_000, lookback=60_000).json() == envelope([])


def test_clock_skew_is_adjusted_unless_raw(clew):
    """backend's host clock runs 5 s ahead: its server span is shifted into the middle of the
    client span that called it, with its child on the same host; raw=true shows what was sent."""
    trace = "0af7651916cd43dd8448eb211c80319c"
    t0 = (int(time.time()) - 30) * 1_000_000_000
    ahead = 5_000_000_000
    post_otlp(clew, [
        {"resource": {"attributes": [kv("service.name", stringValue="web"), kv("host.name", stringValue="host-a")]},
         "scopeSpans": [{"spans": [
             {"traceId": trace, "spanId": "a000000000000001", "name": "GET /", "kind": 2,
              "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 100_000_000)},
             {"traceId": trace, "spanId": "a000000000000002", "parentSpanId": "a000000000000001", "name": "call api", "kind": 3,
              "startTimeUnixNano": str(t0 + 10_000_000), "endTimeUnixNano": str(t0 + 90_000_000)}]}]},
        {"resource": {"attributes": [kv("service.name", stringValue="api"), kv("host.name", stringValue="host-b")]},
         "scopeSpans": [{"spans": [
             {"traceId": trace, "spanId": "b000000000000001", "parentSpanId": "a000000000000002", "name": "handle", "kind": 2,
              "startTimeUnixNano": str(t0 + ahead), "endTimeUnixNano": str(t0 + ahead + 60_000_000)},
             {"traceId": trace, "spanId": "b000000000000002", "parentSpanId": "b000000000000001", "name": "work", "kind": 1,
              "startTimeUnixNano": str(t0 + ahead + 5_000_000), "endTimeUnixNano": str(t0 + ahead + 15_000_000)}]}]},
    ])
    adjusted = wait_for_trace(clew, trace, 4)
    starts = {s["spanId"]: int(s["startTimeUnixNano"]) for s in adjusted["spans"]}
    # Centred in the client span: 10 ms + (80 ms - 60 ms) / 2 = 20 ms after the trace start.
    assert starts["b000000000000001"] == t0 + 20_000_000
    assert starts["b000000000000002"] == t0 + 25_000_000
    assert starts["a000000000000002"] == t0 + 10_000_000
    assert adjusted["durationNanos"] == 100_000_000
    skew = [w for w in adjusted["warnings"] if w["kind"] == "clock_skew"]
    assert len(skew) == 1 and "host-b" in skew[0]["message"] and "-4.98s" in skew[0]["message"]
    assert sorted(skew[0]["span_ids"]) == ["b000000000000001", "b000000000000002"]

    raw = clew.get(f"/api/v1/traces/{trace}", raw="true").json()
    assert {s["spanId"]: int(s["startTimeUnixNano"]) for s in raw["spans"]}["b000000000000001"] == t0 + ahead
    assert not [w for w in raw["warnings"] if w["kind"] == "clock_skew"]

    jaeger = {s["spanID"]: s for s in clew.get(f"/api/traces/{trace}").json()["data"][0]["spans"]}
    assert jaeger["b000000000000001"]["startTime"] == (t0 + 20_000_000) // 1000
    jaeger_raw = {s["spanID"]: s for s in clew.get(f"/api/traces/{trace}", raw="true").json()["data"][0]["spans"]}
    assert jaeger_raw["b000000000000001"]["startTime"] == (t0 + ahead) // 1000


def test_api_v3(clew):
    """Jaeger's api_v3 over HTTP: OTLP JSON in a `result` envelope, RFC 3339 times."""
    t0 = seed(clew)
    assert clew.get("/api/v3/services").json() == {"services": ["backend", "frontend"]}
    assert clew.get("/api/v3/operations", service="frontend", span_kind="server").json() == {
        "operations": [{"name": "GET /checkout", "spanKind": "server"}]}
    trace = clew.get(f"/api/v3/traces/{TRACE}").json()["result"]
    spans = [s for rs in trace["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert sorted(s["spanId"] for s in spans) == ["00f067aa0ba902b7", "1111111111111111", "2222222222222222", "eee19b7ec3c1b174"]
    assert all(s["traceId"] == TRACE for s in spans)
    missing = clew.get("/api/v3/traces/" + "f" * 32)
    assert missing.status_code == 404 and missing.json() == {"error": {"httpCode": 404, "message": "trace not found"}}

    def rfc3339(nanos):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(nanos // 1_000_000_000))

    window = {"query.start_time_min": rfc3339(t0 - 60_000_000_000), "query.start_time_max": rfc3339(t0 + 60_000_000_000)}
    found = clew.get("/api/v3/traces", **{"query.service_name": "backend", **window}).json()["result"]
    assert {s["traceId"] for rs in found["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]} == {TRACE}
    none = clew.get("/api/v3/traces", **{"query.service_name": "backend", "query.duration_min": "10s", **window})
    assert none.status_code == 404 and none.json()["error"]["message"] == "No traces found"
    assert clew.get("/api/v3/traces", **{"query.service_name": "backend"}).status_code == 400
    links = clew.get("/api/v3/dependencies").json()["dependencies"]
    assert {"parent": "frontend", "child": "backend", "callCount": "1"} in links
