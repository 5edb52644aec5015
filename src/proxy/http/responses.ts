/** Responses the gateway generates itself (errors), with a short text body and a machine-readable reason. */
import type { ProxyErrorReason } from "../../telemetry/metrics/traffic.ts";
import { latin1Bytes } from "./bytes.ts";

const REASONS: Readonly<Record<number, string>> = {
  400: "Bad Request",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** The reason phrase of a status the gateway generates. */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "Error";
}

/**
 * Why the gateway generated a response: the value of its `x-kubegate-reason` field, so clients and load
 * tests can tell the gateway's own errors from the upstream's (which never carry it). The same word is the
 * `reason` of the error metric, the span's `error.type` and the access log's `error` (one vocabulary:
 * {@link ProxyErrorReason}).
 */
export type GatewayReason = Exclude<ProxyErrorReason, "source_refused" | "client_closed" | "connection_limit">;

/** The name of the field that carries a {@link GatewayReason}. */
export const REASON_HEADER = "x-kubegate-reason";

/**
 * A complete HTTP/1.1 response with a `text/plain` body and an `x-kubegate-reason` field.
 *
 * @example
 * errorResponse(503, 'no endpoints available for service "default/web:http"\n', false, "no_endpoints")
 */
export function errorResponse(status: number, body: string, close: boolean, reason: GatewayReason): Uint8Array {
  const bytes = new TextEncoder().encode(body);
  const head =
    `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n` +
    "Content-Type: text/plain; charset=utf-8\r\n" +
    `Content-Length: ${bytes.length}\r\n` +
    `${REASON_HEADER}: ${reason}\r\n` +
    (close ? "Connection: close\r\n" : "") +
    "\r\n";
  const h = latin1Bytes(head);
  const out = new Uint8Array(h.length + bytes.length);
  out.set(h, 0);
  out.set(bytes, h.length);
  return out;
}
