/**
 * HTTP/1.1 clients of an h2c listener (a client whose first bytes are not the HTTP/2 preface): every request goes
 * upstream as an HTTP/2 stream through a {@link Call}, as an HTTP/2 client's stream does (balanced each, pooled
 * upstream sessions, the same gateway errors, limits and telemetry), so backends that speak only h2c (gRPC servers)
 * serve HTTP/1.1 clients too.
 *
 * One request at a time, in order (pipelined requests wait for the current response). Heads are parsed by the
 * HTTP/1.1 forwarder's strict parser (`../http/parser.ts`: what it rejects is answered 400, 431, 405 or 505 and the
 * connection closed); connection-specific fields are dropped (RFC 9113 §8.2.2), names lower-cased, Host becomes
 * `:authority`. The body (Content-Length or chunked, de-chunked) goes upstream as DATA with flow control: bytes the
 * upstream has not taken yet are counted, and over {@link HIGH_WATER} the client socket is paused. The response:
 * Content-Length when the upstream gave one, else chunked (HTTP/1.0: until close); HTTP/2 trailers become chunked
 * trailers for a client that sent `TE: trailers`, else are dropped; a client socket that does not take the body
 * holds the upstream stream (its window is acknowledged only as the socket takes the bytes).
 *
 * `Upgrade: h2c` (RFC 7540 §3.2): a body-less request with `Upgrade: h2c`, one `HTTP2-Settings` and Connection
 * naming both is answered `101 Switching Protocols`, and the connection continues as HTTP/2 with that request as
 * stream 1 ({@link Http1Events.upgrade}). Any other Upgrade is ignored (the request is served as HTTP/1.1).
 *
 * @example
 * // In the listener, once the first bytes are not the preface:
 * conn.h1 = new Http1Conn(proxy, socket, socket.remoteAddress, { upgrade: (u, rest) => serveH2(u, rest) });
 * conn.h1.onData(firstBytes);
 */
import type { TcpSocket } from "../../runtime/types.ts";
import { concat, latin1Bytes } from "../http/bytes.ts";
import { ChunkedDecoder } from "../http/chunked.ts";
import {
  C_CLOSE,
  C_KEEP_ALIVE,
  C_UPGRADE,
  CR,
  F_CONNECTION,
  F_EXPECT,
  F_HOST,
  F_KEEP_ALIVE,
  F_PROXY_CONNECTION,
  F_TE,
  F_TRANSFER_ENCODING,
  F_UPGRADE,
  fields,
  findHeadEnd,
  kinds,
  latin1,
  LF,
  M_HEAD,
  parseRequestHead,
  RequestInfo,
} from "../http/parser.ts";
import { errorResponse, type GatewayReason, reasonPhrase } from "../http/responses.ts";
import { LINGER_MS } from "../http/tunnel.ts";
import { routeTraffic } from "../types.ts";
import { Call, type CallDownstream } from "./call.ts";
import { headerValue } from "./grpc.ts";
import type { H2Host } from "./host.ts";
import type { H2Upgrade, HeaderList } from "./session.ts";

/** Request body bytes handed to the call and not yet taken upstream above which the client socket is paused. */
export const HIGH_WATER = 64 * 1024;

/** Scratch parse result: used synchronously, copied out before any other parse. */
const REQ = new RequestInfo();
const EMPTY = new Uint8Array(0);
const CRLF = latin1Bytes("\r\n");
const LAST_CHUNK = latin1Bytes("0\r\n\r\n");
const CONTINUE = latin1Bytes("HTTP/1.1 100 Continue\r\n\r\n");
const SWITCHING = latin1Bytes("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");

/** Connection phases. */
const S_HEAD = 0;
const S_BODY = 1;
const S_WAIT = 2;
const S_DONE = 3;

/** Request and response body framings. */
const B_NONE = 0;
const B_LENGTH = 1;
const B_CHUNKED = 2;
const B_CLOSE = 3;

