"""The web UI in headless Chromium (Debian's, driven by Playwright) against the real binary
running the demo shop. Screenshots of every page go to tests/integration/screenshots/."""
import json
import os
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import CLEW_BIN, running_demo

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CLEW_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.path.join(os.path.dirname(__file__), "screenshots")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def demo():
    """`clew demo` on free ports, left running until the module's tests are done: ready once
    every uninstrumented peer has been called in an assembled trace."""
    truth = json.loads(subprocess.run([CLEW_BIN, "demo", "--print-truth"], capture_output=True, check=True).stdout)

    def ready(base):
        graph = requests.get(base + "/api/v1/service-graph", params={"lookback": "1h"}, timeout=5).json()
        virtual = {n["name"] for n in graph["nodes"] if n["kind"] == "virtual"}
        return set(truth["uninstrumented"]) <= virtual

    with running_demo("--rate", "40", ready=ready, timeout=90) as base:
        yield base, truth


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    os.makedirs(SHOTS, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clew-chromium-") as profile:
        with playwright.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 800})
            yield context
            context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.close()
    assert not errors, f"the page threw: {errors}"


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=False)


def test_search_finds_traces_and_filters_by_service(demo, page):
    base, truth = demo
    page.goto(base + "/")
    page.wait_for_selector("[data-testid=result]")
    assert page.locator("[data-testid=result]").count() > 0
    # The scatter plot is drawn.
    assert page.locator("[data-testid=scatter] canvas").count() >= 1
    shot(page, "search")

    entry = truth["entry_operations"][0] if isinstance(truth["entry_operations"], list) else None
    service = "checkout-service"
    page.select_option("[data-testid=service-picker]", service)
    page.click("[data-testid=find-traces]")
    page.wait_for_url(lambda url: f"service={service}" in url)
    page.wait_for_selector("[data-testid=result]")
    # Every result passes through the chosen service; the URL holds the search.
    for text in page.locator("[data-testid=result]").all_inner_texts():
        assert service in text, text
    assert f"service={service}" in page.url
    # The same URL opened afresh shows the same search.
    page.goto(page.url)
    assert page.locator("[data-testid=service-picker]").input_value() == service
    page.wait_for_selector("[data-testid=result]")
    del entry

    # A custom range a year ago holds nothing, and the page says what to do.
    page.select_option("[data-testid=lookback]", "custom")
    page.fill("[data-testid=range-from]", "2025-01-01T00:00")
    page.fill("[data-testid=range-to]", "2025-01-02T00:00")
    page.click("[data-testid=find-traces]")
    page.wait_for_url(lambda url: "start=" in url and "end=" in url)
    page.wait_for_selector("text=No traces match")


def test_search_by_traceql_with_autocomplete(demo, page):
    base, _ = demo
    page.goto(base + "/search")
    page.click("[data-testid=mode-traceql]")
    box = page.locator("[data-testid=traceql-input]")
    box.fill("")
    box.type("{ resource.service.na")
    page.wait_for_selector("[data-testid=traceql-suggestions]")
    assert "service.name" in page.locator("[data-testid=traceql-suggestions]").inner_text()
    box.press("Tab")
    box.type(' = "')
    suggestions = page.locator("[data-testid=traceql-suggestions]")
    deadline = time.time() + 30
    while time.time() < deadline and not (suggestions.count() and "frontend" in suggestions.inner_text()):
        time.sleep(0.2)
    assert suggestions.count() and "frontend" in suggestions.inner_text(), (
        box.input_value(), suggestions.count() and suggestions.inner_text())
    box.type('frontend" && kind = server }')
    assert box.input_value() == '{ resource.service.name = "frontend" && kind = server }'
    page.click("[data-testid=run-traceql]")
    page.wait_for_selector("[data-testid=result]")
    for text in page.locator("[data-testid=result]").all_inner_texts():
        assert "web-gateway" in text or "frontend" in text
    shot(page, "search-traceql")

    # A wrong query says where it is wrong.
    box.fill("{ duration > }")
    page.click("[data-testid=run-traceql]")
    page.wait_for_selector("[role=alert]")
    assert "column" in page.locator("[role=alert]").inner_text()


def longest_trace(base, **params):
    traces = requests.get(base + "/api/v1/search", params={"lookback": "1h", "sort": "longest", "limit": 5, **params},
                          timeout=30).json()["traces"]
    assert traces
    return requests.get(base + f"/api/v1/traces/{traces[0]['trace_id']}", timeout=30).json()


