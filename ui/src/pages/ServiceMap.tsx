import { useEffect, useMemo, useRef } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";

import { api, type ServiceGraph } from "../api";
import { Empty, Picker, Show, currentTheme, useApi } from "../components/common";
import { arrowEdge, labelledNode } from "../components/graphStyle";
import { LOOKBACKS, duration, percent, rate, serviceColour } from "../format";

cytoscape.use(dagre);

export function ServiceMapPage() {
  const [params, setParams] = useSearchParams();
  const lookback = params.get("lookback") ?? "1h";
  const entryService = params.get("service") ?? "";
  const entryOperation = params.get("operation") ?? "";
  const query = useMemo(() => {
    const q = new URLSearchParams({ lookback });
    if (entryService) q.set("service", entryService);
    if (entryOperation) q.set("operation", entryOperation);
    return q;
  }, [lookback, entryService, entryOperation]);
  const graph = useApi(() => api.serviceGraph(query), [query.toString()]);
  // Entry points are the services the user node calls in the unfiltered map: the map shown,
  // unless an entry filter is on.
  const allGraph = useApi(
    () => (entryService ? api.serviceGraph(new URLSearchParams({ lookback })) : Promise.resolve(undefined)),
    [lookback, entryService],
  );
  const unfiltered = entryService ? allGraph : graph;
  const entryServices =
    unfiltered.state === "done" && unfiltered.data
      ? unfiltered.data.edges.filter((e) => e.parent === "user").map((e) => e.child)
      : [];
  const operations = useApi(
    () => (entryService ? api.operations(entryService) : Promise.resolve([])),
    [entryService],
  );
  const set = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    if (key === "service") next.delete("operation");
    setParams(next);
  };
  return (
    <div>
      <div className="form-row" style={{ marginBottom: 12 }}>
        <h1 style={{ margin: 0 }}>Service map</h1>
        <Picker label="Time range" value={lookback} onChange={(v) => set("lookback", v)} options={LOOKBACKS} testId="map-lookback" />
        <Picker
          label="Entry service"
          value={entryService}
          onChange={(v) => set("service", v)}
          none="All traffic"
          options={entryServices.map((s) => [s, s])}
          testId="map-entry-service"
        />
        <Picker
          label="Entry operation"
          value={entryOperation}
          disabled={!entryService}
          onChange={(v) => set("operation", v)}
          none="All operations"
          options={
            operations.state === "done"
              ? operations.data.filter((o) => o.kind === "server" || o.kind === "consumer").map((o) => [o.name, o.name])
              : []
          }
          testId="map-entry-operation"
        />
        <span className="legend muted">
          <span>○ instrumented service</span>
          <span>▭ dashed: called but sends no spans</span>
          <span>◇ user: where traces start</span>
          <span>point at a node or edge for rate · errors · p95 of its calls; click a service to open it</span>
        </span>
      </div>
      <div className="form-row" style={{ marginBottom: 8, fontSize: 12 }} data-testid="map-exports">
        <span className="muted">Export:</span>
        {(["svg", "dot", "mermaid", "markdown", "json"] as const).map((format) => (
          <a key={format} href={`/api/v1/service-graph?${query}&format=${format}`} download={`services.${format === "markdown" ? "md" : format}`}>
            {{ svg: "SVG picture", dot: "Graphviz DOT", mermaid: "Mermaid", markdown: "Markdown table", json: "JSON" }[format]}
          </a>
        ))}
        <a
          href="#"
          onClick={(e) => {
            e.preventDefault();
            const map = (window as unknown as { __clewMap?: cytoscape.Core }).__clewMap;
            if (!map) return;
            const link = document.createElement("a");
            link.href = map.png({ full: true, scale: 2, bg: currentTheme() === "dark" ? "#1c2027" : "#ffffff" });
            link.download = "services.png";
            link.click();
          }}
        >
          PNG picture
        </a>
      </div>
      <Show value={graph} what="the service map">
        {(data) =>
          data.nodes.length === 0 ? (
            <Empty>
              No calls in this time range. Widen it, or send traces to Clew (OTLP on :4317/:4318, Zipkin on :9411,
              Jaeger on :14268).
            </Empty>
          ) : (
            <>
              <GraphView graph={data} />
              <NodeTable graph={data} />
            </>
          )
        }
      </Show>
    </div>
  );
}

