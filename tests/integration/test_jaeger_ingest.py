"""Jaeger intake with the real OpenTracing `jaeger-client`: over the agent's UDP port (compact
Thrift, as the client sends by default), its batches in binary Thrift over UDP and over the
collector's HTTP endpoint (encoded by the client's own generated Thrift code), and a grpcio
client on the gRPC collector. Every span is read back through the Jaeger API and compared
field by field with what the client built."""
import base64
import socket
import time

import grpc
import pytest
import requests
from jaeger_client import Config, ConstSampler, Tracer
from jaeger_client import thrift as jaeger_thrift
from jaeger_client.reporter import CompositeReporter, InMemoryReporter
from jaeger_client.thrift_gen.agent.Agent import emitBatch_args
from opentracing import follows_from
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TMessageType
from thrift.transport import TTransport

from conftest import compile_protos, wait_for_trace

MASK = (1 << 64) - 1
TAG_TYPES = {0: "string", 1: "float64", 2: "bool", 3: "int64", 4: "binary"}


def make_tracer(clew, service, extra_reporter=None):
    config = Config(config={"sampler": {"type": "const", "param": 1}, "logging": False,
                            "local_agent": {"reporting_host": "127.0.0.1", "reporting_port": clew.jaeger_ports["agent_compact"]},
                            "tags": {"deployment.environment": "test"}},
                    service_name=service, validate=True)
    tracer = config.new_tracer()
    memory = InMemoryReporter()
    tracer.reporter = CompositeReporter(tracer.reporter, memory)
    return tracer, memory


def run_request(tracer):
    """An inventory service reserving stock: server span, a database child with typed tags and
    a log, and a follows-from span for the asynchronous audit."""
    with tracer.start_span("POST /reserve", tags={"span.kind": "server", "http.method": "POST", "http.status_code": 503}) as root:
        time.sleep(0.002)
        with tracer.start_span("SELECT stock", child_of=root,
                               tags={"span.kind": "client", "db.type": "sql", "rows": 12, "ratio": 0.5, "cached": False}) as db:
            db.log_kv({"event": "lock wait", "waited.ms": 2.5})
            db.set_tag("error", True)
            time.sleep(0.003)
        with tracer.start_span("audit", references=[follows_from(root.context)], tags={"span.kind": "producer"}):
            time.sleep(0.001)
    return root


def tag_json(tag):
    value = {0: tag.vStr, 1: tag.vDouble, 2: tag.vBool, 3: tag.vLong,
             4: base64.b64encode(tag.vBinary or b"").decode()}[tag.vType]
    return {"key": tag.key, "type": TAG_TYPES[tag.vType], "value": value}


def hex64(value):
    return format(value & MASK, "016x")


def expected_spans(batch):
    """The Jaeger UI model of a client's Thrift batch, as Jaeger's documents describe it."""
    out = {}
    for span in batch.spans:
        trace_id = (hex64(span.traceIdHigh) if span.traceIdHigh else "") + hex64(span.traceIdLow)
        references, parent = [], span.parentSpanId
        if parent:
            references.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": hex64(parent)})
        for ref in span.references or []:
            kind = "FOLLOWS_FROM" if ref.refType == 1 else "CHILD_OF"
            if kind == "CHILD_OF" and (not parent or ref.spanId == parent):
                if not parent:
                    parent = ref.spanId
                    references.insert(0, {"refType": "CHILD_OF", "traceID": trace_id, "spanID": hex64(parent)})
                continue
            ref_trace = (hex64(ref.traceIdHigh) if ref.traceIdHigh else "") + hex64(ref.traceIdLow)
            references.append({"refType": kind, "traceID": ref_trace, "spanID": hex64(ref.spanId)})
        out[hex64(span.spanId)] = {
            "traceID": trace_id, "spanID": hex64(span.spanId), "flags": span.flags & 1,
            "operationName": span.operationName, "references": references,
            "startTime": span.startTime, "duration": span.duration,
            "tags": sorted((tag_json(t) for t in span.tags or []), key=lambda t: t["key"]),
            "logs": [{"timestamp": log.timestamp, "fields": [tag_json(f) for f in log.fields]} for log in span.logs or []],
        }
    return out


