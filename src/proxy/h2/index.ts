/**
 * The HTTP/2 cleartext data plane of one listener (Service ports with `appProtocol: kubernetes.io/h2c` or `grpc`,
 * or `kubegate.io/protocol: h2c`): clients speak HTTP/2 with prior knowledge (what gRPC clients do), and every
 * stream is a call balanced on its own (`call.ts`) onto HTTP/2 connections to the endpoints (`pool.ts`), so the
 * calls of one long-lived channel spread over every endpoint (kube-proxy pins them to one: kubernetes#38456).
 *
 * A client whose first bytes are not the HTTP/2 preface speaks HTTP/1.1 (`http1.ts`): each of its requests is a call
 * too, sent upstream as an HTTP/2 stream (the backend need not speak HTTP/1.1); `Upgrade: h2c` switches its
 * connection to HTTP/2.
 *
 * Drain and shutdown send GOAWAY (streams in flight finish); an endpoint that leaves the Service gets GOAWAY on its
 * upstream connections (their streams finish, new calls go elsewhere); idle upstream connections close after the
 * idle timeout, idle client connections too.
 *
 * @example
 * const proxy = createH2Proxy(ref, options);
 * rt.listenTcp({ hostname: "0.0.0.0", port: 50051, handlers: proxy.handlers });
 */
import type { Endpoint } from "../../model/types.ts";
import type { Route, RouteRef } from "../../routes/types.ts";
import type { TcpHandlers, TcpSocket } from "../../runtime/types.ts";
import type { HttpProxyOptions } from "../http/index.ts";
import { routeSettings, type RouteSettings } from "../http/settings.ts";
import { admitConnection, type ListenerProxy, type ListenerProxyFactory, routeTraffic } from "../types.ts";
import { type Call, streamCall } from "./call.ts";
import type { H2Host } from "./host.ts";
import { Http1Conn, type Http1Events } from "./http1.ts";
import { H2EndpointPool } from "./pool.ts";
import { type H2Limits, H2Session, type H2Upgrade, type HeaderList, type H2Stream } from "./session.ts";

/** The client connection preface (RFC 9113 3.4). */
const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** How often pools and idle connections are swept, ms. */
const SWEEP_MS = 1_000;

/** A client connection: sniffing its first bytes, then an HTTP/2 server session or an HTTP/1.1 connection. */
class Conn implements Http1Events {
  session: H2Session | null = null;
  h1: Http1Conn | null = null;
  /** Bytes read before the protocol is known. */
  head: Uint8Array | null = null;
  /** Epoch ms since when it has had no stream (idle timeout); while sniffing, since it was accepted. */
  idleSince = Date.now();
  readonly client: string;

  constructor(
    readonly proxy: H2Proxy,
    readonly socket: TcpSocket<Conn | unknown>,
  ) {
    this.client = socket.remoteAddress;
  }

  onData(chunk: Uint8Array): void {
    if (this.session !== null) return this.session.receive(chunk);
    if (this.h1 !== null) return this.h1.onData(chunk);
    const head = this.head === null ? chunk : concat(this.head, chunk);
    const n = Math.min(head.length, PREFACE.length);
    for (let i = 0; i < n; i++) {
      if (head[i] !== PREFACE[i]) return this.proxy.toHttp1(this, head);
    }
    if (head.length < PREFACE.length) {
      this.head = head;
      return;
    }
    this.head = null;
    this.serve(head);
  }

  /** Serve the connection as HTTP/2 from `head` on (`upgraded`: after an HTTP/1.1 `Upgrade: h2c`). */
  serve(head: Uint8Array | null, upgraded?: H2Upgrade): void {
    const session = new H2Session(
      this.socket as TcpSocket<unknown>,
      "server",
      this.proxy.limits,
      {
        stream: (stream, headers, endStream) => this.proxy.call(this, stream, headers, endStream),
        close: () => this.proxy.remove(this),
      },
      upgraded,
    );
    this.session = session;
    if (this.proxy.draining) session.goaway();
    if (head !== null) session.receive(head);
  }

