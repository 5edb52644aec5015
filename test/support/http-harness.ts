/**
 * Test harness for the HTTP/1.1 forwarder: a proxy bound on 127.0.0.1 through the runtime port, raw
 * socket upstreams that record the exact bytes they receive, and a raw client that sends arbitrary
 * bytes and parses responses. Everything is disposable with `await using`.
 */
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import type { Balancer, Outcome, PickContext } from "../../src/balancer/types.ts";
import type { Endpoint, TrafficPolicy } from "../../src/model/types.ts";
import { closeIdleUpstreams, createHttpProxy, type HttpProxy, type HttpProxyOptions } from "../../src/proxy/http/index.ts";
import { defaultProxyOptions, type ListenerProxy } from "../../src/proxy/types.ts";
import type { Route, RouteRef } from "../../src/routes/types.ts";
import { rt } from "../../src/runtime/index.ts";
import type { TcpSocket } from "../../src/runtime/types.ts";
import { REFUSED_PORT } from "./ports.ts";
import { endpointId, type EndpointId } from "./entrypoints.ts";

/** Bytes as latin1 text (exact, for assertions on raw HTTP). */
export function text(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, Math.min(b.length, i + 8192)));
  return s;
}

/** latin1 text as bytes. */
export function bytes(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** Poll `cond` until it is true or `timeoutMs` passes (then throw with `what`). */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(2);
  }
}

/** A serving endpoint. */
export function endpoint(port: number, address = "127.0.0.1"): Endpoint {
  return { address, port, ready: true, serving: true, terminating: false };
}

/** What a test route may set besides its endpoints. */
export interface RouteExtras {
  /** The Service's policy (annotations), as the model would attach it. */
  readonly policy?: TrafficPolicy | undefined;
  /** The balancer over the endpoints (default: a round robin starting at the first). */
  readonly balancer?: ((endpoints: readonly Endpoint[]) => Balancer) | undefined;
  /** The entrypoint's name, `namespace/service:port` (default `default/web:http`). */
  readonly name?: string | undefined;
}

/** A route over `endpoints` with a round robin starting at the first endpoint (or `extras.balancer`). */
export function route(endpoints: readonly Endpoint[], name = "default/web:http", extras: RouteExtras = {}): Route {
  const [namespace, rest] = name.split("/") as [string, string];
  const service = rest.split(":")[0]!;
  return {
    entrypoint: {
      name,
      key: `NodePort/${name}`,
      type: "NodePort",
      protocol: "http",
      namespace,
      service,
      addresses: ["127.0.0.1"],
      port: 0,
      cluster: { name, endpoints, serving: endpoints },
      externalTrafficPolicy: "Cluster",
      annotations: {},
      ...(extras.policy ? { policy: extras.policy } : {}),
    },
    balancer: extras.balancer ? extras.balancer(endpoints) : new RoundRobin(endpoints, () => 0),
  };
}

/** One `begin`/`end` call seen by a {@link RecordingBalancer}: `begin 8080`, `end 127.0.0.2:1 connect-failure`. */
export type BalancerEvent = `begin ${EndpointId}` | `end ${EndpointId} ${Outcome}`;

/**
 * A round robin (from the first endpoint) that records every `begin`/`end` and every pick's context, and
 * checks that each `end` matches an open `begin` (else it records `unmatched end ...`). Endpoints are named
 * by {@link endpointId}.
 */
export class RecordingBalancer implements Balancer {
  readonly #rr: RoundRobin;
  readonly events: string[] = [];
  readonly picks: { clientAddress: string; hashKey: string | undefined; exclude: EndpointId[] }[] = [];
  readonly #open = new Map<Endpoint, number>();

  constructor(readonly endpoints: readonly Endpoint[]) {
    this.#rr = new RoundRobin(endpoints, () => 0);
  }

  pick(ctx: PickContext): Endpoint | undefined {
    this.picks.push({ clientAddress: ctx.clientAddress, hashKey: ctx.hashKey, exclude: [...(ctx.exclude ?? [])].map(endpointId) });
    return this.#rr.pick(ctx);
  }

  begin(ep: Endpoint): void {
    this.#open.set(ep, (this.#open.get(ep) ?? 0) + 1);
    this.events.push(`begin ${endpointId(ep)}`);
  }

