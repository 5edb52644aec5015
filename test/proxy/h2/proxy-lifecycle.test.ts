/**
 * The life of the HTTP/2 proxy's connections, on real sockets: drain (GOAWAY to clients, calls in flight finish,
 * later streams refused), an endpoint leaving the route (GOAWAY upstream, its calls finish), idle timeouts on both
 * sides, closeAll, the per-listener connection limit, and one upstream connection shared by every client.
 * Upstreams are HTTP/2 sessions of the test harness that hold each stream for the test to answer, plus python
 * grpcio peers where a real gRPC client matters.
 */
import { describe, expect, test } from "bun:test";
import { CANCEL, NO_ERROR, REFUSED_STREAM } from "../../../src/proxy/h2/errors.ts";
import type { H2Stream, HeaderList } from "../../../src/proxy/h2/session.ts";
import type { ServiceTraffic } from "../../../src/telemetry/metrics/traffic.ts";
import { endpoint } from "../../support/entrypoints.ts";
import { runGrpcClient, startGrpcServer } from "../../support/grpc/peers.ts";
import { RawClient } from "../../support/http-harness.ts";
import { waitFor } from "../../support/wait.ts";
import { GET, h2Client, h2Server, POST, RawH2, StreamLog, type TestClient } from "./harness.ts";
import { startH2Proxy } from "./proxy-harness.ts";

const enc = new TextEncoder();

/** An HTTP/2 upstream that holds every stream for the test to answer and records the GOAWAYs its sessions get. */
function heldUpstream() {
  const streams: { stream: H2Stream; headers: HeaderList; log: StreamLog; session: number }[] = [];
  /** The index (accept order) of the session each GOAWAY came on. */
  const goaways: number[] = [];
  const server = h2Server({}, (session) => ({
    stream(stream, headers) {
      const log = new StreamLog();
      stream.handlers = log;
      streams.push({ stream, headers, log, session });
    },
    goaway() {
      goaways.push(session);
    },
  }));
  return {
    server,
    sessions: server.sessions,
    closes: server.closes,
    streams,
    goaways,
    endpoint: endpoint(server.port),
    /** Answer the `i`-th stream: 200 with `body`. */
    answer(i: number, body: string) {
      const s = streams[i]!.stream;
      s.sendHeaders([[":status", "200"]], false);
      s.sendData(enc.encode(body), true);
    },
    [Symbol.asyncDispose]: () => server[Symbol.asyncDispose](),
  };
}

/** A GET of `path` on the client's session; the log fills as the response arrives. */
function request(client: TestClient, path: string): StreamLog {
  const log = new StreamLog();
  client.session.request(
    GET.map(([n, v]) => [n, n === ":path" ? path : v] as const),
    true,
    log,
  );
  return log;
}

/** A traffic handle that records `error` reasons (the rest is ignored). */
function errorRecorder(): { traffic: ServiceTraffic; errors: string[] } {
  const errors: string[] = [];
  return { errors, traffic: { request() {}, connectDuration() {}, connOpened() {}, connClosed() {}, bytes() {}, error: (r) => void errors.push(r) } };
}

describe("drain", () => {
  test("GOAWAY to the client; the call in flight finishes; a stream opened after it is refused; then the connection closes", async () => {
    await using up = heldUpstream();
    await using px = startH2Proxy([up.endpoint]);
    await using raw = await RawH2.connect(px.port);
    raw.headers(1, GET, true);
    await waitFor(() => up.streams.length === 1, { what: "the call to reach the upstream" });
    let drained = false;
    const draining = px.proxy.drain().then(() => (drained = true));
    expect(await raw.goaway()).toEqual({ lastStreamId: 1, code: NO_ERROR, debug: "" });
    raw.headers(3, GET, true);
    expect(await raw.rst(3)).toBe(REFUSED_STREAM);
    await raw.ping();
    expect(up.streams.length).toBe(1);
    expect(raw.closed).toBe(false);
    expect(drained).toBe(false);
    up.answer(0, "slow call done");
    const res = await raw.response(1);
    expect(res.heads[0]).toContainEqual([":status", "200"]);
    expect(res.body).toBe("slow call done");
    await raw.whenClosed();
    await draining;
    expect(px.proxy.active()).toBe(0);
  });

  test("real gRPC calls in flight (Sleep) finish OK while the proxy drains", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)]);
    const calls = runGrpcClient(px.port, { kind: "concurrent", calls: 3, sleepMs: 800 });
    await waitFor(async () => (await a.stats()).inFlight === 3, { what: "three Sleep calls in flight" });
    let drained = false;
    const draining = px.proxy.drain().then(() => (drained = true));
    const r = await calls;
    expect({ ok: r.ok, errors: r.errors }).toEqual({ ok: 3, errors: [] });
    await draining;
    expect(drained).toBe(true);
    expect(px.proxy.active()).toBe(0);
  });
});

