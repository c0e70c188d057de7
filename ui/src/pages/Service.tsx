import { useMemo } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router-dom";

import { api, type RedPoint, type ServiceRed } from "../api";
import { Empty, Show, useApi } from "../components/common";
import { Chart } from "../components/Chart";
import { Picker } from "../components/common";
import { LOOKBACKS, ago, duration, percent, rate, serviceColour } from "../format";

// Every service Clew has seen, with its traffic over the last hour.
export function ServicesPage() {
  const graph = useApi(() => api.serviceGraph(new URLSearchParams({ lookback: "1h" })), []);
  const services = useApi(() => api.services(), []);
  return (
    <div>
      <h1>Services</h1>
      <Show value={services} what="services">
        {(list) =>
          list.length === 0 ? (
            <Empty>No service has sent spans yet. Point an OpenTelemetry SDK at :4317 or :4318.</Empty>
          ) : (
            <div className="panel">
              <table className="data" data-testid="services-table">
                <thead>
                  <tr>
                    <th>Service</th>
                    <th className="num">Spans stored</th>
                    <th className="num">Rate (last hour)</th>
                    <th className="num">Errors</th>
                    <th className="num">p95</th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((s) => {
                    const node =
                      graph.state === "done" ? graph.data.nodes.find((n) => n.name === s.name && n.kind === "service") : undefined;
                    const windowNanos = graph.state === "done" ? graph.data.end_unix_nano - graph.data.start_unix_nano : 1;
                    return (
                      <tr key={s.name}>
                        <td>
                          <span className="service-dot" style={{ background: serviceColour(s.name) }} />
                          <Link to={`/services/${encodeURIComponent(s.name)}`}>{s.name}</Link>
                        </td>
                        <td className="num">{s.spans.toLocaleString()}</td>
                        <td className="num">{node ? rate(node.calls, windowNanos) : ""}</td>
                        <td className="num">{node ? percent(node.errors, node.calls) : ""}</td>
                        <td className="num">{node ? duration(node.p95_nanos) : ""}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )
        }
      </Show>
    </div>
  );
}

export function ServicePage() {
  const { service = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const lookback = params.get("lookback") ?? "1h";
  const operation = params.get("operation") ?? "";
  const query = useMemo(() => {
    const q = new URLSearchParams({ lookback });
    if (operation) q.set("operation", operation);
    return q;
  }, [lookback, operation]);
  const red = useApi(() => api.serviceRed(service, query), [service, query.toString()]);
  const graph = useApi(() => api.serviceGraph(new URLSearchParams({ lookback })), [lookback]);
  const errors = useApi(
    () => api.search(new URLSearchParams({ service, status: "error", lookback, limit: "10" })),
    [service, lookback],
  );
  const set = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    setParams(next);
  };
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>
          <span className="service-dot" style={{ background: serviceColour(service) }} />
          {service}
        </h1>
        <Picker label="Time range" value={lookback} onChange={(v) => set("lookback", v)} options={LOOKBACKS} />
        <Picker
          label="Operation"
          value={operation}
          onChange={(v) => set("operation", v)}
          none="All entry operations"
          options={[
            ...new Map(
              [...(operation ? [operation] : []), ...(red.state === "done" ? red.data.operations.map((o) => o.name) : [])].map(
                (name) => [name, name] as [string, string],
              ),
            ).entries(),
          ]}
          testId="red-operation"
        />
        <Link to={`/search?service=${encodeURIComponent(service)}`}>Search its traces</Link>
      </div>
      <Show value={red} what="rate, errors and duration">
        {(data) => (
          <>
            <RedCharts red={data} />
            <Neighbours service={service} graph={graph} />
            <OperationsTable red={data} onPick={(name) => set("operation", name)} />
          </>
        )}
      </Show>
      <div className="panel">
        <h2 style={{ marginTop: 0 }}>Recent errors</h2>
        <Show value={errors} what="recent errors">
          {(traces) =>
            traces.length === 0 ? (
              <div className="muted">No failing traces through {service} in this time range.</div>
            ) : (
              <table className="data" data-testid="recent-errors">
                <tbody>
                  {traces.map((t) => (
                    <tr key={t.trace_id}>
                      <td>
                        <Link to={`/trace/${t.trace_id}`}>
                          {t.root_service}: {t.root_name}
                        </Link>
                      </td>
                      <td className="num">{duration(t.duration_nanos)}</td>
                      <td className="num">
                        <span className="badge error">{t.error_count} errors</span>
                      </td>
                      <td className="muted">{ago(t.start_unix_nano)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Show>
      </div>
    </div>
  );
}

function RedCharts({ red }: { red: ServiceRed }) {
  // Every bucket of the window: an empty bucket is no traffic (rate 0), not a gap in the line,
  // while its latency is unknown (a gap).
  const count = Math.ceil((red.end_unix_nano - red.start_unix_nano) / red.step_nanos);
  const points: (RedPoint | undefined)[] = new Array(count).fill(undefined);
  for (const p of red.series) points[Math.round((p.time_unix_nano - red.start_unix_nano) / red.step_nanos)] = p;
  const buckets = points.map((point, i) => ({ time: (red.start_unix_nano + i * red.step_nanos) / 1e6, point }));
  const perSecond = red.step_nanos / 1e9;
  const few = red.series.length < 20;
  const base = {
    grid: { left: 60, right: 20, top: 40, bottom: 30 },
    tooltip: { trigger: "axis" },
    xAxis: { type: "time", min: red.start_unix_nano / 1e6, max: red.end_unix_nano / 1e6 },
    legend: { top: 0, right: 0 },
  };
  const line = { type: "line", showSymbol: few, symbol: "circle", symbolSize: 6 };
  const rateOption = {
    ...base,
    title: { text: "Requests per second", left: "left", textStyle: { fontSize: 13 } },
    yAxis: { type: "value" },
    series: [
      {
        ...line,
        name: "rate",
        areaStyle: { opacity: 0.15 },
        data: buckets.map((b) => [b.time, +((b.point?.calls ?? 0) / perSecond).toFixed(3)]),
      },
    ],
  };
  const errorOption = {
    ...base,
    title: { text: "Errors (%)", left: "left", textStyle: { fontSize: 13 } },
    yAxis: { type: "value", max: (v: { max: number }) => Math.max(1, Math.ceil(v.max)) },
    color: ["#e03131"],
    series: [
      {
        ...line,
        name: "errors",
        areaStyle: { opacity: 0.15 },
        data: buckets.map((b) => [b.time, b.point ? +((100 * b.point.errors) / Math.max(1, b.point.calls)).toFixed(2) : 0]),
      },
    ],
  };
  const latencyOption = {
    ...base,
    title: { text: "Duration (ms)", left: "left", textStyle: { fontSize: 13 } },
    yAxis: { type: "value" },
    // A bucket without requests has no latency: the line goes straight across it.
    series: (["p50", "p95", "p99"] as const).map((level) => ({
      ...line,
      connectNulls: true,
      name: level,
      data: buckets.map((b) => [b.time, b.point ? +(b.point[`${level}_nanos`] / 1e6).toFixed(3) : null]),
    })),
  };
  if (red.series.length === 0)
    return <Empty>No spans from this service in the time range: widen it or pick another operation.</Empty>;
  return (
    <div className="grid-2" data-testid="red-charts">
      <div className="panel">
        <Chart option={rateOption} height={220} testId="chart-rate" />
      </div>
      <div className="panel">
        <Chart option={errorOption} height={220} testId="chart-errors" />
      </div>
      <div className="panel">
        <Chart option={latencyOption} height={220} testId="chart-latency" />
      </div>
      <div className="panel muted" style={{ fontSize: 12 }}>
        Counted spans: {red.kinds.join(" and ")} spans of the service
        {red.kinds.includes("server") ? " (the requests it serves)" : ""}, in buckets of {duration(red.step_nanos)}. A
        sampled trace counts as the traffic it stands for.
      </div>
    </div>
  );
}

function Neighbours({
  service,
  graph,
}: {
  service: string;
  graph: ReturnType<typeof useApi<import("../api").ServiceGraph>>;
}) {
  const navigate = useNavigate();
  if (graph.state !== "done") return null;
  const windowNanos = graph.data.end_unix_nano - graph.data.start_unix_nano;
  const upstream = graph.data.edges.filter((e) => e.child === service);
  const downstream = graph.data.edges.filter((e) => e.parent === service);
  const kind = (name: string) => graph.data.nodes.find((n) => n.name === name)?.kind;
  const list = (edges: typeof upstream, pick: "parent" | "child", testId: string) =>
    edges.length === 0 ? (
      <div className="muted">none</div>
    ) : (
      <table className="data" data-testid={testId}>
        <tbody>
          {edges.map((e) => (
            <tr
              key={e[pick]}
              style={{ cursor: kind(e[pick]) === "service" ? "pointer" : undefined }}
              onClick={() => kind(e[pick]) === "service" && navigate(`/services/${encodeURIComponent(e[pick])}`)}
            >
              <td>
                {e[pick]} {kind(e[pick]) === "virtual" && <span className="badge warn">not instrumented</span>}
              </td>
              <td className="num">{rate(e.calls, windowNanos)}</td>
              <td className="num">{percent(e.errors, e.calls)} errors</td>
              <td className="num">p95 {duration(e.p95_nanos)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    );
  return (
    <div className="grid-2">
      <div className="panel">
        <h2 style={{ marginTop: 0 }}>Called by</h2>
        {list(upstream, "parent", "upstream")}
      </div>
      <div className="panel">
        <h2 style={{ marginTop: 0 }}>Calls</h2>
        {list(downstream, "child", "downstream")}
      </div>
    </div>
  );
}

function OperationsTable({ red, onPick }: { red: ServiceRed; onPick: (name: string) => void }) {
  const windowNanos = red.end_unix_nano - red.start_unix_nano;
  return (
    <div className="panel">
      <h2 style={{ marginTop: 0 }}>Top operations</h2>
      <table className="data" data-testid="operations-table">
        <thead>
          <tr>
            <th>Operation</th>
            <th>Kind</th>
            <th className="num">Rate</th>
            <th className="num">Errors</th>
            <th className="num">p50</th>
            <th className="num">p95</th>
            <th className="num">p99</th>
            <th className="num">On critical path</th>
          </tr>
        </thead>
        <tbody>
          {red.operations.slice(0, 50).map((o) => (
            <tr key={`${o.kind}:${o.name}`} style={{ cursor: "pointer" }} onClick={() => onPick(o.name)}>
              <td>{o.name}</td>
              <td>{o.kind}</td>
              <td className="num">{rate(o.calls, windowNanos)}</td>
              <td className="num">{percent(o.errors, o.calls)}</td>
              <td className="num">{duration(o.p50_nanos)}</td>
              <td className="num">{duration(o.p95_nanos)}</td>
              <td className="num">{duration(o.p99_nanos)}</td>
              <td className="num">{duration(o.critical_path_nanos / Math.max(1, o.calls))} per call</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
