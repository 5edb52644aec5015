/**
 * kubegate's OTLP/HTTP JSON span exporter against a real loopback receiver that decodes what arrives by the
 * OTLP JSON rules (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): hex ids, 64-bit integers as
 * decimal strings, the proto enum for the kind, attributes by type, status, events, links, resource and scope.
 * Then its settings, and its failure paths (an error status, a collector that is down, one that does not answer,
 * too many exports at once, after shutdown), each dropped and counted.
 */
import { describe, expect, test } from "bun:test";
import { createTraceState, ROOT_CONTEXT, type Span, trace } from "@opentelemetry/api";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { createLogger } from "../../../src/log.ts";
import { MAX_IN_FLIGHT, OtlpTraceExporter, otlpTraceSettings } from "../../../src/telemetry/tracing/otlp-exporter.ts";
import { hrTimeNanos, otlpTraceRequest } from "../../../src/telemetry/tracing/otlp-json.ts";
import { batchSettings, setupTracing, TracingConfigError } from "../../../src/telemetry/tracing/setup.ts";
import { waitFor } from "../../support/wait.ts";

interface AnyValue {
  stringValue?: string;
  intValue?: string;
  doubleValue?: number | string;
  boolValue?: boolean;
  bytesValue?: string;
  arrayValue?: { values: AnyValue[] };
  kvlistValue?: { values: KeyValue[] };
}
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  flags?: number;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: KeyValue[];
  events?: { timeUnixNano: string; name: string; attributes?: KeyValue[] }[];
  links?: { traceId: string; spanId: string; traceState?: string; attributes?: KeyValue[]; flags?: number }[];
  status?: { code?: number; message?: string };
}
interface OtlpRequest {
  resourceSpans: { resource: { attributes: KeyValue[] }; scopeSpans: { scope: { name: string; version?: string }; spans: OtlpSpan[] }[] }[];
}

type Mode = "ok" | "fail" | "hang" | "partial";

/** An OTLP/HTTP receiver on 127.0.0.1:0 whose answer the test picks; it records headers and decoded bodies. */
function startReceiver() {
  const state = { mode: "ok" as Mode };
  const requests: { headers: Headers; body: OtlpRequest; raw: string }[] = [];
  const hanging: (() => void)[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      if (new URL(req.url).pathname !== "/v1/traces" || req.method !== "POST") return new Response("not found", { status: 404 });
      let bytes = new Uint8Array(await req.arrayBuffer());
      if (req.headers.get("content-encoding") === "gzip") bytes = Bun.gunzipSync(bytes);
      const raw = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      requests.push({ headers: req.headers, body: JSON.parse(raw) as OtlpRequest, raw });
      switch (state.mode) {
        case "fail":
          return new Response("collector broke", { status: 500 });
        case "hang":
          return new Promise<Response>((resolve) => hanging.push(() => resolve(Response.json({}))));
        case "partial":
          return Response.json({ partialSuccess: { rejectedSpans: "1", errorMessage: "one too many" } });
        default:
          return Response.json({});
      }
    },
  });
  return {
    state,
    requests,
    url: `http://127.0.0.1:${server.port}`,
    spans: () => requests.flatMap((r) => r.body.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans))),
    [Symbol.asyncDispose]: async () => {
      for (const h of hanging) h();
      await server.stop(true);
    },
  };
}

/** The decoded value of attribute `key` (ints as bigint, as their strings mean). */
function value(v: AnyValue | undefined): unknown {
  if (v === undefined) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) {
    expect(typeof v.intValue).toBe("string"); // int64: a decimal string
    return BigInt(v.intValue);
  }
  if (v.doubleValue !== undefined) return typeof v.doubleValue === "string" ? Number(v.doubleValue) : v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.bytesValue !== undefined) return Buffer.from(v.bytesValue, "base64").toString("hex");
  if (v.arrayValue) return v.arrayValue.values.map(value);
  if (v.kvlistValue) return Object.fromEntries(v.kvlistValue.values.map((kv) => [kv.key, value(kv.value)]));
  return null;
}
const attrs = (list: KeyValue[] | undefined) => Object.fromEntries((list ?? []).map((kv) => [kv.key, value(kv.value)]));

