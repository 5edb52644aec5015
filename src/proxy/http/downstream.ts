/**
 * One downstream (client) connection of the HTTP/1.1 forwarder: a callback-driven state machine kept
 * in `socket.data`, with no Promise on the per-request path (only a new upstream connect is async).
 *
 * Requests are handled one at a time, in order: the next pipelined request is parsed only once the
 * current response is complete. Bodies are forwarded as the received chunk slices, after validation of
 * their framing, with backpressure both ways (a socket whose peer cannot keep up is paused).
 */
import type { Balancer, Outcome } from "../../balancer/types.ts";
import type { Endpoint } from "../../model/types.ts";
import type { TcpSocket } from "../../runtime/types.ts";
import type { ProxyErrorReason, ServiceTraffic } from "../../telemetry/metrics/traffic.ts";
import { type ProxyTelemetry, routeTraffic } from "../types.ts";
import type { Route } from "../../routes/types.ts";
import { concat } from "./bytes.ts";
import { cookieEndpoint } from "./cookie.ts";
import { ChunkedDecoder, type ChunkSink } from "./chunked.ts";
import { buildRequestHead, buildResponseHead, ClientContext, CONN_AS_IS, CONN_CLOSE, CONN_KEEP_ALIVE, CONN_UPGRADE, injected } from "./head.ts";
import {
  B_CHUNKED,
  B_CLOSE,
  B_LENGTH,
  B_NONE,
  C_CLOSE,
  C_KEEP_ALIVE,
  C_UPGRADE,
  CR,
  findHeadEnd,
  LF,
  M_CONNECT,
  M_HEAD,
  M_OTHER,
  M_POST,
  parseRequestHead,
  parseResponseHead,
  RequestInfo,
  ResponseInfo,
  responseFraming,
} from "./parser.ts";
import { type EndpointPool, poolFor, type Upstream, type UpstreamOwner } from "./pool.ts";
import { errorResponse, type GatewayReason } from "./responses.ts";
import type { HttpProxyOptions } from "./options.ts";
import { hashKey } from "./hash-key.ts";
import { acquireRequest, HASH_NONE, releaseRequest, type RouteSettings } from "./settings.ts";
import { endClientSpan, endRequestSpans, findTraceFields, type RequestTrace, requestLine, startClientSpan, startServerSpan, traceFields } from "./trace.ts";

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

// Request side: where the current request is.
const R_IDLE = 0; // waiting for / reading a request head
const R_CONNECTING = 1; // head parsed, waiting for an upstream connection
const R_BODY = 2; // streaming the request body upstream
const R_DONE = 3; // request fully forwarded, response pending
const R_TUNNEL = 4; // after 101: raw bidirectional pipe
const R_CLOSING = 5; // closing: input is discarded

// Response side.
const P_NONE = 0;
const P_HEAD = 1; // waiting for the (final) response head
const P_BODY = 2; // streaming the response body downstream

// What the connection's deadline means.
const D_NONE = 0;
const D_HEADER = 1; // request head must complete (408)
const D_IDLE = 2; // keep-alive idle (close)
const D_RESPONSE = 3; // upstream response head must arrive (504)
const D_STREAM = 4; // no progress while streaming (abort)
const D_LINGER = 5; // closing connection that does not drain (terminate)
const D_RESET_WAIT = 6; // the upstream sent FIN before any response byte: does a reset follow? (502 if not)

/** Scratch parse results: used synchronously, copied out before any other parse. */
const REQ = new RequestInfo();
const RES = new ResponseInfo();

/**
 * How long to wait, after an upstream's FIN with no response, for the reset that proves it never read the
 * request (its socket was closed when the request arrived), ms.
 */
const RESET_WAIT_MS = 250;

/** How long a lingering close waits for the client to close after our FIN, ms. */
const LINGER_MS = 2_000;

/** Largest first body slice copied into the head's write (bigger ones go in a second write, uncopied). */
const COALESCE_BYTES = 16 * 1024;

/** The `socket.data` of a downstream connection. */
export class Downstream implements UpstreamOwner {
  readonly ctx: ClientContext;
  /** Received bytes not yet consumed (a partial head, or pipelined requests). */
  buf: Uint8Array | null = null;
  /** Growable backing store {@link buf} may be a view of. */
  store: Uint8Array | null = null;
  scanned = 0;
  headStarted = false;
  rstate = R_IDLE;
  pstate = P_NONE;
  /** Epoch ms when {@link dkind} fires; 0 for none. */
  deadline = 0;
  dkind = D_NONE;
  /** Bytes the client socket has not accepted yet. */
  out: Uint8Array[] | null = null;
  paused = false;
  clientEof = false;
  closed = false;
  endWhenFlushed = false;
  lingering = false;

  /** Epoch ms when the current exchange exceeds its max request duration; 0 for none. */
  reqDeadline = 0;
  /** Settings of the current (or, between requests, the last) route. */
  cfg: RouteSettings;

  // The current request.
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

  // The current response.
  up: Upstream | null = null;
  reused = false;
  resBuf: Uint8Array | null = null;
  resScanned = 0;
  resBytes = 0;
  resBody = B_NONE;
  resRemaining = 0;
  resDecoder: ChunkedDecoder | null = null;
  dechunk = false;
  upReusable = false;
  closeAfter = false;
  #sink: ChunkSink | null = null;

