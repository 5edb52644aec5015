/**
 * One downstream (client) connection of the HTTP/1.1 forwarder: a callback-driven state machine kept in
 * `socket.data`, with no Promise on the per-request path (only a new upstream connect is async). This file
 * owns the machine: the connection's state, its socket and timer events, writing to the client with
 * backpressure, and the ways an exchange ends (error response, close, abort). The phases are units of their
 * own, plain functions of the {@link Downstream}: `request.ts` (request head and body), `attempt.ts`
 * (endpoint, upstream connection, retries), `response.ts` (response head and body), `tunnel.ts` (after 101),
 * `exchange-telemetry.ts` (metrics, spans, access log).
 *
 * Requests are handled one at a time, in order: the next pipelined request is parsed only once the current
 * response is complete. Bodies are forwarded as the received chunk slices, after validation of their framing,
 * with backpressure both ways (a socket whose peer cannot keep up is paused).
 *
 * The state machine (states in `state.ts`): `phase` is where the request is; while it is forwarded, `resPhase`
 * is where the response is; `timer` says what the connection's one deadline means.
 *
 *     accept
 *       │
 *       ▼
 *     AWAIT_HEAD ◀──────────────────────────────────┐   HEAD_TIMER: 408 (IDLE_TIMER between requests: close)
 *       │    └─ 503 without forwarding, keep-alive ─┤   (no endpoint, circuit open; request.ts)
 *       │ head parsed, endpoint picked              │
 *       ▼                                           │
 *     CONNECTING ◀─────────────────────────┐        │   connect failed: the next endpoint (attempt.ts);
 *       │ upstream attached, head written  │        │   the upstream closed before any response byte:
 *       ├────────────────────┐             │        │   resent once (attempt.ts)
 *       ▼                    ▼             │        │
 *     SENDING_BODY ──────▶ REQUEST_SENT ───┘        │
 *              body sent     ├─ response done ──────┘   keep-alive: the next request (response.ts)
 *                            │ 101 (tunnel.ts)
 *                            ▼
 *                          TUNNEL                       STREAM_TIMER: close when idle
 *                            │ both FINs passed on
 *                            ▼
 *     any phase ───────▶ CLOSING ──▶ closed             on an error response, client EOF, drain,
 *                        LINGER_TIMER                   `Connection: close`, abort
 *
 *   resPhase, while SENDING_BODY or REQUEST_SENT (response.ts):
 *
 *     NO_RESPONSE ──attached──▶ RESPONSE_HEAD ──final head──▶ RESPONSE_BODY ──body done──▶ NO_RESPONSE
 *                               RESPONSE_TIMER: 504            STREAM_TIMER: cut
 *                               (1xx relayed; RESET_WAIT_TIMER
 *                               after a FIN to a POST)
 *
 *   The response may start while the request body is still arriving (SENDING_BODY + RESPONSE_BODY: the
 *   upstream answered early); the connection then closes once the response is done.
 */
import type { Balancer } from "../../balancer/types.ts";
import type { Endpoint } from "../../model/types.ts";
import type { Route } from "../../routes/types.ts";
import type { TcpSocket } from "../../runtime/types.ts";
import type { ProxyErrorReason } from "../../telemetry/metrics/traffic.ts";
import { endRequest, upstreamClosed, upstreamEnded, upstreamGone } from "./attempt.ts";
import type { ChunkedDecoder, ChunkSink } from "./chunked.ts";
import { ExchangeTelemetry } from "./exchange-telemetry.ts";
import { ClientContext } from "./head.ts";
import type { HttpProxyOptions } from "./options.ts";
import { B_NONE } from "./parser.ts";
import type { Upstream, UpstreamOwner } from "./pool.ts";
import { bufferRequestBytes, readRequestHeads, requestBody } from "./request.ts";
import { errorResponse, type GatewayReason } from "./responses.ts";
import { responseData } from "./response.ts";
import type { RouteSettings } from "./settings.ts";
import {
  AWAIT_HEAD, CLOSING, CONNECTING, HEAD_TIMER, IDLE_TIMER, LINGER_TIMER, NO_RESPONSE, NO_TIMER, type Phase, REQUEST_SENT, RESET_WAIT_TIMER,
  RESPONSE_BODY, RESPONSE_HEAD, type ResponsePhase, RESPONSE_TIMER, SENDING_BODY, STREAM_TIMER, type Timer, TUNNEL,
} from "./state.ts";
import { LINGER_MS, tunnelFromClient, tunnelFromUpstream, tunnelShutdown } from "./tunnel.ts";

