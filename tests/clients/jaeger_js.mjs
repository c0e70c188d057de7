// jaeger-client (OpenTracing for Node) sends one known trace with its HTTP sender (binary
// Thrift to the collector URL given). Prints the spans as the client's own Thrift conversion
// made them, for the test to compare.
import jaeger from "jaeger-client";
import opentracing from "opentracing";
import httpSender from "jaeger-client/dist/src/reporters/http_sender.js";
import thrift from "jaeger-client/dist/src/thrift.js";

const [collector] = process.argv.slice(2);
const memory = new jaeger.InMemoryReporter();
const remote = new jaeger.RemoteReporter(new httpSender.default({ endpoint: collector }));
const tracer = new jaeger.Tracer("jaeger-js-billing", new jaeger.CompositeReporter([remote, memory]), new jaeger.ConstSampler(true),
  { tags: { "deployment.environment": "test" } });

const root = tracer.startSpan("POST /invoice", { tags: { "span.kind": "server", "http.status_code": 201, "amount": 12.5, "paid": true } });
const child = tracer.startSpan("render pdf", { childOf: root.context(), tags: { pages: 3 } });
child.log({ event: "font loaded", font: "serif" });
child.setTag("error", true);
await new Promise((resolve) => setTimeout(resolve, 3));
child.finish();
const audit = tracer.startSpan("audit", { references: [opentracing.followsFrom(root.context())] });
audit.finish();
root.finish();
await new Promise((resolve) => tracer.close(resolve));

const hex = (buffer) => Buffer.from(buffer).toString("hex");
const spans = memory.spans.map((span) => {
  const t = thrift.default.spanToThrift(span);
  return {
    traceIdHigh: hex(t.traceIdHigh), traceIdLow: hex(t.traceIdLow), spanId: hex(t.spanId), parentSpanId: hex(t.parentSpanId),
    operationName: t.operationName, flags: t.flags,
    startTime: Number(BigInt("0x" + hex(t.startTime))), duration: Number(BigInt("0x" + hex(t.duration))),
    tags: t.tags, logs: t.logs.map((log) => ({ timestamp: Number(BigInt("0x" + hex(log.timestamp))), fields: log.fields })),
    references: t.references.map((r) => ({ refType: r.refType, traceIdLow: hex(r.traceIdLow), traceIdHigh: hex(r.traceIdHigh), spanId: hex(r.spanId) })),
  };
});
console.log(JSON.stringify({ process: tracer._process, spans }));
