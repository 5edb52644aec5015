/**
 * The access log: batched JSON lines (one write per flush, not per request), and what the HTTP and TCP
 * data planes put in them, with the trace id when the request was sampled.
 */
import { describe, expect, test } from "bun:test";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import { makeTcpProxyFactory } from "../../src/proxy/tcp/index.ts";
import { defaultProxyOptions } from "../../src/proxy/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { AccessLog } from "../../src/telemetry/access-log.ts";
import { setupTracing } from "../../src/telemetry/tracing/setup.ts";
import { RawUpstream, route, startProxy, waitFor } from "../support/http-harness.ts";

/** An access log into memory; `lines` are parsed JSON objects, `writes` counts write calls. */
function memoryLog(flushMs = 20) {
  const batches: string[] = [];
  const log = new AccessLog({ write: (b) => void batches.push(b), flushMs });
  return {
    log,
    batches,
    lines: () => batches.flatMap((b) => b.split("\n")).map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe("AccessLog", () => {
  test("lines are batched: many records, one write per flush", async () => {
    const m = memoryLog(10);
    for (let i = 0; i < 100; i++) {
      m.log.stream({ protocol: "tcp", entrypoint: "ns/s:p", client: "10.0.0.1", endpoint: "10.1.0.1:80", bytesIn: i, bytesOut: 1, durationMs: 1.5, close: "client_closed", traceId: "" });
    }
    expect(m.batches).toHaveLength(0);
    await waitFor(() => m.batches.length === 1, "one flush");
    expect(m.lines()).toHaveLength(100);
    expect(m.lines()[99]).toMatchObject({ level: "info", msg: "access", protocol: "tcp", bytes_in: 99, close: "client_closed" });
  });

  test("a full buffer is written at once; close() writes the rest", () => {
    const batches: string[] = [];
    const log = new AccessLog({ write: (b) => void batches.push(b), flushMs: 60_000, maxBufferBytes: 1000 });
    const rec = { entrypoint: "ns/s:p", client: "c", endpoint: "e", method: "GET", path: '/we"ird\n', status: 200, bytesIn: 1, bytesOut: 2, durationMs: 0.25, error: "", traceId: "" };
    for (let i = 0; i < 10; i++) log.http(rec);
    expect(batches.length).toBeGreaterThan(0);
    log.close();
    const lines = batches.flatMap((b) => b.split("\n")).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(10);
    expect(lines[0]!.path).toBe('/we"ird\n');
    expect(lines[0]!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  test("no write is larger than maxBufferBytes (with its newline), so workers' writes to one pipe stay whole lines", () => {
    const batches: string[] = [];
    const log = new AccessLog({ write: (b) => void batches.push(b), flushMs: 60_000, maxBufferBytes: 2048 });
    for (let i = 0; i < 200; i++) {
      log.http({ entrypoint: "ns/s:p", client: "c", endpoint: "e", method: "GET", path: `/${"x".repeat(i % 97)}`, status: 200, bytesIn: 1, bytesOut: 2, durationMs: 1, error: "", traceId: "" });
    }
    log.close();
    expect(batches.length).toBeGreaterThan(10);
    for (const b of batches) expect(b.length + 1).toBeLessThanOrEqual(2048);
    expect(batches.flatMap((b) => b.split("\n"))).toHaveLength(200);
  });

  test("with a worker, every line names it right after msg; without one, lines have no worker field", () => {
    const http = { entrypoint: "ns/s:p", client: "c", endpoint: "e", method: "GET", path: "/", status: 200, bytesIn: 1, bytesOut: 2, durationMs: 0.25, error: "", traceId: "" };
    const stream = { protocol: "udp", entrypoint: "ns/s:53", client: "c", endpoint: "e", bytesIn: 1, bytesOut: 2, durationMs: 1, close: "idle_timeout", traceId: "" } as const;
    const write = (worker: number | undefined): string[] => {
      const batches: string[] = [];
      const log = new AccessLog({ write: (b) => void batches.push(b), flushMs: 60_000, ...(worker === undefined ? {} : { worker }) });
      log.http(http);
      log.stream(stream);
      log.close();
      return batches.flatMap((b) => b.split("\n"));
    };
    const [w3http, w3stream] = write(3);
    expect(w3http).toContain('"msg":"access","worker":3,"protocol":"http",');
    expect(w3stream).toContain('"msg":"access","worker":3,"protocol":"udp",');
    expect(JSON.parse(w3http!)).toMatchObject({ msg: "access", worker: 3, status: 200 });
    expect(JSON.parse(w3stream!)).toMatchObject({ msg: "access", worker: 3, close: "idle_timeout" });
    expect(JSON.parse(write(0)[0]!)).toMatchObject({ worker: 0 });
    for (const line of write(undefined)) {
      expect(line).toContain('"msg":"access","protocol":');
      expect(JSON.parse(line)).not.toHaveProperty("worker");
    }
    expect(() => new AccessLog({ worker: -1 })).toThrow('Invalid access log worker -1: use a whole number of 0 or more');
  });
});

describe("access log from the data plane", () => {
  test("one line per HTTP request with entrypoint, client, endpoint, method, path, status, bytes and trace id", async () => {
    const m = memoryLog();
    const exporter = new InMemorySpanExporter();
    const tracing = setupTracing({ exporter, simpleProcessor: true, sampleRatio: 1 })!;
    await using _t = { [Symbol.asyncDispose]: () => tracing.shutdown() };
    await using up = new RawUpstream("a");
    await using proxy = startProxy([up.endpoint], { telemetry: { accessLog: m.log, tracing: tracing.proxy } });
    const r1 = await fetch(`${proxy.url}/a?x=1`);
    const body = await r1.text();
    const r2 = await fetch(`${proxy.url}/b`, { method: "POST", body: "12345" });
    await r2.text();
    m.log.flush();
    const lines = m.lines();
    expect(lines).toHaveLength(2);
    const traceIds = new Set(exporter.getFinishedSpans().map((s) => s.spanContext().traceId));
    expect(lines[0]).toMatchObject({
      msg: "access",
      protocol: "http",
      entrypoint: "default/web:http",
      client: "127.0.0.1",
      endpoint: `127.0.0.1:${up.port}`,
      method: "GET",
      path: "/a",
      status: 200,
    });
    expect(lines[0]!.bytes_out as number).toBeGreaterThan(body.length);
    expect(traceIds.has(lines[0]!.trace_id as string)).toBe(true);
    expect(lines[1]).toMatchObject({ method: "POST", path: "/b", status: 200 });
    expect(lines[1]!.bytes_in as number).toBeGreaterThan(5);
    expect(typeof lines[1]!.duration_ms).toBe("number");
  });

  test("a gateway failure is logged with its status and reason, without a trace id when tracing is off", async () => {
    const m = memoryLog();
    await using proxy = startProxy([], { telemetry: { accessLog: m.log } });
    expect((await fetch(`${proxy.url}/none`)).status).toBe(503);
    m.log.flush();
    const [line] = m.lines();
    expect(line).toMatchObject({ status: 503, error: "no_endpoints", path: "/none", endpoint: "" });
    expect(line!.trace_id).toBeUndefined();
  });

  test("one line per TCP connection with bytes each way and the close reason", async () => {
    const m = memoryLog();
    const echo = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: { data: (s, c) => void s.write(c), end: (s) => s.end() } });
    await using _echo = { [Symbol.asyncDispose]: async () => echo.stop(true) };
    const r = route([{ address: "127.0.0.1", port: echo.port, ready: true, serving: true, terminating: false }], "default/echo:tcp");
    const proxy = makeTcpProxyFactory(rt.connectTcp)({ current: { ...r, balancer: new RoundRobin(r.balancer.endpoints, () => 0) } }, { ...defaultProxyOptions, telemetry: { accessLog: m.log } });
    const listener = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
    await using _l = { [Symbol.asyncDispose]: async () => (listener.stop(true), proxy.closeAll()) };
    const done = Promise.withResolvers<void>();
    const sock = await rt.connectTcp<null>({ hostname: "127.0.0.1", port: listener.port, data: null, handlers: { data: () => done.resolve() } });
    sock.write(new TextEncoder().encode("ping"));
    await done.promise;
    sock.end();
    await waitFor(() => proxy.active() === 0, "the connection to close");
    m.log.flush();
    expect(m.lines()).toEqual([
      expect.objectContaining({ protocol: "tcp", entrypoint: "default/echo:tcp", client: "127.0.0.1", endpoint: `127.0.0.1:${echo.port}`, bytes_in: 4, bytes_out: 4, close: "client_closed" }),
    ]);
  });
});