  // Telemetry (all unused when the proxy has none).
  readonly tel: ProxyTelemetry | undefined;
  /** The metrics handle the connection was counted on (connOpened/connClosed). */
  readonly connTraffic: ServiceTraffic | undefined;
  /** The route {@link trafficOfRoute} is the metrics handle of. */
  trafficRoute: Route | null = null;
  trafficOfRoute: ServiceTraffic | undefined = undefined;
  /** Bytes from / to the client not reported yet. */
  rx = 0;
  tx = 0;
  /** A request is started and not reported yet. */
  inflight = false;
  /** performance.now() at the request's start. */
  t0 = 0;
  /** The final response's status (0 before one). */
  status = 0;
  method = "";
  path = "";
  trace: RequestTrace | null = null;
  /** Where the trace line is in {@link first} (-1: none). */
  traceAt = -1;
  lastConnectTimedOut = false;
  /** The upstream sent FIN before any response byte to a request that is not idempotent: see {@link D_RESET_WAIT}. */
  finWait = false;

  // Tunnel (after 101).
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
    this.cfg = proxy.settings(proxy.ref.current);
    this.setDeadline(D_HEADER, this.cfg.requestHeaderTimeoutMs);
    const tel = (this.tel = o.telemetry);
    this.connTraffic = tel === undefined ? undefined : routeTraffic(tel, proxy.ref.current);
    this.connTraffic?.connOpened();
  }

  setDeadline(kind: number, ms: number): void {
    this.dkind = kind;
    this.deadline = kind === D_NONE ? 0 : this.proxy.clock + ms;
  }

  // ---- client socket events ------------------------------------------------------------------

  onData(chunk: Uint8Array): void {
    this.rx += chunk.length;
    switch (this.rstate) {
      case R_IDLE:
        this.append(chunk);
        this.readHead();
        return;
      case R_BODY:
        this.requestBody(chunk);
        return;
      case R_TUNNEL:
        this.dkind = D_STREAM;
        this.deadline = this.proxy.clock + this.cfg.idleTimeoutMs;
        if (!this.up!.write(chunk)) this.updateReading();
        return;
      case R_CLOSING:
        return;
      default:
        // Connecting, or waiting for the response: keep (bounded) what comes, for later.
        this.append(chunk);
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
    if (this.rstate === R_TUNNEL) this.maybeShutdown();
    this.updateUpstreamReading();
    if (this.rstate === R_IDLE && (this.buf || this.clientEof)) this.readHead();
    else this.updateReading();
  }

  onEnd(): void {
    this.clientEof = true;
    switch (this.rstate) {
      case R_IDLE:
        this.readHead();
        return;
      case R_BODY:
        // The client stopped sending before the body was complete.
        if (this.pstate === P_HEAD) this.fail(400, "Bad request: the request body is incomplete", "bad-request", "client_closed");
        else this.abort("client_closed");
        return;
      case R_TUNNEL:
        this.downEof = true;
        this.maybeShutdown();
        return;
      case R_CLOSING:
        // Our FIN is out (or follows the queued bytes): the socket closes now that both sides are done.
        return;
      default:
      // Connecting or waiting: the response is still delivered, then the connection closes.
    }
  }

  onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.rstate = R_CLOSING;
    this.out = null;
    this.buf = null;
    this.deadline = 0;
    const u = this.up;
    if (u) {
      this.up = null;
      u.destroy();
    }
    this.endRequest(this.upStatus >= 500 ? "server-error" : "success");
    if (this.tel !== undefined) this.closed_();
    this.proxy.remove(this);
  }

  /** Telemetry of the close: an unfinished request, the bytes not reported yet, the connection count. */
  closed_(): void {
    if (this.inflight) this.report(this.status, "client_closed");
    const t = this.connTraffic;
    if (t === undefined) return;
    const rt = this.route !== null ? (this.traffic(this.route) ?? t) : t;
    if (this.rx || this.tx) rt.bytes(this.rx, this.tx);
    this.rx = this.tx = 0;
    t.connClosed();
  }

  /** Called by the proxy's sweep when {@link deadline} has passed. */
  onTimeout(): void {
    const o = this.cfg;
    switch (this.dkind) {
      case D_HEADER:
        if (this.headStarted) this.fail(408, `Request timeout: the request head did not arrive within ${o.requestHeaderTimeoutMs} ms`, "request-timeout");
        else this.closeClient();
        return;
      case D_IDLE:
        this.closeClient();
        return;
      case D_RESPONSE:
        if (this.pstate === P_HEAD) {
          this.fail(504, `Gateway timeout: service "${this.route?.entrypoint.name ?? "?"}" did not respond within ${o.responseHeaderTimeoutMs} ms`, "upstream-timeout");
        } else this.deadline = 0;
        return;
      case D_STREAM:
        this.abort("upstream_timeout");
        return;
      case D_LINGER:
        this.sock.terminate();
        return;
      case D_RESET_WAIT:
        // No reset followed the FIN: the upstream may have read the request, so it is not resent.
        this.finWait = false;
        if (this.up !== null) this.upstreamGone(this.up, false);
        return;
      default:
        this.deadline = 0;
    }
  }

  /** Called by the proxy's sweep when {@link reqDeadline} has passed: the exchange took too long. */
  onRequestTimeout(): void {
    this.reqDeadline = 0;
    const r = this.rstate;
    if (r === R_IDLE || r === R_TUNNEL || r === R_CLOSING) return;
    if (this.pstate === P_BODY) return this.abort("upstream_timeout"); // the response is under way: cut it
    this.fail(
      504,
      `Gateway timeout: the request to service "${this.route?.entrypoint.name ?? "?"}" did not complete within ${this.cfg.maxRequestDurationMs} ms (max request duration)`,
      "max-duration",
    );
  }

  /** Listener drain: close now when idle, else after the current exchange. */
  drainNow(): void {
    if (this.rstate === R_IDLE && !this.headStarted && !this.buf) this.closeClient();
  }

  // ---- request side --------------------------------------------------------------------------

  readHead(): void {
    const o = this.proxy.options;
    const max = o.maxHeaderBytes;
    while (this.rstate === R_IDLE && this.buf && !this.out && !this.closed) {
      let buf = this.buf;
      // RFC 9112 §2.2: ignore empty lines before a request line.
      let s = 0;
      while (s + 1 < buf.length && buf[s] === CR && buf[s + 1] === LF) s += 2;
      if (s) {
        this.scanned = 0;
        if (s === buf.length) {
          this.buf = null;
          break;
        }
        this.buf = buf = buf.subarray(s);
      }
      if (buf[0] === LF) return this.fail(400, "Bad request: bare LF line ending", "bad-request");
      if (!this.headStarted) {
        // The head timer runs from the first byte of a request (from accept for the first request).
        this.headStarted = true;
        if (this.dkind !== D_HEADER) this.setDeadline(D_HEADER, this.cfg.requestHeaderTimeoutMs);
      }
      const end = findHeadEnd(buf, 0, this.scanned, buf.length);
      if (end === 0) {
        this.scanned = buf.length;
        if (buf.length > max) return this.fail(431, `Request header fields too large: the request head exceeds ${max} bytes`, "header-too-large");
        if (this.clientEof) return this.closeClient();
        break;
      }
      if (end < 0) return this.fail(400, "Bad request: bare LF line ending", "bad-request");
      if (end > max) return this.fail(431, `Request header fields too large: the request head exceeds ${max} bytes`, "header-too-large");
      const status = parseRequestHead(buf, 0, end, REQ);
      if (status !== 0) return this.fail(status, `${statusText(status)}: ${REQ.error}`, parseReason(status));
      this.startRequest(buf, end);
    }
    // A client that half-closed between requests is done once everything it sent is answered.
    if (this.rstate === R_IDLE && this.clientEof && !this.buf && !this.out) return this.closeClient();
    this.updateReading();
  }

  /** Start forwarding the request just parsed into {@link REQ} (same turn as the parse). */
  startRequest(buf: Uint8Array, headEnd: number): void {
    const req = REQ;
    const conn = req.conn;
    this.isHead = req.method === M_HEAD;
    this.idempotent = req.method !== M_POST && req.method !== M_OTHER && req.method !== M_CONNECT;
    this.minor = req.minor;
    this.keepAlive = (conn & C_CLOSE) === 0 && (req.minor === 1 || (conn & C_KEEP_ALIVE) !== 0);
    this.upgradeReq = (conn & C_UPGRADE) !== 0 && req.upgrade >= 0;
    this.headStarted = false;
    this.scanned = 0;
    const route = this.proxy.ref.current;
    this.route = route;
    const cfg = (this.cfg = this.proxy.settings(route));
    this.upStatus = 0;
    if (this.tel !== undefined) this.begin(buf, route);
    // Validate the body bytes that came with the head before anything goes upstream.
    const maxBody = cfg.maxRequestBodyBytes;
    let n = 0;
    let done = true;
    if (req.chunked) {
      this.reqBody = B_CHUNKED;
      const d = (this.reqDecoder ??= new ChunkedDecoder(this.proxy.options.maxHeaderBytes));
      d.reset();
      const r = d.feed(buf, headEnd, buf.length);
      if (r < 0) return this.fail(400, `Bad request: invalid chunked body: ${d.error}`, "bad-request");
      if (maxBody > 0 && d.payload > maxBody) return this.tooLarge(maxBody);
      n = r - headEnd;
      done = d.done;
    } else if (req.contentLength > 0) {
      if (maxBody > 0 && req.contentLength > maxBody) return this.tooLarge(maxBody);
      this.reqBody = B_LENGTH;
      const avail = buf.length - headEnd;
      n = avail < req.contentLength ? avail : req.contentLength;
      this.reqRemaining = req.contentLength - n;
      done = this.reqRemaining === 0;
    } else this.reqBody = B_NONE;
    this.reqDone = done;

    const pick = this.pick;
    pick.exclude = undefined;
    pick.hashKey = cfg.hashSource === HASH_NONE ? undefined : hashKey(buf, req.fieldCount, cfg);
    let ep: Endpoint | undefined;
    const cookie = route.cookie;
    if (cookie === undefined) ep = route.balancer.pick(pick);
    else ep = (this.cookieEp = cookieEndpoint(buf, req.fieldCount, cookie)) ?? route.balancer.pick(pick);
    const rest = headEnd + n;
    if (!ep) return this.refuse(503, `no endpoints available for service "${route.entrypoint.name}"\n`, "no-endpoints", buf, rest);
    const max = cfg.maxConcurrentRequests;
    if (max > 0) {
      if (!acquireRequest(cfg.cluster, max)) {
        return this.refuse(503, `Service unavailable: service "${route.entrypoint.name}" has ${max} requests in flight (circuit breaker)\n`, "circuit-breaker", buf, rest);
      }
      this.circuit = cfg.cluster;
    }
    const small = n <= COALESCE_BYTES;
    const tr = this.trace;
    this.first = buildRequestHead(buf, req, this.ctx, this.upgradeReq, small ? rest : headEnd, tr === null ? null : tr.inject);
    this.traceAt = tr === null ? -1 : injected.at;
    this.firstBody = small ? null : buf.subarray(headEnd, rest);
    this.buf = rest < buf.length ? buf.subarray(rest) : null;
    this.streamed = false;
    this.retried = false;
    this.attempts = 0;
    this.rstate = R_CONNECTING;
    this.setDeadline(D_NONE, 0);
    this.reqDeadline = cfg.maxRequestDurationMs > 0 ? this.proxy.clock + cfg.maxRequestDurationMs : 0;
    this.useEndpoint(ep, false, "");
  }

  /**
   * Answer the request just parsed with a generated error without forwarding it. A body-less request on a
   * keep-alive HTTP/1.1 connection keeps the connection (the read loop goes on with pipelined requests);
   * otherwise it closes.
   */
  refuse(status: number, body: string, why: GatewayReason, buf: Uint8Array, rest: number): void {
    if (this.reqBody === B_NONE && this.keepAlive && this.minor === 1 && !this.proxy.draining) {
      this.buf = rest < buf.length ? buf.subarray(rest) : null;
      this.clientWrite(errorResponse(status, body, false, why));
      if (this.inflight) this.report(status, metricReason(why));
      this.setDeadline(D_IDLE, this.cfg.idleTimeoutMs);
      return; // R_IDLE: the read loop goes on with pipelined requests
    }
    this.fail(status, body, why);
  }

  /** 413: the request body is larger than the route allows. */
  tooLarge(max: number): void {
    this.fail(413, `Content too large: the request body exceeds ${max} bytes`, "body-too-large");
  }

  /** Start the telemetry of the request just parsed into {@link REQ} (same turn as the parse). */
  begin(buf: Uint8Array, route: Route): void {
    const tel = this.tel!;
    this.inflight = true;
    this.status = 0;
    this.t0 = performance.now();
    this.trace = null;
    const tr = tel.tracing;
    let traced = false;
    if (tr !== undefined) {
      findTraceFields(buf, REQ.fieldCount);
      traced = traceFields.tp >= 0 ? tr.sampleParents : tr.sampleRoots;
    }
    if (!traced && tel.accessLog === undefined) return;
    const line = requestLine(buf, REQ);
    this.method = line.method;
    this.path = line.path;
    if (traced) {
      const s = this.sock;
      this.trace = startServerSpan(tr!, buf, line.method, line.path, REQ.host, s.localPort, this.ctx.ip, s.remotePort, route.entrypoint);
    }
  }

  /** The metrics handle of `route` (cached for the last route: one identity check per request). */
  traffic(route: Route): ServiceTraffic | undefined {
    if (route === this.trafficRoute) return this.trafficOfRoute;
    this.trafficRoute = route;
    return (this.trafficOfRoute = routeTraffic(this.tel, route));
  }

  /** Report the current request once: metrics, spans, access log. A failure before any request counts as one. */
  report(status: number, reason: ProxyErrorReason | undefined): void {
    const tel = this.tel;
    if (tel === undefined) return;
    const started = this.inflight;
    this.inflight = false;
    const route = this.route ?? this.proxy.ref.current;
    const secs = started ? (performance.now() - this.t0) / 1000 : 0;
    const rx = this.rx;
    const tx = this.tx;
    this.rx = this.tx = 0;
    const t = this.traffic(route);
    if (t !== undefined) {
      t.request(status, secs);
      if (reason !== undefined) t.error(reason);
      t.bytes(rx, tx);
    }
    const tr = this.trace;
    let traceId = "";
    if (tr !== null) {
      this.trace = null;
      traceId = tr.server.spanContext().traceId;
      endRequestSpans(tr, status, reason ?? "");
    }
    const log = tel.accessLog;
    if (log !== undefined) {
      const ep = this.endpoint;
      log.http({
        entrypoint: route.entrypoint.name,
        client: this.ctx.ip,
        endpoint: ep === null || !started ? "" : ep.address.includes(":") ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`,
        method: started ? this.method : "",
        path: started ? this.path : "",
        status,
        bytesIn: rx,
        bytesOut: tx,
        durationMs: secs * 1000,
        error: reason ?? "",
        traceId,
      });
    }
  }

  /**
   * Send the request to `ep`: one attempt, begun on the balancer here and ended ({@link endAttempt}) exactly
   * once. `fresh` skips the pool (a retry must not meet another stale connection); `previousError` ends the
   * previous attempt's span.
   *
   * A pooled connection is used only for a request the gateway could resend (idempotent, with its whole body
   * at hand): the upstream may close an idle connection just as a request goes out on it (the keep-alive
   * race; every backend does it at SIGTERM), and a request that cannot be resent would then fail. A POST, or
   * a request whose body is still streaming in, goes on a new connection, which cannot have been closed idle.
   */
  useEndpoint(ep: Endpoint, fresh: boolean, previousError: string): void {
    this.endpoint = ep;
    this.attempts++;
    const b = this.route!.balancer;
    b.begin(ep);
    this.began = ep;
    this.beganOn = b;
    const tr = this.trace;
    if (tr !== null) {
      startClientSpan(tr, this.tel!.tracing!, this.method, this.path, this.route!.entrypoint, ep, this.first, this.traceAt, previousError);
    }
    const pool = poolFor(ep);
    const u = fresh || !this.idempotent || !this.reqDone ? undefined : pool.take();
    if (u) this.attach(u);
    else this.connect(pool, ep);
  }

  /** End the open attempt (if any) on the balancer it was begun on. */
  endAttempt(outcome: Outcome): void {
    const ep = this.began;
    if (ep === null) return;
    this.began = null;
    const b = this.beganOn!;
    this.beganOn = null;
    b.end(ep, outcome);
  }

  /** The request is over (answered, failed, upgraded or abandoned): end its attempt, free its slot and timer. */
  endRequest(outcome: Outcome): void {
    if (this.began !== null) this.endAttempt(outcome);
    const c = this.circuit;
    if (c !== null) {
      this.circuit = null;
      releaseRequest(c);
    }
    this.reqDeadline = 0;
  }

  connect(pool: EndpointPool, ep: Endpoint): void {
    const t0 = this.tel === undefined ? 0 : performance.now();
    pool.connect(this.cfg.connectTimeoutMs).then(
      (u) => {
        if (t0 !== 0 && this.route !== null) routeTraffic(this.tel, this.route)?.connectDuration((performance.now() - t0) / 1000);
        if (this.closed || this.rstate !== R_CONNECTING || this.endpoint !== ep) pool.release(u, this.cfg.upstreamIdleTimeoutMs);
        else if (u.eof) {
          // Closed by the upstream before anything was sent (a backend shutting down closes new connections
          // too): a connect failure, safe to try elsewhere.
          u.destroy();
          this.lastConnectTimedOut = false;
          this.connectFailed(ep);
        } else this.attach(u);
      },
      (err: unknown) => {
        this.lastConnectTimedOut = err instanceof Error && err.message.includes("timed out");
        this.connectFailed(ep);
      },
    );
  }

  connectFailed(ep: Endpoint): void {
    if (this.closed || this.rstate !== R_CONNECTING || this.endpoint !== ep) return;
    this.endAttempt("connect-failure");
    const route = this.route!;
    const tried = (this.pick.exclude ??= new Set());
    tried.add(ep);
    const next = this.attempts < this.proxy.options.connectAttempts ? route.balancer.pick(this.pick) : undefined;
    const timedOut = this.lastConnectTimedOut;
    if (next) return this.useEndpoint(next, false, timedOut ? "connect_timeout" : "connect_failed");
    this.fail(
      502,
      `Bad gateway: no endpoint of service "${route.entrypoint.name}" accepted a connection (${this.attempts} tried)`,
      timedOut ? "connect-timeout" : "connect-failed",
    );
  }

  attach(u: Upstream): void {
    this.up = u;
    u.owner = this;
    this.reused = u.uses > 0;
    this.pstate = P_HEAD;
    this.resBuf = null;
    this.resScanned = 0;
    this.resBytes = 0;
    this.finWait = false;
    this.setDeadline(D_RESPONSE, this.cfg.responseHeaderTimeoutMs);
    u.write(this.first!);
    if (this.firstBody) u.write(this.firstBody);
    this.rstate = this.reqDone ? R_DONE : R_BODY;
    if (this.rstate === R_BODY && this.buf) {
      const b = this.buf;
      this.buf = null;
      this.requestBody(b);
    } else this.updateReading();
  }

  requestBody(chunk: Uint8Array): void {
    let n: number;
    let done: boolean;
    if (this.reqBody === B_LENGTH) {
      n = chunk.length < this.reqRemaining ? chunk.length : this.reqRemaining;
      this.reqRemaining -= n;
      done = this.reqRemaining === 0;
    } else {
      const d = this.reqDecoder!;
      n = d.feed(chunk, 0, chunk.length);
      if (n < 0) {
        if (this.pstate === P_HEAD) return this.fail(400, `Bad request: invalid chunked body: ${d.error}`, "bad-request");
        return this.abort("bad_request");
      }
      const max = this.cfg.maxRequestBodyBytes;
      if (max > 0 && d.payload > max) {
        // Nothing past the limit goes upstream; the upstream connection is dropped with the request.
        if (this.pstate === P_HEAD) return this.tooLarge(max);
        return this.abort("bad_request");
      }
      done = d.done;
    }
    const u = this.up!;
    if (n > 0) {
      this.streamed = true;
      this.first = this.firstBody = null;
      u.write(n === chunk.length ? chunk : chunk.subarray(0, n));
      if (this.pstate === P_HEAD) this.deadline = this.proxy.clock + this.cfg.responseHeaderTimeoutMs;
    }
    if (done) {
      this.reqDone = true;
      this.rstate = R_DONE;
      if (n < chunk.length) this.buf = chunk.subarray(n);
    }
    this.updateReading();
  }

  // ---- upstream socket events ----------------------------------------------------------------

  onUpstreamData(u: Upstream, chunk: Uint8Array): void {
    if (u !== this.up) return;
    this.resBytes += chunk.length;
    if (this.rstate === R_TUNNEL) {
      this.deadline = this.proxy.clock + this.cfg.idleTimeoutMs;
      this.clientWrite(chunk);
      if (this.out) u.setReading(false);
      return;
    }
    this.first = this.firstBody = null;
    if (this.pstate === P_HEAD) this.responseHead(chunk);
    else if (this.pstate === P_BODY) this.responseBody(chunk, 0);
  }

  onUpstreamDrain(u: Upstream): void {
    if (u !== this.up) return;
    if (this.rstate === R_TUNNEL) this.maybeShutdown();
    this.updateReading();
  }

  onUpstreamEnd(u: Upstream): void {
    if (u !== this.up) return;
    if (this.rstate === R_TUNNEL) {
      this.upEof = true;
      this.maybeShutdown();
      return;
    }
    if (this.pstate === P_HEAD && this.resBytes === 0 && !this.idempotent && this.resendable()) {
      // A server closing a connection it thinks idle (shutting down) sends FIN, and then resets the request
      // that lands on the closed socket: wait for that proof that the request was never read.
      this.finWait = true;
      this.setDeadline(D_RESET_WAIT, RESET_WAIT_MS);
      return;
    }
    this.upstreamGone(u, false);
  }

  onUpstreamClose(u: Upstream, error?: Error): void {
    if (u !== this.up) return;
    if (this.rstate === R_TUNNEL) {
      this.up = null;
      this.closeClient();
      return;
    }
    const unread = this.finWait && error !== undefined;
    this.finWait = false;
    this.upstreamGone(u, unread);
  }

  /** The request's bytes are all at hand and nothing of it was resent yet: it could be sent again. */
  resendable(): boolean {
    return this.first !== null && !this.streamed && !this.retried && this.rstate !== R_CLOSING && this.cfg.retryIdempotent;
  }

  /**
   * The upstream closed (or sent FIN) during an exchange. Before any response byte, an idempotent request
   * whose bytes are all still at hand (nothing of its body was streamed) is sent once more, on a fresh
   * connection to another endpoint; to the same endpoint only when the failed connection was a reused
   * pooled one (the keep-alive race: the upstream closed it as the request went out). Other requests (POST)
   * are resent only when `unread`: the upstream closed the connection (FIN) and then reset it, which it does
   * when a request arrives on a socket it had already closed; otherwise it may have acted on the request.
   */
  upstreamGone(u: Upstream, unread: boolean): void {
    this.up = null;
    this.finWait = false;
    u.destroy();
    if (this.pstate === P_HEAD) {
      const ep = this.endpoint!;
      const stale = (this.reused && this.resBytes === 0) || unread;
      // A stale connection is the connection failing before use; anything else failed the request.
      this.endAttempt(stale ? "connect-failure" : "server-error");
      if ((this.idempotent || unread) && this.resendable()) {
        this.retried = true;
        (this.pick.exclude ??= new Set()).add(ep);
        const next = this.route!.balancer.pick(this.pick) ?? (stale ? ep : undefined);
        if (next !== undefined) {
          this.pstate = P_NONE;
          this.rstate = R_CONNECTING;
          this.setDeadline(D_NONE, 0);
          return this.useEndpoint(next, true, "upstream_reset");
        }
      }
      this.fail(502, `Bad gateway: service "${this.route?.entrypoint.name ?? "?"}" closed the connection without a response`, "upstream-reset");
    } else if (this.pstate === P_BODY) {
      if (this.resBody === B_CLOSE) this.responseDone();
      else this.abort("upstream_reset"); // truncated: the client must see the connection fail
    }
  }

  // ---- response side -------------------------------------------------------------------------

  responseHead(chunk: Uint8Array): void {
    const max = this.proxy.options.maxHeaderBytes;
    let buf = this.resBuf ? concat(this.resBuf, chunk) : chunk;
    for (;;) {
      const end = findHeadEnd(buf, 0, this.resScanned, buf.length);
      if (end === 0) {
        if (buf.length > max) return this.badGateway("the response head is too large");
        this.resBuf = buf;
        this.resScanned = buf.length;
        return;
      }
      if (end < 0) return this.badGateway("bare LF in the response head");
      if (end > max) return this.badGateway("the response head is too large");
      if (!parseResponseHead(buf, 0, end, RES)) return this.badGateway(`invalid response head: ${RES.error}`);
      const status = RES.status;
      if (status < 200 && status !== 101) {
        // Interim response: relay to HTTP/1.1 clients, then keep waiting for the final one.
        if (this.minor === 1) this.clientWrite(buildResponseHead(buf, 0, RES, CONN_AS_IS, false) ?? buf.subarray(0, end));
        this.deadline = this.proxy.clock + this.cfg.responseHeaderTimeoutMs;
        this.resScanned = 0;
        if (end === buf.length) {
          this.resBuf = null;
          return;
        }
        buf = buf.subarray(end);
        continue;
      }
      this.resBuf = null;
      this.resScanned = 0;
      if (status === 101) return this.switchProtocols(buf, end);
      return this.finalResponse(buf, end);
    }
  }

  finalResponse(buf: Uint8Array, end: number): void {
    const res = RES;
    this.status = this.upStatus = res.status;
    const framing = responseFraming(res, this.isHead);
    const upKeep = res.minor === 1 ? (res.conn & C_CLOSE) === 0 : (res.conn & C_KEEP_ALIVE) !== 0 && (res.conn & C_CLOSE) === 0;
    this.upReusable = upKeep && framing !== B_CLOSE && !this.upgradeReq;
    const dechunk = (this.dechunk = this.minor === 0 && framing === B_CHUNKED);
    this.closeAfter =
      !this.keepAlive || this.proxy.draining || (this.clientEof && !this.buf) || framing === B_CLOSE || dechunk || !this.reqDone;
    const conn = this.closeAfter ? CONN_CLOSE : this.minor === 0 ? CONN_KEEP_ALIVE : CONN_AS_IS;
    this.resBody = framing;
    this.resRemaining = res.contentLength;
    this.pstate = P_BODY;
    this.setDeadline(D_STREAM, this.cfg.idleTimeoutMs);

    if (framing === B_NONE) {
      if (end < buf.length) this.upReusable = false; // bytes after a bodiless response
      const head = buildResponseHead(buf, 0, res, conn, false, this.setCookie());
      this.clientWrite(head ?? (end === buf.length ? buf : buf.subarray(0, end)));
      return this.responseDone();
    }
    if (framing === B_LENGTH || (framing === B_CHUNKED && !dechunk)) {
      // The body bytes of this chunk (validated first: nothing is sent before a 502 is ruled out).
      let n: number;
      let done: boolean;
      if (framing === B_LENGTH) {
        const avail = buf.length - end;
        n = avail < this.resRemaining ? avail : this.resRemaining;
        this.resRemaining -= n;
        done = this.resRemaining === 0;
      } else {
        const d = (this.resDecoder ??= new ChunkedDecoder(this.proxy.options.maxHeaderBytes));
        d.reset();
        const r = d.feed(buf, end, buf.length);
        if (r < 0) {
          this.pstate = P_HEAD; // nothing sent yet: a 502 can still be the answer
          return this.badGateway(`invalid chunked response body: ${d.error}`);
        }
        n = r - end;
        done = d.done;
      }
      // One write for head and first body bytes, copied into the rebuilt head when small.
      const small = n <= COALESCE_BYTES;
      const head = buildResponseHead(buf, 0, res, conn, false, this.setCookie(), small ? end + n : end);
      if (!head) this.clientWrite(end + n === buf.length ? buf : buf.subarray(0, end + n));
      else {
        this.clientWrite(head);
        if (!small) this.clientWrite(buf.subarray(end, end + n));
      }
      if (done) {
        if (end + n < buf.length) this.upReusable = false;
        return this.responseDone();
      }
      this.updateUpstreamReading();
      return;
    }
    if (dechunk) (this.resDecoder ??= new ChunkedDecoder(this.proxy.options.maxHeaderBytes)).reset();
    const head = buildResponseHead(buf, 0, res, conn, dechunk, this.setCookie());
    this.clientWrite(head ?? buf.subarray(0, end));
    if (end < buf.length) this.responseBody(buf, end);
    else this.updateUpstreamReading();
  }

  responseBody(chunk: Uint8Array, start: number): void {
    const len = chunk.length;
    switch (this.resBody) {
      case B_LENGTH: {
        const avail = len - start;
        const n = avail < this.resRemaining ? avail : this.resRemaining;
        this.resRemaining -= n;
        this.clientWrite(start === 0 && n === len ? chunk : chunk.subarray(start, start + n));
        if (this.resRemaining === 0) {
          if (start + n < len) this.upReusable = false;
          return this.responseDone();
        }
        break;
      }
      case B_CHUNKED: {
        const d = this.resDecoder!;
        const r = this.dechunk ? d.feed(chunk, start, len, (this.#sink ??= (b, s, e) => this.clientWrite(b.subarray(s, e)))) : d.feed(chunk, start, len);
        if (r < 0) return this.abort("upstream_reset"); // the head is out: the client must see the connection fail
        if (!this.dechunk && r > start) this.clientWrite(start === 0 && r === len ? chunk : chunk.subarray(start, r));
        if (d.done) {
          if (r < len) this.upReusable = false;
          return this.responseDone();
        }
        break;
      }
      default:
        this.clientWrite(start === 0 ? chunk : chunk.subarray(start));
    }
    this.deadline = this.proxy.clock + this.cfg.idleTimeoutMs;
    this.updateUpstreamReading();
  }

  /** The response has been fully handed to the client socket. */
  responseDone(): void {
    this.pstate = P_NONE;
    this.endRequest(this.upStatus >= 500 ? "server-error" : "success");
    if (this.inflight) this.report(this.status, undefined);
    const u = this.up;
    this.up = null;
    if (u) {
      if (this.reqDone && this.upReusable && !u.eof && !u.out) u.pool.release(u, this.cfg.upstreamIdleTimeoutMs);
      else u.destroy();
    }
    if (this.closeAfter || this.proxy.draining || (this.clientEof && !this.buf) || !this.reqDone) return this.closeClient(!this.reqDone);
    this.rstate = R_IDLE;
    this.route = null;
    this.setDeadline(D_IDLE, this.cfg.idleTimeoutMs);
    if (this.buf) return this.readHead();
    this.store = null;
    this.updateReading();
  }

  switchProtocols(buf: Uint8Array, end: number): void {
    if (!this.upgradeReq || !this.reqDone) return this.badGateway("unexpected 101 Switching Protocols response");
    const head = buildResponseHead(buf, 0, RES, CONN_UPGRADE, false, this.setCookie());
    if (this.inflight) this.report(101, undefined);
    // The request is answered: the tunnel holds no concurrency slot and has no max duration.
    this.endRequest("success");
    this.rstate = R_TUNNEL;
    this.pstate = P_NONE;
    this.first = this.firstBody = null;
    this.setDeadline(D_STREAM, this.cfg.idleTimeoutMs);
    this.clientWrite(head ?? buf.subarray(0, end));
    if (end < buf.length) this.clientWrite(buf.subarray(end));
    const u = this.up!;
    if (this.buf) {
      u.write(this.buf);
      this.buf = null;
    }
    if (this.clientEof) this.downEof = true;
    this.maybeShutdown();
    this.updateUpstreamReading();
    this.updateReading();
  }

  /** Tunnel: pass each side's FIN on once its queued bytes are written; close when both are done. */
  maybeShutdown(): void {
    const u = this.up;
    if (!u) return;
    if (this.downEof && !this.upShut && !u.out) {
      this.upShut = true;
      u.sock?.end();
    }
    if (this.upEof && !this.downShut && !this.out) {
      this.downShut = true;
      this.sock.end();
    }
    if (this.upShut && this.downShut) {
      // Both directions are finished: each socket closes once its FINs are through.
      this.up = null;
      u.owner = null;
      this.rstate = R_CLOSING;
      this.setDeadline(D_LINGER, Math.min(LINGER_MS, this.cfg.idleTimeoutMs));
    }
  }

  // ---- helpers -------------------------------------------------------------------------------

  /** The affinity cookie's Set-Cookie line, when the route has cookie affinity and the cookie did not pick the endpoint. */
  setCookie(): Uint8Array | null {
    const cookie = this.route?.cookie;
    if (cookie === undefined || this.endpoint === null || this.endpoint === this.cookieEp) return null;
    return cookie.setCookieLine(this.endpoint);
  }

  /**
   * Add received bytes to {@link buf}. A head arriving in many small pieces grows one buffer by doubling
   * (amortised linear), rather than being copied whole on every piece. Bytes already handed to a socket
   * all lie before `buf`, so writing after its end never touches them.
   */
  append(chunk: Uint8Array): void {
    const b = this.buf;
    if (!b) {
      this.buf = chunk;
      this.store = null;
      return;
    }
    const need = b.length + chunk.length;
    const store = this.store;
    if (store && b.buffer === store.buffer && b.byteOffset + need <= store.byteOffset + store.length) {
      const at = b.byteOffset - store.byteOffset;
      store.set(chunk, at + b.length);
      this.buf = store.subarray(at, at + need);
      return;
    }
    const grown = new Uint8Array(Math.max(need * 2, 4096));
    grown.set(b, 0);
    grown.set(chunk, b.length);
    this.store = grown;
    this.buf = grown.subarray(0, need);
  }

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

  /** Pause or resume the client socket according to the state and the upstream's backpressure. */
  updateReading(): void {
    if (this.closed) return;
    let want: boolean;
    switch (this.rstate) {
      case R_IDLE:
        want = this.out === null;
        break;
      case R_BODY:
      case R_TUNNEL:
        want = this.up !== null && this.up.out === null;
        break;
      case R_CONNECTING:
      case R_DONE:
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

  updateUpstreamReading(): void {
    this.up?.setReading(this.out === null);
  }

  badGateway(reason: string): void {
    this.fail(502, `Bad gateway: ${reason}`, "invalid-response");
  }

  /**
   * Answer with a generated error response (`why` in its `x-kubegate-reason` field) and close the connection.
   * `metric` (the error reason counted) defaults from `why`. The request's attempt ends as a server error
   * when the upstream was at fault (it sent a 5xx, or failed or timed out after the request was sent).
   */
  fail(status: number, body: string, why: GatewayReason, metric: ProxyErrorReason | undefined = metricReason(why)): void {
    if (this.closed) return;
    if (this.pstate === P_BODY || this.rstate === R_TUNNEL) return this.abort(metric); // a response is already under way
    this.endRequest(this.upStatus >= 500 || (this.pstate === P_HEAD && upstreamFault(why, this.reqDone)) ? "server-error" : "success");
    this.dropUpstream();
    this.clientWrite(errorResponse(status, body.endsWith("\n") ? body : body + "\n", true, why));
    if (this.tel !== undefined) this.report(status, metric);
    this.closeClient(true);
  }

  dropUpstream(): void {
    const u = this.up;
    if (u) {
      this.up = null;
      u.destroy();
    }
    this.pstate = P_NONE;
  }

  /**
   * Close gracefully: stop reading requests, flush what is queued, then send FIN (`end()` is a
   * half-close) and discard input until the client closes its side, so bytes it is still sending cannot
   * turn the close into a reset that destroys the response (nginx's lingering close). `linger` says the
   * client probably is still sending (an error, or a body not read): it then gets {@link LINGER_MS} to
   * close; otherwise the idle timeout applies.
   */
  closeClient(linger = false): void {
    if (this.closed) return;
    this.endRequest(this.upStatus >= 500 ? "server-error" : "success");
    this.dropUpstream();
    this.rstate = R_CLOSING;
    this.buf = null;
    this.lingering = linger && !this.clientEof;
    this.setDeadline(D_LINGER, this.cfg.idleTimeoutMs);
    if (this.out) this.endWhenFlushed = true;
    else this.finishClose();
    this.updateReading();
  }

  finishClose(): void {
    this.sock.end();
    if (this.lingering) this.setDeadline(D_LINGER, Math.min(LINGER_MS, this.cfg.idleTimeoutMs));
  }

  /** Close both sides now (a response cannot be completed); `reason` is why, for telemetry (none: shutdown). */
  abort(reason?: ProxyErrorReason): void {
    if (this.closed) return;
    this.endRequest(this.upStatus >= 500 || reason === "upstream_reset" ? "server-error" : "success");
    if (this.inflight) this.report(this.status, reason);
    this.dropUpstream();
    this.rstate = R_CLOSING;
    this.sock.terminate();
  }
}

/**
 * Whether a gateway error blames the upstream (its attempt then ends as a server error). A timeout while the
 * client is still sending the body is the client's.
 */
function upstreamFault(why: GatewayReason, requestSent: boolean): boolean {
  if (why === "upstream-timeout" || why === "max-duration") return requestSent;
  return why === "upstream-reset" || why === "invalid-response";
}

/** The metrics error reason of a generated response. */
function metricReason(why: GatewayReason): ProxyErrorReason | undefined {
  switch (why) {
    case "request-timeout":
      return "request_timeout";
    case "no-endpoints":
      return "no_endpoints";
    case "circuit-breaker":
      return "circuit_open";
    case "body-too-large":
      return "body_too_large";
    case "connect-failed":
      return "connect_failed";
    case "connect-timeout":
      return "connect_timeout";
    case "upstream-reset":
    case "invalid-response":
      return "upstream_reset";
    case "upstream-timeout":
    case "max-duration":
      return "upstream_timeout";
    default:
      return "bad_request";
  }
}

/** The reason of a request-head parse failure's status. */
function parseReason(status: number): GatewayReason {
  switch (status) {
    case 405:
      return "method-not-allowed";
    case 431:
      return "header-too-large";
    case 505:
      return "version-not-supported";
    default:
      return "bad-request";
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
