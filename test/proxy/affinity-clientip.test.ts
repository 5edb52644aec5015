/**
 * sessionAffinity: ClientIP through real sockets: every connection (TCP) and request (HTTP) from 127.0.0.1
 * goes to one endpoint of three, its deterministic first choice (the one a worker that never saw the client
 * picks); the affinity expires after the timeout (injected clock), is dropped when its endpoint leaves, and
 * moves when the affine endpoint refuses connections.
 */
import { describe, expect, test } from "bun:test";
import { RouteBuilder } from "../../src/routes/builder.ts";
import type { Endpoint, Entrypoint } from "../../src/model/types.ts";
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { defaultProxyOptions } from "../../src/proxy/types.ts";
import type { RouteRef } from "../../src/routes/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { manualClock } from "../balancer/conformance.ts";
import { entrypoint } from "../support/entrypoints.ts";
import { connectClient, echoServer } from "../support/tcp-peers.ts";
import { RawClient, RawUpstream, startProxy } from "../support/http-harness.ts";

const TIMEOUT_S = 30;

function clientIp(protocol: "tcp" | "http", endpoints: readonly (number | Endpoint)[]): Entrypoint {
  return { ...entrypoint({ protocol, endpoints }), sessionAffinity: { mode: "ClientIP", timeoutSeconds: TIMEOUT_S } };
}

/** A TCP proxy on 127.0.0.1:0 whose routes come from `routes`. */
function tcpProxy(routes: RouteBuilder, ep: Entrypoint) {
  const ref: RouteRef = { current: routes.route(ep) };
  const proxy = createTcpProxy(ref, { ...defaultProxyOptions, connectTimeoutMs: 1_000 });
  const listener = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
  return {
    port: listener.port,
    /** Apply a new snapshot's entrypoint, as the listener manager does. */
    update(next: Entrypoint) {
      ref.current = routes.route(next, ref.current);
      routes.retain([next]);
    },
    async [Symbol.asyncDispose]() {
      listener.stop(true);
      proxy.closeAll();
    },
  };
}

/** The endpoint port a fresh route builder (a worker that never saw the client) picks for 127.0.0.1 over `ep`. */
function firstChoice(ep: Entrypoint): number {
  return new RouteBuilder().route(ep).balancer.pick({ clientAddress: "127.0.0.1" })!.port;
}

async function tcpTag(port: number): Promise<string> {
  await using c = await connectClient(rt, port);
  return (await c.exchange("x", 3)).split(":")[0]!;
}

describe("ClientIP affinity, TCP", () => {
  test("every connection from one client goes to its first choice of three; the timeout slides, then it is balanced anew", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    await using c = echoServer(rt, { tag: "c" });
    const servers = [a, b, c];
    const tag = (port: number) => ["a", "b", "c"][servers.findIndex((s) => s.port === port)]!;
    const clock = manualClock();
    const routes = new RouteBuilder({ now: clock.now, rng: () => 0 });
    const all = clientIp("tcp", [a.port, b.port, c.port]);
    const x = firstChoice(all);
    await using px = tcpProxy(routes, all);
    const tags: string[] = [];
    for (let i = 0; i < 6; i++) {
      tags.push(await tcpTag(px.port));
      clock.advance((TIMEOUT_S * 1000) / 2); // never idle for a whole timeout: it slides
    }
    expect(tags).toEqual(Array(6).fill(tag(x)));
    expect(servers.map((s) => s.accepted)).toEqual(servers.map((s) => (s.port === x ? 6 : 0)));
    // Its endpoint leaves and comes back: the client stays where it moved while it keeps coming...
    const rest = clientIp("tcp", servers.filter((s) => s.port !== x).map((s) => s.port));
    const y = firstChoice(rest);
    px.update(rest);
    expect(await tcpTag(px.port)).toBe(tag(y));
    px.update(all);
    for (let i = 0; i < 3; i++) {
      clock.advance((TIMEOUT_S * 1000) / 2);
      expect(await tcpTag(px.port)).toBe(tag(y));
    }
    // ...and once idle for the whole timeout it is balanced anew: its first choice over the three.
    clock.advance(TIMEOUT_S * 1000);
    expect([await tcpTag(px.port), await tcpTag(px.port)]).toEqual([tag(x), tag(x)]);
  });

  test("affinity to an endpoint removed from the serving set is dropped; the client sticks to the new pick", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    await using c = echoServer(rt, { tag: "c" });
    const servers = [a, b, c];
    const tag = (port: number) => ["a", "b", "c"][servers.findIndex((s) => s.port === port)]!;
    const routes = new RouteBuilder({ rng: () => 0 });
    const all = clientIp("tcp", [a.port, b.port, c.port]);
    const x = firstChoice(all);
    await using px = tcpProxy(routes, all);
    expect(await tcpTag(px.port)).toBe(tag(x));
    const rest = clientIp("tcp", servers.filter((s) => s.port !== x).map((s) => s.port));
    px.update(rest);
    const moved = await tcpTag(px.port);
    expect(moved).not.toBe(tag(x));
    expect(moved).toBe(tag(firstChoice(rest))); // where every worker sends it
    expect([await tcpTag(px.port), await tcpTag(px.port)]).toEqual([moved, moved]);
    // x comes back: the client stays where it is now.
    px.update(clientIp("tcp", [a.port, b.port, c.port]));
    expect(await tcpTag(px.port)).toBe(moved);
  });

  test("when the affine endpoint refuses, the connection is retried elsewhere and the client re-pinned there", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    await using c = echoServer(rt, { tag: "c" });
    const servers = [a, b, c];
    const tag = (port: number) => ["a", "b", "c"][servers.findIndex((s) => s.port === port)]!;
    const routes = new RouteBuilder({ rng: () => 0 });
    const all = clientIp("tcp", [a.port, b.port, c.port]);
    const x = firstChoice(all);
    // The retry goes to the client's choice among the others (the same in every worker).
    const y = firstChoice(clientIp("tcp", servers.filter((s) => s.port !== x).map((s) => s.port)));
    await using px = tcpProxy(routes, all);
    expect(await tcpTag(px.port)).toBe(tag(x));
    servers.find((s) => s.port === x)!.stop();
    expect(await tcpTag(px.port)).toBe(tag(y));
    expect([await tcpTag(px.port), await tcpTag(px.port)]).toEqual([tag(y), tag(y)]);
    expect(servers.filter((s) => s.port !== x).map((s) => s.accepted)).toEqual(servers.filter((s) => s.port !== x).map((s) => (s.port === y ? 3 : 0)));
  });
});

