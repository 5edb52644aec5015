/**
 * Many TCP proxy listeners share their handler functions (only `open` is per listener, and the runtime
 * shares one handler object among them): each connection must still reach its own listener's proxy and
 * route, also after a listener switches handlers, and sockets keep the port's contract.
 */
import { describe, expect, test } from "bun:test";
import { createTcpProxy } from "../../../src/proxy/tcp/index.ts";
import { defaultProxyOptions } from "../../../src/proxy/types.ts";
import type { RouteRef } from "../../../src/routes/types.ts";
import { rt } from "../../../src/runtime/index.ts";
import type { TcpHandlers } from "../../../src/runtime/types.ts";
import { entrypoint, route } from "../../support/entrypoints.ts";
import { connectClient, echoServer } from "../../support/tcp-peers.ts";
import { waitFor } from "../../support/wait.ts";

describe("TCP proxy listeners", () => {
  test("each of many listeners proxies to its own route; open connections are counted per listener", async () => {
    const N = 20;
    const upstreams = Array.from({ length: N }, (_, i) => echoServer(rt, { tag: `u${i}` }));
    await using _u = { [Symbol.asyncDispose]: async () => upstreams.forEach((u) => u.stop()) };
    const proxies = upstreams.map((u) => createTcpProxy({ current: route(entrypoint({ endpoints: [u.port] })) }, { ...defaultProxyOptions, connectTimeoutMs: 1_000 }));
    const listeners = proxies.map((p) => rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: p.handlers }));
    await using _l = { [Symbol.asyncDispose]: async () => listeners.forEach((l, i) => (l.stop(true), proxies[i]!.closeAll())) };
    expect(proxies.every((p) => p.active() === 0)).toBe(true);

    // Hold one connection open on listener 3 while every listener answers from its own upstream.
    await using held = await connectClient(rt, listeners[3]!.port);
    expect(await held.exchange("hold", "u3:hold".length)).toBe("u3:hold");
    for (let i = N - 1; i >= 0; i--) {
      await using c = await connectClient(rt, listeners[i]!.port);
      expect(await c.exchange(`x${i}`, `u${i}:x${i}`.length)).toBe(`u${i}:x${i}`);
    }
    await waitFor(() => proxies.every((p, i) => p.active() === (i === 3 ? 1 : 0)), { what: "only listener 3 to hold a connection" });
    await held[Symbol.asyncDispose]();
    await waitFor(() => proxies[3]!.active() === 0, { what: "listener 3's connection to be released" });
    await proxies[3]!.drain();
  });

  test("after reload, new connections go to the new proxy and an open one stays with the old", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    const refA: RouteRef = { current: route(entrypoint({ endpoints: [a.port] })) };
    const refB: RouteRef = { current: route(entrypoint({ endpoints: [b.port] })) };
    const pa = createTcpProxy(refA, defaultProxyOptions);
    const pb = createTcpProxy(refB, defaultProxyOptions);
    const listener = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: pa.handlers });
    await using _l = { [Symbol.asyncDispose]: async () => (listener.stop(true), pa.closeAll(), pb.closeAll()) };

    await using before = await connectClient(rt, listener.port);
    expect(await before.exchange("1", "a:1".length)).toBe("a:1");
    listener.reload(pb.handlers);
    await using after = await connectClient(rt, listener.port);
    expect(await after.exchange("2", "b:2".length)).toBe("b:2");
    expect(await before.exchange("3", "a:3".length)).toBe("a:3");
    expect([pa.active(), pb.active()]).toEqual([1, 1]);
  });

  test("listener sockets open with `data` undefined (the listener's own state never leaks into them)", async () => {
    const seen: unknown[] = [];
    const handlers: TcpHandlers<number> = {
      open(s) {
        seen.push(s.data);
        s.data = 0;
      },
      data(s, chunk) {
        s.data += chunk.length;
        if (s.data === 5) s.end();
      },
      close(s) {
        seen.push(s.data);
      },
    };
    const server = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers });
    await using _s = { [Symbol.asyncDispose]: async () => server.stop(true) };
    for (let i = 0; i < 2; i++) {
      await using c = await connectClient(rt, server.port);
      await c.send("hello");
      await c.ended;
    }
    await waitFor(() => seen.length === 4, { what: "both connections to close" });
    expect(seen).toEqual([undefined, 5, undefined, 5]);
  });
});
