/**
 * The wire format: spans go through the real OTLP/HTTP (JSON) exporter, configured from the standard
 * environment variables, into a receiver in the test that decodes resourceSpans → scopeSpans → spans.
 */
import { describe, expect, test } from "bun:test";
import { otlpTraceSettings } from "../../../src/telemetry/tracing/otlp-exporter.ts";
import { chooseSampler, setupTracing } from "../../../src/telemetry/tracing/setup.ts";
import { header, RawUpstream, startProxy, waitFor } from "../../support/http-harness.ts";

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: OtlpValue }[];
  status?: { code?: number };
}
interface OtlpRequest {
  resourceSpans: { resource: { attributes: { key: string; value: OtlpValue }[] }; scopeSpans: { scope: { name: string }; spans: OtlpSpan[] }[] }[];
}

/** A small OTLP/HTTP JSON receiver on 127.0.0.1:0. */
function startReceiver() {
  const requests: { headers: Headers; body: OtlpRequest }[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      if (new URL(req.url).pathname !== "/v1/traces" || req.method !== "POST") return new Response("not found", { status: 404 });
      expect(req.headers.get("content-type")).toStartWith("application/json");
      requests.push({ headers: req.headers, body: (await req.json()) as OtlpRequest });
      return Response.json({});
    },
  });
  return {
    requests,
    url: `http://127.0.0.1:${server.port}`,
    spans: () => requests.flatMap((r) => r.body.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans))),
    [Symbol.asyncDispose]: async () => void (await server.stop(true)),
  };
}

const attr = (s: OtlpSpan, key: string) => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v?.stringValue ?? (v?.intValue === undefined ? undefined : Number(v.intValue));
};

describe("OTLP/HTTP export", () => {
  test("spans arrive as OTLP JSON with resource, links and attributes; shutdown flushes the batch", async () => {
    await using receiver = startReceiver();
    const tracing = setupTracing({
      sampleRatio: 1,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.url}/`, OTEL_EXPORTER_OTLP_HEADERS: "x-tenant=team%20a,authorization=Bearer t0k", OTEL_SERVICE_NAME: "edge-1" },
      scheduledDelayMs: 60_000, // only shutdown() exports: the flush on exit is what is tested
    })!;
    await using up = new RawUpstream("a");
    await using proxy = startProxy([up.endpoint], { telemetry: { tracing: tracing.proxy } });
    const trace = "0af7651916cd43dd8448eb211c80319c";
    const r = await fetch(`${proxy.url}/otlp`, { method: "POST", body: "x", headers: { traceparent: `00-${trace}-b7ad6b7169203331-01` } });
    expect(r.status).toBe(200);
    expect(receiver.requests).toHaveLength(0);
    await tracing.shutdown();
    await waitFor(() => receiver.spans().length === 2, "two exported spans");

    const req = receiver.requests[0]!;
    expect(req.headers.get("x-tenant")).toBe("team a");
    expect(req.headers.get("authorization")).toBe("Bearer t0k");
    const rs = req.body.resourceSpans[0]!;
    expect(rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue).toBe("edge-1");
    expect(rs.scopeSpans[0]!.scope.name).toBe("kubegate");
    const spans = receiver.spans();
    const server = spans.find((s) => s.kind === 2)!; // SPAN_KIND_SERVER
    const client = spans.find((s) => s.kind === 3)!; // SPAN_KIND_CLIENT
    expect(server.traceId).toBe(trace);
    expect(server.parentSpanId).toBe("b7ad6b7169203331");
    expect(client.parentSpanId).toBe(server.spanId);
    expect(server.name).toBe("POST");
    expect(attr(server, "http.request.method")).toBe("POST");
    expect(attr(server, "url.path")).toBe("/otlp");
    expect(attr(server, "http.response.status_code")).toBe(200);
    expect(attr(client, "network.peer.port")).toBe(up.port);
    expect(header(up.requests[0]!, "traceparent")).toBe(`00-${trace}-${client.spanId}-01`);
  });

  test("OTEL_SDK_DISABLED and --tracing=false turn tracing off", () => {
    expect(setupTracing({ env: { OTEL_SDK_DISABLED: "true" } })).toBeUndefined();
    expect(setupTracing({ enabled: false })).toBeUndefined();
  });
});

describe("sampler and exporter settings", () => {
  test("the flag ratio wins over the environment; ratio 0 samples no root but follows sampled parents", () => {
    const c = chooseSampler(0, { OTEL_TRACES_SAMPLER: "always_on" });
    expect([c.sampleRoots, c.sampleParents]).toEqual([false, true]);
    expect(c.sampler.toString()).toContain("TraceIdRatioBased{0}");
  });

  test("OTEL_TRACES_SAMPLER and its argument", () => {
    expect(chooseSampler(undefined, {}).sampler.toString()).toContain("ParentBased{root=AlwaysOnSampler");
    const off = chooseSampler(undefined, { OTEL_TRACES_SAMPLER: "always_off" });
    expect([off.sampleRoots, off.sampleParents]).toEqual([false, false]);
    const r = chooseSampler(undefined, { OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" });
    expect(r.sampler.toString()).toContain("TraceIdRatioBased{0.25}");
    expect(() => chooseSampler(undefined, { OTEL_TRACES_SAMPLER: "sometimes" })).toThrow('Invalid OTEL_TRACES_SAMPLER "sometimes"');
    expect(() => chooseSampler(2, {})).toThrow('Invalid tracing sample ratio "2": use a number from 0 to 1');
  });

  test("the traces endpoint wins over the base endpoint, which gets /v1/traces", () => {
    expect(otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }).url).toBe("http://c:4318/v1/traces");
    expect(otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://t/x" }).url).toBe("http://t/x");
    expect(() => otlpTraceSettings({ OTEL_EXPORTER_OTLP_HEADERS: "novalue" })).toThrow('Invalid OTEL_EXPORTER_OTLP_HEADERS entry "novalue"');
  });
});
