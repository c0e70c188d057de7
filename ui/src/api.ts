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
  let response: Response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" } });
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
  if (body === undefined) throw new ApiError(response.status, `unexpected answer from ${path}`);
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
