/**
 * HTTP/2 SETTINGS (RFC 9113 §6.5): the limits an endpoint advertises ({@link H2Limits}, what we accept), the
 * peer's settings as they apply to what we send ({@link PeerSettings}), and the SETTINGS payload both ways.
 * Pure: no socket here.
 */
import { FLOW_CONTROL_ERROR, H2ConnectionError, PROTOCOL_ERROR } from "./errors.ts";

export const SETTINGS_HEADER_TABLE_SIZE = 0x1;
export const SETTINGS_ENABLE_PUSH = 0x2;
export const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
export const SETTINGS_MAX_FRAME_SIZE = 0x5;
export const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

/** The initial flow-control window of a stream and of the connection before any SETTINGS (§6.9.2). */
export const DEFAULT_WINDOW_SIZE = 65_535;
/** Largest flow-control window (2^31-1). */
export const MAX_WINDOW_SIZE = 0x7fff_ffff;
/** Smallest and largest SETTINGS_MAX_FRAME_SIZE (§6.5.2). */
export const MIN_MAX_FRAME_SIZE = 16_384;
export const MAX_MAX_FRAME_SIZE = 0xff_ffff;

/** What we advertise to a peer (and enforce on what it sends). */
export interface H2Limits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS we advertise (server role: streams a client may open at once). */
  readonly maxConcurrentStreams: number;
  /** SETTINGS_INITIAL_WINDOW_SIZE we advertise: the receive window of each stream, bytes. */
  readonly initialWindowSize: number;
  /** The connection's receive window, bytes (raised from 65535 by a WINDOW_UPDATE on stream 0 at the start). */
  readonly connectionWindowSize: number;
  /** SETTINGS_MAX_FRAME_SIZE we advertise: the largest frame payload we accept. */
  readonly maxFrameSize: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE we advertise (name + value + 32 per field), and the cap of a compressed block. */
  readonly maxHeaderListSize: number;
}

export const DEFAULT_LIMITS: H2Limits = {
  maxConcurrentStreams: 100,
  initialWindowSize: 256 * 1024,
  connectionWindowSize: 1024 * 1024,
  maxFrameSize: MIN_MAX_FRAME_SIZE,
  maxHeaderListSize: 65_536,
};

/**
 * {@link DEFAULT_LIMITS} with `partial` laid over, checked against the protocol's ranges.
 *
 * @example
 * resolveLimits({ maxConcurrentStreams: 10 }).initialWindowSize; // 262144
 * resolveLimits({ maxFrameSize: 1000 }); // throws RangeError
 */
export function resolveLimits(partial: Partial<H2Limits>): H2Limits {
  const l = { ...DEFAULT_LIMITS, ...partial };
  const check = (name: keyof H2Limits, min: number, max: number) => {
    const v = l[name];
    if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`Invalid HTTP/2 limit "${name}": ${v} is not an integer in ${min}..${max}`);
  };
  check("maxConcurrentStreams", 1, 0xffff_ffff);
  check("initialWindowSize", 0, MAX_WINDOW_SIZE);
  check("connectionWindowSize", DEFAULT_WINDOW_SIZE, MAX_WINDOW_SIZE);
  check("maxFrameSize", MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE);
  check("maxHeaderListSize", 1024, 0xffff_ffff);
  return l;
}

/**
 * Our SETTINGS entries for `limits`. The client role also disables server push (we never accept it); the
 * server role leaves SETTINGS_ENABLE_PUSH out (only a client's value means anything).
 *
 * @example
 * localSettings(DEFAULT_LIMITS, "client"); // [[2, 0], [4, 262144], [6, 65536]]
 */
export function localSettings(limits: H2Limits, role: "server" | "client"): [id: number, value: number][] {
  const out: [number, number][] = [];
  if (role === "client") out.push([SETTINGS_ENABLE_PUSH, 0]);
  else out.push([SETTINGS_MAX_CONCURRENT_STREAMS, limits.maxConcurrentStreams]);
  if (limits.initialWindowSize !== DEFAULT_WINDOW_SIZE) out.push([SETTINGS_INITIAL_WINDOW_SIZE, limits.initialWindowSize]);
  if (limits.maxFrameSize !== MIN_MAX_FRAME_SIZE) out.push([SETTINGS_MAX_FRAME_SIZE, limits.maxFrameSize]);
  out.push([SETTINGS_MAX_HEADER_LIST_SIZE, limits.maxHeaderListSize]);
  return out;
}

/** The peer's settings, as they constrain what we send; RFC defaults until its first SETTINGS arrives. */
export class PeerSettings {
  headerTableSize = 4096;
  enablePush = true;
  /** Unlimited (no value received) is `Infinity`. */
  maxConcurrentStreams = Infinity;
  initialWindowSize = DEFAULT_WINDOW_SIZE;
  maxFrameSize = MIN_MAX_FRAME_SIZE;
  /** Advisory (§6.5.2); unlimited is `Infinity`. */
  maxHeaderListSize = Infinity;

  /** @param role our role: a client refuses a server's SETTINGS_ENABLE_PUSH of 1 (§6.5.2). */
  constructor(readonly role: "server" | "client") {}

  /**
   * Apply one SETTINGS payload (a multiple of 6 bytes, checked by the frame layer) in order. Unknown
   * identifiers are ignored (§6.5.2). Throws {@link H2ConnectionError} on a value out of range.
   * Returns the previous initial window size so the caller can adjust open streams by the difference.
   *
   * @example
   * const p = new PeerSettings("server");
   * p.apply(Uint8Array.of(0, 4, 0, 1, 0, 0)); // 65535 (the old value); p.initialWindowSize is now 65536
   */
  apply(payload: Uint8Array): number {
    const previousWindow = this.initialWindowSize;
    for (let i = 0; i + 6 <= payload.length; i += 6) {
      const id = (payload[i]! << 8) | payload[i + 1]!;
      const value = ((payload[i + 2]! << 24) | (payload[i + 3]! << 16) | (payload[i + 4]! << 8) | payload[i + 5]!) >>> 0;
      switch (id) {
        case SETTINGS_HEADER_TABLE_SIZE:
          this.headerTableSize = value;
          break;
        case SETTINGS_ENABLE_PUSH:
          if (value > 1 || (value === 1 && this.role === "client")) {
            throw new H2ConnectionError(PROTOCOL_ERROR, `SETTINGS_ENABLE_PUSH is ${value}${value > 1 ? ", not 0 or 1" : " from a server"}`);
          }
          this.enablePush = value === 1;
          break;
        case SETTINGS_MAX_CONCURRENT_STREAMS:
          this.maxConcurrentStreams = value;
          break;
        case SETTINGS_INITIAL_WINDOW_SIZE:
          if (value > MAX_WINDOW_SIZE) throw new H2ConnectionError(FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE ${value} is over 2^31-1`);
          this.initialWindowSize = value;
          break;
        case SETTINGS_MAX_FRAME_SIZE:
          if (value < MIN_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) {
            throw new H2ConnectionError(PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${value} is outside ${MIN_MAX_FRAME_SIZE}..${MAX_MAX_FRAME_SIZE}`);
          }
          this.maxFrameSize = value;
          break;
        case SETTINGS_MAX_HEADER_LIST_SIZE:
          this.maxHeaderListSize = value;
          break;
      }
    }
    return previousWindow;
  }
}
