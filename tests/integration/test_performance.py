"""Performance analytics against the demo shop with planted causes: the critical path across
traces names the slow dependency, the comparison with a baseline window finds the N+1 loop a
deploy brought in, and traffic estimation reproduces the shop's own fan-outs. The shop sends
twenty minutes of history first (the deploy half way through), so the windows below are in
the past and hold a known amount of traffic."""
import json
import math
import os
import subprocess
import time

import pytest
import requests

from conftest import CLEW_BIN, running_demo
from test_ui import SHOTS, browser, page  # noqa: F401 (fixtures)

RATE = 20
HISTORY_MINUTES = 20
MINUTE = 60_000_000_000


@pytest.fixture(scope="module")
def shop():
    truth = json.loads(subprocess.run([CLEW_BIN, "demo", "--print-truth", "--incidents", "--history", "20m"],
                                      capture_output=True, check=True).stdout)
    started = time.time_ns()

    def ready(base):
        # Every trace of the history is assembled: about RATE × the history's seconds of them
        # (more: a callee that drops the context starts traces of its own), and as many per
        # second of the load test.
        def requests_of(traffic):
            params = {"lookback": "25m", "traffic": traffic}
            return requests.get(base + "/api/v1/bottlenecks", params=params, timeout=30).json()["requests"]
        load_test = truth["load_test"]
        test_seconds = (load_test["end_unix_nano"] - load_test["start_unix_nano"]) / 1e9
        return requests_of("production") >= 0.97 * RATE * HISTORY_MINUTES * 60 and \
            requests_of("load-test") >= 0.97 * RATE * load_test["rate_factor"] * test_seconds

    with running_demo("--rate", str(RATE), "--history", f"{HISTORY_MINUTES}m", "--incidents", ready=ready,
                      timeout=240) as base:
        # The deploy happened half way through the history: one window well before it and one
        # well after it, both in the past, so they hold exactly what the history sent.
        deploy = started - HISTORY_MINUTES * MINUTE // 2
        windows = {
            "before": (deploy - 9 * MINUTE, deploy - MINUTE),
            "after": (deploy + MINUTE, deploy + 9 * MINUTE),
        }
        yield base, truth, windows


def get(base, path, **params):
    response = requests.get(base + path, params=params, timeout=60)
    assert response.status_code == 200, response.text
    return response


def window_params(window):
    return {"start": str(window[0]), "end": str(window[1])}


def test_traffic_estimation_reproduces_the_fan_out_of_the_shop(shop):
    base, truth, windows = shop
    for window, expected_fan_out in (("before", truth["fan_out"]),
                                     ("after", truth["incidents"]["fan_out_after_deploy"])):
        estimate = get(base, "/api/v1/traffic-estimate", **window_params(windows[window])).json()
        entries = {f"{e['service']} {e['operation']}": e for e in estimate["entries"]}
        for entry, expected in expected_fan_out.items():
            seen = entries[entry]
            requests_seen = seen["requests"]
            assert requests_seen >= 300, (window, entry, requests_seen)
            got = {f"{f['service']} {f['operation']}": f["mean_per_request"] for f in seen["fan_out"]}
            assert set(got) <= set(expected), (window, entry, set(got) - set(expected))
            for target, mean in expected.items():
                # Within 5% of the shop's own multiplier, unless the sample is too small for
                # that: then within five standard errors of a count of that mean.
                tolerance = max(0.05 * mean, 5 * math.sqrt(mean / requests_seen))
                assert abs(got.get(target, 0.0) - mean) <= tolerance, (window, entry, target, got.get(target), mean)
    # The N+1 loop shows as a larger multiplier after the deploy.
    before = get(base, "/api/v1/traffic-estimate", **window_params(windows["before"])).json()
    after = get(base, "/api/v1/traffic-estimate", **window_params(windows["after"])).json()

    def pricing(estimate):
        entry = next(e for e in estimate["entries"] if (e["service"], e["operation"]) == ("web-gateway", "GET /product/{id}"))
        return next(f["mean_per_request"] for f in entry["fan_out"] if f["service"] == "pricing-service")

    assert pricing(after) > 4 * pricing(before), (pricing(before), pricing(after))


