/**
 * The request side of a downstream connection: read and validate the request head, pick the endpoint, build
 * the upstream head, and forward the body by its framing (Content-Length or validated chunked), with the
 * body limit. Plain functions of the {@link Downstream}: nothing here is allocated per request.
 */
import type { Endpoint } from "../../model/types.ts";
import { startAttempt } from "./attempt.ts";
import { ChunkedDecoder } from "./chunked.ts";
import { cookieEndpoint } from "./cookie.ts";
import type { Downstream } from "./downstream.ts";
import { hashKey } from "./hash-key.ts";
import { buildRequestHead, injected } from "./head.ts";
import { B_CHUNKED, B_LENGTH, B_NONE, C_CLOSE, C_KEEP_ALIVE, C_UPGRADE, CR, findHeadEnd, LF, M_CONNECT, M_HEAD, M_OTHER, M_POST, parseRequestHead, RequestInfo } from "./parser.ts";
import { errorResponse, type GatewayReason } from "./responses.ts";
import { acquireRequest, HASH_NONE } from "./settings.ts";
import { AWAIT_HEAD, CONNECTING, HEAD_TIMER, IDLE_TIMER, NO_TIMER, REQUEST_SENT, RESPONSE_HEAD } from "./state.ts";

/** Scratch parse result: used synchronously, copied out before any other parse. */
const REQ = new RequestInfo();

/** Largest first body slice copied into the head's write (bigger ones go in a second write, uncopied). */
export const COALESCE_BYTES = 16 * 1024;

/**
 * Add received bytes to {@link Downstream.buf}. A head arriving in many small pieces grows one buffer by
 * doubling (amortised linear), rather than being copied whole on every piece. Bytes already handed to a
 * socket all lie before `buf`, so writing after its end never touches them.
 */
export function bufferRequestBytes(d: Downstream, chunk: Uint8Array): void {
  const b = d.buf;
  if (!b) {
    d.buf = chunk;
    d.store = null;
    return;
  }
  const need = b.length + chunk.length;
  const store = d.store;
  if (store && b.buffer === store.buffer && b.byteOffset + need <= store.byteOffset + store.length) {
    const at = b.byteOffset - store.byteOffset;
    store.set(chunk, at + b.length);
    d.buf = store.subarray(at, at + need);
    return;
  }
  const grown = new Uint8Array(Math.max(need * 2, 4096));
  grown.set(b, 0);
  grown.set(chunk, b.length);
  d.store = grown;
  d.buf = grown.subarray(0, need);
}

/** Parse and start the requests in {@link Downstream.buf}, one at a time (the next once the current one is answered). */
export function readRequestHeads(d: Downstream): void {
  const max = d.proxy.options.maxHeaderBytes;
  while (d.phase === AWAIT_HEAD && d.buf && !d.out && !d.closed) {
    let buf = d.buf;
    // RFC 9112 §2.2: ignore empty lines before a request line.
    let s = 0;
    while (s + 1 < buf.length && buf[s] === CR && buf[s + 1] === LF) s += 2;
    if (s) {
      d.scanned = 0;
      if (s === buf.length) {
        d.buf = null;
        break;
      }
      d.buf = buf = buf.subarray(s);
    }
    if (buf[0] === LF) return d.fail(400, "Bad request: bare LF line ending", "bad_request");
    if (!d.headStarted) {
      // The head timer runs from the first byte of a request (from accept for the first request).
      d.headStarted = true;
      if (d.timer !== HEAD_TIMER) d.setTimer(HEAD_TIMER, d.settings.requestHeaderTimeoutMs);
    }
    const end = findHeadEnd(buf, 0, d.scanned, buf.length);
    if (end === 0) {
      d.scanned = buf.length;
      if (buf.length > max) return d.fail(431, `Request header fields too large: the request head exceeds ${max} bytes`, "header_too_large");
      if (d.clientEof) return d.closeClient();
      break;
    }
    if (end < 0) return d.fail(400, "Bad request: bare LF line ending", "bad_request");
    if (end > max) return d.fail(431, `Request header fields too large: the request head exceeds ${max} bytes`, "header_too_large");
    const status = parseRequestHead(buf, 0, end, REQ);
    if (status !== 0) return d.fail(status, `${statusText(status)}: ${REQ.error}`, parseReason(status));
    startRequest(d, buf, end);
  }
  // A client that half-closed between requests is done once everything it sent is answered.
  if (d.phase === AWAIT_HEAD && d.clientEof && !d.buf && !d.out) return d.closeClient();
  d.updateReading();
}

