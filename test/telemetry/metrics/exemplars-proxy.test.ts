/**
 * The proxies hand a sampled request's trace to its Service's latency histogram: through a real HTTP/1.1
 * and HTTP/2 proxy with tracing on (in-memory exporter), the OpenMetrics scrape shows the SERVER span's
 * trace and span ids as the exemplar of the request's bucket; a request that is not sampled leaves none.
 */
import { describe, expect, test } from "bun:test";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Entrypoint } from "../../../src/model/types.ts";
import { Registry, TrafficMetricNames as N, TrafficMetrics } from "../../../src/telemetry/metrics/index.ts";
import { setupTracing } from "../../../src/telemetry/tracing/setup.ts";
import { snapshot } from "../../support/entrypoints.ts";
import { endpoint, RawUpstream, startProxy } from "../../support/http-harness.ts";
import { waitFor } from "../../support/wait.ts";
import { GET, h2Client, h2Server, StreamLog } from "../../proxy/h2/harness.ts";
import { startH2Proxy } from "../../proxy/h2/proxy-harness.ts";

/** Tracing into memory, the per-Service metrics in a registry, and the handle the proxies resolve. */
function setup(sampleRatio: number) {
  const exporter = new InMemorySpanExporter();
  const tracing = setupTracing({ exporter, simpleProcessor: true, sampleRatio })!;
  const registry = new Registry();
  const traffic = new TrafficMetrics();
  registry.register(traffic);
  return {
    exporter,
    registry,
    telemetry: { tracing: tracing.proxy, traffic: (ep: Entrypoint) => traffic.forEntrypoint(ep) },
    follow: (ep: Entrypoint) => traffic.sync(snapshot(ep)),
    [Symbol.asyncDispose]: () => tracing.shutdown(),
  };
}

/** The request-duration bucket lines of an OpenMetrics scrape that carry an exemplar. */
function exemplarLines(registry: Registry): string[] {
  return registry
    .expose({ openMetrics: true })
    .split("\n")
    .filter((l) => l.startsWith(`${N.requestDuration}_bucket{`) && l.includes(" # {"));
}

/** The ids of the one SERVER span, once it ended. */
async function serverSpan(exporter: InMemorySpanExporter): Promise<{ traceId: string; spanId: string }> {
  await waitFor(() => exporter.getFinishedSpans().some((s) => s.kind === SpanKind.SERVER), { what: "the SERVER span" });
  const servers = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER);
  expect(servers).toHaveLength(1);
  return servers[0]!.spanContext();
}

describe("exemplars from the proxies", () => {
  test("HTTP/1.1: the sampled request's SERVER span is its bucket's exemplar", async () => {
    await using t = setup(1);
    await using up = new RawUpstream("a");
    await using proxy = startProxy([endpoint(up.port)], { telemetry: t.telemetry });
    t.follow(proxy.ref.current.entrypoint);
    const res = await fetch(`${proxy.url}/items`);
    expect(res.status).toBe(200);
    await res.text();
    const span = await serverSpan(t.exporter);
    const lines = await waitFor(() => (exemplarLines(t.registry).length > 0 ? exemplarLines(t.registry) : undefined), { what: "the request to be counted" });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`protocol="http",le="`);
    expect(lines[0]).toContain(` 1 # {trace_id="${span.traceId}",span_id="${span.spanId}"} `);
  });

  test("HTTP/1.1: a request that is not sampled is counted without an exemplar", async () => {
    await using t = setup(0);
    await using up = new RawUpstream("a");
    await using proxy = startProxy([endpoint(up.port)], { telemetry: t.telemetry });
    t.follow(proxy.ref.current.entrypoint);
    const res = await fetch(`${proxy.url}/items`);
    await res.text();
    await waitFor(() => t.registry.expose().includes(`${N.requestDuration}_count{`), { what: "the request to be counted" });
    expect(exemplarLines(t.registry)).toEqual([]);
    expect(t.exporter.getFinishedSpans()).toHaveLength(0);
  });

  test("HTTP/2: the sampled call's SERVER span is its bucket's exemplar", async () => {
    await using t = setup(1);
    await using up = h2Server();
    await using px = startH2Proxy([endpoint(up.port)], { telemetry: t.telemetry });
    t.follow(px.ref.current.entrypoint);
    await using client = await h2Client(px.port);
    const log = new StreamLog();
    client.session.request(GET, true, log);
    await waitFor(() => log.ended, { what: "the response" });
    const span = await serverSpan(t.exporter);
    const lines = await waitFor(() => (exemplarLines(t.registry).length > 0 ? exemplarLines(t.registry) : undefined), { what: "the call to be counted" });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`protocol="h2c",le="`);
    expect(lines[0]).toContain(` 1 # {trace_id="${span.traceId}",span_id="${span.spanId}"} `);
  });
});
