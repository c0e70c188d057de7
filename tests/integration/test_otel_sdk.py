"""The real OpenTelemetry Python SDK sends spans over OTLP gRPC and HTTP; every field comes back."""
import base64
import time

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceState

from conftest import wait_for_trace


def exporter_for(kind, clew):
    if kind == "grpc":
        return GrpcExporter(endpoint=clew.otlp_grpc, insecure=True)
    return HttpExporter(endpoint=clew.otlp_http)


def otlp_value(value):
    """Expected OTLP/JSON AnyValue for a Python attribute value."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [otlp_value(v) for v in value]}}
    return {"stringValue": value}


ATTRIBUTES = {
    "str": "hello",
    "bool": True,
    "int": 1234567890123,
    "negative": -7,
    "double": 3.25,
    "strings": ["a", "b"],
    "ints": [1, 2, 3],
    "doubles": [0.5, 1.5],
    "bools": [True, False],
}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_every_field_round_trips(clew, transport):
    provider = TracerProvider(resource=Resource.create({"service.name": f"checkout-{transport}", "service.version": "1.2.3", "team": "payments"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter_for(transport, clew)))
    tracer = provider.get_tracer("test-scope", "0.9.1")

    with tracer.start_as_current_span("linked-target") as other:
        pass
    other_context = other.get_span_context()

    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER, attributes=ATTRIBUTES) as root:
        root.add_event("cart.loaded", {"items": 3, "vip": False})
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT, links=[Link(other_context, {"reason": "retry-of"})]) as child:
            child.set_status(Status(StatusCode.ERROR, "card declined"))
            child.record_exception(ValueError("declined"))
    provider.force_flush()

    root_context = root.get_span_context()
    trace_id = format(root_context.trace_id, "032x")
    trace = wait_for_trace(clew, trace_id, 2)

    assert trace["traceId"] == trace_id
    assert trace["spanCount"] == 2
    assert trace["rootService"] == f"checkout-{transport}"
    assert trace["rootName"] == "POST /checkout"
    assert trace["errorCount"] == 1
    spans = {s["name"]: s for s in trace["spans"]}

    stored_root = spans["POST /checkout"]
    assert stored_root["spanId"] == format(root_context.span_id, "016x")
    assert "parentSpanId" not in stored_root
    assert stored_root["kind"] == "server"
    assert int(stored_root["startTimeUnixNano"]) == root.start_time
    assert int(stored_root["endTimeUnixNano"]) == root.end_time
    assert stored_root["durationNanos"] == root.end_time - root.start_time
    got = {a["key"]: a["value"] for a in stored_root["attributes"]}
    assert got == {k: otlp_value(v) for k, v in ATTRIBUTES.items()}
    assert stored_root["events"][0]["name"] == "cart.loaded"
    assert int(stored_root["events"][0]["timeUnixNano"]) == root.events[0].timestamp
    assert {a["key"]: a["value"] for a in stored_root["events"][0]["attributes"]} == {"items": {"intValue": "3"}, "vip": {"boolValue": False}}
    assert stored_root["status"]["code"] == "unset"
    resource = {a["key"]: a["value"] for a in stored_root["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": f"checkout-{transport}"}
    assert resource["service.version"] == {"stringValue": "1.2.3"}
    assert resource["telemetry.sdk.language"] == {"stringValue": "python"}
    assert stored_root["scope"]["name"] == "test-scope"
    assert stored_root["scope"]["version"] == "0.9.1"
    assert stored_root["droppedAttributesCount"] == 0

    stored_child = spans["charge"]
    assert stored_child["parentSpanId"] == stored_root["spanId"]
    assert stored_child["kind"] == "client"
    assert stored_child["status"] == {"code": "error", "message": "card declined"}
    assert stored_child["parentService"] == f"checkout-{transport}"
    assert stored_child["depth"] == 1
    exception = stored_child["events"][0]
    assert exception["name"] == "exception"
    assert {a["key"]: a["value"] for a in exception["attributes"]}["exception.type"] == {"stringValue": "ValueError"}
    link = stored_child["links"][0]
    assert link["traceId"] == format(other_context.trace_id, "032x")
    assert link["spanId"] == format(other_context.span_id, "016x")
    assert link["attributes"] == [{"key": "reason", "value": {"stringValue": "retry-of"}}]
    # The client span has no server child: flagged, and the critical path covers the root.
    assert "unmatched_client" in stored_child["problems"]
    assert sum(s["criticalPathNanos"] for s in trace["spans"]) == trace["durationNanos"]


def test_dropped_counts_and_bytes(clew):
    provider = TracerProvider(resource=Resource.create({"service.name": "limits"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter_for("http", clew)))
    tracer = provider.get_tracer("t")
    # The SDK keeps 128 attributes and counts the rest as dropped.
    with tracer.start_as_current_span("many", attributes={f"k{i}": i for i in range(200)}) as span:
        span.set_attribute("blob", "x" * 10)
    provider.force_flush()
    trace = wait_for_trace(clew, format(span.get_span_context().trace_id, "032x"), 1)
    stored = trace["spans"][0]
    assert len(stored["attributes"]) == 128
    assert stored["droppedAttributesCount"] == span.dropped_attributes


def test_search_and_pickers_find_sdk_spans(clew):
    provider = TracerProvider(resource=Resource.create({"service.name": "searchable"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter_for("grpc", clew)))
    tracer = provider.get_tracer("t")
    ids = []
    for status_code in (200, 503):
        with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER, attributes={"http.response.status_code": status_code, "http.route": "/items"}) as span:
            pass
        ids.append(format(span.get_span_context().trace_id, "032x"))
    provider.force_flush()
    for trace_id in ids:
        wait_for_trace(clew, trace_id, 1)
    found = clew.get("/api/v1/search", service="searchable", attr="http.response.status_code>=500").json()["traces"]
    assert [t["trace_id"] for t in found] == [ids[1]]
    found = clew.get("/api/v1/search", service="searchable", attr="http.route=~/it.*", sort="longest").json()["traces"]
    assert sorted(t["trace_id"] for t in found) == sorted(ids)
    assert clew.get("/api/v1/search", service="searchable", attr="http.route=/nope").json()["traces"] == []
    services = {s["name"]: s["spans"] for s in clew.get("/api/v1/services").json()["services"]}
    assert services["searchable"] == 2
    operations = clew.get("/api/v1/services/searchable/operations").json()["operations"]
    assert operations == [{"name": "GET /items", "kind": "server", "spans": 2}]
    values = clew.get("/api/v1/attributes/http.response.status_code/values").json()["values"]
    assert {v["value"]: v["spans"] for v in values} == {"200": 1, "503": 1}
    rows = clew.get("/api/v1/sql", q="SELECT count(*) AS n FROM spans WHERE service_name = 'searchable'").json()["rows"]
    assert rows == [{"n": 2}]
    bad = clew.get("/api/v1/sql", q="DROP TABLE spans")
    assert bad.status_code == 400
    assert clew.get("/api/v1/search", attr="nooperator").status_code == 400
    assert clew.get("/api/v1/traces/not-hex").status_code == 400
    assert clew.get("/api/v1/traces/" + "ab" * 16).status_code == 404


class ConsistentQuarterSampler(Sampler):
    """OpenTelemetry's consistent probability sampling at 1/4: a root is kept when the low 56
    bits of its trace ID reach the threshold 0xc0000000000000, and says so in its tracestate
    (`ot=th:c`); children follow their parent."""

    THRESHOLD = 0xC << 52

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        if trace_id & ((1 << 56) - 1) < self.THRESHOLD:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, TraceState([("ot", "th:c")]))

    def get_description(self):
        return "ConsistentQuarter"


def test_sampled_traces_count_as_the_traffic_they_stand_for(clew):
    """Traces the SDK kept with probability 1/4 count four times in the rates, the service
    graph, the span metrics and the traffic estimate; unsampled ones once."""
    gateway = TracerProvider(resource=Resource.create({"service.name": "sampled-gateway"}),
                             sampler=ParentBased(ConsistentQuarterSampler()))
    payments = TracerProvider(resource=Resource.create({"service.name": "sampled-payments"}), sampler=ParentBased(ALWAYS_OFF))
    for provider in (gateway, payments):
        provider.add_span_processor(SimpleSpanProcessor(exporter_for("http", clew)))
    kept = []
    for _ in range(200):
        with gateway.get_tracer("t").start_as_current_span("POST /pay", kind=SpanKind.SERVER) as root:
            with gateway.get_tracer("t").start_as_current_span("charge", kind=SpanKind.CLIENT):
                # The callee follows the caller's decision, as propagation would make it.
                with payments.get_tracer("t").start_as_current_span("POST /charge", kind=SpanKind.SERVER):
                    pass
        context = root.get_span_context()
        if context.trace_flags.sampled:
            assert context.trace_state.get("ot") == "th:c"
            kept.append(format(context.trace_id, "032x"))
    # Unsampled traffic of another entry point counts once per trace.
    whole = TracerProvider(resource=Resource.create({"service.name": "sampled-gateway"}))
    whole.add_span_processor(SimpleSpanProcessor(exporter_for("http", clew)))
    for _ in range(10):
        with whole.get_tracer("t").start_as_current_span("GET /health", kind=SpanKind.SERVER) as health:
            pass
    for provider in (gateway, payments, whole):
        provider.force_flush()
    assert 20 < len(kept) < 90, len(kept)
    for trace_id in kept:
        wait_for_trace(clew, trace_id, 3)
    wait_for_trace(clew, format(health.get_span_context().trace_id, "032x"), 1)
    stored = clew.get("/api/v1/sql", q="SELECT count(DISTINCT trace_id) AS traces, min(trace_adjusted_count) AS low, "
                      "max(trace_adjusted_count) AS high FROM spans WHERE trace_root_name = 'POST /pay'").json()["rows"]
    assert stored == [{"traces": len(kept), "low": 4, "high": 4}]

    estimate = clew.get("/api/v1/traffic-estimate", lookback="15m").json()
    entries = {e["operation"]: e for e in estimate["entries"] if e["service"] == "sampled-gateway"}
    assert entries["POST /pay"]["requests"] == 4 * len(kept)
    assert entries["GET /health"]["requests"] == 10
    fan_out = {f["service"]: f["mean_per_request"] for f in entries["POST /pay"]["fan_out"]}
    assert fan_out["sampled-payments"] == 1.0

    graph = clew.get("/api/v1/service-graph", lookback="15m").json()
    edge = next(e for e in graph["edges"] if (e["parent"], e["child"]) == ("sampled-gateway", "sampled-payments"))
    assert edge["calls"] == 4 * len(kept), edge
    # Correlations weigh each side by the traffic it stands for, and test on the spans compared.
    report = clew.get("/api/v1/correlations", service="sampled-gateway", q='{ name = "GET /health" }', lookback="15m").json()
    assert any("sampled" in note for note in report["notes"]), report["notes"]
    through = next(c for c in report["correlations"] if (c["key"], c["value"]) == ("trace.service", "sampled-payments"))
    assert (through["selected"], through["baseline"]) == (0, 2 * len(kept)), through
    red = clew.get("/api/v1/services/sampled-payments/red", lookback="15m").json()
    assert sum(point["calls"] for point in red["series"]) == 4 * len(kept)

    # Span metrics count what has been assembled: the traces go quiet within a second.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    deadline, calls = time.time() + 20, {}
    while time.time() < deadline:
        families = {f.name: f for f in text_string_to_metric_families(clew.get("/metrics").text)}
        calls = {}
        for sample in (families["traces_spanmetrics_calls"].samples if "traces_spanmetrics_calls" in families else []):
            key = (sample.labels["service"], sample.labels["span_name"])
            calls[key] = calls.get(key, 0) + sample.value
        if calls.get(("sampled-gateway", "GET /health")) == 10 and calls.get(("sampled-payments", "POST /charge")) == 4 * len(kept):
            break
        time.sleep(0.2)
    assert calls[("sampled-payments", "POST /charge")] == 4 * len(kept)
    assert calls[("sampled-gateway", "GET /health")] == 10
    # Clew's own health beside them: what it acknowledged, and no assembly backlog.
    assert families["clew_spans_accepted"].samples[0].value == 3 * len(kept) + 10
    assert families["clew_assembly_lag_seconds"].type == "gauge"
    assert families["clew_assembly_lag_seconds"].samples[0].value == 0
    # Where the write path spent its time: the traces above were assembled, so assembly took some.
    stages = {sample.labels["stage"]: sample.value for sample in families["clew_write_path_seconds"].samples
              if sample.name == "clew_write_path_seconds_total"}
    assert set(stages) == {"take_ready", "assembly", "block_write_waits", "block_writes", "compaction"}
    assert stages["assembly"] > 0 and all(value >= 0 for value in stages.values())
    for provider in (gateway, payments, whole):
        provider.shutdown()
