/**
 * The TCP data plane: one downstream connection -> one upstream connection to an endpoint chosen
 * by the route's balancer, bytes copied both ways with backpressure and half-close.
 *
 * This module takes `connectTcp` as a parameter (no runtime import) so it runs unchanged on Bun
 * and on Deno; `index.ts` binds it to the current runtime.
 *
 * The hot path (`data`/`drain` handlers) allocates nothing per chunk unless a write is short: a
 * short write keeps the remainder (one subarray view), pauses the source and waits for `drain`.
 * So each direction holds at most a chunk or two in user space; the rest stays in the kernel's
 * socket buffers, which is what throttles the sender.
 *
 * Entrypoints with `proxyProtocol: "v2"` send a PROXY protocol v2 header (client and listener addresses)
 * to the upstream before the client's first byte (see `proxy-protocol.ts`).
 *
 * Hardening (see docs/tcp-proxy.md):
 * - Balancer feedback: each connect attempt is a `begin(ep)`, settled by exactly one `end(ep, outcome)`:
 *   `connect-failure` when the attempt fails or times out (the next attempt goes to another endpoint,
 *   at most `connectAttempts` in all), `success` when the proxied connection closes.
 * - Per-Service `connectTimeoutMs`/`idleTimeoutMs` from the entrypoint's policy, resolved once per Route.
 * - Limits at accept: `maxConnectionsPerListener` and the gateway-wide `connections` budget; a connection
 *   over either is closed at once (never reaches the balancer). The budget slot is released exactly once.
 * - Idle timeout: one coarse sweep timer per proxy (interval a quarter of the smallest idle timeout in
 *   use, 10 ms..1 s), no per-connection timer and nothing per chunk but one field store.
 *
 * Memory: a listener that never had a connection costs one {@link TcpProxy}, its handlers object and one
 * `open` closure. Every other handler is a module-level function shared by all listeners (the listener is
 * reached through `socket.data`, the {@link Pipe}); the connection set is allocated on the first connection.
 */
import type { Span } from "@opentelemetry/api";
import type { Endpoint } from "../../model/types.ts";
import type { Outcome, PickContext } from "../../balancer/types.ts";
import type { Runtime, TcpHandlers, TcpSocket } from "../../runtime/types.ts";
import type { ProxyErrorReason, ServiceTraffic } from "../../telemetry/metrics/traffic.ts";
import { SPAN_KIND_SERVER, SPAN_STATUS_ERROR } from "../../telemetry/tracing/types.ts";
import { type ListenerProxy, type ListenerProxyFactory, type ProxyOptions, routeTraffic } from "../types.ts";
import type { Route, RouteRef } from "../../routes/types.ts";
import { proxyV2Header } from "./proxy-protocol.ts";
import type { DialEndpoint, Via } from "../endpoint-access.ts";

/** Bytes a downstream may send before its upstream is connected; past this the downstream is paused. */
export const PRECONNECT_BUFFER_BYTES = 64 * 1024;

/** Coarsest resolution of the idle sweep (one timer per proxy, not per connection). */
const MAX_SWEEP_INTERVAL_MS = 1_000;

/** The sweep interval that detects an idle timeout of `idleMs` within about a quarter of it. */
function sweepIntervalFor(idleMs: number): number {
  return Math.max(10, Math.min(MAX_SWEEP_INTERVAL_MS, Math.floor(idleMs / 4)));
}

/** What a connection takes from its route: the gateway defaults overridden by the Service's policy. */
interface RouteSettings {
  /** Per connect attempt, ms (0: no limit). */
  readonly connectTimeoutMs: number;
  /** 0: connections of this route never time out idle. */
  readonly idleTimeoutMs: number;
}

/** The settings of `route` under the gateway-wide `options` (absent or invalid policy values take the default). */
function routeSettings(route: Route, options: ProxyOptions): RouteSettings {
  const policy = route.entrypoint.policy;
  return {
    connectTimeoutMs: msOr(policy?.connectTimeoutMs, options.connectTimeoutMs),
    idleTimeoutMs: msOr(policy?.idleTimeoutMs, options.idleTimeoutMs),
  };
}

function msOr(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value >= 0 ? value : fallback;
}

