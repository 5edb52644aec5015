/**
 * The contract between the listeners and the proxies: gateway-wide proxy options, the telemetry they report to,
 * and the shape of a listener's proxy ({@link ListenerProxy}, built by a {@link ListenerProxyFactory} from the
 * listener's {@link RouteRef}, see `routes/types.ts`).
 */
import type { Entrypoint } from "../model/types.ts";
import type { Route, RouteRef } from "../routes/types.ts";
import type { TcpHandlers, TcpSocket } from "../runtime/types.ts";
import type { AccessLog } from "../telemetry/access-log.ts";
import type { ServiceTraffic } from "../telemetry/metrics/traffic.ts";
import type { ProxyTracing } from "../telemetry/tracing/types.ts";

/** Gateway-wide data-plane settings; Services override some by annotation (the route's `entrypoint.policy`, see `http/settings.ts`). */
export interface ProxyOptions {
  /** Upstream connect timeout per attempt, ms. */
  readonly connectTimeoutMs: number;
  /** Max connect attempts on different endpoints before giving up (TCP: close; HTTP: 502). */
  readonly connectAttempts: number;
  /** Idle timeout for TCP connections and kept-alive HTTP connections, ms. */
  readonly idleTimeoutMs: number;
  /** HTTP: time allowed for a client to send a full request head, ms (408 after). */
  readonly requestHeaderTimeoutMs: number;
  /** HTTP: time allowed for the upstream's response head, ms (504 after). */
  readonly responseHeaderTimeoutMs: number;
  /** HTTP: max request/response head size in bytes (431 for requests). */
  readonly maxHeaderBytes: number;
  /** HTTP: a whole exchange may last at most this, ms (0: no limit). Per-Service override in the route's policy. */
  readonly maxRequestDurationMs: number;
  /** HTTP: max requests in flight per Service port (cluster) from this gateway; 503 beyond (0: no limit). */
  readonly maxConcurrentRequests: number;
  /** HTTP: max request body bytes; 413 beyond (0: no limit). */
  readonly maxRequestBodyBytes: number;
  /** HTTP: retry an idempotent request that got no response bytes once on another endpoint. */
  readonly retryIdempotent: boolean;
  /** Max open downstream connections per listener; further connections are closed at accept (0: no limit). */
  readonly maxConnectionsPerListener: number;
  /** The gateway-wide connection budget (`--max-connections`), shared by every listener; absent: no limit. */
  readonly connections?: ConnectionBudget | undefined;
  /** The gateway's lifecycle, shared by every listener; absent: never closing (tests, benchmarks). */
  readonly lifecycle?: Lifecycle | undefined;
  /** Metrics, traces and access log of the data plane; absent: none (tests, benchmarks). */
  readonly telemetry?: ProxyTelemetry | undefined;
}

/**
 * What the data plane reports to. One object for the whole gateway, passed in {@link ProxyOptions};
 * each part is optional and costs nothing when absent.
 *
 * @example
 * const telemetry: ProxyTelemetry = { traffic: (ep) => metrics.traffic.forEntrypoint(ep), tracing, accessLog };
 */
export interface ProxyTelemetry {
  /** The per-Service metrics handle of an entrypoint; called once per route (cached by {@link routeTraffic}). */
  readonly traffic?: ((entrypoint: Entrypoint) => ServiceTraffic) | undefined;
  /** Tracing (see `telemetry/tracing/setup.ts`); absent: tracing off. */
  readonly tracing?: ProxyTracing | undefined;
  /** One JSON line per HTTP request / TCP connection / UDP flow; absent: no access log. */
  readonly accessLog?: AccessLog | undefined;
}

const trafficCache = new WeakMap<Route, ServiceTraffic>();

/**
 * The metrics handle of `route`, resolved once per Route object (routes are immutable per snapshot)
 * and cached; undefined when `telemetry` has no metrics.
 */
export function routeTraffic(telemetry: ProxyTelemetry | undefined, route: Route): ServiceTraffic | undefined {
  const resolve = telemetry?.traffic;
  if (resolve === undefined) return undefined;
  let t = trafficCache.get(route);
  if (t === undefined) {
    t = resolve(route.entrypoint);
    trafficCache.set(route, t);
  }
  return t;
}

export const defaultProxyOptions: ProxyOptions = {
  connectTimeoutMs: 2_000,
  connectAttempts: 3,
  idleTimeoutMs: 300_000,
  requestHeaderTimeoutMs: 30_000,
  responseHeaderTimeoutMs: 60_000,
  maxHeaderBytes: 64 * 1024,
  maxRequestDurationMs: 0,
  maxConcurrentRequests: 0,
  maxRequestBodyBytes: 0,
  retryIdempotent: true,
  maxConnectionsPerListener: 0,
};

/**
 * What the data plane reads of the gateway's lifecycle. `closing` turns true at the shutdown signal: from then on
 * HTTP responses carry `Connection: close` and their connections close after them (kept-alive clients move to
 * another node during `--shutdown-delay`, before the listeners stop), while new connections are still accepted.
 */
export interface Lifecycle {
  closing: boolean;
}

/**
 * The open downstream connections of the whole gateway against `--max-connections`: every listener's proxy
 * acquires a slot at accept (closing the connection when none is left) and releases it at close.
 */
export class ConnectionBudget {
  active = 0;
  /** Connections refused because the budget was spent. */
  refused = 0;

  /** @param max the limit; 0 or less: unlimited. */
  constructor(readonly max: number) {}

  /** Take a slot; false (and counted) when the budget is spent. */
  tryAcquire(): boolean {
    if (this.max > 0 && this.active >= this.max) {
      this.refused++;
      return false;
    }
    this.active++;
    return true;
  }

  release(): void {
    this.active--;
  }
}

/**
 * Admit a connection a listener just accepted, with `open` connections already open on it: over
 * `maxConnectionsPerListener` or the gateway's budget it is closed at once (counted as `connection_limit`) and
 * false is returned. An admitted connection holds a budget slot until the proxy releases it at close.
 */
export function admitConnection(options: ProxyOptions, ref: RouteRef, open: number, s: TcpSocket<unknown>): boolean {
  const perListener = options.maxConnectionsPerListener;
  if ((perListener > 0 && open >= perListener) || (options.connections !== undefined && !options.connections.tryAcquire())) {
    routeTraffic(options.telemetry, ref.current)?.error("connection_limit");
    s.data = null;
    s.terminate();
    return false;
  }
  s.setNoDelay(true);
  return true;
}

/** The data plane for one bound listener: socket handlers plus connection bookkeeping for drain. */
export interface ListenerProxy<T = unknown> {
  readonly handlers: TcpHandlers<T>;
  /** Open downstream connections. */
  active(): number;
  /**
   * Graceful drain: idle connections close now, busy ones after their current exchange; resolves
   * when none are left. The listener has already stopped accepting.
   */
  drain(): Promise<void>;
  /** Close every connection now (grace period over). */
  closeAll(): void;
}

/** Builds the data plane for one listener. */
export type ListenerProxyFactory = (ref: RouteRef, options: ProxyOptions) => ListenerProxy;
