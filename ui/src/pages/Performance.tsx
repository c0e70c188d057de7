import { useEffect, useMemo, useRef, useState } from "react";
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";
import { useSearchParams } from "react-router-dom";

import { api, type ServiceGraph, type CorrelationReport, type CriticalPathNode, type CriticalPathReport, type TrafficEstimate, type TrafficTarget } from "../api";
import { Chart } from "../components/Chart";
import { Empty, Picker, Show, WarningPanels, currentTheme, useApi, useEntries } from "../components/common";
import { arrowEdge, labelledNode } from "../components/graphStyle";
import { LOOKBACKS, duration, serviceColour } from "../format";

cytoscape.use(dagre);

const BASELINES: [string, string][] = [
  ["previous", "The window before"],
  ["1h", "One hour earlier"],
  ["1d", "One day earlier"],
  ["7d", "One week earlier"],
];

function share(value: number): string {
  const p = 100 * value;
  return p > 0 && p < 0.1 ? "<0.1%" : `${p.toFixed(p < 10 ? 1 : 0)}%`;
}

function perSecond(value: number): string {
  if (value >= 100) return `${value.toFixed(0)}/s`;
  if (value >= 0.1) return `${value.toFixed(2)}/s`;
  return `${(value * 60).toFixed(2)}/min`;
}

// The critical path of an entry operation across its requests (CRISP): a flame graph of the
// calling contexts by their time on the critical path, the operations that cost the most, what
// a faster one would save, and what changed against a baseline window.
export function CriticalPathPage() {
  const [params, setParams] = useSearchParams();
  const lookback = params.get("lookback") ?? "1h";
  const baseline = params.get("baseline") ?? "";
  const faster = params.get("faster") ?? "20";
  const { entries, options } = useEntries(lookback);
  const chosen = params.get("entry") || options[0]?.[0] || "";
  const [service, operation] = chosen.split("\u0000");
  const report = useApi(() => {
    if (!service || !operation) return Promise.resolve(undefined);
    const query = new URLSearchParams({ lookback, service, operation, faster });
    if (baseline) query.set("baseline", baseline);
    return api.criticalPath(query);
  }, [lookback, chosen, baseline, faster]);
  const set = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    setParams(next);
  };
  const exportQuery = new URLSearchParams({ lookback, service: service ?? "", operation: operation ?? "" });
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>Critical path</h1>
        <Picker label="Time range" value={lookback} onChange={(v) => set("lookback", v)} options={LOOKBACKS} />
        <Picker label="Entry operation" value={chosen} onChange={(v) => set("entry", v)} options={options} testId="cp-entry" flex={1} />
        <Picker label="Compare with" value={baseline} onChange={(v) => set("baseline", v)} options={BASELINES} none="Nothing" testId="cp-baseline" />
        <label className="field">
          If faster by
          <select value={faster} onChange={(e) => set("faster", e.target.value)} data-testid="cp-faster">
            {["10", "20", "50", "100"].map((v) => (
              <option key={v} value={v}>
                {v}%
              </option>
            ))}
          </select>
        </label>
        {service && (
          <span className="form-row" style={{ fontSize: 12 }}>
            <span className="muted">Export:</span>
            <a href={`/api/v1/critical-path?${exportQuery}&format=markdown`} download="critical-path.md">
              Markdown
            </a>
            <a href={`/api/v1/critical-path?${exportQuery}&format=folded`} download="critical-path.folded">
              Folded stacks
            </a>
          </span>
        )}
      </div>
      <Show value={entries} what="the entry operations">
        {() =>
          !service ? (
            <Empty>No request has entered the system in this time range.</Empty>
          ) : (
            <Show value={report} what="the critical path">
              {(data) => (data ? <CriticalPathView report={data} /> : null)}
            </Show>
          )
        }
      </Show>
    </div>
  );
}

interface Frame {
  node: CriticalPathNode;
  start: number;
  end: number;
}

// Each context starts where its previous sibling ends, inside its caller: widths are mean
// critical-path time per request.
function flameFrames(nodes: CriticalPathNode[]): Frame[] {
  const children = new Map<string, CriticalPathNode[]>();
  for (const node of nodes) {
    if (node.parent === null) continue;
    const list = children.get(node.parent) ?? [];
    list.push(node);
    children.set(node.parent, list);
  }
  const frames: Frame[] = [];
  const place = (node: CriticalPathNode, start: number) => {
    frames.push({ node, start, end: start + node.total_per_request_nanos });
    let cursor = start;
    for (const child of children.get(node.id) ?? []) {
      if (child.id === node.id) continue;
      place(child, cursor);
      cursor += child.total_per_request_nanos;
    }
  };
  const root = nodes.find((n) => n.parent === null);
  if (root) place(root, 0);
  return frames;
}