/** Reason phrases of the usual statuses; others get the gateway's table, then none (allowed: RFC 9112 §4). */
const PHRASES: Readonly<Record<number, string>> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  415: "Unsupported Media Type",
  429: "Too Many Requests",
  500: "Internal Server Error",
  501: "Not Implemented",
};

/** What the listener provides besides the call host. */
export interface Http1Host extends H2Host {
  /** Draining: answer the request in flight with `Connection: close`, take no more. */
  readonly draining: boolean;
}

export interface Http1Events {
  /** We answered `101 Switching Protocols`: serve the socket as HTTP/2 from now on, `rest` first (bytes read after the request). */
  upgrade(upgrade: H2Upgrade, rest: Uint8Array | null): void;
}

/** One HTTP/1.1 client connection of an h2c listener (owns the socket once the protocol is known). */
export class Http1Conn {
  /** Received bytes not yet consumed (a partial head, or pipelined requests). */
  buf: Uint8Array | null = null;
  /** Bytes of {@link buf} already searched for the end of the head. */
  scanned = 0;
  phase = S_HEAD;
  /** The exchange in flight (from its head until its response ended). */
  ex: Exchange | null = null;
  /** Bytes the socket has not taken yet. */
  out: Uint8Array[] | null = null;
  /** Request body bytes handed to the call and not yet acknowledged (taken upstream). */
  unacked = 0;
  paused = false;
  clientEof = false;
  closed = false;
  /** End the socket once {@link out} is written. */
  ending = false;
  /** Epoch ms of {@link end}: the socket is reset when the client has not closed its side {@link LINGER_MS} later. */
  endedAt = 0;
  /** Epoch ms since when the connection has had no exchange (idle timeout). */
  idleSince = Date.now();
  /** Epoch ms of the first byte of an incomplete head (0: none). */
  headSince = 0;
  decoder: ChunkedDecoder | null = null;
  /** De-chunked ranges of the bytes just fed to {@link decoder}. */
  readonly ranges: Uint8Array[] = [];
  readonly sink = (b: Uint8Array, s: number, e: number): void => void this.ranges.push(b.subarray(s, e));
  readonly next = (): void => this.readHeads();

  constructor(
    readonly host: Http1Host,
    readonly socket: TcpSocket<unknown>,
    readonly client: string,
    readonly events: Http1Events,
  ) {}

  // ---- socket events -------------------------------------------------------------------------------

  onData(chunk: Uint8Array): void {
    if (this.closed || this.phase === S_DONE) return;
    if (this.phase === S_BODY) return this.body(chunk);
    this.buf = this.buf === null ? chunk : concat(this.buf, chunk);
    if (this.phase === S_HEAD) return this.readHeads();
    // A pipelined request while the response is in flight: kept, up to a head's worth.
    if (this.phase === S_WAIT && this.buf.length > this.host.options.maxHeaderBytes) this.pause();
  }

  onDrain(): void {
    const out = this.out;
    if (out === null || this.closed) return;
    while (out.length > 0) {
      const c = out[0]!;
      const n = this.socket.write(c);
      if (n < 0) return;
      if (n < c.length) {
        out[0] = c.subarray(n);
        return;
      }
      out.shift();
    }
    this.out = null;
    if (this.ending) return this.socket.end();
    const ex = this.ex;
    if (ex !== null && ex.waiting) {
      ex.waiting = false;
      (ex.data as Call).downWritable();
    }
  }

  /** The client sent FIN: done once the request in flight is answered; a request cut short is cancelled. */
  onEnd(): void {
    this.clientEof = true;
    if (this.phase === S_BODY) return this.abort();
    if (this.ex === null) this.end();
  }

