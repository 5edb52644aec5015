/**
 * A streaming validator for chunked transfer coding (RFC 9112 §7.1).
 *
 * The forwarder passes the original bytes through unchanged: it forwards exactly the bytes this decoder
 * has accepted, so the next hop sees what was validated and nothing else. For HTTP/1.0 clients the
 * decoder can also hand out the payload ranges (de-chunking) through a sink.
 */

const CR = 13;
const LF = 10;

const S_SIZE_START = 0;
const S_SIZE = 1;
const S_SIZE_WS = 2;
const S_EXT = 3;
const S_SIZE_LF = 4;
const S_DATA = 5;
const S_DATA_CR = 6;
const S_DATA_LF = 7;
const S_TRAILER_START = 8;
const S_TRAILER_NAME = 9;
const S_TRAILER_VALUE = 10;
const S_TRAILER_LF = 11;
const S_END_LF = 12;
const S_DONE = 13;
const S_ERROR = 14;

/** Hex digit value per byte, 255 for non-hex. */
const HEX = new Uint8Array(256).fill(255);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) HEX[65 + i] = HEX[97 + i] = 10 + i;

const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

/** Significant hex digits allowed in a chunk size (16^13 > any real body, < 2^53). */
const MAX_SIZE_DIGITS = 13;
/** Longest chunk extension accepted. */
const MAX_EXT_BYTES = 4096;

/** Receives payload bytes buf[start..end) when de-chunking. */
export type ChunkSink = (buf: Uint8Array, start: number, end: number) => void;

/**
 * Incremental chunked-body validator.
 *
 * @example
 * const d = new ChunkedDecoder(64 * 1024);
 * const end = d.feed(bytes, 0, bytes.length);
 * if (end < 0) console.log(d.error); else forward(bytes.subarray(0, end)); // d.done tells whether the body ended
 */
export class ChunkedDecoder {
  #state = S_SIZE_START;
  #size = 0;
  #digits = 0;
  #ext = 0;
  #trailer = 0;
  /** Why decoding failed (sentence case). */
  error = "";
  /** Payload bytes announced by the chunk-size lines read so far (a chunk counts once its size line ends). */
  payload = 0;

  /** @param maxTrailerBytes the most trailer-section bytes accepted. */
  constructor(readonly maxTrailerBytes: number) {}

  /** True once the last chunk and trailer section have been read. */
  get done(): boolean {
    return this.#state === S_DONE;
  }

  /** Start over for the next message. */
  reset(): void {
    this.#state = S_SIZE_START;
    this.#size = this.#digits = this.#ext = this.#trailer = 0;
    this.payload = 0;
    this.error = "";
  }

  /**
   * Validate buf[start..end). Returns the index just past the body when it ended in this range,
   * `end` when more bytes are needed, or -1 when the framing is invalid (see {@link error}).
   * `sink` receives the payload ranges (without chunk framing).
   */
  feed(buf: Uint8Array, start: number, end: number, sink?: ChunkSink): number {
    let p = start;
    let state = this.#state;
    while (p < end) {
      if (state === S_DATA) {
        const avail = end - p;
        const n = avail < this.#size ? avail : this.#size;
        if (sink) sink(buf, p, p + n);
        p += n;
        this.#size -= n;
        if (this.#size === 0) state = S_DATA_CR;
        continue;
      }
      const c = buf[p++]!;
      switch (state) {
        case S_SIZE_START: {
          const d = HEX[c]!;
          if (d === 255) return this.#fail("invalid chunk size");
          this.#size = d;
          this.#digits = d === 0 ? 0 : 1;
          this.#ext = 0;
          state = S_SIZE;
          break;
        }
        case S_SIZE: {
          const d = HEX[c]!;
          if (d !== 255) {
            if (this.#digits > 0 || d !== 0) {
              if (++this.#digits > MAX_SIZE_DIGITS) return this.#fail("chunk size too large");
            }
            this.#size = this.#size * 16 + d;
          } else if (c === CR) state = S_SIZE_LF;
          else if (c === 59) state = S_EXT;
          else if (c === 32 || c === 9) state = S_SIZE_WS;
          else return this.#fail("invalid chunk size");
          break;
        }
        case S_SIZE_WS:
          if (c === 59) state = S_EXT;
          else if (c !== 32 && c !== 9) return this.#fail("invalid chunk size line");
          break;
        case S_EXT:
          if (c === CR) state = S_SIZE_LF;
          else if ((c < 32 && c !== 9) || c === 127) return this.#fail("invalid chunk extension");
          else if (++this.#ext > MAX_EXT_BYTES) return this.#fail("chunk extension too long");
          break;
        case S_SIZE_LF:
          if (c !== LF) return this.#fail("chunk size line not ended by CRLF");
          this.payload += this.#size;
          state = this.#size === 0 ? S_TRAILER_START : S_DATA;
          break;
        case S_DATA_CR:
          if (c !== CR) return this.#fail("chunk data not followed by CRLF");
          state = S_DATA_LF;
          break;
        case S_DATA_LF:
          if (c !== LF) return this.#fail("chunk data not followed by CRLF");
          state = S_SIZE_START;
          break;
        case S_TRAILER_START:
          if (c === CR) state = S_END_LF;
          else if (TCHAR[c] === 1) state = S_TRAILER_NAME;
          else return this.#fail("invalid trailer field");
          if (++this.#trailer > this.maxTrailerBytes) return this.#fail("trailer section too large");
          break;
        case S_TRAILER_NAME:
          if (c === 58) state = S_TRAILER_VALUE;
          else if (TCHAR[c] !== 1) return this.#fail("invalid trailer field name");
          if (++this.#trailer > this.maxTrailerBytes) return this.#fail("trailer section too large");
          break;
        case S_TRAILER_VALUE:
          if (c === CR) state = S_TRAILER_LF;
          else if ((c < 32 && c !== 9) || c === 127) return this.#fail("invalid trailer field value");
          if (++this.#trailer > this.maxTrailerBytes) return this.#fail("trailer section too large");
          break;
        case S_TRAILER_LF:
          if (c !== LF) return this.#fail("trailer field not ended by CRLF");
          state = S_TRAILER_START;
          break;
        case S_END_LF:
          if (c !== LF) return this.#fail("chunked body not ended by CRLF");
          this.#state = S_DONE;
          return p;
        default:
          return this.#fail(this.error || "data after the end of the chunked body");
      }
    }
    this.#state = state;
    return end;
  }

  #fail(reason: string): number {
    this.#state = S_ERROR;
    this.error = reason;
    return -1;
  }
}
