/**
 * TCP proxy hardening with real sockets on 127.0.0.1: balancer feedback (begin/end with outcomes),
 * connect retries, per-Service connect and idle timeouts, and the connection limits at accept.
 */
import { describe, expect, test } from "bun:test";
import { RoundRobin } from "../../../src/balancer/round-robin.ts";
import type { Balancer, Outcome, PickContext } from "../../../src/balancer/types.ts";
import type { Endpoint, Entrypoint, TrafficPolicy } from "../../../src/model/types.ts";
import { createTcpProxy, makeTcpProxyFactory } from "../../../src/proxy/tcp/index.ts";
import { ConnectionBudget, type ListenerProxyFactory, type ProxyOptions } from "../../../src/proxy/types.ts";
import type { Route } from "../../../src/routes/types.ts";
import { withConnectTimeout } from "../../../src/runtime/connect-timeout.ts";
import { rt } from "../../../src/runtime/index.ts";
import { AccessLog } from "../../../src/telemetry/access-log.ts";
import type { Runtime, TcpHandlers } from "../../../src/runtime/types.ts";
import { endpoint, endpointId, type EndpointId, entrypoint } from "../../support/entrypoints.ts";
import { REFUSED_PORT } from "../../support/ports.ts";
import { startTcpProxy } from "../../support/tcp-proxy-harness.ts";
import { connectClient, echoServer, type TestClient } from "../../support/tcp-peers.ts";
import { waitFor } from "../../support/wait.ts";

/** Round robin from the first endpoint that records every begin/end (by {@link endpointId}) and flags unbalanced calls. */
class RecordingBalancer implements Balancer {
  readonly #inner: Balancer;
  readonly begins: EndpointId[] = [];
  readonly ends: { port: EndpointId; outcome: Outcome }[] = [];
  /** Protocol violations: an end without a begin on that endpoint. */
  readonly violations: string[] = [];
  readonly #inFlight = new Map<Endpoint, number>();

  constructor(endpoints: readonly Endpoint[]) {
    this.#inner = new RoundRobin(endpoints, () => 0);
  }

  get endpoints(): readonly Endpoint[] {
    return this.#inner.endpoints;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    return this.#inner.pick(ctx);
  }

  begin(ep: Endpoint): void {
    this.begins.push(endpointId(ep));
    this.#inFlight.set(ep, (this.#inFlight.get(ep) ?? 0) + 1);
  }

  end(ep: Endpoint, outcome: Outcome): void {
    const n = this.#inFlight.get(ep) ?? 0;
    if (n <= 0) this.violations.push(`end(${endpointId(ep)}, ${outcome}) without begin`);
    this.#inFlight.set(ep, n - 1);
    this.ends.push({ port: endpointId(ep), outcome });
  }

  /** Begun and not yet ended, over all endpoints. */
  get inFlight(): number {
    let n = 0;
    for (const v of this.#inFlight.values()) n += v;
    return n;
  }

  /** Outcomes reported for the endpoint `port` (an {@link EndpointId}), counted. */
  outcomes(port: EndpointId): Partial<Record<Outcome, number>> {
    const out: Partial<Record<Outcome, number>> = {};
    for (const e of this.ends) if (e.port === port) out[e.outcome] = (out[e.outcome] ?? 0) + 1;
    return out;
  }
}

/** A route over `ports` (on 127.0.0.1) or endpoints with a recording balancer and an optional per-Service policy. */
function recordedRoute(ports: readonly (number | Endpoint)[], policy?: TrafficPolicy): Route & { readonly balancer: RecordingBalancer } {
  const ep: Entrypoint = { ...entrypoint({ endpoints: ports }), ...(policy !== undefined ? { policy } : {}) };
  return { entrypoint: ep, balancer: new RecordingBalancer(ep.cluster.serving) };
}

/** A proxy on 127.0.0.1:0 for `route`. */
function startProxy(route: Route, options: Partial<ProxyOptions> = {}, factory: ListenerProxyFactory = createTcpProxy) {
  return startTcpProxy(route, { connectTimeoutMs: 2_000, ...options }, factory);
}

/** An ASCII payload of `n` bytes, different per `seed`. */
function payload(n: number, seed: number): string {
  let s = "";
  let x = seed * 2654435761 + 1;
  while (s.length < n) {
    x = (x * 1103515245 + 12345) >>> 0;
    s += String.fromCharCode(33 + (x % 94));
  }
  return s;
}

/** Echo `data` through a fresh connection to `port`; resolves with what came back. */
async function echoThrough(port: number, data: string): Promise<string> {
  await using c = await connectClient(rt, port);
  await c.send(data);
  await c.receivedAtLeast(data.length);
  return c.text();
}

/** Resolves when `c` is closed by the other side, with how long that took from `since`. */
async function closedAfter(c: TestClient, since: number): Promise<number> {
  await c.closed;
  return performance.now() - since;
}

/** An upstream that resets every connection on its first byte. */
function resettingUpstream() {
  const handlers: TcpHandlers<unknown> = { data: (s) => s.terminate() };
  const listener = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers });
  return { port: listener.port, [Symbol.asyncDispose]: async () => listener.stop(true) };
}

