"""The command line against a running Clew: import, search, trace, sql, config, demo truth, exit codes."""
import json
import os
import subprocess
import time

from conftest import CLEW_BIN, wait_for_trace


def clew_cli(*args, server=None):
    env = dict(os.environ)
    if server:
        env["CLEW_SERVER"] = server.query
    return subprocess.run([CLEW_BIN, *args], capture_output=True, text=True, env=env, timeout=120)


def otlp_json_line(trace_id, service, names):
    now = time.time_ns()
    spans = []
    parent = ""
    for index, name in enumerate(names):
        span_id = f"{index + 1:016x}"
        spans.append({"traceId": trace_id, "spanId": span_id, "parentSpanId": parent, "name": name, "kind": 2 if index == 0 else 3,
                      "startTimeUnixNano": str(now + index * 1000), "endTimeUnixNano": str(now + 1_000_000 - index * 1000),
                      "attributes": [{"key": "step", "value": {"intValue": str(index)}}]})
        parent = span_id
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                                          "scopeSpans": [{"spans": spans}]}]})


def test_import_then_search_trace_and_sql(clew, tmp_path):
    ids = [os.urandom(16).hex() for _ in range(3)]
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(otlp_json_line(t, "importer", ["GET /a", "SELECT", "cache"]) for t in ids) + "\n")
    result = clew_cli("import", str(path), "--endpoint", clew.otlp_http)
    assert result.returncode == 0, result.stderr
    assert "3 request(s) sent, 0 refused, 0 span(s) rejected" in result.stdout
    for trace_id in ids:
        wait_for_trace(clew, trace_id, 3)

    result = clew_cli("search", "--service", "importer", "--output", "json", server=clew)
    assert result.returncode == 0, result.stderr
    assert sorted(t["trace_id"] for t in json.loads(result.stdout)["traces"]) == sorted(ids)

    result = clew_cli("search", "-q", '{ resource.service.name = "importer" && name = "SELECT" }', server=clew)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "matched" in lines[0] and len(lines) == 4, result.stdout
    assert all(" 1  " in line and "importer: GET /a" in line for line in lines[1:]), result.stdout
    bad = clew_cli("search", "-q", "{ name = }", server=clew)
    assert bad.returncode == 1 and "column 10" in bad.stderr, bad.stderr

    result = clew_cli("trace", ids[0], server=clew)
    assert result.returncode == 0, result.stderr
    assert "importer: GET /a  3 spans" in result.stdout
    assert "└─ importer GET /a [server]" in result.stdout
    assert "importer SELECT [client]" in result.stdout

    result = clew_cli("trace", ids[0], "--output", "json", server=clew)
    assert json.loads(result.stdout)["spanCount"] == 3

    result = clew_cli("sql", "SELECT count(*) AS n FROM spans WHERE service_name = 'importer'", "--output", "json", server=clew)
    assert json.loads(result.stdout) == [{"n": 9}]

    # The OTLP export of a trace imports again, unchanged.
    exported = clew.get(f"/api/v1/traces/{ids[1]}/otlp").json()
    assert len(exported["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 3


def test_exit_codes(clew):
    assert clew_cli("trace", "ab" * 16, server=clew).returncode == 3
    assert clew_cli("trace", "not-hex", server=clew).returncode == 1
    assert clew_cli("search", "--attr", "nooperator", server=clew).returncode == 1
    unreachable = clew_cli("search", "--server", "http://127.0.0.1:9")
    assert unreachable.returncode == 4
    assert "cannot reach Clew" in unreachable.stderr
    assert clew_cli("no-such-command").returncode == 2


def test_config_and_demo_truth():
    result = clew_cli("config", "--print-default")
    assert result.returncode == 0
    assert 'otlp_grpc_address = "127.0.0.1:4317"' in result.stdout
    assert "trace_idle_seconds = 10.0" in result.stdout
    truth = json.loads(clew_cli("demo", "--print-truth").stdout)
    assert len(truth["services"]) >= 25
    assert len(truth["entry_operations"]) >= 6
    assert "payment-provider" in truth["uninstrumented"]
    assert ["checkout-service", "shipping-service", "callee does not extract the propagated context"] in truth["propagation_breaks"]
