"""The npm clients: the OpenTelemetry JS SDK (OTLP/HTTP protobuf), zipkin-js with
zipkin-transport-http (JSON v2), and jaeger-client for Node with its HTTP sender (binary
Thrift). Each sends a known trace; what comes back through Clew's APIs is compared field by
field with what the client recorded or sent."""
import json
import pathlib
import subprocess
import time

import requests

from conftest import wait_for_trace
from test_otel_sdk import otlp_value
from test_zipkin import by_id_and_kind, normalise

CLIENTS = pathlib.Path(__file__).resolve().parent.parent / "clients"
OTEL_KINDS = {0: "internal", 1: "server", 2: "client", 3: "producer", 4: "consumer"}
OTEL_STATUS = {0: "unset", 1: "ok", 2: "error"}


def run_node(script, *args):
    result = subprocess.run(["node", script, *args], cwd=CLIENTS, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def attributes(mapping):
    return sorted(({"key": k, "value": otlp_value(v)} for k, v in mapping.items()), key=lambda a: a["key"])


def test_opentelemetry_js_sdk(clew):
    recorded = run_node("otel_js.mjs", clew.otlp_http)
    assert len(recorded) == 2
    trace = wait_for_trace(clew, recorded[0]["traceId"], 2)
    spans = {span["spanId"]: span for span in trace["spans"]}
    for sent in recorded:
        span = spans[sent["spanId"]]
        assert span.get("parentSpanId") == sent["parentSpanId"]
        assert span["name"] == sent["name"] and span["kind"] == OTEL_KINDS[sent["kind"]]
        assert (span["startTimeUnixNano"], span["endTimeUnixNano"]) == (sent["start"], sent["end"])
        assert sorted(span["attributes"], key=lambda a: a["key"]) == attributes(sent["attributes"])
        assert [(e["name"], e["timeUnixNano"], sorted(e["attributes"], key=lambda a: a["key"])) for e in span["events"]] == [
            (e["name"], e["time"], attributes(e["attributes"])) for e in sent["events"]]
        assert span["status"] == {"code": OTEL_STATUS[sent["status"]["code"]], "message": sent["status"].get("message", "")}
        assert (span["scope"]["name"], span["scope"]["version"]) == (sent["scope"]["name"], sent["scope"]["version"])
        resource = {a["key"]: a["value"] for a in span["resource"]["attributes"]}
        assert resource["service.name"] == {"stringValue": "js-storefront"}
        assert resource["service.version"] == {"stringValue": "4.2.0"}
        assert resource["deployment.environment.name"] == {"stringValue": "test"}


def test_zipkin_js(clew):
    sent = run_node("zipkin_js.mjs", clew.zipkin)
    assert len(sent["spans"]) == 3
    wait_for_trace(clew, sent["traceId"], 3)
    returned = requests.get(f"{clew.zipkin}/api/v2/trace/{sent['traceId']}", timeout=10).json()
    assert by_id_and_kind([normalise(s) for s in returned]) == by_id_and_kind([normalise(s) for s in sent["spans"]])
    assert requests.get(f"{clew.zipkin}/api/v2/remoteServices", params={"serviceName": "zipkin-js-shop"}, timeout=10).json() == ["inventory"]
    links = requests.get(f"{clew.zipkin}/api/v2/dependencies", params={"endTs": int(time.time() * 1000)}, timeout=10).json()
    assert {"parent": "zipkin-js-shop", "child": "inventory", "callCount": 1, "errorCount": 1} in links


JAEGER_TYPES = {"STRING": ("string", "vStr"), "DOUBLE": ("float64", "vDouble"), "BOOL": ("bool", "vBool"), "LONG": ("int64", "vLong"),
                "BINARY": ("binary", "vBinary")}


def jaeger_tag(tag):
    kind, field = JAEGER_TYPES[tag["vType"]]
    value = tag[field]
    if kind == "int64":
        value = int.from_bytes(bytes(value["data"]), "big", signed=True)
    return {"key": tag["key"], "type": kind, "value": value}


def test_jaeger_client_for_node_over_http(clew):
    sent = run_node("jaeger_js.mjs", f"http://127.0.0.1:{clew.jaeger_ports['thrift_http']}/api/traces")
    trace_id = sent["spans"][0]["traceIdLow"]
    wait_for_trace(clew, trace_id, 3)
    trace = clew.get(f"/api/traces/{trace_id}", raw="true").json()["data"][0]
    process = list(trace["processes"].values())
    assert len(process) == 1 and process[0]["serviceName"] == "jaeger-js-billing"
    assert sorted(t["key"] for t in process[0]["tags"]) == sorted(t["key"] for t in sent["process"]["tags"])
    spans = {s["spanID"]: s for s in trace["spans"]}
    for expected in sent["spans"]:
        span = spans[expected["spanId"]]
        assert span["operationName"] == expected["operationName"]
        assert (span["startTime"], span["duration"]) == (expected["startTime"], expected["duration"])
        tags = sorted((t for t in span["tags"] if t["key"] != "otel.status_code"), key=lambda t: t["key"])
        assert tags == sorted((jaeger_tag(t) for t in expected["tags"]), key=lambda t: t["key"])
        assert span["logs"] == [{"timestamp": log["timestamp"], "fields": [jaeger_tag(f) for f in log["fields"]]} for log in expected["logs"]]
        references = [(r["refType"], r["spanID"]) for r in span["references"]]
        if expected["parentSpanId"] != "0" * 16:
            assert references[0] == ("CHILD_OF", expected["parentSpanId"])
        for ref in expected["references"]:
            assert (ref["refType"], ref["spanId"]) in references
