/**
 * The UDP data plane: a flow table keyed by client `address|port`. The first datagram of a client
 * creates a flow: an endpoint picked by the route's balancer and an upstream socket bound to an
 * ephemeral port, which talks to that endpoint only. Datagrams from the client go out of the
 * flow's upstream socket; the endpoint's replies come back on it and leave through the listener
 * socket, so the client sees them from the address it sent to (kube-proxy's userspace proxier did
 * the same).
 *
 * - Idle flows are closed by one sweep timer per proxy (no per-datagram timers). The table is kept
 *   in approximate least-recently-active order (a flow moves to the end at most once per sweep
 *   tick), so the sweep stops at the first flow too recent to expire under the smallest idle timeout
 *   in the table, and eviction takes the first one. A Service's `idleTimeoutMs` policy (annotation
 *   `kubegate.io/idle-timeout`) overrides the proxy's idle timeout for the flows it creates.
 * - The table is bounded: a new flow beyond `maxFlows` evicts the least recently active one.
 * - Endpoint changes: new flows read `ref.current`; an existing flow checks its endpoint only when
 *   the route changed since its last datagram, and is re-created towards a current endpoint when
 *   its own left the route.
 * - Balancer feedback: a flow is one `begin(endpoint)` at creation and one `end(endpoint, "success")`
 *   when it closes (expiry, eviction, repointing, shutdown): UDP has no connect to fail.
 *
 * Takes `bindUdp` as a parameter (no runtime import), like the TCP proxy; `index.ts` binds it.
 */
import type { Balancer } from "../../balancer/types.ts";
import type { Endpoint } from "../../model/types.ts";
import { canonicalIP, ipFamily } from "../../model/net.ts";
import { rateLimited, silentLogger } from "../../log.ts";
import type { UdpSocket } from "../../runtime/types.ts";
import type { ServiceTraffic } from "../../telemetry/metrics/traffic.ts";
import { routeTraffic } from "../types.ts";
import type { Route, RouteRef } from "../../routes/types.ts";
import {
  defaultUdpIdleTimeoutMs,
  defaultUdpMaxFlows,
  defaultUdpMaxPendingDatagrams,
  type UdpListenerProxy,
  type UdpProxyFactory,
  type UdpProxyHooks,
  type UdpProxySettings,
} from "./types.ts";

/** Coarsest resolution of the idle sweep. */
const MAX_SWEEP_INTERVAL_MS = 1_000;

interface Flow {
  /** `${clientAddress}|${clientPort}`. */
  readonly key: string;
  readonly clientAddress: string;
  readonly clientPort: number;
  /** The route last seen by this flow (a different `ref.current` means: check the endpoint again). */
  route: Route;
  /** The balancer that picked the endpoint (and got `begin`): the one to `end` it. */
  readonly balancer: Balancer;
  readonly endpoint: Endpoint;
  /** The endpoint address in canonical form, to recognise replies. */
  readonly upstreamAddress: string;
  /** Unset while binding. */
  socket: UdpSocket | undefined;
  /** Datagrams from the client waiting for the upstream socket. */
  readonly pending: Uint8Array[];
  closed: boolean;
  /** Coarse time of the last datagram either way. */
  last: number;
  /** Idle timeout of this flow, ms (0: none). */
  readonly idleMs: number;
  /** The metrics handle of the route the flow started on (undefined: no metrics). */
  readonly traffic: ServiceTraffic | undefined;
  /** Bytes from / to the client. */
  rx: number;
  tx: number;
  /** Why the flow ended (access log). */
  why: string;
  /** performance.now() at the flow's start (0: no telemetry). */
  readonly durationStart: number;
}

/**
 * Build a {@link UdpProxyFactory} whose flows bind their upstream sockets with `bindUdp` (as `makeTcpProxyFactory`
 * takes `connectTcp`).
 *
 * @example
 * const factory = makeUdpProxyFactory(rt.bindUdp);
 * const proxy = factory({ current: route }, { ...defaultProxyOptions, udp: { idleTimeoutMs: 30_000 } });
 * proxy.attach(await rt.bindUdp({ hostname: "127.0.0.1", port: 30053, onMessage: proxy.onMessage }));
 */
export function makeUdpProxyFactory(bindUdp: UdpProxySettings["bindUdp"]): UdpProxyFactory {
  return (ref, options, hooks = {}) => createProxy(ref, hooks, { bindUdp, ...options.udp, log: options.log, telemetry: options.telemetry });
}