describe("endpoints leaving the route", () => {
  test("a removed endpoint gets GOAWAY on its upstream connection within 2 s; its call in flight finishes; new calls go elsewhere", async () => {
    await using a = heldUpstream();
    await using b = h2Server();
    await using px = startH2Proxy([a.endpoint]);
    await using client = await h2Client(px.port);
    const held = request(client, "/held");
    await waitFor(() => a.streams.length === 1, { what: "the call to reach endpoint a" });
    px.setEndpoints([endpoint(b.port)]);
    const t0 = performance.now();
    // The proxy's sweep runs every second: GOAWAY within two.
    await waitFor(() => a.goaways.length > 0, { what: "GOAWAY on the removed endpoint's connection", timeoutMs: 2_500 });
    expect(performance.now() - t0).toBeLessThan(2_200);
    expect(a.goaways).toEqual([0]);
    const next = request(client, "/next");
    await waitFor(() => next.ended, { what: "the next call's response" });
    expect([next.status, next.text]).toEqual(["200", "ok"]);
    expect(held.ended).toBe(false);
    a.answer(0, "finished on a");
    await waitFor(() => held.ended, { what: "the held call's response" });
    expect([held.status, held.text]).toEqual(["200", "finished on a"]);
    await waitFor(() => a.closes.size === 1, { what: "the removed endpoint's connection to close" });
    expect(a.closes.get(0)).toBeUndefined();
    expect(a.sessions.length).toBe(1);
  });

  test("an endpoint removed and added back while a call drains on its old connection takes new calls", async () => {
    await using a = heldUpstream();
    await using px = startH2Proxy([a.endpoint]);
    await using client = await h2Client(px.port);
    const held = request(client, "/long-stream");
    await waitFor(() => a.streams.length === 1, { what: "the call to reach endpoint a" });
    px.setEndpoints([]);
    await waitFor(() => a.goaways.length > 0, { what: "GOAWAY on the removed endpoint's connection", timeoutMs: 2_500 });
    px.setEndpoints([a.endpoint]);
    const next = request(client, "/after-readded");
    await waitFor(() => a.streams.length === 2 || next.ended, { what: "the new call to reach a or fail" });
    expect(next.ended ? `${next.status} ${next.text}` : "in flight").toBe("in flight");
    a.answer(1, "new call on a");
    a.answer(0, "old call on a");
    await waitFor(() => next.ended && held.ended, { what: "both responses" });
    expect([next.status, next.text, held.text]).toEqual(["200", "new call on a", "old call on a"]);
  });
});

