"""Critical user operations registered over the API and the CLI: kept across restarts, listed
beside the catalog's, narrowed by a TraceQL filter on the entry span, and refused with a clear
reason when they are wrong or belong to the catalog file."""
import subprocess
import time

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import CLEW_BIN
from test_ui import browser, page, shot  # noqa: F401 (fixtures)

SERVICE = "registry-gateway"


def send_requests(server):
    """Six POST /checkout (two failing) and four GET /checkout, all on the route /checkout, and
    three GET /items."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.otlp_http)))
    tracer = provider.get_tracer("test")
    shapes = [("POST", "/checkout", i < 2) for i in range(6)] + [("GET", "/checkout", False)] * 4 + [("GET", "/items", False)] * 3
    for method, route, failing in shapes:
        attributes = {"http.request.method": method, "http.route": route}
        with tracer.start_as_current_span(f"{method} {route}", kind=SpanKind.SERVER, attributes=attributes) as span:
            if failing:
                span.set_status(Status(StatusCode.ERROR, "declined"))
    provider.force_flush()


def operations(server):
    response = server.get("/api/v1/critical-operations", lookback="1h")
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["operations"]}


def put(server, name, body):
    return requests.put(f"{server.query}/api/v1/critical-operations/{requests.utils.quote(name, safe='')}", json=body,
                        timeout=30)


def test_critical_operations_registered_over_the_api(clew_factory, tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"critical_operations:\n  - name: Browse\n    service: {SERVICE}\n    operation: GET /items\n")
    server = clew_factory(extra_env={"CLEW_ADOPTION__CATALOG_FILE": str(catalog)}).start()
    send_requests(server)

    created = put(server, "Pay", {"service": SERVICE, "route": "/checkout",
                                  "traceql": '{ span.http.request.method = "POST" }'})
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "api"
    # The server's answer can be sent back as it is.
    assert put(server, "Pay", created.json()).status_code == 200
    replaced = put(server, "Pay", {"service": SERVICE, "route": "/checkout", "description": "A customer pays.",
                                   "traceql": '{ span.http.request.method = "POST" }'})
    assert replaced.status_code == 200, replaced.text

    # The TraceQL filter keeps the POSTs of the route: six requests, two failing.
    deadline = time.time() + 30
    while time.time() < deadline:
        listed = operations(server)
        if listed["Pay"]["requests"] == 6 and listed["Browse"]["requests"] == 3:
            break
        time.sleep(0.3)
    assert (listed["Pay"]["requests"], listed["Pay"]["errors"]) == (6, 2), listed["Pay"]
    assert listed["Pay"]["description"] == "A customer pays."
    assert {name: o["source"] for name, o in listed.items()} == {"Browse": "catalog", "Pay": "api"}

    # Wrong definitions are refused with the reason and change nothing.
    for body, expected in [
        ({"service": SERVICE, "traceql": "{ } >> { span.http.route = \"/checkout\" }"}, "one { … } of conditions"),
        ({"service": SERVICE, "traceql": "{ span.http.route = }"}, "TraceQL:"),
        ({"service": SERVICE}, "needs an operation"),
        ({"service": SERVICE, "operation": "GET /a", "route": "/a"}, "both an operation and a route"),
        ({"operation": "GET /a"}, "missing field `service`"),
        ({"service": SERVICE, "operation": "GET /a", "owner": "x"}, "unknown field `owner`"),
    ]:
        response = put(server, "Wrong", body)
        assert response.status_code == 400 and expected in response.json()["error"]["message"], (body, response.text)
    malformed = requests.put(f"{server.query}/api/v1/critical-operations/Wrong", data=b"{not json", timeout=30)
    assert malformed.status_code == 400 and "JSON object" in malformed.json()["error"]["message"]
    # What the catalog file defines is changed there.
    for response in (put(server, "Browse", {"service": SERVICE, "operation": "GET /items"}),
                     requests.delete(f"{server.query}/api/v1/critical-operations/Browse", timeout=30)):
        assert response.status_code == 409 and "catalog file" in response.json()["error"]["message"], response.text
    assert set(operations(server)) == {"Browse", "Pay"}
    # A registered name the catalog comes to define too: the catalog's is used, and the
    # registered one can still be removed.
    assert put(server, "Later", {"service": SERVICE, "operation": "GET /items"}).status_code == 201
    catalog.write_text(catalog.read_text() + f"  - name: Later\n    service: {SERVICE}\n    route: /items\n")
    listed = server.get("/api/v1/critical-operations", lookback="1h").json()
    assert any('"Later" is not used' in w for w in listed["warnings"]), listed["warnings"]
    assert [o["source"] for o in listed["operations"] if o["name"] == "Later"] == ["catalog"]
    assert requests.delete(f"{server.query}/api/v1/critical-operations/Later", timeout=30).status_code == 204
    assert not any("Later" in w for w in server.get("/api/v1/critical-operations", lookback="1h").json()["warnings"])
    catalog.write_text(catalog.read_text().split("  - name: Later")[0])

    # The CLI registers and removes too.
    out = subprocess.run([CLEW_BIN, "register-operation", "Look at the cart", "--service", SERVICE, "--operation",
                          "GET /checkout", "--server", server.query], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "registered" in out.stdout, out.stderr
    assert operations(server)["Look at the cart"]["requests"] == 4
    out = subprocess.run([CLEW_BIN, "register-operation", "Bad", "--service", SERVICE, "--traceql", "{ } >> { }",
                          "--server", server.query], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "traceql" in out.stderr, (out.stdout, out.stderr)

    # Registered operations outlive a restart.
    server.stop()
    server.start()
    after = operations(server)
    assert set(after) == {"Browse", "Pay", "Look at the cart"}
    assert after["Pay"]["traceql"] == '{ span.http.request.method = "POST" }'
    out = subprocess.run([CLEW_BIN, "remove-operation", "Look at the cart", "--server", server.query],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([CLEW_BIN, "remove-operation", "Look at the cart", "--server", server.query],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "no critical operation" in out.stderr, (out.stdout, out.stderr)
    assert requests.delete(f"{server.query}/api/v1/critical-operations/Pay", timeout=30).status_code == 204
    assert server.get("/api/v1/critical-operations/Pay").status_code == 404
    assert set(operations(server)) == {"Browse"}


def test_critical_operations_are_registered_and_removed_on_the_page(clew, page):  # noqa: F811 (fixture)
    send_requests(clew)
    page.goto(clew.query + "/operations")
    page.click("[data-testid=register-open]")
    page.fill("[data-testid=register-name]", "Pay")
    page.fill("[data-testid=register-service]", SERVICE)
    page.select_option("[data-testid=register-by]", "route")
    page.fill("[data-testid=register-entry]", "/checkout")
    # A filter the server cannot use is refused on the page, with the reason.
    page.fill("[data-testid=register-traceql]", "{ } >> { }")
    page.click("[data-testid=register-submit]")
    assert "one { … } of conditions" in page.inner_text("[data-testid=register-error]")
    page.fill("[data-testid=register-traceql]", '{ span.http.request.method = "POST" }')
    page.click("[data-testid=register-submit]")
    card = page.locator("[data-testid=critical-operation][data-name=Pay]")
    card.wait_for(timeout=15_000)
    assert card.locator("[data-testid=operation-source]").inner_text() == "registered"
    registered = operations(clew)["Pay"]
    assert (registered["route"], registered["traceql"]) == ("/checkout", '{ span.http.request.method = "POST" }')
    deadline = time.time() + 30
    while operations(clew)["Pay"]["requests"] < 6 and time.time() < deadline:
        time.sleep(0.3)
    page.reload()
    card.wait_for(timeout=15_000)
    assert "6 requests" in card.locator("[data-testid=operation-stats]").inner_text()
    shot(page, "critical-operation-registered")
    page.once("dialog", lambda dialog: dialog.accept())
    card.locator("[data-testid=operation-remove]").click()
    page.wait_for_selector("[data-testid=critical-operation][data-name=Pay]", state="detached", timeout=15_000)
    assert operations(clew) == {}
