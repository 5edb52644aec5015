/**
 * gRPC over HTTP/2, as the proxy needs it (pure): recognising a call, its deadline (`grpc-timeout`), its status
 * (`grpc-status` in trailers, or in the headers of a trailers-only response), what that status means for outlier
 * detection and metrics (Envoy's gRPC -> HTTP status mapping), and the trailers-only response a gateway-made error
 * reaches a gRPC client as (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
 */
import type { HeaderList } from "./session.ts";

/** gRPC status codes the gateway itself answers with. */
export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_RESOURCE_EXHAUSTED = 8;
export const GRPC_INTERNAL = 13;
export const GRPC_UNAVAILABLE = 14;

/** A request is a gRPC call when its content-type is `application/grpc` or `application/grpc+<codec>`. */
export function isGrpc(contentType: string | undefined): boolean {
  if (contentType === undefined || !contentType.startsWith("application/grpc")) return false;
  const c = contentType.charCodeAt(16);
  return Number.isNaN(c) || c === 0x2b /* + */ || c === 0x3b /* ; */;
}

const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000001 };

/**
 * The deadline a `grpc-timeout` value sets, ms (at least 1); undefined when absent or malformed (at most 8 digits
 * and a unit, per the spec: a malformed one is ignored, as grpc-go does).
 *
 * @example parseGrpcTimeout("250m"); // 250
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined || value.length < 2 || value.length > 9) return undefined;
  const unit = TIMEOUT_UNIT_MS[value[value.length - 1]!];
  const digits = value.slice(0, -1);
  if (unit === undefined || !/^\d+$/.test(digits)) return undefined;
  return Math.max(1, Math.ceil(Number(digits) * unit));
}

/** The value of header `name` (lower-case) in `headers`, the first one. */
export function headerValue(headers: HeaderList, name: string): string | undefined {
  for (const [n, v] of headers) if (n === name) return v;
  return undefined;
}

/** `grpc-status` of a response's trailers (or trailers-only headers); undefined when absent or not a number. */
export function grpcStatusOf(headers: HeaderList): number | undefined {
  const v = headerValue(headers, "grpc-status");
  if (v === undefined || !/^\d{1,2}$/.test(v)) return undefined;
  return Number(v);
}

/** The HTTP status a gRPC status stands for (Envoy's `grpcToHttpStatus`): metrics' status class, outlier detection. */
export function grpcToHttpStatus(code: number): number {
  switch (code) {
    case 0:
      return 200;
    case 1: // CANCELLED
      return 499;
    case 3: // INVALID_ARGUMENT
    case 9: // FAILED_PRECONDITION
    case 11: // OUT_OF_RANGE
      return 400;
    case 4:
      return 504;
    case 5: // NOT_FOUND
      return 404;
    case 6: // ALREADY_EXISTS
    case 10: // ABORTED
      return 409;
    case 7: // PERMISSION_DENIED
      return 403;
    case 8:
      return 429;
    case 12: // UNIMPLEMENTED
      return 501;
    case 14:
      return 503;
    case 16: // UNAUTHENTICATED
      return 401;
    default: // UNKNOWN, INTERNAL, DATA_LOSS and codes past the spec
      return 500;
  }
}

/** `grpc-message` percent-encoding: bytes outside printable ASCII, and `%`, as %XX of their UTF-8. */
export function encodeGrpcMessage(message: string): string {
  let plain = true;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return message;
  let out = "";
  for (const b of new TextEncoder().encode(message)) {
    out += b < 0x20 || b > 0x7e || b === 0x25 ? `%${b.toString(16).toUpperCase().padStart(2, "0")}` : String.fromCharCode(b);
  }
  return out;
}

/**
 * The trailers-only response of a gateway-made gRPC error: HTTP 200 (gRPC carries the outcome in grpc-status),
 * `grpc-status`, `grpc-message`, and `x-kubegate-reason` for the operator.
 */
export function grpcErrorHeaders(code: number, message: string, reason: string): HeaderList {
  return [
    [":status", "200"],
    ["content-type", "application/grpc"],
    ["grpc-status", String(code)],
    ["grpc-message", encodeGrpcMessage(message)],
    ["x-kubegate-reason", reason],
  ];
}

/** The trailers that end a gRPC response whose headers were already sent, with a gateway-made error. */
export function grpcErrorTrailers(code: number, message: string, reason: string): HeaderList {
  return [
    ["grpc-status", String(code)],
    ["grpc-message", encodeGrpcMessage(message)],
    ["x-kubegate-reason", reason],
  ];
}

/** The gRPC status of a gateway error that HTTP/1.1 would answer with `status`. */
export function grpcCodeForHttp(status: number): number {
  if (status === 504) return GRPC_DEADLINE_EXCEEDED;
  if (status === 413 || status === 429 || status === 431) return GRPC_RESOURCE_EXHAUSTED;
  if (status === 502 || status === 503) return GRPC_UNAVAILABLE;
  return GRPC_INTERNAL;
}
