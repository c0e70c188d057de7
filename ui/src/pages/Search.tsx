import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { useNavigate, useSearchParams } from "react-router-dom";
import type * as echarts from "echarts/core";

import { api, type TraceSummary } from "../api";
import { Empty, ErrorBox, Loading, Picker, useApi } from "../components/common";
import { Chart } from "../components/Chart";
import { LOOKBACKS, ago, duration, serviceColour, timestamp } from "../format";

// Every state of the page is in its URL: a search can be shared by copying the address.
const FORM_KEYS = ["service", "operation", "attr", "minDuration", "maxDuration", "lookback", "start", "end", "limit", "sort", "q"];

// The distinct non-empty values, in first-seen order.
function unique(values: string[]): string[] {
  return [...new Set(values.filter(Boolean))];
}

// `datetime-local` text (local time) ↔ Unix nanoseconds as a decimal string.
function toNanos(local: string): string {
  return local ? `${BigInt(new Date(local).getTime()) * 1_000_000n}` : "";
}
function fromNanos(nanos: string | null): string {
  if (!nanos) return "";
  const date = new Date(Number(BigInt(nanos) / 1_000_000n));
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export function SearchPage() {
  const [params, setParams] = useSearchParams();
  const navigate = useNavigate();
  const [mode, setMode] = useState<"form" | "traceql">(params.get("q") ? "traceql" : "form");
  const [selected, setSelected] = useState<string[]>([]);

  const query = useMemo(() => {
    const q = new URLSearchParams();
    for (const key of FORM_KEYS) for (const value of params.getAll(key)) if (value) q.append(key, value);
    if (!q.get("lookback") && !q.get("start")) q.set("lookback", "1h");
    if (!q.get("limit")) q.set("limit", "50");
    if (q.get("q")) {
      // A TraceQL search takes its conditions from the query alone.
      for (const key of ["service", "operation", "attr", "minDuration", "maxDuration", "sort"]) q.delete(key);
    }
    return q;
  }, [params]);

  const results = useApi(() => api.search(query), [query.toString()]);

  const toggle = (id: string) =>
    setSelected((s) => (s.includes(id) ? s.filter((x) => x !== id) : [...s.slice(-1), id]));

  return (
    <div className="layout-search">
      <aside className="panel">
        <div className="tabs">
          <button className={mode === "form" ? "active" : ""} onClick={() => setMode("form")} data-testid="mode-form">
            Filters
          </button>
          <button
            className={mode === "traceql" ? "active" : ""}
            onClick={() => setMode("traceql")}
            data-testid="mode-traceql"
          >
            TraceQL
          </button>
        </div>
        {mode === "form" ? (
          <SearchForm params={params} onSubmit={(p) => setParams(p)} />
        ) : (
          <TraceQlForm params={params} onSubmit={(p) => setParams(p)} />
        )}
      </aside>
      <section>
        {results.state === "loading" && <Loading what="traces" />}
        {results.state === "error" && <ErrorBox message={results.message} />}
        {results.state === "done" && (
          <Results
            traces={results.data}
            selected={selected}
            toggle={toggle}
            sort={params.get("sort") ?? "newest"}
            onSort={(sort) => {
              const next = new URLSearchParams(params);
              next.set("sort", sort);
              setParams(next);
            }}
            onCompare={() => navigate(`/compare?a=${selected[0]}&b=${selected[1]}`)}
          />
        )}
      </section>
    </div>
  );
}

function SearchForm({ params, onSubmit }: { params: URLSearchParams; onSubmit: (p: URLSearchParams) => void }) {
  const services = useApi(() => api.services(), []);
  const [service, setService] = useState(params.get("service") ?? "");
  const [operation, setOperation] = useState(params.get("operation") ?? "");
  const [attrs, setAttrs] = useState(params.getAll("attr").join("\n"));
  const [minDuration, setMinDuration] = useState(params.get("minDuration") ?? "");
  const [maxDuration, setMaxDuration] = useState(params.get("maxDuration") ?? "");
  const [lookback, setLookback] = useState(params.get("start") ? "custom" : (params.get("lookback") ?? "1h"));
  const [from, setFrom] = useState(fromNanos(params.get("start")));
  const [to, setTo] = useState(fromNanos(params.get("end")));
  const [limit, setLimit] = useState(params.get("limit") ?? "50");
  const operations = useApi(() => (service ? api.operations(service) : Promise.resolve([])), [service]);

  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (service) p.set("service", service);
    if (operation) p.set("operation", operation);
    for (const line of attrs.split("\n").map((l) => l.trim())) if (line) p.append("attr", line);
    if (minDuration) p.set("minDuration", minDuration);
    if (maxDuration) p.set("maxDuration", maxDuration);
    if (lookback === "custom") {
      if (from) p.set("start", toNanos(from));
      if (to) p.set("end", toNanos(to));
    } else p.set("lookback", lookback);
    p.set("limit", limit);
    if (params.get("sort")) p.set("sort", params.get("sort")!);
    onSubmit(p);
  };

  return (
    <form onSubmit={submit} data-testid="search-form">
      <Picker
        label="Service"
        value={service}
        onChange={(v) => {
          setService(v);
          setOperation("");
        }}
        none="All services"
        options={unique([service, ...(services.state === "done" ? services.data.map((s) => s.name) : [])]).sort().map((n) => [n, n])}
        testId="service-picker"
      />
      {services.state === "error" && <ErrorBox message={services.message} />}
      <Picker
        label="Operation"
        value={operation}
        onChange={setOperation}
        none="All operations"
        options={unique([operation, ...(operations.state === "done" ? operations.data.map((o) => o.name) : [])]).map((n) => [n, n])}
        testId="operation-picker"
      />
      <label className="field">
        Attributes, one per line
        <textarea
          rows={4}
          value={attrs}
          placeholder={"http.route=/cart\nresource.service.version!=1.2\nhttp.response.status_code>=500\ndb.statement=~SELECT.*"}
          onChange={(e) => setAttrs(e.target.value)}
          className="mono"
          style={{ width: "100%", background: "var(--panel)", color: "var(--text)", border: "1px solid var(--border)", borderRadius: 6 }}
          data-testid="attr-filters"
        />
      </label>
      <div className="form-row">
        <label className="field" style={{ flex: 1 }}>
          Min duration
          <input placeholder="e.g. 100ms" value={minDuration} onChange={(e) => setMinDuration(e.target.value)} />
        </label>
        <label className="field" style={{ flex: 1 }}>
          Max duration
          <input placeholder="e.g. 2s" value={maxDuration} onChange={(e) => setMaxDuration(e.target.value)} />
        </label>
      </div>
      <div className="form-row">
        <Picker
          label="Time range"
          value={lookback}
          onChange={setLookback}
          options={[...LOOKBACKS, ["custom", "Custom range…"]]}
          testId="lookback"
          flex={2}
        />
        <label className="field" style={{ flex: 1 }}>
          Limit
          <input type="number" min={1} max={1000} value={limit} onChange={(e) => setLimit(e.target.value)} />
        </label>
      </div>
      {lookback === "custom" && (
        <div className="form-row">
          <label className="field" style={{ flex: 1 }}>
            From
            <input type="datetime-local" value={from} onChange={(e) => setFrom(e.target.value)} data-testid="range-from" />
          </label>
          <label className="field" style={{ flex: 1 }}>
            To
            <input type="datetime-local" value={to} onChange={(e) => setTo(e.target.value)} data-testid="range-to" />
          </label>
        </div>
      )}
      <button className="primary" type="submit" style={{ width: "100%" }} data-testid="find-traces">
        Find traces
      </button>
    </form>
  );
}

