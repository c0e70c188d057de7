import { Suspense, lazy, useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Link, useParams, useSearchParams } from "react-router-dom";
import { useVirtualizer } from "@tanstack/react-virtual";
import type * as echarts from "echarts/core";

import { api, attributeText, type KeyValue, type Span } from "../api";
import { CopyButton, Loading, Show, useApi } from "../components/common";

// The flame graph's chart library loads only when the flame graph is shown.
const Chart = lazy(() => import("../components/Chart"));
import { duration, percent, serviceColour, timestamp } from "../format";
import { buildModel, spanMatches, statistics, visibleRows, type Node, type TraceModel } from "./traceModel";

type View = "waterfall" | "flame" | "stats";

export function TracePage() {
  const { traceId = "" } = useParams();
  const trace = useApi(() => api.trace(traceId), [traceId]);
  return (
    <Show value={trace} what={`trace ${traceId}`}>
      {(data) => <TraceView model={buildModel(data)} />}
    </Show>
  );
}

const PROBLEMS: Record<string, string> = {
  orphans: "Some spans name a parent that never arrived: a service did not send its span, or context was lost.",
  unmatched_client:
    "Some CLIENT/PRODUCER spans have no SERVER/CONSUMER child: the callee is not instrumented or does not extract the context.",
  multiple_roots: "The trace has several root spans: context propagation broke somewhere in the middle.",
  no_root: "No span in the trace is its root: the entry service's span is missing.",
};

function TraceView({ model }: { model: TraceModel }) {
  const [params, setParams] = useSearchParams();
  const view = (params.get("view") as View) ?? "waterfall";
  const selectedId = params.get("span") ?? undefined;
  const [find, setFind] = useState("");
  const trace = model.trace;
  const select = useCallback(
    (id?: string) => {
      const next = new URLSearchParams(params);
      if (id) next.set("span", id);
      else next.delete("span");
      setParams(next, { replace: true });
    },
    [params, setParams],
  );
  const setView = (v: View) => {
    const next = new URLSearchParams(params);
    next.set("view", v);
    setParams(next, { replace: true });
  };
  const matches = useMemo(() => {
    if (!find) return new Set<string>();
    return new Set(trace.spans.filter((s) => spanMatches(s, find)).map((s) => s.spanId));
  }, [find, trace]);
  const selected = selectedId ? model.byId.get(selectedId) : undefined;

  return (
    <div>
      <div className="trace-header">
        <h1 style={{ margin: 0 }}>
          <span className="service-dot" style={{ background: serviceColour(trace.rootService) }} />
          {trace.rootService}: {trace.rootName}
        </h1>
        <span className="mono muted">
          {trace.traceId} <CopyButton text={trace.traceId} />
        </span>
      </div>
      <div className="facts" style={{ margin: "8px 0" }} data-testid="trace-facts">
        <span>
          Started <strong>{timestamp(trace.startTimeUnixNano)}</strong>
        </span>{" "}
        · <span>
          Duration <strong data-testid="trace-duration">{duration(trace.durationNanos)}</strong>
        </span>{" "}
        · <span>
          <strong data-testid="span-count">{trace.spanCount}</strong> spans
        </span>{" "}
        · <span>
          <strong>{trace.services.length}</strong> services
        </span>{" "}
        ·{" "}
        <span className={trace.errorCount ? "badge error" : ""}>
          <strong>{trace.errorCount}</strong> errors
        </span>{" "}
        · <span data-testid="critical-summary">
          critical path <strong>{duration(model.criticalNanos)}</strong> in {trace.criticalPath.length} segments
        </span>{" "}
        · <a href={`/api/v1/traces/${trace.traceId}/otlp`} download data-testid="download">
          Download OTLP JSON
        </a>{" "}
        · <Link to={`/compare?a=${trace.traceId}`}>Compare with…</Link>
      </div>
      {(trace.problems.length > 0 || trace.warnings.length > 0) && (
        <div className="warning-box" data-testid="trace-warnings">
          {trace.problems.filter((p) => !trace.warnings.some((w) => w.kind === p)).map((p) => (
            <div key={p}>
              <span className="badge warn">{p.replace("_", " ")}</span> {PROBLEMS[p] ?? p}
            </div>
          ))}
          {trace.warnings.map((w, i) => (
            <div key={i}>
              <span className="badge warn">{w.kind.replace("_", " ")}</span> {w.message}
            </div>
          ))}
        </div>
      )}
      <div className="form-row" style={{ margin: "8px 0" }}>
        <div className="tabs" style={{ margin: 0 }}>
          {(["waterfall", "flame", "stats"] as View[]).map((v) => (
            <button key={v} className={view === v ? "active" : ""} onClick={() => setView(v)} data-testid={`view-${v}`}>
              {{ waterfall: "Waterfall", flame: "Flame graph", stats: "Statistics" }[v]}
            </button>
          ))}
        </div>
        <input
          id="find-in-trace"
          placeholder="Find in trace (press /)"
          value={find}
          onChange={(e) => setFind(e.target.value)}
          style={{ width: 260 }}
          data-testid="find"
        />
        {find && (
          <span className="muted" data-testid="find-count">
            {matches.size} matching spans
          </span>
        )}
        <span className="legend">
          <span>
            <span className="critical-sample" />
            critical path
          </span>
          {trace.services.map((s) => (
            <span key={s}>
              <span className="service-dot" style={{ background: serviceColour(s) }} />
              {s}
            </span>
          ))}
        </span>
      </div>
      <div className={`trace-body ${selected ? "" : "no-detail"}`}>
        <div>
          {view === "waterfall" && <Waterfall model={model} selected={selectedId} onSelect={select} matches={matches} />}
          {view === "flame" && <FlameGraph model={model} onSelect={select} />}
          {view === "stats" && <Statistics model={model} />}
        </div>
        {selected && <SpanDetail node={selected} model={model} onClose={() => select(undefined)} onSelect={select} />}
      </div>
    </div>
  );
}