/** `export` as a promise. */
const exportOnce = (e: OtlpTraceExporter, spans: ReadableSpan[]) => new Promise<ExportResult>((resolve) => e.export(spans, resolve));

/** A few finished spans from a real provider (in memory), for the exporter's direct tests. */
function someSpans(n: number): ReadableSpan[] {
  const spans: ReadableSpan[] = [];
  const exporter = { export: (s: ReadableSpan[], done: (r: ExportResult) => void) => (spans.push(...s), done({ code: ExportResultCode.SUCCESS })), shutdown: async () => {} };
  const tracing = setupTracing({ sampleRatio: 1, exporter, simpleProcessor: true })!;
  for (let i = 0; i < n; i++) tracing.tracer.startSpan(`s${i}`, { attributes: { i } }).end();
  return spans;
}

const quietLog = () => {
  const lines: string[] = [];
  return { lines, log: createLogger("warn", (l) => lines.push(l)) };
};

describe("OTLP JSON encoding, decoded by a receiver", () => {
  test("ids, times, kind, flags, attributes of every type, status, events, links, resource and scope", async () => {
    await using receiver = startReceiver();
    const tracing = setupTracing({
      sampleRatio: 1,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: "edge-\"1\"" },
      serviceVersion: "9.9.9",
      scheduledDelayMs: 60_000,
    })!;
    const trace0 = "0af7651916cd43dd8448eb211c80319c";
    const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId: trace0, spanId: "b7ad6b7169203331", traceFlags: 1, isRemote: true, traceState: createTraceState("vendor=a,other=b") });
    const weird = 'quote " backslash \\ newline \n tab \t nul \u0000 é 漢 😀 lone \ud800';
    const server: Span = tracing.tracer.startSpan(
      "GET /x",
      {
        kind: 1,
        attributes: { s: weird, i: 8080, neg: -3, big: 2 ** 60, d: 1.25, nan: Number.NaN, t: true, f: false, arr: ["a", "b"], nums: [1, 2.5] },
      },
      parent,
    );
    const client = tracing.tracer.startSpan("GET", { kind: 2, links: [{ context: server.spanContext(), attributes: { why: "retry" } }] }, trace.setSpan(ROOT_CONTEXT, server));
    client.addEvent("connect failed", { "error.type": "ECONNREFUSED" });
    client.setStatus({ code: 2, message: "upstream: connection refused" });
    client.end();
    server.setAttribute("http.response.status_code", 502);
    server.end();
    await tracing.forceFlush();
    await waitFor(() => receiver.spans().length === 2, { what: "two spans" });

    const req = receiver.requests[0]!;
    expect(req.headers.get("content-type")).toBe("application/json");
    expect(req.raw).toContain(String.raw`lone \ud800"`);
    const rs = req.body.resourceSpans;
    expect(rs).toHaveLength(1);
    expect(attrs(rs[0]!.resource.attributes)).toEqual({ "service.name": 'edge-"1"', "service.version": "9.9.9" });
    expect(rs[0]!.scopeSpans).toHaveLength(1);
    expect(rs[0]!.scopeSpans[0]!.scope.name).toBe("kubegate");

    const [c, s] = receiver.spans() as [OtlpSpan, OtlpSpan];
    const sdkServer = server as unknown as ReadableSpan;
    const sdkClient = client as unknown as ReadableSpan;
    // SERVER: the remote parent, its trace state, proto kind 2, flags: sampled + has_is_remote + is_remote
    expect(s).toMatchObject({ traceId: trace0, spanId: server.spanContext().spanId, parentSpanId: "b7ad6b7169203331", traceState: "vendor=a,other=b", name: "GET /x", kind: 2, flags: 0x301 });
    expect(s.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(s.startTimeUnixNano).toBe(hrTimeNanos(sdkServer.startTime));
    expect(s.endTimeUnixNano).toBe(hrTimeNanos(sdkServer.endTime));
    const nanos = BigInt(s.startTimeUnixNano);
    expect(nanos).toBe(BigInt(sdkServer.startTime[0]) * 1_000_000_000n + BigInt(sdkServer.startTime[1]));
    expect(Number(nanos / 1_000_000n)).toBeGreaterThan(Date.now() - 60_000);
    expect(BigInt(s.endTimeUnixNano)).toBeGreaterThanOrEqual(nanos);
    const a = attrs(s.attributes);
    expect(a).toEqual({
      s: weird, // a lone surrogate travels escaped (\ud800), not as invalid UTF-8 (the receiver decodes strictly)
      i: 8080n,
      neg: -3n,
      big: 2 ** 60, // not a safe integer: a double (exact here)
      d: 1.25,
      nan: Number.NaN,
      t: true,
      f: false,
      arr: ["a", "b"],
      nums: [1n, 2.5],
      "http.response.status_code": 502n,
    });
    expect(s.status?.code ?? 0).toBe(0); // UNSET
    expect(s.events ?? []).toEqual([]);
    // CLIENT: a local parent (flags without is_remote), ERROR with its message, the event, the link
    expect(c).toMatchObject({ traceId: trace0, parentSpanId: s.spanId, kind: 3, flags: 0x101, status: { code: 2, message: "upstream: connection refused" } });
    expect(c.startTimeUnixNano).toBe(hrTimeNanos(sdkClient.startTime));
    expect(c.events).toHaveLength(1);
    expect(c.events![0]!.name).toBe("connect failed");
    expect(attrs(c.events![0]!.attributes)).toEqual({ "error.type": "ECONNREFUSED" });
    expect(BigInt(c.events![0]!.timeUnixNano)).toBeGreaterThanOrEqual(BigInt(c.startTimeUnixNano));
    expect(c.links).toHaveLength(1);
    expect(c.links![0]).toMatchObject({ traceId: trace0, spanId: s.spanId, traceState: "vendor=a,other=b", flags: 0x101 });
    expect(attrs(c.links![0]!.attributes)).toEqual({ why: "retry" });
    await tracing.shutdown();
    expect(tracing.exportStats()).toMatchObject({ exports: 1, spans: 2, droppedSpans: 0 });
  });

  test("spans of several resources and scopes are grouped, each span once", () => {
    const spans = someSpans(3);
    const other = Object.assign(Object.create(Object.getPrototypeOf(spans[1]!) as object), spans[1]!, { instrumentationScope: { name: "other", version: "2" } }) as ReadableSpan;
    const req = JSON.parse(new TextDecoder().decode(otlpTraceRequest([spans[0]!, other, spans[2]!]))) as OtlpRequest;
    expect(req.resourceSpans).toHaveLength(1);
    const scopes = req.resourceSpans[0]!.scopeSpans;
    expect(scopes.map((s) => [s.scope.name, s.scope.version, s.spans.map((x) => x.name)])).toEqual([
      ["kubegate", undefined, ["s0", "s2"]],
      ["other", "2", ["s1"]],
    ]);
    expect(JSON.parse(new TextDecoder().decode(otlpTraceRequest([])))).toEqual({ resourceSpans: [] });
  });

  test("hrTimeNanos is exact past 2^53", () => {
    expect(hrTimeNanos([1765000000, 5])).toBe("1765000000000000005");
    expect(hrTimeNanos([1765000000, 999_999_999])).toBe("1765000000999999999");
    expect(hrTimeNanos([0, 42])).toBe("42");
  });
});