const INTRINSICS = [
  "name",
  "status",
  "kind",
  "duration",
  "statusMessage",
  "span:name",
  "span:status",
  "span:kind",
  "span:duration",
  "trace:duration",
  "trace:rootName",
  "trace:rootService",
  "trace:id",
  "resource.service.name",
];

interface Suggestion {
  label: string;
  insert: string;
  replace: number; // characters before the cursor that the suggestion replaces
}

// Suggests attribute names after `.`, `span.` or `resource.`, and the values seen for an
// attribute after `attr = "`.
function useTraceQlSuggestions(text: string, cursor: number): Suggestion[] {
  const spanKeys = useApi(() => api.attributeKeys("span"), []);
  const resourceKeys = useApi(() => api.attributeKeys("resource"), []);
  const before = text.slice(0, cursor);
  const valueMatch = /(span|resource)?\.([\w.\-]+)\s*(=|!=|=~)\s*"([^"]*)$/.exec(before);
  const valueKey = valueMatch ? valueMatch[2] : "";
  const valueScope = valueMatch?.[1] === "resource" ? "resource" : "span";
  const values = useApi(
    () => (valueKey ? api.attributeValues(valueKey, valueScope) : Promise.resolve([])),
    [valueKey, valueScope],
  );
  if (valueMatch) {
    const prefix = valueMatch[4];
    if (values.state !== "done") return [];
    return values.data
      .filter((v) => v.value.startsWith(prefix))
      .slice(0, 30)
      .map((v) => ({ label: `${v.value}  (${v.spans} spans)`, insert: `${v.value}"`, replace: prefix.length }));
  }
  const keyMatch = /(span|resource)?\.([\w.\-]*)$/.exec(before);
  if (keyMatch) {
    const prefix = keyMatch[2];
    const scoped = keyMatch[1] === "resource" ? resourceKeys : spanKeys;
    if (scoped.state !== "done") return [];
    return scoped.data
      .filter((k) => k.key.startsWith(prefix) && k.key !== prefix)
      .slice(0, 30)
      .map((k) => ({ label: k.key, insert: k.key, replace: prefix.length }));
  }
  const wordMatch = /(?:^|[{\s(&|])([a-z][\w:]*)$/.exec(before);
  if (wordMatch) {
    const prefix = wordMatch[1];
    return INTRINSICS.filter((i) => i.startsWith(prefix) && i !== prefix).map((i) => ({
      label: i,
      insert: i,
      replace: prefix.length,
    }));
  }
  return [];
}

function TraceQlForm({ params, onSubmit }: { params: URLSearchParams; onSubmit: (p: URLSearchParams) => void }) {
  const [text, setText] = useState(params.get("q") ?? '{ resource.service.name = "frontend" && status = error }');
  const [cursor, setCursor] = useState(0);
  const [open, setOpen] = useState(false);
  const [active, setActive] = useState(0);
  const [lookback, setLookback] = useState(params.get("lookback") ?? "1h");
  const [limit, setLimit] = useState(params.get("limit") ?? "50");
  const area = useRef<HTMLTextAreaElement>(null);
  const suggestions = useTraceQlSuggestions(text, cursor);
  // After a suggestion is taken, the caret goes to its end before the next key is handled.
  const [pendingCursor, setPendingCursor] = useState<number | null>(null);
  useLayoutEffect(() => {
    if (pendingCursor === null || !area.current) return;
    area.current.focus();
    area.current.setSelectionRange(pendingCursor, pendingCursor);
    setPendingCursor(null);
  }, [pendingCursor, text]);
  useEffect(() => setActive(0), [suggestions.length]);

  const apply = useCallback(
    (s: Suggestion) => {
      const next = text.slice(0, cursor - s.replace) + s.insert + text.slice(cursor);
      const position = cursor - s.replace + s.insert.length;
      setText(next);
      setCursor(position);
      setPendingCursor(position);
    },
    [text, cursor],
  );

  const submit = (e?: React.FormEvent) => {
    e?.preventDefault();
    const p = new URLSearchParams({ q: text, lookback, limit });
    onSubmit(p);
    setOpen(false);
  };

  return (
    <form onSubmit={submit} data-testid="traceql-form">
      <label className="field" style={{ position: "relative" }}>
        TraceQL (Ctrl+Enter runs it)
        <textarea
          ref={area}
          rows={5}
          className="mono"
          value={text}
          spellCheck={false}
          data-testid="traceql-input"
          style={{ width: "100%", background: "var(--panel)", color: "var(--text)", border: "1px solid var(--border)", borderRadius: 6 }}
          onChange={(e) => {
            setText(e.target.value);
            setCursor(e.target.selectionStart);
            setOpen(true);
          }}
          onClick={(e) => setCursor(e.currentTarget.selectionStart)}
          onBlur={() => setTimeout(() => setOpen(false), 150)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
              submit();
              e.preventDefault();
            } else if (open && suggestions.length) {
              if (e.key === "ArrowDown") {
                setActive((a) => (a + 1) % suggestions.length);
                e.preventDefault();
              } else if (e.key === "ArrowUp") {
                setActive((a) => (a - 1 + suggestions.length) % suggestions.length);
                e.preventDefault();
              } else if (e.key === "Tab" || e.key === "Enter") {
                apply(suggestions[active]);
                e.preventDefault();
              } else if (e.key === "Escape") {
                setOpen(false);
              }
            }
          }}
        />
        {open && suggestions.length > 0 && (
          <div className="suggestions mono" data-testid="traceql-suggestions" style={{ top: "100%" }}>
            {suggestions.map((s, i) => (
              <div
                key={s.label}
                className={i === active ? "active" : ""}
                onMouseDown={(e) => {
                  e.preventDefault();
                  apply(s);
                }}
              >
                {s.label}
              </div>
            ))}
          </div>
        )}
      </label>
      <div className="form-row" style={{ marginBottom: 10 }}>
        <Picker label="Time range" value={lookback} onChange={setLookback} options={LOOKBACKS} flex={2} />
        <label className="field" style={{ flex: 1 }}>
          Limit
          <input type="number" min={1} max={1000} value={limit} onChange={(e) => setLimit(e.target.value)} />
        </label>
      </div>
      <button className="primary" type="submit" style={{ width: "100%" }} data-testid="run-traceql">
        Run query
      </button>
      <p className="muted" style={{ fontSize: 12 }}>
        Examples: <span className="mono">{'{ duration > 500ms }'}</span>,{" "}
        <span className="mono">{'{ span.http.route = "/cart" } >> { kind = client && status = error }'}</span>,{" "}
        <span className="mono">{"{ } | count() > 40"}</span>
      </p>
    </form>
  );
}

