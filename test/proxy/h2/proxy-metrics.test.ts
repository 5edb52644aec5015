/**
 * What the HTTP/2 proxy reports per call and per connection: the Service's traffic handle (`telemetry.traffic`, a
 * recording fake here) counts each call once by the HTTP status it stands for (gRPC statuses mapped as Envoy does),
 * gateway failures and cancels by reason, connections opened and closed, bytes; and the access log line of a call.
 * Real python grpcio peers, and HTTP/2 test sessions where exact bytes matter.
 */
import { describe, expect, test } from "bun:test";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import type { HeaderList } from "../../../src/proxy/h2/session.ts";
import { AccessLog } from "../../../src/telemetry/access-log.ts";
import type { ProxyErrorReason, ServiceTraffic } from "../../../src/telemetry/metrics/traffic.ts";
import { setupTracing } from "../../../src/telemetry/tracing/setup.ts";
import { endpoint } from "../../support/entrypoints.ts";
import { grpcFrame, runGrpcClient, startGrpcServer } from "../../support/grpc/peers.ts";
import { RawClient } from "../../support/http-harness.ts";
import { waitFor } from "../../support/wait.ts";
import { h2Client, StreamLog, type TestClient } from "./harness.ts";
import { H2_ENTRYPOINT, startH2Proxy } from "./proxy-harness.ts";

/** A traffic handle that records every report. */
class RecordingTraffic implements ServiceTraffic {
  readonly requests: number[] = [];
  readonly errors: ProxyErrorReason[] = [];
  opened = 0;
  closed = 0;
  received = 0;
  sent = 0;
  request(status: number): void {
    this.requests.push(status);
  }
  connectDuration(): void {}
  connOpened(): void {
    this.opened++;
  }
  connClosed(): void {
    this.closed++;
  }
  bytes(received: number, sent: number): void {
    this.received += received;
    this.sent += sent;
  }
  error(reason: ProxyErrorReason): void {
    this.errors.push(reason);
  }
}

