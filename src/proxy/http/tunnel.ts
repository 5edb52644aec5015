/**
 * The tunnel of a downstream connection: after `101 Switching Protocols` (WebSocket, any `Upgrade`) the
 * connection is a raw byte pipe both ways, with backpressure, an idle timer, and each side's FIN passed on
 * once its queued bytes are written. Plain functions of the {@link Downstream}.
 */
import { endRequest } from "./attempt.ts";
import type { Downstream } from "./downstream.ts";
import { buildResponseHead, CONN_UPGRADE } from "./head.ts";
import { badGateway, RES, setCookie } from "./response.ts";
import { CLOSING, LINGER_TIMER, NO_RESPONSE, STREAM_TIMER, TUNNEL } from "./state.ts";

/** How long a lingering close waits for the client to close after our FIN, ms. */
export const LINGER_MS = 2_000;

/** Relay the `101` head just parsed into {@link RES} and turn the connection into a tunnel (phase TUNNEL). */
export function switchProtocols(d: Downstream, buf: Uint8Array, end: number): void {
  if (!d.upgradeReq || !d.reqDone) return badGateway(d, "unexpected 101 Switching Protocols response");
  const head = buildResponseHead(buf, 0, RES, CONN_UPGRADE, false, setCookie(d));
  const tel = d.tel;
  if (tel !== null && tel.inflight) tel.report(d, 101, undefined);
  // The request is answered: the tunnel holds no concurrency slot and has no max duration.
  endRequest(d, "success");
  d.phase = TUNNEL;
  d.resPhase = NO_RESPONSE;
  d.first = d.firstBody = null;
  d.setTimer(STREAM_TIMER, d.settings.idleTimeoutMs);
  d.clientWrite(head ?? buf.subarray(0, end));
  if (end < buf.length) d.clientWrite(buf.subarray(end));
  const u = d.up!;
  if (d.buf) {
    u.write(d.buf);
    d.buf = null;
  }
  if (d.clientEof) d.downEof = true;
  tunnelShutdown(d);
  d.updateUpstreamReading();
  d.updateReading();
}

/** Client bytes in the tunnel: to the upstream. */
export function tunnelFromClient(d: Downstream, chunk: Uint8Array): void {
  d.timer = STREAM_TIMER;
  d.deadline = d.proxy.clock + d.settings.idleTimeoutMs;
  if (!d.up!.write(chunk)) d.updateReading();
}

/** Upstream bytes in the tunnel: to the client. */
export function tunnelFromUpstream(d: Downstream, chunk: Uint8Array): void {
  d.deadline = d.proxy.clock + d.settings.idleTimeoutMs;
  d.clientWrite(chunk);
  if (d.out) d.up!.setReading(false);
}

/** Pass each side's FIN on once its queued bytes are written; once both are, the connection is CLOSING. */
export function tunnelShutdown(d: Downstream): void {
  const u = d.up;
  if (!u) return;
  if (d.downEof && !d.upShut && !u.out) {
    d.upShut = true;
    u.sock?.end();
  }
  if (d.upEof && !d.downShut && !d.out) {
    d.downShut = true;
    d.sock.end();
  }
  if (d.upShut && d.downShut) {
    // Both directions are finished: each socket closes once its FINs are through.
    d.up = null;
    u.owner = null;
    d.phase = CLOSING;
    d.setTimer(LINGER_TIMER, Math.min(LINGER_MS, d.settings.idleTimeoutMs));
  }
}
