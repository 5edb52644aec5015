/**
 * One call: a client's HTTP/2 stream proxied to a stream on an endpoint's upstream session. Each call is balanced on
 * its own (any algorithm, affinity, a hash on a header or gRPC metadata), so the calls of one long-lived client
 * connection spread over the endpoints, and an endpoint change moves the next call at once.
 *
 *   headers ─▶ pick ─▶ session (pooled, or connect) ─▶ upstream stream ─▶ response headers ─▶ data ─▶ trailers
 *                 ▲          │ connect failed / REFUSED_STREAM before a response: next endpoint
 *                 └──────────┘
 *
 * Bodies flow with HTTP/2 flow control end to end: a chunk received from one side is acknowledged to it
 * (`consumed`, a WINDOW_UPDATE) only once the other side took it, so a slow reader holds its sender and the
 * proxy buffers at most a stream window per direction. A gateway-made error reaches a gRPC client as a
 * trailers-only response (`grpc-status`, `grpc-message`, `x-kubegate-reason`), any other client as a status with a
 * text body. Each call ends its attempt on the balancer exactly once: HTTP 5xx and gRPC statuses that map to 5xx
 * (UNAVAILABLE, INTERNAL, ...) count as server errors for outlier detection.
 */
import type { Outcome } from "../../balancer/types.ts";
import type { Endpoint } from "../../model/types.ts";
import type { Route } from "../../routes/types.ts";
import type { ServiceTraffic } from "../../telemetry/metrics/traffic.ts";
import { acquireRequest, releaseRequest, type RouteSettings } from "../http/settings.ts";
import { routeTraffic } from "../types.ts";
import {
  GRPC_DEADLINE_EXCEEDED,
  grpcCodeForHttp,
  grpcErrorHeaders,
  grpcErrorTrailers,
  grpcStatusOf,
  grpcToHttpStatus,
  headerValue,
  isGrpc,
  parseGrpcTimeout,
} from "./grpc.ts";
import type { H2Host } from "./host.ts";
import { type CallTrace, endCallSpans, startCallClientSpan, startCallSpan, traceable } from "./trace.ts";
import type { H2Session, H2Stream, H2StreamHandlers, HeaderList } from "./session.ts";

/** RST_STREAM codes the proxy sends or reads. */
const NO_ERROR = 0x0;
const INTERNAL_ERROR = 0x2;
const REFUSED_STREAM = 0x7;
const CANCEL = 0x8;

const enc = new TextEncoder();

/**
 * The client side of a call: a client's HTTP/2 stream ({@link streamCall}), or one HTTP/1.1 exchange (`http1.ts`),
 * which reports to the call through its `down*` methods. The call puts itself in `data`.
 */
export type CallDownstream = Pick<H2Stream, "data" | "sendHeaders" | "sendData" | "sendTrailers" | "reset" | "consumed">;

/** Request header fields not forwarded upstream (hop-by-hop or the gateway's own). */
function forwarded(name: string): boolean {
  return name !== "x-kubegate-reason";
}

export class Call {
  readonly started = performance.now();
  readonly grpc: boolean;
  readonly method: string;
  readonly path: string;
  route: Route;
  readonly settings: RouteSettings;
  readonly traffic: ServiceTraffic | undefined;
  up: H2Stream | null = null;
  endpoint: Endpoint | null = null;
  /** The endpoint the open attempt was begun on (ended exactly once). */
  began: Endpoint | null = null;
  attempts = 0;
  exclude: Set<Endpoint> | undefined;
  readonly hashKey: string | undefined;
  /** The request's fields as they go upstream (the trace fields rewritten when the call is traced). */
  readonly forwardHeaders: [string, string][];
  trace: CallTrace | null = null;
  /** Request body received before an upstream stream exists (bounded by the stream window: not yet consumed). */
  pending: Uint8Array[] | null = null;
  reqEnded: boolean;
  /** Request bytes forwarded upstream but not yet acknowledged downstream (the upstream's window was full). */
  downUnacked = 0;
  /** Response bytes forwarded downstream but not yet acknowledged upstream. */
  upUnacked = 0;
  /** Response headers (non-1xx) went downstream. */
  responded = false;
  status = 0;
  grpcStatus: number | undefined;
  done = false;
  circuit = false;
  deadline: ReturnType<typeof setTimeout> | undefined;
  bytesIn = 0;
  bytesOut = 0;
  /** Request body bytes handed to an upstream stream (a call with none can still go to another endpoint). */
  sentUp = 0;
  /** Why the last attempt failed (the next attempt's span ends the previous one with it). */
  lastError = "";

