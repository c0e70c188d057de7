"""Zipkin intake with real Zipkin clients (py_zipkin in every encoding it speaks, and the
OpenTelemetry SDK's Zipkin exporter); every span read back through the Zipkin, Jaeger and native
APIs and compared field by field."""
import gzip
import json
import threading
import time

import pytest
import requests
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from py_zipkin import Kind
from py_zipkin.encoding import Encoding
from py_zipkin.encoding.protobuf import zipkin_pb2
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.request_helpers import create_http_headers
from py_zipkin.zipkin import ZipkinAttrs, zipkin_span

from conftest import wait_for_trace


class RecordingTransport(SimpleHTTPTransport):
    """py_zipkin's own HTTP transport, keeping a copy of every payload it sends."""

    def __init__(self, port):
        super().__init__("127.0.0.1", port)
        self.payloads = []

    def send(self, payload):
        self.payloads.append(payload)
        super().send(payload)


def run_shop_request(transport, encoding, use_128bit):
    """frontend serves GET /checkout, does local work, calls backend; backend joins the trace
    through B3 headers, so its server span shares the client's span ID."""
    with zipkin_span(service_name="frontend", span_name="GET /checkout", transport_handler=transport, sample_rate=100.0,
                     encoding=encoding, kind=Kind.SERVER, use_128bit_trace_id=use_128bit,
                     binary_annotations={"http.method": "GET", "http.path": "/checkout"}) as root:
        time.sleep(0.002)
        with zipkin_span(service_name="frontend", span_name="load cart", binary_annotations={"cart.items": "3"}) as local:
            local.add_annotation("cache-miss")
            time.sleep(0.002)
        with zipkin_span(service_name="frontend", span_name="get /stock", kind=Kind.CLIENT) as client:
            client.add_sa_binary_annotation(port=8080, service_name="backend", host="10.0.0.2")
            headers = create_http_headers()
            time.sleep(0.001)
            attrs = ZipkinAttrs(trace_id=headers["X-B3-TraceId"], span_id=headers["X-B3-SpanId"],
                                parent_span_id=headers["X-B3-ParentSpanId"], flags="0", is_sampled=True)

            def backend():
                # Another thread stands for the backend process: its span joins the trace.
                with zipkin_span(service_name="backend", span_name="get /stock", transport_handler=transport, zipkin_attrs=attrs,
                                 encoding=encoding, kind=Kind.SERVER, binary_annotations={"error": "out of stock"}):
                    time.sleep(0.003)
            thread = threading.Thread(target=backend)
            thread.start()
            thread.join()
            time.sleep(0.001)
        root_context = root.zipkin_attrs
    return root_context.trace_id


def normalise(span):
    """A v2 span with Zipkin's empty and false fields left out."""
    out = {k: v for k, v in span.items() if v not in (None, False, [], {}, "")}
    for key in ("localEndpoint", "remoteEndpoint"):
        if key in out:
            out[key] = {k: v for k, v in out[key].items() if v not in (None, "", 0)}
    return out


def from_v2_json(payloads):
    return [normalise(span) for payload in payloads for span in json.loads(payload)]


def from_proto(payloads):
    kinds = {1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}
    spans = []
    for payload in payloads:
        message = zipkin_pb2.ListOfSpans()
        message.ParseFromString(payload)
        for s in message.spans:
            def endpoint(e):
                out = {"serviceName": e.service_name}
                if e.ipv4:
                    out["ipv4"] = ".".join(str(b) for b in e.ipv4)
                if e.port:
                    out["port"] = e.port
                return out
            span = {"traceId": s.trace_id.hex(), "id": s.id.hex(), "name": s.name, "timestamp": s.timestamp,
                    "duration": s.duration, "kind": kinds.get(s.kind), "shared": s.shared,
                    "tags": dict(s.tags), "annotations": [{"timestamp": a.timestamp, "value": a.value} for a in s.annotations]}
            if s.parent_id:
                span["parentId"] = s.parent_id.hex()
            if s.HasField("local_endpoint"):
                span["localEndpoint"] = endpoint(s.local_endpoint)
            if s.HasField("remote_endpoint"):
                span["remoteEndpoint"] = endpoint(s.remote_endpoint)
            spans.append(normalise(span))
    return spans


