/**
 * The HTTP/2 proxy of one listener (src/proxy/h2/) between real gRPC peers: Debian's python3-grpcio as clients and
 * servers (test/support/grpc/), plus curl and h2load. Calls of one channel are balanced each; every streaming kind,
 * big messages, deadlines, cancellation, error statuses and gateway-made errors reach the client as gRPC does them.
 */
import { describe, expect, test } from "bun:test";
import { endpoint } from "../../support/entrypoints.ts";
import { GRPC_REQUEST_HEADERS, grpcBodyFile, grpcH2loadArgs, runGrpcClient, startGrpcServer } from "../../support/grpc/peers.ts";
import { REFUSED_PORT } from "../../support/ports.ts";
import { waitFor } from "../../support/wait.ts";
import { run, startH2Proxy } from "./proxy-harness.ts";

describe("gRPC through the HTTP/2 proxy", () => {
  test("the calls of one channel are balanced each: 40 unary calls, 20 on each endpoint", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using b = await startGrpcServer({ name: "b" });
    await using px = startH2Proxy([endpoint(a.port), endpoint(b.port)]);
    const r = await runGrpcClient(px.port, { kind: "unary", count: 40 });
    expect({ ok: r.ok, errors: r.errors, byServer: r.byServer }).toEqual({ ok: 40, errors: [], byServer: { a: 20, b: 20 } });
    // One client connection; the proxy keeps one upstream connection per endpoint.
    expect((await a.stats()).connections).toBe(1);
    expect((await b.stats()).connections).toBe(1);
  });

  test("server, client and bidirectional streaming, metadata both ways", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)]);
    const ss = await runGrpcClient(px.port, { kind: "server_stream", count: 50, size: 1000 });
    expect({ code: ss.status.code, messages: ss.messages, intact: ss.intact }).toEqual({ code: "OK", messages: 50, intact: true });
    const cs = await runGrpcClient(px.port, { kind: "client_stream", count: 200, size: 3000 });
    expect({ code: cs.status.code, reply: cs.reply }).toEqual({ code: "OK", reply: { name: "a", count: 200, bytes: 600_000 } });
    const bidi = await runGrpcClient(px.port, { kind: "bidi", count: 100 });
    expect({ code: bidi.status.code, received: bidi.received, inOrder: bidi.inOrder }).toEqual({ code: "OK", received: 100, inOrder: true });
    const md = await runGrpcClient(px.port, { kind: "metadata", metadata: { "x-user": "alice", "x-blob-bin": "AAEC" } });
    expect(md.status.code).toBe("OK");
    expect(md.seen).toMatchObject({ "x-user": "alice", "x-blob-bin": "AAEC" });
    expect(md.trailing).toMatchObject({ "x-user": "alice" });
  });

  test("messages of 8 MiB each way pass intact (flow control both ways)", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)]);
    const r = await runGrpcClient(px.port, { kind: "big", requestMiB: 8, replyMiB: 8 });
    expect(r).toMatchObject({ status: { code: "OK" }, replyBytes: 8 * 1024 * 1024, replyIntact: true, requestReceived: 8 * 1024 * 1024, requestIntact: true });
  });

  test("grpc-timeout is the call's deadline: DEADLINE_EXCEEDED on time, and the upstream call is cancelled", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)]);
    const r = await runGrpcClient(px.port, { kind: "deadline", sleepMs: 5_000, deadlineMs: 300 });
    expect(r.status.code).toBe("DEADLINE_EXCEEDED");
    expect(r.elapsedMs).toBeLessThan(2_000);
    await waitFor(async () => (await a.stats()).cancelled === 1, { what: "the upstream Sleep to be cancelled" });
  });

  test("a cancelled call is cancelled upstream (RST_STREAM forwarded)", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)]);
    const r = await runGrpcClient(px.port, { kind: "cancel", sleepMs: 5_000, afterMs: 200 });
    expect(r.cancelled).toBe(true);
    await waitFor(async () => (await a.stats()).cancelledByMethod.Sleep === 1, { what: "the upstream Sleep to be cancelled" });
  });

  test("error statuses pass through, and UNAVAILABLE counts as a server error for outlier detection", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)], {}, true);
    const notFound = await runGrpcClient(px.port, { kind: "fail", code: "NOT_FOUND", message: "no such thing" });
    expect(notFound.status).toMatchObject({ code: "NOT_FOUND", details: "no such thing" });
    const unavailable = await runGrpcClient(px.port, { kind: "fail", code: "UNAVAILABLE", message: "overloaded" });
    expect(unavailable.status).toMatchObject({ code: "UNAVAILABLE", details: "overloaded" });
    const id = a.port;
    expect(px.balancer.events).toEqual([`begin ${id}`, `end ${id} success`, `begin ${id}`, `end ${id} server-error`]);
  });

  test("gateway-made errors are trailers-only gRPC responses with x-kubegate-reason", async () => {
    await using px = startH2Proxy([]);
    const none = await runGrpcClient(px.port, { kind: "fail", code: "OK" });
    expect(none.status).toMatchObject({ code: "UNAVAILABLE", reason: "no_endpoints" });
    expect(none.status.details).toContain("no serving endpoint");
    px.setEndpoints([endpoint(REFUSED_PORT)]);
    const refused = await runGrpcClient(px.port, { kind: "fail", code: "OK" });
    expect(refused.status).toMatchObject({ code: "UNAVAILABLE", reason: "connect_failed" });
  });

  test("a refused endpoint is skipped: the call goes to the next one", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(REFUSED_PORT), endpoint(a.port)]);
    const r = await runGrpcClient(px.port, { kind: "unary", count: 10 });
    expect({ ok: r.ok, byServer: r.byServer }).toEqual({ ok: 10, byServer: { a: 10 } });
  });

  test("200 calls in flight on one channel to an endpoint that allows 10 streams per connection: more connections", async () => {
    await using a = await startGrpcServer({ name: "a", maxConcurrentStreams: 10 });
    await using px = startH2Proxy([endpoint(a.port)]);
    const r = await runGrpcClient(px.port, { kind: "concurrent", calls: 200, sleepMs: 200 });
    expect({ ok: r.ok, errors: r.errors }).toEqual({ ok: 200, errors: [] });
    const s = await a.stats();
    expect(s.connections).toBeGreaterThan(1);
    expect(s.maxInFlight).toBeGreaterThan(10);
  });

  test("an endpoint change moves the next calls of an open channel at once", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using b = await startGrpcServer({ name: "b" });
    await using px = startH2Proxy([endpoint(a.port)]);
    const running = runGrpcClient(px.port, { kind: "unary", count: 60, intervalMs: 25, timeline: true });
    await waitFor(async () => (await a.stats()).calls >= 10, { what: "calls on a" });
    px.setEndpoints([endpoint(b.port)]);
    const r = await running;
    expect(r.ok).toBe(60);
    expect(r.byServer.b).toBeGreaterThan(0);
    // Every call after the first one on b went to b: the switch is immediate (well under 1 s).
    const t = r.timeline!;
    const firstB = t.findIndex((e) => "server" in e && e.server === "b");
    expect(t.slice(firstB).every((e) => "server" in e && e.server === "b")).toBe(true);
  });

  test("curl --http2-prior-knowledge and h2load speak to it", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)]);
    await using body = await grpcBodyFile("ping");
    const curl = await run("curl", ["-sS", "--http2-prior-knowledge", ...GRPC_REQUEST_HEADERS.flatMap((h) => ["-H", h]), "--data-binary", `@${body.path}`, "-D", "-", "-o", "/dev/null", `http://127.0.0.1:${px.port}/kubegate.test.Echo/Unary`]);
    expect(curl.code).toBe(0);
    expect(curl.out).toMatch(/^HTTP\/2 200/);
    expect(curl.out).toContain("grpc-status: 0");
    const h2load = await run("h2load", ["-n2000", "-c4", "-m16", ...grpcH2loadArgs(px.port, body.path)]);
    expect(h2load.code).toBe(0);
    expect(h2load.out).toMatch(/requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored/);
    await waitFor(async () => (await a.stats()).ok >= 2001, { what: "every h2load call to reach the server" });
  });
});