function GraphView({ graph }: { graph: ServiceGraph }) {
  const element = useRef<HTMLDivElement>(null);
  const navigate = useNavigate();
  useEffect(() => {
    if (!element.current) return;
    const windowNanos = graph.end_unix_nano - graph.start_unix_nano;
    const dark = currentTheme() === "dark";
    const instance = cytoscape({
      container: element.current,
      wheelSensitivity: 0.3,
      elements: [
        ...graph.nodes.map((n) => ({
          data: {
            id: `n:${n.name}`,
            name: n.name,
            kind: n.kind,
            label:
              n.kind === "user"
                ? `user\n${rate(n.calls, windowNanos)}`
                : `${n.name}\n${rate(n.calls, windowNanos)} · ${percent(n.errors, n.calls)} err · p95 ${duration(n.p95_nanos)}`,
            colour: n.kind === "service" ? serviceColour(n.name) : dark ? "#3a4150" : "#e9ecef",
            erroring: n.calls > 0 && n.errors / n.calls > 0.02 ? 1 : 0,
          },
        })),
        ...graph.edges
          .filter((e) => graph.nodes.some((n) => n.name === e.child) && graph.nodes.some((n) => n.name === e.parent))
          .map((e) => ({
            data: {
              id: `e:${e.parent}->${e.child}`,
              source: `n:${e.parent}`,
              target: `n:${e.child}`,
              label: `${rate(e.calls, windowNanos)} · ${percent(e.errors, e.calls)} · ${duration(e.p95_nanos)}`,
              width: 1 + Math.min(7, Math.log10(1 + e.calls)),
              erroring: e.calls > 0 && e.errors / e.calls > 0.02 ? 1 : 0,
            },
          })),
      ],
      style: [
        {
          selector: "node",
          style: {
            ...labelledNode(dark, 13),
            width: 34,
            height: 34,
            "border-width": 2,
            "border-color": dark ? "#14171c" : "#ffffff",
          },
        },
        { selector: "node[erroring = 1]", style: { "border-color": "#e03131", "border-width": 3 } },
        {
          selector: 'node[kind = "virtual"]',
          style: { shape: "round-rectangle", "border-style": "dashed", "border-color": "#868e96", "border-width": 2 },
        },
        { selector: 'node[kind = "user"]', style: { shape: "diamond", "background-color": "#868e96" } },
        {
          selector: "edge",
          style: {
            ...arrowEdge(dark, "data(width)"),
            label: "",
            "font-size": 11,
            color: dark ? "#98a2b3" : "#5f6b7a",
            "text-rotation": "autorotate",
            "text-background-color": dark ? "#1c2027" : "#ffffff",
            "text-background-opacity": 0.8,
            "text-background-padding": "1px",
          },
        },
        { selector: "edge.show-label", style: { label: "data(label)", "z-index": 10 } },
        { selector: "edge[erroring = 1]", style: { "line-color": "#e03131", "target-arrow-color": "#e03131" } },
        { selector: "node:selected", style: { "border-color": "#3867d6", "border-width": 4 } },
      ],
      layout: { name: "dagre", rankDir: "LR", nodeSep: 30, rankSep: 120, edgeSep: 10 } as cytoscape.LayoutOptions,
    });
    // Edge labels (rate · errors · p95) appear for the edges of the node or edge under the pointer.
    instance.on("mouseover", "node", (event) => event.target.connectedEdges().addClass("show-label"));
    instance.on("mouseout", "node", (event) => event.target.connectedEdges().removeClass("show-label"));
    instance.on("mouseover", "edge", (event) => event.target.addClass("show-label"));
    instance.on("mouseout", "edge", (event) => event.target.removeClass("show-label"));
    instance.on("tap", "node", (event) => {
      const node = event.target;
      if (node.data("kind") === "service") navigate(`/services/${encodeURIComponent(node.data("name"))}`);
    });
    (window as unknown as { __clewMap?: cytoscape.Core }).__clewMap = instance;
    return () => instance.destroy();
  }, [graph, navigate]);
  return <div ref={element} className="map" data-testid="service-map" />;
}

function NodeTable({ graph }: { graph: ServiceGraph }) {
  const windowNanos = graph.end_unix_nano - graph.start_unix_nano;
  const nodes = [...graph.nodes].sort((a, b) => b.calls - a.calls);
  return (
    <div className="panel" style={{ marginTop: 12 }}>
      <h2 style={{ marginTop: 0 }}>Services in this map</h2>
      <table className="data">
        <thead>
          <tr>
            <th>Service</th>
            <th>Kind</th>
            <th className="num">Rate</th>
            <th className="num">Errors</th>
            <th className="num">p50</th>
            <th className="num">p95</th>
            <th>Called by</th>
          </tr>
        </thead>
        <tbody>
          {nodes.map((n) => (
            <tr key={`${n.kind}:${n.name}`} data-testid="map-node-row" data-kind={n.kind}>
              <td>
                {n.kind === "service" ? (
                  <Link to={`/services/${encodeURIComponent(n.name)}`}>{n.name}</Link>
                ) : (
                  n.name
                )}
              </td>
              <td>
                {n.kind === "virtual" ? <span className="badge warn">not instrumented</span> : n.kind === "user" ? "entry" : "service"}
              </td>
              <td className="num">{rate(n.calls, windowNanos)}</td>
              <td className="num">{percent(n.errors, n.calls)}</td>
              <td className="num">{duration(n.p50_nanos)}</td>
              <td className="num">{duration(n.p95_nanos)}</td>
              <td className="muted">
                {graph.edges
                  .filter((e) => e.child === n.name)
                  .map((e) => e.parent)
                  .join(", ")}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
