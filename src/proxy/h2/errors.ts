/**
 * HTTP/2 error codes (RFC 9113 §7) and the two kinds of error (§5.4): a connection error ends the connection with
 * GOAWAY, a stream error ends one stream with RST_STREAM. The frame layer and the session throw these; the session
 * turns them into the frames.
 */

export const NO_ERROR = 0x0;
export const PROTOCOL_ERROR = 0x1;
export const INTERNAL_ERROR = 0x2;
export const FLOW_CONTROL_ERROR = 0x3;
export const SETTINGS_TIMEOUT = 0x4;
export const STREAM_CLOSED = 0x5;
export const FRAME_SIZE_ERROR = 0x6;
export const REFUSED_STREAM = 0x7;
export const CANCEL = 0x8;
export const COMPRESSION_ERROR = 0x9;
export const CONNECT_ERROR = 0xa;
export const ENHANCE_YOUR_CALM = 0xb;
export const INADEQUATE_SECURITY = 0xc;
export const HTTP_1_1_REQUIRED = 0xd;

const NAMES = [
  "NO_ERROR",
  "PROTOCOL_ERROR",
  "INTERNAL_ERROR",
  "FLOW_CONTROL_ERROR",
  "SETTINGS_TIMEOUT",
  "STREAM_CLOSED",
  "FRAME_SIZE_ERROR",
  "REFUSED_STREAM",
  "CANCEL",
  "COMPRESSION_ERROR",
  "CONNECT_ERROR",
  "ENHANCE_YOUR_CALM",
  "INADEQUATE_SECURITY",
  "HTTP_1_1_REQUIRED",
];

/**
 * The name of an error code, for logs and messages (unknown codes as hex).
 *
 * @example
 * errorName(0xb); // "ENHANCE_YOUR_CALM"
 * errorName(0x42); // "0x42"
 */
export function errorName(code: number): string {
  return NAMES[code] ?? `0x${code.toString(16)}`;
}

/** A connection error (RFC 9113 §5.4.1): the connection ends with GOAWAY carrying `code`. */
export class H2ConnectionError extends Error {
  override name = "H2ConnectionError";
  constructor(
    readonly code: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`HTTP/2 connection error ${errorName(code)}: ${message}`, options);
  }
}

/** A stream error (RFC 9113 §5.4.2): stream `streamId` ends with RST_STREAM carrying `code`. */
export class H2StreamError extends Error {
  override name = "H2StreamError";
  constructor(
    readonly streamId: number,
    readonly code: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`HTTP/2 stream ${streamId} error ${errorName(code)}: ${message}`, options);
  }
}
