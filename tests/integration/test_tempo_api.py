"""The Tempo HTTP API (what Grafana's Tempo data source calls) and TraceQL search, against
shapes written from Tempo's API document: trace by ID as OTLP JSON (`batches`) or protobuf,
v2 trace by ID (`trace`, with `q` picking spans), search with `q` or `tags`, tag lists; and the
streaming gRPC querier on the same port, compared with the HTTP answers."""
import time

import grpc
import pytest
import requests
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from conftest import compile_protos, wait_for_trace
from test_jaeger_api import TRACE, kv, post_otlp, seed


def tempo(clew, path, **params):
    return requests.get(clew.tempo + path, params=params, timeout=30)


def span_ids(resource_spans):
    return sorted(span["spanId"] for rs in resource_spans for ss in rs["scopeSpans"] for span in ss["spans"])


def first_field(message):
    """The bytes of field 1 of a protobuf message (a length-delimited submessage)."""
    assert message[0] == 0x0A
    length, shift, position = 0, 0, 1
    while True:
        byte = message[position]
        length |= (byte & 0x7F) << shift
        position += 1
        shift += 7
        if byte < 0x80:
            break
    return message[position:position + length]


def test_trace_by_id(clew):
    seed(clew)
    assert tempo(clew, "/api/echo").text == "echo"
    assert tempo(clew, "/ready").status_code == 200
    assert "version" in tempo(clew, "/api/status/buildinfo").json()

    body = tempo(clew, f"/api/traces/{TRACE}").json()
    assert set(body) == {"batches"}
    assert span_ids(body["batches"]) == ["00f067aa0ba902b7", "1111111111111111", "2222222222222222", "eee19b7ec3c1b174"]
    services = sorted(a["value"]["stringValue"] for rs in body["batches"] for a in rs["resource"]["attributes"] if a["key"] == "service.name")
    assert services == ["backend", "frontend"]

    response = requests.get(f"{clew.tempo}/api/traces/{TRACE}", headers={"Accept": "application/protobuf"}, timeout=10)
    assert response.headers["content-type"] == "application/protobuf"
    data = TracesData()
    data.ParseFromString(response.content)
    spans = [span for rs in data.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert sorted(span.span_id.hex() for span in spans) == span_ids(body["batches"])
    assert all(span.trace_id.hex() == TRACE for span in spans)

    v2 = tempo(clew, f"/api/v2/traces/{TRACE}").json()
    assert span_ids(v2["trace"]["resourceSpans"]) == span_ids(body["batches"])
    response = requests.get(f"{clew.tempo}/api/v2/traces/{TRACE}", headers={"Accept": "application/protobuf"}, timeout=10)
    data = TracesData()
    data.ParseFromString(first_field(response.content))
    assert len([s for rs in data.resource_spans for ss in rs.scope_spans for s in ss.spans]) == 4
    # q picks spans; their ancestors stay unless keep_hierarchy=false.
    picked = tempo(clew, f"/api/v2/traces/{TRACE}", q='{ name = "SELECT stock" }').json()
    assert span_ids(picked["trace"]["resourceSpans"]) == span_ids(body["batches"])
    alone = tempo(clew, f"/api/v2/traces/{TRACE}", q='{ name = "SELECT stock" }', keep_hierarchy="false").json()
    assert span_ids(alone["trace"]["resourceSpans"]) == ["2222222222222222"]
    assert tempo(clew, f"/api/v2/traces/{TRACE}", q="{ } | count() > 1").status_code == 400

    assert tempo(clew, "/api/traces/" + "f" * 32).status_code == 404
    assert tempo(clew, "/api/traces/xyz").status_code == 400


def found(clew, **params):
    response = tempo(clew, "/api/search", **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metrics"]["inspectedTraces"] >= len(body["traces"])
    return body["traces"]


def test_traceql_search(clew):
    seed(clew)
    traces = found(clew, q='{ resource.service.name = "backend" && status = error }')
    assert len(traces) == 1
    trace = traces[0]
    assert trace["traceID"] == TRACE and trace["rootServiceName"] == "frontend" and trace["rootTraceName"] == "GET /checkout"
    assert trace["durationMs"] == 80 and trace["startTimeUnixNano"].isdigit()
    spanset = trace["spanSets"][0]
    assert spanset["matched"] == 1 and trace["spanSet"] == spanset
    span = spanset["spans"][0]
    assert span["spanID"] == "1111111111111111" and span["durationNanos"] == "46000000"
    assert {"key": "service.name", "value": {"stringValue": "backend"}} in span["attributes"]

    def ids(q, **params):
        return [t["traceID"] for t in found(clew, q=q, **params)]

    assert ids('{ resource.service.name = "frontend" } >> { span.db.system = "postgresql" }') == [TRACE]
    assert ids('{ resource.service.name = "backend" } >> { resource.service.name = "frontend" }') == []
    assert ids('{ kind = client } > { kind = server && resource.service.name = "backend" }') == [TRACE]
    assert ids("{ } | count() > 3") == [TRACE]
    assert ids("{ } | count() > 4") == []
    assert ids("{ span.http.response.status_code = 200 && duration > 50ms }") == [TRACE]
    assert ids("{ trace:duration > 1s }") == []
    assert ids('{ name =~ "POST.*" } | by(resource.service.name) | count() = 1') == [TRACE]
    grouped = found(clew, q='{ name =~ "POST.*" } | by(resource.service.name)')[0]["spanSets"]
    assert sorted(s["attributes"][0]["value"]["stringValue"] for s in grouped) == ["backend", "frontend"]
    bad = tempo(clew, "/api/search", q="{ name = }")
    assert bad.status_code == 400 and "column 10" in bad.text

    # Tag search, as older Grafana versions send it.
    assert [t["traceID"] for t in found(clew, tags='service.name="frontend"')] == [TRACE]
    assert [t["traceID"] for t in found(clew, tags="http.route=/checkout", minDuration="70ms")] == [TRACE]
    assert found(clew, tags="http.route=/checkout", minDuration="100ms") == []
    assert [t["traceID"] for t in found(clew, tags="error=true")] == [TRACE]

    # The same TraceQL through Clew's own API.
    native = clew.get("/api/v1/search", q='{ span.peer.service = "postgres" }').json()
    assert [t["trace_id"] for t in native["traces"]] == [TRACE]
    assert native["traces"][0]["spansets"][0]["spans"][0]["span_id"] == "2222222222222222"
    assert clew.get("/api/v1/search", q="{ nope").status_code == 400


def test_tags_and_values(clew):
    seed(clew)
    names = tempo(clew, "/api/search/tags").json()["tagNames"]
    assert {"http.route", "host.name", "db.system", "service.name"} <= set(names)
    assert set(tempo(clew, "/api/search/tags", scope="resource").json()["tagNames"]) == {"host.name", "service.name"}
    scopes = {s["name"]: s["tags"] for s in tempo(clew, "/api/v2/search/tags").json()["scopes"]}
    assert set(scopes) == {"resource", "span", "intrinsic"}
    assert "host.name" in scopes["resource"] and "http.route" in scopes["span"] and "name" in scopes["intrinsic"]
    assert tempo(clew, "/api/search/tag/service.name/values").json()["tagValues"] == ["backend", "frontend"]
    values = tempo(clew, "/api/v2/search/tag/resource.service.name/values").json()["tagValues"]
    assert values == [{"type": "string", "value": "backend"}, {"type": "string", "value": "frontend"}]
    statuses = tempo(clew, "/api/v2/search/tag/status/values").json()["tagValues"]
    assert {"type": "keyword", "value": "error"} in statuses
    names = [v["value"] for v in tempo(clew, "/api/v2/search/tag/name/values").json()["tagValues"]]
    assert sorted(names) == ["GET /checkout", "POST /reserve", "SELECT stock"]
    assert tempo(clew, "/api/v2/search/tags", scope="bogus").status_code == 400


# ---- the streaming gRPC API on the Tempo port (what Grafana uses when streaming is on) ----

@pytest.fixture(scope="module")
def tempopb(tmp_path_factory):
    """tempopb's streaming querier, compiled from a transcription of Tempo's tempo.proto."""
    _, (messages, services) = compile_protos(tmp_path_factory.mktemp("tempopb"), "tempopb_common", "tempo_streaming")
    return messages, services


def streaming(clew, services):
    channel = grpc.insecure_channel(clew.tempo.removeprefix("http://"))
    return channel, services.StreamingQuerierStub(channel)


def test_streaming_search_answers_as_the_http_search(clew, tempopb):
    pb, services = tempopb
    seed(clew)
    channel, stub = streaming(clew, services)
    with channel:
        q = '{ resource.service.name = "backend" && status = error }'
        messages = list(stub.Search(pb.SearchRequest(Query=q, Limit=20), timeout=30))
        assert messages, "the stream ended without an answer"
        last = messages[-1]
        # Earlier messages carry traces as they are found; the last one has the whole result.
        final_ids = [t.traceID for t in last.traces]
        assert all(t.traceID in final_ids for m in messages[:-1] for t in m.traces)
        assert last.metrics.completedJobs == last.metrics.totalJobs >= 1
        assert last.metrics.inspectedTraces >= 1
        http = found(clew, q=q)
        assert final_ids == [t["traceID"] for t in http] == [TRACE]
        trace = last.traces[0]
        assert trace.rootServiceName == "frontend" and trace.rootTraceName == "GET /checkout" and trace.durationMs == 80
        assert trace.startTimeUnixNano == int(http[0]["startTimeUnixNano"])
        (spanset,) = trace.spanSets
        assert spanset.matched == 1 and trace.spanSet == spanset
        (span,) = spanset.spans
        assert span.spanID == "1111111111111111" and span.name == "POST /reserve" and span.durationNanos == 46_000_000
        attributes = {a.key: a.value.string_value for a in span.attributes}
        assert attributes["service.name"] == "backend"

        # A tag search (no Query), with its duration bounds in milliseconds.
        def ids(**request):
            return [t.traceID for t in list(stub.Search(pb.SearchRequest(**request), timeout=30))[-1].traces]

        assert ids(Tags={"service.name": "frontend"}) == [TRACE]
        assert ids(Tags={"http.route": "/checkout"}, MinDurationMs=70) == [TRACE]
        assert ids(Tags={"http.route": "/checkout"}, MinDurationMs=100) == []
        assert ids(Query="{ } | count() > 3", start=int(time.time()) - 600, end=int(time.time()) + 60) == [TRACE]
        assert ids(Query="{ } | count() > 3", start=int(time.time()) - 600, end=int(time.time()) - 300) == []

        # A query that does not parse: INVALID_ARGUMENT, pointing at the column.
        with pytest.raises(grpc.RpcError) as bad:
            list(stub.Search(pb.SearchRequest(Query="{ name = }"), timeout=30))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "column 10" in bad.value.details()
    # The HTTP API on the same port still answers.
    assert tempo(clew, "/api/echo").text == "echo"


def test_streaming_tags_values_and_metrics(clew, tempopb):
    pb, services = tempopb
    t0 = seed(clew)
    channel, stub = streaming(clew, services)
    with channel:
        (tags,) = list(stub.SearchTags(pb.SearchTagsRequest(scope="resource"), timeout=30))
        assert set(tags.tagNames) == set(tempo(clew, "/api/search/tags", scope="resource").json()["tagNames"]) == {"host.name", "service.name"}
        (scoped,) = list(stub.SearchTagsV2(pb.SearchTagsRequest(), timeout=30))
        http_scopes = {s["name"]: s["tags"] for s in tempo(clew, "/api/v2/search/tags").json()["scopes"]}
        assert {s.name: list(s.tags) for s in scoped.scopes} == http_scopes

        # Values narrowed by a TraceQL filter: only the service with database calls.
        q = '{ span.db.system = "postgresql" }'
        (narrowed,) = list(stub.SearchTagValuesV2(pb.SearchTagValuesRequest(tagName="resource.service.name", query=q), timeout=30))
        assert [(v.type, v.value) for v in narrowed.tagValues] == [("string", "backend")]
        http = tempo(clew, "/api/v2/search/tag/resource.service.name/values", q=q).json()["tagValues"]
        assert http == [{"type": "string", "value": "backend"}]
        (everything,) = list(stub.SearchTagValues(pb.SearchTagValuesRequest(tagName="service.name", query="{}"), timeout=30))
        assert list(everything.tagValues) == ["backend", "frontend"]
        names = tempo(clew, "/api/v2/search/tag/name/values", q='{ resource.service.name = "frontend" }').json()["tagValues"]
        assert sorted(v["value"] for v in names) == ["GET /checkout", "POST /reserve"]
        # The query being typed: its complete conditions narrow, the unfinished one is left out;
        # nothing complete lists every value.
        typing = tempo(clew, "/api/v2/search/tag/name/values", q='{ resource.service.name = "frontend" && span.http.route = }')
        assert sorted(v["value"] for v in typing.json()["tagValues"]) == ["GET /checkout", "POST /reserve"]
        (typed,) = list(stub.SearchTagValues(pb.SearchTagValuesRequest(tagName="name", query='{ resource.service.name = "backend" && kind = '),
                                             timeout=30))
        assert sorted(typed.tagValues) == ["POST /reserve", "SELECT stock"]
        unfinished = tempo(clew, "/api/v2/search/tag/name/values", q="{ nope").json()["tagValues"]
        assert sorted(v["value"] for v in unfinished) == ["GET /checkout", "POST /reserve", "SELECT stock"]

        # TraceQL metrics: the same series as the HTTP range query, over the seeded spans.
        start, end = t0 - 120_000_000_000, t0 + 120_000_000_000
        (ranged,) = list(stub.MetricsQueryRange(pb.QueryRangeRequest(query="{ } | count_over_time()", start=start, end=end,
                                                                      step=60_000_000_000), timeout=30))
        (series,) = ranged.series
        assert [(l.key, l.value.string_value) for l in series.labels] == [("__name__", "count_over_time")]
        assert sum(s.value for s in series.samples) >= 4
        http = tempo(clew, "/api/metrics/query_range", q="{ } | count_over_time()", start=str(start), end=str(end), step="60s").json()
        assert [(int(s["timestampMs"]), s["value"]) for s in http["series"][0]["samples"]] == \
            [(s.timestamp_ms, s.value) for s in series.samples]
        (instant,) = list(stub.MetricsQueryInstant(pb.QueryInstantRequest(query='{ resource.service.name = "backend" } | count_over_time()',
                                                                          start=start, end=end), timeout=30))
        assert [s.value for s in instant.series] == [2.0]
        with pytest.raises(grpc.RpcError) as bad:
            list(stub.MetricsQueryRange(pb.QueryRangeRequest(query="{ } | rate()", start=end, end=start), timeout=30))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_streaming_search_sends_traces_as_it_finds_them(clew, tempopb):
    """More traces than one page of candidates: the traces come in several messages, each new,
    and the last message holds the whole result, limited as asked."""
    pb, services = tempopb
    now = time.time_ns() - 5_000_000_000
    traces = [f"5ca1ab1e{index + 1:024x}" for index in range(450)]
    spans = [{"traceId": trace, "spanId": f"{index + 1:016x}", "name": "GET /page", "kind": 2,
              "startTimeUnixNano": str(now + index * 1_000_000),
              # Every third request is slow (30 ms); the others take 5 ms.
              "endTimeUnixNano": str(now + index * 1_000_000 + (30_000_000 if index % 3 == 0 else 5_000_000))}
             for index, trace in enumerate(traces)]
    post_otlp(clew, [{"resource": {"attributes": [kv("service.name", stringValue="pager")]}, "scopeSpans": [{"spans": spans}]}])
    wait_for_trace(clew, traces[-1], 1)
    wait_for_trace(clew, traces[0], 1)
    channel, stub = streaming(clew, services)
    with channel:
        q = '{ resource.service.name = "pager" }'
        messages = list(stub.Search(pb.SearchRequest(Query=q, Limit=300), timeout=60))
        assert len(messages) >= 3, [len(m.traces) for m in messages]
        progress = [t.traceID for m in messages[:-1] for t in m.traces]
        final = [t.traceID for t in messages[-1].traces]
        assert len(progress) == len(set(progress)) == 300, "each trace is sent once as it is found"
        assert sorted(progress) == sorted(final) and len(final) == 300
        assert set(final) <= set(traces)
        assert [m.metrics.completedJobs for m in messages] == sorted(m.metrics.completedJobs for m in messages)
        assert messages[-1].metrics.completedJobs == messages[-1].metrics.totalJobs >= 2
        http = [t["traceID"] for t in found(clew, q=q, limit="300")]
        assert http == final

        # Duration bounds with a limit: only slow traces, at most the limit, across messages too.
        slow = {trace for index, trace in enumerate(traces) if index % 3 == 0}
        messages = list(stub.Search(pb.SearchRequest(Query=q, Limit=120, MinDurationMs=20), timeout=60))
        final = [t.traceID for t in messages[-1].traces]
        assert len(final) == 120 and set(final) <= slow
        progress = [t.traceID for m in messages[:-1] for t in m.traces]
        assert len(progress) <= 120 and set(progress) <= set(final)
