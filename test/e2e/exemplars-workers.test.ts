/**
 * Exemplars across worker processes: a gateway with `--workers 2` and tracing on serves requests that carry
 * a sampled W3C `traceparent` (so their trace ids are known); the control plane's `/metrics`, asked for
 * OpenMetrics, shows them as exemplars of the Service's latency histogram (carried in the workers' traffic
 * dumps), while the text format 0.0.4 scrape shows none.
 */
import { expect, test } from "bun:test";
import { startApiServer } from "../support/apiserver.ts";
import { startTestGateway } from "../support/gateway.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

const OPENMETRICS = { accept: "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", connection: "close" };

test("--workers 2: the workers' sampled requests are exemplars of the node's latency histogram", async () => {
  await using api = await startApiServer();
  const backend = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok") });
  await using _backend = { [Symbol.asyncDispose]: async () => void (await backend.stop(true)) };
  const nodePort = await freePort();
  api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
  api.create({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "web", namespace: "ex", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: { type: "NodePort", selector: { app: "web" }, ports: [{ name: "http", port: 80, nodePort, appProtocol: "http" }] },
  });
  api.create({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "web-1", namespace: "ex", labels: { "kubernetes.io/service-name": "web" } },
    addressType: "IPv4",
    ports: [{ name: "http", port: backend.port, protocol: "TCP" }],
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
  });
  // Spans go to the default OTLP endpoint, where nothing listens: the exemplars need the sampling, not the export.
  await using gw = await startTestGateway(api, ["--workers", "2", "--tracing", "--tracing-sample-ratio", "1"]);

  // New connections, so the kernel spreads them over both workers; each request its own sampled trace.
  const traces: string[] = [];
  await waitFor(
    async () => {
      const traceId = crypto.randomUUID().replaceAll("-", "");
      const res = await fetch(`http://127.0.0.1:${nodePort}/`, { headers: { connection: "close", traceparent: `00-${traceId}-00f067aa0ba902b7-01` } }).catch(() => undefined);
      if (res?.status !== 200) return undefined;
      await res.text();
      traces.push(traceId);
      return traces.length >= 8 || undefined;
    },
    { timeoutMs: 10_000, intervalMs: 10, what: "8 requests through the gateway" },
  );

  const metrics = `http://127.0.0.1:${gw.adminPort}/metrics`;
  const shown = await waitFor(
    async () => {
      const text = await (await fetch(metrics, { headers: OPENMETRICS })).text();
      const ids = [...text.matchAll(/^kubegate_request_duration_seconds_bucket\{namespace="ex",service="web",[^}]*\} \d+ # \{trace_id="([0-9a-f]{32})",span_id="[0-9a-f]{16}"\}/gm)].map((m) => m[1]!);
      // The control plane serves no traffic itself: any exemplar came in a worker's dump.
      return ids.length > 0 ? ids : undefined;
    },
    { timeoutMs: 5_000, intervalMs: 100, what: "a request's trace as an exemplar in the control plane's /metrics" },
  );
  expect(shown.every((id) => traces.includes(id))).toBe(true);
  const classic = await (await fetch(metrics, { headers: { connection: "close" } })).text();
  expect(classic).toContain('kubegate_request_duration_seconds_count{namespace="ex",service="web"');
  expect(classic).not.toContain("trace_id");
}, 30_000);
