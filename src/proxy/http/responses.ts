/** Responses the gateway generates itself (errors), with a short text body. */
import { latin1Bytes } from "./bytes.ts";

const REASONS: Readonly<Record<number, string>> = {
  400: "Bad Request",
  405: "Method Not Allowed",
  408: "Request Timeout",
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
 * A complete HTTP/1.1 response with a `text/plain` body.
 *
 * @example
 * errorResponse(503, 'no endpoints available for service "default/web:http"\n', false)
 */
export function errorResponse(status: number, body: string, close: boolean): Uint8Array {
  const bytes = new TextEncoder().encode(body);
  const head =
    `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n` +
    "Content-Type: text/plain; charset=utf-8\r\n" +
    `Content-Length: ${bytes.length}\r\n` +
    (close ? "Connection: close\r\n" : "") +
    "\r\n";
  const h = latin1Bytes(head);
  const out = new Uint8Array(h.length + bytes.length);
  out.set(h, 0);
  out.set(bytes, h.length);
  return out;
}
