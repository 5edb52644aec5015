/**
 * Builds the heads the forwarder sends: the upstream request (hop-by-hop fields dropped, forwarding
 * fields added, HTTP/1.1 request line) and the downstream response (hop-by-hop fields dropped,
 * Connection set as the downstream connection needs). Kept field lines are copied byte for byte
 * from the received head, in runs, using the positions {@link parseRequestHead}/{@link parseResponseHead}
 * left in the scratch table, so this must run in the same turn as the parse.
 */
import { copyRange, latin1Bytes, putLatin1, rangeEquals } from "./bytes.ts";
import {
  F_CONTENT_LENGTH,
  F_FORWARDED,
  F_HOST,
  F_TRANSFER_ENCODING,
  F_UPGRADE,
  F_X_FORWARDED_FOR,
  F_X_FORWARDED_HOST,
  F_X_FORWARDED_OTHER,
  F_X_FORWARDED_PROTO,
  fields,
  HOP_BY_HOP,
  kinds,
  latin1,
  type RequestInfo,
  type ResponseInfo,
} from "./parser.ts";

/** Where a downstream connection was accepted (read only when needed: each read is a `getsockname`). */
export interface LocalEnd {
  readonly localAddress: string;
  readonly localPort: number;
}

/** Per-downstream-connection facts the request head needs, plus a cache of the forwarding fields. */
export class ClientContext {
  /** Client IP as written in X-Forwarded-For (IPv4-mapped IPv6 shown as IPv4). */
  readonly ip: string;
  /** The `for=` parameter of Forwarded (IPv6 quoted and bracketed). */
  readonly forwardedFor: string;
  /** Keep the client's X-Forwarded-* and Forwarded fields and append to them. */
  readonly trusted: boolean;
  readonly #local: LocalEnd;
  #localHost = "";
  #cacheHost: Uint8Array | null = null;
  #cacheSuffix: Uint8Array | null = null;

  constructor(remoteAddress: string, local: LocalEnd, trusted: boolean) {
    this.ip = normalizeIp(remoteAddress);
    this.forwardedFor = this.ip.includes(":") ? `"[${this.ip}]"` : this.ip;
    this.#local = local;
    this.trusted = trusted;
  }

