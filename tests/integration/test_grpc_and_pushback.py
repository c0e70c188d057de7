"""The OTLP/gRPC error contract, and push-back when Clew cannot take more."""
import os
import tempfile
import time

import grpc
import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import Clew, wait_for_trace

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def request_with(spans):
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])


def span(trace_id=None):
    now = time.time_ns()
    return trace_pb2.Span(trace_id=trace_id or os.urandom(16), span_id=os.urandom(8), name="g", kind=2,
                          start_time_unix_nano=now, end_time_unix_nano=now + 10)


def raw_export(clew, payload):
    channel = grpc.insecure_channel(clew.otlp_grpc, options=[("grpc.max_send_message_length", 64 << 20)])
    return channel.unary_unary(EXPORT)(payload, timeout=10)


def test_grpc_undecodable_is_invalid_argument(clew):
    with pytest.raises(grpc.RpcError) as error:
        raw_export(clew, b"\xff\xff\xff\xff\x0f garbage")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid OTLP" in error.value.details()


def test_grpc_oversized_is_resource_exhausted_without_retry_info(clew):
    with pytest.raises(grpc.RpcError) as error:
        raw_export(clew, b"\x0a" + b"\x00" * (9 << 20))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not any(key == "grpc-status-details-bin" for key, _ in (error.value.trailing_metadata() or ()))


def test_grpc_partial_success(clew):
    good, bad = span(), span(trace_id=b"\0" * 16)
    answer = trace_service_pb2.ExportTraceServiceResponse()
    answer.ParseFromString(raw_export(clew, request_with([good, bad]).SerializeToString()))
    assert answer.partial_success.rejected_spans == 1
    assert "must not be all zeros" in answer.partial_success.error_message
    wait_for_trace(clew, good.trace_id.hex(), 1)


def test_pushback_when_too_much_is_pending():
    with tempfile.TemporaryDirectory(prefix="clew-test-") as directory:
        server = Clew(directory, idle_seconds=3600, extra_env={"CLEW_STORE__MAX_PENDING_SPANS": "10"}).start()
        try:
            body = request_with([span() for _ in range(20)]).SerializeToString()
            first = requests.post(server.otlp_http, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=10)
            assert first.status_code == 200
            refused = requests.post(server.otlp_http, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=10)
            assert refused.status_code == 503
            assert int(refused.headers["Retry-After"]) > 0
            status = status_pb2.Status()
            status.ParseFromString(refused.content)
            assert status.code == 14 and "waiting for assembly" in status.message, status
            # The store is behind: a request is refused before its body is decoded.
            garbage = requests.post(server.otlp_http, data=b"\xff\xff garbage", headers={"Content-Type": "application/x-protobuf"}, timeout=10)
            assert garbage.status_code == 503
            with pytest.raises(grpc.RpcError) as error:
                raw_export(server, body)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            details = dict(error.value.trailing_metadata() or ())
            assert "grpc-status-details-bin" in details, "UNAVAILABLE carries RetryInfo"
            assert server.alive()
        finally:
            server.stop()
