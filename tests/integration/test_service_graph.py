"""The aggregates behind the service map and service pages, on hand-built traces whose numbers
are known: `/api/v1/service-graph` and `/api/v1/services/{s}/red`."""
import json
import time

from conftest import wait_for_trace
from test_jaeger_api import kv, post_otlp


def seed(clew, count=3):
    """`count` traces: gateway GET /home (server) → gateway client → api GET /items (server,
    an error in the last trace) → api client to an uninstrumented `legacy` (peer.service) and a
    postgresql query (db.system only)."""
    t0 = (int(time.time()) - 30) * 1_000_000_000
    ids = []
    for i in range(count):
        trace = f"{i + 1:032x}"
        ids.append(trace)
        base = t0 + i * 1_000_000_000
        error = i == count - 1
        post_otlp(clew, [
            {"resource": {"attributes": [kv("service.name", stringValue="gateway")]}, "scopeSpans": [{"spans": [
                {"traceId": trace, "spanId": "a000000000000001", "name": "GET /home", "kind": 2,
                 "startTimeUnixNano": str(base), "endTimeUnixNano": str(base + 100_000_000)},
                {"traceId": trace, "spanId": "a000000000000002", "parentSpanId": "a000000000000001", "name": "GET api",
                 "kind": 3, "startTimeUnixNano": str(base + 5_000_000), "endTimeUnixNano": str(base + 90_000_000)},
            ]}]},
            {"resource": {"attributes": [kv("service.name", stringValue="api")]}, "scopeSpans": [{"spans": [
                {"traceId": trace, "spanId": "b000000000000001", "parentSpanId": "a000000000000002", "name": "GET /items",
                 "kind": 2, "startTimeUnixNano": str(base + 10_000_000),
                 "endTimeUnixNano": str(base + (80_000_000 if not error else 85_000_000)),
                 "status": {"code": 2 if error else 0}},
                {"traceId": trace, "spanId": "b000000000000002", "parentSpanId": "b000000000000001", "name": "GET legacy",
                 "kind": 3, "startTimeUnixNano": str(base + 20_000_000), "endTimeUnixNano": str(base + 40_000_000),
                 "attributes": [kv("peer.service", stringValue="legacy")]},
                {"traceId": trace, "spanId": "b000000000000003", "parentSpanId": "b000000000000001", "name": "SELECT items",
                 "kind": 3, "startTimeUnixNano": str(base + 45_000_000), "endTimeUnixNano": str(base + 50_000_000),
                 "attributes": [kv("db.system", stringValue="postgresql")]},
            ]}]},
        ])
    for trace in ids:
        wait_for_trace(clew, trace, 5)
    return t0


def test_service_graph_counts_every_call_once(clew):
    seed(clew)
    graph = clew.get("/api/v1/service-graph", lookback="1h").json()
    nodes = {(n["name"], n["kind"]): n for n in graph["nodes"]}
    assert set(nodes) == {("user", "user"), ("gateway", "service"), ("api", "service"), ("legacy", "virtual"),
                          ("postgresql", "virtual")}
    edges = {(e["parent"], e["child"]): e for e in graph["edges"]}
    assert set(edges) == {("user", "gateway"), ("gateway", "api"), ("api", "legacy"), ("api", "postgresql")}
    assert [edges[k]["calls"] for k in sorted(edges)] == [3, 3, 3, 3]
    assert edges[("gateway", "api")]["errors"] == 1
    assert edges[("user", "gateway")]["errors"] == 0
    # Latency of a call to an instrumented service is its server span's: 70, 70 and 75 ms.
    assert 70_000_000 <= edges[("gateway", "api")]["p50_nanos"] <= 75_000_000
    # A call to a virtual node is measured on the client side: 20 ms each.
    assert edges[("api", "legacy")]["p95_nanos"] == 20_000_000
    assert nodes[("api", "service")]["calls"] == 3 and nodes[("api", "service")]["errors"] == 1
    assert nodes[("gateway", "service")]["p95_nanos"] == 100_000_000

    # Filtered by an entry point that no trace has, the map is empty.
    empty = clew.get("/api/v1/service-graph", lookback="1h", service="gateway", operation="POST /nothing").json()
    assert empty["nodes"] == [] and empty["edges"] == []
    assert clew.get("/api/v1/service-graph", lookback="1h", service="gateway").json()["edges"] == graph["edges"]
    # Bad parameters are refused with a message.
    response = clew.get("/api/v1/service-graph", colour="red")
    assert response.status_code == 400 and "colour" in response.json()["error"]["message"]