  /** Host to send upstream for HTTP/1.0 requests without one: the address the client connected to. */
  get localHost(): string {
    if (this.#localHost === "") {
      const local = normalizeIp(this.#local.localAddress);
      const port = this.#local.localPort;
      this.#localHost = local.includes(":") ? `[${local}]:${port}` : `${local}:${port}`;
    }
    return this.#localHost;
  }

  /**
   * The forwarding fields plus the head's final CRLF for an untrusted client, cached by Host value: per
   * connection, and the last one built for any connection (clients behind one address, or one client opening
   * connection after connection, share it).
   */
  suffixFor(buf: Uint8Array, hs: number, he: number): Uint8Array {
    const cached = this.#cacheHost;
    if (cached && this.#cacheSuffix && rangeEquals(buf, hs, he, cached)) return this.#cacheSuffix;
    const last = lastSuffix;
    if (last !== null && last.ip === this.ip && rangeEquals(buf, hs, he, last.host)) {
      this.#cacheHost = last.host;
      return (this.#cacheSuffix = last.suffix);
    }
    const host = buf.slice(hs, he);
    const suffix = latin1Bytes(forwardingFields(this.ip, this.forwardedFor, latin1(buf, hs, he), null, false, false) + "\r\n");
    this.#cacheHost = host;
    this.#cacheSuffix = suffix;
    lastSuffix = { ip: this.ip, host, suffix };
    return suffix;
  }
}

/** The forwarding fields built last, for any connection (see {@link ClientContext.suffixFor}); never mutated. */
let lastSuffix: { readonly ip: string; readonly host: Uint8Array; readonly suffix: Uint8Array } | null = null;

/** Strip the IPv4-mapped prefix so IPv4 clients of a dual-stack listener read as IPv4. */
function normalizeIp(addr: string): string {
  return addr.startsWith("::ffff:") && addr.includes(".") ? addr.slice(7) : addr;
}

function forwardingFields(ip: string, forFor: string, host: string, priorFor: string | null, hasProto: boolean, hasHost: boolean): string {
  let s = `X-Forwarded-For: ${priorFor ? `${priorFor}, ${ip}` : ip}\r\n`;
  if (!hasProto) s += "X-Forwarded-Proto: http\r\n";
  if (host && !hasHost) s += `X-Forwarded-Host: ${host}\r\n`;
  s += `Forwarded: for=${forFor}${host ? `;host="${host}"` : ""};proto=http\r\n`;
  return s;
}

const CONNECTION_UPGRADE = latin1Bytes("Connection: upgrade\r\n");
const CONNECTION_CLOSE = latin1Bytes("Connection: close\r\n");
const CONNECTION_KEEP_ALIVE = latin1Bytes("Connection: keep-alive\r\n");
const HTTP11_EOL = latin1Bytes(" HTTP/1.1\r\n");
const HOST_PREFIX = latin1Bytes("Host: ");
const TE_CHUNKED = latin1Bytes("Transfer-Encoding: chunked\r\n");
const CONTENT_LENGTH_PREFIX = latin1Bytes("Content-Length: ");

/** Whether field `k` of a request is dropped (not copied) when forwarding upstream. */
function dropRequestField(k: number, upgrade: boolean, absolute: boolean, trusted: boolean, reframe: boolean): boolean {
  if (HOP_BY_HOP[k] === 1) return !(k === F_UPGRADE && upgrade);
  switch (k) {
    case F_HOST:
      return absolute;
    case F_X_FORWARDED_FOR:
      return true; // re-emitted (combined when trusted)
    case F_X_FORWARDED_PROTO:
    case F_X_FORWARDED_HOST:
    case F_X_FORWARDED_OTHER:
    case F_FORWARDED:
      return !trusted;
    case F_CONTENT_LENGTH:
    case F_TRANSFER_ENCODING:
      return reframe; // re-emitted canonically
    default:
      return false;
  }
}

/**
 * The request head to send upstream for the request parsed into `info` from `buf`, followed by the first
 * body bytes buf[info.headEnd..bodyEnd) (sent in the same write; pass `info.headEnd` for none). `upgrade`
 * keeps Upgrade and sends `Connection: upgrade`.
 */
export function buildRequestHead(
  buf: Uint8Array,
  info: RequestInfo,
  ctx: ClientContext,
  upgrade: boolean,
  bodyEnd: number,
  trace: TraceInject | null = null,
): Uint8Array {
  const absolute = info.authStart >= 0;
  // Host value: the absolute-form authority wins (RFC 9112 §3.2.2), then the Host field.
  let hs = -1;
  let he = -1;
  if (absolute) {
    hs = info.authStart;
    he = info.authEnd;
  } else if (info.host >= 0) {
    hs = fields[info.host * 5 + 2]!;
    he = fields[info.host * 5 + 3]!;
  }
  const synthHost = hs < 0 ? ctx.localHost : "";

  let suffix: Uint8Array;
  if (!ctx.trusted) {
    suffix = hs >= 0 ? ctx.suffixFor(buf, hs, he) : latin1Bytes(forwardingFields(ctx.ip, ctx.forwardedFor, synthHost, null, false, false) + "\r\n");
  } else {
    let prior: string | null = null;
    let hasProto = false;
    let hasHost = false;
    for (let i = 0; i < info.fieldCount; i++) {
      const k = kinds[i]!;
      if (k === F_X_FORWARDED_FOR) {
        const v = latin1(buf, fields[i * 5 + 2]!, fields[i * 5 + 3]!);
        if (v) prior = prior ? `${prior}, ${v}` : v;
      } else if (k === F_X_FORWARDED_PROTO) hasProto = true;
      else if (k === F_X_FORWARDED_HOST) hasHost = true;
    }
    const host = hs >= 0 ? latin1(buf, hs, he) : synthHost;
    suffix = latin1Bytes(forwardingFields(ctx.ip, ctx.forwardedFor, host, prior, hasProto, hasHost) + "\r\n");
  }

  const headEnd = info.headEnd;
  const bodyLen = bodyEnd - headEnd;
  const start = info.start;
  const last = info.headEnd - 2; // start of the final empty line
  if (!info.rewrite && !upgrade && trace === null) {
    // Fast path: origin-form HTTP/1.1 with nothing to drop (a lone `Connection: keep-alive` stays: the
    // upstream connection is persistent too): copy the head, append the forwarding fields.
    const headLen = last - start;
    const out = new Uint8Array(headLen + suffix.length + bodyLen);
    const pos = copyRange(out, copyRange(out, 0, buf, start, last), suffix, 0, suffix.length);
    if (bodyLen > 0) copyRange(out, pos, buf, headEnd, bodyEnd);
    return out;
  }

  // Upper bound: the received head, a rebuilt request line, a Host line, Connection: upgrade, the suffix.
  const reframe = info.reframe;
  const max =
    (last - start) + 16 + (he - hs) + synthHost.length + 8 + CONNECTION_UPGRADE.length + suffix.length + bodyLen + (trace ? trace.line.length : 0) +
    (reframe ? TE_CHUNKED.length + CONTENT_LENGTH_PREFIX.length + 20 : 0);
  const out = new Uint8Array(max);
  let pos = 0;
  if (info.minor === 1 && !absolute) {
    pos = copyRange(out, 0, buf, start, info.lineEnd);
  } else {
    pos = copyRange(out, 0, buf, start, info.methodEnd + 1); // method SP
    if (absolute) {
      const ps = info.pathStart;
      if (ps === info.targetEnd || buf[ps] !== 47) out[pos++] = 47; // "/" before an empty path or a query
      pos = copyRange(out, pos, buf, ps, info.targetEnd);
    } else {
      pos = copyRange(out, pos, buf, info.targetStart, info.targetEnd);
    }
    pos = copyRange(out, pos, HTTP11_EOL, 0, HTTP11_EOL.length);
  }
  let d1 = -1;
  let d2 = -1;
  if (trace !== null) {
    injected.at = pos;
    pos = copyRange(out, pos, trace.line, 0, trace.line.length);
    d1 = trace.drop1;
    d2 = trace.drop2;
  }
  let run = info.lineEnd;
  for (let i = 0; i < info.fieldCount; i++) {
    if (i !== d1 && i !== d2 && !dropRequestField(kinds[i]!, upgrade, absolute, ctx.trusted, reframe)) continue;
    const ls = fields[i * 5]!;
    if (ls > run) pos = copyRange(out, pos, buf, run, ls);
    run = fields[i * 5 + 4]!;
  }
  if (last > run) pos = copyRange(out, pos, buf, run, last);
  if (absolute || synthHost) {
    pos = copyRange(out, pos, HOST_PREFIX, 0, HOST_PREFIX.length);
    if (absolute) {
      pos = copyRange(out, pos, buf, hs, he);
    } else pos = putLatin1(out, pos, synthHost);
    out[pos++] = 13;
    out[pos++] = 10;
  }
  if (upgrade) {
    pos = copyRange(out, pos, CONNECTION_UPGRADE, 0, CONNECTION_UPGRADE.length);
  }
  if (reframe) {
    if (info.chunked) pos = copyRange(out, pos, TE_CHUNKED, 0, TE_CHUNKED.length);
    else {
      pos = copyRange(out, pos, CONTENT_LENGTH_PREFIX, 0, CONTENT_LENGTH_PREFIX.length);
      pos = putLatin1(out, pos, String(info.contentLength));
      out[pos++] = 13;
      out[pos++] = 10;
    }
  }
  pos = copyRange(out, pos, suffix, 0, suffix.length);
  if (bodyLen > 0) pos = copyRange(out, pos, buf, headEnd, bodyEnd);
  return pos === max ? out : out.slice(0, pos);
}

/**
 * Trace context to write into the upstream head: `line` (a `traceparent` field line, plus `tracestate`)
 * goes right after the request line; field lines `drop1`/`drop2` (the client's, or -1) are left out.
 */
export interface TraceInject {
  readonly line: Uint8Array;
  readonly drop1: number;
  readonly drop2: number;
}

/** Where the last {@link buildRequestHead} with a {@link TraceInject} put `line` in its output. */
export const injected = { at: -1 };

/** What to say in the downstream response's Connection field. */
export const CONN_AS_IS = 0;
export const CONN_CLOSE = 1;
export const CONN_KEEP_ALIVE = 2;
export const CONN_UPGRADE = 3;

/**
 * The response head to send downstream for the response parsed into `info` from buf[start..info.headEnd),
 * followed by the body bytes buf[info.headEnd..bodyEnd) in the same array (for one write); or null when the
 * received head can be forwarded unchanged. `dropFraming` removes Transfer-Encoding (the body is being
 * de-chunked for an HTTP/1.0 client). `addLine` is a field line (with CRLF) to append, e.g. the affinity
 * cookie's Set-Cookie. The result is sized exactly (no view of a larger array: see {@link copyRange}).
 */
export function buildResponseHead(
  buf: Uint8Array,
  start: number,
  info: ResponseInfo,
  conn: number,
  dropFraming: boolean,
  addLine: Uint8Array | null = null,
  bodyEnd = info.headEnd,
): Uint8Array | null {
  if (!info.rewrite && conn === CONN_AS_IS && !dropFraming && addLine === null) return null;
  const last = info.headEnd - 2;
  const extra = conn === CONN_CLOSE ? CONNECTION_CLOSE : conn === CONN_KEEP_ALIVE ? CONNECTION_KEEP_ALIVE : conn === CONN_UPGRADE ? CONNECTION_UPGRADE : null;
  const n = info.fieldCount;
  let dropped = 0;
  for (let i = 0; i < n; i++) if (dropResponseField(kinds[i]!, conn, dropFraming)) dropped += fields[i * 5 + 4]! - fields[i * 5]!;
  const out = new Uint8Array(last - start - dropped + (extra ? extra.length : 0) + (addLine ? addLine.length : 0) + 2 + (bodyEnd - info.headEnd));
  let pos = 0;
  let run = start;
  for (let i = 0; i < n; i++) {
    if (!dropResponseField(kinds[i]!, conn, dropFraming)) continue;
    const ls = fields[i * 5]!;
    if (ls > run) pos = copyRange(out, pos, buf, run, ls);
    run = fields[i * 5 + 4]!;
  }
  if (last > run) pos = copyRange(out, pos, buf, run, last);
  if (extra) pos = copyRange(out, pos, extra, 0, extra.length);
  if (addLine) pos = copyRange(out, pos, addLine, 0, addLine.length);
  out[pos++] = 13;
  out[pos++] = 10;
  if (bodyEnd > info.headEnd) copyRange(out, pos, buf, info.headEnd, bodyEnd);
  return out;
}

/** Whether field `k` of a response is dropped (not copied) when forwarding downstream. */
function dropResponseField(k: number, conn: number, dropFraming: boolean): boolean {
  return HOP_BY_HOP[k] === 1 ? !(k === F_UPGRADE && conn === CONN_UPGRADE) : dropFraming && k === F_TRANSFER_ENCODING;
}
