import { useEffect, useRef } from "react";
import { useSearchParams } from "react-router-dom";
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";

import { api, type Flow } from "../api";
import { Empty, Picker, Show, currentTheme, useApi, useEntries } from "../components/common";
import { arrowEdge, labelledNode } from "../components/graphStyle";
import { LOOKBACKS, duration, percent, serviceColour } from "../format";

cytoscape.use(dagre);

// What an entry operation does, aggregated over its requests: the call tree of (service,
// operation) with runs per request, reach, errors and latency. Living documentation.
export function FlowsPage() {
  const [params, setParams] = useSearchParams();
  const lookback = params.get("lookback") ?? "1h";
  const entry = params.get("entry") ?? "";
  const { entries, options } = useEntries(lookback);
  const chosen = entry || options[0]?.[0] || "";
  const [service, operation] = chosen.split("\u0000");
  const flow = useApi(
    () =>
      service && operation
        ? api.flow(new URLSearchParams({ lookback, service, operation }))
        : Promise.resolve(undefined),
    [lookback, chosen],
  );
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
        <h1 style={{ margin: 0 }}>Flows</h1>
        <Picker label="Time range" value={lookback} onChange={(v) => set("lookback", v)} options={LOOKBACKS} />
        <Picker label="Entry operation" value={chosen} onChange={(v) => set("entry", v)} options={options} testId="flow-entry" flex={1} />
        {service && (
          <span className="form-row" style={{ fontSize: 12 }}>
            <span className="muted">Export:</span>
            <a href={`/api/v1/flow?${exportQuery}&format=markdown`} download="flow.md" data-testid="flow-markdown">
              Markdown
            </a>
            <a href={`/api/v1/flow?${exportQuery}&format=mermaid`} download="flow.mmd">
              Mermaid
            </a>
            <a href={`/api/v1/flow?${exportQuery}&format=dot`} download="flow.dot">
              Graphviz DOT
            </a>
            <a href={`/api/v1/flow?${exportQuery}&format=svg`} download="flow.svg">
              SVG picture
            </a>
          </span>
        )}
      </div>
      <Show value={entries} what="the entry operations">
        {() =>
          !service ? (
            <Empty>No request has entered the system in this time range.</Empty>
          ) : (
            <Show value={flow} what="the flow">
              {(data) => (data ? <FlowView flow={data} /> : null)}
            </Show>
          )
        }
      </Show>
    </div>
  );
}

function FlowView({ flow }: { flow: Flow }) {
  return (
    <>
      <div className="panel" data-testid="flow-summary">
        {flow.stats.requests.toLocaleString()} requests, {percent(flow.stats.errors, flow.stats.requests)} failed · p50{" "}
        {duration(flow.stats.p50_nanos)} · p95 {duration(flow.stats.p95_nanos)} · p99 {duration(flow.stats.p99_nanos)} ·{" "}
        {flow.nodes.length} operations in its call tree
      </div>
      <FlowGraph flow={flow} />
      <div className="panel">
        <table className="data" data-testid="flow-table">
          <thead>
            <tr>
              <th>Operation</th>
              <th>Kind</th>
              <th className="num">Per request</th>
              <th className="num">p95 per request</th>
              <th>Reached by</th>
              <th className="num">Errors</th>
              <th className="num">p95</th>
            </tr>
          </thead>
          <tbody>
            {flow.nodes.map((n) => (
              <tr key={n.id} data-testid="flow-node" data-service={n.service} data-operation={n.operation} data-kind={n.kind}>
                <td style={{ paddingLeft: 8 + 16 * n.depth }}>
                  <span className="service-dot" style={{ background: serviceColour(n.service) }} />
                  {n.service}: {n.operation}
                  {n.peer && (n.kind === "client" || n.kind === "producer") && <span className="muted"> → {n.peer}</span>}
                </td>
                <td>{n.kind}</td>
                <td className="num" data-testid="per-request">
                  {n.calls_per_request.toFixed(2)}
                </td>
                <td className="num">{n.p95_per_request}</td>
                <td>
                  <span className="duration-bar" style={{ display: "inline-block", width: 60 * n.reach, height: 8 }} />{" "}
                  {percent(n.reach, 1)}
                </td>
                <td className="num">{percent(n.error_share, 1)}</td>
                <td className="num">{duration(n.p95_nanos)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

function FlowGraph({ flow }: { flow: Flow }) {
  const element = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!element.current) return;
    const dark = currentTheme() === "dark";
    const callers = new Set(flow.edges.map((e) => e.from));
    // A client span that leads to a traced server span is the edge's midpoint: no label of its
    // own. One that leads nowhere (a database, a service without spans) says what it calls.
    const label = (n: Flow["nodes"][number]) =>
      n.kind === "client" || n.kind === "producer"
        ? callers.has(n.id)
          ? ""
          : `→ ${n.peer ?? "?"}\n${n.operation}\n×${n.calls_per_request.toFixed(2)}`
        : `${n.service}\n${n.operation}\n×${n.calls_per_request.toFixed(2)} · ${percent(n.reach, 1)}`;
    const instance = cytoscape({
      container: element.current,
      wheelSensitivity: 0.3,
      elements: [
        ...flow.nodes.map((n) => ({
          data: {
            id: n.id,
            kind: n.kind,
            label: label(n),
            colour: n.kind === "server" || n.kind === "consumer" ? serviceColour(n.service) : dark ? "#3a4150" : "#dee2e6",
          },
        })),
        ...flow.edges.map((e) => ({ data: { id: `${e.from}->${e.to}`, source: e.from, target: e.to } })),
      ],
      style: [
        {
          selector: "node",
          style: {
            ...labelledNode(dark, 11),
            shape: "round-rectangle",
            width: 28,
            height: 20,
          },
        },
        { selector: 'node[kind = "client"], node[kind = "producer"]', style: { shape: "ellipse", width: 14, height: 14 } },
        {
          selector: "edge",
          style: arrowEdge(dark, 1.5),
        },
      ],
      layout: { name: "dagre", rankDir: "LR", nodeSep: 34, rankSep: 60 } as cytoscape.LayoutOptions,
    });
    return () => instance.destroy();
  }, [flow]);
  return <div ref={element} className="map panel" style={{ height: 460 }} data-testid="flow-graph" />;
}