  end(ep: Endpoint, outcome: Outcome): void {
    const n = this.#open.get(ep) ?? 0;
    if (n === 0) this.events.push(`unmatched end ${endpointId(ep)} ${outcome}`);
    else {
      this.#open.set(ep, n - 1);
      this.events.push(`end ${endpointId(ep)} ${outcome}`);
    }
  }

  /** Attempts begun and not ended. */
  get open(): number {
    let n = 0;
    for (const v of this.#open.values()) n += v;
    return n;
  }
}

/**
 * The `n`-th (0-based) of distinct endpoints that refuse connections: {@link REFUSED_PORT} on 127.0.0.(n + 1)
 * (all of 127.0.0.0/8 is loopback on Linux). Never a port that was bound and released: the next `port: 0`
 * listener, the proxy under test say, may receive it and then forward to itself.
 */
export function refusedEndpoint(n = 0): Endpoint {
  return endpoint(REFUSED_PORT, `127.0.0.${n + 1}`);
}

export interface ProxyHarness extends AsyncDisposable {
  readonly port: number;
  readonly url: string;
  readonly ref: RouteRef;
  readonly proxy: ListenerProxy;
  /** Downstream connections the listener accepted. */
  readonly accepted: number;
  /** Connections the proxy closed at accept (connection limits). */
  readonly refused: number;
  /** Swap the route (what the listeners layer does on a new snapshot). */
  setEndpoints(endpoints: readonly Endpoint[]): void;
}

/** Bind the HTTP proxy on 127.0.0.1:0 in front of `endpoints`; `extras` shape its route (policy, balancer). */
export function startProxy(
  endpoints: readonly Endpoint[],
  options: Partial<HttpProxyOptions> = {},
  hostname = "127.0.0.1",
  extras: RouteExtras = {},
): ProxyHarness {
  const name = extras.name ?? "default/web:http";
  const ref: RouteRef = { current: route(endpoints, name, extras) };
  const proxy = createHttpProxy(ref, { ...defaultProxyOptions, ...options });
  let accepted = 0;
  const open = proxy.handlers.open!;
  const listener = rt.listenTcp<unknown>({
    hostname,
    port: 0,
    handlers: { ...proxy.handlers, open: (s) => (accepted++, open(s)) },
  });
  return {
    port: listener.port,
    url: `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${listener.port}`,
    ref,
    proxy,
    get accepted() {
      return accepted;
    },
    get refused() {
      return (proxy as unknown as HttpProxy).refused;
    },
    setEndpoints(eps) {
      ref.current = route(eps, name, extras);
    },
    async [Symbol.asyncDispose]() {
      listener.stop(true);
      proxy.closeAll();
      closeIdleUpstreams();
      await waitFor(() => proxy.active() === 0, "proxy connections to close");
    },
  };
}

/** A request as a raw upstream received it. */
export interface ReceivedRequest {
  /** The head, exactly as received (latin1), including the final CRLFCRLF. */
  readonly head: string;
  readonly method: string;
  readonly target: string;
  /** Field lines as [name, value] in order. */
  readonly headers: readonly (readonly [string, string])[];
  /** The body bytes as received (still chunked when chunked). */
  readonly body: Uint8Array;
  /** Index of the upstream connection it came on (0-based accept order). */
  readonly conn: number;
}

/** Lower-cased field lookup (first value). */
export function header(req: { headers: readonly (readonly [string, string])[] }, name: string): string | undefined {
  return req.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
}

type UpstreamConn = { buf: Uint8Array; index: number; headSeen: boolean; served: number };
export type UpstreamHandler = (req: ReceivedRequest, socket: TcpSocket<UpstreamConn>) => void;

/** Find a complete request at the start of `buf`; returns it and its length, or undefined. */
function parseRequest(buf: Uint8Array, conn: number): [ReceivedRequest, number] | undefined {
  const s = text(buf.subarray(0, Math.min(buf.length, 1 << 20)));
  const he = s.indexOf("\r\n\r\n");
  if (he < 0) return undefined;
  const head = s.slice(0, he + 4);
  const lines = head.slice(0, -4).split("\r\n");
  const [method = "", target = ""] = lines[0]!.split(" ");
  const headers = lines.slice(1).map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i), l.slice(i + 1).trim()] as const;
  });
  const h = { headers };
  let end = he + 4;
  const te = header(h, "transfer-encoding");
  if (te?.toLowerCase() === "chunked") {
    let p = end;
    for (;;) {
      const le = s.indexOf("\r\n", p);
      if (le < 0) return undefined;
      const size = parseInt(s.slice(p, le).split(";")[0]!, 16);
      if (size === 0) {
        const te2 = s.indexOf("\r\n\r\n", le);
        if (te2 < 0) return undefined;
        p = te2 + 4;
        break;
      }
      p = le + 2 + size + 2;
      if (p > buf.length) return undefined;
    }
    end = p;
  } else {
    const cl = Number(header(h, "content-length") ?? 0);
    if (buf.length < end + cl) return undefined;
    end += cl;
  }
  return [{ head, method, target, headers, body: buf.slice(he + 4, end), conn }, end];
}

