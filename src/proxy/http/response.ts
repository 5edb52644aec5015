/**
 * The response side of a downstream connection: read and validate the upstream's response head (relaying
 * interim 1xx heads), rebuild it for the client (connection handling, affinity cookie), forward the body by
 * its framing (de-chunked for HTTP/1.0 clients), and finish the exchange: release or drop the upstream
 * connection, then wait for the next request or close. Plain functions of the {@link Downstream}.
 */
import { endRequest } from "./attempt.ts";
import { concat } from "./bytes.ts";
import { ChunkedDecoder } from "./chunked.ts";
import type { Downstream } from "./downstream.ts";
import { buildResponseHead, CONN_AS_IS, CONN_CLOSE, CONN_KEEP_ALIVE } from "./head.ts";
import { B_CHUNKED, B_CLOSE, B_LENGTH, B_NONE, C_CLOSE, C_KEEP_ALIVE, findHeadEnd, parseResponseHead, ResponseInfo, responseFraming } from "./parser.ts";
import { COALESCE_BYTES, readRequestHeads } from "./request.ts";
import { AWAIT_HEAD, IDLE_TIMER, NO_RESPONSE, RESPONSE_BODY, RESPONSE_HEAD, STREAM_TIMER } from "./state.ts";
import { switchProtocols } from "./tunnel.ts";

/** Scratch parse result: used synchronously, copied out before any other parse. */
export const RES = new ResponseInfo();

/** Response bytes from the upstream (not a tunnel): the head, or the body. */
export function responseData(d: Downstream, chunk: Uint8Array): void {
  d.first = d.firstBody = null;
  if (d.resPhase === RESPONSE_HEAD) responseHead(d, chunk);
  else if (d.resPhase === RESPONSE_BODY) responseBody(d, chunk, 0);
}

/** Read the response head (phase RESPONSE_HEAD): interim heads are relayed, the final one starts the body. */
function responseHead(d: Downstream, chunk: Uint8Array): void {
  const max = d.proxy.options.maxHeaderBytes;
  let buf = d.resBuf ? concat(d.resBuf, chunk) : chunk;
  for (;;) {
    const end = findHeadEnd(buf, 0, d.resScanned, buf.length);
    if (end === 0) {
      if (buf.length > max) return badGateway(d, "the response head is too large");
      d.resBuf = buf;
      d.resScanned = buf.length;
      return;
    }
    if (end < 0) return badGateway(d, "bare LF in the response head");
    if (end > max) return badGateway(d, "the response head is too large");
    if (!parseResponseHead(buf, 0, end, RES)) return badGateway(d, `invalid response head: ${RES.error}`);
    const status = RES.status;
    if (status < 200 && status !== 101) {
      // Interim response: relay to HTTP/1.1 clients, then keep waiting for the final one.
      if (d.minor === 1) d.clientWrite(buildResponseHead(buf, 0, RES, CONN_AS_IS, false) ?? buf.subarray(0, end));
      d.deadline = d.proxy.clock + d.settings.responseHeaderTimeoutMs;
      d.resScanned = 0;
      if (end === buf.length) {
        d.resBuf = null;
        return;
      }
      buf = buf.subarray(end);
      continue;
    }
    d.resBuf = null;
    d.resScanned = 0;
    if (status === 101) return switchProtocols(d, buf, end);
    return finalResponse(d, buf, end);
  }
}