function createProxy(ref: RouteRef, hooks: UdpProxyHooks, settings: UdpProxySettings): UdpListenerProxy {
  const idleMs = settings.idleTimeoutMs ?? defaultUdpIdleTimeoutMs;
  const maxFlows = Math.max(1, settings.maxFlows ?? defaultUdpMaxFlows);
  const maxPending = Math.max(1, settings.maxPendingDatagrams ?? defaultUdpMaxPendingDatagrams);
  /** The sweep's interval (0: no sweeper): a quarter of the smallest idle timeout in the table, 10 ms..1 s. */
  let sweepMs = 0;
  /** The smallest idle timeout among the flows in the table (Infinity: none expires). */
  let minIdleMs = Infinity;
  /** The idle timeout of the last route a flow was created on (resolved once per route). */
  let idleRoute: Route | undefined;
  let routeIdleMs = idleMs;
  const warn = rateLimited((settings.log ?? silentLogger).warn, 10_000);
  const { bindUdp } = settings;
  const admit = hooks.admit;
  const tel = settings.telemetry;
  const accessLog = tel?.accessLog;

  /** In approximate least-recently-active order (see `touch`). */
  const flows = new Map<string, Flow>();
  /** Endpoint keys per route, built on the first check against that route. */
  const endpointKeys = new WeakMap<Route, Set<string>>();
  let listener: UdpSocket | undefined;
  let closed = false;
  let clock = performance.now();
  let sweeper: ReturnType<typeof setInterval> | undefined;
  let created = 0;
  let expired = 0;
  let evicted = 0;
  let repointed = 0;
  let refused = 0;
  let dropped = 0;

  function sweep(): void {
    clock = performance.now();
    // `last` lags real activity by up to one interval, so wait one more before calling it idle.
    const now = clock - sweepMs;
    // Flows are in least-recently-active order: none after one this recent can have expired.
    const horizon = now - minIdleMs;
    for (const f of flows.values()) {
      if (f.last > horizon) break;
      if (f.idleMs === 0 || f.last + f.idleMs > now) continue;
      expired++;
      f.why = "idle_timeout";
      close(f);
    }
  }

  /** Sweep often enough for a flow with idle timeout `ms`. */
  function sweepFor(ms: number): void {
    if (ms === 0) return;
    if (ms < minIdleMs) minIdleMs = ms;
    const want = Math.max(10, Math.min(MAX_SWEEP_INTERVAL_MS, Math.floor(ms / 4)));
    if (sweeper !== undefined && want >= sweepMs) return;
    if (sweeper !== undefined) clearInterval(sweeper);
    sweepMs = want;
    sweeper = setInterval(sweep, want);
  }

  function stopSweep(): void {
    if (sweeper !== undefined) clearInterval(sweeper);
    sweeper = undefined;
    sweepMs = 0;
    minIdleMs = Infinity;
  }

  function close(f: Flow): void {
    if (f.closed) return;
    f.closed = true;
    f.pending.length = 0;
    if (flows.get(f.key) === f) flows.delete(f.key);
    f.socket?.close();
    f.balancer.end(f.endpoint, "success");
    if (flows.size === 0) stopSweep();
    if (tel !== undefined) finish(f);
  }

  /** The flow is over: metrics and access log. */
  function finish(f: Flow): void {
    const t = f.traffic;
    if (t !== undefined) {
      t.bytes(f.rx, f.tx);
      t.connClosed();
    }
    if (accessLog !== undefined) {
      const ep = f.endpoint;
      accessLog.stream({
        protocol: "udp",
        entrypoint: f.route.entrypoint.name,
        client: f.clientAddress,
        endpoint: ep.address.includes(":") ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`,
        bytesIn: f.rx,
        bytesOut: f.tx,
        durationMs: f.durationStart === 0 ? 0 : performance.now() - f.durationStart,
        close: f.why || "closed",
        traceId: "",
      });
    }
  }

  /** Mark activity; moves the flow to the end of the table once per clock tick. */
  function touch(f: Flow): void {
    if (f.last === clock) return;
    f.last = clock;
    flows.delete(f.key);
    flows.set(f.key, f);
  }

  function serves(route: Route, ep: Endpoint): boolean {
    let keys = endpointKeys.get(route);
    if (keys === undefined) {
      keys = new Set(route.balancer.endpoints.map((e) => `${e.address}|${e.port}`));
      endpointKeys.set(route, keys);
    }
    return keys.has(`${ep.address}|${ep.port}`);
  }

  function open(key: string, clientAddress: string, clientPort: number, route: Route): Flow | undefined {
    const endpoint = route.balancer.pick({ clientAddress });
    if (endpoint === undefined) {
      routeTraffic(tel, route)?.error("no_endpoints");
      return undefined;
    }
    if (flows.size >= maxFlows) {
      const oldest = flows.values().next().value;
      if (oldest !== undefined) {
        evicted++;
        oldest.why = "evicted";
        close(oldest);
      }
    }
    // The clock only ticks while flows exist.
    if (flows.size === 0) clock = performance.now();
    if (route !== idleRoute) {
      idleRoute = route;
      const policyMs = route.entrypoint.policy?.idleTimeoutMs;
      routeIdleMs = policyMs !== undefined && Number.isFinite(policyMs) && policyMs >= 0 ? policyMs : idleMs;
    }
    sweepFor(routeIdleMs);
    const f: Flow = {
      key,
      clientAddress,
      clientPort,
      route,
      balancer: route.balancer,
      endpoint,
      upstreamAddress: canonicalIP(endpoint.address) ?? endpoint.address,
      socket: undefined,
      pending: [],
      closed: false,
      last: clock,
      idleMs: routeIdleMs,
      traffic: routeTraffic(tel, route),
      rx: 0,
      tx: 0,
      why: "",
      durationStart: tel === undefined ? 0 : performance.now(),
    };
    f.balancer.begin(endpoint);
    f.traffic?.connOpened();
    flows.set(key, f);
    created++;
    bindUdp({
      hostname: ipFamily(endpoint.address) === 6 ? "::" : "0.0.0.0",
      port: 0,
      onMessage: (data, port, address) => reply(f, data, port, address),
    }).then(
      (socket) => {
        if (f.closed) return socket.close();
        f.socket = socket;
        for (const d of f.pending) if (!socket.send(d, endpoint.port, endpoint.address)) dropped++;
        f.pending.length = 0;
      },
      (err: unknown) => {
        if (f.closed) return;
        dropped += f.pending.length;
        f.why = "bind_failed";
        warn("bind", "Cannot bind an upstream UDP socket: datagrams dropped", {
          endpoint: `${endpoint.address}:${endpoint.port}`,
          error: err instanceof Error ? err.message : String(err),
        });
        close(f);
      },
    );
    return f;
  }

  /** A datagram from the endpoint: back to the client, from the listener socket. */
  function reply(f: Flow, data: Uint8Array, port: number, address: string): void {
    if (f.closed) return;
    if (port !== f.endpoint.port || (address !== f.upstreamAddress && canonicalIP(address) !== f.upstreamAddress)) {
      // Not from our endpoint (the ephemeral port is reachable by anyone): ignore.
      dropped++;
      return;
    }
    touch(f);
    f.tx += data.length;
    if (listener === undefined || !listener.send(data, f.clientPort, f.clientAddress)) dropped++;
  }

  const onMessage = (data: Uint8Array, port: number, address: string): void => {
    if (closed) return;
    const key = `${address}|${port}`;
    const route = ref.current;
    let f = flows.get(key);
    let admitted = false;
    if (f !== undefined && f.route !== route) {
      if (admit !== undefined && !admit(address)) {
        refused++;
        f.why = "source_refused";
        close(f);
        return;
      }
      admitted = true;
      if (serves(route, f.endpoint)) f.route = route;
      else {
        repointed++;
        f.why = "endpoint_removed";
        close(f);
        f = undefined;
      }
    }
    if (f === undefined) {
      if (!admitted && admit !== undefined && !admit(address)) {
        refused++;
        return;
      }
      f = open(key, address, port, route);
      if (f === undefined) {
        dropped++;
        return;
      }
    } else touch(f);
    f.rx += data.length;
    const socket = f.socket;
    if (socket === undefined) {
      if (f.pending.length < maxPending) f.pending.push(data);
      else dropped++;
      return;
    }
    if (!socket.send(data, f.endpoint.port, f.endpoint.address)) dropped++;
  };

  return {
    onMessage,
    attach(socket) {
      listener = socket;
    },
    active: () => flows.size,
    stats: () => ({ flows: flows.size, created, expired, evicted, repointed, refused, dropped }),
    drain: () => Promise.resolve(),
    closeAll() {
      closed = true;
      for (const f of [...flows.values()]) {
        f.why ||= "shutdown";
        close(f);
      }
      stopSweep();
    },
  };
}
