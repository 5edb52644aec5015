/**
 * The upstream attempts of a request: begin one on the balancer, take a pooled connection or connect, write
 * the request head, try the next endpoint when a connect fails, and resend a request that an upstream closed
 * on without answering (the keep-alive race). Each attempt is ended on the balancer exactly once. Plain
 * functions of the {@link Downstream}.
 */
import type { Outcome } from "../../balancer/types.ts";
import type { Endpoint } from "../../model/types.ts";
import { routeTraffic } from "../types.ts";
import type { Downstream } from "./downstream.ts";
import { B_CLOSE } from "./parser.ts";
import { type EndpointPool, poolFor, type Upstream } from "./pool.ts";
import { requestBody } from "./request.ts";
import { responseDone } from "./response.ts";
import { releaseRequest } from "./settings.ts";
import { CLOSING, CONNECTING, NO_RESPONSE, NO_TIMER, REQUEST_SENT, RESET_WAIT_TIMER, RESPONSE_BODY, RESPONSE_HEAD, RESPONSE_TIMER, SENDING_BODY } from "./state.ts";
import { startClientSpan } from "./trace.ts";

/**
 * How long to wait, after an upstream's FIN with no response, for the reset that proves it never read the
 * request (its socket was closed when the request arrived), ms.
 */
const RESET_WAIT_MS = 250;

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
export function startAttempt(d: Downstream, ep: Endpoint, fresh: boolean, previousError: string): void {
  d.endpoint = ep;
  d.attempts++;
  const route = d.route!;
  const b = route.balancer;
  b.begin(ep);
  d.began = ep;
  d.beganOn = b;
  const tel = d.tel;
  if (tel !== null && tel.trace !== null) {
    startClientSpan(tel.trace, tel.tel.tracing!, tel.method, tel.path, route.entrypoint, ep, d.first, tel.traceAt, previousError);
  }
  const pool = poolFor(ep);
  const u = fresh || !d.idempotent || !d.reqDone ? undefined : pool.take();
  if (u) attach(d, u);
  else connect(d, pool, ep);
}

/** End the open attempt (if any) on the balancer it was begun on. */
export function endAttempt(d: Downstream, outcome: Outcome): void {
  const ep = d.began;
  if (ep === null) return;
  d.began = null;
  const b = d.beganOn!;
  d.beganOn = null;
  b.end(ep, outcome);
}

/** The request is over (answered, failed, upgraded or abandoned): end its attempt, free its slot and timer. */
export function endRequest(d: Downstream, outcome: Outcome): void {
  if (d.began !== null) endAttempt(d, outcome);
  const c = d.circuit;
  if (c !== null) {
    d.circuit = null;
    releaseRequest(c);
  }
  d.reqDeadline = 0;
}

function connect(d: Downstream, pool: EndpointPool, ep: Endpoint): void {
  const tel = d.tel;
  const t0 = tel === null ? 0 : performance.now();
  pool.connect(d.settings.connectTimeoutMs).then(
    (u) => {
      if (t0 !== 0 && d.route !== null) routeTraffic(tel!.tel, d.route)?.connectDuration((performance.now() - t0) / 1000);
      if (d.closed || d.phase !== CONNECTING || d.endpoint !== ep) pool.release(u, d.settings.upstreamIdleTimeoutMs);
      else if (u.eof) {
        // Closed by the upstream before anything was sent (a backend shutting down closes new connections
        // too): a connect failure, safe to try elsewhere.
        u.destroy();
        d.lastConnectTimedOut = false;
        connectFailed(d, ep);
      } else attach(d, u);
    },
    (err: unknown) => {
      d.lastConnectTimedOut = err instanceof Error && err.message.includes("timed out");
      connectFailed(d, ep);
    },
  );
}

function connectFailed(d: Downstream, ep: Endpoint): void {
  if (d.closed || d.phase !== CONNECTING || d.endpoint !== ep) return;
  endAttempt(d, "connect-failure");
  const route = d.route!;
  const tried = (d.pick.exclude ??= new Set());
  tried.add(ep);
  const next = d.attempts < d.proxy.options.connectAttempts ? route.balancer.pick(d.pick) : undefined;
  const timedOut = d.lastConnectTimedOut;
  if (next) return startAttempt(d, next, false, timedOut ? "connect_timeout" : "connect_failed");
  d.fail(
    502,
    `Bad gateway: no endpoint of service "${route.entrypoint.name}" accepted a connection (${d.attempts} tried)`,
    timedOut ? "connect_timeout" : "connect_failed",
  );
}

