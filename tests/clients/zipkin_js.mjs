// zipkin-js with its HTTP transport (JSON v2) sends one known trace to the Zipkin URL given:
// a server span, a local span and a client call to an uninstrumented inventory service. Prints
// the bodies it posted, for the test to compare with what Clew gives back.
import fetch from "node-fetch";
import zipkin from "zipkin";
import transport from "zipkin-transport-http";

const { Annotation, BatchRecorder, ExplicitContext, InetAddress, Tracer, jsonEncoder } = zipkin;
const [base] = process.argv.slice(2);
const bodies = [];
const recordingFetch = (url, options) => {
  bodies.push(JSON.parse(options.body));
  return fetch(url, options);
};
const logger = new transport.HttpLogger({
  endpoint: `${base}/api/v2/spans`, jsonEncoder: jsonEncoder.JSON_V2, httpInterval: 50, fetchImplementation: recordingFetch,
});
const tracer = new Tracer({ ctxImpl: new ExplicitContext(), recorder: new BatchRecorder({ logger }), localServiceName: "zipkin-js-shop", traceId128Bit: true });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const rootId = tracer.createRootId();
tracer.letId(rootId, () => {
  tracer.recordServiceName("zipkin-js-shop");
  tracer.recordRpc("get /basket");
  tracer.recordAnnotation(new Annotation.ServerRecv());
  tracer.recordAnnotation(new Annotation.LocalAddr({ host: new InetAddress("10.1.2.3"), port: 8080 }));
  tracer.recordBinary("http.path", "/basket");
});
await sleep(2);
tracer.letId(rootId, () => tracer.local("price basket", () => {
  tracer.recordBinary("items", "3");
  tracer.recordMessage("priced");
}));
const childId = tracer.letId(rootId, () => tracer.createChildId());
tracer.letId(childId, () => {
  tracer.recordServiceName("zipkin-js-shop");
  tracer.recordRpc("get /stock");
  tracer.recordAnnotation(new Annotation.ClientSend());
  tracer.recordAnnotation(new Annotation.ServerAddr({ serviceName: "inventory", host: new InetAddress("10.9.9.9"), port: 9000 }));
});
await sleep(3);
tracer.letId(childId, () => {
  tracer.recordBinary("error", "stock service unavailable");
  tracer.recordAnnotation(new Annotation.ClientRecv());
});
tracer.letId(rootId, () => tracer.recordAnnotation(new Annotation.ServerSend()));
for (let i = 0; i < 100 && bodies.flat().length < 3; i++) {
  await sleep(50);
}
await sleep(100);
console.log(JSON.stringify({ traceId: rootId.traceId, spans: bodies.flat() }));
process.exit(0);
