/**
 * The UDP data plane with real sockets: replies come back from the listener, one flow per client,
 * idle expiry, a bounded table, endpoint changes, stray replies and refused sources.
 */
import { describe, expect, test } from "bun:test";
import { RoundRobin } from "../../../src/balancer/round-robin.ts";
import type { Balancer } from "../../../src/balancer/types.ts";
import { makeUdpProxyFactory } from "../../../src/proxy/udp/proxy.ts";
import { defaultProxyOptions } from "../../../src/proxy/types.ts";
import type { UdpListenerProxy, UdpProxyHooks, UdpProxySettings } from "../../../src/proxy/udp/types.ts";
import type { RouteRef } from "../../../src/routes/types.ts";
import { rt } from "../../../src/runtime/index.ts";
import { endpoint, entrypoint, route } from "../../support/entrypoints.ts";
import { udpClient, udpEcho } from "../../support/udp-peers.ts";
import { waitFor } from "../../support/wait.ts";

interface Harness extends AsyncDisposable {
  readonly port: number;
  readonly proxy: UdpListenerProxy;
  readonly ref: RouteRef;
  /** Point new flows at these upstream ports (rng 0: round robin starts at the first). */
  routeTo(ports: readonly number[]): void;
}

/** A UDP proxy on a listener socket at 127.0.0.1:0, routing to `ports`. */
async function proxyTo(
  ports: readonly number[],
  settings: Partial<UdpProxySettings> = {},
  hooks: UdpProxyHooks = {},
): Promise<Harness> {
  const routeFor = (p: readonly number[]) => route(entrypoint({ protocol: "udp", endpoints: [...p] }));
  const ref: RouteRef = { current: routeFor(ports) };
  const { bindUdp = rt.bindUdp, log, telemetry, ...udp } = settings;
  const proxy = makeUdpProxyFactory(bindUdp)(ref, { ...defaultProxyOptions, udp, log, telemetry }, hooks);
  const socket = await rt.bindUdp({ hostname: "127.0.0.1", port: 0, onMessage: proxy.onMessage });
  proxy.attach(socket);
  return {
    port: socket.port,
    proxy,
    ref,
    routeTo: (p) => void (ref.current = routeFor(p)),
    async [Symbol.asyncDispose]() {
      proxy.closeAll();
      socket.close();
    },
  };
}