  /** The socket closed: the call in flight (if any) is cancelled. */
  onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.out = null;
    const ex = this.ex;
    this.ex = null;
    if (ex !== null && !ex.done) (ex.data as Call).downReset();
  }

  /** Idle and head timeouts (called about once a second). */
  sweep(now: number): void {
    if (this.closed) return;
    if (this.ending) {
      if (now - this.endedAt >= LINGER_MS) this.abort();
      return;
    }
    if (this.ex !== null) return;
    const o = this.host.options;
    if (this.headSince !== 0 && now - this.headSince >= o.requestHeaderTimeoutMs) {
      return this.fail(408, "Request timeout: the request head did not arrive in time", "request_timeout");
    }
    if (this.buf === null && now - this.idleSince >= o.idleTimeoutMs) this.end();
  }

  /** The listener drains: close once the request in flight is answered. */
  drain(): void {
    if (this.ex === null) this.end();
  }

  // ---- requests ------------------------------------------------------------------------------------

  /** Parse and start the next request in {@link buf}. */
  readHeads(): void {
    if (this.phase !== S_HEAD || this.ex !== null || this.closed) return;
    let buf = this.buf;
    if (buf === null) {
      if (this.clientEof) this.end();
      return;
    }
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    let s = 0;
    while (s + 1 < buf.length && buf[s] === CR && buf[s + 1] === LF) s += 2;
    if (s > 0) {
      this.scanned = 0;
      buf = this.buf = s === buf.length ? null : buf.subarray(s);
      if (buf === null) return;
    }
    const max = this.host.options.maxHeaderBytes;
    const end = findHeadEnd(buf, 0, this.scanned, buf.length);
    if (end === 0) {
      this.scanned = buf.length;
      if (this.headSince === 0) this.headSince = Date.now();
      if (buf.length > max) return this.fail(431, `Request header fields too large: the request head exceeds ${max} bytes`, "header_too_large");
      if (this.clientEof) this.end();
      return;
    }
    if (end < 0) return this.fail(400, "Bad request: bare LF line ending", "bad_request");
    if (end > max) return this.fail(431, `Request header fields too large: the request head exceeds ${max} bytes`, "header_too_large");
    const status = parseRequestHead(buf, 0, end, REQ);
    if (status !== 0) {
      const why: GatewayReason = status === 431 ? "header_too_large" : status === 405 ? "method_not_allowed" : status === 505 ? "version_not_supported" : "bad_request";
      return this.fail(status, `${reasonPhrase(status)}: ${REQ.error}`, why);
    }
    this.start(buf, end);
  }

  /** Start the request just parsed into {@link REQ} (same turn as the parse). */
  start(buf: Uint8Array, headEnd: number): void {
    const req = REQ;
    this.scanned = 0;
    this.headSince = 0;
    const rest = headEnd < buf.length ? buf.subarray(headEnd) : null;
    this.buf = null;
    const ex = new Exchange(this);
    const headers = requestFields(buf, req, ex);
    ex.isHead = req.method === M_HEAD;
    ex.minor = req.minor;
    ex.keepAlive = (req.conn & C_CLOSE) === 0 && (req.minor === 1 || (req.conn & C_KEEP_ALIVE) !== 0);
    ex.body = req.chunked ? B_CHUNKED : req.contentLength > 0 ? B_LENGTH : B_NONE;
    ex.remaining = req.contentLength;
    if (ex.body === B_NONE && req.minor === 1 && !this.host.draining) {
      const settings = h2cUpgrade(buf, req);
      if (settings !== null && this.out === null) {
        this.phase = S_DONE;
        this.closed = true;
        if (this.socket.write(SWITCHING) !== SWITCHING.length) return this.socket.terminate();
        return this.events.upgrade({ headers, settings }, rest);
      }
    }
    if (req.expectContinue && ex.body !== B_NONE && req.minor === 1) this.write(CONTINUE);
    if (ex.body === B_CHUNKED) (this.decoder ??= new ChunkedDecoder(this.host.options.maxHeaderBytes)).reset();
    this.ex = ex;
    this.phase = ex.body === B_NONE ? S_WAIT : S_BODY;
    ex.reqEnded = ex.body === B_NONE;
    new Call(this.host, ex, headers, ex.reqEnded, this.client);
    if (rest === null) return;
    if (this.phase === S_BODY) this.body(rest);
    else this.buf = rest;
  }

  /** Request body bytes (phase S_BODY): to the call by the request's framing; what follows is the next request. */
  body(chunk: Uint8Array): void {
    const ex = this.ex!;
    const call = ex.data as Call;
    let rest: Uint8Array | null = null;
    if (ex.body === B_LENGTH) {
      const n = chunk.length < ex.remaining ? chunk.length : ex.remaining;
      ex.remaining -= n;
      if (n < chunk.length) rest = chunk.subarray(n);
      this.deliver(ex, call, n === chunk.length ? chunk : chunk.subarray(0, n), ex.remaining === 0);
    } else {
      const dec = this.decoder!;
      const r = dec.feed(chunk, 0, chunk.length, this.sink);
      const ranges = this.ranges;
      if (r < 0) {
        ranges.length = 0;
        call.downReset();
        if (!ex.responded) return this.fail(400, `Bad request: invalid chunked body: ${dec.error}`, "bad_request");
        return this.abort();
      }
      if (r < chunk.length) rest = chunk.subarray(r);
      const done = dec.done;
      if (ranges.length === 0 && done) this.deliver(ex, call, EMPTY, true);
      for (let i = 0; i < ranges.length && this.ex === ex; i++) this.deliver(ex, call, ranges[i]!, done && i === ranges.length - 1);
      ranges.length = 0;
    }
    if (this.ex !== ex || !ex.reqEnded) return;
    this.phase = S_WAIT;
    if (rest !== null) this.buf = rest;
  }

  /** Hand request body bytes to the call; over {@link HIGH_WATER} not yet taken upstream, stop reading. */
  deliver(ex: Exchange, call: Call, chunk: Uint8Array, end: boolean): void {
    if (end) ex.reqEnded = true;
    this.unacked += chunk.length;
    call.downData(chunk, end);
    if (this.unacked >= HIGH_WATER) this.pause();
  }

  /** The call acknowledged `n` request bytes (taken upstream). */
  consumed(n: number): void {
    this.unacked -= n;
    if (this.paused && this.unacked < HIGH_WATER && this.phase === S_BODY) this.resume();
  }

  /** The exchange's response ended. */
  exchangeDone(ex: Exchange): void {
    this.ex = null;
    this.unacked = 0;
    this.idleSince = Date.now();
    if (!ex.keepAlive || !ex.reqEnded || this.host.draining) return this.end();
    this.phase = S_HEAD;
    if (this.paused) this.resume();
    // The next request starts in its own turn (not inside the call that just answered).
    queueMicrotask(this.next);
  }

  // ---- writing and ends -----------------------------------------------------------------------------

  /** Write `b` (kept until sent); false while the socket is backed up. */
  write(b: Uint8Array): boolean {
    if (this.closed) return true;
    if (this.out !== null) {
      this.out.push(b);
      return false;
    }
    const n = this.socket.write(b);
    if (n < 0 || n === b.length) return true;
    this.out = [n === 0 ? b : b.subarray(n)];
    return false;
  }

  /** A gateway-made error before any response byte, then close. */
  fail(status: number, message: string, reason: GatewayReason): void {
    const t = routeTraffic(this.host.options.telemetry, this.host.ref.current);
    if (t !== undefined) {
      t.request(status, this.headSince === 0 ? 0 : (Date.now() - this.headSince) / 1000);
      t.error(reason);
    }
    this.write(errorResponse(status, `${message}\n`, true, reason));
    this.end();
  }

  /** End the socket once everything queued is written; read nothing more. */
  end(): void {
    if (this.ending || this.closed) return;
    this.ending = true;
    this.endedAt = Date.now();
    this.phase = S_DONE;
    this.buf = null;
    if (this.out === null) this.socket.end();
  }

  /** Drop the connection now (a request cut short, a response the upstream broke off). */
  abort(): void {
    this.phase = S_DONE;
    this.onClose();
    this.socket.terminate();
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    this.socket.resume();
  }
}

