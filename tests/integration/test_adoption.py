"""Adoption intelligence against the demo shop's own ground truth: coverage, propagation breaks,
instrumentation quality, the rollout plan and the client directory, read from the traces alone.

Three shops run: one where every team traces, one where only the edge team's gateway sends
spans, and one where six of the eleven teams do."""
import contextlib
import json
import subprocess
import time

import pytest
import requests

from conftest import CLEW_BIN, running_demo


@contextlib.contextmanager
def run_demo(traced_teams=None):
    extra = ["--traced-teams", ",".join(traced_teams)] if traced_teams else []
    truth = json.loads(subprocess.run([CLEW_BIN, "demo", "--print-truth", *extra], capture_output=True,
                                      check=True).stdout)
    # Ready when every service that should be seen is, on the map and in the coverage report:
    # those that send spans as services (not only named by their callers' client spans before
    # their own spans arrive), the others as anything. (The map counts whole minutes, so it can
    # show a span that started after the report's window ended: both are asked.)
    expected = set(truth["traced"]) | set(truth["untraced_called"])
    seen = set()

    def ready(base):
        graph = requests.get(base + "/api/v1/service-graph", params={"lookback": "1h"}, timeout=5).json()
        on_map = {n["name"] for n in graph["nodes"] if n["kind"] == "service" or n["name"] not in truth["traced"]}
        reported = {s["service"] for s in coverage(base)["services"]
                    if s["status"] == "instrumented" or s["service"] not in truth["traced"]}
        seen.clear()
        seen.update(on_map & reported)
        return expected <= seen

    with running_demo("--rate", "60", *extra, ready=ready) as base:
        assert expected <= seen, sorted(expected - seen)
        yield base, truth


@pytest.fixture(scope="module")
def full_shop():
    with run_demo() as (base, truth):
        # Some planted mistakes show only on rare failures: give them time to happen once.
        deadline = time.time() + 90
        while time.time() < deadline:
            services = {s["service"]: s for s in coverage(base)["services"]}
            if all(set(rules) <= {f["rule"] for f in services.get(service, {}).get("findings", [])}
                   for service, rules in truth["quality_gaps"].items()):
                break
            time.sleep(1)
        yield base, truth


@pytest.fixture(scope="module")
def edge_only_shop():
    with run_demo(["edge"]) as shop:
        yield shop


HALF = ["edge", "storefront", "identity", "checkout", "payments", "catalog"]


@pytest.fixture(scope="module")
def half_shop():
    with run_demo(HALF) as shop:
        yield shop