def test_traffic_estimation_projects_a_planned_peak(shop):
    base, truth, windows = shop
    params = {**window_params(windows["before"]), "plan": "100/s web-gateway POST /checkout", "others": "2"}
    estimate = get(base, "/api/v1/traffic-estimate", **params).json()
    assert estimate["plan"] == [{"service": "web-gateway", "operation": "POST /checkout", "per_second": 100.0}]
    assert estimate["observed_seconds"] >= 8 * 60
    targets = {(t["service"], t["operation"]): t for t in estimate["targets"]}
    checkout = targets[("checkout-service", "POST /checkout")]
    # Only checkouts reach the checkout service, once each: 100/s planned, nothing else.
    assert abs(checkout["planned_per_second"] - 100.0) < 1e-6 and checkout["background_per_second"] == 0
    assert checkout["scale"] and checkout["headroom"] < 1 and "checkout-service" in estimate["scale_services"]
    # Every expected rate is the plan through the fan-out plus twice the other entries' rates.
    entries = {(e["service"], e["operation"]): e for e in estimate["entries"]}
    for target in estimate["targets"]:
        expected = 0.0
        for entry in estimate["entries"]:
            rate = 100.0 if (entry["service"], entry["operation"]) == ("web-gateway", "POST /checkout") \
                else 2 * entry["observed_mean_per_second"]
            expected += rate * sum(f["mean_per_request"] for f in entry["fan_out"]
                                   if (f["service"], f["operation"], f["kind"]) == (target["service"], target["operation"], target["kind"]))
        assert abs(target["expected_per_second"] - expected) <= 1e-6 * max(1.0, expected), target
        assert target["scale"] == (target["expected_per_second"] > target["observed_peak_per_second"])
    # The shop's own traffic at today's rate fits what it handled: nothing to scale.
    today = get(base, "/api/v1/traffic-estimate", **window_params(windows["before"])).json()
    assert today["scale_services"] == [], today["scale_services"]
    assert entries[("web-gateway", "POST /checkout")]["observed_peak_per_second"] >= \
        entries[("web-gateway", "POST /checkout")]["observed_mean_per_second"]
    # The same as CSV, and a plan that cannot be read is refused with the form it should take.
    csv = get(base, "/api/v1/traffic-estimate", **params, format="csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("service,operation,kind,expected_per_second")
    assert any(line.startswith('"checkout-service","POST /checkout"') for line in csv.text.splitlines())
    bad = requests.get(base + "/api/v1/traffic-estimate", params={"plan": "fast web-gateway"}, timeout=30)
    assert bad.status_code == 400 and "<rate> <service> <operation>" in bad.json()["error"]["message"]
    unknown = get(base, "/api/v1/traffic-estimate", plan="5 nobody GET /").json()
    assert any("nobody GET /" in w for w in unknown["warnings"])


def test_load_tests_are_left_out_isolated_and_measured_against_expected(shop):
    base, truth, windows = shop
    load_test = truth["load_test"]
    # The load test runs inside the window before the deploy.
    assert windows["before"][0] <= load_test["start_unix_nano"] < load_test["end_unix_nano"] <= windows["before"][1]
    test_traces = RATE * load_test["rate_factor"] * (load_test["end_unix_nano"] - load_test["start_unix_nano"]) / 1e9
    params = window_params(windows["before"])

    # The default estimate reads production traffic, and says which sources the window holds.
    production = get(base, "/api/v1/traffic-estimate", **params).json()
    assert production["traffic"] == "production"
    sources = {s["source"]: s for s in production["sources"]}
    assert sources[load_test["source"]]["load_test"] and not sources[""]["load_test"]
    assert abs(sources[load_test["source"]]["requests"] - test_traces) <= 0.03 * test_traces, sources

    def payments_per_checkout(estimate):
        entry = next(e for e in estimate["entries"] if (e["service"], e["operation"]) == ("web-gateway", "POST /checkout"))
        return sum(f["mean_per_request"] for f in entry["fan_out"] if f["service"] == load_test["mocked"])

    # Production checkouts pay once; with the load test's mocked payments mixed in, fewer do.
    assert abs(payments_per_checkout(production) - 1.0) < 0.05
    everything = get(base, "/api/v1/traffic-estimate", **params, traffic="all").json()
    assert payments_per_checkout(everything) < 0.8 * payments_per_checkout(production)
    # Isolated, the load test is only its entry operations, in equal shares, and never pays.
    isolated = get(base, "/api/v1/traffic-estimate", **params, traffic="load-test").json()
    entries = {f"{e['service']} {e['operation']}": e["requests"] for e in isolated["entries"]}
    assert set(entries) == set(load_test["entries"]), entries
    assert abs(sum(entries.values()) - test_traces) <= 0.03 * test_traces
    assert payments_per_checkout(isolated) == 0

    # Measured against expected: the test's entry rates through production's fan-out.
    measured = get(base, "/api/v1/traffic-estimate", **params, measure="load-test").json()
    summary = measured["load_test"]
    assert abs(summary["requests"] - test_traces) <= 0.03 * test_traces
    assert {f"{e['service']} {e['operation']}" for e in summary["entries"]} == set(load_test["entries"])
    targets = {f"{t['service']} {t['operation']}": t for t in measured["targets"]}
    fan_out = truth["fan_out"]
    production_requests = {f"{e['service']} {e['operation']}": e["requests"] for e in production["entries"]}
    reached = set()
    for entry in summary["entries"]:
        reached |= set(fan_out[f"{entry['service']} {entry['operation']}"])
    for operation in sorted(reached):
        target = targets[operation]
        # What the shop's own fan-out makes of the measured entry rates.
        # Within 5%, or five standard errors of the production multipliers it is made of.
        expected, error = 0.0, 0.0
        for e in summary["entries"]:
            name = f"{e['service']} {e['operation']}"
            mean = fan_out[name].get(operation, 0.0)
            expected += e["per_second"] * mean
            error += e["per_second"] * math.sqrt(mean / production_requests[name])
        assert abs(target["expected_per_second"] - expected) <= max(0.05 * expected, 5 * error), (operation, target, expected)
        verdict = target["measured"]["verdict"]
        if operation in load_test["mocked_operations"]:
            assert verdict == "not reached" and target["measured"]["per_second"] == 0, (operation, target)
            assert operation in summary["not_reached"]
        else:
            assert verdict == "as expected", (operation, target["measured"], expected)
    assert set(summary["not_reached"]) == set(load_test["mocked_operations"])
    # The shop does not slow down under load: no bottleneck is claimed.
    assert summary["slower"] == [], summary["slower"]
    assert measured["targets"][0]["measured"]["verdict"] == "not reached", "the furthest from expectation first"
    # The same from the command line; a plan and a measured load test do not go together.
    out = subprocess.run([CLEW_BIN, "traffic", "--measure-load-test", "--lookback", "1h", "--server", base],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert any(load_test["mocked"] in line and "not reached" in line for line in out.stdout.splitlines()), out.stdout
    bad = requests.get(base + "/api/v1/traffic-estimate", params={"measure": "load-test", "plan": "5 web-gateway GET /"}, timeout=30)
    assert bad.status_code == 400 and "plan" in bad.json()["error"]["message"]
    bad = requests.get(base + "/api/v1/traffic-estimate", params={"traffic": "tests"}, timeout=30)
    assert bad.status_code == 400 and "source:<name>" in bad.json()["error"]["message"]
    # The critical path of the load test alone: its requests only, and no payment on it.
    report = get(base, "/api/v1/bottlenecks", **params, traffic="load-test").json()
    assert abs(report["requests"] - test_traces) <= 0.03 * test_traces
    assert all(b["service"] != load_test["mocked"] for b in report["bottlenecks"])


def test_critical_path_names_the_slow_dependency(shop):
    base, truth, windows = shop
    slow = truth["incidents"]["slow_dependency"]
    report = get(base, "/api/v1/critical-path", service="web-gateway", operation="GET /",
                 **window_params(windows["before"])).json()
    assert report["latency"]["requests"] >= 300
    assert report["bottlenecks"][0]["service"] == slow, report["bottlenecks"][:3]
    assert report["bottlenecks"][0]["share"] > 0.3
    # A flame graph: the request first, each context within its caller's width.
    nodes = {n["id"]: n for n in report["nodes"]}
    root = report["nodes"][0]
    assert root["parent"] is None and root["kind"] == "request"
    assert abs(root["total_per_request_nanos"] - report["latency"]["mean_nanos"]) <= 1e-6 * root["total_per_request_nanos"]
    for node in report["nodes"][1:]:
        parent = nodes[node["parent"]]
        assert node["depth"] == parent["depth"] + 1
        assert node["total_per_request_nanos"] <= parent["total_per_request_nanos"] * 1.000001 + 1, (node, parent)
    children = {}
    for node in report["nodes"][1:]:
        children.setdefault(node["parent"], []).append(node)
    for parent_id, kids in children.items():
        inside = sum(k["total_per_request_nanos"] for k in kids)
        assert inside <= nodes[parent_id]["total_per_request_nanos"] * 1.000001 + 1
    # Its own time on the critical path is the largest of any context, and saving 20% of it
    # saves 20% of its share.
    recommendations = [n for n in report["nodes"] if n["service"] == slow and n["kind"] == "server"]
    assert recommendations and max(report["nodes"][1:], key=lambda n: n["self_per_request_nanos"])["service"] == slow
    top = report["bottlenecks"][0]
    assert abs(top["saved_per_request_nanos"] - 0.2 * top["per_request_nanos"]) < 1e-6 * top["per_request_nanos"]
    # Folded stacks for flame-graph tools: `request;frame;... value`.
    folded = get(base, "/api/v1/critical-path", service="web-gateway", operation="GET /", format="folded",
                 **window_params(windows["before"])).text
    lines = folded.splitlines()
    assert lines and all(line.startswith("request") and line.rsplit(" ", 1)[1].isdigit() for line in lines)
    assert any(f"{slow}:GET /recommendations " in line for line in lines)
    # Over every entry operation too.
    bottlenecks = get(base, "/api/v1/bottlenecks", **window_params(windows["before"])).json()
    assert bottlenecks["bottlenecks"][0]["service"] == slow
    assert "web-gateway GET /" in bottlenecks["bottlenecks"][0]["entry_operations"]
    bad = requests.get(base + "/api/v1/critical-path", params={"service": "web-gateway"}, timeout=30)
    assert bad.status_code == 400 and "operation" in bad.json()["error"]["message"]


def test_comparison_with_a_baseline_finds_the_n_plus_one(shop):
    base, truth, windows = shop
    shift = windows["after"][0] - windows["before"][0]
    report = get(base, "/api/v1/critical-path", service="web-gateway", operation="GET /product/{id}",
                 baseline=str(shift), **window_params(windows["after"])).json()
    baseline = report["baseline"]
    assert (baseline["start_unix_nano"], baseline["end_unix_nano"]) == windows["before"]
    changes = baseline["changes"]
    assert changes[0]["change_nanos"] > 0
    service, callee = truth["incidents"]["n_plus_one"][0], truth["incidents"]["n_plus_one"][2]
    callee_service, callee_operation = callee.split(" ", 1)
    price = next(c for c in changes if (c["service"], c["operation"], c["kind"]) == (callee_service, callee_operation, "server"))
    ratio = price["after_calls_per_request"] / price["before_calls_per_request"]
    before, after = truth["incidents"]["n_plus_one"][3], truth["incidents"]["n_plus_one"][4]
    assert abs(ratio - after / before) <= 0.1 * after / before, ratio
    assert price["change_nanos"] > 0
    # What got slower is the loop the deploy brought in: the top changes are all in it.
    assert {c["service"] for c in changes[:3]} <= {service, callee_service, "currency-service"}, changes[:3]
    assert report["latency"]["p95_nanos"] > baseline["latency"]["p95_nanos"]
    text = get(base, "/api/v1/critical-path", service="web-gateway", operation="GET /product/{id}",
               baseline=str(shift), format="markdown", **window_params(windows["after"])).text
    assert "Against the baseline" in text and callee_service in text


def test_critical_path_and_traffic_pages(shop, page):  # noqa: F811 (fixture)
    base, truth, windows = shop
    entry = "web-gateway\u0000GET /"
    page.goto(f"{base}/critical-path?lookback=1h&entry={requests.utils.quote(entry)}")
    page.wait_for_selector("[data-testid=cp-bottleneck]", timeout=30_000)
    first = page.locator("[data-testid=cp-bottleneck]").first
    assert first.get_attribute("data-service") == truth["incidents"]["slow_dependency"]
    assert page.locator("[data-testid=cp-flame] canvas").count() >= 1
    page.select_option("[data-testid=cp-baseline]", "previous")
    page.wait_for_selector("[data-testid=cp-change]", timeout=30_000)
    page.screenshot(path=os.path.join(SHOTS, "critical-path.png"), full_page=True)

    page.goto(f"{base}/traffic?lookback=15m")
    page.wait_for_selector("[data-testid=traffic-target]", timeout=30_000)
    assert page.locator("[data-testid=traffic-plan] li").count() == 0
    options = page.locator("[data-testid=traffic-entry] option").all_text_contents()
    checkout = next(o for o in options if o.startswith("web-gateway POST /checkout"))
    page.select_option("[data-testid=traffic-entry]", label=checkout)
    page.fill("[data-testid=traffic-rate]", "200")
    page.click("[data-testid=traffic-add]")
    page.wait_for_selector("[data-testid=traffic-plan] li", timeout=10_000)
    page.wait_for_selector("[data-testid=traffic-target][data-service=checkout-service][data-scale=yes]", timeout=30_000)
    assert "checkout-service" in page.locator("[data-testid=traffic-summary]").inner_text()
    assert page.locator("[data-testid=traffic-chart] canvas").count() >= 1
    assert page.locator("[data-testid=traffic-graph] canvas").count() >= 1
    page.screenshot(path=os.path.join(SHOTS, "traffic.png"), full_page=True)
    # During a load test, the same page measures it against what production's fan-out expects.
    mocked = truth["load_test"]["mocked"]
    page.goto(f"{base}/traffic?lookback=1h&measure=load-test")
    page.wait_for_selector(f"[data-testid=loadtest-target][data-service={mocked}][data-verdict='not reached']", timeout=30_000)
    assert mocked in page.locator("[data-testid=loadtest-not-reached]").inner_text()
    assert "load test" in page.locator("[data-testid=traffic-sources]").inner_text()
    assert page.locator("[data-testid=loadtest-chart] canvas").count() >= 1
    page.screenshot(path=os.path.join(SHOTS, "traffic-load-test.png"), full_page=True)


def test_metrics_for_prometheus(shop):
    base, truth, windows = shop
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    estimate = get(base, "/api/v1/traffic-estimate", lookback="1h").json()
    checkout_requests = next(e["requests"] for e in estimate["entries"]
                             if (e["service"], e["operation"]) == ("web-gateway", "POST /checkout"))
    response = get(base, "/metrics")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    calls = families["traces_spanmetrics_calls"]
    assert calls.type == "counter"
    per_series = {}
    for sample in calls.samples:
        labels = sample.labels
        key = (labels["service"], labels["span_name"], labels["span_kind"])
        per_series[key] = per_series.get(key, 0) + sample.value
        assert labels["status_code"] in ("STATUS_CODE_UNSET", "STATUS_CODE_ERROR")
    # Every trace of the history is in, so each entry operation has about its share of them.
    checkouts = per_series[("web-gateway", "POST /checkout", "SPAN_KIND_SERVER")]
    assert checkouts >= 0.95 * checkout_requests > 0, (checkouts, checkout_requests)
    errors = [s for s in calls.samples if s.labels["status_code"] == "STATUS_CODE_ERROR"
              and s.labels["service"] == truth["incidents"]["erroring_version"][0]]
    assert errors and sum(s.value for s in errors) > 0
    # The latency histogram counts the same spans, in buckets that only grow.
    latency = families["traces_spanmetrics_latency"]
    assert latency.type == "histogram"
    counts, buckets = {}, {}
    for sample in latency.samples:
        labels = sample.labels
        key = (labels["service"], labels["span_name"], labels["span_kind"])
        if sample.name.endswith("_count"):
            counts[key] = sample.value
        elif sample.name.endswith("_bucket"):
            buckets.setdefault(key, []).append((float(labels["le"]), sample.value))
    assert counts == per_series
    for key, series in buckets.items():
        values = [v for _, v in sorted(series)]
        assert values == sorted(values) and values[-1] == counts[key], key
    # The service graph: calls between services, from the user, and to uninstrumented peers.
    requests_total = {(s.labels["client"], s.labels["server"], s.labels["connection_type"]): s.value
                      for s in families["traces_service_graph_request"].samples}
    assert requests_total[("checkout-service", "payment-service", "")] > 0
    assert requests_total[("user", "web-gateway", "")] > 0
    virtual = {server for (_, server, kind) in requests_total if kind == "virtual_node"}
    assert "payment-provider" in virtual, virtual
    assert families["traces_service_graph_request_server_seconds"].type == "histogram"
    # Clew's own health.
    assert families["clew_spans_accepted"].samples[0].value > 0
    assert families["clew_traces_assembled"].samples[0].value >= RATE * HISTORY_MINUTES * 60 * 0.97
    assert {s.labels["reason"] for s in families["clew_requests_refused"].samples} == {"malformed", "too_large", "unavailable"}
    assert families["clew_block_bytes"].type == "gauge"


def test_correlations_rank_the_planted_causes_first(shop):
    base, truth, windows = shop
    # Search is slow in one region: its slow spans are that region's.
    service, region, extra_ms = truth["incidents"]["slow_region"]
    report = get(base, "/api/v1/correlations", service=service, operation="GET /search", kind="server",
                 min_duration=f"{int(extra_ms)}ms", **window_params(windows["before"])).json()
    assert report["selected"] > 50 and report["baseline"] > 50, report["warnings"]
    first = report["correlations"][0]
    assert (first["key"], first["value"]) == ("span.cloud.region", region), report["correlations"][:3]
    assert first["significant"] and first["score"] > 0.5
    assert report["attributes"][0]["key"] == "span.cloud.region"
    others = [c for c in report["correlations"] if c["key"] == "span.cloud.region" and c["value"] != region]
    assert others and all(c["score"] < 0 for c in others)
    assert sum(count for _, count in report["latency"]) == report["selected"] + report["baseline"]
    # One version of the cart fails: its failures are that version's. Over both sides of the
    # deploy, so that the old version is the baseline.
    service, version, _ = truth["incidents"]["erroring_version"]
    window = (windows["before"][0], windows["after"][1])
    # Its requests (SERVER spans): its client spans would compare spans of another kind.
    report = get(base, "/api/v1/correlations", service=service, kind="server", errors="true", **window_params(window)).json()
    first = report["correlations"][0]
    assert (first["key"], first["value"]) == ("resource.service.version", version), report["correlations"][:3]
    assert first["significant"]
    assert not any(c["key"].startswith("span.http.response.status_code") for c in report["correlations"])
    text = get(base, "/api/v1/correlations", service=service, kind="server", errors="true", format="table",
               **window_params(window)).text
    assert version in text
    for params, message in (({"service": service}, "selection"),
                            ({"service": service, "errors": "true", "min_duration": "1ms"}, "not several"),
                            ({"service": service, "min_duration": "5ms", "max_duration": "1ms"}, "below")):
        bad = requests.get(base + "/api/v1/correlations", params=params, timeout=30)
        assert bad.status_code == 400 and message in bad.json()["error"]["message"], bad.text


def test_correlations_page_brushes_a_latency_range(shop, page):  # noqa: F811 (fixture)
    base, truth, windows = shop
    service, region, _ = truth["incidents"]["slow_region"]
    page.goto(f"{base}/correlations?lookback=1h&service={service}&operation={requests.utils.quote('GET /search')}")
    page.wait_for_selector("[data-testid=corr-histogram] canvas", timeout=30_000)
    page.wait_for_selector("[data-testid=corr-summary]", timeout=30_000)
    # Brush the right half of the histogram: the slow spans.
    box = page.locator("[data-testid=corr-histogram] canvas").first.bounding_box()
    y = box["y"] + box["height"] * 0.6
    page.mouse.move(box["x"] + box["width"] * 0.72, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.85, y, steps=8)
    page.mouse.move(box["x"] + box["width"] * 0.985, y, steps=8)
    page.mouse.up()
    page.wait_for_function("() => new URL(location.href).searchParams.has('min_duration')", timeout=10_000)
    page.wait_for_selector("[data-testid=corr-row]", timeout=30_000)
    first = page.locator("[data-testid=corr-row]").first
    assert (first.get_attribute("data-key"), first.get_attribute("data-value")) == ("span.cloud.region", region)
    page.screenshot(path=os.path.join(SHOTS, "correlations.png"), full_page=True)


def sql_rows(base, query):
    return get(base, "/api/v1/sql", q=query).json()["rows"]


def test_correlations_of_a_traceql_selection_and_of_numbers(shop):
    """A TraceQL selection, said exactly in SQL or evaluated trace by trace, selects the same
    spans; a numeric attribute that drives latency is found by its distribution."""
    base, truth, windows = shop
    service, region, _ = truth["incidents"]["slow_region"]
    scope = {"service": service, "operation": "GET /search", "kind": "server", **window_params(windows["before"])}
    exact = get(base, "/api/v1/correlations", q=f'{{ span.cloud.region = "{region}" }}', **scope).json()
    # The same spans through a structural query, which each candidate trace answers.
    structural = get(base, "/api/v1/correlations",
                     q=f'{{ resource.service.name = "web-gateway" }} >> {{ span.cloud.region = "{region}" }}', **scope).json()
    start, end = windows["before"]
    (row,) = sql_rows(base, f"SELECT count(*) AS n FROM spans WHERE service_name = '{service}' AND name = 'GET /search' "
                            f"AND kind = 'server' AND attributes['cloud.region'] = '{region}' "
                            f"AND start_time_unix_nano >= {start} AND start_time_unix_nano < {end}")
    assert exact["selected"] == structural["selected"] == row["n"] > 50
    for report in (exact, structural):
        first = report["correlations"][0]
        assert (first["key"], first["value"], first["score"]) == ("span.cloud.region", region, 1.0)
        assert report["compared_selected"] == report["selected"] and report["sampled_traces"] is None
    # Search takes longer the more hits it returns: among the other regions' spans, the slowest
    # quarter has more hits, and the hits are compared as numbers, not value by value.
    (row,) = sql_rows(base, f"SELECT approx_percentile_cont(duration_nanos, 0.75) AS p FROM spans "
                            f"WHERE service_name = '{service}' AND kind = 'server' AND attributes['cloud.region'] != '{region}' "
                            f"AND start_time_unix_nano >= {start} AND start_time_unix_nano < {end}")
    slow_ms = int(row["p"] / 1e6)
    report = get(base, "/api/v1/correlations", q=f'{{ span.cloud.region != "{region}" && duration > {slow_ms}ms }}', **scope).json()
    hits = next(n for n in report["numeric"] if n["key"] == "span.app.search.hits")
    assert hits["significant"] and hits["direction"] == "higher", hits
    assert hits["selected_median"] > hits["baseline_median"] + 40, hits
    assert report["numeric"][0]["key"] == "span.app.search.hits", report["numeric"][:2]
    assert not any(c["key"] == "span.app.search.hits" for c in report["correlations"])
    text = get(base, "/api/v1/correlations", q=f'{{ span.cloud.region != "{region}" && duration > {slow_ms}ms }}',
               format="markdown", **scope).text
    assert "Numeric attributes" in text and "app.search.hits" in text
    for params, message in (({"q": "{ span.a = }"}, "q:"),
                            ({"q": "{ }", "errors": "true"}, "not several"),
                            ({"q": "{ } | rate()"}, "metrics function"),
                            ({"q": "{ }", "sample": "10"}, "sample"),
                            ({"operation": "GET /search", "q": "{ }"}, "service")):
        bad = requests.get(base + "/api/v1/correlations", params=params, timeout=30)
        assert bad.status_code == 400 and message in bad.json()["error"]["message"], (params, bad.text)


def test_correlations_of_a_heatmap_region_and_on_a_sample(shop):
    """A region of time × latency selects exactly the spans in it; over a scope larger than the
    sample, the whole selection is compared with a sample of the baseline, and the planted cause
    still ranks first."""
    base, truth, windows = shop
    service, region, extra_ms = truth["incidents"]["slow_region"]
    start, end = windows["before"]
    middle = (start + end) // 2
    scope = {"service": service, "operation": "GET /search", "kind": "server", **window_params(windows["before"])}
    report = get(base, "/api/v1/correlations", min_duration=f"{int(extra_ms)}ms", max_duration="10s",
                 **{"from": str(start), "to": str(middle)}, **scope).json()
    (row,) = sql_rows(base, f"SELECT count(*) AS n FROM spans WHERE service_name = '{service}' AND name = 'GET /search' "
                            f"AND kind = 'server' AND duration_nanos >= {int(extra_ms * 1e6)} AND duration_nanos < 10000000000 "
                            f"AND start_time_unix_nano >= {start} AND start_time_unix_nano < {middle}")
    assert report["selected"] == row["n"] > 20
    assert "chosen time range" in report["selection"]
    cells = report["heatmap"]
    assert sum(c["spans"] for c in cells) == report["selected"] + report["baseline"]
    assert sum(c["selected"] for c in cells) == report["selected"]
    step = report["heatmap_step_nanos"]
    # Selected cells lie in the first half of the window and at or above the latency bound.
    for cell in cells:
        if cell["selected"]:
            assert start + cell["column"] * step < middle and cell["max_nanos"] > extra_ms * 1e6, cell
    assert report["correlations"][0]["value"] == region
    # On a sample: more spans in scope than the sample, so the baseline is sampled by trace.
    sampled = get(base, "/api/v1/correlations", min_duration=f"{int(extra_ms)}ms", sample="1000", **scope).json()
    assert sampled["selected"] + sampled["baseline"] > 1000
    share = sampled["sampled_traces"]
    assert 0 < share < 1
    assert sampled["compared_selected"] == sampled["selected"]
    # About that share of the baseline (trace IDs are random): within a generous band.
    assert 0.5 * share * sampled["baseline"] < sampled["compared_baseline"] < 2 * share * sampled["baseline"] + 50, sampled
    assert any("sample" in note for note in sampled["notes"])
    first = sampled["correlations"][0]
    assert (first["key"], first["value"]) == ("span.cloud.region", region) and first["significant"]


def test_group_comparison_finds_the_n_plus_one_between_versions(shop):
    base, truth, windows = shop
    service, operation, callee = truth["incidents"]["n_plus_one"][:3]
    callee_service = callee.split(" ", 1)[0]
    before_calls, after_calls = truth["incidents"]["n_plus_one"][3], truth["incidents"]["n_plus_one"][4]
    window = (windows["before"][0], windows["after"][1])
    rows = sql_rows(base, f"SELECT DISTINCT resource_attributes['service.version'] AS v FROM spans WHERE service_name = '{service}' "
                          f"AND start_time_unix_nano >= {windows['before'][0]} AND start_time_unix_nano < {windows['before'][1]}")
    (old,) = [r["v"] for r in rows]
    new = truth["incidents"]["deployed"][service]
    group = lambda version: (f'{{ resource.service.name = "{service}" && resource.service.version = "{version}" '  # noqa: E731
                             f'&& kind = server && name = "{operation}" }}')
    report = get(base, "/api/v1/compare-groups", a=group(old), b=group(new), **window_params(window)).json()
    assert report["a"]["matched"] > 100 and report["b"]["matched"] > 100, report["warnings"]
    # The loop ranks first: the catalog's client calls to pricing (they wrap the pricing
    # server spans) and the pricing server spans below them, each five times as often.
    expected = after_calls / before_calls
    top = report["changes"][:2]
    assert {c["service"] for c in top} == {service, callee_service}, report["changes"][:3]
    for change in top:
        assert change["change"] == "more calls", change
        if change["service"] == callee_service:
            assert change["path"][-1] == f"{callee_service}: {callee.split(' ', 1)[1]}", change
        assert abs(change["calls_ratio"] - expected) <= 0.15 * expected, (change["calls_ratio"], expected)
        assert change["ms_per_match_change"] > 0
    assert report["matched_b"]["p50_ms"] > report["matched_a"]["p50_ms"]
    text = get(base, "/api/v1/compare-groups", a=group(old), b=group(new), format="table", **window_params(window)).text
    assert "more calls" in text and callee_service in text
    out = subprocess.run([CLEW_BIN, "compare-groups", "--a", group(old), "--b", group(new), "--lookback", "30m",
                          "--server", base], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "more calls" in out.stdout, out.stderr
    bad = requests.get(base + "/api/v1/compare-groups", params={"a": group(old)}, timeout=30)
    assert bad.status_code == 400 and "b is required" in bad.json()["error"]["message"]


def product_page_traces(base, window):
    """Trace IDs of product pages (the root: the gateway's GET /product/{id}) in a window."""
    q = '{ resource.service.name = "web-gateway" && name = "GET /product/{id}" && kind = server }'
    traces = get(base, "/api/v1/search", q=q, limit="20", **window_params(window)).json()["traces"]
    found = [t["trace_id"] for t in traces if (t["root_service"], t["root_name"]) == ("web-gateway", "GET /product/{id}")]
    assert found, traces[:3]
    return found


def calls_ending_in(side, paths, label):
    return sum((p[side] or {}).get("calls", 0) for p in paths if p["path"][-1] == label)


def test_trace_comparison_finds_the_n_plus_one_between_two_requests(shop, page):  # noqa: F811 (fixture)
    base, truth, windows = shop
    service, operation, callee = truth["incidents"]["n_plus_one"][:3]
    callee_service, callee_operation = callee.split(" ", 1)
    a = product_page_traces(base, windows["before"])[0]
    b = product_page_traces(base, windows["after"])[0]
    report = get(base, "/api/v1/compare-traces", a=a, b=b).json()
    assert (report["a"]["trace_id"], report["b"]["trace_id"]) == (a, b)
    assert not any("different operations" in w for w in report["warnings"]), report["warnings"]
    paths = report["paths"]
    # A parent before its children, the root first.
    assert paths[0]["depth"] == 0 and paths[0]["path"] == ["web-gateway: GET /product/{id}"]
    for before, after in zip(paths, paths[1:]):
        assert after["depth"] <= before["depth"] + 1, (before["path"], after["path"])
    # Per catalog request, one price lookup before the deploy and four to six after it.
    catalog, price = f"{service}: {operation}", f"{callee_service}: {callee_operation}"
    for side, low, high in (("a", 1, 1), ("b", 4, 6)):
        per_request = calls_ending_in(side, paths, price) / calls_ending_in(side, paths, catalog)
        assert low <= per_request <= high, (side, per_request)
    loop = [p for p in paths if p["path"][-1] == price]
    assert loop and all(p["change"] == "more calls" and p["calls_change"] >= 3 for p in loop), loop
    # Critical-path changes add up to the change end to end, and the loop is on the critical path.
    explained = sum(p["critical_ms_change"] for p in paths)
    assert abs(explained - (report["b"]["critical_path_ms"] - report["a"]["critical_path_ms"])) < 0.01
    # Ranked by the size of their change on the critical path.
    ranked = [abs(paths[i]["critical_ms_change"]) for i in report["critical_changes"]]
    assert ranked and ranked == sorted(ranked, reverse=True)

    text = get(base, "/api/v1/compare-traces", a=a, b=b, format="table").text
    assert "more calls" in text and f"B − A: {report['duration_change_ms']:+.2f} ms end to end" in text
    out = subprocess.run([CLEW_BIN, "compare-traces", a, b, "--server", base], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "more calls" in out.stdout and price in out.stdout, out.stderr
    as_json = json.loads(subprocess.run([CLEW_BIN, "compare-traces", a, b, "--server", base, "--output", "json"],
                                        capture_output=True, text=True, timeout=60, check=True).stdout)
    # The same report (the CLI pretty-prints the JSON, which may move a float's last digit).
    assert [(p["path"], p["change"], round(p["critical_ms_change"], 6)) for p in as_json["paths"]] == \
        [(p["path"], p["change"], round(p["critical_ms_change"], 6)) for p in paths]

    missing = requests.get(base + "/api/v1/compare-traces", params={"a": a, "b": "0" * 31 + "1"}, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["message"].startswith("b: trace "), missing.text
    bad = requests.get(base + "/api/v1/compare-traces", params={"a": "xyz", "b": b}, timeout=30)
    assert bad.status_code == 400 and "a: invalid trace ID" in bad.json()["error"]["message"], bad.text
    assert requests.get(base + "/api/v1/compare-traces", params={"a": a}, timeout=30).status_code == 400
    out = subprocess.run([CLEW_BIN, "compare-traces", a, "0" * 31 + "1", "--server", base], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "not found" in out.stderr, (out.stdout, out.stderr)

    # The page shows the same comparison: the loop's rows marked, the critical path summarised.
    page.goto(f"{base}/compare?a={a}&b={b}")
    page.wait_for_selector("[data-testid=compare-table]", timeout=30_000)
    rows = page.locator("[data-testid=compare-table] tbody tr")
    assert rows.count() == len(paths)
    assert page.locator(f'[data-testid=compare-table] tr[data-change="more calls"][title$="{price}"]').count() == len(loop)
    assert page.locator("[data-testid=critical-change]").count() == min(5, len(ranked))
    assert "end to end" in page.inner_text("[data-testid=compare-critical]")
    page.screenshot(path=os.path.join(SHOTS, "compare-traces.png"), full_page=True)


def test_correlations_heatmap_and_group_pages(shop, page):  # noqa: F811 (fixture)
    base, truth, windows = shop
    service, region, _ = truth["incidents"]["slow_region"]
    page.goto(f"{base}/correlations?lookback=30m&mode=region&service={service}&operation={requests.utils.quote('GET /search')}")
    page.wait_for_selector("[data-testid=corr-heatmap] canvas", timeout=30_000)
    # Brush the top of the heatmap, across its whole width: the slowest spans at any time.
    box = page.locator("[data-testid=corr-heatmap] canvas").first.bounding_box()
    page.mouse.move(box["x"] + 72, box["y"] + 30)  # inside the grid's top left corner
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.2, steps=8)
    page.mouse.move(box["x"] + box["width"] - 110, box["y"] + box["height"] * 0.3, steps=8)
    page.mouse.up()
    page.wait_for_function("() => new URL(location.href).searchParams.has('from')", timeout=10_000)
    page.wait_for_selector("[data-testid=corr-row]", timeout=30_000)
    first = page.locator("[data-testid=corr-row]").first
    assert (first.get_attribute("data-key"), first.get_attribute("data-value")) == ("span.cloud.region", region)
    page.screenshot(path=os.path.join(SHOTS, "correlations-heatmap.png"), full_page=True)
    # A TraceQL selection: the slow spans outside the slow region have more hits.
    page.select_option("[data-testid=corr-mode]", "traceql")
    (row,) = sql_rows(base, f"SELECT approx_percentile_cont(duration_nanos, 0.75) AS p FROM spans "
                            f"WHERE service_name = '{service}' AND kind = 'server' AND attributes['cloud.region'] != '{region}'")
    page.fill("[data-testid=corr-traceql]", f'{{ span.cloud.region != "{region}" && duration > {int(row["p"] / 1e6)}ms }}')
    page.click("[data-testid=corr-run]")
    page.wait_for_selector("[data-testid=corr-numeric-row]", timeout=30_000)
    row = page.locator("[data-testid=corr-numeric-row]").first
    assert (row.get_attribute("data-key"), row.get_attribute("data-direction")) == ("span.app.search.hits", "higher")
    page.screenshot(path=os.path.join(SHOTS, "correlations-traceql.png"), full_page=True)
    # Two groups of requests: the deployed catalog calls pricing in a loop.
    catalog, operation, callee = truth["incidents"]["n_plus_one"][:3]
    versions = sql_rows(base, f"SELECT resource_attributes['service.version'] AS v, min(start_time_unix_nano) AS t FROM spans "
                              f"WHERE service_name = '{catalog}' GROUP BY 1 ORDER BY t")
    old, new = versions[0]["v"], truth["incidents"]["deployed"][catalog]
    group = lambda version: (f'{{ resource.service.name = "{catalog}" && resource.service.version = "{version}" '  # noqa: E731
                             f'&& kind = server && name = "{operation}" }}')
    page.goto(f"{base}/compare?mode=groups&lookback=30m&ga={requests.utils.quote(group(old))}&gb={requests.utils.quote(group(new))}")
    page.wait_for_selector("[data-testid=groups-row]", timeout=60_000)
    rows = page.locator("[data-testid=groups-row]")
    top = {(rows.nth(i).get_attribute("data-service"), rows.nth(i).get_attribute("data-change")) for i in range(2)}
    assert top == {(catalog, "more calls"), (callee.split(" ", 1)[0], "more calls")}, top
    page.wait_for_selector("[data-testid=groups-chart] canvas", timeout=10_000)
    page.screenshot(path=os.path.join(SHOTS, "compare-groups.png"), full_page=True)


def tempo_metrics(base, path, **params):
    response = requests.get(base.tempo + path, params=params, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def label_of(series, key):
    return next((label["value"] for label in series["labels"] if label["key"] == key), None)


def test_traceql_metrics_find_the_planted_causes(shop):
    """TraceQL metrics over Tempo's API (as Grafana asks them) see the planted causes, and their
    counts agree with SQL over the same spans."""
    base, truth, windows = shop
    before, after = windows["before"], windows["after"]
    seconds = lambda t: str(t // 1_000_000_000)  # noqa: E731 (Grafana sends whole seconds)
    # Counts agree with SQL over the same spans.
    q = '{ resource.service.name = "web-gateway" && kind = server } | count_over_time() by (name)'
    instant = tempo_metrics(base, "/api/metrics/query", q=q, start=seconds(before[0]), end=seconds(before[1]))
    start_ns, end_ns = int(seconds(before[0])) * 10**9, int(seconds(before[1])) * 10**9
    rows = get(base, "/api/v1/sql", q=f"SELECT name, count(*) AS n FROM spans WHERE service_name = 'web-gateway' "
               f"AND kind = 'server' AND start_time_unix_nano >= {start_ns} AND start_time_unix_nano < {end_ns} "
               "GROUP BY name").json()["rows"]
    assert {label_of(s, "name")["stringValue"]: s["value"] for s in instant["series"]} == {r["name"]: r["n"] for r in rows}

    # A range query: Tempo's shape, one sample per step, the rate as spans per second.
    ranged = tempo_metrics(base, "/api/metrics/query_range", q="{ kind = server } | rate()",
                           start=seconds(before[0]), end=seconds(before[1]), step="60s")
    (series,) = ranged["series"]
    assert series["labels"] == [{"key": "__name__", "value": {"stringValue": "rate"}}]
    assert series["promLabels"] == '{__name__="rate"}'
    stamps = [int(s["timestampMs"]) for s in series["samples"]]
    assert stamps == sorted(stamps) and all(t % 60_000 == 0 for t in stamps) and len(stamps) >= 8
    # The history's requests pass through several servers each: well above the entry rate.
    assert all(s["value"] > RATE for s in series["samples"][1:-1]), series["samples"]

    # Search is slow in one region: its median is higher by about the planted delay.
    service, region, extra_ms = truth["incidents"]["slow_region"]
    q = (f'{{ resource.service.name = "{service}" && name = "GET /search" && kind = server }} '
         '| quantile_over_time(duration, .5) by (span.cloud.region)')
    medians = tempo_metrics(base, "/api/metrics/query", q=q, start=seconds(before[0]), end=seconds(before[1]))
    by_region = {label_of(s, "span.cloud.region")["stringValue"]: s["value"] for s in medians["series"]}
    assert all(label_of(s, "p") == {"doubleValue": 0.5} for s in medians["series"])
    others = [v for r, v in by_region.items() if r != region]
    assert others, by_region
    for other in others:
        assert 0.6 * extra_ms <= (by_region[region] - other) * 1000 <= 1.4 * extra_ms, (by_region, extra_ms)

    # One version of the cart fails: its errors are that version's, at about the planted rate.
    service, version, error_rate = truth["incidents"]["erroring_version"]
    window = dict(start=seconds(before[0]), end=seconds(after[1]))
    q = f'{{ resource.service.name = "{service}" && kind = server }} | count_over_time() by (resource.service.version)'
    calls = {label_of(s, "resource.service.version")["stringValue"]: s["value"]
             for s in tempo_metrics(base, "/api/metrics/query", q=q, **window)["series"]}
    q = (f'{{ resource.service.name = "{service}" && kind = server && status = error }} '
         '| count_over_time() by (resource.service.version)')
    errors = {label_of(s, "resource.service.version")["stringValue"]: s["value"]
              for s in tempo_metrics(base, "/api/metrics/query", q=q, **window)["series"]}
    assert abs(errors[version] / calls[version] - error_rate) < 0.05, (errors, calls, error_rate)
    # The other versions fail far less often (what their callers' failures bring them).
    assert all(errors.get(v, 0) / n < 0.3 * error_rate for v, n in calls.items() if v != version), (errors, calls)

    # A latency heatmap: power-of-two buckets in seconds, as Grafana draws them.
    heat = tempo_metrics(base, "/api/metrics/query_range", q="{ kind = server } | histogram_over_time(duration)",
                         start=seconds(before[0]), end=seconds(before[1]), step="120s")
    buckets = sorted(label_of(s, "__bucket")["doubleValue"] for s in heat["series"])
    assert len(buckets) >= 5
    for bucket in buckets:
        assert math.isclose(math.log2(bucket * 1e9), round(math.log2(bucket * 1e9)), abs_tol=1e-9), bucket


def test_traceql_metrics_of_structure_and_their_errors(shop):
    """A structural query is evaluated trace by trace and agrees with SQL; bad queries get 400
    with the reason."""
    base, truth, windows = shop
    start, end = windows["before"]
    # Error spans whose parent is in their trace: evaluation against the span table's facts.
    result = get(base, "/api/v1/metrics/query_range", q="{ } > { status = error } | count_over_time()",
                 start=str(start), end=str(end), instant="true").json()
    assert result["path"] == "traces" and result["partial"] is None
    rows = get(base, "/api/v1/sql", q="SELECT count(*) AS n FROM spans WHERE status_code = 'error' AND parent_service "
               f"IS NOT NULL AND start_time_unix_nano >= {start} AND start_time_unix_nano < {end}").json()["rows"]
    assert result["matched_spans"] == rows[0]["n"] > 0
    # The CLI prints the series as a table.
    table = subprocess.run([CLEW_BIN, "metrics", '{ resource.service.name = "web-gateway" && kind = server } | rate() by (name)',
                            "--lookback", "30m", "--step", "1m", "--server", base], capture_output=True, text=True, check=True).stdout
    assert "steps of 60 s" in table and "name=POST /checkout" in table, table
    for q, status, words in (("{ } | rate() | sum()", 400, "topk"),
                             ("{ status = error }", 400, "not a metrics query"),
                             ("{ } | quantile_over_time(duration)", 400, "at least one quantile")):
        response = requests.get(base.tempo + "/api/metrics/query_range", params={"q": q}, timeout=30)
        assert response.status_code == status and words in response.text, response.text
    response = requests.get(base.tempo + "/api/search", params={"q": "{ } | rate()"}, timeout=30)
    assert response.status_code == 400 and "metrics query" in response.text
    response = requests.get(base + "/api/v1/metrics/query_range", params={"q": "{ } | rate()", "step": "1ns"}, timeout=30)
    assert response.status_code == 400 and "points per series" in response.json()["error"]["message"]


def test_metrics_page_draws_the_series(shop, page):  # noqa: F811 (fixture)
    base, truth, windows = shop
    service = truth["incidents"]["slow_region"][0]
    q = f'{{ resource.service.name = "{service}" && kind = server }} | quantile_over_time(duration, .9) by (span.cloud.region)'
    page.goto(f"{base}/traceql-metrics?lookback=30m&q={requests.utils.quote(q)}")
    page.wait_for_selector("[data-testid=metrics-chart] canvas", timeout=30_000)
    rows = page.locator("[data-testid=metrics-row]")
    names = [rows.nth(i).get_attribute("data-series") for i in range(rows.count())]
    region = truth["incidents"]["slow_region"][1]
    assert f"span.cloud.region={region}, p=0.9" in names, names
    assert "one scan" in page.locator("[data-testid=metrics-summary]").inner_text()
    page.screenshot(path=os.path.join(SHOTS, "metrics.png"), full_page=True)
    # An example query: the latency heatmap.
    page.get_by_role("button", name="Latency heatmap of server spans").click()
    page.wait_for_function("() => new URL(location.href).searchParams.get('q').includes('histogram_over_time')")
    page.wait_for_selector("[data-testid=metrics-chart] canvas", timeout=30_000)
    assert page.locator("[data-testid=metrics-table]").count() == 0
    page.screenshot(path=os.path.join(SHOTS, "metrics-heatmap.png"), full_page=True)
