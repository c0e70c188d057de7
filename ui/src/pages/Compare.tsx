import { useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";

import { api, type Trace } from "../api";
import { Empty, Show, useApi, type Loadable } from "../components/common";
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
      <h1>Compare two traces</h1>
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