/** Per-connection state, shared as `socket.data` by the downstream and the upstream socket. */
interface Pipe {
  /** The listener's proxy. */
  readonly proxy: TcpProxy;
  readonly down: TcpSocket<Pipe>;
  /** Set when the upstream is connected (never before: events of abandoned attempts are ignored). */
  up: TcpSocket<Pipe> | undefined;
  /** The route read when the connection was accepted; kept for the connection's life. */
  readonly route: Route;
  /** Its idle timeout, ms (0: none). */
  readonly idleMs: number;
  /** The endpoint of the balancer `begin` not yet settled by an `end` (the attempt in flight, or the connected one). */
  begun: Endpoint | undefined;
  /** Bytes for the upstream not yet accepted by it (before connect, or the rest of a short write). */
  readonly toUp: Uint8Array[];
  /** Bytes for the downstream not yet accepted by it (the rest of a short write). */
  readonly toDown: Uint8Array[];
  /** Bytes in `toUp` while connecting (bounds the pre-connect buffer). */
  preconnectBytes: number;
  downPaused: boolean;
  upPaused: boolean;
  /** FIN received from the downstream / upstream. */
  downFin: boolean;
  upFin: boolean;
  /** FIN sent to the downstream / upstream (after everything before it was written). */
  downShut: boolean;
  upShut: boolean;
  downClosed: boolean;
  upClosed: boolean;
  /** A connect attempt is in flight. */
  connecting: boolean;
  /** Aborted: both sides terminated (or being terminated). */
  dead: boolean;
  /** Coarse time of the last byte either way (see the idle sweep). */
  last: number;
  // Telemetry: only kept up when the proxy has some.
  /** The route's metrics handle (undefined: no metrics). */
  readonly traffic: ServiceTraffic | undefined;
  /** Bytes from / to the client. */
  rx: number;
  tx: number;
  /** performance.now() at accept (0: no telemetry). */
  readonly t0: number;
  /** The client's address, read at accept for the access log ("" without one: it may be unreadable at close). */
  readonly client: string;
  /** The connected endpoint. */
  endpoint: Endpoint | undefined;
  /** Why the connection ended, first cause wins. */
  why: string;
  span: Span | undefined;
}

/** `socket.data` of a connection refused at accept (over a connection limit): its events are ignored. */
const REFUSED = Object.freeze({}) as Pipe;

/**
 * What the balancer sees of a connection. The client address is read only when a balancer asks for it
 * (affinity, consistent hashing): on Bun, the first read of `remoteAddress` is a getpeername syscall.
 */
class ConnectionPick implements PickContext {
  exclude: Set<Endpoint> | undefined = undefined;
  constructor(private readonly down: TcpSocket<Pipe>) {}
  get clientAddress(): string {
    return this.down.remoteAddress;
  }
}

/** Record the first cause of a connection's end. */
function because(p: Pipe, why: string): void {
  if (p.why === "") p.why = why;
}

/**
 * Coarse clock shared by all proxies, ms: refreshed at accept and by every idle sweep, so it lags real time by
 * at most the running sweep's interval. Only a store per chunk (`p.last = clock`) reads it.
 */
let clock = Date.now();

/** Close reasons that mark a connection's span as an error. */
const ERROR_CLOSE: ReadonlySet<string> = new Set(["no_endpoints", "connect_failed", "connect_timeout", "upstream_reset", "client_reset"]);

/** Write queued chunks in order. Returns 1 when all were written, 0 on a short write, -1 when `dst` is closed. */
function flush(queue: Uint8Array[], dst: TcpSocket<Pipe>): 1 | 0 | -1 {
  while (queue.length !== 0) {
    const chunk = queue[0]!;
    const n = dst.write(chunk);
    if (n === chunk.length) {
      queue.shift();
      continue;
    }
    if (n < 0) return -1;
    if (n > 0) queue[0] = chunk.subarray(n);
    return 0;
  }
  return 1;
}

/**
 * Build a TCP {@link ListenerProxyFactory} that opens upstream connections with `connectTcp` to the endpoint's
 * address, or with `dial` when given (`--endpoint-access`, `endpoint-access.ts`).
 *
 * @example
 * const factory = makeTcpProxyFactory(rt.connectTcp);
 * const proxy = factory({ current: route }, defaultProxyOptions);
 * rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
 */
