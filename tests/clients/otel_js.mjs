// The OpenTelemetry JS SDK sends one known trace over OTLP/HTTP protobuf to the URL given, then
// prints (as JSON) every span exactly as the SDK recorded it, for the test to compare.
import { SpanKind, SpanStatusCode, context, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";

const [url] = process.argv.slice(2);
const memory = new InMemorySpanExporter();
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ "service.name": "js-storefront", "service.version": "4.2.0", "deployment.environment.name": "test" }),
  spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url })), new SimpleSpanProcessor(memory)],
});
const tracer = provider.getTracer("storefront-lib", "0.7.1");

const root = tracer.startSpan("GET /products/:id", {
  kind: SpanKind.SERVER,
  attributes: { "http.route": "/products/:id", "http.response.status_code": 502, "ratio": 0.75, "cached": false, "tags": ["a", "b"] },
});
root.addEvent("cache.miss", { "cache.key": "product:42", "attempt": 3 });
const client = tracer.startSpan("GET", { kind: SpanKind.CLIENT, attributes: { "server.address": "inventory", "http.request.method": "GET" } },
  trace.setSpan(context.active(), root));
client.setStatus({ code: SpanStatusCode.ERROR, message: "upstream timed out" });
await new Promise((resolve) => setTimeout(resolve, 5));
client.end();
root.setStatus({ code: SpanStatusCode.ERROR, message: "bad gateway" });
root.end();
await provider.forceFlush();
const finished = memory.getFinishedSpans();
await provider.shutdown();

const nanos = ([seconds, ns]) => (BigInt(seconds) * 1000000000n + BigInt(ns)).toString();
console.log(JSON.stringify(finished.map((span) => ({
  traceId: span.spanContext().traceId,
  spanId: span.spanContext().spanId,
  parentSpanId: span.parentSpanContext?.spanId ?? null,
  name: span.name,
  kind: span.kind,
  start: nanos(span.startTime),
  end: nanos(span.endTime),
  attributes: span.attributes,
  events: span.events.map((e) => ({ name: e.name, time: nanos(e.time), attributes: e.attributes })),
  status: span.status,
  scope: span.instrumentationScope,
}))));