/** Relay the final response head just parsed into {@link RES} (RESPONSE_HEAD to RESPONSE_BODY), with the first body bytes. */
function finalResponse(d: Downstream, buf: Uint8Array, end: number): void {
  const res = RES;
  d.upStatus = res.status;
  const tel = d.tel;
  if (tel !== null) tel.status = res.status;
  const framing = responseFraming(res, d.isHead);
  const upKeep = res.minor === 1 ? (res.conn & C_CLOSE) === 0 : (res.conn & C_KEEP_ALIVE) !== 0 && (res.conn & C_CLOSE) === 0;
  d.upReusable = upKeep && framing !== B_CLOSE && !d.upgradeReq;
  const dechunk = (d.dechunk = d.minor === 0 && framing === B_CHUNKED);
  d.closeAfter = !d.keepAlive || d.proxy.draining || (d.clientEof && !d.buf) || framing === B_CLOSE || dechunk || !d.reqDone;
  const conn = d.closeAfter ? CONN_CLOSE : d.minor === 0 ? CONN_KEEP_ALIVE : CONN_AS_IS;
  d.resBody = framing;
  d.resRemaining = res.contentLength;
  d.resPhase = RESPONSE_BODY;
  d.setTimer(STREAM_TIMER, d.settings.idleTimeoutMs);

  if (framing === B_NONE) {
    if (end < buf.length) d.upReusable = false; // bytes after a bodiless response
    const head = buildResponseHead(buf, 0, res, conn, false, setCookie(d));
    d.clientWrite(head ?? (end === buf.length ? buf : buf.subarray(0, end)));
    return responseDone(d);
  }
  if (framing === B_LENGTH || (framing === B_CHUNKED && !dechunk)) {
    // The body bytes of this chunk (validated first: nothing is sent before a 502 is ruled out).
    let n: number;
    let done: boolean;
    if (framing === B_LENGTH) {
      const avail = buf.length - end;
      n = avail < d.resRemaining ? avail : d.resRemaining;
      d.resRemaining -= n;
      done = d.resRemaining === 0;
    } else {
      const dec = (d.resDecoder ??= new ChunkedDecoder(d.proxy.options.maxHeaderBytes));
      dec.reset();
      const r = dec.feed(buf, end, buf.length);
      if (r < 0) {
        d.resPhase = RESPONSE_HEAD; // nothing sent yet: a 502 can still be the answer
        return badGateway(d, `invalid chunked response body: ${dec.error}`);
      }
      n = r - end;
      done = dec.done;
    }
    // One write for head and first body bytes, copied into the rebuilt head when small.
    const small = n <= COALESCE_BYTES;
    const head = buildResponseHead(buf, 0, res, conn, false, setCookie(d), small ? end + n : end);
    if (!head) d.clientWrite(end + n === buf.length ? buf : buf.subarray(0, end + n));
    else {
      d.clientWrite(head);
      if (!small) d.clientWrite(buf.subarray(end, end + n));
    }
    if (done) {
      if (end + n < buf.length) d.upReusable = false;
      return responseDone(d);
    }
    d.updateUpstreamReading();
    return;
  }
  if (dechunk) (d.resDecoder ??= new ChunkedDecoder(d.proxy.options.maxHeaderBytes)).reset();
  const head = buildResponseHead(buf, 0, res, conn, dechunk, setCookie(d));
  d.clientWrite(head ?? buf.subarray(0, end));
  if (end < buf.length) responseBody(d, buf, end);
  else d.updateUpstreamReading();
}

/** Forward response body bytes from `start` (phase RESPONSE_BODY) by the response's framing. */
function responseBody(d: Downstream, chunk: Uint8Array, start: number): void {
  const len = chunk.length;
  switch (d.resBody) {
    case B_LENGTH: {
      const avail = len - start;
      const n = avail < d.resRemaining ? avail : d.resRemaining;
      d.resRemaining -= n;
      d.clientWrite(start === 0 && n === len ? chunk : chunk.subarray(start, start + n));
      if (d.resRemaining === 0) {
        if (start + n < len) d.upReusable = false;
        return responseDone(d);
      }
      break;
    }
    case B_CHUNKED: {
      const dec = d.resDecoder!;
      const r = d.dechunk ? dec.feed(chunk, start, len, (d.dechunkSink ??= (b, s, e) => d.clientWrite(b.subarray(s, e)))) : dec.feed(chunk, start, len);
      if (r < 0) return d.abort("upstream_reset"); // the head is out: the client must see the connection fail
      if (!d.dechunk && r > start) d.clientWrite(start === 0 && r === len ? chunk : chunk.subarray(start, r));
      if (dec.done) {
        if (r < len) d.upReusable = false;
        return responseDone(d);
      }
      break;
    }
    default:
      d.clientWrite(start === 0 ? chunk : chunk.subarray(start));
  }
  d.deadline = d.proxy.clock + d.settings.idleTimeoutMs;
  d.updateUpstreamReading();
}

/** The response has been fully handed to the client socket: end the exchange, then the next request or close. */
export function responseDone(d: Downstream): void {
  d.resPhase = NO_RESPONSE;
  endRequest(d, d.upStatus >= 500 ? "server-error" : "success");
  const tel = d.tel;
  if (tel !== null && tel.inflight) tel.report(d, tel.status, undefined);
  const u = d.up;
  d.up = null;
  if (u) {
    if (d.reqDone && d.upReusable && !u.eof && !u.out) u.pool.release(u, d.settings.upstreamIdleTimeoutMs);
    else u.destroy();
  }
  if (d.closeAfter || d.proxy.draining || (d.clientEof && !d.buf) || !d.reqDone) return d.closeClient(!d.reqDone);
  d.phase = AWAIT_HEAD;
  d.route = null;
  d.setTimer(IDLE_TIMER, d.settings.idleTimeoutMs);
  if (d.buf) return readRequestHeads(d);
  d.store = null;
  d.updateReading();
}

/** The affinity cookie's Set-Cookie line, when the route has cookie affinity and the cookie did not pick the endpoint. */
export function setCookie(d: Downstream): Uint8Array | null {
  const cookie = d.route?.cookie;
  if (cookie === undefined || d.endpoint === null || d.endpoint === d.cookieEp) return null;
  return cookie.setCookieLine(d.endpoint);
}

/** 502 for an invalid response from the upstream. */
export function badGateway(d: Downstream, reason: string): void {
  d.fail(502, `Bad gateway: ${reason}`, "invalid_response");
}
