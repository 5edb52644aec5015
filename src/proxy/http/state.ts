/**
 * The states of a downstream connection's state machine (drawn at the top of `downstream.ts`).
 *
 * They are plain numeric `const`s, compared on every socket event. Not an `enum`: Bun (and Deno) transpile
 * each file alone, so an `enum`, or a `const enum` used from another file, becomes an object and each use a
 * property load; a `const` binding is one small integer that never changes, like the parser's constants.
 * Measured against the file-local constants this replaced: no difference per request. The literal types
 * make the fields that hold them closed unions.
 */

// ---- Phase: where the connection's current request is (`Downstream.phase`) ----------------------------------

/** Waiting for or reading a request head (also: idle between keep-alive requests). */
export const AWAIT_HEAD = 0;
/** Head parsed and an endpoint picked: waiting for an upstream connection (new or pooled). */
export const CONNECTING = 1;
/** Head written upstream: streaming the request body. */
export const SENDING_BODY = 2;
/** Request fully forwarded: only the response is under way. */
export const REQUEST_SENT = 3;
/** After `101 Switching Protocols`: a raw byte pipe both ways. */
export const TUNNEL = 4;
/** Closing: input is discarded, the client socket ends after its queued bytes. */
export const CLOSING = 5;

/** Where the connection's current request is. */
export type Phase = typeof AWAIT_HEAD | typeof CONNECTING | typeof SENDING_BODY | typeof REQUEST_SENT | typeof TUNNEL | typeof CLOSING;

// ---- Response phase: where the current response is (`Downstream.resPhase`) ----------------------------------

/** No upstream exchange (between requests, connecting, tunnel, closing). */
export const NO_RESPONSE = 0;
/** Request head written: waiting for the (final) response head. */
export const RESPONSE_HEAD = 1;
/** Final response head relayed: streaming the response body to the client. */
export const RESPONSE_BODY = 2;

/** Where the current response is. */
export type ResponsePhase = typeof NO_RESPONSE | typeof RESPONSE_HEAD | typeof RESPONSE_BODY;

// ---- Timer: what the connection's deadline means (`Downstream.timer`) ---------------------------------------

/** No deadline. */
export const NO_TIMER = 0;
/** The request head must be complete (408). */
export const HEAD_TIMER = 1;
/** Keep-alive idle between requests (close). */
export const IDLE_TIMER = 2;
/** The upstream's response head must arrive (504). */
export const RESPONSE_TIMER = 3;
/** No progress while streaming a body or a tunnel (abort). */
export const STREAM_TIMER = 4;
/** A closing connection that does not drain (terminate). */
export const LINGER_TIMER = 5;
/** The upstream sent FIN before any response byte: does a reset follow? (502 if not; see `RESET_WAIT_MS`). */
export const RESET_WAIT_TIMER = 6;

/** What the connection's deadline means. */
export type Timer =
  | typeof NO_TIMER
  | typeof HEAD_TIMER
  | typeof IDLE_TIMER
  | typeof RESPONSE_TIMER
  | typeof STREAM_TIMER
  | typeof LINGER_TIMER
  | typeof RESET_WAIT_TIMER;
