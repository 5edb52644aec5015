/**
 * The HTTP/1.1 data plane of one listener: a strict, smuggling-safe forwarder on the runtime's TCP
 * sockets. It parses only message heads, forwards bodies by their framing (validated, never
 * re-encoded), keeps client and upstream connections alive, and pools upstream connections per
 * endpoint across listeners.
 *
 * Balancing is per request, keyed by the downstream socket's peer address (never X-Forwarded-For): ClientIP
 * affinity sticks a client to an endpoint, and a route with cookie affinity (`Route.cookie`) sends a request
 * whose cookie names a serving endpoint there and adds `Set-Cookie` to responses served by any other pick.
 * ExternalName routes dial the resolved addresses; the client's Host field is forwarded unchanged (not
 * rewritten to the DNS name), as for any other Service: a backend that routes by Host must accept the
 * names clients use.
 *
 * Limits: connections over `maxConnectionsPerListener`, or over the gateway-wide `connections` budget, are
 * closed at accept (counted in {@link HttpProxy.refused}). Per-Service policies (timeouts, body limit,
 * circuit breaking, retries, hash keys) are resolved once per route (see `settings.ts`).
 *
 * @example
 * const proxy = createHttpProxy(ref, defaultProxyOptions);
 * const listener = rt.listenTcp({ hostname: "0.0.0.0", port: 8080, handlers: proxy.handlers });
 */
import type { TcpHandlers, TcpSocket } from "../../runtime/types.ts";
import { admitConnection, type ListenerProxy, type ListenerProxyFactory } from "../types.ts";
import type { Route, RouteRef } from "../../routes/types.ts";
import { Downstream, type ProxyHost } from "./downstream.ts";
import type { HttpProxyOptions } from "./options.ts";
import { routeSettings, type RouteSettings } from "./settings.ts";

export type { HttpProxyOptions } from "./options.ts";
export { closeIdleUpstreams, idleUpstreams, poolSettings } from "./pool.ts";
export { REASON_HEADER, type GatewayReason } from "./responses.ts";
export { requestsInFlight, type RouteSettings, routeSettings } from "./settings.ts";

/** The HTTP forwarder of one listener. */
export class HttpProxy implements ListenerProxy<Downstream | null>, ProxyHost {
  readonly handlers: TcpHandlers<Downstream | null>;
  readonly #conns = new Set<Downstream>();
  #draining = false;
  #drained: PromiseWithResolvers<void> | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  #tickMs: number;
  /** Shortest timer of any route seen (the sweep ticks at a quarter of it, 10 to 250 ms). */
  #shortest: number;
  #lastRoute: Route | null = null;
  #lastSettings: RouteSettings | null = null;
  /** See {@link ProxyHost.clock}: the last sweep's time plus one tick. */
  clock = 0;
  /** Connections closed at accept: over `maxConnectionsPerListener` or the gateway's connection budget. */
  refused = 0;

  constructor(readonly ref: RouteRef, readonly options: HttpProxyOptions) {
    this.#shortest = Math.min(options.requestHeaderTimeoutMs, options.responseHeaderTimeoutMs, options.idleTimeoutMs);
    if (options.maxRequestDurationMs > 0) this.#shortest = Math.min(this.#shortest, options.maxRequestDurationMs);
    this.#tickMs = tickFor(this.#shortest);
    const conns = this.#conns;
    this.handlers = {
      open: (s: TcpSocket<Downstream | null>) => {
        if (!admitConnection(options, ref, conns.size, s)) {
          this.refused++;
          return;
        }
        if (this.#timer === undefined) this.#startSweep();
        const c = new Downstream(this, s as TcpSocket<Downstream>);
        s.data = c;
        conns.add(c);
        if (this.#draining) c.drainNow();
      },
      data: (s, chunk) => s.data?.onData(chunk),
      drain: (s) => s.data?.onDrain(),
      end: (s) => s.data?.onEnd(),
      close: (s) => s.data?.onClose(),
    };
  }

  /** See {@link ProxyHost.settings}: one identity check per request in the steady state. */
  settings(route: Route): RouteSettings {
    if (route === this.#lastRoute) return this.#lastSettings!;
    const s = routeSettings(route, this.options);
    this.#lastRoute = route;
    this.#lastSettings = s;
    const shortest = s.shortestTimeoutMs;
    if (shortest < this.#shortest) {
      // A Service's policy arms shorter timers than the gateway's: tick faster.
      this.#shortest = shortest;
      this.#tickMs = tickFor(shortest);
      if (this.#timer !== undefined) {
        this.#stopSweep();
        this.#startSweep();
      }
    }
    return s;
  }

  /** Draining, or the gateway is closing (shutdown signal): responses then carry `Connection: close`. */
  get draining(): boolean {
    return this.#draining || this.options.lifecycle?.closing === true;
  }

  active(): number {
    return this.#conns.size;
  }

  drain(): Promise<void> {
    this.#draining = true;
    for (const c of [...this.#conns]) c.drainNow();
    if (this.#conns.size === 0) return Promise.resolve();
    this.#drained ??= Promise.withResolvers<void>();
    return this.#drained.promise;
  }

  closeAll(): void {
    for (const c of [...this.#conns]) c.abort();
  }

  /** Called by a connection once it has closed. */
  remove(c: Downstream): void {
    if (!this.#conns.delete(c)) return;
    this.options.connections?.release();
    if (this.#conns.size === 0) {
      this.#stopSweep();
      if (this.#drained) {
        this.#drained.resolve();
        this.#drained = null;
      }
    }
  }

  #startSweep(): void {
    this.clock = Date.now() + this.#tickMs;
    this.#timer = setInterval(() => this.#sweep(), this.#tickMs);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  #stopSweep(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #sweep(): void {
    const now = Date.now();
    this.clock = now + this.#tickMs;
    for (const c of this.#conns) {
      if (c.deadline !== 0 && c.deadline <= now) c.onTimeout();
      else if (c.reqDeadline !== 0 && c.reqDeadline <= now) c.onRequestTimeout();
    }
  }
}

/** The sweep period for a shortest timer of `ms`: a quarter of it, 10 to 250 ms. */
function tickFor(ms: number): number {
  return Math.max(10, Math.min(250, Math.floor(ms / 4)));
}

/** Build the HTTP data plane for one listener. Pass {@link HttpProxyOptions} to set HTTP-only options. */
export const createHttpProxy: ListenerProxyFactory = (ref, options) =>
  new HttpProxy(ref, options as HttpProxyOptions) as unknown as ListenerProxy;
