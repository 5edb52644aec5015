/**
 * Issue 16: the whole gateway pushes its /metrics series to an OTLP/HTTP collector when the environment asks for it
 * (OTEL_METRICS_EXPORTER=otlp), and sends a last export when it stops. The collector is a loopback HTTP receiver.
 */
import { expect, test } from "bun:test";
import { parseFlags } from "../../src/config/flags.ts";
import { startGateway } from "../../src/gateway.ts";
import { waitFor } from "../support/wait.ts";

type Body = { resourceMetrics: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeMetrics: { metrics: { name: string }[] }[] }[] };

test("OTEL_METRICS_EXPORTER=otlp: the gateway's series reach the collector on a timer and once more at shutdown", async () => {
  const bodies: Body[] = [];
  await using collector = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      if (new URL(req.url).pathname !== "/v1/metrics" || req.headers.get("content-type") !== "application/json") return new Response("no", { status: 400 });
      bodies.push((await req.json()) as Body);
      return Response.json({});
    },
  });
  const parsed = parseFlags(
    ["--manifests", "deploy/demo", "--hostname-override", "demo-node", "--host-addresses", "127.0.0.1", "--nodeport-addresses", "127.0.0.0/8", "--healthz-bind-address", "127.0.0.1:0", "--metrics-bind-address", "127.0.0.1:0", "--no-access-log", "--workers", "1", "--handover-socket", "none"],
    { hostname: "demo-node", env: { OTEL_METRICS_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `http://127.0.0.1:${collector.port}/v1/metrics`, OTEL_METRIC_EXPORT_INTERVAL: "200" } },
  );
  if (parsed.kind !== "run") throw new Error(JSON.stringify(parsed));
  const gw = await startGateway(parsed.config);
  let timed = 0;
  try {
    await gw.ready();
    await waitFor(() => bodies.length >= 2, { what: "two timed exports" });
  } finally {
    timed = bodies.length;
    await gw[Symbol.asyncDispose]();
  }
  const names = new Set(bodies.at(-1)!.resourceMetrics.flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.name))));
  for (const name of ["kubeproxy_sync_proxy_rules_duration_seconds", "process_cpu_seconds_total", "kubegate_listeners"]) expect([name, names.has(name)]).toEqual([name, true]);
  const resource = Object.fromEntries(bodies[0]!.resourceMetrics[0]!.resource.attributes.map((a) => [a.key, a.value.stringValue]));
  expect(resource).toMatchObject({ "service.name": "kubegate", "service.instance.id": "demo-node" });
  // One more export came at shutdown (the timer runs every 200 ms; shutdown takes far less than that after dispose starts).
  expect(bodies.length).toBeGreaterThan(timed);
});