  constructor(
    readonly host: H2Host,
    readonly down: CallDownstream,
    headers: HeaderList,
    endStream: boolean,
    readonly client: string,
  ) {
    this.route = host.ref.current;
    this.settings = host.settings(this.route);
    this.traffic = routeTraffic(host.options.telemetry, this.route);
    let method = "";
    let path = "";
    let contentType: string | undefined;
    let timeout: string | undefined;
    let length: string | undefined;
    const up: [string, string][] = [];
    for (const [n, v] of headers) {
      if (n === ":method") method = v;
      else if (n === ":path") path = v;
      else if (n === "content-type") contentType = v;
      else if (n === "grpc-timeout") timeout = v;
      else if (n === "content-length") length = v;
      if (forwarded(n)) up.push([n, v]);
    }
    this.method = method;
    this.path = path;
    this.grpc = isGrpc(contentType);
    this.forwardHeaders = up;
    this.reqEnded = endStream;
    const tr = host.options.telemetry?.tracing;
    if (traceable(tr, headers)) this.trace = startCallSpan(tr, headers, up, this.grpc, client, this.route.entrypoint);
    const s = this.settings;
    this.hashKey = s.hashSource === 1 ? headerValue(headers, host.hashHeader(s)) : undefined;
    down.data = this;
    let limitMs = s.maxRequestDurationMs;
    const grpcMs = this.grpc ? parseGrpcTimeout(timeout) : undefined;
    if (grpcMs !== undefined && (limitMs === 0 || grpcMs < limitMs)) limitMs = grpcMs;
    if (limitMs > 0) this.deadline = setTimeout(() => this.#expired(grpcMs !== undefined && grpcMs === limitMs), limitMs);
    // A declared body over the limit is answered before anything goes upstream (as HTTP/1.1's forwarder does).
    if (s.maxRequestBodyBytes > 0 && length !== undefined && Number(length) > s.maxRequestBodyBytes) this.#tooLarge();
    else this.#begin();
  }

  /**
   * The request body passed `maxRequestBodyBytes` (`--max-body-bytes`, `kubegate.io/max-body-bytes`): 413 (gRPC:
   * RESOURCE_EXHAUSTED) when no response began, and the client is asked to stop sending (RST_STREAM NO_ERROR, RFC 9113
   * §8.1); after a response began, both streams are reset. Nothing past the limit goes upstream.
   */
  #tooLarge(): void {
    const max = this.settings.maxRequestBodyBytes;
    if (!this.responded) {
      this.fail(413, `Content too large: the request body exceeds ${max} bytes`, "body_too_large");
      if (!this.reqEnded) this.down.reset(NO_ERROR);
      return;
    }
    this.up?.reset(CANCEL);
    this.up = null;
    this.down.reset(CANCEL);
    this.#finish("success", this.status, "body_too_large", true);
  }