def from_v1_json(payloads):
    """py_zipkin's v1 spans carry one side each: the core annotations say which."""
    spans = []
    for payload in payloads:
        for v1 in json.loads(payload):
            core = {a["value"]: a for a in v1["annotations"] if a["value"] in ("cs", "cr", "sr", "ss")}
            begin, end, kind = (core.get("cs"), core.get("cr"), "CLIENT") if "cs" in core else (core.get("sr"), core.get("ss"), "SERVER")
            if begin is None:
                kind = None
            span = {"traceId": v1["traceId"], "id": v1["id"], "name": v1["name"], "kind": kind,
                    "timestamp": begin["timestamp"] if begin else v1.get("timestamp"),
                    "duration": end["timestamp"] - begin["timestamp"] if begin and end else v1.get("duration"),
                    "shared": kind == "SERVER" and "timestamp" not in v1,
                    "annotations": [{"timestamp": a["timestamp"], "value": a["value"]} for a in v1["annotations"] if a["value"] not in core],
                    "tags": {b["key"]: str(b["value"]) for b in v1["binaryAnnotations"] if b["key"] not in ("ca", "sa")}}
            if v1.get("parentId"):
                span["parentId"] = v1["parentId"]
            endpoint = (begin or (v1["annotations"] or v1["binaryAnnotations"] or [{}])[0]).get("endpoint")
            if endpoint:
                span["localEndpoint"] = endpoint
            for b in v1["binaryAnnotations"]:
                if b["key"] in ("ca", "sa"):
                    span["remoteEndpoint"] = b["endpoint"]
            spans.append(normalise(span))
    return spans


ENCODINGS = {
    "v2-json": (Encoding.V2_JSON, from_v2_json, False),
    "v2-proto": (Encoding.V2_PROTO3, from_proto, True),
    "v1-json": (Encoding.V1_JSON, from_v1_json, False),
}


def by_id_and_kind(spans):
    return sorted(spans, key=lambda s: (s["id"], s.get("kind") or ""))