describe("TCP proxy: balancer feedback and retries", () => {
  test("connect refused on one of two endpoints: every connection succeeds, data intact, feedback balanced", async () => {
    const refused = REFUSED_PORT;
    await using echo = echoServer(rt);
    const route = recordedRoute([refused, echo.port]);
    await using p = startProxy(route);
    const n = 12;
    const sent = Array.from({ length: n }, (_, i) => payload(48 * 1024 + i, i));
    const got = await Promise.all(sent.map((data) => echoThrough(p.port, data)));
    expect(got).toEqual(sent);
    expect(echo.accepted).toBe(n);
    await waitFor(() => p.proxy.active() === 0 && route.balancer.inFlight === 0, { what: "every connection to be settled" });
    const b = route.balancer;
    expect(b.violations).toEqual([]);
    expect(b.begins.length).toBe(b.ends.length);
    expect(b.outcomes(echo.port)).toEqual({ success: n });
    // Round robin from the refused endpoint: about half of the connections tried it first, each once.
    const failures = b.outcomes(refused)["connect-failure"] ?? 0;
    expect(failures).toBeGreaterThanOrEqual(n / 2 - 1);
    expect(b.outcomes(refused)).toEqual({ "connect-failure": failures });
  });

  test("attempts are bounded by connectAttempts, each settled as a connect failure, and the client is closed", async () => {
    // Three distinct endpoints that refuse: port 1 on 127.0.0.1, .2 and .3.
    const dead = [1, 2, 3].map((n) => endpoint(REFUSED_PORT, `127.0.0.${n}`));
    const ports = dead.map(endpointId);
    expect(new Set(ports).size).toBe(3);
    const route = recordedRoute(dead);
    await using p = startProxy(route, { connectAttempts: 2 });
    await using c = await connectClient(rt, p.port);
    await c.send("hello");
    await c.closed;
    expect(c.received).toBe(0);
    await waitFor(() => p.proxy.active() === 0, { what: "the connection to be released" });
    expect(route.balancer.begins).toEqual([ports[0]!, ports[1]!]);
    expect(route.balancer.ends).toEqual([
      { port: ports[0]!, outcome: "connect-failure" },
      { port: ports[1]!, outcome: "connect-failure" },
    ]);
  });

  test("an upstream reset and a client reset end as success", async () => {
    await using reset = resettingUpstream();
    await using echo = echoServer(rt);
    const route = recordedRoute([reset.port]);
    await using p = startProxy(route);
    await using c1 = await connectClient(rt, p.port);
    await c1.send("boom");
    await c1.closed;
    p.ref.current = recordedRoute([echo.port]);
    await using c2 = await connectClient(rt, p.port);
    expect(await c2.exchange("hi", 2)).toBe("hi");
    c2.socket.terminate();
    await waitFor(() => p.proxy.active() === 0 && echo.open === 0, { what: "both connections to be released" });
    const second = p.ref.current.balancer as RecordingBalancer;
    expect(route.balancer.ends).toEqual([{ port: reset.port, outcome: "success" }]);
    expect(second.ends).toEqual([{ port: echo.port, outcome: "success" }]);
    expect([route.balancer.inFlight, second.inFlight]).toEqual([0, 0]);
  });

  test("a client that leaves while its upstream connect is in flight: the late connection is closed, the attempt ends as success", async () => {
    await using echo = echoServer(rt);
    const gate = Promise.withResolvers<void>();
    const started = Promise.withResolvers<void>();
    const connect: Runtime["connectTcp"] = async (o) => (started.resolve(), await gate.promise, rt.connectTcp(o));
    const route = recordedRoute([echo.port]);
    await using p = startProxy(route, {}, makeTcpProxyFactory(connect));
    await using c = await connectClient(rt, p.port);
    await started.promise;
    c.socket.terminate();
    await c.closed;
    expect(route.balancer.inFlight).toBe(1);
    gate.resolve();
    await waitFor(() => p.proxy.active() === 0 && route.balancer.inFlight === 0, { what: "the attempt to be settled" });
    expect(route.balancer.ends).toEqual([{ port: echo.port, outcome: "success" }]);
    await waitFor(() => echo.accepted === 1 && echo.open === 0, { what: "the late upstream connection to be closed" });
  });
});