/**
 * The HTTP/2 fields of the request parsed into `req`: pseudo-header fields from the request line and Host, then the
 * fields with connection-specific ones dropped (RFC 9113 §8.2.2), names lower-case. Sets `ex.teTrailers`.
 */
function requestFields(buf: Uint8Array, req: RequestInfo, ex: Exchange): [string, string][] {
  let path: string;
  let authority = "";
  if (req.pathStart >= 0) {
    path = latin1(buf, req.pathStart, req.targetEnd);
    if (path === "" || path.charCodeAt(0) === 63) path = `/${path}`;
    authority = latin1(buf, req.authStart, req.authEnd);
  } else path = latin1(buf, req.targetStart, req.targetEnd);
  if (authority === "" && req.host >= 0) authority = latin1(buf, fields[req.host * 5 + 2]!, fields[req.host * 5 + 3]!);
  const out: [string, string][] = [[":method", latin1(buf, req.start, req.methodEnd)], [":scheme", "http"]];
  if (authority !== "") out.push([":authority", authority]);
  out.push([":path", path]);
  for (let i = 0; i < req.fieldCount; i++) {
    const k = kinds[i]!;
    if (k === F_HOST || k === F_CONNECTION || k === F_KEEP_ALIVE || k === F_PROXY_CONNECTION || k === F_TRANSFER_ENCODING || k === F_UPGRADE) continue;
    // Expect: 100-continue is answered here (the body is flow-controlled anyway).
    if (k === F_EXPECT && req.expectContinue) continue;
    const o = i * 5;
    const value = latin1(buf, fields[o + 2]!, fields[o + 3]!);
    if (k === F_TE) {
      if (value.toLowerCase() !== "trailers") continue;
      ex.teTrailers = true;
      out.push(["te", "trailers"]);
      continue;
    }
    out.push([latin1(buf, fields[o]!, fields[o + 1]!).toLowerCase(), value]);
  }
  return out;
}