export function makeTcpProxyFactory(connectTcp: Runtime["connectTcp"], dial?: DialEndpoint, via?: (ep: Endpoint) => Via): ListenerProxyFactory {
  const d: DialEndpoint = dial ?? ((ep, o) => connectTcp({ hostname: ep.address, port: ep.port, handlers: o.handlers, data: o.data, timeoutMs: o.timeoutMs }));
  return (ref, options) => new TcpProxy(ref, options, d, via);
}

/** One listener's TCP proxy (see the module doc). Per-connection work lives in module-level functions. */
class TcpProxy implements ListenerProxy {
  readonly handlers: TcpHandlers<unknown>;
  /** Open connections (allocated on the first one). */
  pipes: Set<Pipe> | undefined = undefined;
  readonly tel: ProxyOptions["telemetry"];
  /** Tracing, when on and roots are sampled. */
  readonly tracing: NonNullable<ProxyOptions["telemetry"]>["tracing"];
  /** Count bytes per connection (metrics or access log or spans need them). */
  readonly counting: boolean;
  sweeper: ReturnType<typeof setInterval> | undefined = undefined;
  /** The sweep's interval (0: no sweeper): a quarter of the smallest idle timeout among tracked pipes, 10 ms..1 s. */
  sweepMs = 0;
  drained: PromiseWithResolvers<void> | undefined = undefined;
  /** Settings of the last route seen at accept (routes change per snapshot, not per connection). */
  settingsRoute: Route | undefined = undefined;
  settings: RouteSettings | undefined = undefined;

  constructor(
    readonly ref: RouteRef,
    readonly options: ProxyOptions,
    readonly dial: DialEndpoint,
    readonly via: ((ep: Endpoint) => Via) | undefined,
  ) {
    const tel = options.telemetry;
    this.tel = tel;
    this.tracing = tel?.tracing?.sampleRoots ? tel.tracing : undefined;
    this.counting = tel !== undefined;
    // Only `open` needs the listener; the other handlers find it through the socket's pipe.
    this.handlers = {
      open: (down: TcpSocket<Pipe>) => accept(this, down),
      data: downstreamData,
      drain: downstreamDrain,
      end: downstreamEnd,
      close: downstreamClose,
    } as TcpHandlers<unknown>;
  }

  active(): number {
    return this.pipes?.size ?? 0;
  }

  drain(): Promise<void> {
    if (this.active() === 0) return Promise.resolve();
    this.drained ??= Promise.withResolvers<void>();
    return this.drained.promise;
  }

  closeAll(): void {
    if (this.pipes === undefined) return;
    for (const p of [...this.pipes]) {
      because(p, "shutdown");
      abort(p);
    }
  }

  /** Close idle connections; refreshes the shared clock. */
  sweep(): void {
    clock = Date.now();
    // `last` lags real activity by up to one interval, so wait one more before calling it idle.
    const now = clock - this.sweepMs;
    for (const p of this.pipes ?? []) {
      if (p.idleMs !== 0 && p.last + p.idleMs <= now) {
        because(p, "idle_timeout");
        abort(p);
      }
    }
  }

  track(p: Pipe): void {
    (this.pipes ??= new Set()).add(p);
    if (p.idleMs === 0) return;
    const want = sweepIntervalFor(p.idleMs);
    if (this.sweeper !== undefined && want >= this.sweepMs) return;
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweepMs = want;
    this.sweeper = setInterval(() => this.sweep(), want);
  }

  /** Forget the pipe once both of its sockets are gone. Runs once per pipe. */
  release(p: Pipe): void {
    if (!p.downClosed || p.connecting || (p.up !== undefined && !p.upClosed)) return;
    const pipes = this.pipes;
    if (pipes === undefined || !pipes.delete(p)) return;
    settle(p, "success");
    this.options.connections?.release();
    if (this.counting) finish(p);
    if (pipes.size !== 0) return;
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.sweepMs = 0;
    this.drained?.resolve();
    this.drained = undefined;
  }

