/**
 * Spans of the HTTP/2 proxy, through an in-memory exporter: a SERVER span per call named `service/method` with the
 * rpc.* attributes, a CLIENT span per attempt as its child whose id is the parent in the `traceparent` the upstream
 * received, the client's `traceparent` as the parent, ERROR on a failed call, and a plain HTTP/2 request named by
 * its method. Upstreams: an HTTP/2 test server that records the request fields, and python grpcio peers.
 */
import { describe, expect, test } from "bun:test";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import type { HeaderList } from "../../../src/proxy/h2/session.ts";
import { setupTracing } from "../../../src/telemetry/tracing/setup.ts";
import { endpoint } from "../../support/entrypoints.ts";
import { grpcFrame, runGrpcClient, startGrpcServer } from "../../support/grpc/peers.ts";
import { waitFor } from "../../support/wait.ts";
import { GET, h2Client, h2Server, StreamLog, type TestClient } from "./harness.ts";
import { startH2Proxy } from "./proxy-harness.ts";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID = "00f067aa0ba902b7";

function inMemory() {
  const exporter = new InMemorySpanExporter();
  const tracing = setupTracing({ exporter, simpleProcessor: true, sampleRatio: 1 })!;
  return { exporter, tracing, [Symbol.asyncDispose]: () => tracing.shutdown() };
}

/** An HTTP/2 upstream answering every request (once it ended) as a gRPC server does with `grpc-status` `code`; keeps each request's fields. */
function grpcUpstream(code = 0) {
  const requests: HeaderList[] = [];
  const server = h2Server({}, () => ({
    stream(stream, headers, endStream) {
      requests.push(headers);
      const log = new StreamLog();
      stream.handlers = log;
      const answer = () => {
        stream.sendHeaders([[":status", "200"], ["content-type", "application/grpc"]], false);
        stream.sendData(grpcFrame("pong"), false);
        stream.sendTrailers([["grpc-status", String(code)]]);
      };
      if (endStream) answer();
      else log.onEnd = answer;
    },
  }));
  return { port: server.port, requests, [Symbol.asyncDispose]: () => server[Symbol.asyncDispose]() };
}

/** A unary gRPC call of `kubegate.test.Echo/<method>` on the client's session, with `extra` fields. */
function grpcCall(client: TestClient, method: string, extra: HeaderList = []): StreamLog {
  const log = new StreamLog();
  const s = client.session.request(
    [
      [":method", "POST"],
      [":scheme", "http"],
      [":authority", "test"],
      [":path", `/kubegate.test.Echo/${method}`],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ...extra,
    ],
    false,
    log,
  );
  s.sendData(grpcFrame("ping"), true);
  return log;
}

const of = (spans: readonly ReadableSpan[], kind: SpanKind) => spans.filter((s) => s.kind === kind);

/** The SERVER span and the CLIENT spans once `n` spans have ended. */
async function spans(exporter: InMemorySpanExporter, n: number): Promise<{ server: ReadableSpan; clients: ReadableSpan[] }> {
  await waitFor(() => exporter.getFinishedSpans().length >= n, { what: `${n} spans` });
  const all = exporter.getFinishedSpans();
  expect(all).toHaveLength(n);
  const servers = of(all, SpanKind.SERVER);
  expect(servers).toHaveLength(1);
  return { server: servers[0]!, clients: of(all, SpanKind.CLIENT) };
}

const field = (headers: HeaderList, name: string) => headers.filter(([n]) => n === name).map(([, v]) => v);

