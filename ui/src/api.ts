// The native query API (docs/openapi.yaml), typed as the pages use it.

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

async function get<T>(path: string, params?: URLSearchParams): Promise<T> {
  const url = params && [...params.keys()].length ? `${path}?${params}` : path;
  return send<T>(url, { headers: { Accept: "application/json" } });
}

// A request that changes something: its JSON answer, or undefined when it has none (204).
async function change<T>(method: "PUT" | "DELETE", path: string, body?: unknown): Promise<T | undefined> {
  const init: RequestInit = { method, headers: { Accept: "application/json", "Content-Type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  return send<T>(path, init, true);
}

async function send<T>(url: string, init: RequestInit, emptyOk = false): Promise<T> {
  const path = url.split("?")[0];
  let response: Response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, `Clew did not answer (${String(e)}). Is the server running?`);
  }
  const text = await response.text();
  let body: unknown = undefined;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON: reported below */
  }
  if (!response.ok) {
    const message =
      (body as { error?: { message?: string } } | undefined)?.error?.message ?? (text || response.statusText);
    throw new ApiError(response.status, `${response.status}: ${message}`);
  }
  if (body === undefined && !emptyOk) throw new ApiError(response.status, `unexpected answer from ${path}`);
  return body as T;
}

export interface Service {
  name: string;
  spans: number;
}
export interface Operation {
  name: string;
  kind: string;
  spans: number;
}
export interface TraceSummary {
  trace_id: string;
  root_service: string;
  root_name: string;
  start_unix_nano: number;
  duration_nanos: number;
  span_count?: number;
  error_count?: number;
  services?: string[];
  matched_spans?: number;
}
export interface AttributeValue {
  stringValue?: string;
  intValue?: string;
  doubleValue?: number;
  boolValue?: boolean;
  bytesValue?: string;
  arrayValue?: { values: AttributeValue[] };
  kvlistValue?: { values: KeyValue[] };
}
export interface KeyValue {
  key: string;
  value: AttributeValue;
}
export interface SpanEvent {
  timeUnixNano: string;
  name: string;
  attributes: KeyValue[];
}
export interface SpanLink {
  traceId: string;
  spanId: string;
  attributes: KeyValue[];
}
export interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: string;
  service: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  durationNanos: number;
  status: { code: string; message: string };
  attributes: KeyValue[];
  events: SpanEvent[];
  links: SpanLink[];
  resource: { attributes: KeyValue[] };
  scope: { name: string; version: string };
  depth: number;
  selfNanos: number;
  criticalPathNanos: number;
  problems: string[];
  parentService?: string;
}
export interface Trace {
  traceId: string;
  rootService: string;
  rootName: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  durationNanos: number;
  spanCount: number;
  errorCount: number;
  services: string[];
  problems: string[];
  warnings: { kind: string; message: string; span_ids?: string[] }[];
  criticalPath: { spanId: string; startTimeUnixNano: string; endTimeUnixNano: string }[];
  spans: Span[];
}
export interface CallStats {
  calls: number;
  errors: number;
  p50_nanos: number;
  p95_nanos: number;
}
export interface GraphNode extends CallStats {
  name: string;
  kind: "service" | "virtual" | "user";
}
export interface GraphEdge extends CallStats {
  parent: string;
  child: string;
}
export interface ServiceGraph {
  start_unix_nano: number;
  end_unix_nano: number;
  nodes: GraphNode[];
  edges: GraphEdge[];
}
export interface RedPoint {
  time_unix_nano: number;
  calls: number;
  errors: number;
  p50_nanos: number;
  p95_nanos: number;
  p99_nanos: number;
}
export interface OperationStats {
  name: string;
  kind: string;
  calls: number;
  errors: number;
  p50_nanos: number;
  p95_nanos: number;
  p99_nanos: number;
  critical_path_nanos: number;
}
export interface ServiceRed {
  service: string;
  start_unix_nano: number;
  end_unix_nano: number;
  step_nanos: number;
  kinds: string[];
  series: RedPoint[];
  operations: OperationStats[];
}