describe("idle timeouts", () => {
  test("an upstream connection and a client connection idle past the idle timeout close; a call in flight keeps them", async () => {
    await using up = heldUpstream();
    await using px = startH2Proxy([up.endpoint], { idleTimeoutMs: 200 });
    const goaways: number[] = [];
    await using client = await h2Client(px.port, {}, { goaway: (lastStreamId) => void goaways.push(lastStreamId) });
    const long = request(client, "/long");
    await waitFor(() => up.streams.length === 1, { what: "the call to reach the upstream" });
    // Nothing to await: the sweep (every 1 s) must NOT close either side while the call runs. Two sweeps pass in 2.2 s.
    await new Promise((r) => setTimeout(r, 2_200));
    expect(goaways).toEqual([]);
    expect(up.closes.size).toBe(0);
    up.answer(0, "long done");
    await waitFor(() => long.ended, { what: "the long call's response" });
    const again = request(client, "/again");
    await waitFor(() => up.streams.length === 2, { what: "the second call upstream" });
    up.answer(1, "again");
    await waitFor(() => again.ended, { what: "the second call's response" });
    expect(up.sessions.length).toBe(1);
    // Idle now: within the idle timeout plus two sweeps both connections close, cleanly.
    const t0 = performance.now();
    await waitFor(() => up.closes.size === 1, { what: "the idle upstream connection to close", timeoutMs: 3_000 });
    expect(up.closes.get(0)).toBeUndefined();
    expect(await client.closed).toBeUndefined();
    expect(goaways).toEqual([3]);
    expect(performance.now() - t0).toBeLessThan(2_500);
    await waitFor(() => px.proxy.active() === 0, { what: "the proxy to count no connection" });
  });
});

describe("closeAll and limits", () => {
  test("closeAll closes HTTP/2 and HTTP/1.1 clients, resets the calls in flight upstream and closes the upstream connection", async () => {
    await using up = heldUpstream();
    await using px = startH2Proxy([up.endpoint]);
    await using c1 = await h2Client(px.port);
    await using c2 = await h2Client(px.port);
    const calls = [request(c1, "/1"), request(c2, "/2")];
    await using h1 = await RawClient.connect(px.port);
    h1.send("GET /partial HTTP/1.1\r\n");
    await waitFor(() => up.streams.length === 2 && px.proxy.active() === 3, { what: "two calls upstream and three clients" });
    expect(up.sessions.length).toBe(1);
    px.proxy.closeAll();
    await Promise.all([c1.closed, c2.closed, h1.whenClosed]);
    expect(calls.map((c) => [c.ended, c.resetCode !== undefined])).toEqual([
      [false, true],
      [false, true],
    ]);
    await waitFor(() => up.closes.size === 1, { what: "the upstream connection to close" });
    expect(up.streams.map((s) => s.log.resetCode)).toEqual([CANCEL, CANCEL]);
    expect(px.proxy.active()).toBe(0);
  });

  test("a client connection over maxConnectionsPerListener is closed at accept; a freed slot admits the next", async () => {
    await using up = h2Server();
    const rec = errorRecorder();
    await using px = startH2Proxy([endpoint(up.port)], { maxConnectionsPerListener: 2, telemetry: { traffic: () => rec.traffic } });
    await using c1 = await h2Client(px.port);
    await using c2 = await h2Client(px.port);
    for (const c of [c1, c2]) {
      const r = request(c, "/");
      await waitFor(() => r.ended, { what: "a response" });
      expect(r.status).toBe("200");
    }
    await using over = await RawClient.connect(px.port);
    await over.whenClosed;
    expect(over.data.length).toBe(0);
    expect(px.proxy.refused).toBe(1);
    expect(rec.errors).toEqual(["connection_limit"]);
    c1.session.close();
    await waitFor(() => px.proxy.active() === 1, { what: "a slot to be freed" });
    await using c3 = await h2Client(px.port);
    const r = request(c3, "/third");
    await waitFor(() => r.ended, { what: "the third client's response" });
    expect(r.status).toBe("200");
    expect(px.proxy.refused).toBe(1);
  });
});

describe("upstream connection pool", () => {
  test("the calls of three client connections, all in flight at once, share one upstream connection", async () => {
    await using up = heldUpstream();
    await using px = startH2Proxy([up.endpoint]);
    await using c1 = await h2Client(px.port);
    await using c2 = await h2Client(px.port);
    await using c3 = await h2Client(px.port);
    const calls = [c1, c2, c3, c1, c2, c3].map((c, i) => request(c, `/call/${i}`));
    await waitFor(() => up.streams.length === 6, { what: "six calls upstream" });
    expect(up.sessions.length).toBe(1);
    expect(new Set(up.streams.map((s) => s.session))).toEqual(new Set([0]));
    up.streams.forEach((s, i) => up.answer(i, `answer ${s.headers.find(([n]) => n === ":path")![1]}`));
    await waitFor(() => calls.every((c) => c.ended), { what: "six responses" });
    expect(calls.map((c) => c.text)).toEqual([0, 1, 2, 3, 4, 5].map((i) => `answer /call/${i}`));
  });

  test("four gRPC clients at once: one upstream connection", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)]);
    const results = await Promise.all([0, 1, 2, 3].map(() => runGrpcClient(px.port, { kind: "unary", count: 5 })));
    expect(results.map((r) => r.ok)).toEqual([5, 5, 5, 5]);
    const s = await a.stats();
    expect({ calls: s.calls, connections: s.connections }).toEqual({ calls: 20, connections: 1 });
  });
});