@pytest.mark.parametrize("name", ENCODINGS)
def test_py_zipkin_round_trips_through_every_api(clew, name):
    encoding, decode, use_128bit = ENCODINGS[name]
    transport = RecordingTransport(clew.zipkin_port)
    trace_id = run_shop_request(transport, encoding, use_128bit)
    assert len(trace_id) == (32 if use_128bit else 16)
    sent = decode(transport.payloads)
    assert len(sent) == 4, sent

    native = wait_for_trace(clew, trace_id, 4)
    # The Zipkin API gives every span back as it was sent.
    response = requests.get(f"{clew.zipkin}/api/v2/trace/{trace_id}", timeout=10)
    assert response.status_code == 200, response.text
    returned = [normalise(span) for span in response.json()]
    assert by_id_and_kind(returned) == by_id_and_kind(sent)

    # The shared server span became a child of the client span, with an ID of its own.
    spans = {span["name"] + "/" + span["kind"]: span for span in native["spans"]}
    client, server = spans["get /stock/client"], spans["get /stock/server"]
    assert server["parentSpanId"] == client["spanId"] and server["spanId"] != client["spanId"]
    assert server["service"] == "backend" and server["status"]["code"] == "error"
    assert server["status"]["message"] == "out of stock"
    assert native["rootService"] == "frontend" and native["rootName"] == "GET /checkout"
    assert native["problems"] == [], native["problems"]
    local = spans["load cart/unspecified"]
    assert [e["name"] for e in local["events"]] == ["cache-miss"]
    assert {"key": "cart.items", "value": {"stringValue": "3"}} in local["attributes"]
    remote = {a["key"]: a["value"] for a in client["attributes"]}
    assert remote["peer.service"] == {"stringValue": "backend"}
    assert remote["network.peer.address"] == {"stringValue": "10.0.0.2"}
    assert remote["network.peer.port"] == {"intValue": "8080"}

    # Jaeger sees the same trace: the same IDs, µs times, two processes.
    jaeger = clew.get(f"/api/traces/{trace_id}").json()["data"][0]
    assert jaeger["traceID"] == trace_id
    assert {p["serviceName"] for p in jaeger["processes"].values()} == {"frontend", "backend"}
    by_span = {s["spanID"]: s for s in jaeger["spans"]}
    for span in native["spans"]:
        j = by_span[span["spanId"]]
        assert j["startTime"] == int(span["startTimeUnixNano"]) // 1000
        assert j["duration"] == span["durationNanos"] // 1000
        assert j["operationName"] == span["name"]
    assert by_span[server["spanId"]]["references"] == [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": client["spanId"]}]

    # And the dependency link frontend → backend is there, in both APIs.
    now_ms = int(time.time() * 1000)
    links = requests.get(f"{clew.zipkin}/api/v2/dependencies", params={"endTs": now_ms, "lookback": 3_600_000}, timeout=10).json()
    assert {"parent": "frontend", "child": "backend", "callCount": 1, "errorCount": 1} in links
    jaeger_links = clew.get("/api/dependencies", endTs=now_ms, lookback=3_600_000).json()["data"]
    assert {"parent": "frontend", "child": "backend", "callCount": 1} in jaeger_links


def test_opentelemetry_zipkin_exporter(clew):
    provider = TracerProvider(resource=Resource.create({"service.name": "cart", "service.version": "2.0.1"}))
    provider.add_span_processor(SimpleSpanProcessor(ZipkinExporter(endpoint=f"{clew.zipkin}/api/v2/spans")))
    tracer = provider.get_tracer("cart-lib", "0.3")
    with tracer.start_as_current_span("POST /cart", kind=SpanKind.SERVER,
                                      attributes={"http.request.method": "POST", "http.response.status_code": 500, "retry": True}) as root:
        root.add_event("validation", {"field": "sku", "attempt": 2})
        with tracer.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql", "peer.service": "postgres"}):
            time.sleep(0.001)
        root.set_status(Status(StatusCode.ERROR, "database timeout"))
    trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()

    trace = wait_for_trace(clew, trace_id, 2)
    spans = {span["name"]: span for span in trace["spans"]}
    server = spans["POST /cart"]
    assert server["kind"] == "server" and server["service"] == "cart"
    assert server["status"] == {"code": "error", "message": "database timeout"}
    attributes = {a["key"]: a["value"] for a in server["attributes"]}
    # Zipkin tags are strings.
    assert attributes["http.response.status_code"] == {"stringValue": "500"}
    assert attributes["retry"] == {"stringValue": "true"}
    assert server["scope"]["name"] == "cart-lib" and server["scope"]["version"] == "0.3"
    event = server["events"][0]
    assert event["name"] == "validation"
    assert {"key": "attempt", "value": {"intValue": "2"}} in event["attributes"]
    resource = {a["key"]: a["value"] for a in server["resource"]["attributes"]}
    assert resource["service.version"] == {"stringValue": "2.0.1"}
    client = spans["SELECT carts"]
    assert client["parentSpanId"] == server["spanId"] and client["kind"] == "client"
    # The database is not instrumented: the client span is flagged, and the peer is a dependency.
    assert "unmatched_client" in client["problems"]
    remote = requests.get(f"{clew.zipkin}/api/v2/remoteServices", params={"serviceName": "cart"}, timeout=10).json()
    assert remote == ["postgres"]


def post(clew, body, content_type="application/json", **headers):
    return requests.post(f"{clew.zipkin}/api/v2/spans", data=body, headers={"Content-Type": content_type, **headers}, timeout=30)


def test_bad_zipkin_input_is_refused_clearly_and_nothing_is_lost(clew):
    good = [{"traceId": "aaaaaaaaaaaaaaaa", "id": "bbbbbbbbbbbbbbbb", "name": "kept", "timestamp": int(time.time() * 1e6),
             "duration": 5, "localEndpoint": {"serviceName": "survivor"}}]
    response = post(clew, gzip.compress(json.dumps(good).encode()), **{"Content-Encoding": "gzip"})
    assert response.status_code == 202, response.text

    cases = [
        (b"{not json", "application/json", 400, "invalid JSON"),
        (b'{"traceId": "1"}', "application/json", 400, "array"),
        (b'[{"id": "1"}]', "application/json", 400, "traceId is required"),
        (b'[{"traceId": "zz", "id": "1"}]', "application/json", 400, "hex"),
        (b'[{"traceId": "1", "id": "2", "kind": "SIDEWAYS"}]', "application/json", 400, "kind"),
        (b"\xff\xff\xff", "application/x-protobuf", 400, "protobuf"),
        (b"[]", "text/csv", 415, "Content-Type"),
        (b"x" * (9 << 20), "application/json", 413, "limit"),
    ]
    for body, content_type, status, words in cases:
        response = post(clew, body, content_type)
        assert response.status_code == status, (body[:40], response.status_code, response.text)
        assert words in response.text, (words, response.text)
    bomb = gzip.compress(b"[" + b" " * (64 << 20) + b"]")
    response = post(clew, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text

    assert clew.alive()
    trace = wait_for_trace(clew, "aaaaaaaaaaaaaaaa", 1)
    assert trace["spans"][0]["name"] == "kept"
    # Query errors are the client's fault too.
    assert requests.get(f"{clew.zipkin}/api/v2/trace/xyz", timeout=10).status_code == 400
    assert requests.get(f"{clew.zipkin}/api/v2/trace/{'1' * 16}", timeout=10).status_code == 404
    assert requests.get(f"{clew.zipkin}/api/v2/spans", timeout=10).status_code == 400
    assert requests.get(f"{clew.zipkin}/api/v2/dependencies", timeout=10).status_code == 400


def test_zipkin_query_api(clew):
    now = int(time.time() * 1e6)
    spans = [
        {"traceId": "1111111111111111", "id": "0000000000000001", "name": "get /a", "kind": "SERVER", "timestamp": now,
         "duration": 50_000, "localEndpoint": {"serviceName": "web"}, "tags": {"http.path": "/a", "customer": "gold"}},
        {"traceId": "1111111111111111", "id": "0000000000000002", "parentId": "0000000000000001", "name": "query", "kind": "CLIENT",
         "timestamp": now + 10, "duration": 30_000, "localEndpoint": {"serviceName": "web"},
         "remoteEndpoint": {"serviceName": "mysql"}, "tags": {"error": "deadlock"}},
        {"traceId": "2222222222222222", "id": "0000000000000003", "name": "get /b", "kind": "SERVER", "timestamp": now + 20,
         "duration": 2_000, "localEndpoint": {"serviceName": "web"}, "tags": {"http.path": "/b"},
         "annotations": [{"timestamp": now + 30, "value": "retried"}]},
    ]
    assert post(clew, json.dumps(spans)).status_code == 202
    wait_for_trace(clew, "1111111111111111", 2)
    wait_for_trace(clew, "2222222222222222", 1)
    z = lambda path, **params: requests.get(f"{clew.zipkin}/api/v2/{path}", params=params, timeout=10)

    assert z("services").json() == ["web"]
    assert z("spans", serviceName="web").json() == ["get /a", "get /b", "query"]
    assert z("remoteServices", serviceName="web").json() == ["mysql"]

    def ids(response):
        assert response.status_code == 200, response.text
        return sorted(trace[0]["traceId"] for trace in response.json())

    assert ids(z("traces", serviceName="web")) == ["1111111111111111", "2222222222222222"]
    assert ids(z("traces", serviceName="web", spanName="get /b")) == ["2222222222222222"]
    assert ids(z("traces", annotationQuery="http.path=/a")) == ["1111111111111111"]
    assert ids(z("traces", annotationQuery="error")) == ["1111111111111111"]
    assert ids(z("traces", annotationQuery="customer and http.path=/a")) == ["1111111111111111"]
    assert ids(z("traces", minDuration=40_000)) == ["1111111111111111"]
    assert ids(z("traces", maxDuration=5_000)) == ["2222222222222222"]
    assert ids(z("traces", serviceName="web", limit=1)) in (["1111111111111111"], ["2222222222222222"])
    assert ids(z("traces", endTs=now // 1000 - 60_000, lookback=60_000)) == []
    many = z("traceMany", traceIds="1111111111111111,2222222222222222").json()
    assert sorted(len(trace) for trace in many) == [1, 2]
    assert "http.path" in z("autocompleteKeys").json()
    assert z("autocompleteValues", key="http.path").json() == ["/a", "/b"] or sorted(z("autocompleteValues", key="http.path").json()) == ["/a", "/b"]
    links = z("dependencies", endTs=now // 1000 + 1000).json()
    assert links == [{"parent": "web", "child": "mysql", "callCount": 1, "errorCount": 1}]
    trace = z("trace/2222222222222222").json()
    assert trace == [{"traceId": "2222222222222222", "id": "0000000000000003", "name": "get /b", "kind": "SERVER",
                      "timestamp": now + 20, "duration": 2_000, "localEndpoint": {"serviceName": "web"},
                      "annotations": [{"timestamp": now + 30, "value": "retried"}], "tags": {"http.path": "/b"}}]