export type ServiceStatus = "instrumented" | "not_instrumented" | "database" | "unseen" | "external";
export interface Finding {
  rule: string;
  severity: "high" | "medium" | "low";
  count: number;
  share: number;
  message: string;
  advice: string;
}
export interface ServiceCoverage {
  service: string;
  team: string | null;
  owner_source: "catalog" | "attribute" | "caller" | "unknown";
  status: ServiceStatus;
  tier: number | null;
  customer_facing: boolean;
  spans: number;
  traces: number;
  whole_share: number | null;
  covered_share: number | null;
  orphan_spans: number;
  unexpected_roots: number;
  calls_in: number;
  callers: string[];
  quality_score: number | null;
  quality_band: string | null;
  findings: Finding[];
}
export interface PropagationBreak {
  caller: string;
  caller_team: string | null;
  operation: string;
  callee: string;
  callee_team: string | null;
  broken_calls: number;
  answered_calls: number;
  callee_roots_during_calls: number;
  diagnosis: "caller_does_not_inject" | "callee_does_not_extract";
  explanation: string;
  fix: string;
}
export interface CoverageReport {
  start_unix_nano: number;
  end_unix_nano: number;
  summary: {
    instrumented: number;
    not_instrumented: number;
    databases: number;
    unseen: number;
    external: number;
    coverage: number;
    traces: number;
    breaks: number;
  };
  services: ServiceCoverage[];
  teams: { team: string; services: number; instrumented: number; not_instrumented: string[]; spans: number; quality_score: number | null; breaks: number }[];
  breaks: PropagationBreak[];
  warnings: string[];
}
export interface PlanStep {
  step: number;
  team: string;
  services: string[];
  reason: "entry_point" | "largest_dependency" | "dependency_order" | "catalog_only";
  rationale: string;
  calls_from_earlier_teams: number;
  request_time_share: number;
  score: number;
  unlocks: string[];
}
export interface TeamProgress {
  team: string;
  traced: string[];
  not_traced: string[];
}
export interface RolloutPlan {
  start_unix_nano: number;
  end_unix_nano: number;
  teams: number;
  adopted: TeamProgress[];
  partial: TeamProgress[];
  steps: PlanStep[];
  warnings: string[];
}
export interface DirectoryEntry {
  service: string;
  value: string;
  spans: number;
  first_seen_unix_nano: number;
  last_seen_unix_nano: number;
}
export interface AttributeDirectory {
  key: string;
  start_unix_nano: number;
  end_unix_nano: number;
  entries: DirectoryEntry[];
  values: { value: string; spans: number; services: string[]; first_seen_unix_nano: number; last_seen_unix_nano: number }[];
  warnings?: string[];
}

export interface OperationNode {
  service: string;
  team: string | null;
  owner_source: string;
  status: "instrumented" | "not_instrumented" | "context_lost" | "database" | "external";
  reach: number;
  callers: string[];
  calls: number;
}
export interface CriticalOperationDefinition {
  service: string;
  operation?: string;
  route?: string;
  traceql?: string;
  description?: string;
}
export interface CriticalOperationReport {
  name: string;
  service: string;
  operation?: string;
  route?: string;
  traceql?: string;
  description?: string;
  source: "catalog" | "api";
  team: string | null;
  start_unix_nano: number;
  end_unix_nano: number;
  step_nanos: number;
  requests: number;
  requests_per_second: number;
  errors: number;
  error_ratio: number;
  p50_nanos: number;
  p95_nanos: number;
  p99_nanos: number;
  trend: {
    previous_requests: number;
    previous_error_ratio: number;
    previous_p95_nanos: number;
    requests_change: number | null;
    p95_change: number | null;
    error_ratio_change: number;
  };
  series: { time_unix_nano: number; requests: number; errors: number; p95_nanos: number }[];
  coverage: number;
  whole_share: number;
  services: OperationNode[];
  gaps: OperationNode[];
}

export interface FlowNode {
  id: string;
  service: string;
  operation: string;
  kind: string;
  peer: string | null;
  depth: number;
  calls_per_request: number;
  p95_per_request: number;
  reach: number;
  error_share: number;
  p50_nanos: number;
  p95_nanos: number;
  critical_path_per_request_nanos: number;
}
export interface Flow {
  service: string;
  operation: string;
  start_unix_nano: number;
  end_unix_nano: number;
  stats: { requests: number; errors: number; p50_nanos: number; p95_nanos: number; p99_nanos: number };
  nodes: FlowNode[];
  edges: { from: string; to: string; calls_per_request: number; p95_per_request: number; reach: number }[];
}
export interface EntryOperation {
  service: string;
  operation: string;
  kind: string;
  requests: number;
  errors: number;
}