/** Default upstream behaviour: 200 with body `<name> <method> <target>`. */
export function respondWith(name: string): UpstreamHandler {
  return (req, s) => {
    const body = `${name} ${req.method} ${req.target}`;
    s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nContent-Type: text/plain\r\n\r\n${body}`));
  };
}

/**
 * A raw-socket upstream that records every byte and every request it receives and answers each complete
 * request with `handler` (default: `respondWith(name)`).
 */
export class RawUpstream implements AsyncDisposable {
  readonly port: number;
  accepts = 0;
  readonly requests: ReceivedRequest[] = [];
  /** Every byte received, across connections, in arrival order. */
  received: Uint8Array = new Uint8Array(0);
  /** Every byte received per connection, in accept order. */
  readonly byConnection: Uint8Array[] = [];
  readonly sockets = new Set<TcpSocket<UpstreamConn>>();
  readonly #listener: ReturnType<typeof rt.listenTcp<UpstreamConn>>;

  /**
   * @param handler answers each complete request.
   * @param onHead called when a request head has arrived (before its body), e.g. to send `100 Continue`.
   */
  constructor(
    readonly name = "up",
    handler?: UpstreamHandler,
    onHead?: (head: string, socket: TcpSocket<UpstreamConn>) => void,
  ) {
    const onRequest = handler ?? respondWith(name);
    this.#listener = rt.listenTcp<UpstreamConn>({
      hostname: "127.0.0.1",
      port: 0,
      handlers: {
        open: (s) => {
          s.data = { buf: new Uint8Array(0), index: this.accepts++, headSeen: false, served: 0 };
          this.byConnection.push(new Uint8Array(0));
          this.sockets.add(s);
        },
        data: (s, chunk) => {
          this.received = concatBytes(this.received, chunk);
          this.byConnection[s.data.index] = concatBytes(this.byConnection[s.data.index]!, chunk);
          s.data.buf = concatBytes(s.data.buf, chunk);
          for (;;) {
            if (onHead && !s.data.headSeen) {
              const t = text(s.data.buf);
              const he = t.indexOf("\r\n\r\n");
              if (he >= 0) {
                s.data.headSeen = true;
                onHead(t.slice(0, he + 4), s);
              }
            }
            const r = parseRequest(s.data.buf, s.data.index);
            if (!r) break;
            s.data.buf = s.data.buf.slice(r[1]);
            s.data.headSeen = false;
            s.data.served++;
            this.requests.push(r[0]);
            onRequest(r[0], s);
          }
        },
        end: (s) => s.end(),
        close: (s) => void this.sockets.delete(s),
      },
    });
    this.port = this.#listener.port;
  }

  get endpoint(): Endpoint {
    return endpoint(this.port);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.stop(true);
    for (const s of this.sockets) s.terminate();
  }
}

export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** A response as the raw client parsed it. */
export interface ParsedResponse {
  readonly status: number;
  readonly head: string;
  readonly headers: readonly (readonly [string, string])[];
  /** The payload (de-chunked when chunked). */
  readonly body: string;
  /** The body exactly as received. */
  readonly rawBody: string;
}

/** A raw TCP client: sends any bytes, parses responses one by one. */
export class RawClient implements AsyncDisposable {
  data: Uint8Array = new Uint8Array(0);
  #offset = 0;
  closed = false;
  /** Called when the socket can take more bytes after a short write. */
  ondrain: (() => void) | undefined;
  readonly #closed = Promise.withResolvers<void>();
  #sock!: TcpSocket<null>;

  /** The peer sent FIN. */
  eof = false;

  /** @param autoEnd close our side when the peer sends FIN (default); false keeps the socket half-open. */
  static async connect(port: number, hostname = "127.0.0.1", autoEnd = true): Promise<RawClient> {
    const c = new RawClient();
    c.#sock = await rt.connectTcp<null>({
      hostname,
      port,
      data: null,
      handlers: {
        data: (_s, chunk) => void (c.data = concatBytes(c.data, chunk)),
        drain: () => c.ondrain?.(),
        end: (s) => {
          c.eof = true;
          if (autoEnd) s.end();
        },
        close: () => {
          c.closed = true;
          c.#closed.resolve();
        },
      },
    });
    return c;
  }

  get socket(): TcpSocket<null> {
    return this.#sock;
  }

  send(data: string | Uint8Array): void {
    const b = typeof data === "string" ? bytes(data) : data;
    const n = this.#sock.write(b);
    if (n !== b.length) throw new Error(`Short write in test client: ${n} of ${b.length}`);
  }

  /** Resolves when the connection has closed. */
  get whenClosed(): Promise<void> {
    return this.#closed.promise;
  }

  /** Everything received and not yet consumed by readResponse. */
  get unread(): string {
    return text(this.data.subarray(this.#offset));
  }

  /** Wait for and consume the next response. `head: true` for a response to HEAD (no body). */
  async readResponse(opts: { head?: boolean; timeoutMs?: number } = {}): Promise<ParsedResponse> {
    let parsed: ParsedResponse | undefined;
    await waitFor(() => (parsed = this.#tryParse(opts.head ?? false)) !== undefined, "a response", opts.timeoutMs ?? 5000);
    return parsed!;
  }

  #tryParse(isHead: boolean): ParsedResponse | undefined {
    const s = text(this.data.subarray(this.#offset));
    const he = s.indexOf("\r\n\r\n");
    if (he < 0) return undefined;
    const head = s.slice(0, he + 4);
    const lines = head.slice(0, -4).split("\r\n");
    const status = Number(lines[0]!.split(" ")[1]);
    const headers = lines.slice(1).map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i), l.slice(i + 1).trim()] as const;
    });
    const h = { headers };
    let rawBody = "";
    let body = "";
    let end = he + 4;
    const te = header(h, "transfer-encoding");
    const cl = header(h, "content-length");
    if (isHead || status < 200 || status === 204 || status === 304) {
      // no body
    } else if (te?.toLowerCase() === "chunked") {
      let p = end;
      for (;;) {
        const le = s.indexOf("\r\n", p);
        if (le < 0) return undefined;
        const size = parseInt(s.slice(p, le).split(";")[0]!, 16);
        if (size === 0) {
          const t = s.indexOf("\r\n\r\n", le);
          if (t < 0) return undefined;
          p = t + 4;
          break;
        }
        if (s.length < le + 2 + size + 2) return undefined;
        body += s.slice(le + 2, le + 2 + size);
        p = le + 2 + size + 2;
      }
      rawBody = s.slice(end, p);
      end = p;
    } else if (cl !== undefined) {
      if (s.length < end + Number(cl)) return undefined;
      body = rawBody = s.slice(end, end + Number(cl));
      end += Number(cl);
    } else {
      if (!this.closed) return undefined;
      body = rawBody = s.slice(end);
      end = s.length;
    }
    this.#offset += end;
    return { status, head, headers, body, rawBody };
  }

  end(): void {
    this.#sock.end();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.closed) this.#sock.terminate();
  }
}

/** `fetch` through the proxy, returning status, body and headers. */
export async function get(url: string, init?: RequestInit): Promise<{ status: number; body: string; headers: Headers }> {
  const r = await fetch(url, init);
  return { status: r.status, body: await r.text(), headers: r.headers };
}
