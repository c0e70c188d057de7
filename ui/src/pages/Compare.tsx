import { useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";

import { api, type GroupComparison, type TraceComparison } from "../api";
import { Chart } from "../components/Chart";
import { Empty, Picker, Show, WarningPanels, useApi } from "../components/common";
import { LOOKBACKS } from "../format";
import { duration, serviceColour } from "../format";

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
  const report = useApi(() => (a && b ? api.compareTraces(a, b) : Promise.resolve(undefined)), [a, b]);
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
        <Show value={report} what="the comparison">
          {(r) => (r ? <Diff report={r} /> : null)}
        </Show>
      )}
    </div>
  );
}

const CHANGE_LABEL: Record<string, string> = {
  added: "only in B",
  removed: "only in A",
  same: "",
};

const ms = (value: number) => duration(value * 1e6);
const signedMs = (value: number) => `${value >= 0 ? "+" : "−"}${ms(Math.abs(value))}`;

// The server aligns the traces by their path of service and operation from the root; the page
// shows every path as a tree, with the changes on the critical path first in the summary.
function Diff({ report }: { report: TraceComparison }) {
  const [onlyChanges, setOnlyChanges] = useState(false);
  const rows = report.paths;
  const longest = Math.max(1e-9, ...rows.map((r) => Math.max(r.a?.total_ms ?? 0, r.b?.total_ms ?? 0)));
  const counts = rows.reduce<Record<string, number>>((acc, r) => ((acc[r.change] = (acc[r.change] ?? 0) + 1), acc), {});
  const shown = onlyChanges ? rows.filter((r) => r.change !== "same" || Math.abs(r.critical_ms_change) >= 1) : rows;
  const critical = report.critical_changes.slice(0, 5).map((i) => rows[i]);
  return (
    <div>
      <WarningPanels warnings={report.warnings} />
      <div className="grid-2">
        {[report.a, report.b].map((t, i) => (
          <div key={i} className="panel">
            <strong>{i === 0 ? "A" : "B"}:</strong>{" "}
            <Link to={`/trace/${t.trace_id}`}>
              {t.root_service}: {t.root_name}
            </Link>{" "}
            · {ms(t.duration_ms)} · {t.spans} spans · {t.errors} errors
          </div>
        ))}
      </div>
      <div className="panel" data-testid="compare-critical">
        <strong>B − A: {signedMs(report.duration_change_ms)} end to end.</strong>{" "}
        {critical.length > 0 ? (
          <>
            On the critical path:{" "}
            {critical.map((r, i) => (
              <span key={i} data-testid="critical-change" title={r.path.join(" › ")}>
                {i > 0 && ", "}
                <span className="service-dot" style={{ background: serviceColour(r.service) }} />
                {r.service}: {r.operation} <span className="mono">{signedMs(r.critical_ms_change)}</span>
                {r.change !== "same" && ` (${CHANGE_LABEL[r.change] ?? r.change})`}
              </span>
            ))}
          </>
        ) : (
          "No time moved on the critical path."
        )}
      </div>
      <div className="panel">
        <div className="form-row" style={{ justifyContent: "space-between" }}>
          <span data-testid="compare-summary">
            {["added", "removed", "more calls", "fewer calls", "more errors", "fewer errors", "slower", "faster"]
              .filter((c) => counts[c])
              .map((c) => (
                <span key={c} className={`badge ${c === "added" || c === "faster" || c.startsWith("fewer") ? "" : "warn"}`}>
                  {counts[c]} {CHANGE_LABEL[c] ?? c}
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
              <th className="num" title="Change in time on the critical path: these add up to the change end to end">
                Critical path
              </th>
              <th style={{ width: "22%" }}>A ▬ / B ▬</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((r, i) => (
              <tr
                key={i}
                className={`compare-row ${r.change.replace(" ", "-")}`}
                data-change={r.change}
                title={r.path.join(" › ")}
              >
                <td style={{ paddingLeft: 8 + r.depth * 14 }}>
                  <span className="service-dot" style={{ background: serviceColour(r.service) }} />
                  {r.service}: {r.operation} {r.change !== "same" && <span className="badge warn">{CHANGE_LABEL[r.change] ?? r.change}</span>}
                </td>
                <td className="num">{r.a?.calls ?? ""}</td>
                <td className="num">{r.b?.calls ?? ""}</td>
                <td className="num">{r.a ? ms(r.a.total_ms) : ""}</td>
                <td className="num">{r.b ? ms(r.b.total_ms) : ""}</td>
                <td className="num delta">{r.a && r.b ? signedMs(r.total_ms_change) : ""}</td>
                <td className="num">{Math.abs(r.critical_ms_change) >= 0.001 ? signedMs(r.critical_ms_change) : ""}</td>
                <td>
                  <div style={{ height: 5, width: `${(100 * (r.a?.total_ms ?? 0)) / longest}%`, background: "var(--muted)", marginBottom: 2 }} />
                  <div style={{ height: 5, width: `${(100 * (r.b?.total_ms ?? 0)) / longest}%`, background: "var(--accent)" }} />
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