def test_trace_view_shows_spans_and_critical_path(demo, page):
    base, _ = demo
    trace = longest_trace(base, service="checkout-service")
    page.goto(base + f"/trace/{trace['traceId']}")
    page.wait_for_selector("[data-testid=span-row]")
    assert page.locator("[data-testid=span-count]").inner_text() == str(trace["spanCount"])
    # The critical path is drawn: one bar segment per segment the API gives, over the rows shown.
    drawn = page.locator("[data-testid=critical-segment]").count()
    assert drawn > 0
    shown = {row.get_attribute("data-span-id") for row in page.locator("[data-testid=span-row]").all()}
    expected = sum(1 for s in trace["criticalPath"] if s["spanId"] in shown)
    assert drawn == expected
    # The summary adds up the segments: for a single-root trace that is the whole trace.
    summary = page.locator("[data-testid=critical-summary]").inner_text()
    assert f"in {len(trace['criticalPath'])} segments" in summary
    shot(page, "trace-waterfall")

    # Selecting a span shows its details, with its critical-path time.
    root = next(s for s in trace["spans"] if "parentSpanId" not in s)
    page.click(f"[data-span-id='{root['spanId']}']")
    detail = page.locator("[data-testid=span-detail]")
    detail.wait_for()
    assert root["spanId"] in detail.inner_text()
    assert "Critical path" in detail.inner_text()
    # Keyboard: down moves to the next span.
    page.locator("[data-testid=waterfall]").press("ArrowDown")
    page.wait_for_function(f"() => !location.search.includes('{root['spanId']}')")
    shot(page, "trace-detail")

    # Find in trace counts the spans that mention the text.
    page.fill("[data-testid=find]", "payment")
    matching = sum(1 for s in trace["spans"] if "payment" in (s["name"] + s["service"]).lower()
                   or any("payment" in (a["key"] + json.dumps(a["value"])).lower() for a in s["attributes"]))
    assert page.locator("[data-testid=find-count]").inner_text() == f"{matching} matching spans"

    page.click("[data-testid=view-flame]")
    page.wait_for_selector("[data-testid=flame-graph] canvas")
    shot(page, "trace-flame")
    page.click("[data-testid=view-stats]")
    page.wait_for_selector("[data-testid=stats-table] tbody tr")
    rows = page.locator("[data-testid=stats-table] tbody tr")
    assert rows.count() == len({(s["service"], s["name"]) for s in trace["spans"]})
    shot(page, "trace-stats")


def test_trace_view_renders_a_missing_trace_as_an_error(demo, page):
    base, _ = demo
    page.goto(base + "/trace/0123456789abcdef0123456789abcdef")
    page.wait_for_selector("[role=alert]")
    assert "not found" in page.locator("[role=alert]").inner_text()


def test_service_map_shows_services_and_virtual_peers(demo, page):
    base, truth = demo
    page.goto(base + "/map")
    page.wait_for_selector("[data-testid=map-node-row]")
    page.wait_for_selector("[data-testid=service-map] canvas")
    rows = page.locator("[data-testid=map-node-row]")
    virtual = {r.locator("td").first.inner_text() for r in rows.all() if r.get_attribute("data-kind") == "virtual"}
    services = {r.locator("td").first.inner_text() for r in rows.all() if r.get_attribute("data-kind") == "service"}
    assert set(truth["uninstrumented"]) <= virtual
    instrumented = {s if isinstance(s, str) else s["name"] for s in truth["services"]}
    assert len(instrumented & services) >= len(instrumented) - 2, instrumented - services
    # The graph drawn holds the same nodes.
    drawn = page.evaluate("() => window.__clewMap.nodes().map(n => n.data('name'))")
    assert set(truth["uninstrumented"]) <= set(drawn)
    shot(page, "service-map")
    # The export links give the same graph as Graphviz DOT and Mermaid.
    links = {a.inner_text(): a.get_attribute("href") for a in page.locator("[data-testid=map-exports] a").all()}
    dot = requests.get(base + links["Graphviz DOT"], timeout=30).text
    assert dot.startswith("digraph services {") and all(f'"{name}"' in dot for name in truth["uninstrumented"])
    assert requests.get(base + links["Mermaid"], timeout=30).text.startswith("flowchart LR")
    # Clicking a service node opens its page.
    page.evaluate("() => window.__clewMap.getElementById('n:frontend').emit('tap')")
    page.wait_for_url(lambda url: url.endswith("/services/frontend"))


