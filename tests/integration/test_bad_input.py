"""Malformed, oversized and hostile requests get the documented answer; the server stays up
and keeps the valid spans of a partly bad request."""
import gzip
import json
import os
import random

import requests
from google.rpc import status_pb2  # shipped with the OTLP exporters' googleapis-common-protos
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import wait_for_trace

NOW = 1_800_000_000_000_000_000


def span(trace_id=None, span_id=None, start=None, attributes=(), name="op"):
    import time
    start = start if start is not None else time.time_ns()
    return trace_pb2.Span(
        trace_id=trace_id if trace_id is not None else os.urandom(16),
        span_id=span_id if span_id is not None else os.urandom(8),
        name=name, kind=2, start_time_unix_nano=start, end_time_unix_nano=start + 1000,
        attributes=list(attributes))


def request_of(*spans):
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=None, scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))])])


def post(clew, body, content_type="application/x-protobuf", **headers):
    return requests.post(clew.otlp_http, data=body, headers={"Content-Type": content_type, **headers}, timeout=30)


def rpc_status(response):
    assert response.headers["Content-Type"] == "application/x-protobuf"
    status = status_pb2.Status()
    status.ParseFromString(response.content)
    return status


def test_garbage_and_truncated_protobuf(clew):
    response = post(clew, os.urandom(4096))
    assert response.status_code == 400
    assert "not a valid OTLP protobuf" in rpc_status(response).message
    whole = request_of(span()).SerializeToString()
    response = post(clew, whole[: len(whole) // 2])
    assert response.status_code == 400
    assert clew.alive()


def test_invalid_json_and_wrong_content_type(clew):
    response = post(clew, b"{not json", "application/json")
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert "not valid JSON" in response.json()["message"]
    response = post(clew, b"hello", "text/plain")
    assert response.status_code == 415
    assert "unsupported Content-Type" in rpc_status(response).message


def test_too_large_and_gzip_bomb(clew):
    big = request_of(span(attributes=[common_pb2.KeyValue(key="v", value=common_pb2.AnyValue(string_value="x" * (10 << 20)))]))
    response = post(clew, big.SerializeToString())
    assert response.status_code == 413
    assert "exceeds the limit" in rpc_status(response).message
    bomb = gzip.compress(b"\0" * (64 << 20))
    assert len(bomb) < 1 << 20
    response = post(clew, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    response = post(clew, b"abc", **{"Content-Encoding": "br"})
    assert response.status_code == 415
    assert clew.alive()


def test_partial_success_keeps_valid_spans(clew):
    good = span(name="good")
    bad = [
        span(trace_id=b"\0" * 16),            # all-zero trace ID
        span(span_id=b"\1\2\3"),              # span ID of the wrong length
        span(start=5),                        # absurd timestamp
        span(start=NOW * 10),                 # far future
    ]
    response = post(clew, request_of(good, *bad).SerializeToString())
    assert response.status_code == 200
    answer = trace_service_pb2.ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 4
    assert "rejected" in answer.partial_success.error_message
    trace = wait_for_trace(clew, good.trace_id.hex(), 1)
    assert trace["spans"][0]["name"] == "good"


def test_json_partial_success_and_hex_ids(clew):
    trace_id = os.urandom(16).hex()
    import time
    start = time.time_ns()
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
            "scopeSpans": [{"spans": [
                {"traceId": trace_id, "spanId": os.urandom(8).hex(), "name": "ok", "kind": 2,
                 "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 5), "unknownField": 1},
                {"traceId": "00" * 16, "spanId": os.urandom(8).hex(), "name": "bad", "kind": 2,
                 "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 5)}]}]}]}
    response = post(clew, json.dumps(body).encode(), "application/json")
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] in (1, "1")
    trace = wait_for_trace(clew, trace_id, 1)
    assert trace["rootService"] == "json-svc"


def test_ten_thousand_attributes_are_capped_and_counted(clew):
    attributes = [common_pb2.KeyValue(key=f"k{i}", value=common_pb2.AnyValue(int_value=i)) for i in range(10_000)]
    s = span(attributes=attributes)
    response = post(clew, request_of(s).SerializeToString())
    assert response.status_code == 200
    answer = trace_service_pb2.ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 0
    assert "truncated" in answer.partial_success.error_message
    stored = wait_for_trace(clew, s.trace_id.hex(), 1)["spans"][0]
    assert len(stored["attributes"]) == 128
    assert stored["droppedAttributesCount"] == 10_000 - 128


def test_duplicate_deliveries_are_stored_once(clew):
    spans = [span() for _ in range(5)]
    trace_id = os.urandom(16)
    for s in spans:
        s.trace_id = trace_id
    body = request_of(*spans).SerializeToString()
    for _ in range(3):
        assert post(clew, body).status_code == 200
    trace = wait_for_trace(clew, trace_id.hex(), 5)
    assert trace["spanCount"] == 5
    rows = clew.get("/api/v1/sql", q=f"SELECT count(*) AS n FROM spans WHERE encode(trace_id, 'hex') = '{trace_id.hex()}'").json()["rows"]
    assert rows == [{"n": 5}]


def test_server_survives_a_fuzz_barrage(clew):
    rng = random.Random(7)
    valid = request_of(span(), span()).SerializeToString()
    for _ in range(200):
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        response = post(clew, bytes(mutated))
        assert response.status_code in (200, 400), response.status_code
    assert clew.get("/api/v1/status").ok