describe("TCP proxy: per-Service timeouts", () => {
  test("the Service's connect timeout applies per attempt (not the gateway's), then the next endpoint is tried", async () => {
    // A connect that never completes (a blackholed SYN), failed by the runtime's own timeout helper. Its address
    // (TEST-NET-1) is never dialled: the connect below recognises it.
    const blackhole = endpoint(REFUSED_PORT, "192.0.2.1");
    const timeouts: (number | undefined)[] = [];
    const connect: Runtime["connectTcp"] = (o) => {
      timeouts.push(o.timeoutMs);
      return o.hostname === blackhole.address ? withConnectTimeout(new Promise<never>(() => {}), o, () => {}) : rt.connectTcp(o);
    };
    await using echo = echoServer(rt);
    const route = recordedRoute([blackhole, echo.port], { connectTimeoutMs: 150 });
    await using p = startProxy(route, { connectTimeoutMs: 30_000 }, makeTcpProxyFactory(connect));
    const t0 = performance.now();
    await using c = await connectClient(rt, p.port);
    expect(await c.exchange("late", 4)).toBe("late");
    const took = performance.now() - t0;
    // The Service's 150 ms was handed to each connect, and the blackholed one failed by it.
    expect(timeouts).toEqual([150, 150]);
    expect(route.balancer.outcomes(endpointId(blackhole))).toEqual({ "connect-failure": 1 });
    expect(took).toBeGreaterThanOrEqual(140);
    // Generous for a loaded box (~150 ms expected): it tells the Service's 150 ms from the gateway's 30 s by 10x.
    expect(took).toBeLessThan(3_000);
    c.end();
    await c.closed;
    await waitFor(() => route.balancer.inFlight === 0, { what: "the connection to be settled" });
    expect(route.balancer.outcomes(echo.port)).toEqual({ success: 1 });
  });

  test("the Service's idle timeout closes its idle connections; other routes keep the gateway default", async () => {
    await using echo = echoServer(rt);
    const closes: string[] = [];
    const accessLog = new AccessLog({ write: (lines) => void closes.push(...lines.split("\n").map((l) => String((JSON.parse(l) as { close?: unknown }).close))), flushMs: 60_000 });
    // Gateway default: 60 s (a 1 s sweep); the Service asks for 200 ms.
    await using p = startProxy(recordedRoute([echo.port]), { idleTimeoutMs: 60_000, telemetry: { accessLog } });
    await using lasting = await connectClient(rt, p.port);
    expect(await lasting.exchange("a", 1)).toBe("a");
    p.ref.current = recordedRoute([echo.port], { idleTimeoutMs: 200 });
    await using short = await connectClient(rt, p.port);
    expect(await short.exchange("b", 1)).toBe("b");
    const idle = await closedAfter(short, performance.now());
    // Closed by the idle sweep, after the Service's timeout.
    await waitFor(() => (accessLog.flush(), closes.length > 0), { what: "the connection's access log line" });
    expect(closes).toEqual(["idle_timeout"]);
    expect(idle).toBeGreaterThanOrEqual(190);
    // Expected within 200 ms plus two 50 ms sweeps; generous (5x) for a loaded box, and still 40x short of the
    // gateway's 60 s, so it tells the two timeouts apart.
    expect(idle).toBeLessThan(1_500);
    expect(lasting.isClosed).toBe(false);
    expect(await lasting.exchange("c", 1)).toBe("c");
  });

  test("a Service idle timeout of 0 disables it under a short gateway default", async () => {
    await using echo = echoServer(rt);
    await using p = startProxy(recordedRoute([echo.port], { idleTimeoutMs: 0 }), { idleTimeoutMs: 100 });
    await using kept = await connectClient(rt, p.port);
    expect(await kept.exchange("x", 1)).toBe("x");
    p.ref.current = recordedRoute([echo.port]);
    await using timed = await connectClient(rt, p.port);
    expect(await timed.exchange("y", 1)).toBe("y");
    await timed.closed;
    expect(kept.isClosed).toBe(false);
    expect(await kept.exchange("z", 1)).toBe("z");
  });
});