def test_service_page_draws_red_charts(demo, page):
    base, _ = demo
    page.goto(base + "/services/checkout-service")
    page.wait_for_selector("[data-testid=red-charts]")
    for chart in ("chart-rate", "chart-errors", "chart-latency"):
        assert page.locator(f"[data-testid={chart}] canvas").count() >= 1
    red = requests.get(base + "/api/v1/services/checkout-service/red", params={"lookback": "1h"}, timeout=30).json()
    assert sum(p["calls"] for p in red["series"]) > 0
    assert page.locator("[data-testid=operations-table] tbody tr").count() == min(50, len(red["operations"]))
    assert page.locator("[data-testid=downstream] tr").count() > 0
    assert page.locator("[data-testid=upstream] tr").count() > 0
    shot(page, "service")
    page.goto(base + "/services")
    page.wait_for_selector("[data-testid=services-table]")
    shot(page, "services")


def test_compare_highlights_differences(demo, page):
    base, _ = demo
    pair = None
    deadline = time.time() + 60
    while pair is None and time.time() < deadline:
        # The demo sends checkouts of several shapes: wait for two of one entry that differ.
        traces = requests.get(base + "/api/v1/search", params={"lookback": "1h", "service": "checkout-service",
                                                              "limit": 50}, timeout=30).json()["traces"]
        by_shape = {}
        for t in traces:
            by_shape.setdefault((t["root_service"], t["root_name"]), []).append(t)
        for group in by_shape.values():
            counts = {t["span_count"]: t for t in group}
            if len(counts) >= 2:
                pair = list(counts.values())[:2]
                break
        else:
            time.sleep(1)
    assert pair, "the demo should give two checkouts with different span counts"
    a, b = pair
    page.goto(base + f"/compare?a={a['trace_id']}&b={b['trace_id']}")
    page.wait_for_selector("[data-testid=compare-table]")
    changed = page.locator("[data-testid=compare-table] tr[data-change]:not([data-change=same])")
    assert changed.count() > 0
    assert page.locator("[data-testid=compare-summary] .badge").count() > 0
    shot(page, "compare")


def test_dark_theme_and_wide_screen(demo, page):
    base, _ = demo
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(base + "/map")
    page.click("[data-testid=theme-toggle]")
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    page.wait_for_selector("[data-testid=service-map] canvas")
    shot(page, "service-map-dark-wide")
    page.click("[data-testid=theme-toggle]")


def test_coverage_page_shows_what_sends_spans_and_where_propagation_breaks(demo, page):
    base, truth = demo
    report = requests.get(base + "/api/v1/coverage", params={"lookback": "1h"}, timeout=60).json()
    page.goto(base + "/coverage")
    page.wait_for_selector("[data-testid=coverage-row]")
    rows = page.locator("[data-testid=coverage-row]")
    assert {r.get_attribute("data-service") for r in rows.all()} >= {s["service"] for s in report["services"]}
    status = {r.get_attribute("data-service"): r.locator("[data-testid=service-status]").get_attribute("data-status")
              for r in rows.all()}
    for service in truth["services"]:
        assert status[service] == "instrumented", service
    assert status["legacy-inventory"] == "not_instrumented"
    assert status["payment-provider"] == "external"
    page.wait_for_selector("[data-testid=coverage-chart] canvas")
    # The planted break is shown with the side that must change.
    breaks = page.locator("[data-testid=break]").all_inner_texts()
    for caller, callee, _ in truth["propagation_breaks"]:
        assert any(f"{caller} → {callee}" in text for text in breaks), breaks
    # A service with a planted mistake lists it.
    service, rules = next((s, r) for s, r in truth["quality_gaps"].items() if "deprecated_attribute" in r)
    row = page.locator(f"[data-testid=coverage-row][data-service='{service}']")
    row.locator("summary").click()
    assert "deprecated_attribute" in [f.get_attribute("data-rule") for f in row.locator("[data-testid=finding]").all()]
    shot(page, "coverage")
    with page.expect_download() as download:
        page.click("[data-testid=download-markdown]")
    text = open(download.value.path()).read()
    assert "| web-gateway |" in text