  /** Close a connection over a limit at once; it never becomes a pipe. */
  refuse(down: TcpSocket<Pipe>): void {
    routeTraffic(this.tel, this.ref.current)?.error("connection_limit");
    down.data = REFUSED;
    down.terminate();
  }
}

/** A downstream connection was accepted by `proxy`'s listener. */
function accept(proxy: TcpProxy, down: TcpSocket<Pipe>): void {
  const options = proxy.options;
  const max = options.maxConnectionsPerListener;
  const budget = options.connections;
  if ((max > 0 && proxy.active() >= max) || (budget !== undefined && !budget.tryAcquire())) return proxy.refuse(down);
  const route = proxy.ref.current;
  let settings = proxy.settings;
  if (route !== proxy.settingsRoute || settings === undefined) {
    proxy.settingsRoute = route;
    proxy.settings = settings = routeSettings(route, options);
  }
  const tel = proxy.tel;
  const counting = proxy.counting;
  const p: Pipe = {
    proxy,
    down,
    up: undefined,
    route,
    idleMs: settings.idleTimeoutMs,
    begun: undefined,
    toUp: [],
    toDown: [],
    preconnectBytes: 0,
    downPaused: false,
    upPaused: false,
    downFin: false,
    upFin: false,
    downShut: false,
    upShut: false,
    downClosed: false,
    upClosed: false,
    connecting: false,
    dead: false,
    last: (clock = Date.now()),
    traffic: routeTraffic(tel, route),
    rx: 0,
    tx: 0,
    t0: counting ? performance.now() : 0,
    client: tel?.accessLog === undefined ? "" : down.remoteAddress,
    endpoint: undefined,
    why: "",
    span: proxy.tracing === undefined ? undefined : startSpan(proxy, route, down),
  };
  down.data = p;
  proxy.track(p);
  p.traffic?.connOpened();
  if (route.balancer.endpoints.length === 0) {
    if (counting) failed(p, "no_endpoints");
    abort(p);
    return;
  }
  down.setNoDelay(true);
  p.connecting = true;
  void connect(p, settings.connectTimeoutMs);
}

/** Tell the balancer how the attempt on the begun endpoint ended (once per `begin`). */
function settle(p: Pipe, outcome: Outcome): void {
  const ep = p.begun;
  if (ep === undefined) return;
  p.begun = undefined;
  p.route.balancer.end(ep, outcome);
}

/** The connection is over: metrics, span, access log. */
function finish(p: Pipe): void {
  const t = p.traffic;
  if (t !== undefined) {
    t.bytes(p.rx, p.tx);
    t.connClosed();
  }
  const ep = p.endpoint;
  const endpoint = ep === undefined ? "" : ep.address.includes(":") ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
  const why = p.why || "closed";
  const span = p.span;
  if (span !== undefined) {
    span.setAttributes({ "kubegate.bytes_received": p.rx, "kubegate.bytes_sent": p.tx, "kubegate.close_reason": why });
    if (ERROR_CLOSE.has(why)) span.setStatus({ code: SPAN_STATUS_ERROR, message: why });
    span.end();
  }
  p.proxy.tel?.accessLog?.stream({
    protocol: "tcp",
    entrypoint: p.route.entrypoint.name,
    client: p.client,
    endpoint,
    bytesIn: p.rx,
    bytesOut: p.tx,
    durationMs: performance.now() - p.t0,
    close: why,
    traceId: span === undefined ? "" : span.spanContext().traceId,
  });
}

/** A connection failed for `reason`: counted as an error and recorded as the close reason. */
function failed(p: Pipe, reason: ProxyErrorReason): void {
  because(p, reason);
  p.traffic?.error(reason);
}

/** Terminate both sides now. Safe to re-enter (close handlers run synchronously inside `terminate`). */
function abort(p: Pipe): void {
  if (p.dead) return;
  p.dead = true;
  p.toUp.length = 0;
  p.toDown.length = 0;
  if (!p.downClosed) p.down.terminate();
  if (p.up !== undefined && !p.upClosed) p.up.terminate();
}

function shutUp(p: Pipe): void {
  if (p.upShut) return;
  p.upShut = true;
  p.up!.end();
}