function Results({
  traces,
  selected,
  toggle,
  sort,
  onSort,
  onCompare,
}: {
  traces: TraceSummary[];
  selected: string[];
  toggle: (id: string) => void;
  sort: string;
  onSort: (sort: string) => void;
  onCompare: () => void;
}) {
  const navigate = useNavigate();
  const longest = Math.max(1, ...traces.map((t) => t.duration_nanos));
  const option = useMemo(
    () => ({
      grid: { left: 60, right: 20, top: 20, bottom: 40 },
      tooltip: {
        formatter: (p: { data: [number, number, string, string] }) =>
          `${p.data[3]}<br/>${duration(p.data[1] * 1e6)} · ${new Date(p.data[0]).toLocaleTimeString()}`,
      },
      xAxis: { type: "time", name: "start" },
      yAxis: { type: "value", name: "duration (ms)" },
      series: [
        {
          type: "scatter",
          symbolSize: 9,
          data: traces.map((t) => ({
            value: [t.start_unix_nano / 1e6, t.duration_nanos / 1e6, t.trace_id, `${t.root_service}: ${t.root_name}`],
            itemStyle: { color: (t.error_count ?? 0) > 0 ? "#e03131" : serviceColour(t.root_service) },
          })),
        },
      ],
    }),
    [traces],
  );
  const onDot = useCallback(
    (p: echarts.ECElementEvent) => {
      const data = p.data as { value: [number, number, string] };
      navigate(`/trace/${data.value[2]}`);
    },
    [navigate],
  );
  if (traces.length === 0) {
    return (
      <Empty>
        No traces match. Widen the time range, remove a filter, or send spans to Clew (OTLP on :4317 and :4318,
        Zipkin on :9411, Jaeger on :14268/:14250/:6831).
      </Empty>
    );
  }
  return (
    <>
      <div className="panel">
        <Chart option={option} height={200} onClick={onDot} testId="scatter" />
      </div>
      <div className="panel results" data-testid="results">
        <div className="form-row" style={{ justifyContent: "space-between", padding: "0 0 8px" }}>
          <strong data-testid="result-count">{traces.length} traces</strong>
          <span>
            <button disabled={selected.length !== 2} onClick={onCompare} data-testid="compare-selected">
              Compare selected ({selected.length}/2)
            </button>{" "}
            <select value={sort} onChange={(e) => onSort(e.target.value)} data-testid="sort">
              <option value="newest">Newest first</option>
              <option value="longest">Longest first</option>
            </select>
          </span>
        </div>
        {traces.map((t) => (
          <div
            key={t.trace_id}
            className="result"
            data-testid="result"
            onClick={() => navigate(`/trace/${t.trace_id}`)}
          >
            <div>
              <input
                type="checkbox"
                checked={selected.includes(t.trace_id)}
                onClick={(e) => e.stopPropagation()}
                onChange={() => toggle(t.trace_id)}
                title="Select to compare"
              />{" "}
              <span className="service-dot" style={{ background: serviceColour(t.root_service) }} />
              <span className="title">
                {t.root_service}: {t.root_name}
              </span>{" "}
              <span className="mono muted">{t.trace_id.slice(0, 12)}</span>
            </div>
            <div className="mono">{duration(t.duration_nanos)}</div>
            <div>
              {t.span_count !== undefined && <span className="badge">{t.span_count} spans</span>}
              {(t.error_count ?? 0) > 0 && <span className="badge error">{t.error_count} errors</span>}
              {t.services?.map((s) => (
                <span key={s} className="badge" style={{ background: "transparent", color: "var(--muted)" }}>
                  <span className="service-dot" style={{ background: serviceColour(s) }} />
                  {s}
                </span>
              ))}
            </div>
            <div className="muted" title={timestamp(t.start_unix_nano)}>
              {ago(t.start_unix_nano)}
            </div>
            <div style={{ gridColumn: "1 / span 2" }}>
              <div className="duration-bar" style={{ width: `${(100 * t.duration_nanos) / longest}%` }} />
            </div>
          </div>
        ))}
      </div>
    </>
  );
}