def check_against_jaeger_api(clew, batch):
    expected = expected_spans(batch)
    trace_id = next(iter(expected.values()))["traceID"]
    wait_for_trace(clew, trace_id, len(expected))
    body = clew.get(f"/api/traces/{trace_id}").json()
    trace = body["data"][0]
    assert trace["traceID"] == trace_id
    process = list(trace["processes"].values())
    assert len(process) == 1
    assert process[0]["serviceName"] == batch.process.serviceName
    assert sorted(process[0]["tags"], key=lambda t: t["key"]) == sorted((tag_json(t) for t in batch.process.tags), key=lambda t: t["key"])
    actual = {}
    for span in trace["spans"]:
        span = dict(span)
        span.pop("processID"), span.pop("warnings")
        # Clew adds the OpenTelemetry status it derived from `error`; the rest must be as sent.
        span["tags"] = sorted((t for t in span["tags"] if t["key"] != "otel.status_code"), key=lambda t: t["key"])
        actual[span["spanID"]] = span
    assert actual == expected
    return trace_id


def test_jaeger_client_over_agent_udp(clew):
    tracer, memory = make_tracer(clew, "inventory")
    root = run_request(tracer)
    tracer.close()  # flushes the reporter's queue to the agent port
    process = jaeger_thrift.make_process("inventory", tracer.tags, 1024)
    batch = jaeger_thrift.make_jaeger_batch(memory.get_spans(), process)
    trace_id = check_against_jaeger_api(clew, batch)
    assert trace_id == format(root.context.trace_id, "016x")
    native = clew.get(f"/api/v1/traces/{trace_id}").json()
    spans = {s["name"]: s for s in native["spans"]}
    assert spans["SELECT stock"]["kind"] == "client" and spans["SELECT stock"]["status"]["code"] == "error"
    assert spans["audit"]["links"][0]["spanId"] == spans["POST /reserve"]["spanId"]
    assert native["rootService"] == "inventory" and native["rootName"] == "POST /reserve"


def client_batch(clew, service):
    """A batch built by jaeger-client from real spans, without sending it."""
    tracer = Tracer(service_name=service, reporter=InMemoryReporter(), sampler=ConstSampler(True))
    run_request(tracer)
    process = jaeger_thrift.make_process(service, tracer.tags, 1024)
    return jaeger_thrift.make_jaeger_batch(tracer.reporter.get_spans(), process)


def binary(write):
    buffer = TTransport.TMemoryBuffer()
    write(TBinaryProtocol.TBinaryProtocol(buffer))
    return buffer.getvalue()


def test_binary_thrift_over_agent_udp_and_collector_http(clew):
    batch = client_batch(clew, "pricing")

    def emit_batch(protocol):
        # What the agent client's emitBatch writes, in the binary protocol.
        protocol.writeMessageBegin("emitBatch", TMessageType.ONEWAY, 1)
        args = emitBatch_args()
        args.batch = batch
        args.write(protocol)
        protocol.writeMessageEnd()

    datagram = binary(emit_batch)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(datagram, ("127.0.0.1", clew.jaeger_ports["agent_binary"]))
    check_against_jaeger_api(clew, batch)

    batch = client_batch(clew, "shipping")
    url = f"http://127.0.0.1:{clew.jaeger_ports['thrift_http']}/api/traces"
    response = requests.post(url, data=binary(batch.write), headers={"Content-Type": "application/x-thrift"}, timeout=10)
    assert response.status_code == 202, response.text
    check_against_jaeger_api(clew, batch)