function shutDown(p: Pipe): void {
  if (p.downShut) return;
  p.downShut = true;
  p.down.end();
}

/** The downstream sent FIN: forward it once everything before it reached the upstream. */
function downstreamFin(p: Pipe): void {
  if (p.downFin) return;
  p.downFin = true;
  if (p.up !== undefined && p.toUp.length === 0 && !p.upClosed && !p.dead) shutUp(p);
}

/** The upstream sent FIN: forward it once everything before it reached the downstream. */
function upstreamFin(p: Pipe): void {
  if (p.upFin) return;
  p.upFin = true;
  if (p.toDown.length === 0 && !p.downClosed && !p.dead) shutDown(p);
}

async function connect(p: Pipe, timeoutMs: number): Promise<void> {
  const { balancer } = p.route;
  const proxy = p.proxy;
  const counting = proxy.counting;
  const ctx = new ConnectionPick(p.down);
  let timedOut = false;
  for (let attempt = 0; attempt < proxy.options.connectAttempts && !p.dead && !p.downClosed; attempt++) {
    const ep = balancer.pick(ctx);
    if (ep === undefined) break;
    const t0 = counting ? performance.now() : 0;
    p.begun = ep;
    balancer.begin(ep);
    try {
      const up = await proxy.dial<Pipe>(ep, { handlers: upstreamHandlers, data: p, timeoutMs });
      p.connecting = false;
      if (t0 !== 0) {
        p.traffic?.connectDuration((performance.now() - t0) / 1000);
        p.endpoint = ep;
        if (p.span !== undefined) {
          const attrs: Record<string, string | number> = { "server.address": ep.address, "server.port": ep.port, "kubegate.endpoint": `${ep.address}:${ep.port}` };
          if (ep.targetRef?.kind === "Pod" && ep.targetRef.name) attrs["k8s.pod.name"] = ep.targetRef.name;
          if (attempt > 0) attrs["kubegate.connect_attempts"] = attempt + 1;
          attrs["kubegate.endpoint.access"] = proxy.via?.(ep) ?? "direct";
          p.span.setAttributes(attrs);
        }
      }
      if (p.dead || p.downClosed) {
        // The client left meanwhile: the endpoint did its part.
        up.terminate();
        proxy.release(p);
        return;
      }
      p.up = up;
      up.setNoDelay(true);
      if (p.route.entrypoint.proxyProtocol === "v2" && !sendProxyHeader(p)) return;
      upstreamReady(p);
      return;
    } catch (err) {
      timedOut = (err as { code?: unknown } | undefined)?.code === "ETIMEDOUT";
      settle(p, "connect-failure");
      (ctx.exclude ??= new Set()).add(ep);
    }
  }
  p.connecting = false;
  if (counting && !p.dead && !p.downClosed) failed(p, ctx.exclude === undefined ? "no_endpoints" : timedOut ? "connect_timeout" : "connect_failed");
  abort(p);
  proxy.release(p);
}

/** Queue the PROXY v2 header before the client's bytes; false (connection aborted) when it cannot be built. */
function sendProxyHeader(p: Pipe): boolean {
  const d = p.down;
  try {
    p.toUp.unshift(proxyV2Header(d.remoteAddress, d.remotePort, d.localAddress, d.localPort));
    return true;
  } catch {
    abort(p);
    return false;
  }
}

/** The upstream just connected: send what the downstream sent meanwhile. */
function upstreamReady(p: Pipe): void {
  p.preconnectBytes = 0;
  const r = flush(p.toUp, p.up!);
  if (r < 0) return abort(p);
  if (r === 0) return;
  if (p.downFin) shutUp(p);
  else if (p.downPaused) {
    p.downPaused = false;
    p.down.resume();
  }
}

// Downstream handlers (all listeners share them; `open` is per listener, see TcpProxy).