  #begin(): void {
    const s = this.settings;
    if (s.maxConcurrentRequests > 0) {
      if (!acquireRequest(s.cluster, s.maxConcurrentRequests)) {
        return this.fail(503, `Service unavailable: service "${this.route.entrypoint.name}" has ${s.maxConcurrentRequests} requests in flight (circuit breaker)`, "circuit_open");
      }
      this.circuit = true;
    }
    const ep = this.#pick();
    if (ep === undefined) return this.fail(503, `Service unavailable: service "${this.route.entrypoint.name}" has no serving endpoint`, "no_endpoints");
    this.#attempt(ep);
  }

  #pick(): Endpoint | undefined {
    return this.route.balancer.pick({ clientAddress: this.client, exclude: this.exclude, hashKey: this.hashKey });
  }

  /** One attempt on `ep`: a pooled session with room, or a new connection. */
  #attempt(ep: Endpoint): void {
    this.endpoint = ep;
    this.attempts++;
    this.route.balancer.begin(ep);
    this.began = ep;
    if (this.trace !== null) startCallClientSpan(this.trace, this.host.options.telemetry!.tracing!, this.forwardHeaders, this.route.entrypoint, ep, this.lastError);
    const pool = this.host.pool(ep);
    const session = pool.available();
    if (session) return this.#open(session);
    const t0 = performance.now();
    pool.connect(this.settings.connectTimeoutMs).then(
      (s) => {
        if (this.done || this.endpoint !== ep) return;
        this.traffic?.connectDuration((performance.now() - t0) / 1000);
        if (s.canRequest) this.#open(s);
        else this.#attemptFailed(ep, "connect-failure", "connect_failed");
      },
      (err: unknown) => {
        if (this.done || this.endpoint !== ep) return;
        const timedOut = err instanceof Error && err.message.includes("timed out");
        this.#attemptFailed(ep, "connect-failure", timedOut ? "connect_timeout" : "connect_failed");
      },
    );
  }

  #open(session: H2Session): void {
    const body = this.pending;
    this.pending = null;
    const endNow = this.reqEnded && (body === null || body.length === 0);
    const up = session.request(this.forwardHeaders, endNow, UP_HANDLERS);
    up.data = this;
    this.up = up;
    if (body !== null) {
      for (let i = 0; i < body.length; i++) this.#forwardUp(body[i]!, this.reqEnded && i === body.length - 1);
    }
  }

  /** The attempt on `ep` failed before any response: try the next endpoint, or fail the call. */
  #attemptFailed(ep: Endpoint, outcome: Outcome, reason: "connect_failed" | "connect_timeout" | "upstream_reset"): void {
    this.#endAttempt(outcome);
    this.lastError = reason;
    this.up = null;
    (this.exclude ??= new Set()).add(ep);
    // A request whose body was partly forwarded cannot be sent again (it is gone from here).
    const resendable = this.sentUp === 0;
    const next = resendable && this.attempts < this.host.options.connectAttempts ? this.#pick() : undefined;
    if (next !== undefined) return this.#attempt(next);
    const status = reason === "connect_timeout" ? 504 : 502;
    this.fail(
      status,
      reason === "upstream_reset"
        ? `Bad gateway: service "${this.route.entrypoint.name}" refused the stream`
        : `Bad gateway: no endpoint of service "${this.route.entrypoint.name}" accepted a connection (${this.attempts} tried)`,
      reason,
    );
  }

  #endAttempt(outcome: Outcome): void {
    const ep = this.began;
    if (ep === null) return;
    this.began = null;
    this.route.balancer.end(ep, outcome);
  }

  // ---- downstream (client) stream -----------------------------------------------------------------

  downData(chunk: Uint8Array, endStream: boolean): void {
    if (this.done) {
      // The call ended (a gateway answer such as 413): what the client still sends is dropped, its window returned.
      this.down.consumed(chunk.length);
      return;
    }
    this.bytesIn += chunk.length;
    if (endStream) this.reqEnded = true;
    const max = this.settings.maxRequestBodyBytes;
    if (max > 0 && this.bytesIn > max) return this.#tooLarge();
    if (this.up === null) {
      (this.pending ??= []).push(chunk);
      return;
    }
    this.#forwardUp(chunk, endStream);
  }

  #forwardUp(chunk: Uint8Array, endStream: boolean): void {
    const up = this.up!;
    this.sentUp += chunk.length;
    if (up.sendData(chunk, endStream)) this.down.consumed(chunk.length);
    else this.downUnacked += chunk.length;
  }

  /** Trailers from the client (a streaming request's end). */
  downTrailers(headers: HeaderList): void {
    this.reqEnded = true;
    if (this.up === null) {
      // Rare (trailers before the upstream stream opened): end the body instead; trailers are dropped.
      (this.pending ??= []).push(new Uint8Array(0));
      return;
    }
    this.up.sendTrailers(headers);
  }

  /** The upstream's window opened again: acknowledge what it took of the request to the client. */
  upWritable(): void {
    const n = this.downUnacked;
    if (n === 0) return;
    this.downUnacked = 0;
    this.down.consumed(n);
  }

  /** The client reset the stream (cancelled the call) or went away. */
  downReset(): void {
    if (this.done) return;
    this.up?.reset(CANCEL);
    this.#finish("success", 499, "client_closed", true);
  }

  // ---- upstream stream ------------------------------------------------------------------------------

  upstreamHeaders(headers: HeaderList, endStream: boolean): void {
    if (this.done) return;
    const first = !this.responded;
    if (first) {
      const status = Number(headerValue(headers, ":status") ?? "0");
      if (status >= 100 && status < 200) {
        this.down.sendHeaders(headers, false);
        return;
      }
      this.status = status;
      this.responded = true;
      if (endStream) this.grpcStatus = grpcStatusOf(headers);
      this.down.sendHeaders(headers, endStream);
    } else {
      this.grpcStatus = grpcStatusOf(headers);
      this.down.sendTrailers(headers);
    }
    if (endStream) this.#finish(this.#outcome(), this.#metricStatus(), "");
  }

  upData(chunk: Uint8Array, endStream: boolean): void {
    if (this.done) return;
    this.bytesOut += chunk.length;
    if (this.down.sendData(chunk, endStream)) this.up!.consumed(chunk.length);
    else this.upUnacked += chunk.length;
    if (endStream) this.#finish(this.#outcome(), this.#metricStatus(), "");
  }

  /** The client's window opened again: acknowledge what it took of the response to the upstream. */
  downWritable(): void {
    const n = this.upUnacked;
    if (n === 0 || this.up === null) return;
    this.upUnacked = 0;
    this.up.consumed(n);
  }

  /** The upstream reset the stream, or its connection went away. */
  upReset(code: number): void {
    if (this.done) return;
    const ep = this.endpoint!;
    this.up = null;
    if (!this.responded) {
      // Not processed (REFUSED_STREAM, or GOAWAY past this stream): safe to send elsewhere.
      if (code === REFUSED_STREAM) return this.#attemptFailed(ep, "connect-failure", "upstream_reset");
      this.#endAttempt("server-error");
      return this.fail(502, `Bad gateway: service "${this.route.entrypoint.name}" reset the stream (code ${code})`, "upstream_reset");
    }
    // Mid-response: the client must see the call fail.
    this.#endAttempt("server-error");
    if (this.grpc) {
      this.grpcStatus = 14;
      this.down.sendTrailers(grpcErrorTrailers(14, `upstream reset the stream (code ${code})`, "upstream_reset"));
      this.#finish("server-error", 503, "upstream_reset", true);
    } else {
      this.down.reset(code === NO_ERROR ? INTERNAL_ERROR : code);
      this.#finish("server-error", 502, "upstream_reset", true);
    }
  }

  // ---- ends ------------------------------------------------------------------------------------------

  #expired(grpcDeadline: boolean): void {
    this.deadline = undefined;
    if (this.done) return;
    this.up?.reset(CANCEL);
    this.up = null;
    this.#endAttempt("success");
    if (grpcDeadline && this.grpc) {
      this.grpcStatus = GRPC_DEADLINE_EXCEEDED;
      if (this.responded) this.down.sendTrailers(grpcErrorTrailers(GRPC_DEADLINE_EXCEEDED, "deadline exceeded", "upstream_timeout"));
      else this.down.sendHeaders(grpcErrorHeaders(GRPC_DEADLINE_EXCEEDED, "deadline exceeded", "upstream_timeout"), true);
      this.#finish("success", 504, "upstream_timeout", true);
      return;
    }
    const msg = `Gateway timeout: the request to service "${this.route.entrypoint.name}" did not complete within ${this.settings.maxRequestDurationMs} ms (max request duration)`;
    if (this.responded) {
      if (this.grpc) this.down.sendTrailers(grpcErrorTrailers(GRPC_DEADLINE_EXCEEDED, msg, "max_duration"));
      else this.down.reset(CANCEL);
      this.#finish("success", 504, "max_duration", true);
    } else this.fail(504, msg, "max_duration");
  }

  /** Answer the call with a gateway-made error (nothing of a response was sent yet). */
  fail(status: number, message: string, reason: Parameters<ServiceTraffic["error"]>[0]): void {
    if (this.done) return;
    this.up?.reset(CANCEL);
    this.up = null;
    this.#endAttempt(reason === "connect_failed" || reason === "connect_timeout" ? "connect-failure" : "success");
    if (this.grpc) {
      this.grpcStatus = grpcCodeForHttp(status);
      this.down.sendHeaders(grpcErrorHeaders(this.grpcStatus, message, reason), true);
    } else {
      const body = enc.encode(`${message}\n`);
      this.down.sendHeaders(
        [
          [":status", String(status)],
          ["content-type", "text/plain; charset=utf-8"],
          ["content-length", String(body.length)],
          ["x-kubegate-reason", reason],
        ],
        false,
      );
      this.down.sendData(body, true);
    }
    this.#finish("success", status, reason, true);
  }

  #outcome(): Outcome {
    return this.#metricStatus() >= 500 ? "server-error" : "success";
  }

  /** The HTTP status the call counts as: gRPC calls by their grpc-status (a 200 without one is a 500: broken). */
  #metricStatus(): number {
    if (this.grpc && this.status === 200) return this.grpcStatus === undefined ? 500 : grpcToHttpStatus(this.grpcStatus);
    return this.status;
  }

  #finish(outcome: Outcome, status: number, reason: string, gatewayMade = false): void {
    if (this.done) return;
    this.done = true;
    this.#endAttempt(outcome);
    if (this.deadline !== undefined) clearTimeout(this.deadline);
    if (this.circuit) {
      this.circuit = false;
      releaseRequest(this.settings.cluster);
    }
    const seconds = (performance.now() - this.started) / 1000;
    if (this.trace !== null) endCallSpans(this.trace, this.grpc ? 200 : status, this.grpcStatus, gatewayMade ? reason : "");
    const t = this.traffic;
    if (t !== undefined) {
      t.request(status, seconds, this.trace?.server.spanContext()); // a sampled call's ids: its latency bucket's exemplar
      if (this.bytesIn !== 0 || this.bytesOut !== 0) t.bytes(this.bytesIn, this.bytesOut);
      if (gatewayMade && reason !== "") t.error(reason as Parameters<ServiceTraffic["error"]>[0]);
    }
    this.host.callDone(this, status, reason, seconds);
  }
}

/** Serve a client's HTTP/2 request stream as a call. */
export function streamCall(host: H2Host, stream: H2Stream, headers: HeaderList, endStream: boolean, client: string): Call {
  stream.handlers = DOWN_HANDLERS;
  return new Call(host, stream, headers, endStream, client);
}

/** The handlers of every client stream (the call is the stream's `data`). */
const DOWN_HANDLERS: H2StreamHandlers = {
  headers(stream, headers) {
    (stream.data as Call).downTrailers(headers);
  },
  data(stream, chunk, endStream) {
    (stream.data as Call).downData(chunk, endStream);
  },
  reset(stream) {
    (stream.data as Call).downReset();
  },
  writable(stream) {
    (stream.data as Call).downWritable();
  },
};

/** The handlers of every upstream stream. */
const UP_HANDLERS: H2StreamHandlers = {
  headers(stream, headers, endStream) {
    (stream.data as Call).upstreamHeaders(headers, endStream);
  },
  data(stream, chunk, endStream) {
    (stream.data as Call).upData(chunk, endStream);
  },
  reset(stream, code) {
    (stream.data as Call).upReset(code);
  },
  writable(stream) {
    (stream.data as Call).upWritable();
  },
};
