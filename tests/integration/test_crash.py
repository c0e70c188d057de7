"""Sustained ingest while the server is killed with SIGKILL at random moments: after restart
every acknowledged span is there, and none twice."""
import os
import random
import threading
import time

import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def make_request(rng, acked_candidates):
    spans = []
    start = time.time_ns()
    for _ in range(rng.randint(1, 20)):
        trace_id, span_id = os.urandom(16), os.urandom(8)
        spans.append(trace_pb2.Span(trace_id=trace_id, span_id=span_id, name="crash-op", kind=2,
                                    start_time_unix_nano=start, end_time_unix_nano=start + 1000))
        acked_candidates.append(span_id.hex())
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]).SerializeToString()


def test_acknowledged_spans_survive_kill_9(clew_factory):
    server = clew_factory(idle_seconds=0.3).start()
    acked = set()
    rng = random.Random(1)
    for round_number in range(4):
        stop = threading.Event()

        def generate():
            session = requests.Session()
            while not stop.is_set():
                candidates = []
                body = make_request(rng, candidates)
                try:
                    response = session.post(server.otlp_http, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=5)
                except requests.RequestException:
                    continue
                if response.status_code == 200:
                    acked.update(candidates)

        workers = [threading.Thread(target=generate) for _ in range(3)]
        for worker in workers:
            worker.start()
        time.sleep(rng.uniform(0.5, 2.5))
        server.kill()
        stop.set()
        for worker in workers:
            worker.join()
        server.start()
    assert len(acked) > 100
    rows = requests.get(server.query + "/api/v1/sql", params={"q": "SELECT encode(span_id, 'hex') AS id, count(*) AS n FROM spans WHERE name = 'crash-op' GROUP BY span_id"}, timeout=60).json()["rows"]
    stored = {row["id"]: row["n"] for row in rows}
    missing = acked - stored.keys()
    assert not missing, f"{len(missing)} acknowledged spans lost of {len(acked)}"
    twice = {k: v for k, v in stored.items() if v > 1}
    assert not twice, f"{len(twice)} spans stored more than once"