describe("request body limit (maxRequestBodyBytes) on h2c", () => {
  const body = (n: number) => new Uint8Array(n).fill(0x61);

  test("a declared content-length over the limit is answered 413 before anything goes upstream", async () => {
    await using up = heldUpstream();
    await using px = startH2Proxy([up.endpoint], { maxRequestBodyBytes: 1024 });
    await using raw = await RawH2.connect(px.port);
    raw.headers(1, [...POST, ["content-length", "2048"]], false);
    const res = await raw.response(1);
    expect(res.heads[0]).toContainEqual([":status", "413"]);
    expect(res.heads[0]).toContainEqual(["x-kubegate-reason", "body_too_large"]);
    expect(res.body).toBe("Content too large: the request body exceeds 1024 bytes\n");
    // The client is asked to stop sending, without error (RFC 9113 §8.1).
    expect(await raw.rst(1)).toBe(NO_ERROR);
    expect(up.streams).toHaveLength(0);
  });

  test("a streamed body passing the limit: 413 while no response began, nothing past the limit upstream; under it, it passes", async () => {
    await using up = heldUpstream();
    await using px = startH2Proxy([up.endpoint], { maxRequestBodyBytes: 1024 });
    await using raw = await RawH2.connect(px.port);
    raw.headers(1, POST, false);
    raw.write((w) => w.data(1, body(1000), 0, 1000, false));
    await waitFor(() => up.streams.length === 1 && up.streams[0]!.log.received === 1000, { what: "the first 1000 bytes upstream" });
    raw.write((w) => w.data(1, body(100), 0, 100, false));
    const res = await raw.response(1);
    expect(res.heads[0]).toContainEqual([":status", "413"]);
    expect(await raw.rst(1)).toBe(NO_ERROR);
    // The upstream stream was cancelled with 1000 bytes: nothing past the limit.
    await waitFor(() => up.streams[0]!.log.resetCode !== undefined, { what: "the upstream stream to be reset" });
    expect(up.streams[0]!.log.received).toBe(1000);
    // Exactly the limit is fine.
    raw.headers(3, POST, false);
    raw.write((w) => w.data(3, body(1024), 0, 1024, true));
    await waitFor(() => up.streams.length === 2 && up.streams[1]!.log.ended, { what: "the second request upstream" });
    up.answer(1, "ok");
    expect((await raw.response(3)).body).toBe("ok");
  });

  test("a gRPC call over the limit ends RESOURCE_EXHAUSTED (trailers-only)", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)], { maxRequestBodyBytes: 64 * 1024 });
    const r = await runGrpcClient(px.port, { kind: "big", requestMiB: 1, replyMiB: 0 });
    expect(r.status).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "body_too_large" });
    expect((await a.stats()).inFlight).toBe(0);
  });
});

test("an HTTP/1.1 client of an h2c port gets the same 413, and the connection closes after it", async () => {
  await using up = heldUpstream();
  await using px = startH2Proxy([up.endpoint], { maxRequestBodyBytes: 1024 });
  const res = await fetch(`http://127.0.0.1:${px.port}/upload`, { method: "POST", body: "x".repeat(2048) });
  expect([res.status, res.headers.get("x-kubegate-reason"), res.headers.get("connection")]).toEqual([413, "body_too_large", "close"]);
  expect(await res.text()).toBe("Content too large: the request body exceeds 1024 bytes\n");
  expect(up.streams).toHaveLength(0);
});