/** Start forwarding the request just parsed into {@link REQ} (same turn as the parse). */
function startRequest(d: Downstream, buf: Uint8Array, headEnd: number): void {
  const req = REQ;
  const conn = req.conn;
  d.isHead = req.method === M_HEAD;
  d.idempotent = req.method !== M_POST && req.method !== M_OTHER && req.method !== M_CONNECT;
  d.minor = req.minor;
  d.keepAlive = (conn & C_CLOSE) === 0 && (req.minor === 1 || (conn & C_KEEP_ALIVE) !== 0);
  d.upgradeReq = (conn & C_UPGRADE) !== 0 && req.upgrade >= 0;
  d.headStarted = false;
  d.scanned = 0;
  const route = d.proxy.ref.current;
  d.route = route;
  const cfg = (d.settings = d.proxy.settings(route));
  d.upStatus = 0;
  const tel = d.tel;
  if (tel !== null) tel.beginRequest(d, buf, req, route);
  // Validate the body bytes that came with the head before anything goes upstream.
  const maxBody = cfg.maxRequestBodyBytes;
  let n = 0;
  let done = true;
  if (req.chunked) {
    d.reqBody = B_CHUNKED;
    const dec = (d.reqDecoder ??= new ChunkedDecoder(d.proxy.options.maxHeaderBytes));
    dec.reset();
    const r = dec.feed(buf, headEnd, buf.length);
    if (r < 0) return d.fail(400, `Bad request: invalid chunked body: ${dec.error}`, "bad_request");
    if (maxBody > 0 && dec.payload > maxBody) return tooLarge(d, maxBody);
    n = r - headEnd;
    done = dec.done;
  } else if (req.contentLength > 0) {
    if (maxBody > 0 && req.contentLength > maxBody) return tooLarge(d, maxBody);
    d.reqBody = B_LENGTH;
    const avail = buf.length - headEnd;
    n = avail < req.contentLength ? avail : req.contentLength;
    d.reqRemaining = req.contentLength - n;
    done = d.reqRemaining === 0;
  } else d.reqBody = B_NONE;
  d.reqDone = done;

  const pick = d.pick;
  pick.exclude = undefined;
  pick.hashKey = cfg.hashSource === HASH_NONE ? undefined : hashKey(buf, req.fieldCount, cfg);
  let ep: Endpoint | undefined;
  const cookie = route.cookie;
  if (cookie === undefined) ep = route.balancer.pick(pick);
  else ep = (d.cookieEp = cookieEndpoint(buf, req.fieldCount, cookie)) ?? route.balancer.pick(pick);
  const rest = headEnd + n;
  if (!ep) return refuse(d, 503, `no endpoints available for service "${route.entrypoint.name}"\n`, "no_endpoints", buf, rest);
  const max = cfg.maxConcurrentRequests;
  if (max > 0) {
    if (!acquireRequest(cfg.cluster, max)) {
      return refuse(d, 503, `Service unavailable: service "${route.entrypoint.name}" has ${max} requests in flight (circuit breaker)\n`, "circuit_open", buf, rest);
    }
    d.circuit = cfg.cluster;
  }
  const small = n <= COALESCE_BYTES;
  const tr = tel === null ? null : tel.trace;
  d.first = buildRequestHead(buf, req, d.ctx, d.upgradeReq, small ? rest : headEnd, tr === null ? null : tr.inject);
  if (tel !== null) tel.traceAt = tr === null ? -1 : injected.at;
  d.firstBody = small ? null : buf.subarray(headEnd, rest);
  d.buf = rest < buf.length ? buf.subarray(rest) : null;
  d.streamed = false;
  d.retried = false;
  d.attempts = 0;
  d.phase = CONNECTING;
  d.setTimer(NO_TIMER, 0);
  d.reqDeadline = cfg.maxRequestDurationMs > 0 ? d.proxy.clock + cfg.maxRequestDurationMs : 0;
  startAttempt(d, ep, false, "");
}