/** An access log into memory, its lines parsed. */
function memoryLog() {
  const batches: string[] = [];
  const log = new AccessLog({ write: (b) => void batches.push(b), flushMs: 10 });
  return {
    log,
    lines: () => {
      log.flush();
      return batches.flatMap((b) => b.split("\n")).map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
}

/** A unary call of `kubegate.test.Echo/Unary` with the message `ping` (9 bytes framed), as a gRPC client sends it. */
function unaryPing(client: TestClient): StreamLog {
  const log = new StreamLog();
  const headers: HeaderList = [
    [":method", "POST"],
    [":scheme", "http"],
    [":authority", "test"],
    [":path", "/kubegate.test.Echo/Unary"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
  ];
  client.session.request(headers, false, log).sendData(grpcFrame("ping"), true);
  return log;
}

describe("per-call metrics", () => {
  test("each call counts once by the status it stands for: OK 200, NOT_FOUND 404, UNAVAILABLE 503; no gateway error", async () => {
    await using a = await startGrpcServer({ name: "a" });
    const t = new RecordingTraffic();
    await using px = startH2Proxy([endpoint(a.port)], { telemetry: { traffic: () => t } });
    expect((await runGrpcClient(px.port, { kind: "unary", count: 1 })).ok).toBe(1);
    await waitFor(() => t.requests.length === 1, { what: "the OK call counted" });
    expect((await runGrpcClient(px.port, { kind: "fail", code: "NOT_FOUND" })).status.code).toBe("NOT_FOUND");
    await waitFor(() => t.requests.length === 2, { what: "the NOT_FOUND call counted" });
    expect((await runGrpcClient(px.port, { kind: "fail", code: "UNAVAILABLE" })).status.code).toBe("UNAVAILABLE");
    await waitFor(() => t.requests.length === 3, { what: "the UNAVAILABLE call counted" });
    expect(t.requests).toEqual([200, 404, 503]);
    expect(t.errors).toEqual([]);
  });

  test("no endpoints: request(503) and error(no_endpoints)", async () => {
    const t = new RecordingTraffic();
    await using px = startH2Proxy([], { telemetry: { traffic: () => t } });
    const r = await runGrpcClient(px.port, { kind: "unary", count: 1 });
    expect(r.errors.map((e) => [e.code, e.reason])).toEqual([["UNAVAILABLE", "no_endpoints"]]);
    await waitFor(() => t.requests.length === 1, { what: "the call counted" });
    expect({ requests: t.requests, errors: t.errors }).toEqual({ requests: [503], errors: ["no_endpoints"] });
  });

  test("a call the client cancels: error(client_closed), counted once (499), cancelled upstream", async () => {
    await using a = await startGrpcServer({ name: "a" });
    const t = new RecordingTraffic();
    await using px = startH2Proxy([endpoint(a.port)], { telemetry: { traffic: () => t } });
    const r = await runGrpcClient(px.port, { kind: "cancel", sleepMs: 5_000, afterMs: 200 });
    expect(r.cancelled).toBe(true);
    await waitFor(() => t.errors.length === 1, { what: "the cancel counted" });
    await waitFor(async () => (await a.stats()).cancelledByMethod.Sleep === 1, { what: "the upstream Sleep to be cancelled" });
    expect({ requests: t.requests, errors: t.errors }).toEqual({ requests: [499], errors: ["client_closed"] });
  });

  test("connections: opened and closed once each, HTTP/2 and HTTP/1.1 clients alike", async () => {
    const t = new RecordingTraffic();
    await using px = startH2Proxy([], { telemetry: { traffic: () => t } });
    await using h2 = await h2Client(px.port);
    const call = unaryPing(h2);
    await waitFor(() => call.ended, { what: "the HTTP/2 answer" });
    await using h1 = await RawClient.connect(px.port);
    h1.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    expect((await h1.readResponse()).status).toBe(503);
    expect(t.opened - t.closed).toBe(2);
    h2.session.close();
    h1.end();
    await Promise.all([h2.closed, h1.whenClosed]);
    await waitFor(() => px.proxy.active() === 0, { what: "the proxy to count no connection" });
    expect(t.opened - t.closed).toBe(0);
  });

  test("bytes each way are reported", async () => {
    await using a = await startGrpcServer({ name: "a" });
    const t = new RecordingTraffic();
    await using px = startH2Proxy([endpoint(a.port)], { telemetry: { traffic: () => t } });
    await using client = await h2Client(px.port);
    const call = unaryPing(client);
    await waitFor(() => call.ended, { what: "the call's trailers" });
    await waitFor(() => t.requests.length === 1, { what: "the call counted" });
    expect(t.received).toBeGreaterThanOrEqual(9);
    expect(t.sent).toBeGreaterThanOrEqual(grpcFrame("a:ping").length);
  });
});

describe("access log", () => {
  test("one line per call: entrypoint, client, endpoint, method, path, status, DATA bytes each way, duration", async () => {
    await using a = await startGrpcServer({ name: "a" });
    const m = memoryLog();
    await using px = startH2Proxy([endpoint(a.port)], { telemetry: { accessLog: m.log } });
    await using client = await h2Client(px.port);
    const call = unaryPing(client);
    await waitFor(() => call.ended, { what: "the call's trailers" });
    expect(call.heads.at(-1)).toContainEqual(["grpc-status", "0"]);
    const lines = await waitFor(() => m.lines().length === 1 && m.lines(), { what: "the access log line" });
    expect(lines[0]).toMatchObject({
      msg: "access",
      protocol: "http",
      entrypoint: H2_ENTRYPOINT,
      client: "127.0.0.1",
      endpoint: `127.0.0.1:${a.port}`,
      method: "POST",
      path: "/kubegate.test.Echo/Unary",
      status: 200,
      bytes_in: grpcFrame("ping").length,
      bytes_out: grpcFrame("a:ping").length,
    });
    expect(typeof lines[0]!.duration_ms).toBe("number");
    expect(lines[0]!.error).toBeUndefined();
    expect(lines[0]!.trace_id).toBeUndefined();
  });

  test("a gateway-made failure: its status and reason, no endpoint", async () => {
    const m = memoryLog();
    await using px = startH2Proxy([], { telemetry: { accessLog: m.log } });
    await using client = await h2Client(px.port);
    const call = unaryPing(client);
    await waitFor(() => call.ended, { what: "the trailers-only answer" });
    const [line] = await waitFor(() => m.lines().length === 1 && m.lines(), { what: "the access log line" });
    expect(line).toMatchObject({ path: "/kubegate.test.Echo/Unary", status: 503, error: "no_endpoints", endpoint: "", bytes_out: 0 });
  });

  test("a sampled call's line carries its trace id", async () => {
    const exporter = new InMemorySpanExporter();
    const tracing = setupTracing({ exporter, simpleProcessor: true, sampleRatio: 1 })!;
    await using _t = { [Symbol.asyncDispose]: () => tracing.shutdown() };
    await using a = await startGrpcServer({ name: "a" });
    const m = memoryLog();
    await using px = startH2Proxy([endpoint(a.port)], { telemetry: { accessLog: m.log, tracing: tracing.proxy } });
    await using client = await h2Client(px.port);
    const call = unaryPing(client);
    await waitFor(() => call.ended, { what: "the call's trailers" });
    const [line] = await waitFor(() => m.lines().length === 1 && m.lines(), { what: "the access log line" });
    await waitFor(() => exporter.getFinishedSpans().length === 2, { what: "the call's spans" });
    expect(line!.trace_id).toBe(exporter.getFinishedSpans()[0]!.spanContext().traceId);
  });
});