def coverage(base, **params):
    response = requests.get(base + "/api/v1/coverage", params={"lookback": "1h", **params}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_coverage_recovers_the_shop_as_it_is(full_shop):
    base, truth = full_shop
    report = coverage(base)
    by_service = {s["service"]: s for s in report["services"]}
    instrumented = {s for s, c in by_service.items() if c["status"] == "instrumented"}
    assert instrumented == set(truth["services"])
    # Every service that is called but sends nothing is found, with the right kind.
    for name, kind in truth["uninstrumented"].items():
        assert name in by_service, name
        expected = {"database": {"database"}, "http": {"not_instrumented", "external"}}[kind]
        assert by_service[name]["status"] in expected, (name, by_service[name])
    # The catalog says the payment provider is a third party: it is not counted against anyone.
    assert by_service["payment-provider"]["status"] == "external"
    assert by_service["legacy-inventory"]["status"] == "not_instrumented"
    # Owners come from the catalog, and agree with the team attribute the services send.
    for name, fact in truth["services"].items():
        assert by_service[name]["team"] == fact["team"], name
    assert report["summary"]["instrumented"] == len(truth["services"])

    # The propagation break the shop plants is found, with the side that must change.
    breaks = {(b["caller"], b["callee"]): b for b in report["breaks"]}
    for caller, callee, _reason in truth["propagation_breaks"]:
        assert (caller, callee) in breaks, (caller, callee, sorted(breaks))
        found = breaks[(caller, callee)]
        assert found["broken_calls"] > 0
        assert found["diagnosis"] in {"caller_does_not_inject", "callee_does_not_extract"}
        # Each broken call starts a trace of the callee's while it is in flight: the evidence
        # counts about one root per call (a few more where calls overlap, fewer at the edges
        # of the store's parts).
        assert 0.8 * found["broken_calls"] <= found["callee_roots_during_calls"] <= 1.5 * found["broken_calls"], found
        assert found["fix"]
    # And nothing else is reported as broken.
    assert set(breaks) == {(c, e) for c, e, _ in truth["propagation_breaks"]}

    # Each planted instrumentation mistake is found by the rule that names it, on that service.
    for service, rules in truth["quality_gaps"].items():
        found = {f["rule"] for f in by_service[service]["findings"]}
        assert set(rules) <= found, (service, rules, found)
        assert by_service[service]["quality_score"] < 100
    clean = [s for s in truth["services"] if s not in truth["quality_gaps"]]
    planted = {rule for rules in truth["quality_gaps"].values() for rule in rules}
    for service in clean:
        assert not planted & {f["rule"] for f in by_service[service]["findings"]}, (service, by_service[service])

    # Teams add up their services.
    teams = {t["team"]: t for t in report["teams"]}
    for team in {f["team"] for f in truth["services"].values()}:
        assert teams[team]["instrumented"] == sum(1 for f in truth["services"].values() if f["team"] == team)


def test_coverage_renders_as_markdown_and_table(full_shop):
    base, truth = full_shop
    markdown = requests.get(base + "/api/v1/coverage", params={"lookback": "1h", "format": "markdown"}, timeout=60)
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "| web-gateway |" in markdown.text
    table = requests.get(base + "/api/v1/coverage", params={"lookback": "1h", "format": "table"}, timeout=60)
    assert table.status_code == 200 and "checkout-service" in table.text


def test_the_client_directory_lists_sdk_versions_per_service(full_shop):
    base, truth = full_shop
    response = requests.get(base + "/api/v1/directory/telemetry.sdk.version", params={"lookback": "1h"}, timeout=60)
    assert response.status_code == 200, response.text
    directory = response.json()
    found = {(e["service"], e["value"]) for e in directory["entries"]}
    assert found == {(s, f["sdk_version"]) for s, f in truth["services"].items()}
    versions = {v["value"]: set(v["services"]) for v in directory["values"]}
    for version in {f["sdk_version"] for f in truth["services"].values()}:
        assert versions[version] == {s for s, f in truth["services"].items() if f["sdk_version"] == version}
    # One value: who still runs the old SDK.
    old = requests.get(base + "/api/v1/directory/telemetry.sdk.version",
                       params={"lookback": "1h", "value": "1.24.0"}, timeout=60).json()
    assert {e["service"] for e in old["entries"]} == versions["1.24.0"]


def check_critical_operations(base, truth):
    """Each critical operation of the shop's catalog reaches the services the truth says, and
    its gaps are the truth's, with the catalog's teams."""
    response = requests.get(base + "/api/v1/critical-operations", params={"lookback": "1h"}, timeout=60)
    assert response.status_code == 200, response.text
    operations = {o["name"]: o for o in response.json()["operations"]}
    catalog_teams = {s: f["team"] for s, f in truth["services"].items()} | {"legacy-inventory": "fulfillment"}
    assert set(operations) == {"Checkout", "Product page", "Login"}
    for name, report in operations.items():
        entry = f"web-gateway {report['operation']}"
        assert report["requests"] > 0, name
        assert 0 <= report["errors"] <= report["requests"]
        assert report["p50_nanos"] <= report["p95_nanos"] <= report["p99_nanos"]
        # The series and the totals are read from the same snapshot of the store.
        assert sum(p["requests"] for p in report["series"]) == report["requests"]
        traced = {n["service"] for n in report["services"] if n["status"] == "instrumented"}
        expected = truth["entry_services"][entry]
        # Every service reached by most requests is seen; nothing the truth rules out is.
        assert {s for s, p in expected.items() if p >= 0.3} <= traced <= set(expected), (name, traced, expected)
        gaps = {g["service"] for g in report["gaps"]}
        expected_gaps = {s for s in truth["entry_gaps"][entry] if s != "payment-provider"}
        assert {s for s in expected_gaps if truth["entry_gaps"][entry][s] >= 0.3} <= gaps <= expected_gaps, (name, gaps)
        for gap in report["gaps"]:
            assert gap["team"] == catalog_teams[gap["service"]], gap
            assert gap["callers"], gap
        countable = [n for n in report["services"] if n["status"] not in ("database", "external")]
        assert report["coverage"] == pytest.approx(len(traced) / len(countable))
        if not gaps:
            assert report["whole_share"] > 0.9, report
    return operations


def test_critical_operations_of_the_whole_shop(full_shop):
    base, truth = full_shop
    operations = check_critical_operations(base, truth)
    # The checkout's broken call to shipping is its gap, and no checkout is traced whole.
    checkout = operations["Checkout"]
    assert [(g["service"], g["status"]) for g in checkout["gaps"]] == [("shipping-service", "context_lost")]
    assert checkout["whole_share"] == 0
    one = requests.get(base + "/api/v1/critical-operations/Checkout", params={"lookback": "1h", "format": "markdown"},
                       timeout=60)
    assert one.status_code == 200 and "| shipping-service | fulfillment | context lost |" in one.text
    missing = requests.get(base + "/api/v1/critical-operations/Refund", timeout=60)
    assert missing.status_code == 404 and "Checkout" in missing.json()["error"]["message"]


def test_flows_recover_the_fan_out_of_each_entry_operation(full_shop):
    base, truth = full_shop
    entries = requests.get(base + "/api/v1/flows", params={"lookback": "1h"}, timeout=60).json()["entries"]
    seen = {f"{e['service']} {e['operation']}": e["requests"] for e in entries}
    for entry in truth["entry_operations"]:
        assert seen.get(entry, 0) > 0, (entry, seen)
        service, operation = entry.split(" ", 1)
        response = requests.get(base + "/api/v1/flow", params={"lookback": "1h", "service": service, "operation": operation},
                                timeout=60)
        assert response.status_code == 200, response.text
        flow = response.json()
        requests_seen = flow["stats"]["requests"]
        # Operations run per request, over services' SERVER/CONSUMER spans, against the shop's own numbers.
        per_request = {}
        for node in flow["nodes"]:
            if node["kind"] in ("server", "consumer"):
                key = f"{node['service']} {node['operation']}"
                per_request[key] = per_request.get(key, 0) + node["calls_per_request"]
        expected = truth["fan_out"][entry]
        assert set(per_request) <= set(expected), (entry, set(per_request) - set(expected))
        for key, mean in expected.items():
            if mean >= 0.3:
                assert key in per_request, (entry, key)
            if requests_seen >= 30 and key in per_request:
                assert abs(per_request[key] - mean) <= 0.25 * mean + 0.2, (entry, key, per_request[key], mean)
        root = flow["nodes"][0]
        assert (root["service"], root["operation"], root["calls_per_request"]) == (service, operation, 1.0)
    # The same flow as a Mermaid diagram and as Markdown.
    mermaid = requests.get(base + "/api/v1/flow", params={"lookback": "1h", "service": "web-gateway",
                                                          "operation": "POST /checkout", "format": "mermaid"}, timeout=60)
    assert mermaid.text.startswith("flowchart LR") and "checkout-service" in mermaid.text
    # And as pictures: every service of the map, every operation of the flow, drawn in SVG.
    picture = requests.get(base + "/api/v1/service-graph", params={"lookback": "1h", "format": "svg"}, timeout=60)
    assert picture.status_code == 200, picture.text
    assert picture.headers["content-type"] == "image/svg+xml" and "<svg" in picture.text
    for service in truth["services"]:
        assert service in picture.text, service
    picture = requests.get(base + "/api/v1/flow", params={"lookback": "1h", "service": "web-gateway",
                                                          "operation": "POST /checkout", "format": "svg"}, timeout=60)
    assert picture.status_code == 200 and "<svg" in picture.text and "POST /checkout" in picture.text
    bad = requests.get(base + "/api/v1/flow", params={"service": "web-gateway"}, timeout=60)
    assert bad.status_code == 400 and "operation" in bad.json()["error"]["message"]


def test_clew_docs_writes_the_system_down(full_shop, tmp_path):
    base, truth = full_shop
    out = subprocess.run([CLEW_BIN, "docs", "--server", base, "--lookback", "1h", "--out", str(tmp_path / "docs")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    index = (tmp_path / "docs" / "index.md").read_text()
    for service, fact in truth["services"].items():
        assert f"| {service} | {fact['team']} | instrumented |" in index, service
    assert "```mermaid" in index and "## Critical user operations" in index
    for entry in truth["entry_operations"]:
        assert f"| {entry} |" in index, entry
    checkout = (tmp_path / "docs" / "flows" / "web-gateway-post-checkout.md").read_text()
    assert "checkout-service: POST /checkout" in checkout and "```mermaid" in checkout

    # The same pages as HTML: tables as tables, diagrams drawn, links between the HTML pages.
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self, path):
            super().__init__()
            self.cells, self.links, self.svgs, self._cell = [], [], 0, None
            self.feed(path.read_text())

        def handle_starttag(self, tag, attrs):
            if tag in ("td", "th"):
                self._cell = ""
            elif tag == "a":
                self.links.append(dict(attrs)["href"])
            elif tag == "svg":
                self.svgs += 1

        def handle_data(self, data):
            if self._cell is not None:
                self._cell += data

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.cells.append(self._cell.strip())
                self._cell = None

    html_index = Page(tmp_path / "docs" / "index.html")
    for service, fact in truth["services"].items():
        assert service in html_index.cells and fact["team"] in html_index.cells, service
    assert html_index.svgs >= 1, "the dependency graph is drawn"
    assert 'class="language-mermaid"' not in (tmp_path / "docs" / "index.html").read_text()
    flow_links = [link for link in html_index.links if link.startswith("flows/")]
    assert "flows/web-gateway-post-checkout.html" in flow_links
    for link in flow_links:
        page = Page(tmp_path / "docs" / link)
        assert page.svgs >= 1 and "../index.html" in page.links, link


def test_a_shop_part_way_through_adoption(edge_only_shop):
    base, truth = edge_only_shop
    report = coverage(base)
    by_service = {s["service"]: s for s in report["services"]}
    assert {s for s, c in by_service.items() if c["status"] == "instrumented"} == set(truth["traced"])
    http_peers = {s for s in truth["untraced_called"] if truth["uninstrumented"].get(s) != "database"}
    for name in http_peers:
        assert by_service[name]["status"] in {"not_instrumented", "external"}, by_service[name]
        assert by_service[name]["owner_source"] == "catalog"
    # Services nobody traced calls are known from the catalog only.
    catalog_services = set(truth["services"]) | {"legacy-inventory"}
    for name in catalog_services - set(truth["traced"]) - set(truth["untraced_called"]):
        assert by_service[name]["status"] == "unseen", by_service[name]
    # A third party stays external whether seen or not.
    assert by_service["payment-provider"]["status"] == "external"

    response = requests.get(base + "/api/v1/rollout-plan", params={"lookback": "1h"}, timeout=60)
    assert response.status_code == 200, response.text
    plan = response.json()
    assert [t["team"] for t in plan["adopted"]] == ["edge"]
    teams = {f["team"] for f in truth["services"].values()} - {"edge"}
    assert sorted(step["team"] for step in plan["steps"]) == sorted(teams)
    # The gateway's largest dependency comes first, with its reason written out.
    graph = requests.get(base + "/api/v1/service-graph", params={"lookback": "1h"}, timeout=30).json()
    from_gateway = {e["child"]: e["calls"] for e in graph["edges"] if e["parent"] == "web-gateway"
                    and truth["uninstrumented"].get(e["child"]) != "database"}
    largest = max(from_gateway, key=lambda s: (from_gateway[s], s))
    first = plan["steps"][0]
    assert first["reason"] == "largest_dependency"
    assert first["team"] == truth["services"][largest]["team"]
    assert largest in first["rationale"] and "edge" in first["rationale"], first["rationale"]
    assert first["calls_from_earlier_teams"] > 0
    for step in plan["steps"]:
        assert step["rationale"], step
    markdown = requests.get(base + "/api/v1/rollout-plan", params={"lookback": "1h", "format": "markdown"}, timeout=60)
    assert markdown.status_code == 200 and first["team"] in markdown.text
    # With only the gateway traced, each critical operation's gaps are the gateway's callees.
    operations = check_critical_operations(base, truth)
    for report in operations.values():
        assert [n["service"] for n in report["services"] if n["status"] == "instrumented"] == ["web-gateway"]


def test_a_shop_half_way_through_adoption(half_shop):
    base, truth = half_shop
    report = coverage(base)
    by_service = {s["service"]: s for s in report["services"]}
    assert {s for s, c in by_service.items() if c["status"] == "instrumented"} == set(truth["traced"])
    for name in truth["untraced_called"]:
        expected = {"database"} if truth["uninstrumented"].get(name) == "database" else {"not_instrumented", "external"}
        assert by_service[name]["status"] in expected, by_service[name]
    # Traced services called only through an untraced one start traces of their own: the report
    # says context is lost upstream of them, and nowhere else.
    lost = {s for s, c in by_service.items() if any(f["rule"] == "context_lost_upstream" for f in c["findings"])}
    visible_breaks = {(c, e) for c, e, _ in truth["propagation_breaks"] if c in truth["traced"] and e in truth["traced"]}
    assert lost == set(truth["roots_behind_untraced"]) | {callee for _, callee in visible_breaks}, lost
    assert {(b["caller"], b["callee"]) for b in report["breaks"]} == visible_breaks
    check_critical_operations(base, truth)

    plan = requests.get(base + "/api/v1/rollout-plan", params={"lookback": "1h"}, timeout=60).json()
    all_teams = {f["team"] for f in truth["services"].values()}
    assert sorted(t["team"] for t in plan["adopted"]) == sorted(HALF)
    assert plan["partial"] == []
    assert sorted(step["team"] for step in plan["steps"]) == sorted(all_teams - set(HALF))
    # Every team reachable from traced services is placed by the calls into it, before the
    # teams known from the catalog only.
    reasons = [step["reason"] for step in plan["steps"]]
    assert reasons == sorted(reasons, key=lambda r: r == "catalog_only"), reasons
    for step in plan["steps"]:
        if step["reason"] != "catalog_only":
            assert step["calls_from_earlier_teams"] > 0, step
            assert any(s in step["rationale"] for s in step["services"]), step


def test_the_cli_answers_the_same_questions(edge_only_shop):
    base, truth = edge_only_shop
    out = subprocess.run([CLEW_BIN, "coverage", "--server", base, "--output", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {s["service"] for s in report["services"] if s["status"] == "instrumented"} == set(truth["traced"])
    # The shop keeps sending: teams whose counts are close may trade places between two reads,
    # so the CLI's plan is compared with the API's read just before and just after it.
    def steps():
        plan = requests.get(base + "/api/v1/rollout-plan", params={"lookback": "1h"}, timeout=60).json()
        return [[str(s["step"]), s["team"]] for s in plan["steps"]]
    for _ in range(5):
        before = steps()
        out = subprocess.run([CLEW_BIN, "plan", "--server", base], capture_output=True, text=True)
        after = steps()
        assert out.returncode == 0, out.stderr
        rows = [line.split()[:2] for line in out.stdout.splitlines()[1:] if line.strip()]
        if before == after:
            break
    assert rows in (before, after), out.stdout
    assert "largest dependency of the entry team" in out.stdout.splitlines()[1]
    out = subprocess.run([CLEW_BIN, "directory", "telemetry.sdk.version", "--server", base, "--output", "json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert {e["service"] for e in json.loads(out.stdout)["entries"]} == set(truth["traced"])


def test_bad_parameters_get_a_clear_400(edge_only_shop):
    base, _ = edge_only_shop
    for path, params in [("/api/v1/coverage", {"lookback": "soon"}), ("/api/v1/coverage", {"format": "pdf"}),
                         ("/api/v1/rollout-plan", {"start": "x"}), ("/api/v1/directory/telemetry.sdk.version",
                                                                    {"start": "20", "end": "10"})]:
        response = requests.get(base + path, params=params, timeout=30)
        assert response.status_code == 400, (path, params, response.status_code, response.text)
        assert response.json()["error"], response.text


def test_a_broken_catalog_is_reported_with_its_line(tmp_path):
    good = subprocess.run([CLEW_BIN, "demo", "--print-catalog"], capture_output=True, text=True, check=True).stdout
    path = tmp_path / "catalog.yaml"
    path.write_text(good)
    out = subprocess.run([CLEW_BIN, "catalog", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "services" in out.stdout
    lines = good.splitlines()
    tier_line = next(i for i, line in enumerate(lines) if line.strip().startswith("tier:"))
    lines[tier_line] = lines[tier_line].replace(lines[tier_line].strip(), "tier: critical")
    path.write_text("\n".join(lines) + "\n")
    out = subprocess.run([CLEW_BIN, "catalog", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"line {tier_line + 1}" in out.stderr + out.stdout, out.stderr + out.stdout
    assert "tier" in out.stderr + out.stdout
