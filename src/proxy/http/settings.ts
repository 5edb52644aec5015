/**
 * The effective data-plane settings of one route: the gateway's {@link HttpProxyOptions} with the
 * Service's {@link TrafficPolicy} (annotations) laid over them. Resolved once per Route object (routes are
 * immutable per snapshot) and cached, so the per-request cost is one identity check.
 *
 * Also home of the per-cluster circuit breaker counts (`maxConcurrentRequests`), shared by every listener
 * and route of a Service port (keyed by the entrypoint's `name`).
 */
import type { HashOn, TrafficPolicy } from "../../model/types.ts";
import type { Route } from "../../routes/types.ts";
import type { HttpProxyOptions } from "./options.ts";

/** Where a consistent-hash key comes from: none (client IP), a header, or a cookie. */
export const HASH_NONE = 0;
export const HASH_HEADER = 1;
export const HASH_COOKIE = 2;

/** The settings a request on one route runs with. */
export class RouteSettings {
  readonly connectTimeoutMs: number;
  readonly requestHeaderTimeoutMs: number;
  readonly responseHeaderTimeoutMs: number;
  /** Client keep-alive / stream idle timeout. */
  readonly idleTimeoutMs: number;
  /** Idle time of pooled upstream connections released by this route's requests; 0: the pool's default. */
  readonly upstreamIdleTimeoutMs: number;
  /** 0: no limit. */
  readonly maxRequestDurationMs: number;
  /** 0: no limit. */
  readonly maxConcurrentRequests: number;
  /** 0: no limit. */
  readonly maxRequestBodyBytes: number;
  readonly retryIdempotent: boolean;
  /** HASH_* constant. */
  readonly hashSource: number;
  /** Lowercase header name or case-sensitive cookie name, as bytes (empty for HASH_NONE). */
  readonly hashName: Uint8Array;
  /** The circuit breaker's key: the cluster (Service port) name. */
  readonly cluster: string;

  constructor(readonly options: HttpProxyOptions, policy: TrafficPolicy | undefined, cluster: string) {
    const p = policy ?? {};
    this.connectTimeoutMs = p.connectTimeoutMs ?? options.connectTimeoutMs;
    this.requestHeaderTimeoutMs = p.requestHeaderTimeoutMs ?? options.requestHeaderTimeoutMs;
    this.responseHeaderTimeoutMs = p.responseHeaderTimeoutMs ?? options.responseHeaderTimeoutMs;
    this.idleTimeoutMs = p.idleTimeoutMs ?? options.idleTimeoutMs;
    this.upstreamIdleTimeoutMs = p.idleTimeoutMs ?? 0;
    this.maxRequestDurationMs = p.maxRequestDurationMs ?? options.maxRequestDurationMs;
    this.maxConcurrentRequests = p.maxConcurrentRequests ?? options.maxConcurrentRequests;
    this.maxRequestBodyBytes = p.maxRequestBodyBytes ?? options.maxRequestBodyBytes;
    this.retryIdempotent = p.retryIdempotent ?? options.retryIdempotent;
    const h: HashOn | undefined = p.hashOn;
    this.hashSource = h === undefined || h.source === "client-ip" ? HASH_NONE : h.source === "header" ? HASH_HEADER : HASH_COOKIE;
    const name = h !== undefined && h.source !== "client-ip" ? (h.source === "header" ? h.name.toLowerCase() : h.name) : "";
    this.hashName = Uint8Array.from(name, (c) => c.charCodeAt(0) & 0xff);
    this.cluster = cluster;
  }

  /** The shortest timer this route arms, ms (the listener's sweep ticks at a fraction of it). */
  get shortestTimeoutMs(): number {
    let m = Math.min(this.requestHeaderTimeoutMs, this.responseHeaderTimeoutMs, this.idleTimeoutMs);
    if (this.maxRequestDurationMs > 0 && this.maxRequestDurationMs < m) m = this.maxRequestDurationMs;
    return m;
  }
}

const cache = new WeakMap<Route, RouteSettings>();

/**
 * The settings of `route` under `options`, resolved once per Route object. (A Route is used with one
 * options object in practice; another one re-resolves and replaces the cached entry.)
 */
export function routeSettings(route: Route, options: HttpProxyOptions): RouteSettings {
  let s = cache.get(route);
  if (s === undefined || s.options !== options) {
    s = new RouteSettings(options, route.entrypoint.policy, route.entrypoint.name);
    cache.set(route, s);
  }
  return s;
}

/** Requests in flight per cluster (Service port) that has a concurrency limit; absent: none. */
const inFlight = new Map<string, number>();

/** Take a request slot of `cluster` under `max` (> 0). False when the circuit is open (the caller answers 503). */
export function acquireRequest(cluster: string, max: number): boolean {
  const n = inFlight.get(cluster) ?? 0;
  if (n >= max) return false;
  inFlight.set(cluster, n + 1);
  return true;
}

/** Give back a slot taken by {@link acquireRequest}. */
export function releaseRequest(cluster: string): void {
  const n = (inFlight.get(cluster) ?? 1) - 1;
  if (n <= 0) inFlight.delete(cluster);
  else inFlight.set(cluster, n);
}

/** Requests in flight to `cluster` counted against its concurrency limit (admin, tests). */
export function requestsInFlight(cluster: string): number {
  return inFlight.get(cluster) ?? 0;
}
