/**
 * sessionAffinity: ClientIP through real sockets: every connection (TCP) and request (HTTP) from 127.0.0.1
 * goes to one endpoint of three; the affinity expires after the timeout (injected clock), is dropped when
 * its endpoint leaves, and moves when the affine endpoint refuses connections.
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

async function tcpTag(port: number): Promise<string> {
  await using c = await connectClient(rt, port);
  return (await c.exchange("x", 3)).split(":")[0]!;
}

describe("ClientIP affinity, TCP", () => {
  test("every connection from one client goes to one endpoint of three; after the timeout it is balanced anew", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    await using c = echoServer(rt, { tag: "c" });
    const clock = manualClock();
    const routes = new RouteBuilder({ now: clock.now, rng: () => 0 });
    await using px = tcpProxy(routes, clientIp("tcp", [a.port, b.port, c.port]));
    const tags: string[] = [];
    for (let i = 0; i < 6; i++) {
      tags.push(await tcpTag(px.port));
      clock.advance((TIMEOUT_S * 1000) / 2); // never idle for a whole timeout: it slides
    }
    expect(tags).toEqual(["a", "a", "a", "a", "a", "a"]);
    expect([a.accepted, b.accepted, c.accepted]).toEqual([6, 0, 0]);
    clock.advance(TIMEOUT_S * 1000);
    expect([await tcpTag(px.port), await tcpTag(px.port)]).toEqual(["b", "b"]);
  });

  test("affinity to an endpoint removed from the serving set is dropped; the client sticks to the new pick", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    await using c = echoServer(rt, { tag: "c" });
    const routes = new RouteBuilder({ rng: () => 0 });
    await using px = tcpProxy(routes, clientIp("tcp", [a.port, b.port, c.port]));
    expect(await tcpTag(px.port)).toBe("a");
    px.update(clientIp("tcp", [b.port, c.port]));
    const moved = await tcpTag(px.port);
    expect(["b", "c"]).toContain(moved);
    expect([await tcpTag(px.port), await tcpTag(px.port)]).toEqual([moved, moved]);
    // a comes back: the client stays where it is now.
    px.update(clientIp("tcp", [a.port, b.port, c.port]));
    expect(await tcpTag(px.port)).toBe(moved);
  });

  test("when the affine endpoint refuses, the connection is retried elsewhere and the client re-pinned there", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    await using c = echoServer(rt, { tag: "c" });
    const routes = new RouteBuilder({ rng: () => 0 });
    await using px = tcpProxy(routes, clientIp("tcp", [a.port, b.port, c.port]));
    expect(await tcpTag(px.port)).toBe("a");
    a.stop();
    expect(await tcpTag(px.port)).toBe("b");
    expect([await tcpTag(px.port), await tcpTag(px.port)]).toEqual(["b", "b"]);
    expect([b.accepted, c.accepted]).toEqual([3, 0]);
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
    const clock = manualClock();
    const routes = new RouteBuilder({ now: clock.now, rng: () => 0 });
    await using px = startProxy([]);
    px.ref.current = routes.route(clientIp("http", [a.port, b.port, c.port]));
    const bodies: string[] = [];
    for (let i = 0; i < 3; i++) bodies.push(await get(px.port, `/new${i}`, `X-Forwarded-For: 198.51.100.${i}\r\n`));
    await using conn = await RawClient.connect(px.port);
    for (let i = 0; i < 3; i++) {
      conn.send(`GET /ka${i} HTTP/1.1\r\nHost: web\r\n\r\n`);
      bodies.push((await conn.readResponse()).body);
    }
    expect(bodies).toEqual(["A GET /new0", "A GET /new1", "A GET /new2", "A GET /ka0", "A GET /ka1", "A GET /ka2"]);
    // Idle for the whole timeout: the next request is balanced again (and sticks there).
    clock.advance(TIMEOUT_S * 1000);
    conn.send("GET /after HTTP/1.1\r\nHost: web\r\n\r\n");
    expect((await conn.readResponse()).body).toBe("B GET /after");
    expect(await get(px.port, "/again")).toBe("B GET /again");
    expect(b.requests.length + a.requests.length).toBe(8);
    expect(c.requests.length).toBe(0);
  });

  test("an endpoint removed by a route swap loses its clients, mid keep-alive connection", async () => {
    await using a = new RawUpstream("A");
    await using b = new RawUpstream("B");
    await using c = new RawUpstream("C");
    const routes = new RouteBuilder({ rng: () => 0 });
    await using px = startProxy([]);
    const first = clientIp("http", [a.port, b.port, c.port]);
    px.ref.current = routes.route(first);
    await using conn = await RawClient.connect(px.port);
    conn.send("GET /1 HTTP/1.1\r\nHost: web\r\n\r\n");
    expect((await conn.readResponse()).body).toBe("A GET /1");
    px.ref.current = routes.route(clientIp("http", [b.port, c.port]), px.ref.current);
    const seen: string[] = [];
    for (let i = 2; i <= 4; i++) {
      conn.send(`GET /${i} HTTP/1.1\r\nHost: web\r\n\r\n`);
      seen.push((await conn.readResponse()).body.split(" ")[0]!);
    }
    expect(seen[0]).not.toBe("A");
    expect(new Set(seen).size).toBe(1);
  });
});