export interface CriticalPathNode {
  id: string;
  parent: string | null;
  service: string;
  operation: string;
  kind: string;
  depth: number;
  traces: number;
  reach: number;
  calls_per_request: number;
  self_per_request_nanos: number;
  total_per_request_nanos: number;
  share: number;
  self_share: number;
  self_p50_nanos: number;
  self_p95_nanos: number;
  self_p99_nanos: number;
  latency_p50_nanos: number;
  latency_p95_nanos: number;
  error_share: number;
}
export interface Bottleneck {
  service: string;
  operation: string;
  kind: string;
  critical_path_nanos: number;
  per_request_nanos: number;
  share: number;
  p95_nanos: number;
  entry_operations: string[];
  saved_per_request_nanos: number;
  saved_share: number;
}
export interface CriticalPathChange {
  service: string;
  operation: string;
  kind: string;
  before_per_request_nanos: number;
  after_per_request_nanos: number;
  change_nanos: number;
  before_p95_nanos: number;
  after_p95_nanos: number;
  before_calls_per_request: number;
  after_calls_per_request: number;
}
export interface LatencySummary {
  requests: number;
  errors: number;
  mean_nanos: number;
  p50_nanos: number;
  p95_nanos: number;
  p99_nanos: number;
}
export interface CriticalPathReport {
  service: string;
  operation: string;
  latency: LatencySummary;
  faster_percent: number;
  nodes: CriticalPathNode[];
  bottlenecks: Bottleneck[];
  baseline: { start_unix_nano: number; end_unix_nano: number; latency: LatencySummary; changes: CriticalPathChange[] } | null;
}
export interface TrafficTarget {
  service: string;
  operation: string;
  kind: string;
  observed_mean_per_second: number;
  observed_peak_per_second: number;
  planned_per_second: number;
  background_per_second: number;
  expected_per_second: number;
  headroom: number | null;
  scale: boolean;
  contributions: { entry_operation: string; mean_per_request: number; per_second: number }[];
  measured?: {
    per_second: number;
    ratio: number | null;
    verdict: "as expected" | "less than expected" | "more than expected" | "not reached" | "not expected";
    p95_ms: number;
    baseline_p95_ms: number | null;
    slower: boolean;
  };
}
export interface TrafficEstimate {
  observed_seconds: number;
  traffic: string;
  sources: { source: string; requests: number; load_test: boolean }[];
  load_test?: {
    seconds: number;
    requests: number;
    entries: { service: string; operation: string; per_second: number }[];
    not_reached: string[];
    off_expectation: string[];
    slower: string[];
  };
  plan: { service: string; operation: string; per_second: number }[];
  others_factor: number;
  entries: {
    service: string;
    operation: string;
    requests: number;
    observed_mean_per_second: number;
    observed_peak_per_second: number;
  }[];
  targets: TrafficTarget[];
  scale_services: string[];
  warnings: string[];
}

export interface Correlation {
  key: string;
  value: string;
  score: number;
  selected: number;
  baseline: number;
  selected_share: number;
  baseline_share: number;
  p_value: number;
  q_value: number;
  significant: boolean;
}
export interface NumericDifference {
  key: string;
  statistic: number;
  p_value: number;
  significant: boolean;
  direction: "higher" | "lower";
  selected_median: number;
  baseline_median: number;
  selected_p90: number;
  baseline_p90: number;
  selected_spans: number;
  baseline_spans: number;
}
export interface HeatCell {
  column: number;
  min_nanos: number;
  max_nanos: number;
  spans: number;
  selected: number;
}
export interface CorrelationReport {
  service: string | null;
  operation: string | null;
  selection: string;
  start_unix_nano: number;
  end_unix_nano: number;
  selected: number;
  baseline: number;
  compared_selected: number;
  compared_baseline: number;
  sampled_traces: number | null;
  correlations: Correlation[];
  attributes: { key: string; distance: number; value: string; difference: number }[];
  numeric: NumericDifference[];
  high_cardinality: string[];
  latency: [number, number][];
  selected_latency: [number, number][];
  heatmap_step_nanos: number;
  heatmap: HeatCell[];
  notes: string[];
  warnings: string[];
}

export interface GroupPathSide {
  calls_per_match: number;
  reach: number;
  mean_ms: number;
  p50_ms: number;
  p95_ms: number;
  error_share: number;
  ms_per_match: number;
}
export interface GroupComparison {
  a: { query: string; matched: number; traces: number; partial: boolean };
  b: { query: string; matched: number; traces: number; partial: boolean };
  matched_a: GroupPathSide | null;
  matched_b: GroupPathSide | null;
  changes: {
    path: string[];
    service: string;
    operation: string;
    depth: number;
    a: GroupPathSide | null;
    b: GroupPathSide | null;
    calls_ratio: number | null;
    ms_per_match_change: number;
    latency_change_ms: number | null;
    change: string;
  }[];
  warnings: string[];
}