const ROW = 26;

function Waterfall({
  model,
  selected,
  onSelect,
  matches,
}: {
  model: TraceModel;
  selected?: string;
  onSelect: (id?: string) => void;
  matches: Set<string>;
}) {
  const [collapsed, setCollapsed] = useState<Set<string>>(new Set());
  const rows = useMemo(() => visibleRows(model, collapsed), [model, collapsed]);
  const scroller = useRef<HTMLDivElement>(null);
  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW,
    overscan: 20,
  });
  const toggle = (id: string) =>
    setCollapsed((c) => {
      const next = new Set(c);
      if (next.has(id)) next.delete(id);
      else next.add(id);
      return next;
    });
  const selectedRow = selected ? rows.findIndex((r) => r.span.spanId === selected) : -1;
  useEffect(() => {
    if (selectedRow >= 0) virtualizer.scrollToIndex(selectedRow, { align: "auto" });
  }, [selectedRow, virtualizer]);
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "/" && document.activeElement?.tagName !== "INPUT") {
        document.getElementById("find-in-trace")?.focus();
        e.preventDefault();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
  const onKeyDown = (e: React.KeyboardEvent) => {
    const current = selectedRow >= 0 ? rows[selectedRow] : undefined;
    if (e.key === "ArrowDown" || e.key === "j") onSelect(rows[Math.min(rows.length - 1, selectedRow + 1)]?.span.spanId);
    else if (e.key === "ArrowUp" || e.key === "k") onSelect(rows[Math.max(0, selectedRow - 1)]?.span.spanId);
    else if (e.key === "ArrowLeft" && current) {
      if (current.children.length && !collapsed.has(current.span.spanId)) toggle(current.span.spanId);
      else if (current.parent) onSelect(current.parent.span.spanId);
    } else if (e.key === "ArrowRight" && current && collapsed.has(current.span.spanId)) toggle(current.span.spanId);
    else if (e.key === "Escape") onSelect(undefined);
    else if (e.key === "n" && matches.size) {
      const after = rows.findIndex((r, i) => i > selectedRow && matches.has(r.span.spanId));
      const first = rows.findIndex((r) => matches.has(r.span.spanId));
      const target = after >= 0 ? after : first;
      if (target >= 0) onSelect(rows[target].span.spanId);
    } else return;
    e.preventDefault();
  };
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const pct = (ns: number) => `${(100 * ns) / model.total}%`;
  return (
    <div
      className="waterfall"
      tabIndex={0}
      onKeyDown={onKeyDown}
      style={{ ["--name-width" as string]: "34%" }}
      data-testid="waterfall"
    >
      <div className="ruler">
        <div style={{ padding: "5px 8px" }}>
          Service: operation <span className="muted">(↑↓ move, ←→ fold, n next match)</span>
        </div>
        <div className="ticks">
          {ticks.map((t) => (
            <span key={t} style={{ left: `${t * 100}%`, transform: t === 1 ? "translateX(-100%)" : t === 0 ? "none" : undefined }}>
              {duration(t * model.total)}
            </span>
          ))}
        </div>
      </div>
      <div ref={scroller} className="scroller" style={{ height: "calc(100vh - 260px)", minHeight: 300 }}>
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {virtualizer.getVirtualItems().map((item) => {
            const node = rows[item.index];
            const span = node.span;
            const colour = serviceColour(span.service);
            const isCollapsed = collapsed.has(span.spanId);
            const left = (100 * node.startOffset) / model.total;
            const labelOnLeft = left + (100 * span.durationNanos) / model.total > 82;
            return (
              <div
                key={span.spanId + item.index}
                className={`row ${span.spanId === selected ? "selected" : ""} ${matches.has(span.spanId) ? "match" : ""}`}
                style={{ top: item.start }}
                onClick={() => onSelect(span.spanId)}
                data-testid="span-row"
                data-span-id={span.spanId}
              >
                <div className="name" style={{ paddingLeft: 4 + node.depth * 14, borderLeftColor: colour }}>
                  <span
                    className="toggle"
                    onClick={(e) => {
                      if (node.children.length) {
                        e.stopPropagation();
                        toggle(span.spanId);
                      }
                    }}
                  >
                    {node.children.length ? (isCollapsed ? "▸" : "▾") : ""}
                  </span>
                  <span style={{ color: colour, fontWeight: 600, marginRight: 4 }}>{span.service}</span>
                  <span>{span.name}</span>
                  {isCollapsed && <span className="badge">{node.children.length}</span>}
                  {span.status.code === "error" && <span className="badge error">error</span>}
                  {span.problems.map((p) => (
                    <span key={p} className="badge warn" title={PROBLEMS[p === "orphan" ? "orphans" : p]}>
                      {p.replace("_", " ")}
                    </span>
                  ))}
                </div>
                <div className="bar-area">
                  <div
                    className={`bar ${span.status.code === "error" ? "error" : ""}`}
                    style={{ left: `${left}%`, width: pct(span.durationNanos), background: colour }}
                  />
                  {node.critical.map(([from, to], i) => (
                    <div
                      key={i}
                      className="critical"
                      data-testid="critical-segment"
                      style={{ left: pct(from), width: pct(to - from) }}
                    />
                  ))}
                  <span
                    className="bar-label"
                    style={
                      labelOnLeft
                        ? { right: `${100 - left + 0.5}%` }
                        : { left: `calc(${left}% + ${(100 * span.durationNanos) / model.total}% + 4px)` }
                    }
                  >
                    {duration(span.durationNanos)}
                  </span>
                </div>
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}

function Attributes({ attributes }: { attributes: KeyValue[] }) {
  if (!attributes.length) return <div className="muted">none</div>;
  return (
    <table>
      <tbody>
        {attributes.map((a) => {
          const text = attributeText(a.value);
          return (
            <tr key={a.key}>
              <td className="key">{a.key}</td>
              <td className="mono">
                {text} <CopyButton text={text} />
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function SpanDetail({
  node,
  model,
  onClose,
  onSelect,
}: {
  node: Node;
  model: TraceModel;
  onClose: () => void;
  onSelect: (id: string) => void;
}) {
  const span: Span = node.span;
  const start = BigInt(span.startTimeUnixNano);
  return (
    <aside className="span-detail" data-testid="span-detail">
      <div className="form-row" style={{ justifyContent: "space-between" }}>
        <strong>
          <span className="service-dot" style={{ background: serviceColour(span.service) }} />
          {span.service}: {span.name}
        </strong>
        <button onClick={onClose} title="Close (Esc)">
          ✕
        </button>
      </div>
      <table style={{ marginTop: 8 }}>
        <tbody>
          <tr>
            <td className="key">Span ID</td>
            <td className="mono">
              {span.spanId} <CopyButton text={span.spanId} />
            </td>
          </tr>
          {span.parentSpanId && (
            <tr>
              <td className="key">Parent</td>
              <td className="mono">
                {model.byId.has(span.parentSpanId) ? (
                  <a href="#" onClick={(e) => (e.preventDefault(), onSelect(span.parentSpanId!))}>
                    {span.parentSpanId}
                  </a>
                ) : (
                  <>{span.parentSpanId} (not in the trace)</>
                )}
              </td>
            </tr>
          )}
          <tr>
            <td className="key">Kind</td>
            <td>{span.kind}</td>
          </tr>
          <tr>
            <td className="key">Status</td>
            <td>
              <span className={span.status.code === "error" ? "badge error" : "badge"}>{span.status.code}</span>{" "}
              {span.status.message}
            </td>
          </tr>
          <tr>
            <td className="key">Start</td>
            <td>
              +{duration(node.startOffset)} ({timestamp(span.startTimeUnixNano)})
            </td>
          </tr>
          <tr>
            <td className="key">Duration</td>
            <td>
              {duration(span.durationNanos)} · self {duration(span.selfNanos)}
            </td>
          </tr>
          <tr>
            <td className="key">Critical path</td>
            <td data-testid="detail-critical">
              {duration(span.criticalPathNanos)} ({percent(span.criticalPathNanos, model.total)} of the trace)
            </td>
          </tr>
          {span.problems.length > 0 && (
            <tr>
              <td className="key">Problems</td>
              <td>
                {span.problems.map((p) => (
                  <div key={p}>
                    <span className="badge warn">{p.replace("_", " ")}</span>{" "}
                    {p === "orphan"
                      ? "its parent span is not in the trace"
                      : "no SERVER/CONSUMER span answered this call: the callee is not instrumented or dropped the context"}
                  </div>
                ))}
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <h2>Attributes</h2>
      <Attributes attributes={span.attributes} />
      <h2>Events ({span.events.length})</h2>
      {span.events.length === 0 && <div className="muted">none</div>}
      {span.events.map((e, i) => (
        <div key={i} style={{ marginBottom: 8 }}>
          <div>
            <span className="mono muted">+{duration(Number(BigInt(e.timeUnixNano) - start))}</span> <strong>{e.name}</strong>
          </div>
          <Attributes attributes={e.attributes} />
        </div>
      ))}
      <h2>Links ({span.links.length})</h2>
      {span.links.length === 0 && <div className="muted">none</div>}
      {span.links.map((l, i) => (
        <div key={i} className="mono">
          <Link to={`/trace/${l.traceId}?span=${l.spanId}`}>
            {l.traceId.slice(0, 16)}…/{l.spanId}
          </Link>
          <Attributes attributes={l.attributes} />
        </div>
      ))}
      <h2>Resource</h2>
      <Attributes attributes={span.resource.attributes} />
      <h2>Instrumentation scope</h2>
      <div className="mono">
        {span.scope.name || "(unnamed)"} {span.scope.version}
      </div>
    </aside>
  );
}

// Each span a bar at its time and depth: wide bars are where the time goes.
function FlameGraph({ model, onSelect }: { model: TraceModel; onSelect: (id?: string) => void }) {
  const nodes = useMemo(() => visibleRows(model, new Set()), [model]);
  const maxDepth = Math.max(0, ...nodes.map((n) => n.depth));
  const option = useMemo(
    () => ({
      tooltip: {
        formatter: (p: { data: { value: number[]; name: string } }) =>
          `${p.data.name}<br/>${duration(p.data.value[2] - p.data.value[1])}`,
      },
      grid: { left: 10, right: 10, top: 10, bottom: 50 },
      dataZoom: [{ type: "slider", filterMode: "weakFilter", bottom: 10 }, { type: "inside", filterMode: "weakFilter" }],
      xAxis: { type: "value", min: 0, max: model.total, axisLabel: { formatter: (v: number) => duration(v) } },
      yAxis: { type: "value", inverse: true, min: 0, max: maxDepth + 1, show: false },
      series: [
        {
          type: "custom",
          renderItem: (
            _params: unknown,
            api: {
              value: (i: number) => number;
              coord: (v: number[]) => number[];
              size: (v: number[]) => number[];
              style: (o?: object) => object;
            },
          ) => {
            const depth = api.value(0);
            const from = api.coord([api.value(1), depth]);
            const to = api.coord([api.value(2), depth + 1]);
            const width = Math.max(1, to[0] - from[0]);
            return {
              type: "rect",
              shape: { x: from[0], y: from[1] + 1, width, height: to[1] - from[1] - 2 },
              style: api.style(),
            };
          },
          encode: { x: [1, 2], y: 0 },
          label: { show: true, position: "insideLeft", formatter: "{b}", overflow: "truncate", fontSize: 11, color: "#fff" },
          labelLayout: { hideOverlap: true },
          data: nodes.map((n) => ({
            name: `${n.span.service}: ${n.span.name}`,
            value: [n.depth, n.startOffset, n.startOffset + n.span.durationNanos, n.index],
            spanId: n.span.spanId,
            itemStyle: {
              color: serviceColour(n.span.service),
              borderColor: n.critical.length ? "#e8590c" : undefined,
              borderWidth: n.critical.length ? 2 : 0,
            },
          })),
        },
      ],
    }),
    [nodes, maxDepth, model.total],
  );
  const onClick = useCallback(
    (p: echarts.ECElementEvent) => onSelect((p.data as { spanId: string }).spanId),
    [onSelect],
  );
  return (
    <div className="panel">
      <div className="muted" style={{ fontSize: 12 }}>
        One bar per span, by depth; spans on the critical path are outlined in orange. Scroll or drag the slider to zoom;
        click a bar for its details.
      </div>
      <Suspense fallback={<Loading what="the flame graph" />}>
        <Chart option={option} height={Math.max(240, (maxDepth + 1) * 24 + 70)} onClick={onClick} testId="flame-graph" />
      </Suspense>
    </div>
  );
}

function Statistics({ model }: { model: TraceModel }) {
  const [sort, setSort] = useState<"critical" | "total" | "self" | "count">("critical");
  const rows = useMemo(() => statistics(model.trace).sort((a, b) => b[sort] - a[sort]), [model, sort]);
  const header = (key: typeof sort, label: string) => (
    <th className="num" style={{ cursor: "pointer" }} onClick={() => setSort(key)}>
      {label}
      {sort === key ? " ▾" : ""}
    </th>
  );
  return (
    <div className="panel">
      <table className="data" data-testid="stats-table">
        <thead>
          <tr>
            <th>Service</th>
            <th>Operation</th>
            {header("count", "Count")}
            {header("total", "Total time")}
            {header("self", "Self time")}
            {header("critical", "Critical path")}
            <th className="num">Share of trace</th>
            <th className="num">Errors</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={`${r.service}/${r.name}`}>
              <td>
                <span className="service-dot" style={{ background: serviceColour(r.service) }} />
                {r.service}
              </td>
              <td>{r.name}</td>
              <td className="num">{r.count}</td>
              <td className="num">{duration(r.total)}</td>
              <td className="num">{duration(r.self)}</td>
              <td className="num">{duration(r.critical)}</td>
              <td className="num">{percent(r.critical, model.total)}</td>
              <td className="num">{r.errors || ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
