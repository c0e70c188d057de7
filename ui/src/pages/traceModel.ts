// The trace as the trace view draws it: a tree of spans in start order, each with its offset
// from the trace's start and its critical-path segments.
import { attributeText, type Span, type Trace } from "../api";

export interface Node {
  span: Span;
  index: number;
  depth: number;
  children: Node[];
  startOffset: number; // ns from the trace's start
  critical: [number, number][]; // ns offsets
  parent?: Node;
}

export interface TraceModel {
  trace: Trace;
  start: bigint;
  total: number; // ns
  roots: Node[];
  byId: Map<string, Node>;
  criticalNanos: number;
}

export function buildModel(trace: Trace): TraceModel {
  const start = BigInt(trace.startTimeUnixNano);
  const offset = (t: string) => Number(BigInt(t) - start);
  const nodes: Node[] = trace.spans.map((span, index) => ({
    span,
    index,
    depth: 0,
    children: [],
    startOffset: offset(span.startTimeUnixNano),
    critical: [],
  }));
  const byId = new Map<string, Node>();
  for (const node of nodes) byId.set(node.span.spanId, node);
  const roots: Node[] = [];
  for (const node of nodes) {
    const parent = node.span.parentSpanId ? byId.get(node.span.parentSpanId) : undefined;
    if (parent && parent !== node) {
      node.parent = parent;
      parent.children.push(node);
    } else roots.push(node);
  }
  const byStart = (a: Node, b: Node) => a.startOffset - b.startOffset || a.index - b.index;
  roots.sort(byStart);
  const stack: Node[] = [...roots].reverse();
  while (stack.length) {
    const node = stack.pop()!;
    node.children.sort(byStart);
    for (let i = node.children.length - 1; i >= 0; i--) {
      node.children[i].depth = node.depth + 1;
      stack.push(node.children[i]);
    }
  }
  let criticalNanos = 0;
  for (const segment of trace.criticalPath) {
    const node = byId.get(segment.spanId);
    if (!node) continue;
    const from = offset(segment.startTimeUnixNano);
    const to = offset(segment.endTimeUnixNano);
    node.critical.push([from, to]);
    criticalNanos += to - from;
  }
  return { trace, start, total: Math.max(1, trace.durationNanos), roots, byId, criticalNanos };
}

// The rows a waterfall shows: depth-first, skipping the children of collapsed spans.
export function visibleRows(model: TraceModel, collapsed: Set<string>): Node[] {
  const rows: Node[] = [];
  const stack: Node[] = [...model.roots].reverse();
  while (stack.length) {
    const node = stack.pop()!;
    rows.push(node);
    if (collapsed.has(node.span.spanId)) continue;
    for (let i = node.children.length - 1; i >= 0; i--) stack.push(node.children[i]);
  }
  return rows;
}

// Does a span mention the text (name, service, ID, attribute key or value)?
export function spanMatches(span: Span, needle: string): boolean {
  if (!needle) return false;
  const n = needle.toLowerCase();
  if (span.name.toLowerCase().includes(n) || span.service.toLowerCase().includes(n) || span.spanId.startsWith(n))
    return true;
  return span.attributes.some(
    (a) => a.key.toLowerCase().includes(n) || attributeText(a.value).toLowerCase().includes(n),
  );
}

export interface StatsRow {
  service: string;
  name: string;
  count: number;
  total: number;
  self: number;
  critical: number;
  errors: number;
}

// Per (service, operation): how often, how long, how much of it on the critical path.
export function statistics(trace: Trace): StatsRow[] {
  const rows = new Map<string, StatsRow>();
  for (const span of trace.spans) {
    const key = `${span.service}\u0000${span.name}`;
    let row = rows.get(key);
    if (!row) {
      row = { service: span.service, name: span.name, count: 0, total: 0, self: 0, critical: 0, errors: 0 };
      rows.set(key, row);
    }
    row.count += 1;
    row.total += span.durationNanos;
    row.self += span.selfNanos;
    row.critical += span.criticalPathNanos;
    if (span.status.code === "error") row.errors += 1;
  }
  return [...rows.values()];
}