export interface TracePathSide {
  calls: number;
  errors: number;
  total_ms: number;
  self_ms: number;
  critical_ms: number;
  max_ms: number;
}
export interface TraceSummarySide {
  trace_id: string;
  root_service: string;
  root_name: string;
  duration_ms: number;
  spans: number;
  errors: number;
  critical_path_ms: number;
}
export interface TraceComparison {
  a: TraceSummarySide;
  b: TraceSummarySide;
  duration_change_ms: number;
  paths: {
    path: string[];
    service: string;
    operation: string;
    depth: number;
    a: TracePathSide | null;
    b: TracePathSide | null;
    calls_change: number;
    errors_change: number;
    total_ms_change: number;
    critical_ms_change: number;
    change: string;
  }[];
  critical_changes: number[];
  warnings: string[];
}

export type LabelValue = string | number | null;

export interface MetricsSeries {
  labels: [string, LabelValue][];
  samples: [number, number][];
}

export interface MetricsResult {
  function: string;
  unit: string;
  start_unix_nano: number;
  end_unix_nano: number;
  step_nanos: number;
  series: MetricsSeries[];
  matched_spans: number;
  path: "sql" | "traces";
  inspected_traces: number;
  partial: string | null;
  warnings: string[];
}

export const api = {
  services: () => get<{ services: Service[] }>("/api/v1/services").then((r) => r.services),
  operations: (service: string) =>
    get<{ operations: Operation[] }>(`/api/v1/services/${encodeURIComponent(service)}/operations`).then(
      (r) => r.operations,
    ),
  search: (params: URLSearchParams) =>
    get<{ traces: TraceSummary[] }>("/api/v1/search", params).then((r) => r.traces),
  trace: (id: string) => get<Trace>(`/api/v1/traces/${encodeURIComponent(id)}`),
  attributeKeys: (scope: "span" | "resource") =>
    get<{ keys: { key: string; spans: number }[] }>("/api/v1/attributes", new URLSearchParams({ scope })).then(
      (r) => r.keys,
    ),
  attributeValues: (key: string, scope: "span" | "resource") =>
    get<{ values: { value: string; spans: number }[] }>(
      `/api/v1/attributes/${encodeURIComponent(key)}/values`,
      new URLSearchParams({ scope, limit: "50" }),
    ).then((r) => r.values),
  serviceGraph: (params: URLSearchParams) => get<ServiceGraph>("/api/v1/service-graph", params),
  coverage: (params: URLSearchParams) => get<CoverageReport>("/api/v1/coverage", params),
  rolloutPlan: (params: URLSearchParams) => get<RolloutPlan>("/api/v1/rollout-plan", params),
  directory: (key: string, params: URLSearchParams) =>
    get<AttributeDirectory>(`/api/v1/directory/${encodeURIComponent(key)}`, params),
  entryOperations: (params: URLSearchParams) =>
    get<{ entries: EntryOperation[] }>("/api/v1/flows", params).then((r) => r.entries),
  flow: (params: URLSearchParams) => get<Flow>("/api/v1/flow", params),
  registerOperation: (name: string, definition: CriticalOperationDefinition) =>
    change<CriticalOperationDefinition>("PUT", `/api/v1/critical-operations/${encodeURIComponent(name)}`, definition),
  removeOperation: (name: string) => change<void>("DELETE", `/api/v1/critical-operations/${encodeURIComponent(name)}`),
  criticalOperations: (params: URLSearchParams) =>
    get<{ operations: CriticalOperationReport[]; warnings: string[] }>("/api/v1/critical-operations", params),
  criticalPath: (params: URLSearchParams) => get<CriticalPathReport>("/api/v1/critical-path", params),
  correlations: (params: URLSearchParams) => get<CorrelationReport>("/api/v1/correlations", params),
  compareTraces: (a: string, b: string) => get<TraceComparison>("/api/v1/compare-traces", new URLSearchParams({ a, b })),
  compareGroups: (params: URLSearchParams) => get<GroupComparison>("/api/v1/compare-groups", params),
  traceqlMetrics: (params: URLSearchParams) => get<MetricsResult>("/api/v1/metrics/query_range", params),
  trafficEstimate: (params: URLSearchParams) => get<TrafficEstimate>("/api/v1/traffic-estimate", params),
  serviceRed: (service: string, params: URLSearchParams) =>
    get<ServiceRed>(`/api/v1/services/${encodeURIComponent(service)}/red`, params),
};

export function attributeText(value: AttributeValue): string {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return value.intValue;
  if (value.doubleValue !== undefined) return String(value.doubleValue);
  if (value.boolValue !== undefined) return String(value.boolValue);
  if (value.bytesValue !== undefined) return value.bytesValue;
  if (value.arrayValue) return `[${value.arrayValue.values.map(attributeText).join(", ")}]`;
  if (value.kvlistValue)
    return `{${value.kvlistValue.values.map((kv) => `${kv.key}: ${attributeText(kv.value)}`).join(", ")}}`;
  return "";
}