function FlameGraph({ report }: { report: CriticalPathReport }) {
  const frames = useMemo(() => flameFrames(report.nodes), [report]);
  const depth = Math.max(1, ...frames.map((f) => f.node.depth + 1));
  const option = useMemo(
    () => ({
      tooltip: {
        formatter: (p: { dataIndex: number }) => {
          const n = frames[p.dataIndex]?.node;
          if (!n) return "";
          const name = n.parent === null ? `All requests of ${n.service} ${n.operation}` : `${n.service}: ${n.operation} (${n.kind})`;
          return [
            `<b>${name}</b>`,
            `On the critical path: ${duration(n.total_per_request_nanos)} per request (${share(n.share)} of the latency)`,
            `Itself: ${duration(n.self_per_request_nanos)} per request, p95 ${duration(n.self_p95_nanos)}`,
            `Runs ${n.calls_per_request.toFixed(2)} times per request, in ${share(n.reach)} of requests`,
          ].join("<br/>");
        },
      },
      grid: { left: 4, right: 4, top: 4, bottom: 24 },
      xAxis: {
        type: "value",
        min: 0,
        max: frames[0] ? frames[0].end / 1e6 : 1,
        axisLabel: { formatter: (v: number) => `${Number(v.toFixed(1))} ms` },
      },
      yAxis: { type: "value", inverse: true, min: 0, max: depth, show: false },
      series: [
        {
          type: "custom",
          renderItem: (_params: unknown, api: { value: (i: number) => number; coord: (v: number[]) => number[] }) => {
            const from = api.coord([api.value(0), api.value(2)]);
            const to = api.coord([api.value(1), api.value(2) + 1]);
            const width = Math.max(to[0] - from[0] - 1, 0.5);
            const frame = frames[api.value(3)];
            const label = frame.node.parent === null ? "all requests" : `${frame.node.service}: ${frame.node.operation}`;
            return {
              type: "rect",
              shape: { x: from[0], y: from[1], width, height: Math.max(to[1] - from[1] - 2, 1) },
              style: { fill: frame.node.parent === null ? "#888" : serviceColour(frame.node.service) },
              textContent: { style: { text: width > 48 ? label : "", fill: "#fff", fontSize: 11, overflow: "truncate", width: width - 6 } },
              textConfig: { position: "insideLeft" },
            };
          },
          encode: { x: [0, 1], y: 2 },
          data: frames.map((f, i) => [f.start / 1e6, f.end / 1e6, f.node.depth, i]),
        },
      ],
    }),
    [frames, depth],
  );
  return <Chart option={option} height={depth * 24 + 40} testId="cp-flame" />;
}

