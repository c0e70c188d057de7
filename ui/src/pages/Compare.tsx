import { useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";

import { api, type GroupComparison, type Trace } from "../api";
import { Chart } from "../components/Chart";
import { Empty, Picker, Show, WarningPanels, useApi, type Loadable } from "../components/common";
import { LOOKBACKS } from "../format";
import { duration, serviceColour } from "../format";
import { buildModel, visibleRows } from "./traceModel";

interface PathRow {
  path: string;
  depth: number;
  service: string;
  name: string;
  countA: number;
  countB: number;
  nanosA: number;
  nanosB: number;
  change: "added" | "removed" | "slower" | "faster" | "same" | "more" | "fewer";
}

// Aligns two traces by the path of (service, operation) from the root to each span, and sums
// what each side spends on every path.
export function comparePaths(a: Trace, b: Trace): PathRow[] {
  const rows = new Map<string, PathRow>();
  const walk = (trace: Trace, side: "A" | "B") => {
    const model = buildModel(trace);
    const paths = new Map<string, string>();
    for (const node of visibleRows(model, new Set())) {
      const own = `${node.span.service}: ${node.span.name}`;
      const parent = node.parent ? paths.get(node.parent.span.spanId) : undefined;
      const path = parent ? `${parent} › ${own}` : own;
      paths.set(node.span.spanId, path);
      let row = rows.get(path);
      if (!row) {
        row = { path, depth: node.depth, service: node.span.service, name: node.span.name, countA: 0, countB: 0, nanosA: 0, nanosB: 0, change: "same" };
        rows.set(path, row);
      }
      if (side === "A") {
        row.countA += 1;
        row.nanosA += node.span.durationNanos;
      } else {
        row.countB += 1;
        row.nanosB += node.span.durationNanos;
      }
    }
  };
  walk(a, "A");
  walk(b, "B");
  for (const row of rows.values()) {
    const delta = row.nanosB - row.nanosA;
    const relevant = Math.abs(delta) > 1_000_000 && Math.abs(delta) > 0.2 * Math.max(row.nanosA, row.nanosB);
    if (row.countA === 0) row.change = "added";
    else if (row.countB === 0) row.change = "removed";
    else if (row.countB > row.countA) row.change = "more";
    else if (row.countB < row.countA) row.change = "fewer";
    else if (relevant) row.change = delta > 0 ? "slower" : "faster";
  }
  // Paths in the order of a depth-first walk: a path sorts right after its parent.
  return [...rows.values()].sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

function TraceIdInput({ label, value, onChange, testId }: { label: string; value: string; onChange: (v: string) => void; testId: string }) {
  const [text, setText] = useState(value);
  return (
    <label className="field">
      {label}
      <span>
        <input
          className="mono"
          style={{ width: 300 }}
          value={text}
          placeholder="trace ID"
          onChange={(e) => setText(e.target.value.trim())}
          onKeyDown={(e) => e.key === "Enter" && onChange(text)}
          onBlur={() => text !== value && onChange(text)}
          data-testid={testId}
        />
      </span>
    </label>
  );
}

export function ComparePage() {
  const [params, setParams] = useSearchParams();
  const mode = params.get("mode") === "groups" ? "groups" : "traces";
  const setMode = (value: string) => {
    const next = new URLSearchParams(params);
    next.set("mode", value);
    setParams(next);
  };
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 8 }}>
        <h1 style={{ margin: 0 }}>{mode === "groups" ? "Compare two groups" : "Compare two traces"}</h1>
        <label className="field">
          Compare
          <select value={mode} onChange={(e) => setMode(e.target.value)} data-testid="compare-mode">
            <option value="traces">Two traces</option>
            <option value="groups">Two groups of requests (TraceQL)</option>
          </select>
        </label>
      </div>
      {mode === "groups" ? <GroupsCompare /> : <TracesCompare />}
    </div>
  );
}

function TracesCompare() {
  const [params, setParams] = useSearchParams();
  const a = params.get("a") ?? "";
  const b = params.get("b") ?? "";
  const set = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    setParams(next);
  };
  const traceA = useApi(() => (a ? api.trace(a) : Promise.resolve(undefined)), [a]);
  const traceB = useApi(() => (b ? api.trace(b) : Promise.resolve(undefined)), [b]);
  return (
    <div>
      <div className="form-row panel">
        <TraceIdInput label="Trace A (before)" value={a} onChange={(v) => set("a", v)} testId="compare-a" />
        <TraceIdInput label="Trace B (after)" value={b} onChange={(v) => set("b", v)} testId="compare-b" />
        <span className="muted">Tip: tick two traces in Search and press "Compare selected".</span>
      </div>
      {!a || !b ? (
        <Empty>Give two trace IDs: spans are aligned by their path of service and operation from the root.</Empty>
      ) : (
        <Both a={traceA} b={traceB} />
      )}
    </div>
  );
}