/** What a downstream connection needs from its listener's proxy. */
export interface ProxyHost {
  readonly ref: { readonly current: Route };
  readonly options: HttpProxyOptions;
  readonly draining: boolean;
  /** Coarse clock for deadlines, ms since the epoch: never behind real time (it runs up to one sweep tick ahead). */
  readonly clock: number;
  /** The effective settings of `route` (gateway options with the Service's policy), cached per route. */
  settings(route: Route): RouteSettings;
  /** Called once when the connection has closed. */
  remove(c: Downstream): void;
}

/** How long a drain leaves a connection on which the client has not sent a byte yet (see {@link Downstream.drainNow}). */
export const FRESH_DRAIN_MS = 1_000;

/** The `socket.data` of a downstream connection: its state, read and written by the phase units. */
export class Downstream implements UpstreamOwner {
  readonly ctx: ClientContext;
  /** Received bytes not yet consumed (a partial head, or pipelined requests). */
  buf: Uint8Array | null = null;
  /** Growable backing store {@link buf} may be a view of. */
  store: Uint8Array | null = null;
  /** Bytes of {@link buf} already searched for the end of the head. */
  scanned = 0;
  headStarted = false;
  phase: Phase = AWAIT_HEAD;
  resPhase: ResponsePhase = NO_RESPONSE;
  /** Epoch ms when {@link timer} fires; 0 for none. */
  deadline = 0;
  timer: Timer = NO_TIMER;
  /** Bytes the client socket has not accepted yet. */
  out: Uint8Array[] | null = null;
  paused = false;
  clientEof = false;
  closed = false;
  endWhenFlushed = false;
  lingering = false;
  /** Bytes from / to the client not reported yet (telemetry). */
  rx = 0;
  /** The client has sent a byte on this connection (a drain leaves a connection that has not alone: see drainNow). */
  spoke = false;
  tx = 0;
  /** The exchange telemetry; null when the proxy has none. */
  readonly tel: ExchangeTelemetry | null;

  /** Epoch ms when the current exchange exceeds its max request duration; 0 for none. */
  reqDeadline = 0;
  /** Settings of the current (or, between requests, the last) route. */
  settings: RouteSettings;

  // The current request (request.ts, attempt.ts).
  route: Route | null = null;
  readonly pick: { clientAddress: string; exclude: Set<Endpoint> | undefined; hashKey: string | undefined };
  endpoint: Endpoint | null = null;
  /** The endpoint of the attempt begun on {@link beganOn} and not ended yet (exactly one `end` per `begin`). */
  began: Endpoint | null = null;
  beganOn: Balancer | null = null;
  /** The status of the current attempt's final response head (0 before one). */
  upStatus = 0;
  /** The cluster whose concurrency slot this request holds (circuit breaking), or null. */
  circuit: string | null = null;
  /** Cookie-affinity routes: the endpoint the request's cookie named (no Set-Cookie when it serves). */
  cookieEp: Endpoint | undefined = undefined;
  attempts = 0;
  isHead = false;
  minor = 1;
  keepAlive = true;
  upgradeReq = false;
  reqBody = B_NONE;
  reqRemaining = 0;
  reqDone = true;
  reqDecoder: ChunkedDecoder | null = null;
  /** The first write (head, plus the first body bytes when small), kept for one retry on a stale pooled connection. */
  first: Uint8Array | null = null;
  /** The first body bytes when too big to copy into {@link first} (sent right after it). */
  firstBody: Uint8Array | null = null;
  streamed = false;
  retried = false;
  /** GET, HEAD, OPTIONS, PUT, DELETE, TRACE: safe to send twice (RFC 9110 §9.2.2). */
  idempotent = false;
  lastConnectTimedOut = false;
  /** The upstream sent FIN before any response byte to a request that is not idempotent: see `RESET_WAIT_TIMER`. */
  finWait = false;

