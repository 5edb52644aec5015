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
 * @example
 * const proxy = createHttpProxy(ref, defaultProxyOptions);
 * const listener = rt.listenTcp({ hostname: "0.0.0.0", port: 8080, handlers: proxy.handlers });
 */
import type { TcpHandlers, TcpSocket } from "../../runtime/types.ts";
import type { ListenerProxy, ListenerProxyFactory, RouteRef } from "../types.ts";
import { Downstream, type ProxyHost } from "./downstream.ts";
import type { HttpProxyOptions } from "./options.ts";

export type { HttpProxyOptions } from "./options.ts";
export { closeIdleUpstreams, idleUpstreams, poolSettings } from "./pool.ts";

/** The HTTP forwarder of one listener. */
export class HttpProxy implements ListenerProxy<Downstream>, ProxyHost {
  readonly handlers: TcpHandlers<Downstream>;
  readonly #conns = new Set<Downstream>();
  #draining = false;
  #drained: PromiseWithResolvers<void> | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  readonly #tickMs: number;
  /** See {@link ProxyHost.clock}: the last sweep's time plus one tick. */
  clock = 0;

  constructor(readonly ref: RouteRef, readonly options: HttpProxyOptions) {
    const shortest = Math.min(options.requestHeaderTimeoutMs, options.upstreamResponseTimeoutMs, options.idleTimeoutMs);
    this.#tickMs = Math.max(10, Math.min(250, Math.floor(shortest / 4)));
    const conns = this.#conns;
    this.handlers = {
      open: (s: TcpSocket<Downstream>) => {
        s.setNoDelay(true);
        if (this.#timer === undefined) this.#startSweep();
        const c = new Downstream(this, s);
        s.data = c;
        conns.add(c);
        if (this.#draining) c.drainNow();
      },
      data: (s, chunk) => s.data.onData(chunk),
      drain: (s) => s.data.onDrain(),
      end: (s) => s.data?.onEnd(),
      close: (s) => s.data?.onClose(),
    };
  }

  get draining(): boolean {
    return this.#draining;
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
    this.#conns.delete(c);
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
    }
  }
}

/** Build the HTTP data plane for one listener. Pass {@link HttpProxyOptions} to set HTTP-only options. */
export const createHttpProxy: ListenerProxyFactory = (ref, options) =>
  new HttpProxy(ref, options as HttpProxyOptions) as unknown as ListenerProxy;
