import { useMemo, useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router-dom";

import {
  api,
  type AttributeDirectory,
  type CriticalOperationReport,
  type CoverageReport,
  type PlanStep,
  type RolloutPlan,
  type ServiceCoverage,
  type ServiceStatus,
} from "../api";
import { Chart } from "../components/Chart";
import { Empty, Picker, Show, useApi } from "../components/common";
import { LOOKBACKS, ago, duration, percent, serviceColour } from "../format";

// The adoption pages: how far tracing has spread (coverage), who should adopt it next (the
// rollout plan), and who runs what (the client directory). Each reads the same reports the CLI
// prints, for the time range in the URL.

// The page's state lives in the URL: `lookback` and whatever else the page keeps there.
function useUrlState() {
  const [params, setParams] = useSearchParams();
  const lookback = params.get("lookback") ?? "1h";
  const set = (changes: Record<string, string>) => {
    const next = new URLSearchParams(params);
    for (const [key, value] of Object.entries(changes)) {
      if (value) next.set(key, value);
      else next.delete(key);
    }
    setParams(next);
  };
  return { lookback, params, set, setLookback: (value: string) => set({ lookback: value }) };
}

const STATUS_TEXT: Record<ServiceStatus, string> = {
  instrumented: "sends spans",
  not_instrumented: "not instrumented",
  database: "database",
  unseen: "not seen",
  external: "third party",
};

const STATUS_COLOUR: Record<ServiceStatus, string> = {
  instrumented: "#59a14f",
  not_instrumented: "#e15759",
  unseen: "#bab0ac",
  external: "#76b7b2",
  database: "#4e79a7",
};

function StatusBadge({ status }: { status: ServiceStatus }) {
  const tone = status === "not_instrumented" ? "error" : status === "unseen" ? "warn" : "";
  return (
    <span className={`badge ${tone}`} data-testid="service-status" data-status={status}>
      {STATUS_TEXT[status]}
    </span>
  );
}

function DownloadMarkdown({ path, lookback, name }: { path: string; lookback: string; name: string }) {
  return (
    <a
      className="button"
      href={`${path}?${new URLSearchParams({ lookback, format: "markdown" })}`}
      download={name}
      data-testid="download-markdown"
    >
      Download as Markdown
    </a>
  );
}

function Warnings({ warnings }: { warnings?: string[] }) {
  if (!warnings?.length) return null;
  return (
    <div className="warning-box" role="status">
      {warnings.map((w) => (
        <div key={w}>{w}</div>
      ))}
    </div>
  );
}

// Per team, how many of its services send spans, are called but send nothing, or are known only
// from the catalog: one stacked bar each, the teams with the most left to do on top.
function TeamChart({ report }: { report: CoverageReport }) {
  const option = useMemo(() => {
    const statuses: ServiceStatus[] = ["instrumented", "not_instrumented", "unseen", "external"];
    const counts = new Map<string, Record<string, number>>();
    for (const s of report.services) {
      if (s.status === "database") continue;
      const team = s.team ?? "(no owner)";
      const row = counts.get(team) ?? {};
      row[s.status] = (row[s.status] ?? 0) + 1;
      counts.set(team, row);
    }
    const left = (row: Record<string, number>) => (row.not_instrumented ?? 0) + (row.unseen ?? 0);
    const teams = [...counts.entries()].sort((a, b) => left(a[1]) - left(b[1]) || b[0].localeCompare(a[0]));
    return {
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      legend: { top: 0 },
      grid: { left: 110, right: 20, top: 30, bottom: 20 },
      xAxis: { type: "value", minInterval: 1, name: "services" },
      yAxis: { type: "category", data: teams.map(([team]) => team) },
      series: statuses.map((status) => ({
        name: STATUS_TEXT[status],
        type: "bar",
        stack: "services",
        itemStyle: { color: STATUS_COLOUR[status] },
        data: teams.map(([, row]) => row[status] ?? 0),
      })),
    };
  }, [report]);
  const teams = new Set(report.services.filter((s) => s.status !== "database").map((s) => s.team)).size;
  return <Chart option={option} height={Math.max(160, 40 + teams * 26)} testId="coverage-chart" />;
}

function Findings({ service }: { service: ServiceCoverage }) {
  if (!service.findings.length) return <span className="muted">none</span>;
  return (
    <details>
      <summary>
        {service.findings.length} finding{service.findings.length > 1 ? "s" : ""}
      </summary>
      <ul className="findings">
        {service.findings.map((f) => (
          <li key={f.rule} data-testid="finding" data-rule={f.rule} style={{ whiteSpace: "normal" }}>
            <span className={`badge ${f.severity === "high" ? "error" : f.severity === "medium" ? "warn" : ""}`}>
              {f.severity}
            </span>{" "}
            {f.message}. <span className="muted">{f.advice}</span>
          </li>
        ))}
      </ul>
    </details>
  );
}

export function CoveragePage() {
  const { lookback, setLookback } = useUrlState();
  const report = useApi(() => api.coverage(new URLSearchParams({ lookback })), [lookback]);
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>Coverage</h1>
        <Picker label="Time range" value={lookback} onChange={setLookback} options={LOOKBACKS} />
        <span className="spacer" />
        <DownloadMarkdown path="/api/v1/coverage" lookback={lookback} name="coverage.md" />
      </div>
      <Show value={report} what="coverage">
        {(data) =>
          data.services.length === 0 ? (
            <Empty>No spans in this time range, and no catalog: nothing to report yet.</Empty>
          ) : (
            <>
              <Warnings warnings={data.warnings} />
              <div className="panel" data-testid="coverage-summary">
                <strong>{percent(data.summary.instrumented, data.summary.instrumented + data.summary.not_instrumented + data.summary.unseen)}</strong>{" "}
                of the services Clew knows send spans: {data.summary.instrumented} instrumented,{" "}
                {data.summary.not_instrumented} called but not instrumented, {data.summary.unseen} in the catalog but
                not seen; {data.summary.databases} databases, {data.summary.external} third parties.{" "}
                {data.summary.breaks} place{data.summary.breaks === 1 ? "" : "s"} where context propagation breaks.
              </div>
              <div className="panel">
                <h2 style={{ marginTop: 0 }}>Teams</h2>
                <TeamChart report={data} />
              </div>
              {data.breaks.length > 0 && (
                <div className="panel">
                  <h2 style={{ marginTop: 0 }}>Where context propagation breaks</h2>
                  <table className="data" data-testid="breaks-table">
                    <thead>
                      <tr>
                        <th>Call</th>
                        <th className="num">Broken calls</th>
                        <th>Which side</th>
                        <th>Fix</th>
                      </tr>
                    </thead>
                    <tbody>
                      {data.breaks.map((b) => (
                        <tr key={`${b.caller} ${b.callee} ${b.operation}`} data-testid="break">
                          <td>
                            {b.caller} → {b.callee}
                            <div className="muted">{b.operation}</div>
                          </td>
                          <td className="num">
                            {b.broken_calls.toLocaleString()} of {(b.broken_calls + b.answered_calls).toLocaleString()}
                          </td>
                          <td className="wrap">
                            <span className="badge error">
                              {b.diagnosis === "caller_does_not_inject" ? `${b.caller} does not inject` : `${b.callee} does not extract`}
                            </span>
                            <div className="muted">{b.explanation}</div>
                          </td>
                          <td className="wrap">{b.fix}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
              <div className="panel">
                <h2 style={{ marginTop: 0 }}>Services</h2>
                <table className="data" data-testid="coverage-table">
                  <thead>
                    <tr>
                      <th>Service</th>
                      <th>Team</th>
                      <th>Status</th>
                      <th className="num">Spans</th>
                      <th className="num">Whole traces</th>
                      <th className="num">Quality</th>
                      <th>Findings</th>
                    </tr>
                  </thead>
                  <tbody>
                    {data.services.map((s) => (
                      <tr key={s.service} data-testid="coverage-row" data-service={s.service}>
                        <td>
                          <span className="service-dot" style={{ background: serviceColour(s.service) }} />
                          {s.status === "instrumented" ? (
                            <Link to={`/services/${encodeURIComponent(s.service)}`}>{s.service}</Link>
                          ) : (
                            s.service
                          )}
                          {s.status !== "instrumented" && s.callers.length > 0 && (
                            <div className="muted">called by {s.callers.join(", ")}</div>
                          )}
                        </td>
                        <td title={`owner from ${s.owner_source}`}>{s.team ?? <span className="muted">unknown</span>}</td>
                        <td>
                          <StatusBadge status={s.status} />
                        </td>
                        <td className="num">{s.spans ? s.spans.toLocaleString() : ""}</td>
                        <td className="num">{s.whole_share === null ? "" : percent(s.whole_share, 1)}</td>
                        <td className="num" data-testid="quality-score">
                          {s.quality_score === null ? "" : `${s.quality_score} ${s.quality_band ?? ""}`}
                        </td>
                        <td className="wrap">{s.status === "instrumented" ? <Findings service={s} /> : null}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            </>
          )
        }
      </Show>
    </div>
  );
}

const REASON_TEXT: Record<PlanStep["reason"], string> = {
  entry_point: "owns the busiest entry point",
  largest_dependency: "largest dependency of the entry team",
  dependency_order: "most depended upon",
  catalog_only: "known from the catalog only",
};

export function PlanPage() {
  const { lookback, setLookback } = useUrlState();
  const plan = useApi(() => api.rolloutPlan(new URLSearchParams({ lookback })), [lookback]);
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>Rollout plan</h1>
        <Picker label="Time range" value={lookback} onChange={setLookback} options={LOOKBACKS} />
        <span className="spacer" />
        <DownloadMarkdown path="/api/v1/rollout-plan" lookback={lookback} name="rollout-plan.md" />
      </div>
      <Show value={plan} what="the rollout plan">{(data) => <Plan plan={data} />}</Show>
    </div>
  );
}

function Plan({ plan }: { plan: RolloutPlan }) {
  if (plan.teams === 0) return <Empty>No team is known yet: send spans with a team attribute, or give Clew a service catalog.</Empty>;
  return (
    <>
      <Warnings warnings={plan.warnings} />
      <div className="panel" data-testid="plan-progress">
        {plan.adopted.length} of {plan.teams} teams trace all their services
        {plan.adopted.length > 0 && <>: {plan.adopted.map((t) => t.team).join(", ")}</>}.
        {plan.partial.map((t) => (
          <div key={t.team} className="muted">
            {t.team} has started: {t.traced.join(", ")} traced; not yet {t.not_traced.join(", ")}.
          </div>
        ))}
      </div>
      {plan.steps.length === 0 ? (
        <Empty>Every team known to Clew traces its services: nothing left to plan.</Empty>
      ) : (
        <ol className="plan" data-testid="plan-steps">
          {plan.steps.map((step) => (
            <li key={step.step} className="panel" data-testid="plan-step" data-team={step.team}>
              <h2 style={{ marginTop: 0 }}>
                {step.step}. {step.team}{" "}
                <span className={`badge ${step.reason === "catalog_only" ? "warn" : ""}`} data-testid="plan-reason">
                  {REASON_TEXT[step.reason]}
                </span>
              </h2>
              <div className="muted">Instrument: {step.services.join(", ")}</div>
              <p data-testid="plan-rationale">{step.rationale}</p>
              {step.unlocks.length > 0 && (
                <>
                  <strong>What it unlocks</strong>
                  <ul>
                    {step.unlocks.map((u) => (
                      <li key={u}>{u}</li>
                    ))}
                  </ul>
                </>
              )}
            </li>
          ))}
        </ol>
      )}
    </>
  );
}

const SUGGESTED_KEYS = ["telemetry.sdk.version", "telemetry.sdk.language", "service.version", "db.system", "scope.name"];

export function DirectoryPage() {
  const { lookback, setLookback, params, set } = useUrlState();
  const key = params.get("key") ?? "telemetry.sdk.version";
  const value = params.get("value") ?? "";
  const [draft, setDraft] = useState(key);
  const keys = useApi(() => api.attributeKeys("resource"), []);
  const directory = useApi(
    () => api.directory(key, new URLSearchParams(value ? { lookback, value } : { lookback })),
    [key, value, lookback],
  );
  const options = [...new Set([...SUGGESTED_KEYS, ...(keys.state === "done" ? keys.data.map((k) => k.key) : [])])];
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>Client directory</h1>
        <form
          className="form-row"
          onSubmit={(e) => {
            e.preventDefault();
            if (draft.trim()) set({ key: draft.trim(), value: "" });
          }}
        >
          <label className="field">
            Attribute
            <input
              list="directory-keys"
              value={draft}
              onChange={(e) => setDraft(e.target.value)}
              data-testid="directory-key"
              size={28}
            />
          </label>
          <datalist id="directory-keys">
            {options.map((k) => (
              <option key={k} value={k} />
            ))}
          </datalist>
          <button type="submit" data-testid="directory-show">
            Show
          </button>
        </form>
        <Picker label="Time range" value={lookback} onChange={setLookback} options={LOOKBACKS} />
        {value && (
          <button onClick={() => set({ value: "" })} data-testid="directory-all-values">
            All values
          </button>
        )}
      </div>
      <Show value={directory} what={`who uses which ${key}`}>
        {(data) =>
          data.entries.length === 0 ? (
            <Empty>No span in this time range carries {key}.</Empty>
          ) : (
            <Directory directory={data} onPick={(v) => set({ value: v })} />
          )
        }
      </Show>
    </div>
  );
}

function Directory({ directory, onPick }: { directory: AttributeDirectory; onPick: (value: string) => void }) {
  const option = useMemo(
    () => ({
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      grid: { left: 140, right: 20, top: 10, bottom: 30 },
      xAxis: { type: "value", minInterval: 1, name: "services" },
      yAxis: { type: "category", data: directory.values.map((v) => v.value).reverse() },
      series: [
        {
          name: "services",
          type: "bar",
          itemStyle: { color: "#4e79a7" },
          data: directory.values.map((v) => v.services.length).reverse(),
        },
      ],
    }),
    [directory],
  );
  return (
    <>
      <div className="panel">
        <Chart
          option={option}
          height={Math.max(120, 40 + directory.values.length * 26)}
          testId="directory-chart"
          onClick={(p) => typeof p.name === "string" && onPick(p.name)}
        />
      </div>
      <div className="panel">
        <table className="data" data-testid="directory-table">
          <thead>
            <tr>
              <th>{directory.key}</th>
              <th>Services</th>
              <th className="num">Spans</th>
              <th>First seen</th>
              <th>Last seen</th>
            </tr>
          </thead>
          <tbody>
            {directory.values.map((v) => (
              <tr key={v.value} data-testid="directory-row" data-value={v.value}>
                <td>
                  <button className="link" onClick={() => onPick(v.value)}>
                    {v.value}
                  </button>
                </td>
                <td data-testid="directory-services">
                  {v.services.map((s) => (
                    <span key={s} className="chip">
                      <span className="service-dot" style={{ background: serviceColour(s) }} />
                      {s}
                    </span>
                  ))}
                </td>
                <td className="num">{v.spans.toLocaleString()}</td>
                <td>{ago(v.first_seen_unix_nano)}</td>
                <td>{ago(v.last_seen_unix_nano)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

const NODE_TEXT: Record<CriticalOperationReport["services"][number]["status"], string> = {
  instrumented: "traced",
  not_instrumented: "not instrumented",
  context_lost: "context lost",
  database: "database",
  external: "third party",
};

function Change({ value, worse }: { value: number | null; worse: "up" | "down" | "none" }) {
  if (value === null || !Number.isFinite(value)) return <span className="muted">no earlier data</span>;
  const text = `${value >= 0 ? "+" : ""}${(100 * value).toFixed(0)}%`;
  const bad = (worse === "up" && value > 0.1) || (worse === "down" && value < -0.1);
  return <span className={`badge ${bad ? "error" : ""}`}>{text} vs before</span>;
}

// The business's critical operations: how each behaves, and how much of it is traced.
export function OperationsPage() {
  const { lookback, setLookback } = useUrlState();
  // Bumped after a registration or a removal, to read the list again.
  const [version, setVersion] = useState(0);
  const reports = useApi(() => api.criticalOperations(new URLSearchParams({ lookback })), [lookback, version]);
  const changed = () => setVersion((v) => v + 1);
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>Critical operations</h1>
        <Picker label="Time range" value={lookback} onChange={setLookback} options={LOOKBACKS} />
        <span className="spacer" />
        <DownloadMarkdown path="/api/v1/critical-operations" lookback={lookback} name="critical-operations.md" />
      </div>
      <RegisterOperation onChange={changed} />
      <Show value={reports} what="the critical operations">
        {(data) => (
          <>
            <Warnings warnings={data.warnings} />
            {data.operations.length === 0 ? (
              <Empty>
                No critical operation is defined. Register one above, or list them under{" "}
                <code>critical_operations</code> in the service catalog: a name, the service requests enter, and the
                operation or route.
              </Empty>
            ) : (
              data.operations.map((report) => <OperationCard key={report.name} report={report} onChange={changed} />)
            )}
          </>
        )}
      </Show>
    </div>
  );
}

// Registers a critical operation over the API (kept by the server across restarts).
function RegisterOperation({ onChange }: { onChange: () => void }) {
  const empty = { name: "", service: "", by: "operation", entry: "", traceql: "", description: "" };
  const [draft, setDraft] = useState(empty);
  const [open, setOpen] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const set = (key: keyof typeof empty) => (e: { target: { value: string } }) => setDraft({ ...draft, [key]: e.target.value });
  if (!open) {
    return (
      <div className="form-row" style={{ marginBottom: 12 }}>
        <button onClick={() => setOpen(true)} data-testid="register-open">
          Register a critical operation
        </button>
      </div>
    );
  }
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!draft.name.trim() || !draft.service.trim()) {
      setError("A critical operation needs a name and the service its requests enter.");
      return;
    }
    const definition = {
      service: draft.service.trim(),
      ...(draft.entry.trim() ? { [draft.by]: draft.entry.trim() } : {}),
      ...(draft.traceql.trim() ? { traceql: draft.traceql.trim() } : {}),
      description: draft.description.trim(),
    };
    try {
      await api.registerOperation(draft.name.trim(), definition);
      setError(null);
      setDraft(empty);
      setOpen(false);
      onChange();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  return (
    <form className="panel" onSubmit={submit} data-testid="register-form">
      <div className="form-row">
        <label className="field">
          Name
          <input value={draft.name} onChange={set("name")} placeholder="Checkout" data-testid="register-name" required />
        </label>
        <label className="field">
          Service the requests enter
          <input value={draft.service} onChange={set("service")} placeholder="web-gateway" data-testid="register-service" required />
        </label>
        <label className="field">
          Entry span's
          <select value={draft.by} onChange={set("by")} data-testid="register-by">
            <option value="operation">name</option>
            <option value="route">http.route</option>
          </select>
        </label>
        <label className="field">
          {draft.by === "route" ? "Route" : "Operation"}
          <input value={draft.entry} onChange={set("entry")} placeholder={draft.by === "route" ? "/checkout" : "POST /checkout"} data-testid="register-entry" />
        </label>
      </div>
      <div className="form-row">
        <label className="field" style={{ flex: 1 }}>
          TraceQL filter on the entry span (optional)
          <input className="mono" value={draft.traceql} onChange={set("traceql")} placeholder='{ span.http.request.method = "POST" }' data-testid="register-traceql" />
        </label>
        <label className="field" style={{ flex: 1 }}>
          Description
          <input value={draft.description} onChange={set("description")} placeholder="A customer pays for their cart." />
        </label>
      </div>
      {error && (
        <div className="panel warning" data-testid="register-error">
          {error}
        </div>
      )}
      <div className="form-row">
        <button type="submit" data-testid="register-submit">
          Register
        </button>
        <button
          type="button"
          onClick={() => {
            setOpen(false);
            setError(null);
            setDraft(empty);
          }}
        >
          Cancel
        </button>
        <span className="muted">Kept by the server across restarts; the catalog file's operations are changed in the file.</span>
      </div>
    </form>
  );
}

function OperationCard({ report, onChange }: { report: CriticalOperationReport; onChange: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const remove = async () => {
    if (!window.confirm(`Forget the critical operation "${report.name}"?`)) return;
    try {
      await api.removeOperation(report.name);
      onChange();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  const option = useMemo(
    () => ({
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 50, right: 60, top: 30, bottom: 30 },
      xAxis: { type: "time", min: report.start_unix_nano / 1e6, max: report.end_unix_nano / 1e6 },
      yAxis: [
        { type: "value", name: "requests", minInterval: 1 },
        { type: "value", name: "p95 ms", splitLine: { show: false } },
      ],
      series: [
        {
          name: "succeeded",
          type: "bar",
          stack: "requests",
          itemStyle: { color: "#4e79a7" },
          data: report.series.map((p) => [p.time_unix_nano / 1e6, p.requests - p.errors]),
        },
        {
          name: "failed",
          type: "bar",
          stack: "requests",
          itemStyle: { color: "#e15759" },
          data: report.series.map((p) => [p.time_unix_nano / 1e6, p.errors]),
        },
        {
          name: "p95",
          type: "line",
          yAxisIndex: 1,
          showSymbol: false,
          itemStyle: { color: "#f28e2b" },
          data: report.series.map((p) => [p.time_unix_nano / 1e6, +(p.p95_nanos / 1e6).toFixed(2)]),
        },
      ],
    }),
    [report],
  );
  const entry = report.operation
    ? `${report.service} ${report.operation}`
    : report.route
      ? `${report.service} route ${report.route}`
      : report.service;
  return (
    <div className="panel" data-testid="critical-operation" data-name={report.name}>
      <h2 style={{ marginTop: 0 }}>
        {report.name} <span className="muted">{entry}</span>
        {report.traceql && <code style={{ fontSize: "0.7em", marginLeft: 8 }}>{report.traceql}</code>}{" "}
        <span className="badge" data-testid="operation-source" title={report.source === "api" ? "registered over the API" : "from the catalog file"}>
          {report.source === "api" ? "registered" : "catalog"}
        </span>
        {report.source === "api" && (
          <button style={{ marginLeft: 8, fontSize: 13, fontWeight: "normal" }} onClick={remove} data-testid="operation-remove">
            Remove
          </button>
        )}
      </h2>
      {error && <div className="panel warning">{error}</div>}
      {report.description && <p>{report.description}</p>}
      <div className="form-row" data-testid="operation-stats">
        <span>
          <strong>{report.requests_per_second.toFixed(2)}</strong>/s ({report.requests.toLocaleString()} requests){" "}
          <Change value={report.trend.requests_change} worse="none" />
        </span>
        <span>
          errors <strong>{percent(report.errors, report.requests)}</strong>
        </span>
        <span>
          p50 {duration(report.p50_nanos)} · p95 <strong>{duration(report.p95_nanos)}</strong> · p99{" "}
          {duration(report.p99_nanos)} <Change value={report.trend.p95_change} worse="up" />
        </span>
        <span data-testid="operation-coverage">
          <strong>{percent(report.coverage, 1)}</strong> of its services traced ·{" "}
          <strong>{percent(report.whole_share, 1)}</strong> of requests traced whole
        </span>
      </div>
      <Chart option={option} height={180} testId="operation-chart" />
      {report.gaps.length === 0 ? (
        <p className="muted">No gap: every service it reaches sends spans with the trace's context.</p>
      ) : (
        <table className="data" data-testid="operation-gaps">
          <thead>
            <tr>
              <th>Gap</th>
              <th>Team</th>
              <th>Why</th>
              <th className="num">Reached by</th>
              <th>Called from</th>
            </tr>
          </thead>
          <tbody>
            {report.gaps.map((g) => (
              <tr key={g.service} data-testid="operation-gap" data-service={g.service}>
                <td>{g.service}</td>
                <td>{g.team ?? <span className="muted">unknown</span>}</td>
                <td>
                  <span className="badge error">{NODE_TEXT[g.status]}</span>
                </td>
                <td className="num">{percent(g.reach, 1)} of requests</td>
                <td>{g.callers.join(", ")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <details>
        <summary>All {report.services.length} services it reaches</summary>
        <table className="data">
          <tbody>
            {report.services.map((n) => (
              <tr key={n.service} data-testid="operation-service" data-service={n.service} data-status={n.status}>
                <td>
                  <span className="service-dot" style={{ background: serviceColour(n.service) }} />
                  {n.service}
                </td>
                <td>{n.team ?? ""}</td>
                <td>{NODE_TEXT[n.status]}</td>
                <td className="num">{percent(n.reach, 1)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </div>
  );
}