  // The current response (response.ts).
  up: Upstream | null = null;
  reused = false;
  resBuf: Uint8Array | null = null;
  resScanned = 0;
  resBytes = 0;
  resBody = B_NONE;
  resRemaining = 0;
  resDecoder: ChunkedDecoder | null = null;
  dechunk = false;
  /** Writes de-chunked body bytes to the client (made once per connection, on its first de-chunked response). */
  dechunkSink: ChunkSink | null = null;
  upReusable = false;
  closeAfter = false;

  // The tunnel (tunnel.ts): which side sent FIN, and to which we passed it on.
  downEof = false;
  upEof = false;
  downShut = false;
  upShut = false;

  constructor(readonly proxy: ProxyHost, readonly sock: TcpSocket<Downstream>) {
    const o = proxy.options;
    // The peer's address is read once (each read of a socket address is a syscall); the local one only if needed.
    const peer = sock.remoteAddress;
    this.ctx = new ClientContext(peer, sock, o.trustForwarded?.(peer) ?? false);
    this.pick = { clientAddress: this.ctx.ip, exclude: undefined, hashKey: undefined };
    this.settings = proxy.settings(proxy.ref.current);
    this.setTimer(HEAD_TIMER, this.settings.requestHeaderTimeoutMs);
    this.tel = o.telemetry === undefined ? null : new ExchangeTelemetry(o.telemetry, proxy.ref.current);
  }

  /** Arm the connection's one timer: `kind` fires `ms` from now (NO_TIMER: none). */
  setTimer(kind: Timer, ms: number): void {
    this.timer = kind;
    this.deadline = kind === NO_TIMER ? 0 : this.proxy.clock + ms;
  }

  // ---- client socket events ------------------------------------------------------------------

  onData(chunk: Uint8Array): void {
    this.rx += chunk.length;
    this.spoke = true;
    switch (this.phase) {
      case AWAIT_HEAD:
        bufferRequestBytes(this, chunk);
        readRequestHeads(this);
        return;
      case SENDING_BODY:
        requestBody(this, chunk);
        return;
      case TUNNEL:
        tunnelFromClient(this, chunk);
        return;
      case CLOSING:
        return;
      default:
        // Connecting, or waiting for the response: keep (bounded) what comes, for later.
        bufferRequestBytes(this, chunk);
        if (this.buf!.length >= this.proxy.options.maxHeaderBytes) this.updateReading();
    }
  }

  onDrain(): void {
    const q = this.out;
    if (!q) return;
    while (q.length) {
      const c = q[0]!;
      const n = this.sock.write(c);
      if (n < 0) {
        this.out = null;
        return;
      }
      if (n < c.length) {
        q[0] = c.subarray(n);
        return;
      }
      q.shift();
    }
    this.out = null;
    if (this.endWhenFlushed) {
      this.endWhenFlushed = false;
      this.finishClose();
      return;
    }
    if (this.phase === TUNNEL) tunnelShutdown(this);
    this.updateUpstreamReading();
    if (this.phase === AWAIT_HEAD && (this.buf || this.clientEof)) readRequestHeads(this);
    else this.updateReading();
  }

  onEnd(): void {
    this.clientEof = true;
    switch (this.phase) {
      case AWAIT_HEAD:
        readRequestHeads(this);
        return;
      case SENDING_BODY:
        // The client stopped sending before the body was complete.
        if (this.resPhase === RESPONSE_HEAD) this.fail(400, "Bad request: the request body is incomplete", "bad_request", "client_closed");
        else this.abort("client_closed");
        return;
      case TUNNEL:
        this.downEof = true;
        tunnelShutdown(this);
        return;
      case CLOSING:
        // Our FIN is out (or follows the queued bytes): the socket closes now that both sides are done.
        return;
      default:
      // Connecting or waiting: the response is still delivered, then the connection closes.
    }
  }

  onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.phase = CLOSING;
    this.out = null;
    this.buf = null;
    this.deadline = 0;
    const u = this.up;
    if (u) {
      this.up = null;
      u.destroy();
    }
    endRequest(this, this.upStatus >= 500 ? "server-error" : "success");
    if (this.tel !== null) this.tel.connectionClosed(this);
    this.proxy.remove(this);
  }

  /** Called by the proxy's sweep when {@link deadline} has passed. */
  onTimeout(): void {
    const o = this.settings;
    switch (this.timer) {
      case HEAD_TIMER:
        if (this.headStarted) this.fail(408, `Request timeout: the request head did not arrive within ${o.requestHeaderTimeoutMs} ms`, "request_timeout");
        else this.closeClient();
        return;
      case IDLE_TIMER:
        this.closeClient();
        return;
      case RESPONSE_TIMER:
        if (this.resPhase === RESPONSE_HEAD) {
          this.fail(504, `Gateway timeout: service "${this.route?.entrypoint.name ?? "?"}" did not respond within ${o.responseHeaderTimeoutMs} ms`, "upstream_timeout");
        } else this.deadline = 0;
        return;
      case STREAM_TIMER:
        this.abort("upstream_timeout");
        return;
      case LINGER_TIMER:
        this.sock.terminate();
        return;
      case RESET_WAIT_TIMER:
        // No reset followed the FIN: the upstream may have read the request, so it is not resent.
        this.finWait = false;
        if (this.up !== null) upstreamGone(this, this.up, false);
        return;
      default:
        this.deadline = 0;
    }
  }

  /** Called by the proxy's sweep when {@link reqDeadline} has passed: the exchange took too long. */
  onRequestTimeout(): void {
    this.reqDeadline = 0;
    const p = this.phase;
    if (p === AWAIT_HEAD || p === TUNNEL || p === CLOSING) return;
    if (this.resPhase === RESPONSE_BODY) return this.abort("upstream_timeout"); // the response is under way: cut it
    this.fail(
      504,
      `Gateway timeout: the request to service "${this.route?.entrypoint.name ?? "?"}" did not complete within ${this.settings.maxRequestDurationMs} ms (max request duration)`,
      "max_duration",
    );
  }

  /**
   * Listener drain: close now when idle between requests, else after the current exchange. A connection whose
   * client has not sent anything yet is not idle but new: its first request is likely on its way (the listener
   * accepted it a moment before closing, e.g. at a hand-over), so it gets {@link FRESH_DRAIN_MS} to send it and is
   * answered (with `Connection: close`); a client that stays silent (a browser's preconnect) is closed then.
   */
  drainNow(): void {
    if (this.phase !== AWAIT_HEAD || this.headStarted || this.buf) return;
    if (this.spoke) this.closeClient();
    else if (this.timer === HEAD_TIMER) this.setTimer(HEAD_TIMER, Math.min(FRESH_DRAIN_MS, Math.max(0, this.deadline - this.proxy.clock)));
  }

  // ---- upstream socket events (UpstreamOwner) --------------------------------------------------

  onUpstreamData(u: Upstream, chunk: Uint8Array): void {
    if (u !== this.up) return;
    this.resBytes += chunk.length;
    if (this.phase === TUNNEL) tunnelFromUpstream(this, chunk);
    else responseData(this, chunk);
  }

  onUpstreamDrain(u: Upstream): void {
    if (u !== this.up) return;
    if (this.phase === TUNNEL) tunnelShutdown(this);
    this.updateReading();
  }

  onUpstreamEnd(u: Upstream): void {
    if (u !== this.up) return;
    if (this.phase === TUNNEL) {
      this.upEof = true;
      tunnelShutdown(this);
    } else upstreamEnded(this, u);
  }

  onUpstreamClose(u: Upstream, error?: Error): void {
    if (u !== this.up) return;
    if (this.phase === TUNNEL) {
      this.up = null;
      this.closeClient();
    } else upstreamClosed(this, u, error);
  }

  // ---- the client socket -----------------------------------------------------------------------

  /** Write to the client now, or queue behind what it has not accepted yet. */
  clientWrite(chunk: Uint8Array): void {
    this.tx += chunk.length;
    if (this.out) {
      this.out.push(chunk);
      return;
    }
    const n = this.sock.write(chunk);
    if (n === chunk.length || n < 0) return;
    this.out = [n === 0 ? chunk : chunk.subarray(n)];
  }

  /** Pause or resume the client socket according to the phase and the upstream's backpressure. */
  updateReading(): void {
    if (this.closed) return;
    let want: boolean;
    switch (this.phase) {
      case AWAIT_HEAD:
        want = this.out === null;
        break;
      case SENDING_BODY:
      case TUNNEL:
        want = this.up !== null && this.up.out === null;
        break;
      case CONNECTING:
      case REQUEST_SENT:
        want = this.buf === null || this.buf.length < this.proxy.options.maxHeaderBytes;
        break;
      default:
        want = true;
    }
    if (want === this.paused) {
      this.paused = !want;
      if (want) this.sock.resume();
      else this.sock.pause();
    }
  }

  /** Read from the upstream only while the client accepts what we write. */
  updateUpstreamReading(): void {
    this.up?.setReading(this.out === null);
  }

  // ---- how an exchange ends --------------------------------------------------------------------

  /**
   * Answer with a generated error response (`why` in its `x-kubegate-reason` field) and close the connection.
   * `reason` (the error reason reported) defaults to `why`. The request's attempt ends as a server error
   * when the upstream was at fault (it sent a 5xx, or failed or timed out after the request was sent).
   */
  fail(status: number, body: string, why: GatewayReason, reason: ProxyErrorReason = why): void {
    if (this.closed) return;
    if (this.resPhase === RESPONSE_BODY || this.phase === TUNNEL) return this.abort(reason); // a response is already under way
    endRequest(this, this.upStatus >= 500 || (this.resPhase === RESPONSE_HEAD && upstreamFault(why, this.reqDone)) ? "server-error" : "success");
    this.dropUpstream();
    this.clientWrite(errorResponse(status, body.endsWith("\n") ? body : body + "\n", true, why));
    if (this.tel !== null) this.tel.report(this, status, reason);
    this.closeClient(true);
  }

  /** Drop the upstream connection (never pooled: its exchange did not complete); no response is under way. */
  dropUpstream(): void {
    const u = this.up;
    if (u) {
      this.up = null;
      u.destroy();
    }
    this.resPhase = NO_RESPONSE;
  }

  /**
   * Close gracefully: stop reading requests, flush what is queued, then send FIN (`end()` is a
   * half-close) and discard input until the client closes its side, so bytes it is still sending cannot
   * turn the close into a reset that destroys the response (nginx's lingering close). `linger` says the
   * client probably is still sending (an error, or a body not read): it then gets `LINGER_MS` to
   * close; otherwise the idle timeout applies.
   */
  closeClient(linger = false): void {
    if (this.closed) return;
    endRequest(this, this.upStatus >= 500 ? "server-error" : "success");
    this.dropUpstream();
    this.phase = CLOSING;
    this.buf = null;
    this.lingering = linger && !this.clientEof;
    this.setTimer(LINGER_TIMER, this.settings.idleTimeoutMs);
    if (this.out) this.endWhenFlushed = true;
    else this.finishClose();
    this.updateReading();
  }

  /** Send our FIN (the queued bytes are out); a lingering close gets `LINGER_MS` for the client's. */
  finishClose(): void {
    this.sock.end();
    if (this.lingering) this.setTimer(LINGER_TIMER, Math.min(LINGER_MS, this.settings.idleTimeoutMs));
  }

  /** Close both sides now (a response cannot be completed); `reason` is why, for telemetry (none: shutdown). */
  abort(reason?: ProxyErrorReason): void {
    if (this.closed) return;
    endRequest(this, this.upStatus >= 500 || reason === "upstream_reset" ? "server-error" : "success");
    const tel = this.tel;
    if (tel !== null && tel.inflight) tel.report(this, tel.status, reason);
    this.dropUpstream();
    this.phase = CLOSING;
    this.sock.terminate();
  }
}

/**
 * Whether a gateway error blames the upstream (its attempt then ends as a server error). A timeout while the
 * client is still sending the body is the client's.
 */
function upstreamFault(why: GatewayReason, requestSent: boolean): boolean {
  if (why === "upstream_timeout" || why === "max_duration") return requestSent;
  return why === "upstream_reset" || why === "invalid_response";
}