/** Take `u` for the request (CONNECTING to SENDING_BODY or REQUEST_SENT): write the head, wait for the response head. */
function attach(d: Downstream, u: Upstream): void {
  d.up = u;
  u.owner = d;
  d.reused = u.uses > 0;
  d.resPhase = RESPONSE_HEAD;
  d.resBuf = null;
  d.resScanned = 0;
  d.resBytes = 0;
  d.finWait = false;
  d.setTimer(RESPONSE_TIMER, d.settings.responseHeaderTimeoutMs);
  u.write(d.first!);
  if (d.firstBody) u.write(d.firstBody);
  d.phase = d.reqDone ? REQUEST_SENT : SENDING_BODY;
  if (d.phase === SENDING_BODY && d.buf) {
    const b = d.buf;
    d.buf = null;
    requestBody(d, b);
  } else d.updateReading();
}

/** The request's bytes are all at hand and nothing of it was resent yet: it could be sent again. */
function resendable(d: Downstream): boolean {
  return d.first !== null && !d.streamed && !d.retried && d.phase !== CLOSING && d.settings.retryIdempotent;
}

/** The upstream sent FIN during an exchange (not a tunnel). */
export function upstreamEnded(d: Downstream, u: Upstream): void {
  if (d.resPhase === RESPONSE_HEAD && d.resBytes === 0 && !d.idempotent && resendable(d)) {
    // A server closing a connection it thinks idle (shutting down) sends FIN, and then resets the request
    // that lands on the closed socket: wait for that proof that the request was never read.
    d.finWait = true;
    d.setTimer(RESET_WAIT_TIMER, RESET_WAIT_MS);
    return;
  }
  upstreamGone(d, u, false);
}

/** The upstream socket closed during an exchange (not a tunnel); `error` when it was reset. */
export function upstreamClosed(d: Downstream, u: Upstream, error: Error | undefined): void {
  const unread = d.finWait && error !== undefined;
  d.finWait = false;
  upstreamGone(d, u, unread);
}

/**
 * The upstream closed (or sent FIN) during an exchange. Before any response byte, an idempotent request
 * whose bytes are all still at hand (nothing of its body was streamed) is sent once more, on a fresh
 * connection to another endpoint; to the same endpoint only when the failed connection was a reused
 * pooled one (the keep-alive race: the upstream closed it as the request went out). Other requests (POST)
 * are resent only when `unread`: the upstream closed the connection (FIN) and then reset it, which it does
 * when a request arrives on a socket it had already closed; otherwise it may have acted on the request.
 */
export function upstreamGone(d: Downstream, u: Upstream, unread: boolean): void {
  d.up = null;
  d.finWait = false;
  u.destroy();
  if (d.resPhase === RESPONSE_HEAD) {
    const ep = d.endpoint!;
    const stale = (d.reused && d.resBytes === 0) || unread;
    // A stale connection is the connection failing before use; anything else failed the request.
    endAttempt(d, stale ? "connect-failure" : "server-error");
    if ((d.idempotent || unread) && resendable(d)) {
      d.retried = true;
      (d.pick.exclude ??= new Set()).add(ep);
      const next = d.route!.balancer.pick(d.pick) ?? (stale ? ep : undefined);
      if (next !== undefined) {
        d.resPhase = NO_RESPONSE;
        d.phase = CONNECTING;
        d.setTimer(NO_TIMER, 0);
        return startAttempt(d, next, true, "upstream_reset");
      }
    }
    d.fail(502, `Bad gateway: service "${d.route?.entrypoint.name ?? "?"}" closed the connection without a response`, "upstream_reset");
  } else if (d.resPhase === RESPONSE_BODY) {
    if (d.resBody === B_CLOSE) responseDone(d);
    else d.abort("upstream_reset"); // truncated: the client must see the connection fail
  }
}
