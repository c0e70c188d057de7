import { useEffect, useMemo, useState } from "react";
import { useSearchParams } from "react-router-dom";

import { api, type LabelValue, type MetricsResult, type MetricsSeries } from "../api";
import { Chart } from "../components/Chart";
import { Empty, Picker, Show, useApi } from "../components/common";
import { LOOKBACKS, duration } from "../format";

// Starting points: each a question the page answers in one query.
const EXAMPLES: [string, string][] = [
  ["Requests per second by service", "{ kind = server } | rate() by (resource.service.name)"],
  ["Errors per second by service", "{ status = error } | rate() by (resource.service.name)"],
  ["p99 and p50 latency by service", "{ kind = server } | quantile_over_time(duration, .99, .5) by (resource.service.name)"],
  ["Latency heatmap of server spans", "{ kind = server } | histogram_over_time(duration)"],
  ["Five busiest operations", "{ kind = server } | rate() by (resource.service.name, name) | topk(5)"],
];

function labelText(value: LabelValue): string {
  return value === null ? "nil" : String(value);
}

export function seriesName(result: MetricsResult, series: MetricsSeries): string {
  if (series.labels.length === 0) return result.function;
  return series.labels.map(([k, v]) => `${k}=${labelText(v)}`).join(", ");
}

function formatValue(value: number, unit: string): string {
  if (unit === "seconds") return duration(value * 1e9);
  if (unit === "spans/s") return value >= 100 ? `${value.toFixed(0)}/s` : `${value.toFixed(value >= 1 ? 2 : 3)}/s`;
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

// TraceQL metrics (at /traceql-metrics: /metrics is the Prometheus endpoint): a query's spans as time series (rate, counts, aggregates, quantiles, a
// latency heatmap), drawn over the chosen window.
export function MetricsPage() {
  const [params, setParams] = useSearchParams();
  const q = params.get("q") ?? EXAMPLES[0][1];
  const lookback = params.get("lookback") ?? "1h";
  const step = params.get("step") ?? "";
  const [draft, setDraft] = useState(q);
  const [stepDraft, setStepDraft] = useState(step);
  useEffect(() => setDraft(q), [q]);
  useEffect(() => setStepDraft(step), [step]);
  const result = useApi(() => {
    const query = new URLSearchParams({ q, lookback });
    if (step) query.set("step", step);
    return api.traceqlMetrics(query);
  }, [q, lookback, step]);
  const update = (change: (next: URLSearchParams) => void) => {
    const next = new URLSearchParams(params);
    change(next);
    setParams(next);
  };
  const run = (query: string) =>
    update((next) => {
      next.set("q", query);
      if (stepDraft.trim()) next.set("step", stepDraft.trim());
      else next.delete("step");
    });
  return (
    <div>
      <h1 style={{ marginTop: 0 }}>Metrics</h1>
      <form
        className="panel"
        onSubmit={(e) => {
          e.preventDefault();
          run(draft);
        }}
      >
        <label className="field" style={{ display: "block" }}>
          TraceQL metrics query
          <textarea
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && (e.metaKey || e.ctrlKey)) run(draft);
            }}
            rows={2}
            spellCheck={false}
            style={{ width: "100%", fontFamily: "var(--mono, monospace)" }}
            data-testid="metrics-query"
          />
        </label>
        <div className="form-row" style={{ marginTop: 8 }}>
          <Picker label="Time range" value={lookback} onChange={(v) => update((n) => n.set("lookback", v))} options={LOOKBACKS} />
          <label className="field">
            Step
            <input
              value={stepDraft}
              onChange={(e) => setStepDraft(e.target.value)}
              placeholder="auto (240 steps)"
              size={12}
              data-testid="metrics-step"
            />
          </label>
          <button type="submit" className="primary" data-testid="metrics-run">
            Run
          </button>
        </div>
        <div className="form-row" style={{ marginTop: 8, flexWrap: "wrap" }}>
          <span className="muted">Examples:</span>
          {EXAMPLES.map(([label, query]) => (
            <button
              key={label}
              type="button"
              className="link"
              onClick={() => {
                setDraft(query);
                run(query);
              }}
            >
              {label}
            </button>
          ))}
        </div>
      </form>
      <Show value={result} what="the series">
        {(data) => <MetricsView result={data} />}
      </Show>
    </div>
  );
}

