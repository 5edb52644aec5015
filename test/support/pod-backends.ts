/**
 * Backends that behave like real pods during a rollout, and the load clients that watch them through the
 * gateway. Everything runs on real loopback sockets through the runtime port (`rt`), so it works on Bun and Deno.
 *
 * Pods get their own loopback address (like a pod IP) and share one target port, so one EndpointSlice
 * lists them all, as the EndpointSlice controller writes it. A pod's life:
 *
 * - `running`: serves. HTTP pods keep connections alive.
 * - `terminating` ({@link HttpPod.terminate}, the SIGTERM of a server without a preStop hook): still accepts
 *   (its endpoint is `serving`), but answers every request with `Connection: close` and closes its idle
 *   keep-alive connections at once, as Go's `Server.Shutdown` does: a connection is idle once it has served a
 *   request and waits for the next; a new one that has not sent its first request yet is left to send it.
 *   TCP pods keep serving their open connections.
 * - `stopped` ({@link HttpPod.stop}): the listener is closed (the port refuses connections), requests in
 *   flight (and on new connections) finish (HTTP) or open connections end (TCP) within a grace period, then
 *   the process "exits":
 *   its sockets are closed, and bytes that still arrive on them are answered with a reset, as the kernel
 *   does for a closed socket.
 *
 * The load clients are written on raw sockets, so a reset, a close before the response, or a keep-alive
 * connection closed under an idle client are seen and counted exactly (a `fetch` would hide them).
 */
import { createHash } from "node:crypto";
import { rt } from "../../src/runtime/index.ts";
import type { TcpHandlers, TcpListener, TcpSocket } from "../../src/runtime/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const CRLF2 = enc.encode("\r\n\r\n");

// ---------------------------------------------------------------------------------------------------------
// Small pieces