/**
 * The decoded HTTP2-Settings of a valid h2c upgrade request (RFC 7540 §3.2: `Upgrade` lists h2c, one
 * `HTTP2-Settings` in base64url, Connection names both), else null.
 */
function h2cUpgrade(buf: Uint8Array, req: RequestInfo): Uint8Array | null {
  if ((req.conn & C_UPGRADE) === 0 || req.upgrade < 0 || req.connOther === null || !req.connOther.includes("http2-settings")) return null;
  const u = req.upgrade * 5;
  const protocols = latin1(buf, fields[u + 2]!, fields[u + 3]!).toLowerCase().split(",");
  if (!protocols.some((p) => p.trim() === "h2c")) return null;
  let value: string | undefined;
  for (let i = 0; i < req.fieldCount; i++) {
    const o = i * 5;
    if (fields[o + 1]! - fields[o]! !== 14 || latin1(buf, fields[o]!, fields[o + 1]!).toLowerCase() !== "http2-settings") continue;
    if (value !== undefined) return null;
    value = latin1(buf, fields[o + 2]!, fields[o + 3]!);
  }
  if (value === undefined || !/^[A-Za-z0-9_-]*={0,2}$/.test(value)) return null;
  const b64 = value.replace(/=+$/, "").replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  if (bin.length % 6 !== 0) return null;
  return latin1Bytes(bin);
}

/** One request and its response: the call's downstream (see {@link CallDownstream}). */
export class Exchange implements CallDownstream {
  /** The call (set by it). */
  data: unknown = undefined;
  isHead = false;
  minor = 1;
  keepAlive = true;
  /** The client sent `TE: trailers`: HTTP/2 trailers go to it as chunked trailers. */
  teTrailers = false;
  body = B_NONE;
  remaining = 0;
  reqEnded = false;
  /** A final response head was written. */
  responded = false;
  /** The response's body framing (B_NONE for HEAD, 204, 304). */
  framing = B_NONE;
  done = false;
  /** `sendData` returned false: the call waits for `downWritable`. */
  waiting = false;

  constructor(readonly conn: Http1Conn) {}

  get current(): boolean {
    return this.conn.ex === this && !this.done;
  }