function MetricsView({ result }: { result: MetricsResult }) {
  const shown = result.series.filter((s) => s.samples.length > 0);
  const heatmap = result.function === "histogram_over_time";
  const option = useMemo(() => (heatmap ? heatmapOption(result) : lineOption(result)), [result, heatmap]);
  const steps = Math.round((result.end_unix_nano - result.start_unix_nano) / result.step_nanos);
  return (
    <>
      <div className="panel" data-testid="metrics-summary">
        <b>{result.matched_spans.toLocaleString()}</b> spans matched, in {steps} steps of {duration(result.step_nanos)}
        {" · "}
        <span className="muted">
          {result.path === "sql"
            ? "answered by one scan"
            : `answered by evaluating ${result.inspected_traces.toLocaleString()} traces`}
        </span>
      </div>
      {result.partial && (
        <div className="warning-box" data-testid="metrics-partial">
          Partial answer: {result.partial}.
        </div>
      )}
      {shown.length === 0 ? (
        <Empty>No span matched in this window.</Empty>
      ) : (
        <>
          <div className="panel">
            <Chart option={option} height={heatmap ? 360 : 320} testId="metrics-chart" />
          </div>
          {!heatmap && <SeriesTable result={result} series={shown} />}
        </>
      )}
    </>
  );
}

function lineOption(result: MetricsResult) {
  // Every step on the axis, so that a step without a sample is a gap, not a line across it.
  const stepMs = result.step_nanos / 1e6;
  const startMs = result.start_unix_nano / 1e6;
  const steps = Math.round((result.end_unix_nano - result.start_unix_nano) / result.step_nanos);
  const filled = (s: MetricsSeries) => {
    const values = new Map(s.samples.map(([t, v]) => [t, v]));
    return Array.from({ length: steps }, (_, i) => {
      const t = Math.round(startMs + i * stepMs);
      return [t, values.get(t) ?? null];
    });
  };
  return {
    tooltip: {
      trigger: "axis",
      valueFormatter: (v: number) => formatValue(v, result.unit),
    },
    legend: { type: "scroll", bottom: 0 },
    grid: { left: 70, right: 20, top: 20, bottom: 60 },
    xAxis: { type: "time" },
    yAxis: {
      type: "value",
      name: result.unit,
      axisLabel: { formatter: (v: number) => formatValue(v, result.unit) },
    },
    series: result.series.map((s) => ({
      name: seriesName(result, s),
      type: "line",
      showSymbol: false,
      connectNulls: false,
      data: filled(s),
    })),
  };
}

// histogram_over_time: time across, power-of-two duration buckets up, span counts as colour.
function heatmapOption(result: MetricsResult) {
  const bucketOf = (s: MetricsSeries) => Number(s.labels.find(([k]) => k === "__bucket")?.[1] ?? 0);
  const buckets = [...new Set(result.series.map(bucketOf))].sort((a, b) => a - b);
  const times = [...new Set(result.series.flatMap((s) => s.samples.map(([t]) => t)))].sort((a, b) => a - b);
  const timeIndex = new Map(times.map((t, i) => [t, i]));
  const cells = new Map<string, number>();
  let max = 0;
  for (const s of result.series) {
    const y = buckets.indexOf(bucketOf(s));
    for (const [t, v] of s.samples) {
      const key = `${timeIndex.get(t)}:${y}`;
      const total = (cells.get(key) ?? 0) + v;
      cells.set(key, total);
      max = Math.max(max, total);
    }
  }
  const data = [...cells.entries()].filter(([, v]) => v > 0).map(([key, v]) => [...key.split(":").map(Number), v]);
  const label = (b: number) => (result.unit === "spans" && b > 0 ? `≤ ${duration(b * 1e9)}` : `≤ ${b}`);
  return {
    tooltip: {
      formatter: (p: { value: [number, number, number] }) =>
        `${new Date(times[p.value[0]]).toLocaleTimeString()}<br/>${label(buckets[p.value[1]])}: ${p.value[2]} spans`,
    },
    grid: { left: 90, right: 20, top: 20, bottom: 70 },
    xAxis: {
      type: "category",
      data: times.map((t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
    },
    yAxis: { type: "category", data: buckets.map(label) },
    visualMap: { min: 0, max: Math.max(max, 1), calculable: true, orient: "horizontal", left: "center", bottom: 0 },
    series: [{ type: "heatmap", data }],
  };
}

function SeriesTable({ result, series }: { result: MetricsResult; series: MetricsSeries[] }) {
  const rows = series.map((s) => {
    const values = s.samples.map(([, v]) => v);
    return {
      name: seriesName(result, s),
      min: Math.min(...values),
      mean: values.reduce((a, b) => a + b, 0) / values.length,
      max: Math.max(...values),
      last: values[values.length - 1],
    };
  });
  return (
    <div className="panel">
      <table className="data" data-testid="metrics-table">
        <thead>
          <tr>
            <th>Series</th>
            <th className="num">Min</th>
            <th className="num">Mean</th>
            <th className="num">Max</th>
            <th className="num">Last</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.name} data-testid="metrics-row" data-series={r.name}>
              <td>{r.name}</td>
              <td className="num">{formatValue(r.min, result.unit)}</td>
              <td className="num">{formatValue(r.mean, result.unit)}</td>
              <td className="num">{formatValue(r.max, result.unit)}</td>
              <td className="num">{formatValue(r.last, result.unit)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