def test_red_series_of_a_service(clew):
    t0 = seed(clew)
    red = clew.get("/api/v1/services/api/red", start=str(t0 - 10_000_000_000), end=str(t0 + 50_000_000_000),
                   step="5m").json()
    assert red["kinds"] == ["server", "consumer"]
    assert red["step_nanos"] == 300_000_000_000
    # The three server spans fall in one bucket.
    assert [(p["calls"], p["errors"]) for p in red["series"]] == [(3, 1)]
    operations = {(o["name"], o["kind"]): o for o in red["operations"]}
    assert operations[("GET /items", "server")]["calls"] == 3
    assert operations[("GET legacy", "client")]["p99_nanos"] == 20_000_000
    one = clew.get("/api/v1/services/api/red", start=str(t0 - 10_000_000_000), end=str(t0 + 50_000_000_000),
                   step="10s", operation="SELECT items").json()
    # Read from the rollups, which count per minute: the step is rounded up to one.
    assert one["step_nanos"] == 60_000_000_000
    assert sum(p["calls"] for p in one["series"]) == 3
    too_many = clew.get("/api/v1/services/api/red", lookback="24h", step="1s")
    assert too_many.status_code == 400 and "2000" in too_many.json()["error"]["message"]


def test_topology_exports_and_cli(clew):
    seed(clew)
    import subprocess
    from conftest import CLEW_BIN

    def cli(*args):
        return subprocess.run([CLEW_BIN, "topology", "--server", clew.query, *args], capture_output=True, text=True,
                              timeout=60)

    dot = cli("--output", "dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith("digraph services {")
    for edge in ('"user" -> "gateway"', '"gateway" -> "api"', '"api" -> "legacy"', '"api" -> "postgresql"'):
        assert edge in dot.stdout
    assert '"legacy" [label="legacy' in dot.stdout and "dashed" in dot.stdout.split('"legacy" [label=')[1].split("\n")[0]

    mermaid = cli("--output", "mermaid")
    assert mermaid.stdout.startswith("flowchart LR") and mermaid.stdout.count("-->") == 4
    assert "class " in mermaid.stdout and "uninstrumented" in mermaid.stdout

    markdown = cli("--output", "markdown", "--entry-service", "gateway")
    rows = [line for line in markdown.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4 and any("legacy (not instrumented)" in row for row in rows)

    as_json = json.loads(cli("--output", "json").stdout)
    assert {e["child"] for e in as_json["edges"]} == {"gateway", "api", "legacy", "postgresql"}

    svg = cli("--output", "svg")
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in svg.stdout and all(name in svg.stdout for name in ("gateway", "api", "legacy", "postgresql"))

    bad = clew.get("/api/v1/service-graph", format="svgz")
    assert bad.status_code == 400 and "format" in bad.json()["error"]["message"]


def test_a_message_nobody_consumes_names_a_virtual_node(clew):
    t0 = (int(time.time()) - 10) * 1_000_000_000
    trace = "f" * 32
    post_otlp(clew, [{"resource": {"attributes": [kv("service.name", stringValue="orders")]}, "scopeSpans": [{"spans": [
        {"traceId": trace, "spanId": "c000000000000001", "name": "POST /orders", "kind": 2,
         "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 30_000_000)},
        {"traceId": trace, "spanId": "c000000000000002", "parentSpanId": "c000000000000001", "name": "order-events publish",
         "kind": 4, "startTimeUnixNano": str(t0 + 10_000_000), "endTimeUnixNano": str(t0 + 12_000_000),
         "attributes": [kv("messaging.system", stringValue="kafka"),
                        kv("messaging.destination.name", stringValue="order-events")]},
    ]}]}])
    wait_for_trace(clew, trace, 2)
    deadline = time.time() + 20
    while time.time() < deadline:
        graph = clew.get("/api/v1/service-graph", lookback="1h").json()
        if any(n["name"] == "order-events" for n in graph["nodes"]):
            break
        time.sleep(0.2)
    assert {"name": "order-events", "kind": "virtual"}.items() <= next(
        n for n in graph["nodes"] if n["name"] == "order-events").items()
    assert any(e["parent"] == "orders" and e["child"] == "order-events" for e in graph["edges"])