  sendHeaders(headers: HeaderList, endStream: boolean): void {
    if (!this.current) return;
    const status = Number(headerValue(headers, ":status") ?? "0");
    if (status < 200) {
      // Informational: to HTTP/1.1 clients only (a 100 we already sent is not repeated).
      if (this.minor === 1 && status !== 100 && status !== 101) this.conn.write(latin1Bytes(`HTTP/1.1 ${status} ${phrase(status)}\r\n${fieldLines(headers)}\r\n`));
      return;
    }
    this.responded = true;
    const conn = this.conn;
    const bodiless = this.isHead || status === 204 || status === 304;
    const length = headerValue(headers, "content-length");
    let framing = "";
    if (bodiless) this.framing = B_NONE;
    else if (endStream) {
      this.framing = B_NONE;
      if (length === undefined) framing = "content-length: 0\r\n";
    } else if (length !== undefined) this.framing = B_LENGTH;
    else if (this.minor === 1) {
      this.framing = B_CHUNKED;
      framing = "transfer-encoding: chunked\r\n";
    } else {
      this.framing = B_CLOSE;
      this.keepAlive = false;
    }
    // A request still arriving when the response starts: the connection closes after it.
    if (!this.reqEnded || conn.host.draining) this.keepAlive = false;
    const connection = !this.keepAlive ? "connection: close\r\n" : this.minor === 0 ? "connection: keep-alive\r\n" : "";
    conn.write(latin1Bytes(`HTTP/1.1 ${status} ${phrase(status)}\r\n${fieldLines(headers)}${framing}${connection}\r\n`));
    if (endStream) this.#ended();
  }

  sendData(chunk: Uint8Array, endStream: boolean): boolean {
    if (!this.current) return true;
    let ok = true;
    if (this.framing === B_CHUNKED) {
      if (chunk.length > 0) ok = this.conn.write(chunkBytes(chunk, endStream));
      else if (endStream) ok = this.conn.write(LAST_CHUNK);
    } else if (this.framing !== B_NONE && chunk.length > 0) ok = this.conn.write(chunk);
    if (endStream) this.#ended();
    else if (!ok) this.waiting = true;
    return ok;
  }

  sendTrailers(headers: HeaderList): void {
    if (!this.current) return;
    if (this.framing === B_CHUNKED) this.conn.write(latin1Bytes(`0\r\n${this.teTrailers ? fieldLines(headers) : ""}\r\n`));
    this.#ended();
  }

  /** The call broke off: the client sees the connection drop (HTTP/1.1 has no other way to say it). */
  reset(_code: number): void {
    if (!this.current) return;
    this.done = true;
    this.conn.abort();
  }

  consumed(n: number): void {
    if (this.conn.ex === this) this.conn.consumed(n);
  }

  #ended(): void {
    this.done = true;
    if (this.framing === B_CLOSE) this.keepAlive = false;
    this.conn.exchangeDone(this);
  }
}

function phrase(status: number): string {
  const p = PHRASES[status];
  if (p !== undefined) return p;
  const g = reasonPhrase(status);
  return g === "Error" ? "" : g;
}

/** The regular fields of an HTTP/2 head as HTTP/1.1 field lines (pseudo-header and connection-specific fields dropped). */
function fieldLines(headers: HeaderList): string {
  let s = "";
  for (let i = 0; i < headers.length; i++) {
    const [n, v] = headers[i]!;
    if (n.charCodeAt(0) === 58 || n === "connection" || n === "keep-alive" || n === "transfer-encoding" || n === "upgrade" || n === "proxy-connection") continue;
    s += `${n}: ${v}\r\n`;
  }
  return s;
}

/** `chunk` as one chunk of a chunked body (and the last chunk after it when `last`), in one array. */
function chunkBytes(chunk: Uint8Array, last: boolean): Uint8Array {
  const size = chunk.length.toString(16);
  const n = size.length + 2 + chunk.length + 2 + (last ? LAST_CHUNK.length : 0);
  const out = new Uint8Array(n);
  let p = 0;
  for (let i = 0; i < size.length; i++) out[p++] = size.charCodeAt(i);
  out[p++] = CR;
  out[p++] = LF;
  out.set(chunk, p);
  p += chunk.length;
  out.set(CRLF, p);
  if (last) out.set(LAST_CHUNK, p + 2);
  return out;
}