describe("spans of HTTP/2 calls", () => {
  test("a gRPC call: SERVER span `kubegate.test.Echo/Unary` with rpc.*, its CLIENT child's id is the upstream's traceparent parent", async () => {
    await using t = inMemory();
    await using up = grpcUpstream();
    await using px = startH2Proxy([endpoint(up.port)], { telemetry: { tracing: t.tracing.proxy } });
    await using client = await h2Client(px.port);
    const call = grpcCall(client, "Unary");
    await waitFor(() => call.ended, { what: "the call's trailers" });
    expect(call.heads.at(-1)).toEqual([["grpc-status", "0"]]);

    const { server, clients } = await spans(t.exporter, 2);
    const [client1] = clients;
    expect(server.name).toBe("kubegate.test.Echo/Unary");
    expect(server.parentSpanContext).toBeUndefined();
    expect(server.attributes).toMatchObject({
      "rpc.system": "grpc",
      "rpc.service": "kubegate.test.Echo",
      "rpc.method": "Unary",
      "rpc.grpc.status_code": 0,
      "http.request.method": "POST",
      "url.path": "/kubegate.test.Echo/Unary",
      "http.response.status_code": 200,
      "network.protocol.version": "2",
      "client.address": "127.0.0.1",
      "k8s.namespace.name": "default",
      "k8s.service.name": "grpc",
    });
    expect(server.status.code).toBe(SpanStatusCode.UNSET);
    expect(client1!.name).toBe("kubegate.test.Echo/Unary");
    expect(client1!.spanContext().traceId).toBe(server.spanContext().traceId);
    expect(client1!.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
    expect(client1!.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.grpc.status_code": 0, "network.peer.address": "127.0.0.1", "network.peer.port": up.port });
    expect(client1!.status.code).toBe(SpanStatusCode.UNSET);

    expect(up.requests).toHaveLength(1);
    expect(field(up.requests[0]!, "traceparent")).toEqual([`00-${server.spanContext().traceId}-${client1!.spanContext().spanId}-01`]);
  });

  test("the client's traceparent is the parent; the upstream gets the trace with the CLIENT span as parent, and the tracestate (real grpcio peers)", async () => {
    await using t = inMemory();
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)], { telemetry: { tracing: t.tracing.proxy } });
    const md = await runGrpcClient(px.port, { kind: "metadata", metadata: { traceparent: `00-${TRACE_ID}-${PARENT_ID}-01`, tracestate: "vendor=abc" } });
    expect(md.status.code).toBe("OK");

    const { server, clients } = await spans(t.exporter, 2);
    expect(server.name).toBe("kubegate.test.Echo/Metadata");
    expect(server.spanContext().traceId).toBe(TRACE_ID);
    expect(server.parentSpanContext?.spanId).toBe(PARENT_ID);
    expect(clients[0]!.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
    expect(md.seen).toMatchObject({ traceparent: `00-${TRACE_ID}-${clients[0]!.spanContext().spanId}-01`, tracestate: "vendor=abc" });
  });

  test("a failed call (Fail UNAVAILABLE): both spans ERROR with rpc.grpc.status_code 14", async () => {
    await using t = inMemory();
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)], { telemetry: { tracing: t.tracing.proxy } });
    const r = await runGrpcClient(px.port, { kind: "fail", code: "UNAVAILABLE", message: "overloaded" });
    expect(r.status.code).toBe("UNAVAILABLE");

    const { server, clients } = await spans(t.exporter, 2);
    expect(server.name).toBe("kubegate.test.Echo/Fail");
    for (const s of [server, clients[0]!]) {
      expect(s.status.code).toBe(SpanStatusCode.ERROR);
      expect(s.attributes["rpc.grpc.status_code"]).toBe(14);
      expect(s.attributes["http.response.status_code"]).toBe(200);
      expect(s.attributes["error.type"]).toBeUndefined();
    }
  });

  test("a gateway-made failure (no endpoints): SERVER span ERROR with error.type, rpc.grpc.status_code 14, no CLIENT span", async () => {
    await using t = inMemory();
    await using px = startH2Proxy([], { telemetry: { tracing: t.tracing.proxy } });
    await using client = await h2Client(px.port);
    const call = grpcCall(client, "Unary");
    await waitFor(() => call.ended, { what: "the trailers-only answer" });
    expect(field(call.heads[0]!, "grpc-status")).toEqual(["14"]);

    const { server, clients } = await spans(t.exporter, 1);
    expect(clients).toEqual([]);
    expect(server.status.code).toBe(SpanStatusCode.ERROR);
    expect(server.attributes).toMatchObject({ "rpc.grpc.status_code": 14, "error.type": "no_endpoints" });
  });

  test("a plain HTTP/2 request is named by its method, without rpc.* attributes", async () => {
    await using t = inMemory();
    await using up = h2Server();
    await using px = startH2Proxy([endpoint(up.port)], { telemetry: { tracing: t.tracing.proxy } });
    await using client = await h2Client(px.port);
    const log = new StreamLog();
    client.session.request(GET, true, log);
    await waitFor(() => log.ended, { what: "the response" });
    expect([log.status, log.text]).toEqual(["200", "ok"]);

    const { server, clients } = await spans(t.exporter, 2);
    expect([server.name, clients[0]!.name]).toEqual(["GET", "GET"]);
    expect(server.attributes).toMatchObject({ "http.request.method": "GET", "url.path": "/", "http.response.status_code": 200 });
    expect(Object.keys(server.attributes).filter((k) => k.startsWith("rpc."))).toEqual([]);
    expect(Object.keys(clients[0]!.attributes).filter((k) => k.startsWith("rpc."))).toEqual([]);
  });
});