describe("TCP proxy: connection limits", () => {
  test("maxConnectionsPerListener closes connections over the limit at once, before any upstream connect", async () => {
    await using echo = echoServer(rt);
    const route = recordedRoute([echo.port]);
    const errors: string[] = [];
    const traffic = { request() {}, connectDuration() {}, connOpened() {}, connClosed() {}, bytes() {}, error: (reason: string) => void errors.push(reason) };
    await using p = startProxy(route, { maxConnectionsPerListener: 2, telemetry: { traffic: () => traffic } });
    await using c1 = await connectClient(rt, p.port);
    await using c2 = await connectClient(rt, p.port);
    expect(await c1.exchange("1", 1)).toBe("1");
    expect(await c2.exchange("2", 1)).toBe("2");
    await using over = await connectClient(rt, p.port);
    await over.closed;
    expect(over.received).toBe(0);
    expect(echo.accepted).toBe(2);
    expect(p.proxy.active()).toBe(2);
    expect(errors).toEqual(["connection_limit"]);
    c1.end();
    await c1.closed;
    await waitFor(() => p.proxy.active() === 1, { what: "a slot to be freed" });
    await using c3 = await connectClient(rt, p.port);
    expect(await c3.exchange("3", 1)).toBe("3");
    expect(route.balancer.begins.length).toBe(3);
  });

  test("the gateway-wide budget is shared by listeners and refuses beyond its max", async () => {
    await using echo = echoServer(rt);
    const budget = new ConnectionBudget(3);
    await using a = startProxy(recordedRoute([echo.port]), { connections: budget });
    await using b = startProxy(recordedRoute([echo.port]), { connections: budget });
    await using a1 = await connectClient(rt, a.port);
    await using a2 = await connectClient(rt, a.port);
    await using b1 = await connectClient(rt, b.port);
    for (const c of [a1, a2, b1]) expect(await c.exchange("k", 1)).toBe("k");
    expect(budget.active).toBe(3);
    await using overA = await connectClient(rt, a.port);
    await using overB = await connectClient(rt, b.port);
    await Promise.all([overA.closed, overB.closed]);
    expect([overA.received, overB.received]).toEqual([0, 0]);
    expect(budget.refused).toBe(2);
    expect(budget.active).toBe(3);
    b1.socket.terminate();
    await waitFor(() => budget.active === 2, { what: "the slot to be released" });
    await using a3 = await connectClient(rt, a.port);
    expect(await a3.exchange("m", 1)).toBe("m");
    expect(budget.active).toBe(3);
  });

  test("after mixed outcomes the budget returns to 0 and every begin has its end", async () => {
    const refused = REFUSED_PORT;
    await using echo = echoServer(rt);
    await using reset = resettingUpstream();
    const budget = new ConnectionBudget(100);
    const retrying = recordedRoute([refused, echo.port]);
    const failing = recordedRoute([refused]);
    const resetting = recordedRoute([reset.port]);
    const idle = recordedRoute([echo.port], { idleTimeoutMs: 100 });
    const empty = recordedRoute([]);
    await using p = startProxy(retrying, { connections: budget, maxConnectionsPerListener: 4 });
    await using q = startProxy(failing, { connections: budget });

    // Successes, one through a retry.
    for (let i = 0; i < 3; i++) expect(await echoThrough(p.port, `ok${i}`)).toBe(`ok${i}`);
    // Over the listener limit while 4 are open.
    const held = await Promise.all([0, 1, 2, 3].map(() => connectClient(rt, p.port)));
    for (const c of held) expect(await c.exchange("h", 1)).toBe("h");
    await using over = await connectClient(rt, p.port);
    await over.closed;
    // A client reset, and clean closes of the rest.
    held[0]!.socket.terminate();
    for (const c of held.slice(1)) c.end();
    await Promise.all(held.map((c) => c.closed));
    // Every attempt refused.
    await using dead = await connectClient(rt, q.port);
    await dead.closed;
    // An upstream reset, an idle timeout and no endpoints, on swapped routes.
    q.ref.current = resetting;
    await using r = await connectClient(rt, q.port);
    await r.send("x");
    await r.closed;
    q.ref.current = idle;
    await using i = await connectClient(rt, q.port);
    expect(await i.exchange("i", 1)).toBe("i");
    await i.closed;
    q.ref.current = empty;
    await using e = await connectClient(rt, q.port);
    await e.closed;

    await waitFor(() => budget.active === 0 && p.proxy.active() === 0 && q.proxy.active() === 0, { what: "every slot to be released" });
    expect(budget.refused).toBe(0);
    for (const route of [retrying, failing, resetting, idle, empty]) {
      expect(route.balancer.violations).toEqual([]);
      expect(route.balancer.inFlight).toBe(0);
      expect(route.balancer.begins.length).toBe(route.balancer.ends.length);
    }
    expect(retrying.balancer.outcomes(echo.port)).toEqual({ success: 7 });
    expect(failing.balancer.outcomes(refused)).toEqual({ "connect-failure": 1 });
    expect(resetting.balancer.outcomes(reset.port)).toEqual({ success: 1 });
    expect(empty.balancer.begins).toEqual([]);
    // The connection refused at the listener limit never reached a balancer.
    expect(retrying.balancer.begins.filter((port) => port === echo.port)).toHaveLength(7);
  });
});