describe("UDP proxy", () => {
  test("a datagram reaches the endpoint and the reply comes back from the listener's address", async () => {
    await using echo = await udpEcho(rt, { tag: "a" });
    await using h = await proxyTo([echo.port]);
    await using client = await udpClient(rt, h.port);
    expect(await client.exchange("ping")).toBe("a:ping");
    expect(client.lastFrom).toBe(`127.0.0.1:${h.port}`);
    expect(await client.exchange("again")).toBe("a:again");
    // The endpoint sees the flow's upstream socket, not the client.
    expect(echo.senders).toHaveLength(1);
    expect(echo.senders[0]).not.toBe(`127.0.0.1:${client.port}`);
    expect(h.proxy.stats()).toMatchObject({ flows: 1, created: 1, dropped: 0 });
  });

  test("each client gets its own flow, which keeps its endpoint", async () => {
    await using a = await udpEcho(rt, { tag: "a" });
    await using b = await udpEcho(rt, { tag: "b" });
    await using h = await proxyTo([a.port, b.port]);
    await using c1 = await udpClient(rt, h.port);
    await using c2 = await udpClient(rt, h.port);
    expect(await c1.exchange("1")).toBe("a:1");
    expect(await c2.exchange("2")).toBe("b:2");
    // Round robin would alternate per datagram; flows stick.
    for (let i = 0; i < 3; i++) {
      expect(await c1.exchange(`x${i}`)).toBe(`a:x${i}`);
      expect(await c2.exchange(`y${i}`)).toBe(`b:y${i}`);
    }
    expect(h.proxy.active()).toBe(2);
    expect([a.senders.length, b.senders.length]).toEqual([1, 1]);
    expect(h.proxy.stats()).toMatchObject({ flows: 2, created: 2 });
  });

  test("an idle flow expires; an active one is kept; the client's next datagram makes a new flow", async () => {
    await using echo = await udpEcho(rt, { tag: "e" });
    await using h = await proxyTo([echo.port], { idleTimeoutMs: 300 });
    await using busy = await udpClient(rt, h.port);
    await using idle = await udpClient(rt, h.port);
    // `busy` is created first: expiry must not stop at it once it is more recent than `idle`.
    expect(await busy.exchange("b0")).toBe("e:b0");
    expect(await idle.exchange("i0")).toBe("e:i0");
    const started = performance.now();
    let i = 0;
    while (h.proxy.active() === 2) {
      if (performance.now() - started > 3_000) throw new Error("The idle flow did not expire within 3 s");
      expect(await busy.exchange(`b${++i}`)).toBe(`e:b${i}`);
      await new Promise((r) => setTimeout(r, 25)); // keep `busy` active at a pace well inside the timeout
    }
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect(h.proxy.stats()).toMatchObject({ flows: 1, created: 2, expired: 1 });
    expect(await idle.exchange("i1")).toBe("e:i1");
    expect(h.proxy.stats()).toMatchObject({ flows: 2, created: 3 });
    expect(echo.senders).toHaveLength(3); // a new upstream socket for the new flow
  });

  test("a full flow table evicts the least recently active flow", async () => {
    await using echo = await udpEcho(rt);
    await using h = await proxyTo([echo.port], { maxFlows: 2 });
    await using c1 = await udpClient(rt, h.port);
    await using c2 = await udpClient(rt, h.port);
    await using c3 = await udpClient(rt, h.port);
    await c1.exchange("1");
    await c2.exchange("2");
    expect(await c3.exchange("3")).toBe("echo:3");
    expect(h.proxy.stats()).toMatchObject({ flows: 2, created: 3, evicted: 1 });
    // c2 and c3 kept their flows (no new upstream socket); c1 gets a new one, evicting c2.
    await c2.exchange("2b");
    await c3.exchange("3b");
    expect(h.proxy.stats()).toMatchObject({ flows: 2, created: 3, evicted: 1 });
    await c1.exchange("1b");
    expect(h.proxy.stats()).toMatchObject({ flows: 2, created: 4, evicted: 2 });
    await c3.exchange("3c"); // still has its flow: c2 was the one evicted
    expect(h.proxy.stats()).toMatchObject({ created: 4, evicted: 2 });
  });

  test("endpoint changes: new flows take the new route; a flow whose endpoint left is re-pointed", async () => {
    await using a = await udpEcho(rt, { tag: "a" });
    await using b = await udpEcho(rt, { tag: "b" });
    await using h = await proxyTo([a.port]);
    await using old = await udpClient(rt, h.port);
    expect(await old.exchange("1")).toBe("a:1");

    h.routeTo([b.port, a.port]); // `a` stays in the route
    await using fresh = await udpClient(rt, h.port);
    expect(await fresh.exchange("2")).toBe("b:2");
    expect(await old.exchange("3")).toBe("a:3");
    expect(h.proxy.stats().repointed).toBe(0);

    h.routeTo([b.port]); // `a` is gone
    expect(await old.exchange("4")).toBe("b:4");
    expect(await fresh.exchange("5")).toBe("b:5");
    expect(h.proxy.stats()).toMatchObject({ flows: 2, created: 3, repointed: 1 });
  });

  test("datagrams that arrive while the upstream socket is binding are held (bounded) and sent in order", async () => {
    await using echo = await udpEcho(rt);
    const gate = Promise.withResolvers<void>();
    const slowBind: UdpProxySettings["bindUdp"] = async (options) => {
      await gate.promise;
      return rt.bindUdp(options);
    };
    await using h = await proxyTo([echo.port], { bindUdp: slowBind, maxPendingDatagrams: 3 });
    await using client = await udpClient(rt, h.port);
    for (const d of ["1", "2", "3", "4", "5"]) client.send(d);
    await waitFor(() => h.proxy.stats().dropped === 2, { what: "the datagrams past the pending limit to be dropped" });
    expect(echo.received).toBe(0);
    gate.resolve();
    expect([await client.next(), await client.next(), await client.next()]).toEqual(["echo:1", "echo:2", "echo:3"]);
    expect(await client.exchange("6")).toBe("echo:6");
    expect(h.proxy.stats()).toMatchObject({ flows: 1, created: 1, dropped: 2 });
  });

  test("an upstream socket that cannot be bound drops the flow and its datagrams; the next datagram tries again", async () => {
    await using echo = await udpEcho(rt);
    let failures = 1;
    const flakyBind: UdpProxySettings["bindUdp"] = async (options) => {
      if (failures-- > 0) throw Object.assign(new Error("Too many open files"), { code: "EMFILE" });
      return rt.bindUdp(options);
    };
    await using h = await proxyTo([echo.port], { bindUdp: flakyBind });
    await using client = await udpClient(rt, h.port);
    client.send("lost");
    await waitFor(() => h.proxy.stats().dropped === 1, { what: "the datagram to be dropped" });
    expect(h.proxy.active()).toBe(0);
    expect(await client.exchange("kept")).toBe("echo:kept");
  });

  test("datagrams to a flow's upstream socket from anyone but its endpoint are dropped", async () => {
    await using echo = await udpEcho(rt);
    await using h = await proxyTo([echo.port]);
    await using client = await udpClient(rt, h.port);
    await client.exchange("hi");
    const upstreamPort = Number(echo.senders[0]!.split(":").at(-1));
    await using stranger = await udpClient(rt, upstreamPort);
    stranger.send("spoofed reply");
    await waitFor(() => h.proxy.stats().dropped === 1, { what: "the stray datagram to be dropped" });
    expect(await client.exchange("after")).toBe("echo:after");
    expect(client.queued).toBe(0);
  });

  test("no endpoint: the datagram is dropped and no flow is made", async () => {
    await using h = await proxyTo([]);
    await using client = await udpClient(rt, h.port);
    client.send("anyone?");
    await waitFor(() => h.proxy.stats().dropped === 1, { what: "the datagram to be dropped" });
    expect(h.proxy.stats()).toMatchObject({ flows: 0, created: 0 });
  });

  test("a source the admit hook refuses gets no flow and reaches no endpoint", async () => {
    await using echo = await udpEcho(rt);
    const asked: string[] = [];
    let allow = false;
    await using h = await proxyTo([echo.port], {}, { admit: (address) => (asked.push(address), allow) });
    await using client = await udpClient(rt, h.port);
    client.send("let me in");
    await waitFor(() => h.proxy.stats().refused === 1, { what: "the datagram to be refused" });
    expect(echo.received).toBe(0);
    expect(asked).toEqual(["127.0.0.1"]);
    allow = true;
    expect(await client.exchange("now")).toBe("echo:now");
    // Admitted flows are not asked again per datagram, only after a route change.
    await client.exchange("again");
    expect(asked).toHaveLength(2);
    allow = false;
    h.routeTo([echo.port]);
    client.send("after the ranges changed");
    await waitFor(() => h.proxy.stats().refused === 2, { what: "the flow's datagram to be refused" });
    expect(h.proxy.stats()).toMatchObject({ flows: 0, refused: 2 });
  });

  test("closeAll closes every flow and ignores later datagrams", async () => {
    await using echo = await udpEcho(rt);
    await using h = await proxyTo([echo.port]);
    await using client = await udpClient(rt, h.port);
    await client.exchange("1");
    const upstreamPort = Number(echo.senders[0]!.split(":").at(-1));
    h.proxy.closeAll();
    expect(h.proxy.active()).toBe(0);
    // The flow's upstream socket is closed: its port can be bound again.
    const reuse = await rt.bindUdp({ hostname: "0.0.0.0", port: upstreamPort, onMessage() {} });
    reuse.close();
    h.proxy.onMessage(new TextEncoder().encode("2"), client.port, "127.0.0.1");
    expect(h.proxy.stats()).toMatchObject({ flows: 0, created: 1 });
  });

  test("balancer feedback: a flow begins at creation and ends as success when it expires, is evicted or closed", async () => {
    await using a = await udpEcho(rt, { tag: "a" });
    await using b = await udpEcho(rt, { tag: "b" });
    const calls: string[] = [];
    const balancer = new RoundRobin([endpoint(a.port), endpoint(b.port)], () => 0);
    const recording: Balancer = {
      endpoints: balancer.endpoints,
      pick: (ctx) => balancer.pick(ctx),
      begin: (ep) => void calls.push(`begin ${ep.port}`),
      end: (ep, outcome) => void calls.push(`end ${ep.port} ${outcome}`),
    };
    const ep = entrypoint({ protocol: "udp", endpoints: [a.port, b.port] });
    const ref: RouteRef = { current: { entrypoint: ep, balancer: recording } };
    const proxy = makeUdpProxyFactory(rt.bindUdp)(ref, { ...defaultProxyOptions, udp: { idleTimeoutMs: 150, maxFlows: 2 } });
    const socket = await rt.bindUdp({ hostname: "127.0.0.1", port: 0, onMessage: proxy.onMessage });
    proxy.attach(socket);
    await using _ = { [Symbol.asyncDispose]: async () => (proxy.closeAll(), socket.close()) };
    await using c1 = await udpClient(rt, socket.port);
    expect(await c1.exchange("1")).toBe("a:1");
    expect(await c1.exchange("again")).toBe("a:again");
    expect(calls).toEqual([`begin ${a.port}`]);
    await waitFor(() => proxy.stats().expired === 1, { what: "the flow to expire" });
    expect(calls).toEqual([`begin ${a.port}`, `end ${a.port} success`]);
    calls.length = 0;
    await using c2 = await udpClient(rt, socket.port);
    await using c3 = await udpClient(rt, socket.port);
    await using c4 = await udpClient(rt, socket.port);
    expect(await c2.exchange("2")).toBe("b:2");
    expect(await c3.exchange("3")).toBe("a:3");
    expect(await c4.exchange("4")).toBe("b:4"); // evicts c2's flow
    expect(calls).toEqual([`begin ${b.port}`, `begin ${a.port}`, `end ${b.port} success`, `begin ${b.port}`]);
    proxy.closeAll();
    expect(calls.slice(4).sort()).toEqual([`end ${a.port} success`, `end ${b.port} success`].sort());
  });

  test("a Service's idle timeout applies to the flows of its route; earlier flows keep the proxy's", async () => {
    await using echo = await udpEcho(rt, { tag: "e" });
    await using h = await proxyTo([echo.port], { idleTimeoutMs: 60_000 });
    await using lasting = await udpClient(rt, h.port);
    expect(await lasting.exchange("a")).toBe("e:a");
    h.ref.current = { ...h.ref.current, entrypoint: { ...h.ref.current.entrypoint, policy: { idleTimeoutMs: 150 } } };
    await using short = await udpClient(rt, h.port);
    expect(await short.exchange("b")).toBe("e:b");
    const since = performance.now();
    // The flow created first (least recently active, 60 s timeout) must not stop the sweep before the short one.
    await waitFor(() => h.proxy.stats().expired === 1, { what: "the short flow to expire", timeoutMs: 5_000 });
    const idle = performance.now() - since;
    expect(idle).toBeGreaterThanOrEqual(140);
    // Expected within 150 ms plus two sweeps (37 ms each): ~225 ms. Generous (5x) for a loaded box, and still 50x
    // short of the proxy's 60 s, so it tells the Service's timeout from the proxy's. (`expired`, not `evicted`: the
    // idle sweep closed it.)
    expect(idle).toBeLessThan(1_200);
    expect(h.proxy.active()).toBe(1);
    expect(await lasting.exchange("c")).toBe("e:c");
    expect(h.proxy.stats()).toMatchObject({ created: 2, expired: 1 });
  });

  test("an upstream endpoint on ::1 works (IPv6 upstream socket)", async () => {
    await using echo = await udpEcho(rt, { tag: "six", hostname: "::1" });
    const ref: RouteRef = { current: route(entrypoint({ protocol: "udp", endpoints: [endpoint(echo.port, "::1")] })) };
    const proxy = makeUdpProxyFactory(rt.bindUdp)(ref, defaultProxyOptions);
    const socket = await rt.bindUdp({ hostname: "127.0.0.1", port: 0, onMessage: proxy.onMessage });
    proxy.attach(socket);
    await using _ = { [Symbol.asyncDispose]: async () => (proxy.closeAll(), socket.close()) };
    await using client = await udpClient(rt, socket.port);
    expect(await client.exchange("v6")).toBe("six:v6");
  });
});
