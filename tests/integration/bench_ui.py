"""Times the trace view on a big trace: from navigation to the first screen of waterfall rows,
in headless Chromium, against the real binary. Prints the numbers; asserts nothing about them.

    scripts/bench-ui [--spans 20000] [--runs 7]
"""
import argparse
import random
import statistics
import tempfile
import time

import requests
from playwright.sync_api import sync_playwright

from conftest import Clew
from test_ui import CHROMIUM, CHROMIUM_FLAGS


def kv(key, value):
    return {"key": key, "value": {"stringValue": value}}


def big_trace(spans, trace_id, services=12, seed=7):
    """A tree of `spans` spans over `services` services: each span has 0–6 children."""
    rng = random.Random(seed)
    t0 = (int(time.time()) - 60) * 1_000_000_000
    total = 20_000_000_000
    nodes = [("%016x" % 1, None, t0, t0 + total, 0)]
    queue = [0]
    while len(nodes) < spans and queue:
        parent_index = queue.pop(0)
        span_id, _, start, end, depth = nodes[parent_index]
        for _ in range(rng.randint(1, 6)):
            if len(nodes) >= spans:
                break
            width = max(1000, (end - start) // rng.randint(2, 8))
            child_start = start + rng.randint(0, max(1, end - start - width))
            nodes.append(("%016x" % (len(nodes) + 1), span_id, child_start, child_start + width, depth + 1))
            queue.append(len(nodes) - 1)
    by_service = {}
    for i, (span_id, parent, start, end, depth) in enumerate(nodes):
        service = f"service-{(depth * 3 + i % 2) % services}"
        span = {"traceId": trace_id, "spanId": span_id, "name": f"operation-{depth}-{i % 7}", "kind": 2 if i % 2 else 3,
                "startTimeUnixNano": str(start), "endTimeUnixNano": str(end),
                "attributes": [kv("http.route", f"/route/{i % 50}"), kv("note", "x" * 20)]}
        if parent:
            span["parentSpanId"] = parent
        by_service.setdefault(service, []).append(span)
    return by_service


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    trace_id = "b16b16b16b16b16b16b16b16b16b16b1"
    with tempfile.TemporaryDirectory(prefix="clew-bench-ui-") as directory:
        clew = Clew(directory, idle_seconds=1).start()
        try:
            for service, spans in big_trace(args.spans, trace_id).items():
                for i in range(0, len(spans), 2000):
                    body = {"resourceSpans": [{"resource": {"attributes": [kv("service.name", service)]},
                                               "scopeSpans": [{"spans": spans[i:i + 2000]}]}]}
                    response = requests.post(clew.otlp_http, json=body, timeout=60)
                    response.raise_for_status()
            deadline = time.time() + 120
            while time.time() < deadline:
                response = clew.get(f"/api/v1/traces/{trace_id}")
                if response.ok and response.json()["spanCount"] >= args.spans:
                    break
                time.sleep(0.5)
            api_times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                clew.get(f"/api/v1/traces/{trace_id}").raise_for_status()
                api_times.append(time.perf_counter() - start)
            with tempfile.TemporaryDirectory(prefix="clew-chromium-") as profile, sync_playwright() as p:
                browser = p.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                    viewport={"width": 1280, "height": 800})
                times = []
                for run in range(args.runs + 1):
                    page = browser.new_page()
                    start = time.perf_counter()
                    page.goto(f"{clew.query}/trace/{trace_id}", wait_until="commit")
                    page.wait_for_selector("[data-testid=span-row]", timeout=60_000)
                    elapsed = time.perf_counter() - start
                    rows = page.locator("[data-testid=span-row]").count()
                    shown = page.locator("[data-testid=span-count]").inner_text()
                    page.close()
                    if run > 0:  # the first run also fills the browser's cache with the page's assets
                        times.append(elapsed)
                browser.close()
            print(f"trace of {shown} spans; {rows} rows rendered on the first screen (virtualised)")
            print(f"API GET /api/v1/traces/{{id}}: median {statistics.median(api_times) * 1000:.0f} ms")
            print(f"first screen in Chromium: median {statistics.median(times) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms over {len(times)} runs (target < 1000 ms)")
        finally:
            clew.stop()


if __name__ == "__main__":
    main()