function downstreamData(down: TcpSocket<Pipe>, chunk: Uint8Array): void {
  const p = down.data;
  p.last = clock;
  p.rx += chunk.length;
  const up = p.up;
  if (up === undefined) {
    if (p.dead) return;
    p.toUp.push(chunk);
    p.preconnectBytes += chunk.length;
    if (p.preconnectBytes >= PRECONNECT_BUFFER_BYTES && !p.downPaused) {
      p.downPaused = true;
      down.pause();
    }
    return;
  }
  if (p.toUp.length !== 0) {
    // Delivered after we paused: queue behind the remainder.
    p.toUp.push(chunk);
    return;
  }
  const n = up.write(chunk);
  if (n === chunk.length) return;
  if (n < 0) return abort(p);
  p.toUp.push(n === 0 ? chunk : chunk.subarray(n));
  if (!p.downPaused) {
    p.downPaused = true;
    down.pause();
  }
}

function downstreamDrain(down: TcpSocket<Pipe>): void {
  const p = down.data;
  if (p.toDown.length === 0 || p.dead) return;
  p.last = clock;
  const r = flush(p.toDown, down);
  if (r < 0) return abort(p);
  if (r === 0) return;
  if (p.upFin) shutDown(p);
  else if (p.upPaused) {
    p.upPaused = false;
    p.up!.resume();
  }
}

function downstreamEnd(down: TcpSocket<Pipe>): void {
  const p = down.data;
  if (p === REFUSED) return;
  because(p, "client_closed");
  downstreamFin(p);
}

function downstreamClose(down: TcpSocket<Pipe>, error?: Error): void {
  const p = down.data;
  if (p === REFUSED) return;
  p.downClosed = true;
  because(p, error === undefined ? "client_closed" : "client_reset");
  // Bun reports a FIN that arrives after our own FIN as a clean close without `end`.
  if (error === undefined) downstreamFin(p);
  // Nothing more can reach the downstream: bytes still queued for it, or an error, end the upstream too.
  if (p.up !== undefined && !p.upClosed && (error !== undefined || p.toDown.length !== 0)) abort(p);
  p.proxy.release(p);
}

/** Upstream handlers: one object for every proxy's connects (the runtime adapts it once). */
const upstreamHandlers: TcpHandlers<Pipe> = {
  data(up, chunk) {
    const p = up.data;
    if (up !== p.up) return;
    p.last = clock;
    p.tx += chunk.length;
    if (p.toDown.length !== 0) {
      p.toDown.push(chunk);
      return;
    }
    const n = p.down.write(chunk);
    if (n === chunk.length) return;
    if (n < 0) return abort(p);
    p.toDown.push(n === 0 ? chunk : chunk.subarray(n));
    if (!p.upPaused) {
      p.upPaused = true;
      up.pause();
    }
  },

  drain(up) {
    const p = up.data;
    if (up !== p.up || p.toUp.length === 0 || p.dead) return;
    p.last = clock;
    const r = flush(p.toUp, up);
    if (r < 0) return abort(p);
    if (r === 0) return;
    if (p.downFin) shutUp(p);
    else if (p.downPaused) {
      p.downPaused = false;
      p.down.resume();
    }
  },

  end(up) {
    if (up !== up.data.up) return;
    because(up.data, "upstream_closed");
    upstreamFin(up.data);
  },

  close(up, error) {
    const p = up.data;
    if (up !== p.up) return; // an abandoned connect attempt
    p.upClosed = true;
    settle(p, "success");
    if (error !== undefined && p.why === "" && p.proxy.counting) failed(p, "upstream_reset");
    else because(p, "upstream_closed");
    if (error === undefined) upstreamFin(p);
    if (!p.downClosed && (error !== undefined || p.toUp.length !== 0)) abort(p);
    p.proxy.release(p);
  },
};

/** The connection's span (tracing on and roots sampled; TCP carries no incoming trace context). */
function startSpan(proxy: TcpProxy, route: Route, down: TcpSocket<Pipe>): Span | undefined {
  const ep = route.entrypoint;
  const span = proxy.tracing!.tracer.startSpan(`tcp ${ep.name}`, {
    kind: SPAN_KIND_SERVER,
    attributes: {
      "network.transport": "tcp",
      "client.address": down.remoteAddress,
      "network.peer.address": down.remoteAddress,
      "network.peer.port": down.remotePort,
      "server.port": down.localPort,
      "k8s.namespace.name": ep.namespace,
      "k8s.service.name": ep.service,
      "kubegate.entrypoint": ep.name,
    },
  });
  return span.isRecording() ? span : undefined;
}