function Both({ a, b }: { a: Loadable<Trace | undefined>; b: Loadable<Trace | undefined> }) {
  return (
    <Show value={a} what="trace A">
      {(ta) => (
        <Show value={b} what="trace B">
          {(tb) => (ta && tb ? <Diff a={ta} b={tb} /> : null)}
        </Show>
      )}
    </Show>
  );
}

const CHANGE_LABEL: Record<PathRow["change"], string> = {
  added: "only in B",
  removed: "only in A",
  slower: "slower",
  faster: "faster",
  more: "more calls",
  fewer: "fewer calls",
  same: "",
};

function Diff({ a, b }: { a: Trace; b: Trace }) {
  const [onlyChanges, setOnlyChanges] = useState(false);
  const rows = useMemo(() => comparePaths(a, b), [a, b]);
  const longest = Math.max(1, ...rows.map((r) => Math.max(r.nanosA, r.nanosB)));
  const counts = rows.reduce<Record<string, number>>((acc, r) => ((acc[r.change] = (acc[r.change] ?? 0) + 1), acc), {});
  const shown = onlyChanges ? rows.filter((r) => r.change !== "same") : rows;
  return (
    <div>
      <div className="grid-2">
        {[a, b].map((t, i) => (
          <div key={t.traceId} className="panel">
            <strong>{i === 0 ? "A" : "B"}:</strong>{" "}
            <Link to={`/trace/${t.traceId}`}>
              {t.rootService}: {t.rootName}
            </Link>{" "}
            · {duration(t.durationNanos)} · {t.spanCount} spans · {t.errorCount} errors
          </div>
        ))}
      </div>
      <div className="panel">
        <div className="form-row" style={{ justifyContent: "space-between" }}>
          <span data-testid="compare-summary">
            {(["added", "removed", "more", "fewer", "slower", "faster"] as const)
              .filter((c) => counts[c])
              .map((c) => (
                <span key={c} className={`badge ${c === "added" || c === "faster" ? "" : "warn"}`}>
                  {counts[c]} {CHANGE_LABEL[c]}
                </span>
              ))}
            {rows.every((r) => r.change === "same") && "The two traces have the same shape and timing."}
          </span>
          <label>
            <input type="checkbox" checked={onlyChanges} onChange={(e) => setOnlyChanges(e.target.checked)} /> Only
            differences
          </label>
        </div>
        <table className="data" data-testid="compare-table">
          <thead>
            <tr>
              <th>Service: operation</th>
              <th className="num">Calls A</th>
              <th className="num">Calls B</th>
              <th className="num">Time A</th>
              <th className="num">Time B</th>
              <th className="num">Change</th>
              <th style={{ width: "25%" }}>A ▬ / B ▬</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((r) => (
              <tr key={r.path} className={`compare-row ${r.change}`} data-change={r.change} title={r.path}>
                <td style={{ paddingLeft: 8 + r.depth * 14 }}>
                  <span className="service-dot" style={{ background: serviceColour(r.service) }} />
                  {r.service}: {r.name} {r.change !== "same" && <span className="badge warn">{CHANGE_LABEL[r.change]}</span>}
                </td>
                <td className="num">{r.countA}</td>
                <td className="num">{r.countB}</td>
                <td className="num">{r.countA ? duration(r.nanosA) : ""}</td>
                <td className="num">{r.countB ? duration(r.nanosB) : ""}</td>
                <td className="num delta">
                  {r.countA && r.countB ? `${r.nanosB >= r.nanosA ? "+" : "−"}${duration(Math.abs(r.nanosB - r.nanosA))}` : ""}
                </td>
                <td>
                  <div style={{ height: 5, width: `${(100 * r.nanosA) / longest}%`, background: "var(--muted)", marginBottom: 2 }} />
                  <div style={{ height: 5, width: `${(100 * r.nanosB) / longest}%`, background: "var(--accent)" }} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

// Two groups of requests (each the spans a TraceQL query matches), aligned by the path of calls
// below the matched span: what changed between version A and B, before and after a deploy.
function GroupsCompare() {
  const [params, setParams] = useSearchParams();
  const lookback = params.get("lookback") ?? "1h";
  const ga = params.get("ga") ?? "";
  const gb = params.get("gb") ?? "";
  const [draftA, setDraftA] = useState(ga);
  const [draftB, setDraftB] = useState(gb);
  const report = useApi(
    () => (ga && gb ? api.compareGroups(new URLSearchParams({ a: ga, b: gb, lookback })) : Promise.resolve(undefined)),
    [ga, gb, lookback],
  );
  const update = (change: (next: URLSearchParams) => void) => {
    const next = new URLSearchParams(params);
    change(next);
    setParams(next);
  };
  return (
    <div>
      <form
        className="panel"
        onSubmit={(e) => {
          e.preventDefault();
          update((n) => {
            n.set("ga", draftA);
            n.set("gb", draftB);
          });
        }}
      >
        <div className="form-row">
          <label className="field" style={{ flex: 1 }}>
            Group A (before)
            <input
              className="mono"
              value={draftA}
              placeholder='{ resource.service.name = "product-catalog" && resource.service.version = "4.4.0" }'
              onChange={(e) => setDraftA(e.target.value)}
              data-testid="groups-a"
            />
          </label>
          <label className="field" style={{ flex: 1 }}>
            Group B (after)
            <input
              className="mono"
              value={draftB}
              placeholder='{ resource.service.name = "product-catalog" && resource.service.version = "4.5.0" }'
              onChange={(e) => setDraftB(e.target.value)}
              data-testid="groups-b"
            />
          </label>
          <Picker label="Time range" value={lookback} onChange={(v) => update((n) => n.set("lookback", v))} options={LOOKBACKS} />
          <button type="submit" data-testid="groups-run">
            Compare
          </button>
        </div>
      </form>
      <Show value={report} what="the comparison">
        {(data) =>
          data ? (
            <GroupsView report={data} />
          ) : (
            <Empty>Write two TraceQL queries: each group is the spans its query matches, compared by the calls below them.</Empty>
          )
        }
      </Show>
    </div>
  );
}

function GroupsView({ report }: { report: GroupComparison }) {
  const changed = report.changes.filter((c) => c.change !== "same");
  const option = useMemo(() => {
    const top = changed.slice(0, 15).reverse();
    return {
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      grid: { left: 280, right: 24, top: 8, bottom: 28 },
      xAxis: { type: "value", name: "Δ ms per request" },
      yAxis: {
        type: "category",
        // The call itself; the tooltip names its whole path.
        data: top.map((c) => `${"› ".repeat(c.depth - 1)}${c.path[c.path.length - 1]}`),
        axisLabel: { width: 270, overflow: "truncate" },
      },
      series: [
        {
          type: "bar",
          data: top.map((c) => ({ value: Number(c.ms_per_match_change.toFixed(3)), itemStyle: { color: c.ms_per_match_change > 0 ? "#e15759" : "#4e79a7" } })),
        },
      ],
    };
  }, [changed]);
  const side = (s: GroupComparison["matched_a"]) => (s ? `p50 ${s.p50_ms.toFixed(1)} ms · p95 ${s.p95_ms.toFixed(1)} ms` : "—");
  const num = (s: GroupComparison["matched_a"], pick: (v: NonNullable<GroupComparison["matched_a"]>) => number, digits = 2) =>
    s ? pick(s).toFixed(digits) : "—";
  return (
    <>
      <WarningPanels warnings={report.warnings} />
      <div className="grid-2" data-testid="groups-summary">
        {(["a", "b"] as const).map((g) => (
          <div key={g} className="panel">
            <strong>{g.toUpperCase()}:</strong> <code>{report[g].query}</code>
            <div>
              {report[g].matched.toLocaleString()} matched spans in {report[g].traces.toLocaleString()} traces ·{" "}
              {side(g === "a" ? report.matched_a : report.matched_b)}
            </div>
          </div>
        ))}
      </div>
      {changed.length > 0 && (
        <div className="panel">
          <Chart option={option} height={Math.max(160, 24 * Math.min(changed.length, 15) + 40)} testId="groups-chart" />
        </div>
      )}
      <div className="panel">
        {changed.length === 0 ? (
          <Empty>The calls below the two groups do not differ.</Empty>
        ) : (
          <table className="data" data-testid="groups-table">
            <thead>
              <tr>
                <th>Path below the matched span</th>
                <th>Change</th>
                <th className="num">Calls per request A → B</th>
                <th className="num">Mean ms A → B</th>
                <th className="num">Δ ms per request</th>
                <th className="num">Errors A → B</th>
              </tr>
            </thead>
            <tbody>
              {changed.slice(0, 50).map((c) => (
                <tr key={c.path.join(">")} data-testid="groups-row" data-change={c.change} data-service={c.service}>
                  <td style={{ paddingLeft: 8 + (c.depth - 1) * 14, wordBreak: "break-word" }} title={c.path.join(" › ")}>
                    {c.path[c.path.length - 1]}
                  </td>
                  <td>
                    <span className="badge warn">{c.change}</span>
                  </td>
                  <td className="num">
                    {num(c.a, (s) => s.calls_per_match)} → {num(c.b, (s) => s.calls_per_match)}
                  </td>
                  <td className="num">
                    {num(c.a, (s) => s.mean_ms)} → {num(c.b, (s) => s.mean_ms)}
                  </td>
                  <td className="num">{(c.ms_per_match_change > 0 ? "+" : "") + c.ms_per_match_change.toFixed(2)}</td>
                  <td className="num">
                    {num(c.a, (s) => 100 * s.error_share, 1)}% → {num(c.b, (s) => 100 * s.error_share, 1)}%
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
    </>
  );
}