function CriticalPathView({ report }: { report: CriticalPathReport }) {
  const l = report.latency;
  return (
    <>
      <div className="panel" data-testid="cp-summary">
        {l.requests.toLocaleString()} requests · mean {duration(l.mean_nanos)} · p50 {duration(l.p50_nanos)} · p95{" "}
        {duration(l.p95_nanos)} · p99 {duration(l.p99_nanos)}. Each box is a calling context; its width is its mean time on
        the critical path per request, its callees' included.
      </div>
      <div className="panel">
        <FlameGraph report={report} />
      </div>
      <div className="panel">
        <h2>Where the time goes</h2>
        <table className="data" data-testid="cp-bottlenecks">
          <thead>
            <tr>
              <th>Operation</th>
              <th>Kind</th>
              <th className="num">On the critical path per request</th>
              <th>Share of the latency</th>
              <th className="num">p95</th>
              <th className="num">Saved if {report.faster_percent}% faster</th>
            </tr>
          </thead>
          <tbody>
            {report.bottlenecks.slice(0, 15).map((b) => (
              <tr key={`${b.service} ${b.operation} ${b.kind}`} data-testid="cp-bottleneck" data-service={b.service} data-operation={b.operation}>
                <td>
                  <span className="service-dot" style={{ background: serviceColour(b.service) }} />
                  {b.service}: {b.operation}
                </td>
                <td>{b.kind}</td>
                <td className="num">{duration(b.per_request_nanos)}</td>
                <td>
                  <span className="duration-bar" style={{ display: "inline-block", width: 100 * b.share, height: 8 }} /> {share(b.share)}
                </td>
                <td className="num">{duration(b.p95_nanos)}</td>
                <td className="num">
                  {duration(b.saved_per_request_nanos)} ({share(b.saved_share)})
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <p className="muted" style={{ fontSize: 12 }}>
          Saved: an upper bound, reached when no parallel call takes over the critical path.
        </p>
      </div>
      {report.baseline && (
        <div className="panel">
          <h2>Against the baseline</h2>
          <p>
            p95 {duration(report.baseline.latency.p95_nanos)} → {duration(l.p95_nanos)} · {report.baseline.latency.requests.toLocaleString()} →{" "}
            {l.requests.toLocaleString()} requests
          </p>
          <table className="data" data-testid="cp-changes">
            <thead>
              <tr>
                <th>Operation</th>
                <th className="num">Before</th>
                <th className="num">After</th>
                <th className="num">Change per request</th>
                <th className="num">Calls per request</th>
              </tr>
            </thead>
            <tbody>
              {report.baseline.changes.slice(0, 15).map((c) => (
                <tr key={`${c.service} ${c.operation} ${c.kind}`} data-testid="cp-change" data-service={c.service} data-operation={c.operation}>
                  <td>
                    {c.service}: {c.operation}
                  </td>
                  <td className="num">{duration(c.before_per_request_nanos)}</td>
                  <td className="num">{duration(c.after_per_request_nanos)}</td>
                  <td className="num" style={{ color: c.change_nanos > 0 ? "var(--error, #c0392b)" : undefined }}>
                    {c.change_nanos > 0 ? "+" : ""}
                    {duration(c.change_nanos)}
                  </td>
                  <td className="num">
                    {c.before_calls_per_request.toFixed(2)} → {c.after_calls_per_request.toFixed(2)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

interface PlanRow {
  entry: string;
  rate: string;
}

// Traffic estimation: planned peak rates per entry operation, through each one's fan-out, give
// the rate every operation should expect; against the busiest minute it has handled, that is
// its headroom, and the services short of it are the ones to scale or load-test first.
export function TrafficPage() {
  const [params, setParams] = useSearchParams();
  const lookback = params.get("lookback") ?? "1h";
  const others = params.get("others") ?? "1";
  const traffic = params.get("traffic") ?? "production";
  const measure = params.get("measure") === "load-test";
  const plan: PlanRow[] = params.getAll("plan").map((p) => {
    const [rate, ...rest] = p.split(" ");
    return { rate, entry: rest.join(" ") };
  });
  const { entries, options } = useEntries(lookback);
  const [draftEntry, setDraftEntry] = useState("");
  const [draftRate, setDraftRate] = useState("50");
  const estimate = useApi(() => {
    const query = new URLSearchParams({ lookback, traffic });
    if (measure) {
      query.set("measure", "load-test");
    } else {
      query.set("others", others);
      for (const p of plan) query.append("plan", `${p.rate} ${p.entry}`);
    }
    return api.trafficEstimate(query);
  }, [lookback, others, traffic, measure, params.getAll("plan").join("\n")]);
  const graph = useApi(() => api.serviceGraph(new URLSearchParams({ lookback })), [lookback]);
  const update = (change: (next: URLSearchParams) => void) => {
    const next = new URLSearchParams(params);
    change(next);
    setParams(next);
  };
  const entry = draftEntry || options[0]?.[0] || "";
  const add = () => {
    const [service, operation] = entry.split("\u0000");
    if (!service || !operation || !(Number(draftRate) >= 0)) return;
    update((next) => next.append("plan", `${draftRate} ${service} ${operation}`));
  };
  const remove = (index: number) =>
    update((next) => {
      const all = next.getAll("plan");
      next.delete("plan");
      all.filter((_, i) => i !== index).forEach((p) => next.append("plan", p));
    });
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>Traffic estimation</h1>
        <Picker label="Learn fan-out from" value={lookback} onChange={(v) => update((n) => n.set("lookback", v))} options={LOOKBACKS} />
        <Picker
          label="Of"
          value={traffic}
          onChange={(v) => update((n) => n.set("traffic", v))}
          options={[
            ["production", "Production (load tests left out)"],
            ["all", "All traffic"],
            ["load-test", "Load tests only"],
          ]}
          testId="traffic-source"
        />
        <Picker
          label="Against"
          value={measure ? "load-test" : "plan"}
          onChange={(v) => update((n) => (v === "load-test" ? n.set("measure", v) : n.delete("measure")))}
          options={[
            ["plan", "A planned peak"],
            ["load-test", "The load test running in the window"],
          ]}
          testId="traffic-mode"
        />
        {!measure && (
          <label className="field">
            Other entry operations at
            <select value={others} onChange={(e) => update((n) => n.set("others", e.target.value))} data-testid="traffic-others">
              {["1", "1.5", "2", "3", "5", "10"].map((v) => (
                <option key={v} value={v}>
                  {v}× today
                </option>
              ))}
            </select>
          </label>
        )}
      </div>
      {!measure && <div className="panel">
        <h2>Planned peak</h2>
        {plan.length === 0 && <p className="muted">No planned rate yet: every entry operation at its observed mean rate.</p>}
        <ul data-testid="traffic-plan">
          {plan.map((p, i) => (
            <li key={i}>
              {p.entry} at {p.rate}/s{" "}
              <button onClick={() => remove(i)} title="Remove">
                ✕
              </button>
            </li>
          ))}
        </ul>
        <div className="form-row">
          <Picker label="Entry operation" value={entry} onChange={setDraftEntry} options={options} testId="traffic-entry" flex={1} />
          <label className="field">
            Requests per second
            <input value={draftRate} onChange={(e) => setDraftRate(e.target.value)} data-testid="traffic-rate" style={{ width: 90 }} />
          </label>
          <button onClick={add} data-testid="traffic-add" disabled={entries.state !== "done"}>
            Add to the plan
          </button>
        </div>
      </div>}
      <Show value={estimate} what="the estimate">
        {(data) => (
          <>
            {graph.state === "done" && <HeadroomGraph estimate={data} graph={graph.data} />}
            {data.load_test ? <LoadTestView estimate={data} /> : <TrafficView estimate={data} />}
          </>
        )}
      </Show>
    </div>
  );
}

// An operation's first cell: its service's colour, then `service: operation`.
function OperationName({ target }: { target: { service: string; operation: string } }) {
  return (
    <td>
      <span className="service-dot" style={{ background: serviceColour(target.service) }} />
      {target.service}: {target.operation}
    </td>
  );
}

// Horizontal bars of rates per operation on a log axis, one series per quantity compared.
function rateBars(shown: TrafficTarget[], series: ({ name: string } & Record<string, unknown>)[]) {
  return {
    tooltip: { trigger: "axis" },
    legend: { data: series.map((s) => s.name) },
    grid: { left: 260, right: 16, top: 28, bottom: 24 },
    xAxis: { type: "log", min: 0.01, name: "requests/s", axisLabel: { formatter: (v: number) => perSecond(v) } },
    yAxis: { type: "category", inverse: true, data: shown.map((t) => `${t.service}: ${t.operation}`) },
    series,
  };
}

// Requests per traffic source in the window, load tests marked.
function Sources({ estimate }: { estimate: TrafficEstimate }) {
  if (estimate.sources.length === 0) return null;
  return (
    <span className="muted" data-testid="traffic-sources">
      Requests by source:{" "}
      {estimate.sources
        .map((s) => `${s.source === "" ? "untagged" : s.source} ${s.requests.toLocaleString()}${s.load_test ? " (load test)" : ""}`)
        .join(" · ")}
      .
    </span>
  );
}

const VERDICT_COLOURS: Record<string, string> = {
  "as expected": "#59a14f",
  "less than expected": "#edc948",
  "more than expected": "#f28e2b",
  "not reached": "#e15759",
  "not expected": "#b07aa1",
};

// During a load test: the test's own entry rates through production's fan-out give what each
// operation should get; beside it, what the test measured, and how its latency held up.
function LoadTestView({ estimate }: { estimate: TrafficEstimate }) {
  const test = estimate.load_test!;
  const shown = estimate.targets.filter((t) => t.measured).slice(0, 40);
  const option = useMemo(
    () =>
      rateBars(shown, [
        { name: "Expected", type: "bar", data: shown.map((t) => Math.max(t.expected_per_second, 0.01)), itemStyle: { color: "#a0a0a0" } },
        {
          name: "Measured",
          type: "bar",
          data: shown.map((t) => ({
            value: Math.max(t.measured!.per_second, 0.01),
            itemStyle: { color: VERDICT_COLOURS[t.measured!.verdict] },
          })),
        },
      ]),
    [shown],
  );
  const list = (title: string, items: string[], testId: string) =>
    items.length > 0 && (
      <div data-testid={testId}>
        <b>{title}:</b> {items.join(", ")}.
      </div>
    );
  return (
    <>
      <WarningPanels warnings={estimate.warnings} />
      <div className="panel" data-testid="loadtest-summary">
        <div>
          The load test sent {test.requests.toLocaleString()} requests in the {(test.seconds / 60).toFixed(0)} minutes that hold them (
          {test.entries.map((e) => `${e.service} ${e.operation} at ${perSecond(e.per_second)}`).join(", ")}); each operation expects what
          production's fan-out makes of those rates.
        </div>
        {list("Never reached (mocked, or a missing scenario)", test.not_reached, "loadtest-not-reached")}
        {list("Loaded differently from production", test.off_expectation, "loadtest-off")}
        {list("Slower under the load", test.slower, "loadtest-slower")}
        <Sources estimate={estimate} />
      </div>
      <div className="panel">
        <Chart option={option} height={Math.max(200, shown.length * 22 + 60)} testId="loadtest-chart" />
      </div>
      <div className="panel">
        <table className="data" data-testid="loadtest-table">
          <thead>
            <tr>
              <th>Operation</th>
              <th>Kind</th>
              <th className="num">Expected</th>
              <th className="num">Measured</th>
              <th className="num">Ratio</th>
              <th>Verdict</th>
              <th className="num">p95 baseline → load test</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((t) => {
              const m = t.measured!;
              return (
                <tr
                  key={`${t.service} ${t.operation} ${t.kind}`}
                  data-testid="loadtest-target"
                  data-service={t.service}
                  data-verdict={m.verdict}
                  data-slower={m.slower ? "yes" : "no"}
                >
                  <OperationName target={t} />
                  <td>{t.kind}</td>
                  <td className="num">{perSecond(t.expected_per_second)}</td>
                  <td className="num">{perSecond(m.per_second)}</td>
                  <td className="num">{m.ratio === null ? "–" : `${m.ratio.toFixed(2)}×`}</td>
                  <td style={{ color: VERDICT_COLOURS[m.verdict] }}>{m.verdict}</td>
                  <td className="num" style={{ color: m.slower ? "var(--error, #c0392b)" : undefined }}>
                    {m.baseline_p95_ms === null ? "–" : m.baseline_p95_ms.toFixed(1)} → {m.p95_ms.toFixed(1)} ms
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </>
  );
}

function TrafficView({ estimate }: { estimate: TrafficEstimate }) {
  const shown = estimate.targets.slice(0, 40);
  const option = useMemo(
    () =>
      rateBars(shown, [
        {
          name: "Expected",
          type: "bar",
          data: shown.map((t) => ({
            value: Math.max(t.expected_per_second, 0.01),
            itemStyle: { color: t.scale ? "#e15759" : "#59a14f" },
          })),
        },
        { name: "Busiest minute so far", type: "bar", data: shown.map((t) => Math.max(t.observed_peak_per_second, 0.01)), itemStyle: { color: "#a0a0a0" } },
      ]),
    [shown],
  );
  return (
    <>
      <WarningPanels warnings={estimate.warnings} />
      <div className="panel" data-testid="traffic-summary">
        {estimate.scale_services.length === 0 ? (
          <span>Every operation has already handled at least its expected rate.</span>
        ) : (
          <span>
            <b>To scale or load-test first:</b> {estimate.scale_services.join(", ")}.
          </span>
        )}{" "}
        <span className="muted">Fan-out learnt from {(estimate.observed_seconds / 60).toFixed(0)} minutes of traffic.</span>{" "}
        <Sources estimate={estimate} />
      </div>
      <div className="panel">
        <Chart option={option} height={Math.max(200, shown.length * 22 + 60)} testId="traffic-chart" />
      </div>
      <div className="panel">
        <table className="data" data-testid="traffic-table">
          <thead>
            <tr>
              <th>Operation</th>
              <th>Kind</th>
              <th className="num">Expected</th>
              <th className="num">Busiest minute</th>
              <th className="num">Mean today</th>
              <th className="num">Headroom</th>
              <th>Largest source</th>
            </tr>
          </thead>
          <tbody>
            {estimate.targets.map((t) => (
              <tr
                key={`${t.service} ${t.operation} ${t.kind}`}
                data-testid="traffic-target"
                data-service={t.service}
                data-operation={t.operation}
                data-scale={t.scale ? "yes" : "no"}
              >
                <OperationName target={t} />
                <td>{t.kind}</td>
                <td className="num">{perSecond(t.expected_per_second)}</td>
                <td className="num">{perSecond(t.observed_peak_per_second)}</td>
                <td className="num">{perSecond(t.observed_mean_per_second)}</td>
                <td className="num" style={{ color: t.scale ? "var(--error, #c0392b)" : undefined }}>
                  {t.headroom === null ? "–" : `${t.headroom.toFixed(2)}×`}
                </td>
                <td className="muted">
                  {t.contributions[0] ? `${t.contributions[0].entry_operation} (${t.contributions[0].mean_per_request.toFixed(2)}/request)` : ""}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

// Display buckets for latency histograms: four per power of two.
const PER_OCTAVE = 4;
const displayBucket = (nanos: number) => Math.floor(PER_OCTAVE * Math.log2(Math.max(nanos, 1)));
const bucketStart = (bucket: number) => Math.pow(2, bucket / PER_OCTAVE);

// Correlations (BubbleUp): brush a range of an operation's latency histogram, a region of its
// time × latency heatmap, pick its failures, or write a TraceQL query; see which attribute
// values (and which numeric attributes' distributions) set those spans apart from the rest.
type CorrelationMode = "latency" | "region" | "errors" | "traceql";

export function CorrelationsPage() {
  const [params, setParams] = useSearchParams();
  const lookback = params.get("lookback") ?? "1h";
  const service = params.get("service") ?? "";
  const operation = params.get("operation") ?? "";
  const mode: CorrelationMode =
    params.get("errors") === "true" ? "errors" : ((params.get("mode") as CorrelationMode | null) ?? "latency");
  const min = params.get("min_duration") ?? "";
  const max = params.get("max_duration") ?? "";
  const from = params.get("from") ?? "";
  const to = params.get("to") ?? "";
  const q = params.get("q") ?? "";
  const [draft, setDraft] = useState(q);
  useEffect(() => setDraft(q), [q]);
  const services = useApi(() => api.services(), []);
  const operations = useApi(() => (service ? api.operations(service) : Promise.resolve([])), [service]);
  // A TraceQL selection may range over every service; the other selections need one.
  const chosenService = service || (mode === "traceql" ? "" : services.state === "done" ? services.data[0]?.name ?? "" : "");
  const report = useApi(() => {
    if (!chosenService && mode !== "traceql") return Promise.resolve(undefined);
    if (mode === "traceql" && !q) return Promise.resolve(undefined);
    const query = new URLSearchParams({ lookback });
    if (chosenService) query.set("service", chosenService);
    // One operation, or the service's requests (its SERVER spans): not spans of every kind mixed.
    if (operation) query.set("operation", operation);
    else if (chosenService) query.set("kind", "server");
    if (mode === "errors") query.set("errors", "true");
    else if (mode === "traceql") query.set("q", q);
    else if (min || max || from || to) {
      if (min) query.set("min_duration", min);
      if (max) query.set("max_duration", max);
      if (mode === "region" && from) query.set("from", from);
      if (mode === "region" && to) query.set("to", to);
    } else {
      // Before a selection is brushed: the slowest spans (from 1 s down), a useful default.
      query.set("min_duration", "1000000000");
    }
    return api.correlations(query);
  }, [lookback, chosenService, operation, mode, min, max, from, to, q]);
  const update = (change: (next: URLSearchParams) => void) => {
    const next = new URLSearchParams(params);
    change(next);
    setParams(next);
  };
  const onBrush = (range: [number, number] | null) =>
    update((next) => {
      next.delete("errors");
      if (!range) return;
      next.set("min_duration", String(Math.round(range[0])));
      next.set("max_duration", String(Math.round(range[1])));
    });
  const onRegion = (region: { from: number; to: number; min: number; max: number }) =>
    update((next) => {
      next.delete("errors");
      next.set("mode", "region");
      next.set("from", String(Math.round(region.from)));
      next.set("to", String(Math.round(region.to)));
      next.set("min_duration", String(Math.round(region.min)));
      next.set("max_duration", String(Math.round(region.max)));
    });
  const setMode = (value: string) =>
    update((n) => {
      n.delete("errors");
      n.set("mode", value);
      if (value === "errors" || value === "traceql") {
        n.delete("min_duration");
        n.delete("max_duration");
      }
      if (value !== "region") {
        n.delete("from");
        n.delete("to");
      }
      if (value !== "traceql") n.delete("q");
    });
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>Correlations</h1>
        <Picker label="Time range" value={lookback} onChange={(v) => update((n) => n.set("lookback", v))} options={LOOKBACKS} />
        <Picker
          label="Service"
          value={chosenService}
          none={mode === "traceql" ? "Every service" : undefined}
          onChange={(v) =>
            update((n) => {
              if (v) n.set("service", v);
              else n.delete("service");
              n.delete("operation");
            })
          }
          options={services.state === "done" ? services.data.map((s) => [s.name, s.name]) : []}
          testId="corr-service"
        />
        <Picker
          label="Operation"
          value={operation}
          none="Its requests (every server operation)"
          onChange={(v) => update((n) => (v ? n.set("operation", v) : n.delete("operation")))}
          options={operations.state === "done" ? [...new Set(operations.data.map((o) => o.name))].map((o) => [o, o]) : []}
          testId="corr-operation"
          flex={1}
        />
        <label className="field">
          Compare
          <select value={mode} onChange={(e) => setMode(e.target.value)} data-testid="corr-mode">
            <option value="latency">A latency range (brush the histogram)</option>
            <option value="region">A region of time × latency (brush the heatmap)</option>
            <option value="errors">The failed spans</option>
            <option value="traceql">The spans a TraceQL query matches</option>
          </select>
        </label>
      </div>
      {mode === "traceql" && (
        <form
          className="form-row"
          style={{ marginBottom: 12 }}
          onSubmit={(e) => {
            e.preventDefault();
            update((n) => n.set("q", draft));
          }}
        >
          <input
            className="mono"
            style={{ flex: 1 }}
            value={draft}
            placeholder='{ span.cloud.region = "us-east-1" && duration > 50ms }'
            onChange={(e) => setDraft(e.target.value)}
            data-testid="corr-traceql"
          />
          <button type="submit" data-testid="corr-run">
            Compare
          </button>
        </form>
      )}
      <Show value={report} what="the correlations">
        {(data) =>
          data ? (
            <CorrelationView
              report={data}
              mode={mode}
              chosen={mode === "errors" || mode === "traceql" || !!(min || max || from || to)}
              onBrush={onBrush}
              onRegion={onRegion}
            />
          ) : (
            <Empty>{mode === "traceql" ? "Write a TraceQL query to choose the spans to explain." : "No service yet."}</Empty>
          )
        }
      </Show>
    </div>
  );
}

// Heatmap rows: two per power of two, as the server counts them.
const heatRow = (nanos: number) => Math.round(2 * Math.log2(Math.max(nanos, 1)));
const heatBound = (row: number) => Math.pow(2, row / 2);

function clockTime(unixNanos: number): string {
  return new Date(unixNanos / 1e6).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function CorrelationView({
  report,
  mode,
  chosen,
  onBrush,
  onRegion,
}: {
  report: CorrelationReport;
  mode: CorrelationMode;
  // Whether the person chose the selection (else it is the default: spans of a second or more).
  chosen: boolean;
  onBrush: (range: [number, number] | null) => void;
  onRegion: (region: { from: number; to: number; min: number; max: number }) => void;
}) {
  const { buckets, option } = useMemo(() => {
    const all = new Map<number, number>();
    const chosen = new Map<number, number>();
    for (const [nanos, count] of report.latency) all.set(displayBucket(nanos), (all.get(displayBucket(nanos)) ?? 0) + count);
    for (const [nanos, count] of report.selected_latency)
      chosen.set(displayBucket(nanos), (chosen.get(displayBucket(nanos)) ?? 0) + count);
    const keys = [...all.keys()];
    const first = Math.min(...keys);
    const last = Math.max(...keys);
    const buckets: number[] = [];
    for (let b = first; keys.length && b <= last; b++) buckets.push(b);
    const option = {
      tooltip: { trigger: "axis" },
      legend: { data: ["Selection", "Baseline"], top: 0, right: 8 },
      grid: { left: 56, right: 16, top: 32, bottom: 28 },
      brush: { xAxisIndex: 0, brushType: "lineX", brushMode: "single", throttleType: "debounce", throttleDelay: 400 },
      xAxis: { type: "category", data: buckets.map((b) => duration(bucketStart(b))) },
      yAxis: { type: "value", name: "spans" },
      series: [
        { name: "Selection", type: "bar", stack: "all", data: buckets.map((b) => chosen.get(b) ?? 0), itemStyle: { color: "#e15759" } },
        {
          name: "Baseline",
          type: "bar",
          stack: "all",
          data: buckets.map((b) => Math.max(0, (all.get(b) ?? 0) - (chosen.get(b) ?? 0))),
          itemStyle: { color: "#a0a0a0" },
        },
      ],
    };
    return { buckets, option };
  }, [report]);
  const brushed = useMemo(
    () => (indexes: number[]) => {
      if (!indexes.length) return;
      const lo = Math.min(...indexes);
      const hi = Math.max(...indexes);
      onBrush([bucketStart(buckets[lo]), bucketStart(buckets[hi] + 1)]);
    },
    [buckets, onBrush],
  );
  const heat = useMemo(() => {
    const columns = Math.max(1, Math.ceil((report.end_unix_nano - report.start_unix_nano) / Math.max(report.heatmap_step_nanos, 1)));
    const rowsSeen = report.heatmap.map((c) => heatRow(c.min_nanos));
    const low = Math.min(...rowsSeen);
    const high = Math.max(...rowsSeen);
    const rows: number[] = [];
    for (let r = low; rowsSeen.length && r <= high; r++) rows.push(r);
    const columnStart = (c: number) => report.start_unix_nano + c * report.heatmap_step_nanos;
    let most = 1;
    const data = report.heatmap.map((c) => {
      most = Math.max(most, c.spans);
      return {
        value: [c.column, heatRow(c.min_nanos) - low, c.spans, c.selected],
        itemStyle: c.selected > 0 ? { borderColor: "#e15759", borderWidth: 1.5 } : undefined,
      };
    });
    const option = {
      tooltip: {
        formatter: (p: { value: number[] }) =>
          `${clockTime(columnStart(p.value[0]))}, ${duration(heatBound(rows[p.value[1]]))}–${duration(heatBound(rows[p.value[1]] + 1))}<br/>${p.value[2]} spans, ${p.value[3]} selected`,
      },
      grid: { left: 64, right: 96, top: 24, bottom: 32 },
      brush: { xAxisIndex: 0, yAxisIndex: 0, brushType: "rect", brushMode: "single", throttleType: "debounce", throttleDelay: 400 },
      xAxis: { type: "category", data: Array.from({ length: columns }, (_, c) => clockTime(columnStart(c))), splitArea: { show: false } },
      yAxis: { type: "category", data: rows.map((r) => duration(heatBound(r))), name: "latency" },
      visualMap: {
        // The colour is the span count (the value's third dimension), not the selected count.
        dimension: 2,
        min: 0,
        max: most,
        calculable: true,
        orient: "vertical",
        right: 8,
        top: "middle",
        text: ["spans", ""],
        inRange: { color: ["#e8eef5", "#4e79a7", "#1b2a49"] },
      },
      series: [{ type: "heatmap", data }],
    };
    const toRegion = (range: number[][]) => {
      const [[x0, x1], [y0, y1]] = range.map((r) => [Math.max(0, Math.round(Math.min(...r))), Math.round(Math.max(...r))]);
      const top = Math.min(y1, rows.length - 1);
      if (!rows.length || y0 > top) return;
      onRegion({ from: columnStart(x0), to: columnStart(Math.min(x1, columns - 1) + 1), min: heatBound(rows[y0]), max: heatBound(rows[top] + 1) });
    };
    return { option, toRegion };
  }, [report, onRegion]);
  const shown = report.correlations.filter((c) => c.significant).slice(0, 25);
  const numeric = report.numeric.filter((n) => n.significant).slice(0, 10);
  return (
    <>
      <WarningPanels warnings={chosen || report.selected > 0 ? report.warnings : []} />
      <div className="panel" data-testid="corr-summary">
        <b>{report.selection}</b>: {report.selected.toLocaleString()} spans against {report.baseline.toLocaleString()} others.{" "}
        {mode === "latency" && <span className="muted">Drag across the histogram to choose another latency range.</span>}
        {mode === "region" && <span className="muted">Drag a rectangle over the heatmap to choose a time and latency region.</span>}
        {report.notes.map((n) => (
          <div key={n} className="muted" style={{ fontSize: 12 }} data-testid="corr-note">
            {n}
          </div>
        ))}
      </div>
      <div className="panel">
        {mode === "region" ? (
          <Chart option={heat.option} height={320} onBrushArea={heat.toRegion} testId="corr-heatmap" />
        ) : (
          <Chart option={option} height={240} onBrush={mode === "latency" ? brushed : undefined} testId="corr-histogram" />
        )}
      </div>
      <div className="panel">
        {shown.length === 0 ? (
          <Empty>No attribute value is significantly more or less common in the selection.</Empty>
        ) : (
          <table className="data" data-testid="corr-table">
            <thead>
              <tr>
                <th>Attribute</th>
                <th>Value</th>
                <th>Score</th>
                <th className="num">In the selection</th>
                <th className="num">In the baseline</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((c) => (
                <tr key={`${c.key}=${c.value}`} data-testid="corr-row" data-key={c.key} data-value={c.value}>
                  <td>{c.key}</td>
                  <td>{c.value}</td>
                  <td>
                    <span
                      className="duration-bar"
                      style={{
                        display: "inline-block",
                        width: 50 * Math.abs(c.score),
                        height: 8,
                        background: c.score > 0 ? "#e15759" : "#4e79a7",
                      }}
                    />{" "}
                    {c.score > 0 ? "+" : ""}
                    {c.score.toFixed(2)}
                  </td>
                  <td className="num">
                    {share(c.selected_share)} ({c.selected.toLocaleString()})
                  </td>
                  <td className="num">
                    {share(c.baseline_share)} ({c.baseline.toLocaleString()})
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
      {numeric.length > 0 && (
        <div className="panel">
          <h3 style={{ marginTop: 0 }}>Numeric attributes whose distribution differs</h3>
          <table className="data" data-testid="corr-numeric">
            <thead>
              <tr>
                <th>Attribute</th>
                <th>Difference (KS)</th>
                <th className="num">Median: selection / baseline</th>
                <th className="num">p90: selection / baseline</th>
              </tr>
            </thead>
            <tbody>
              {numeric.map((n) => (
                <tr key={n.key} data-testid="corr-numeric-row" data-key={n.key} data-direction={n.direction}>
                  <td>{n.key}</td>
                  <td>
                    <span
                      style={{ display: "inline-block", width: 60 * n.statistic, height: 8, background: n.direction === "higher" ? "#e15759" : "#4e79a7" }}
                    />{" "}
                    {n.statistic.toFixed(2)} ({n.direction} in the selection)
                  </td>
                  <td className="num">
                    {n.selected_median.toLocaleString()} / {n.baseline_median.toLocaleString()}
                  </td>
                  <td className="num">
                    {n.selected_p90.toLocaleString()} / {n.baseline_p90.toLocaleString()}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

// The service map coloured by each service's least headroom under the plan: red where the
// expected rate is above the busiest minute so far, amber under twice it, green beyond.
function HeadroomGraph({ estimate, graph }: { estimate: TrafficEstimate; graph: ServiceGraph }) {
  const element = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!element.current) return;
    const dark = currentTheme() === "dark";
    const least = new Map<string, number>();
    // During a load test: each service's furthest verdict (as its least "headroom": 0 never
    // reached, 1 off expectation or slower, 2 as expected).
    const measuring = estimate.load_test !== undefined;
    for (const t of estimate.targets) {
      const value = measuring
        ? t.measured
          ? t.measured.verdict === "not reached"
            ? 0
            : t.measured.verdict !== "as expected" || t.measured.slower
              ? 1
              : 2
          : null
        : t.headroom;
      if (value === null) continue;
      least.set(t.service, Math.min(least.get(t.service) ?? Infinity, value));
    }
    const colour = (name: string) => {
      const h = least.get(name);
      if (h === undefined) return dark ? "#3a4150" : "#dee2e6";
      return h < 1 ? "#e15759" : h < 2 ? "#edc948" : "#59a14f";
    };
    const label = (h: number) => (measuring ? ["not reached", "off", "as expected"][h] : `${h.toFixed(2)}×`);
    const nodes = graph.nodes.filter((n) => n.kind !== "virtual");
    const names = new Set(nodes.map((n) => n.name));
    const instance = cytoscape({
      container: element.current,
      wheelSensitivity: 0.3,
      elements: [
        ...nodes.map((n) => {
          const h = least.get(n.name);
          return {
            data: {
              id: n.name,
              label: h === undefined ? n.name : `${n.name}\n${label(h)}`,
              colour: colour(n.name),
              headroom: h === undefined ? "none" : h < 1 ? "short" : "ok",
            },
          };
        }),
        ...graph.edges
          .filter((e) => names.has(e.parent) && names.has(e.child))
          .map((e) => ({ data: { id: `${e.parent}->${e.child}`, source: e.parent, target: e.child } })),
      ],
      style: [
        { selector: "node", style: { ...labelledNode(dark, 11), width: 22, height: 22 } },
        { selector: "edge", style: arrowEdge(dark, 1.2) },
      ],
      layout: { name: "dagre", rankDir: "LR", nodeSep: 20, rankSep: 70 } as cytoscape.LayoutOptions,
    });
    return () => instance.destroy();
  }, [estimate, graph]);
  return (
    <div className="panel">
      <div ref={element} className="map" style={{ height: 420 }} data-testid="traffic-graph" />
      <p className="muted" style={{ fontSize: 12, margin: 0 }}>
        {estimate.load_test
          ? "Each service under the load test: red, never reached; amber, loaded differently from production or slower under the load; green, as expected."
          : "Each service's least headroom under the plan: red, it has never handled the expected rate; amber, less than twice it."}
      </p>
    </div>
  );
}