describe("exporter settings", () => {
  test("endpoint, headers, timeout and compression from the environment; defaults", () => {
    expect(otlpTraceSettings({})).toEqual({ url: "http://localhost:4318/v1/traces", headers: {}, timeoutMs: 10_000, gzip: false, notes: [] });
    const s = otlpTraceSettings({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/",
      OTEL_EXPORTER_OTLP_HEADERS: "a=1,b=2",
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: "b=3",
      OTEL_EXPORTER_OTLP_TIMEOUT: "2000",
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "1500",
      OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    });
    expect(s).toEqual({
      url: "http://c:4318/v1/traces",
      headers: { a: "1", b: "3" },
      timeoutMs: 1500,
      gzip: true,
      notes: ['OTLP protocol "http/protobuf" is not supported for traces: sending http/json'],
    });
    expect(otlpTraceSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://t/x", OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: "none", OTEL_EXPORTER_OTLP_COMPRESSION: "gzip" })).toMatchObject({ url: "https://t/x", gzip: false });
    expect(() => otlpTraceSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "ftp://x" })).toThrow('Invalid OTLP traces endpoint "ftp://x"');
    expect(() => otlpTraceSettings({ OTEL_EXPORTER_OTLP_TIMEOUT: "soon" })).toThrow('Invalid OTEL_EXPORTER_OTLP_TIMEOUT "soon"');
    expect(() => setupTracing({ env: { OTEL_EXPORTER_OTLP_HEADERS: "novalue" } })).toThrow(TracingConfigError);
  });

  test("the batch processor's settings from OTEL_BSP_*; an invalid one is ignored with a warning", () => {
    expect(batchSettings({})).toEqual({ scheduledDelayMillis: 5_000, maxQueueSize: 8192, maxExportBatchSize: 512, exportTimeoutMillis: 30_000 });
    const warnings: string[] = [];
    const b = batchSettings({ OTEL_BSP_SCHEDULE_DELAY: "200", OTEL_BSP_MAX_QUEUE_SIZE: "100", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "1000", OTEL_BSP_EXPORT_TIMEOUT: "-1" }, undefined, (m) => warnings.push(m));
    expect(b).toEqual({ scheduledDelayMillis: 200, maxQueueSize: 100, maxExportBatchSize: 100, exportTimeoutMillis: 30_000 });
    expect(warnings).toEqual(['Invalid OTEL_BSP_EXPORT_TIMEOUT "-1": use a positive whole number; using 30000']);
    expect(batchSettings({ OTEL_BSP_SCHEDULE_DELAY: "200" }, 50).scheduledDelayMillis).toBe(50); // the option wins
  });

  test("OTEL_BSP_MAX_EXPORT_BATCH_SIZE cuts the export into requests of that many spans", async () => {
    await using receiver = startReceiver();
    const tracing = setupTracing({ sampleRatio: 1, env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2", OTEL_BSP_SCHEDULE_DELAY: "60000" } })!;
    for (let i = 0; i < 5; i++) tracing.tracer.startSpan(`s${i}`).end();
    await tracing.shutdown();
    expect(receiver.requests.map((r) => r.body.resourceSpans[0]!.scopeSpans[0]!.spans.length).sort()).toEqual([1, 2, 2]);
    expect(new Set(receiver.spans().map((s) => s.name)).size).toBe(5);
  });

  test("gzip: the body is compressed and says so", async () => {
    await using receiver = startReceiver();
    const e = new OtlpTraceExporter({ settings: otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_COMPRESSION: "gzip", OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20x" }) });
    expect((await exportOnce(e, someSpans(3))).code).toBe(ExportResultCode.SUCCESS);
    expect(receiver.requests[0]!.headers.get("content-encoding")).toBe("gzip");
    expect(receiver.requests[0]!.headers.get("authorization")).toBe("Bearer x");
    expect(receiver.spans().map((s) => s.name)).toEqual(["s0", "s1", "s2"]);
  });
});

describe("export failures are dropped, counted and logged", () => {
  test("an error status", async () => {
    await using receiver = startReceiver();
    receiver.state.mode = "fail";
    const { lines, log } = quietLog();
    const e = new OtlpTraceExporter({ settings: otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }), log });
    const r = await exportOnce(e, someSpans(2));
    expect(r.code).toBe(ExportResultCode.FAILED);
    expect(r.error?.message).toBe("HTTP 500: collector broke");
    expect(e.stats()).toMatchObject({ exports: 0, droppedSpans: 2, failures: { status: 1, network: 0, timeout: 0 } });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: "warn", msg: "OTLP trace export failed: spans dropped", reason: "status", spans: 2 });
    // the next one succeeds again
    receiver.state.mode = "ok";
    expect((await exportOnce(e, someSpans(1))).code).toBe(ExportResultCode.SUCCESS);
    expect(e.stats()).toMatchObject({ exports: 1, spans: 1 });
  });

  test("a collector that is down", async () => {
    const closed = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
    const url = `http://127.0.0.1:${closed.port}`;
    await closed.stop(true);
    const { lines, log } = quietLog();
    const e = new OtlpTraceExporter({ settings: otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: url }), log });
    expect((await exportOnce(e, someSpans(1))).code).toBe(ExportResultCode.FAILED);
    expect((await exportOnce(e, someSpans(1))).code).toBe(ExportResultCode.FAILED);
    expect(e.stats().failures.network).toBe(2);
    expect(lines).toHaveLength(1); // one warning a minute
  });

  test("a collector that does not answer: the timeout", async () => {
    await using receiver = startReceiver();
    receiver.state.mode = "hang";
    const e = new OtlpTraceExporter({ settings: otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "100" }) });
    const t0 = performance.now();
    const r = await exportOnce(e, someSpans(1));
    expect(r.code).toBe(ExportResultCode.FAILED);
    expect(r.error?.message).toBe("no answer within 100 ms");
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(e.stats().failures.timeout).toBe(1);
    expect(receiver.requests).toHaveLength(1);
  });

  test("at most a few exports in flight; shutdown waits for them; none after it", async () => {
    await using receiver = startReceiver();
    receiver.state.mode = "hang";
    const e = new OtlpTraceExporter({ settings: otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }) });
    const pending = Array.from({ length: MAX_IN_FLIGHT }, () => exportOnce(e, someSpans(1)));
    const busy = await exportOnce(e, someSpans(1));
    expect(busy.code).toBe(ExportResultCode.FAILED);
    expect(e.stats().failures.busy).toBe(1);
    await waitFor(() => receiver.requests.length === MAX_IN_FLIGHT, { what: "the requests in flight" });
    e.abort();
    expect((await Promise.all(pending)).map((r) => r.code)).toEqual(Array(MAX_IN_FLIGHT).fill(ExportResultCode.FAILED));
    expect(e.stats().failures.timeout).toBe(MAX_IN_FLIGHT);
    receiver.state.mode = "ok";
    await e.shutdown();
    expect((await exportOnce(e, someSpans(1))).code).toBe(ExportResultCode.FAILED);
    expect(e.stats().failures.shutdown).toBe(1);
  });

  test("a partial success is counted", async () => {
    await using receiver = startReceiver();
    receiver.state.mode = "partial";
    const { lines, log } = quietLog();
    const e = new OtlpTraceExporter({ settings: otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }), log });
    expect((await exportOnce(e, someSpans(2))).code).toBe(ExportResultCode.SUCCESS);
    expect(e.stats()).toMatchObject({ exports: 1, spans: 2, rejectedSpans: 1 });
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg: "OTLP trace export: the collector rejected some spans", rejectedSpans: 1, errorMessage: "one too many" });
  });

  test("a failed final export on shutdown reaches onShutdownError", async () => {
    await using receiver = startReceiver();
    receiver.state.mode = "fail";
    const errors: unknown[] = [];
    const tracing = setupTracing({ sampleRatio: 1, env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }, scheduledDelayMs: 60_000, onShutdownError: (err) => errors.push(err) })!;
    tracing.tracer.startSpan("lost").end();
    await tracing.shutdown();
    expect(errors).toHaveLength(1);
    expect(tracing.exportStats()).toMatchObject({ droppedSpans: 1, failures: { status: 1 } });
  });
});