/**
 * Answer the request just parsed with a generated error without forwarding it. A body-less request on a
 * keep-alive HTTP/1.1 connection keeps the connection (the read loop goes on with pipelined requests);
 * otherwise it closes.
 */
function refuse(d: Downstream, status: number, body: string, why: GatewayReason, buf: Uint8Array, rest: number): void {
  if (d.reqBody === B_NONE && d.keepAlive && d.minor === 1 && !d.proxy.draining) {
    d.buf = rest < buf.length ? buf.subarray(rest) : null;
    d.clientWrite(errorResponse(status, body, false, why));
    const tel = d.tel;
    if (tel !== null && tel.inflight) tel.report(d, status, why);
    d.setTimer(IDLE_TIMER, d.settings.idleTimeoutMs);
    return; // AWAIT_HEAD: the read loop goes on with pipelined requests
  }
  d.fail(status, body, why);
}

/** 413: the request body is larger than the route allows. */
function tooLarge(d: Downstream, max: number): void {
  d.fail(413, `Content too large: the request body exceeds ${max} bytes`, "body_too_large");
}

/** Forward request body bytes (phase SENDING_BODY) by the request's framing; what follows the body is kept. */
export function requestBody(d: Downstream, chunk: Uint8Array): void {
  let n: number;
  let done: boolean;
  if (d.reqBody === B_LENGTH) {
    n = chunk.length < d.reqRemaining ? chunk.length : d.reqRemaining;
    d.reqRemaining -= n;
    done = d.reqRemaining === 0;
  } else {
    const dec = d.reqDecoder!;
    n = dec.feed(chunk, 0, chunk.length);
    if (n < 0) {
      if (d.resPhase === RESPONSE_HEAD) return d.fail(400, `Bad request: invalid chunked body: ${dec.error}`, "bad_request");
      return d.abort("bad_request");
    }
    const max = d.settings.maxRequestBodyBytes;
    if (max > 0 && dec.payload > max) {
      // Nothing past the limit goes upstream; the upstream connection is dropped with the request.
      if (d.resPhase === RESPONSE_HEAD) return tooLarge(d, max);
      return d.abort("bad_request");
    }
    done = dec.done;
  }
  const u = d.up!;
  if (n > 0) {
    d.streamed = true;
    d.first = d.firstBody = null;
    u.write(n === chunk.length ? chunk : chunk.subarray(0, n));
    if (d.resPhase === RESPONSE_HEAD) d.deadline = d.proxy.clock + d.settings.responseHeaderTimeoutMs;
  }
  if (done) {
    d.reqDone = true;
    d.phase = REQUEST_SENT;
    if (n < chunk.length) d.buf = chunk.subarray(n);
  }
  d.updateReading();
}

/** The reason of a request-head parse failure's status. */
function parseReason(status: number): GatewayReason {
  switch (status) {
    case 405:
      return "method_not_allowed";
    case 431:
      return "header_too_large";
    case 505:
      return "version_not_supported";
    default:
      return "bad_request";
  }
}

function statusText(status: number): string {
  switch (status) {
    case 400:
      return "Bad request";
    case 405:
      return "Method not allowed";
    case 431:
      return "Request header fields too large";
    case 505:
      return "HTTP version not supported";
    default:
      return "Error";
  }
}