describe("ClientIP affinity, HTTP", () => {
  async function get(port: number, path: string, headers = ""): Promise<string> {
    await using c = await RawClient.connect(port);
    c.send(`GET ${path} HTTP/1.1\r\nHost: web\r\n${headers}\r\n`);
    return (await c.readResponse()).body;
  }

  test("requests on new and kept-alive connections stick to one endpoint; X-Forwarded-For is not the client", async () => {
    await using a = new RawUpstream("A");
    await using b = new RawUpstream("B");
    await using c = new RawUpstream("C");
    const upstreams = [a, b, c];
    const clock = manualClock();
    const routes = new RouteBuilder({ now: clock.now, rng: () => 0 });
    await using px = startProxy([]);
    const all = clientIp("http", [a.port, b.port, c.port]);
    const x = upstreams.findIndex((u) => u.port === firstChoice(all));
    const X = ["A", "B", "C"][x]!;
    px.ref.current = routes.route(all);
    const bodies: string[] = [];
    for (let i = 0; i < 3; i++) bodies.push(await get(px.port, `/new${i}`, `X-Forwarded-For: 198.51.100.${i}\r\n`));
    await using conn = await RawClient.connect(px.port);
    for (let i = 0; i < 3; i++) {
      conn.send(`GET /ka${i} HTTP/1.1\r\nHost: web\r\n\r\n`);
      bodies.push((await conn.readResponse()).body);
    }
    expect(bodies).toEqual(["/new0", "/new1", "/new2", "/ka0", "/ka1", "/ka2"].map((p) => `${X} GET ${p}`));
    // Idle for the whole timeout: the next request is balanced again, to the same first choice (and sticks there).
    clock.advance(TIMEOUT_S * 1000);
    conn.send("GET /after HTTP/1.1\r\nHost: web\r\n\r\n");
    expect((await conn.readResponse()).body).toBe(`${X} GET /after`);
    expect(await get(px.port, "/again")).toBe(`${X} GET /again`);
    expect(upstreams.map((u) => u.requests.length)).toEqual(upstreams.map((_, i) => (i === x ? 8 : 0)));
  });

  test("an endpoint removed by a route swap loses its clients, mid keep-alive connection", async () => {
    await using a = new RawUpstream("A");
    await using b = new RawUpstream("B");
    await using c = new RawUpstream("C");
    const upstreams = [a, b, c];
    const label = (port: number) => ["A", "B", "C"][upstreams.findIndex((u) => u.port === port)]!;
    const routes = new RouteBuilder({ rng: () => 0 });
    await using px = startProxy([]);
    const first = clientIp("http", [a.port, b.port, c.port]);
    const x = firstChoice(first);
    px.ref.current = routes.route(first);
    await using conn = await RawClient.connect(px.port);
    conn.send("GET /1 HTTP/1.1\r\nHost: web\r\n\r\n");
    expect((await conn.readResponse()).body).toBe(`${label(x)} GET /1`);
    const rest = clientIp("http", upstreams.filter((u) => u.port !== x).map((u) => u.port));
    px.ref.current = routes.route(rest, px.ref.current);
    const seen: string[] = [];
    for (let i = 2; i <= 4; i++) {
      conn.send(`GET /${i} HTTP/1.1\r\nHost: web\r\n\r\n`);
      seen.push((await conn.readResponse()).body.split(" ")[0]!);
    }
    expect(seen[0]).not.toBe(label(x));
    expect(seen).toEqual(Array(3).fill(label(firstChoice(rest))));
  });
});