def test_plan_page_lists_the_steps_with_their_reasons(demo, page):
    base, _ = demo
    plan = requests.get(base + "/api/v1/rollout-plan", params={"lookback": "1h"}, timeout=60).json()
    page.goto(base + "/plan")
    page.wait_for_selector("[data-testid=plan-progress]")
    assert f"{len(plan['adopted'])} of {plan['teams']} teams" in page.locator("[data-testid=plan-progress]").inner_text()
    steps = page.locator("[data-testid=plan-step]")
    assert [s.get_attribute("data-team") for s in steps.all()] == [s["team"] for s in plan["steps"]]
    assert plan["steps"], "the demo's legacy inventory service leaves its team a step to take"
    # The shop keeps sending, so the numbers move; the reasoning does not.
    rationale = steps.first.locator("[data-testid=plan-rationale]").inner_text()
    assert rationale.split(":")[0] == plan["steps"][0]["rationale"].split(":")[0]
    assert steps.first.locator("[data-testid=plan-reason]").inner_text()
    shot(page, "rollout-plan")
    with page.expect_download() as download:
        page.click("[data-testid=download-markdown]")
    assert open(download.value.path()).read().startswith("# Tracing rollout plan")


def test_directory_page_shows_who_runs_which_sdk(demo, page):
    base, truth = demo
    page.goto(base + "/directory")
    page.wait_for_selector("[data-testid=directory-row]")
    rows = page.locator("[data-testid=directory-row]")
    versions = {f["sdk_version"] for f in truth["services"].values()}
    assert {r.get_attribute("data-value") for r in rows.all()} == versions
    page.wait_for_selector("[data-testid=directory-chart] canvas")
    shot(page, "directory")
    # One value: the services still on the old SDK.
    page.locator("[data-testid=directory-row][data-value='1.24.0'] button").click()
    page.wait_for_url(lambda url: "value=1.24.0" in url)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=directory-row]').length === 1")
    services = {t.strip() for t in page.locator("[data-testid=directory-services] .chip").all_inner_texts()}
    assert services == {s for s, f in truth["services"].items() if f["sdk_version"] == "1.24.0"}
    # Another key, typed in.
    page.fill("[data-testid=directory-key]", "service.version")
    page.click("[data-testid=directory-show]")
    page.wait_for_url(lambda url: "key=service.version" in url and "value=" not in url)
    page.wait_for_selector("[data-testid=directory-row][data-value='3.2.0']")


def test_critical_operations_page_shows_behaviour_and_gaps(demo, page):
    base, _ = demo
    page.goto(base + "/operations")
    page.wait_for_selector("[data-testid=critical-operation]")
    cards = page.locator("[data-testid=critical-operation]")
    api = requests.get(base + "/api/v1/critical-operations", params={"lookback": "1h"}, timeout=60).json()["operations"]
    assert [c.get_attribute("data-name") for c in cards.all()] == [o["name"] for o in api]
    checkout = page.locator("[data-testid=critical-operation][data-name=Checkout]")
    checkout.locator("[data-testid=operation-chart] canvas").first.wait_for()
    gaps = [g.get_attribute("data-service") for g in checkout.locator("[data-testid=operation-gap]").all()]
    assert gaps == [g["service"] for g in next(o for o in api if o["name"] == "Checkout")["gaps"]]
    assert "shipping-service" in gaps
    assert "context lost" in checkout.locator("[data-testid=operation-gaps]").inner_text()
    shot(page, "critical-operations")


def test_flows_page_draws_an_entry_operations_call_tree(demo, page):
    base, _ = demo
    flow = requests.get(base + "/api/v1/flow", params={"lookback": "1h", "service": "web-gateway",
                                                       "operation": "POST /checkout"}, timeout=60).json()
    page.goto(base + "/flows?entry=" + requests.utils.quote("web-gateway\u0000POST /checkout"))
    page.wait_for_selector("[data-testid=flow-node]")
    page.wait_for_selector("[data-testid=flow-graph] canvas")
    rows = page.locator("[data-testid=flow-node]")
    # The shop keeps sending; the shape of the call tree stays.
    shown = {(r.get_attribute("data-service"), r.get_attribute("data-operation")) for r in rows.all()}
    assert {(n["service"], n["operation"]) for n in flow["nodes"] if n["reach"] > 0.5} <= shown
    assert rows.first.get_attribute("data-operation") == "POST /checkout"
    assert rows.first.locator("[data-testid=per-request]").inner_text() == "1.00"
    shot(page, "flows")