/** A deadline-bounded poll for conditions inside this module (no sleeps as synchronisation). */
async function until(probe: () => boolean, timeoutMs: number, intervalMs = 5): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!probe()) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return true;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  const first = needle[0]!;
  outer: for (let i = hay.indexOf(first, from); i >= 0 && i <= hay.length - needle.length; i = hay.indexOf(first, i + 1)) {
    for (let j = 1; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** SHA-256 of `bytes`, hex. */
export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Writes with backpressure: what the socket did not take is written again on `drain`. */
class Writer {
  #queue: Uint8Array[] = [];
  #endAfter = false;
  #onFlushed: (() => void)[] = [];
  constructor(readonly socket: TcpSocket<unknown>) {}

  get pending(): boolean {
    return this.#queue.length > 0;
  }

  /** Queue `chunk`; resolves once the socket accepted all of it (or is closed). */
  write(chunk: Uint8Array): Promise<void> {
    this.#queue.push(chunk);
    if (this.#queue.length === 1) this.flush();
    if (this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#onFlushed.push(resolve));
  }

  /** Half-close (FIN) once everything queued is written. */
  end(): void {
    this.#endAfter = true;
    if (this.#queue.length === 0) this.socket.end();
  }

  /** Call from the `drain` handler. */
  flush(): void {
    while (this.#queue.length) {
      const c = this.#queue[0]!;
      const n = this.socket.write(c);
      if (n < 0) {
        this.#queue.length = 0;
        break;
      }
      if (n < c.length) {
        this.#queue[0] = c.subarray(n);
        return;
      }
      this.#queue.shift();
    }
    for (const f of this.#onFlushed.splice(0)) f();
    if (this.#endAfter) this.socket.end();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Pod addresses

/**
 * Pod IPs on the loopback network: `127.A.B.n` with `A.B` random per instance (test files running at once do
 * not collide), `n` counting up from 2. Linux routes all of 127.0.0.0/8 to `lo`, so each address can be bound.
 *
 * @example const net = new PodNetwork(); net.nextAddress(); // "127.143.7.2"
 */
export class PodNetwork {
  readonly prefix: string;
  #next = 2;
  constructor() {
    this.prefix = `127.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 256)}`;
  }

  /** A new pod IP (at most 253 per network). */
  nextAddress(): string {
    if (this.#next > 254) throw new Error(`Pod network "${this.prefix}.0/24" has no address left`);
    return `${this.prefix}.${this.#next++}`;
  }
}

/** Where a pod is in its life (see the module comment). */
export type PodPhase = "running" | "terminating" | "stopped";

/** Options shared by both kinds of pod. */
export interface PodOptions {
  /** Shown in responses (HTTP) and errors. */
  readonly name: string;
  /** The pod IP (a loopback address, see {@link PodNetwork}). */
  readonly hostname: string;
  /** The target port; 0 (default) picks a free one (read it back from `port`). */
  readonly port?: number | undefined;
}

/**
 * True when a TCP connection to `hostname:port` is refused (nothing listens), false when it is accepted
 * (then closed at once) or times out after 1 s.
 */
export async function connectRefused(hostname: string, port: number): Promise<boolean> {
  try {
    const s = await rt.connectTcp({ hostname, port, data: undefined, handlers: { data() {} }, timeoutMs: 1_000 });
    s.terminate();
    return false;
  } catch (err) {
    return (err as { code?: string }).code === "ECONNREFUSED";
  }
}

// ---------------------------------------------------------------------------------------------------------
// HTTP pod

/** What an HTTP pod saw. */
export interface HttpPodStats {
  /** Connections accepted. */
  connections: number;
  /** Requests answered. */
  requests: number;
  /** Requests answered after `terminate()` (each with `Connection: close`). */
  requestsWhileTerminating: number;
  /** Idle keep-alive connections the pod closed because it was terminating or stopping. */
  idleClosed: number;
  /** Connections that closed (or were reset) while a request was partly received or in flight. */
  aborted: number;
  /** Connections that ended with an error (a reset from the peer). */
  resets: number;
  /** Connections on which bytes arrived after the pod had closed them (answered with a reset). */
  lateData: number;
}

/** Options of {@link startHttpPod}. */
export interface HttpPodOptions extends PodOptions {
  /** Delay before each response, ms (a number or a function for a random delay; default 0). Keeps requests in flight. */
  readonly responseDelayMs?: number | (() => number) | undefined;
}

/** A pod-like HTTP/1.1 server. See the module comment for its phases. */
export interface HttpPod extends AsyncDisposable {
  readonly name: string;
  readonly hostname: string;
  readonly port: number;
  readonly phase: PodPhase;
  readonly stats: Readonly<HttpPodStats>;
  /** Status code of responses (default 200); set 500 to make the pod fail, back to 200 to heal it. */
  status: number;
  /** Connections open now. */
  readonly open: number;
  /** Requests received and not answered yet. */
  readonly inFlight: number;
  /** SIGTERM: `Connection: close` on every response from now on, idle keep-alive connections closed now. */
  terminate(): void;
  /**
   * Stop: close the listener (the port refuses), let requests in flight finish (up to `graceMs`, default
   * 5000), then close every socket. Resolves when done; terminates first if still running.
   */
  stop(options?: { graceMs?: number }): Promise<void>;
}

interface PodConn {
  readonly writer: Writer;
  /** Received and not yet parsed. */
  buf: Uint8Array;
  /** A complete request is being answered. */
  busy: boolean;
  /** The pod closed its side: data that arrives now gets a reset. */
  dead: boolean;
  /** The peer sent FIN. */
  peerEnded: boolean;
  /** Requests answered on this connection. */
  served: number;
}

interface ParsedRequest {
  method: string;
  target: string;
  headers: Map<string, string>;
  body: Uint8Array;
  /** Bytes of `buf` the request took. */
  consumed: number;
}

class BadRequest extends Error {
  override readonly name = "BadRequest";
}

/** Parse one request from the front of `buf`; undefined when incomplete. */
function parseRequest(buf: Uint8Array): ParsedRequest | undefined {
  const headEnd = indexOf(buf, CRLF2);
  if (headEnd < 0) {
    if (buf.length > 64 * 1024) throw new BadRequest("Request head over 64 KiB");
    return undefined;
  }
  const lines = dec.decode(buf.subarray(0, headEnd)).split("\r\n");
  const [method, target, version] = lines[0]!.split(" ");
  if (!method || !target || !version?.startsWith("HTTP/1.")) throw new BadRequest(`Bad request line "${lines[0]}"`);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i <= 0) throw new BadRequest(`Bad header line "${line}"`);
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  if (version === "HTTP/1.0") headers.set(":version", "1.0");
  let at = headEnd + 4;
  const te = headers.get("transfer-encoding");
  if (te !== undefined) {
    if (te.toLowerCase() !== "chunked") throw new BadRequest(`Unsupported transfer-encoding "${te}"`);
    const parts: Uint8Array[] = [];
    for (;;) {
      const eol = indexOf(buf, enc.encode("\r\n"), at);
      if (eol < 0) return undefined;
      const size = Number.parseInt(dec.decode(buf.subarray(at, eol)).split(";")[0]!.trim(), 16);
      if (!Number.isFinite(size) || size < 0) throw new BadRequest("Bad chunk size");
      if (size === 0) {
        // Trailers (if any) end with an empty line.
        const end = buf[eol + 2] === 13 && buf[eol + 3] === 10 ? eol + 4 : indexOf(buf, CRLF2, eol) + 4;
        if (end < 4 || end > buf.length) return undefined;
        const body = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let o = 0;
        for (const p of parts) {
          body.set(p, o);
          o += p.length;
        }
        return { method, target, headers, body, consumed: end };
      }
      if (eol + 2 + size + 2 > buf.length) return undefined;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
  }
  const cl = Number(headers.get("content-length") ?? "0");
  if (!Number.isInteger(cl) || cl < 0) throw new BadRequest(`Bad content-length "${headers.get("content-length")}"`);
  if (buf.length < at + cl) return undefined;
  return { method, target, headers, body: buf.slice(at, at + cl), consumed: at + cl };
}

/**
 * The body an {@link HttpPod} answers with: `<pod> <method> <target> <body length> <sha256 of body>`.
 * {@link parsePodReply} reads it back.
 */
export function podReply(pod: string, method: string, target: string, body: Uint8Array): string {
  return `${pod} ${method} ${target} ${body.length} ${sha256(body)}`;
}

/** The fields of a {@link podReply} body, or undefined when it is not one. */
export function parsePodReply(text: string): { pod: string; method: string; target: string; length: number; hash: string } | undefined {
  const [pod, method, target, length, hash, ...rest] = text.split(" ");
  if (!pod || !method || !target || !length || !hash || rest.length) return undefined;
  return { pod, method, target, length: Number(length), hash };
}

/**
 * Start a pod-like HTTP/1.1 server on `hostname:port` (Content-Length and chunked request bodies, keep-alive,
 * one request at a time per connection). Every response body is {@link podReply}; header `x-pod` names the pod.
 *
 * @example
 * await using pod = startHttpPod({ name: "web-1", hostname: net.nextAddress() });
 * pod.terminate(); await pod.stop();
 */
export function startHttpPod(options: HttpPodOptions): HttpPod {
  const { name, hostname } = options;
  const delay = options.responseDelayMs ?? 0;
  const stats: HttpPodStats = { connections: 0, requests: 0, requestsWhileTerminating: 0, idleClosed: 0, aborted: 0, resets: 0, lateData: 0 };
  const conns = new Set<TcpSocket<PodConn>>();
  let phase: PodPhase = "running";
  let inFlight = 0;

  const closeConn = (s: TcpSocket<PodConn>) => {
    if (s.data.dead) return;
    s.data.dead = true;
    s.data.writer.end();
  };
  const isIdle = (c: PodConn) => !c.busy && c.buf.length === 0;
  /**
   * Idle between requests: what a terminating server closes. A new connection that has not sent its first
   * request yet is not idle (Go's `Server.Shutdown` leaves `StateNew` connections alone for 5 s): the request
   * may be on its way.
   */
  const isIdleKeepAlive = (c: PodConn) => c.served > 0 && isIdle(c);

  const answer = async (s: TcpSocket<PodConn>, req: ParsedRequest) => {
    const c = s.data;
    c.busy = true;
    inFlight++;
    const ms = typeof delay === "function" ? delay() : delay;
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
    const close =
      phase !== "running" ||
      c.peerEnded ||
      (req.headers.get("connection") ?? "").toLowerCase().includes("close") ||
      (req.headers.get(":version") === "1.0" && !(req.headers.get("connection") ?? "").toLowerCase().includes("keep-alive"));
    const body = enc.encode(podReply(name, req.method, req.target, req.body));
    const head =
      `HTTP/1.1 ${pod.status} ${pod.status < 400 ? "OK" : "Error"}\r\n` +
      `content-type: text/plain\r\ncontent-length: ${body.length}\r\nx-pod: ${name}\r\n` +
      (close ? "connection: close\r\n" : "") +
      "\r\n";
    stats.requests++;
    if (phase !== "running") stats.requestsWhileTerminating++;
    if (!c.dead) await c.writer.write(concat(enc.encode(head), body));
    inFlight--;
    c.served++;
    c.busy = false;
    if (close) closeConn(s);
    else pump(s);
  };

  const pump = (s: TcpSocket<PodConn>) => {
    const c = s.data;
    if (c.busy || c.dead || c.buf.length === 0) return;
    let req: ParsedRequest | undefined;
    try {
      req = parseRequest(c.buf);
    } catch (err) {
      void c.writer.write(enc.encode(`HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`));
      closeConn(s);
      stats.aborted++;
      void err;
      return;
    }
    if (!req) return;
    c.buf = c.buf.subarray(req.consumed);
    void answer(s, req);
  };

  const handlers: TcpHandlers<PodConn> = {
    open(s) {
      stats.connections++;
      s.data = { writer: new Writer(s as TcpSocket<unknown>), buf: new Uint8Array(0), busy: false, dead: false, peerEnded: false, served: 0 };
      conns.add(s);
      s.setNoDelay(true);
    },
    data(s, chunk) {
      const c = s.data;
      if (c.dead) {
        // A closed socket answers late bytes with a reset.
        stats.lateData++;
        s.terminate();
        return;
      }
      c.buf = concat(c.buf, chunk);
      pump(s);
    },
    drain(s) {
      s.data.writer.flush();
    },
    end(s) {
      const c = s.data;
      c.peerEnded = true;
      if (isIdle(c)) closeConn(s);
      else if (!c.busy) {
        // The peer gave up on a partly sent request.
        stats.aborted++;
        closeConn(s);
      }
    },
    close(s, error) {
      conns.delete(s);
      const c = s.data;
      if (error !== undefined && !c.dead) stats.resets++;
      if (!c.dead && !isIdle(c)) stats.aborted++;
      c.dead = true;
    },
  };

  const listener: TcpListener<PodConn> = rt.listenTcp<PodConn>({ hostname, port: options.port ?? 0, handlers });

  const terminate = () => {
    if (phase !== "running") return;
    phase = "terminating";
    for (const s of conns) {
      if (isIdleKeepAlive(s.data) && !s.data.dead) {
        stats.idleClosed++;
        closeConn(s);
      }
    }
  };

  const stop = async ({ graceMs = 5_000 }: { graceMs?: number } = {}) => {
    if (phase === "stopped") return;
    terminate();
    phase = "stopped";
    listener.stop(false);
    // Requests in flight finish, and new connections get to send theirs (answered with Connection: close).
    await until(() => [...conns].every((s) => s.data.dead || isIdleKeepAlive(s.data)), graceMs);
    // The process exits: every socket it still has is closed.
    for (const s of conns) {
      if (!s.data.dead && isIdle(s.data)) stats.idleClosed++;
      closeConn(s);
    }
  };

  const pod: HttpPod = {
    name,
    hostname,
    port: listener.port,
    status: 200,
    get phase() {
      return phase;
    },
    stats,
    get open() {
      return conns.size;
    },
    get inFlight() {
      return inFlight;
    },
    terminate,
    stop,
    async [Symbol.asyncDispose]() {
      await stop({ graceMs: 1_000 });
      for (const s of conns) s.terminate();
    },
  };
  return pod;
}

// ---------------------------------------------------------------------------------------------------------
// TCP echo pod

/** What a TCP echo pod saw. */
export interface TcpPodStats {
  connections: number;
  /** Bytes echoed. */
  bytes: number;
  /** Connections that ended with an error (a reset from the peer). */
  resets: number;
  /** Connections still open when the grace period of `stop()` ran out (closed with a reset). */
  killed: number;
}

/** A pod-like TCP echo server. Terminating changes nothing for it; stopping waits for its connections to end. */
export interface TcpPod extends AsyncDisposable {
  readonly name: string;
  readonly hostname: string;
  readonly port: number;
  readonly phase: PodPhase;
  readonly stats: Readonly<TcpPodStats>;
  /** Connections open now. */
  readonly open: number;
  /** SIGTERM: keeps serving (open connections finish, new ones are still accepted while the listener is up). */
  terminate(): void;
  /**
   * Close the listener (the port refuses), wait up to `graceMs` (default 5000) for open connections to end,
   * then reset the rest (counted in `killed`).
   */
  stop(options?: { graceMs?: number }): Promise<void>;
}

/**
 * Start a pod-like TCP echo server: echoes with backpressure, half-closes after the peer's FIN once flushed.
 *
 * @example await using pod = startTcpEchoPod({ name: "echo-1", hostname: net.nextAddress(), port });
 */
export function startTcpEchoPod(options: PodOptions): TcpPod {
  const { name, hostname } = options;
  const stats: TcpPodStats = { connections: 0, bytes: 0, resets: 0, killed: 0 };
  const conns = new Set<TcpSocket<Writer>>();
  let phase: PodPhase = "running";
  const handlers: TcpHandlers<Writer> = {
    open(s) {
      stats.connections++;
      s.data = new Writer(s as TcpSocket<unknown>);
      conns.add(s);
      s.setNoDelay(true);
    },
    data(s, chunk) {
      stats.bytes += chunk.length;
      void s.data.write(chunk);
      if (s.data.pending) s.pause();
    },
    drain(s) {
      s.data.flush();
      if (!s.data.pending) s.resume();
    },
    end(s) {
      s.data.end();
    },
    close(s, error) {
      conns.delete(s);
      if (error !== undefined) stats.resets++;
    },
  };
  const listener = rt.listenTcp<Writer>({ hostname, port: options.port ?? 0, handlers });
  const stop = async ({ graceMs = 5_000 }: { graceMs?: number } = {}) => {
    if (phase === "stopped") return;
    phase = "stopped";
    listener.stop(false);
    await until(() => conns.size === 0, graceMs);
    for (const s of conns) {
      stats.killed++;
      s.terminate();
    }
  };
  return {
    name,
    hostname,
    port: listener.port,
    get phase() {
      return phase;
    },
    stats,
    get open() {
      return conns.size;
    },
    terminate() {
      if (phase === "running") phase = "terminating";
    },
    stop,
    async [Symbol.asyncDispose]() {
      await stop({ graceMs: 0 });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Raw-socket HTTP client

/** How a client exchange failed. */
export type ClientFailureKind = "connect" | "reset" | "closed" | "timeout" | "protocol";

/** A failed exchange of a load client. */
export class ClientFailure extends Error {
  override readonly name = "ClientFailure";
  constructor(readonly kind: ClientFailureKind, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A parsed HTTP response. */
export interface RawResponse {
  readonly status: number;
  readonly headers: ReadonlyMap<string, string>;
  readonly body: Uint8Array;
  /** The response said `Connection: close`. */
  readonly close: boolean;
}

/** Parse one response from the front of `buf`; undefined when incomplete (`eof`: the peer has sent FIN). */
function parseResponse(buf: Uint8Array, eof: boolean): { res: RawResponse; consumed: number } | undefined {
  const headEnd = indexOf(buf, CRLF2);
  if (headEnd < 0) return undefined;
  const lines = dec.decode(buf.subarray(0, headEnd)).split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!);
  if (!m) throw new ClientFailure("protocol", `Bad status line "${lines[0]}"`);
  const status = Number(m[1]);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  const close = (headers.get("connection") ?? "").toLowerCase().includes("close");
  const at = headEnd + 4;
  const te = headers.get("transfer-encoding");
  if (te !== undefined && te.toLowerCase().includes("chunked")) {
    const parts: Uint8Array[] = [];
    let p = at;
    for (;;) {
      const eol = indexOf(buf, enc.encode("\r\n"), p);
      if (eol < 0) return undefined;
      const size = Number.parseInt(dec.decode(buf.subarray(p, eol)).split(";")[0]!.trim(), 16);
      if (!Number.isFinite(size)) throw new ClientFailure("protocol", "Bad chunk size in a response");
      if (size === 0) {
        const end = buf[eol + 2] === 13 && buf[eol + 3] === 10 ? eol + 4 : indexOf(buf, CRLF2, eol) + 4;
        if (end < 4 || end > buf.length) return undefined;
        const body = new Uint8Array(parts.reduce((n, x) => n + x.length, 0));
        let o = 0;
        for (const x of parts) {
          body.set(x, o);
          o += x.length;
        }
        return { res: { status, headers, body, close }, consumed: end };
      }
      if (eol + 2 + size + 2 > buf.length) return undefined;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      p = eol + 2 + size + 2;
    }
  }
  const cl = headers.get("content-length");
  if (cl !== undefined) {
    const n = Number(cl);
    if (buf.length < at + n) return undefined;
    return { res: { status, headers, body: buf.slice(at, at + n), close }, consumed: at + n };
  }
  // No length: the body runs to the end of the connection.
  if (!eof) return undefined;
  return { res: { status, headers, body: buf.slice(at), close: true }, consumed: buf.length };
}

interface ClientState {
  buf: Uint8Array;
  eof: boolean;
  closed: boolean;
  error: Error | undefined;
  waiter: ((err?: ClientFailure) => void) | undefined;
  writer: Writer | undefined;
  /** Resolved when the socket is fully closed (with its error). */
  readonly done: PromiseWithResolvers<Error | undefined>;
}

/**
 * One client connection speaking HTTP/1.1, one request at a time.
 *
 * @example
 * const c = await HttpClientConn.open("127.0.0.1", port);
 * const res = await c.request(enc.encode("GET / HTTP/1.1\r\nhost: x\r\n\r\n"));
 */
export class HttpClientConn {
  readonly #sock: TcpSocket<ClientState>;
  /** The peer closed this connection while no request was outstanding. */
  closedWhileIdle = false;
  #busy = false;

  private constructor(sock: TcpSocket<ClientState>) {
    this.#sock = sock;
    sock.data.writer = new Writer(sock as TcpSocket<unknown>);
  }

  /** Connect; rejects with a {@link ClientFailure} of kind `connect`. */
  static async open(hostname: string, port: number, timeoutMs = 5_000): Promise<HttpClientConn> {
    let conn: HttpClientConn | undefined;
    const state: ClientState = {
      buf: new Uint8Array(0),
      eof: false,
      closed: false,
      error: undefined,
      waiter: undefined,
      writer: undefined,
      done: Promise.withResolvers<Error | undefined>(),
    };
    const notify = () => {
      const w = state.waiter;
      if (w) w();
      else if (conn && (state.eof || state.closed)) conn.closedWhileIdle ||= !conn.#busy;
    };
    const handlers: TcpHandlers<ClientState> = {
      data(s, chunk) {
        s.data.buf = concat(s.data.buf, chunk);
        notify();
      },
      drain(s) {
        s.data.writer?.flush();
      },
      end(s) {
        s.data.eof = true;
        notify();
      },
      close(s, error) {
        s.data.closed = true;
        s.data.eof ||= error === undefined;
        s.data.error = error;
        s.data.done.resolve(error);
        notify();
      },
    };
    try {
      const sock = await rt.connectTcp<ClientState>({ hostname, port, data: state, handlers, timeoutMs });
      sock.setNoDelay(true);
      conn = new HttpClientConn(sock);
      return conn;
    } catch (err) {
      throw new ClientFailure("connect", `Cannot connect to ${hostname}:${port}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The connection can carry another request (not closed or half-closed by the peer). */
  get usable(): boolean {
    const d = this.#sock.data;
    return !d.eof && !d.closed;
  }

  /** Resolves when the socket is fully closed, with its error (a reset) if any. */
  get closed(): Promise<Error | undefined> {
    return this.#sock.data.done.promise;
  }

  /** Send `bytes` and read one response; rejects with a {@link ClientFailure}. */
  async request(bytes: Uint8Array, timeoutMs = 5_000): Promise<RawResponse> {
    const d = this.#sock.data;
    if (this.#busy) throw new Error("One request at a time");
    this.#busy = true;
    try {
      if (d.buf.length) throw new ClientFailure("protocol", `${d.buf.length} unsolicited bytes before the request: "${dec.decode(d.buf.subarray(0, 80))}"`);
      if (d.closed || d.eof) throw new ClientFailure("closed", "The connection was closed before the request was sent");
      void d.writer!.write(bytes);
      const deadline = setTimeout(() => d.waiter?.(new ClientFailure("timeout", `No response within ${timeoutMs} ms`)), timeoutMs);
      try {
        for (;;) {
          const parsed = parseResponse(d.buf, d.eof);
          if (parsed) {
            d.buf = d.buf.subarray(parsed.consumed);
            return parsed.res;
          }
          if (d.closed || d.eof) {
            const got = d.buf.length;
            if (d.error) throw new ClientFailure("reset", `Connection reset after ${got} response bytes: ${d.error.message}`);
            throw new ClientFailure("closed", `Connection closed after ${got} response bytes`);
          }
          const failure = await new Promise<ClientFailure | undefined>((resolve) => (d.waiter = resolve));
          d.waiter = undefined;
          if (failure) throw failure;
        }
      } finally {
        clearTimeout(deadline);
        d.waiter = undefined;
      }
    } finally {
      this.#busy = false;
    }
  }

  /** Half-close our side (the peer then closes). */
  end(): void {
    this.#sock.data.writer!.end();
  }

  /** Reset the connection. */
  destroy(): void {
    this.#sock.terminate();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Load generators

/** A bank of random bytes to cut request bodies and TCP payloads from. */
const randomBank = (() => {
  const b = new Uint8Array(256 * 1024);
  for (let o = 0; o < b.length; o += 65_536) crypto.getRandomValues(b.subarray(o, o + 65_536));
  return b;
})();

/** `n` random bytes (a copy: each request owns its buffer). */
export function randomBytes(n: number): Uint8Array {
  const off = Math.floor(Math.random() * (randomBank.length - n));
  return randomBank.slice(off, off + n);
}

/** Totals of an HTTP load. */
export interface HttpLoadStats {
  requests: number;
  ok: number;
  failed: number;
  /** Exchanges that ended in a reset connection. */
  resets: number;
  /** Keep-alive connections the gateway closed under an idle client without saying `Connection: close` first. */
  unexpectedCloses: number;
  connections: number;
  gets: number;
  posts: number;
  /** Successful responses per pod. */
  byPod: Record<string, number>;
  /** The first failures, described. */
  failures: string[];
}

/** Options of {@link startHttpLoad}. */
export interface HttpLoadOptions {
  /** Where the gateway listens. */
  readonly hostname?: string;
  readonly port: number;
  /** Workers that keep one connection alive across requests (default 4). */
  readonly keepAliveWorkers?: number;
  /** Workers that open a new connection for each request (`Connection: close`; default 2). */
  readonly newConnectionWorkers?: number;
  /** Share of requests that are POSTs with a random body (default 0.5). */
  readonly postShare?: number;
  /** Largest POST body, bytes (default 48 KiB); sizes are uniform in 1..max. */
  readonly maxBodyBytes?: number;
  /** Pause between a worker's requests, ms (default 2). */
  readonly paceMs?: number;
  /** Stop after this many requests in all (default 100 000). */
  readonly maxRequests?: number;
  /** Stop after this long, ms (default 45 000). */
  readonly maxMs?: number;
  /** Status codes that count as success (default [200]). */
  readonly okStatus?: readonly number[];
  /** Called after each exchange with its start (performance.now()), duration in ms (a new connection's includes connecting) and outcome. */
  readonly onExchange?: (startedAt: number, ms: number, ok: boolean) => void;
}

/** A running HTTP load. */
export interface HttpLoad extends AsyncDisposable {
  readonly stats: Readonly<HttpLoadStats>;
  /** Resolves with the totals once the load has ended by itself (`maxRequests` or `maxMs` reached). */
  readonly finished: Promise<HttpLoadStats>;
  /** Stop the workers (each finishes its current exchange) and resolve with the totals. */
  stop(): Promise<HttpLoadStats>;
}

/**
 * Constant, bounded HTTP load through the gateway: keep-alive and new-connection workers, GETs and POSTs
 * with random bodies. Each response must be 200 and echo the request's method, target and body hash.
 *
 * @example
 * await using load = startHttpLoad({ port });
 * // ... roll the Service ...
 * expect((await load.stop()).failed).toBe(0);
 */
export function startHttpLoad(options: HttpLoadOptions): HttpLoad {
  const hostname = options.hostname ?? "127.0.0.1";
  const { port } = options;
  const postShare = options.postShare ?? 0.5;
  const maxBody = options.maxBodyBytes ?? 48 * 1024;
  const pace = options.paceMs ?? 2;
  const maxRequests = options.maxRequests ?? 100_000;
  const deadline = performance.now() + (options.maxMs ?? 45_000);
  const okStatus = options.okStatus ?? [200];
  const stats: HttpLoadStats = { requests: 0, ok: 0, failed: 0, resets: 0, unexpectedCloses: 0, connections: 0, gets: 0, posts: 0, byPod: {}, failures: [] };
  let running = true;
  const go = () => running && stats.requests < maxRequests && performance.now() < deadline;
  const fail = (what: string) => {
    stats.failed++;
    if (stats.failures.length < 20) stats.failures.push(what);
  };

  const build = (id: string, close: boolean): { bytes: Uint8Array; method: string; target: string; body: Uint8Array } => {
    const post = Math.random() < postShare;
    const target = `/r/${id}`;
    const conn = close ? "connection: close\r\n" : "";
    if (!post) {
      stats.gets++;
      return { bytes: enc.encode(`GET ${target} HTTP/1.1\r\nhost: load\r\n${conn}\r\n`), method: "GET", target, body: new Uint8Array(0) };
    }
    stats.posts++;
    const body = randomBytes(1 + Math.floor(Math.random() * maxBody));
    const head = enc.encode(`POST ${target} HTTP/1.1\r\nhost: load\r\ncontent-type: application/octet-stream\r\ncontent-length: ${body.length}\r\n${conn}\r\n`);
    return { bytes: concat(head, body), method: "POST", target, body };
  };

  const check = (id: string, req: { method: string; target: string; body: Uint8Array }, res: RawResponse): boolean => {
    if (!okStatus.includes(res.status)) {
      fail(`${req.method} ${id}: status ${res.status}: ${dec.decode(res.body.subarray(0, 200))}`);
      return false;
    }
    const reply = parsePodReply(dec.decode(res.body));
    if (!reply || reply.method !== req.method || reply.target !== req.target || reply.length !== req.body.length || reply.hash !== sha256(req.body)) {
      fail(`${req.method} ${id}: the response does not echo the request: "${dec.decode(res.body.subarray(0, 200))}"`);
      return false;
    }
    stats.ok++;
    stats.byPod[reply.pod] = (stats.byPod[reply.pod] ?? 0) + 1;
    return true;
  };

  const failed = (id: string, err: unknown) => {
    if (err instanceof ClientFailure && err.kind === "reset") stats.resets++;
    fail(`${id}: ${err instanceof Error ? `${err.name} (${(err as ClientFailure).kind ?? "?"}): ${err.message}` : String(err)}`);
  };

  const open = async () => {
    const c = await HttpClientConn.open(hostname, port);
    stats.connections++;
    return c;
  };

  const keepAlive = async (w: number) => {
    let conn: HttpClientConn | undefined;
    for (let n = 0; go(); n++) {
      const id = `k${w}-${n}`;
      try {
        if (conn && !conn.usable) {
          if (conn.closedWhileIdle) {
            stats.unexpectedCloses++;
            fail(`${id}: the gateway closed an idle keep-alive connection without "Connection: close"`);
          }
          conn = undefined;
        }
        const t0 = performance.now();
        conn ??= await open();
        const req = build(id, false);
        stats.requests++;
        const res = await conn.request(req.bytes);
        const ok = check(id, req, res);
        options.onExchange?.(t0, performance.now() - t0, ok);
        if (res.close) {
          conn.end();
          const err = await conn.closed;
          if (err) {
            stats.resets++;
            fail(`${id}: reset after "Connection: close": ${err.message}`);
          }
          conn = undefined;
        }
      } catch (err) {
        failed(id, err);
        conn?.destroy();
        conn = undefined;
      }
      if (pace > 0) await new Promise((r) => setTimeout(r, pace));
    }
    if (conn) {
      conn.end();
      await Promise.race([conn.closed, new Promise((r) => setTimeout(r, 1_000))]);
    }
  };

  const newConnections = async (w: number) => {
    for (let n = 0; go(); n++) {
      const id = `n${w}-${n}`;
      let conn: HttpClientConn | undefined;
      try {
        const t0 = performance.now();
        conn = await open();
        const req = build(id, true);
        stats.requests++;
        const res = await conn.request(req.bytes);
        const ok = check(id, req, res);
        options.onExchange?.(t0, performance.now() - t0, ok);
        conn.end();
        const err = await Promise.race([conn.closed, new Promise<"slow">((r) => setTimeout(() => r("slow"), 2_000))]);
        if (err === "slow") fail(`${id}: the gateway kept the connection open after "Connection: close"`);
        else if (err) {
          stats.resets++;
          fail(`${id}: reset after the response: ${err.message}`);
        }
      } catch (err) {
        failed(id, err);
      } finally {
        conn?.destroy();
      }
      if (pace > 0) await new Promise((r) => setTimeout(r, pace));
    }
  };

  const workers = [
    ...Array.from({ length: options.keepAliveWorkers ?? 4 }, (_, i) => keepAlive(i)),
    ...Array.from({ length: options.newConnectionWorkers ?? 2 }, (_, i) => newConnections(i)),
  ];
  const done = Promise.all(workers).then(() => stats);
  const stop = () => {
    running = false;
    return done;
  };
  return { stats, finished: done, stop, [Symbol.asyncDispose]: async () => void (await stop()) };
}

/** Totals of a TCP load. */
export interface TcpLoadStats {
  /** Connections that completed with every byte echoed back. */
  ok: number;
  failed: number;
  /** Connections that ended in a reset. */
  resets: number;
  /** Connections opened (long-lived and short). */
  connections: number;
  /** Long-lived connections completed. */
  longLived: number;
  /** Round trips verified on long-lived connections. */
  exchanges: number;
  /** Bytes echoed and verified. */
  bytes: number;
  failures: string[];
}

/** Options of {@link startTcpLoad}. */
export interface TcpLoadOptions {
  readonly hostname?: string;
  readonly port: number;
  /** Workers holding long-lived connections (default 4): each connection makes `exchanges` paced round trips. */
  readonly longLivedWorkers?: number;
  /** Round trips per long-lived connection (default 30). */
  readonly exchanges?: number;
  /** Pause between round trips of a long-lived connection, ms (default 10). */
  readonly exchangePaceMs?: number;
  /** Workers opening short connections (default 2): send a payload, half-close, read the echo to the end. */
  readonly shortWorkers?: number;
  /** Largest payload of a short connection, bytes (default 32 KiB). */
  readonly maxPayloadBytes?: number;
  /** Pause between a short worker's connections, ms (default 2). */
  readonly paceMs?: number;
  readonly maxConnections?: number;
  readonly maxMs?: number;
}

/** A running TCP load. */
export interface TcpLoad extends AsyncDisposable {
  readonly stats: Readonly<TcpLoadStats>;
  /** Resolves with the totals once the load has ended by itself (`maxConnections` or `maxMs` reached). */
  readonly finished: Promise<TcpLoadStats>;
  /** Stop: long-lived connections end after their current round trip; resolves with the totals. */
  stop(): Promise<TcpLoadStats>;
}

interface EchoState {
  buf: Uint8Array;
  eof: boolean;
  closed: boolean;
  error: Error | undefined;
  wake: (() => void) | undefined;
}

/**
 * Constant, bounded TCP load through the gateway against echo backends: long-lived connections with paced
 * round trips and short connections with one payload each; every byte is checked.
 */
export function startTcpLoad(options: TcpLoadOptions): TcpLoad {
  const hostname = options.hostname ?? "127.0.0.1";
  const { port } = options;
  const exchanges = options.exchanges ?? 30;
  const exchangePace = options.exchangePaceMs ?? 10;
  const maxPayload = options.maxPayloadBytes ?? 32 * 1024;
  const pace = options.paceMs ?? 2;
  const maxConnections = options.maxConnections ?? 50_000;
  const deadline = performance.now() + (options.maxMs ?? 45_000);
  const stats: TcpLoadStats = { ok: 0, failed: 0, resets: 0, connections: 0, longLived: 0, exchanges: 0, bytes: 0, failures: [] };
  let running = true;
  const go = () => running && stats.connections < maxConnections && performance.now() < deadline;
  const fail = (what: string) => {
    stats.failed++;
    if (stats.failures.length < 20) stats.failures.push(what);
  };

  const connect = async () => {
    const state: EchoState = { buf: new Uint8Array(0), eof: false, closed: false, error: undefined, wake: undefined };
    const handlers: TcpHandlers<EchoState> = {
      data(s, chunk) {
        s.data.buf = concat(s.data.buf, chunk);
        s.data.wake?.();
      },
      end(s) {
        s.data.eof = true;
        s.data.wake?.();
      },
      close(s, error) {
        s.data.closed = true;
        s.data.eof ||= error === undefined;
        s.data.error = error;
        s.data.wake?.();
      },
    };
    const sock = await rt.connectTcp<EchoState>({ hostname, port, data: state, handlers, timeoutMs: 5_000 });
    stats.connections++;
    return { sock, writer: new Writer(sock as TcpSocket<unknown>), state };
  };
  type Conn = Awaited<ReturnType<typeof connect>>;

  /** Wait until `cond` holds or the connection fails; throws with a reset or close description. */
  const waitUntil = async (c: Conn, cond: () => boolean, what: string, timeoutMs = 5_000) => {
    const limit = performance.now() + timeoutMs;
    while (!cond()) {
      if (c.state.error) throw new ClientFailure("reset", `Reset while ${what} (${c.state.buf.length} bytes in): ${c.state.error.message}`);
      if (c.state.closed || (c.state.eof && what !== "waiting for the end")) throw new ClientFailure("closed", `Closed while ${what} (${c.state.buf.length} bytes in)`);
      const left = limit - performance.now();
      if (left <= 0) throw new ClientFailure("timeout", `Timed out ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        c.state.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      c.state.wake = undefined;
    }
  };

  const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

  /** Half-close, expect the echo side to end cleanly with nothing more. */
  const finish = async (c: Conn, id: string) => {
    c.writer.end();
    await waitUntil(c, () => c.state.eof || c.state.closed, "waiting for the end");
    if (c.state.buf.length) throw new ClientFailure("protocol", `${c.state.buf.length} unexpected bytes before the end`);
    if (c.state.error) throw new ClientFailure("reset", `Reset at the end: ${c.state.error.message}`);
    void id;
  };

  const onError = (id: string, err: unknown, c: Conn | undefined) => {
    if (err instanceof ClientFailure && err.kind === "reset") stats.resets++;
    else if (c?.state.error) stats.resets++;
    fail(`${id}: ${(err as Error).message}`);
    c?.sock.terminate();
  };

  const longLived = async (w: number) => {
    for (let n = 0; go(); n++) {
      const id = `L${w}-${n}`;
      let c: Conn | undefined;
      try {
        c = await connect();
        for (let i = 0; i < exchanges && running && performance.now() < deadline; i++) {
          const msg = randomBytes(64 + Math.floor(Math.random() * 2_000));
          void c.writer.write(msg);
          const cc = c;
          await waitUntil(c, () => cc.state.buf.length >= msg.length, `round trip ${i}`);
          const echoed = c.state.buf.subarray(0, msg.length);
          c.state.buf = c.state.buf.subarray(msg.length);
          if (!same(echoed, msg)) throw new ClientFailure("protocol", `Round trip ${i}: the echo differs`);
          stats.exchanges++;
          stats.bytes += msg.length;
          if (exchangePace > 0) await new Promise((r) => setTimeout(r, exchangePace));
        }
        await finish(c, id);
        stats.ok++;
        stats.longLived++;
      } catch (err) {
        onError(id, err, c);
      }
    }
  };

  const short = async (w: number) => {
    for (let n = 0; go(); n++) {
      const id = `S${w}-${n}`;
      let c: Conn | undefined;
      try {
        c = await connect();
        const payload = randomBytes(1 + Math.floor(Math.random() * maxPayload));
        void c.writer.write(payload);
        c.writer.end();
        const cc = c;
        await waitUntil(c, () => cc.state.eof || cc.state.closed, "waiting for the end");
        if (c.state.error) throw new ClientFailure("reset", `Reset after ${c.state.buf.length} of ${payload.length} bytes: ${c.state.error.message}`);
        if (!same(c.state.buf, payload)) throw new ClientFailure("protocol", `Echo of ${c.state.buf.length} bytes differs from the ${payload.length} sent`);
        stats.bytes += payload.length;
        stats.ok++;
      } catch (err) {
        onError(id, err, c);
      }
      if (pace > 0) await new Promise((r) => setTimeout(r, pace));
    }
  };

  const workers = [
    ...Array.from({ length: options.longLivedWorkers ?? 4 }, (_, i) => longLived(i)),
    ...Array.from({ length: options.shortWorkers ?? 2 }, (_, i) => short(i)),
  ];
  const done = Promise.all(workers).then(() => stats);
  const stop = () => {
    running = false;
    return done;
  };
  return { stats, finished: done, stop, [Symbol.asyncDispose]: async () => void (await stop()) };
}