def test_bad_jaeger_input(clew):
    url = f"http://127.0.0.1:{clew.jaeger_ports['thrift_http']}/api/traces"
    garbage = requests.post(url, data=b"\x0c\x00\x01\x0b\x00\x01\x7f\xff\xff\xff", headers={"Content-Type": "application/x-thrift"}, timeout=10)
    assert garbage.status_code == 400 and "Thrift" in garbage.text
    wrong = requests.post(url, data=b"{}", headers={"Content-Type": "application/json"}, timeout=10)
    assert wrong.status_code == 415 and "Content-Type" in wrong.text
    before = clew.get("/api/v1/status").json()["receiver"]["requests_refused_malformed"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for port in (clew.jaeger_ports["agent_compact"], clew.jaeger_ports["agent_binary"]):
            udp.sendto(b"\x82\x81\x00\x09emitBatch\xff\xff", ("127.0.0.1", port))
    deadline = time.time() + 5
    while clew.get("/api/v1/status").json()["receiver"]["requests_refused_malformed"] < before + 2:
        assert time.time() < deadline, "malformed datagrams were not counted"
        time.sleep(0.05)
    assert clew.alive()


@pytest.fixture(scope="module")
def grpc_stubs(tmp_path_factory):
    ((messages, services),) = compile_protos(tmp_path_factory.mktemp("stubs"), "jaeger_collector")
    return messages, services


def test_grpc_collector(clew, grpc_stubs):
    pb, pb_grpc = grpc_stubs
    now = time.time_ns()
    trace_id, parent, child = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"), bytes.fromhex("00f067aa0ba902b7"), bytes.fromhex("1111111111111111")

    def stamp(nanos):
        return {"seconds": nanos // 1_000_000_000, "nanos": nanos % 1_000_000_000}

    batch = pb.Batch(process=pb.Process(service_name="ledger", tags=[pb.KeyValue(key="region", v_str="eu-1")]), spans=[
        pb.Span(trace_id=trace_id, span_id=parent, operation_name="post entry", flags=1, start_time=stamp(now),
                duration={"nanos": 5_000_000}, tags=[pb.KeyValue(key="span.kind", v_str="server"),
                                                     pb.KeyValue(key="amount", v_type=pb.INT64, v_int64=1250)]),
        pb.Span(trace_id=trace_id, span_id=child, operation_name="write", start_time=stamp(now + 1_000_000),
                duration={"nanos": 2_000_000}, references=[pb.SpanRef(trace_id=trace_id, span_id=parent, ref_type=pb.CHILD_OF)],
                logs=[pb.Log(timestamp=stamp(now + 1_500_000), fields=[pb.KeyValue(key="event", v_str="fsync")])],
                tags=[pb.KeyValue(key="error", v_type=pb.BOOL, v_bool=True)]),
    ])
    with grpc.insecure_channel(f"127.0.0.1:{clew.jaeger_ports['grpc']}") as channel:
        stub = pb_grpc.CollectorServiceStub(channel)
        stub.PostSpans(pb.PostSpansRequest(batch=batch), timeout=10)
        with pytest.raises(grpc.RpcError) as bad:
            stub.PostSpans(pb.PostSpansRequest(batch=pb.Batch(spans=[pb.Span(trace_id=b"\x01", span_id=child)])), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    trace = wait_for_trace(clew, trace_id.hex(), 2)
    spans = {s["name"]: s for s in trace["spans"]}
    assert spans["write"]["parentSpanId"] == parent.hex()
    assert int(spans["post entry"]["startTimeUnixNano"]) == now and spans["post entry"]["durationNanos"] == 5_000_000
    assert spans["post entry"]["kind"] == "server" and {"key": "amount", "value": {"intValue": "1250"}} in spans["post entry"]["attributes"]
    assert spans["write"]["status"]["code"] == "error" and spans["write"]["events"][0]["name"] == "fsync"
    assert {"key": "region", "value": {"stringValue": "eu-1"}} in spans["write"]["resource"]["attributes"]