  upgrade(upgrade: H2Upgrade, rest: Uint8Array | null): void {
    this.h1 = null;
    this.serve(rest, upgrade);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The HTTP/2 proxy of one listener. */
export class H2Proxy implements ListenerProxy<unknown>, H2Host {
  readonly handlers: TcpHandlers<unknown>;
  readonly limits: Partial<H2Limits>;
  readonly #conns = new Set<Conn>();
  readonly #pools = new Map<string, H2EndpointPool>();
  readonly #poolOf = new WeakMap<Endpoint, H2EndpointPool>();
  /** Pools of endpoints that left the route: their calls in flight finish (an endpoint that returns gets a new pool). */
  readonly #retiring = new Set<H2EndpointPool>();
  readonly #hashHeaders = new WeakMap<RouteSettings, string>();
  #draining = false;
  #drained: PromiseWithResolvers<void> | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Connections closed at accept (limits). */
  refused = 0;

  constructor(
    readonly ref: RouteRef,
    readonly options: HttpProxyOptions,
  ) {
    this.limits = { maxHeaderListSize: options.maxHeaderBytes };
    const conns = this.#conns;
    this.handlers = {
      open: (s) => {
        if (!admitConnection(options, ref, conns.size, s)) {
          this.refused++;
          return;
        }
        const c = new Conn(this, s);
        s.data = c;
        conns.add(c);
        routeTraffic(options.telemetry, ref.current)?.connOpened();
        if (this.#timer === undefined) this.#startSweep();
      },
      data: (s, chunk) => {
        const d = s.data;
        if (d instanceof Conn) d.onData(chunk);
      },
      drain: (s) => {
        const d = s.data;
        if (!(d instanceof Conn)) return;
        if (d.session) d.session.socketDrained();
        else d.h1?.onDrain();
      },
      end: (s) => {
        const d = s.data;
        if (!(d instanceof Conn)) return;
        if (d.session) d.session.close();
        else if (d.h1) d.h1.onEnd();
        else s.end();
      },
      close: (s) => {
        const d = s.data;
        if (d instanceof Conn) {
          d.session?.close();
          d.h1?.onClose();
          this.remove(d);
        }
      },
    };
  }

  get draining(): boolean {
    return this.#draining || this.options.lifecycle?.closing === true;
  }

  settings(route: Route): RouteSettings {
    return routeSettings(route, this.options);
  }

  hashHeader(s: RouteSettings): string {
    let name = this.#hashHeaders.get(s);
    if (name === undefined) {
      name = String.fromCharCode(...s.hashName);
      this.#hashHeaders.set(s, name);
    }
    return name;
  }

  pool(ep: Endpoint): H2EndpointPool {
    // Endpoint objects live as long as their snapshot: one identity lookup per call in the steady state.
    const cached = this.#poolOf.get(ep);
    if (cached !== undefined && !cached.stale) return cached;
    const key = `${ep.address}|${ep.port}`;
    let p = this.#pools.get(key);
    if (p === undefined) {
      p = new H2EndpointPool(ep, {});
      this.#pools.set(key, p);
    }
    this.#poolOf.set(ep, p);
    return p;
  }

  /** A new request stream on `conn`. */
  call(conn: Conn, stream: H2Stream, headers: HeaderList, endStream: boolean): void {
    conn.idleSince = 0;
    streamCall(this, stream, headers, endStream, conn.client);
  }

  callDone(call: Call, status: number, reason: string, seconds: number): void {
    const log = this.options.telemetry?.accessLog;
    if (log === undefined) return;
    log.http({
      entrypoint: call.route.entrypoint.name,
      client: call.client,
      endpoint: call.endpoint === null ? "" : `${call.endpoint.address}:${call.endpoint.port}`,
      method: call.method,
      path: call.path,
      status,
      bytesIn: call.bytesIn,
      bytesOut: call.bytesOut,
      durationMs: Math.round(seconds * 1e6) / 1e3,
      error: reason,
      traceId: call.trace === null ? "" : call.trace.server.spanContext().traceId,
    });
  }

  /** `conn`'s first bytes are not the HTTP/2 preface: it is an HTTP/1.1 client of this port. */
  toHttp1(conn: Conn, head: Uint8Array): void {
    conn.head = null;
    conn.h1 = new Http1Conn(this, conn.socket as TcpSocket<unknown>, conn.client, conn);
    conn.h1.onData(head);
  }

  active(): number {
    return this.#conns.size;
  }

  drain(): Promise<void> {
    this.#draining = true;
    for (const c of this.#conns) {
      if (c.session) c.session.goaway();
      else if (c.h1) c.h1.drain();
      else c.socket.end();
    }
    if (this.#conns.size === 0) return Promise.resolve();
    this.#drained ??= Promise.withResolvers<void>();
    return this.#drained.promise;
  }

  closeAll(): void {
    for (const c of [...this.#conns]) {
      c.session?.close();
      c.socket.terminate();
    }
    for (const p of this.#pools.values()) p.closeAll();
    for (const p of this.#retiring) p.closeAll();
  }

  /** Called when a client connection has closed. */
  remove(c: Conn): void {
    if (!this.#conns.delete(c)) return;
    this.options.connections?.release();
    routeTraffic(this.options.telemetry, this.ref.current)?.connClosed();
    this.#settle();
  }

  #settle(): void {
    if (this.#conns.size === 0 && this.#drained) {
      this.#drained.resolve();
      this.#drained = null;
    }
  }

  #startSweep(): void {
    this.#timer = setInterval(() => this.#sweep(), SWEEP_MS);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  /** Idle client connections and upstream sessions close; endpoints gone from the route get GOAWAY. */
  #sweep(): void {
    const now = Date.now();
    const idleMs = this.options.idleTimeoutMs;
    for (const c of this.#conns) {
      const s = c.session;
      if (c.h1 !== null) {
        c.h1.sweep(now);
        continue;
      }
      if (s === null) {
        // Still sniffing: a client that has not sent the preface (or an HTTP/1.1 request line) in time goes.
        if (now - c.idleSince >= this.options.requestHeaderTimeoutMs) c.socket.terminate();
        continue;
      }
      if (s.activeStreams > 0) {
        c.idleSince = 0;
        continue;
      }
      if (c.idleSince === 0) c.idleSince = now;
      else if (now - c.idleSince >= idleMs) s.goaway();
    }
    const serving = new Set<string>();
    for (const ep of this.ref.current.balancer.endpoints) serving.add(`${ep.address}|${ep.port}`);
    for (const [key, p] of this.#pools) {
      if (!serving.has(key)) {
        p.retire();
        this.#pools.delete(key);
        this.#retiring.add(p);
      } else if (p.sweep(now, idleMs)) {
        this.#pools.delete(key);
        p.drop();
      }
    }
    for (const p of this.#retiring) if (p.sweep(now, idleMs)) this.#retiring.delete(p);
    if (this.#conns.size === 0 && this.#pools.size === 0 && this.#retiring.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

/** Build the HTTP/2 proxy of one listener (the data plane's options carry the HTTP forwarder's, see `createHttpProxy`). */
export const createH2Proxy: ListenerProxyFactory = (ref, options) => new H2Proxy(ref, options as HttpProxyOptions);
