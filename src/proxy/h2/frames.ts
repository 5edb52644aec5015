/**
 * The HTTP/2 frame layer (RFC 9113 §4, §6): {@link FrameReader} cuts received bytes into frames and checks each
 * frame on its own (sizes, stream 0 or not, padding, the CONTINUATION sequence), {@link FrameWriter} serializes
 * frames into one growing buffer that the session hands to the socket in as few writes as possible. Pure: no socket,
 * no stream state (the session checks frames against stream states).
 *
 * The reader calls a {@link FrameSink} (the session) per frame, with payloads as views of the received chunk
 * (copied only when a frame spans chunks, or to join a field block split over CONTINUATION frames). It delivers a
 * field block only once complete, and refuses a block over `maxBlockSize` bytes or more than `maxContinuations`
 * CONTINUATION frames before decoding anything (the CONTINUATION flood, 2024). A frame with an error that ends the
 * connection throws {@link H2ConnectionError}; one that ends a stream goes to {@link FrameSink.onStreamError} and
 * reading goes on.
 */
import { copyRange } from "../http/bytes.ts";
import { ENHANCE_YOUR_CALM, FRAME_SIZE_ERROR, H2ConnectionError, H2StreamError, PROTOCOL_ERROR } from "./errors.ts";

export const DATA = 0x0;
export const HEADERS = 0x1;
export const PRIORITY = 0x2;
export const RST_STREAM = 0x3;
export const SETTINGS = 0x4;
export const PUSH_PROMISE = 0x5;
export const PING = 0x6;
export const GOAWAY = 0x7;
export const WINDOW_UPDATE = 0x8;
export const CONTINUATION = 0x9;

export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

/** Bytes of a frame header. */
export const FRAME_HEADER_SIZE = 9;

const EMPTY = new Uint8Array(0);

/** What the reader calls per frame. Frames of unknown types and PRIORITY frames are dropped. */
export interface FrameSink {
  /** DATA: `data` is the payload without padding; `flowLength` is the whole payload, what flow control counts. */
  onData(streamId: number, data: Uint8Array, endStream: boolean, flowLength: number): void;
  /** A complete field block: a HEADERS fragment and its CONTINUATION fragments, joined (padding removed). */
  onHeaders(streamId: number, block: Uint8Array, endStream: boolean): void;
  onRstStream(streamId: number, code: number): void;
  /** A SETTINGS payload (a multiple of 6 bytes), not an ACK. */
  onSettings(payload: Uint8Array): void;
  onSettingsAck(): void;
  /** PING: `payload` is the 8 opaque bytes. */
  onPing(payload: Uint8Array, ack: boolean): void;
  onGoaway(lastStreamId: number, code: number, debug: Uint8Array): void;
  /** A non-zero increment (a zero one is an error raised by the reader). */
  onWindowUpdate(streamId: number, increment: number): void;
  /** A frame that ends one stream (RST_STREAM with `error.code`); reading goes on. */
  onStreamError(error: H2StreamError): void;
}

export interface FrameReaderOptions {
  /** The SETTINGS_MAX_FRAME_SIZE we advertised: a larger frame is a FRAME_SIZE_ERROR. */
  readonly maxFrameSize: number;
  /** A field block (compressed) over this many bytes ends the connection with ENHANCE_YOUR_CALM. */
  readonly maxBlockSize: number;
  /** More CONTINUATION frames than this in one field block ends the connection with ENHANCE_YOUR_CALM. */
  readonly maxContinuations: number;
  /** The first frame must be a SETTINGS (not an ACK): the peer's connection preface (§3.4). Default true. */
  readonly settingsFirst?: boolean;
}

/**
 * Incremental frame parser: {@link push} received chunks; each complete frame goes to the sink.
 *
 * @example
 * const reader = new FrameReader(session, { maxFrameSize: 16384, maxBlockSize: 65536, maxContinuations: 32 });
 * reader.push(chunk); // calls session.onSettings(...), session.onHeaders(...), ...
 */
export class FrameReader {
  readonly #sink: FrameSink;
  readonly #maxFrameSize: number;
  readonly #maxBlockSize: number;
  readonly #maxContinuations: number;
  #first: boolean;
  #halted = false;
  /** The header of a frame that spans chunks: 0..8 bytes of it so far, or 9 once complete (then `#body`). */
  readonly #head = new Uint8Array(FRAME_HEADER_SIZE);
  #headLen = 0;
  #body: Uint8Array = EMPTY;
  #bodyLen = 0;
  #length = 0;
  #type = 0;
  #flags = 0;
  #streamId = 0;
  /** The stream of a field block awaiting CONTINUATION frames, or 0. */
  #blockStream = 0;
  #blockEndStream = false;
  #blockParts: Uint8Array[] = [];
  #blockSize = 0;
  #continuations = 0;

  constructor(sink: FrameSink, options: FrameReaderOptions) {
    this.#sink = sink;
    this.#maxFrameSize = options.maxFrameSize;
    this.#maxBlockSize = options.maxBlockSize;
    this.#maxContinuations = options.maxContinuations;
    this.#first = options.settingsFirst ?? true;
  }

  /** Stop delivering frames (the connection is closing); later pushes are ignored. */
  halt(): void {
    this.#halted = true;
  }

  /** Parse `chunk` (kept: payload views point into it; it must not be modified afterwards). */
  push(chunk: Uint8Array): void {
    if (this.#halted) return;
    const len = chunk.length;
    let pos = 0;
    if (this.#headLen > 0) {
      pos = this.#continuePartial(chunk);
      if (pos < 0) return;
    }
    while (!this.#halted && pos < len) {
      if (len - pos < FRAME_HEADER_SIZE) {
        this.#head.set(chunk.subarray(pos, len));
        this.#headLen = len - pos;
        return;
      }
      const length = (chunk[pos]! << 16) | (chunk[pos + 1]! << 8) | chunk[pos + 2]!;
      const type = chunk[pos + 3]!;
      const flags = chunk[pos + 4]!;
      const streamId = ((chunk[pos + 5]! << 24) | (chunk[pos + 6]! << 16) | (chunk[pos + 7]! << 8) | chunk[pos + 8]!) & 0x7fff_ffff;
      this.#checkLength(length, type);
      const start = pos + FRAME_HEADER_SIZE;
      if (len - start >= length) {
        pos = start + length;
        this.#frame(type, flags, streamId, length === 0 ? EMPTY : chunk.subarray(start, pos));
        continue;
      }
      // The payload continues in a later chunk.
      this.#length = length;
      this.#type = type;
      this.#flags = flags;
      this.#streamId = streamId;
      this.#headLen = FRAME_HEADER_SIZE;
      this.#body = new Uint8Array(length);
      this.#body.set(chunk.subarray(start, len));
      this.#bodyLen = len - start;
      return;
    }
  }

  /** Complete the frame begun in an earlier chunk; returns where the next frame starts, or -1 (chunk used up). */
  #continuePartial(chunk: Uint8Array): number {
    let pos = 0;
    if (this.#headLen < FRAME_HEADER_SIZE) {
      const h = this.#head;
      while (this.#headLen < FRAME_HEADER_SIZE && pos < chunk.length) h[this.#headLen++] = chunk[pos++]!;
      if (this.#headLen < FRAME_HEADER_SIZE) return -1;
      this.#length = (h[0]! << 16) | (h[1]! << 8) | h[2]!;
      this.#type = h[3]!;
      this.#flags = h[4]!;
      this.#streamId = ((h[5]! << 24) | (h[6]! << 16) | (h[7]! << 8) | h[8]!) & 0x7fff_ffff;
      this.#checkLength(this.#length, this.#type);
      this.#body = this.#length === 0 ? EMPTY : new Uint8Array(this.#length);
      this.#bodyLen = 0;
    }
    const take = Math.min(this.#length - this.#bodyLen, chunk.length - pos);
    if (take > 0) {
      this.#bodyLen = copyRange(this.#body, this.#bodyLen, chunk, pos, pos + take);
      pos += take;
    }
    if (this.#bodyLen < this.#length) return -1;
    this.#headLen = 0;
    const body = this.#body;
    this.#body = EMPTY;
    this.#frame(this.#type, this.#flags, this.#streamId, body);
    return this.#halted ? -1 : pos;
  }

  #checkLength(length: number, type: number): void {
    if (length > this.#maxFrameSize) {
      throw new H2ConnectionError(FRAME_SIZE_ERROR, `frame of type ${type} has ${length} bytes, over SETTINGS_MAX_FRAME_SIZE ${this.#maxFrameSize}`);
    }
  }

  #frame(type: number, flags: number, streamId: number, p: Uint8Array): void {
    if (this.#blockStream !== 0 && type !== CONTINUATION) {
      throw new H2ConnectionError(PROTOCOL_ERROR, `frame of type ${type} inside the field block of stream ${this.#blockStream}`);
    }
    if (this.#first) {
      if (type !== SETTINGS || (flags & FLAG_ACK) !== 0) {
        throw new H2ConnectionError(PROTOCOL_ERROR, `the first frame is of type ${type}, not SETTINGS`);
      }
      this.#first = false;
    }
    const sink = this.#sink;
    switch (type) {
      case DATA: {
        if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, "DATA on stream 0");
        let data = p;
        if ((flags & FLAG_PADDED) !== 0) {
          if (p.length === 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, "padded DATA without a pad length");
          const pad = p[0]!;
          if (pad >= p.length) throw new H2ConnectionError(PROTOCOL_ERROR, `DATA padding ${pad} is not shorter than the payload`);
          data = p.subarray(1, p.length - pad);
        }
        sink.onData(streamId, data, (flags & FLAG_END_STREAM) !== 0, p.length);
        return;
      }
      case HEADERS: {
        if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0");
        let start = 0;
        let end = p.length;
        if ((flags & FLAG_PADDED) !== 0) {
          if (p.length === 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, "padded HEADERS without a pad length");
          start = 1;
          end -= p[0]!;
        }
        if ((flags & FLAG_PRIORITY) !== 0) {
          if (p.length < start + 5) throw new H2ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for its priority");
          const dependency = ((p[start]! << 24) | (p[start + 1]! << 16) | (p[start + 2]! << 8) | p[start + 3]!) & 0x7fff_ffff;
          if (dependency === streamId) throw new H2ConnectionError(PROTOCOL_ERROR, `stream ${streamId} depends on itself`);
          start += 5;
        }
        if (end < start) throw new H2ConnectionError(PROTOCOL_ERROR, "HEADERS padding is longer than the payload");
        const fragment = start === 0 && end === p.length ? p : p.subarray(start, end);
        const endStream = (flags & FLAG_END_STREAM) !== 0;
        if ((flags & FLAG_END_HEADERS) !== 0) {
          this.#checkBlockSize(fragment.length, streamId);
          sink.onHeaders(streamId, fragment, endStream);
          return;
        }
        this.#checkBlockSize(fragment.length, streamId);
        this.#blockStream = streamId;
        this.#blockEndStream = endStream;
        this.#blockParts = [fragment];
        this.#blockSize = fragment.length;
        this.#continuations = 0;
        return;
      }
      case CONTINUATION: {
        if (this.#blockStream === 0) throw new H2ConnectionError(PROTOCOL_ERROR, `CONTINUATION on stream ${streamId} without HEADERS`);
        if (streamId !== this.#blockStream) {
          throw new H2ConnectionError(PROTOCOL_ERROR, `CONTINUATION on stream ${streamId} inside the field block of stream ${this.#blockStream}`);
        }
        if (++this.#continuations > this.#maxContinuations) {
          const max = this.#maxContinuations;
          throw new H2ConnectionError(ENHANCE_YOUR_CALM, `field block of stream ${streamId} has more than ${max} CONTINUATION frames`);
        }
        this.#blockSize += p.length;
        this.#checkBlockSize(this.#blockSize, streamId);
        if (p.length > 0) this.#blockParts.push(p);
        if ((flags & FLAG_END_HEADERS) === 0) return;
        const parts = this.#blockParts;
        let block = parts[0]!;
        if (parts.length > 1) {
          block = new Uint8Array(this.#blockSize);
          let at = 0;
          for (const part of parts) {
            block.set(part, at);
            at += part.length;
          }
        }
        this.#blockStream = 0;
        this.#blockParts = [];
        sink.onHeaders(streamId, block, this.#blockEndStream);
        return;
      }
      case PRIORITY: {
        if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0");
        if (p.length !== 5) return sink.onStreamError(new H2StreamError(streamId, FRAME_SIZE_ERROR, `PRIORITY has ${p.length} bytes, not 5`));
        const dependency = ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) & 0x7fff_ffff;
        if (dependency === streamId) sink.onStreamError(new H2StreamError(streamId, PROTOCOL_ERROR, "the stream depends on itself"));
        return;
      }
      case RST_STREAM:
        if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0");
        if (p.length !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, `RST_STREAM has ${p.length} bytes, not 4`);
        sink.onRstStream(streamId, u32(p, 0));
        return;
      case SETTINGS:
        if (streamId !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, `SETTINGS on stream ${streamId}`);
        if ((flags & FLAG_ACK) !== 0) {
          if (p.length !== 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
          sink.onSettingsAck();
          return;
        }
        if (p.length % 6 !== 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, `SETTINGS has ${p.length} bytes, not a multiple of 6`);
        sink.onSettings(p);
        return;
      case PUSH_PROMISE:
        // We never enable push (a client's SETTINGS_ENABLE_PUSH is 0; a server may not receive it at all).
        throw new H2ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE, but push is disabled");
      case PING:
        if (streamId !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, `PING on stream ${streamId}`);
        if (p.length !== 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, `PING has ${p.length} bytes, not 8`);
        sink.onPing(p, (flags & FLAG_ACK) !== 0);
        return;
      case GOAWAY:
        if (streamId !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, `GOAWAY on stream ${streamId}`);
        if (p.length < 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, `GOAWAY has ${p.length} bytes, fewer than 8`);
        sink.onGoaway(u32(p, 0) & 0x7fff_ffff, u32(p, 4), p.subarray(8));
        return;
      case WINDOW_UPDATE: {
        if (p.length !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, `WINDOW_UPDATE has ${p.length} bytes, not 4`);
        const increment = u32(p, 0) & 0x7fff_ffff;
        if (increment === 0) {
          if (streamId === 0) throw new H2ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection");
          return sink.onStreamError(new H2StreamError(streamId, PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
        }
        sink.onWindowUpdate(streamId, increment);
        return;
      }
      default:
      // Unknown frame types are ignored (§4.1, §5.5).
    }
  }

  #checkBlockSize(size: number, streamId: number): void {
    if (size > this.#maxBlockSize) {
      throw new H2ConnectionError(ENHANCE_YOUR_CALM, `field block of stream ${streamId} is over ${this.#maxBlockSize} bytes`);
    }
  }
}

function u32(p: Uint8Array, at: number): number {
  return ((p[at]! << 24) | (p[at + 1]! << 16) | (p[at + 2]! << 8) | p[at + 3]!) >>> 0;
}

/** Smallest and largest output buffer: frames accumulate in one until handed to the socket. */
const MIN_OUT = 1024;
const MAX_OUT = 64 * 1024;

/**
 * Frame serializer into one output buffer. {@link take} returns what was written since the last take, as a view
 * that is never written to again (a socket may keep it until sent); later frames go after it, into a new buffer
 * once this one is full. Buffers are sized by demand (1 KiB doubling to 64 KiB, halving again when takes are
 * small), so an idle connection holds little.
 *
 * @example
 * const w = new FrameWriter();
 * w.settings([[3, 100]]);
 * w.windowUpdate(0, 983041);
 * socket.write(w.take()!);
 */
export class FrameWriter {
  #buf: Uint8Array = EMPTY;
  #start = 0;
  #end = 0;
  /** Size of the next buffer. */
  #next = MIN_OUT;

  /** Bytes written and not taken yet. */
  get size(): number {
    return this.#end - this.#start;
  }

  /** The bytes written since the last take, or null when there are none. */
  take(): Uint8Array | null {
    if (this.#end === this.#start) return null;
    const out = this.#buf.subarray(this.#start, this.#end);
    this.#start = this.#end;
    if (out.length < this.#next >>> 3 && this.#next > MIN_OUT) this.#next >>>= 1;
    return out;
  }

  /** Room for `n` more bytes; returns where they go. */
  #reserve(n: number): number {
    if (this.#buf.length - this.#end < n) {
      const pending = this.#end - this.#start;
      const buf = new Uint8Array(Math.max(this.#next, pending + n));
      if (this.#next < MAX_OUT) this.#next <<= 1;
      if (pending > 0) buf.set(this.#buf.subarray(this.#start, this.#end));
      this.#buf = buf;
      this.#start = 0;
      this.#end = pending;
    }
    const at = this.#end;
    this.#end += n;
    return at;
  }

  #header(at: number, length: number, type: number, flags: number, streamId: number): number {
    const b = this.#buf;
    b[at] = length >>> 16;
    b[at + 1] = length >>> 8;
    b[at + 2] = length;
    b[at + 3] = type;
    b[at + 4] = flags;
    b[at + 5] = streamId >>> 24;
    b[at + 6] = streamId >>> 16;
    b[at + 7] = streamId >>> 8;
    b[at + 8] = streamId;
    return at + FRAME_HEADER_SIZE;
  }

  #u32(at: number, v: number): void {
    const b = this.#buf;
    b[at] = v >>> 24;
    b[at + 1] = v >>> 16;
    b[at + 2] = v >>> 8;
    b[at + 3] = v;
  }

  /** Raw bytes (the client connection preface). */
  bytes(b: Uint8Array): void {
    const at = this.#reserve(b.length);
    this.#buf.set(b, at);
  }

  /** Any frame, from its parts (unknown types, tests). */
  frame(type: number, flags: number, streamId: number, payload: Uint8Array): void {
    const at = this.#header(this.#reserve(FRAME_HEADER_SIZE + payload.length), payload.length, type, flags, streamId);
    this.#buf.set(payload, at);
  }

  /** A DATA frame carrying src[s..e) (the caller keeps it within the peer's max frame size and windows). */
  data(streamId: number, src: Uint8Array, s: number, e: number, endStream: boolean): void {
    const at = this.#header(this.#reserve(FRAME_HEADER_SIZE + e - s), e - s, DATA, endStream ? FLAG_END_STREAM : 0, streamId);
    copyRange(this.#buf, at, src, s, e);
  }

  /** A field block as HEADERS, followed by CONTINUATION frames when it is over `maxFrameSize`. */
  headers(streamId: number, block: Uint8Array, endStream: boolean, maxFrameSize: number): void {
    const frames = Math.max(1, Math.ceil(block.length / maxFrameSize));
    let at = this.#reserve(frames * FRAME_HEADER_SIZE + block.length);
    let s = 0;
    for (let i = 0; i < frames; i++) {
      const e = Math.min(block.length, s + maxFrameSize);
      const flags = (i === 0 && endStream ? FLAG_END_STREAM : 0) | (i === frames - 1 ? FLAG_END_HEADERS : 0);
      at = this.#header(at, e - s, i === 0 ? HEADERS : CONTINUATION, flags, streamId);
      at = copyRange(this.#buf, at, block, s, e);
      s = e;
    }
  }

  rstStream(streamId: number, code: number): void {
    const at = this.#header(this.#reserve(FRAME_HEADER_SIZE + 4), 4, RST_STREAM, 0, streamId);
    this.#u32(at, code);
  }

  settings(entries: readonly (readonly [id: number, value: number])[]): void {
    let at = this.#header(this.#reserve(FRAME_HEADER_SIZE + 6 * entries.length), 6 * entries.length, SETTINGS, 0, 0);
    for (const [id, value] of entries) {
      this.#buf[at] = id >>> 8;
      this.#buf[at + 1] = id;
      this.#u32(at + 2, value);
      at += 6;
    }
  }

  settingsAck(): void {
    this.#header(this.#reserve(FRAME_HEADER_SIZE), 0, SETTINGS, FLAG_ACK, 0);
  }

  /** A PING with the 8 bytes of `payload` (a PING's to answer, or our own). */
  ping(payload: Uint8Array, ack: boolean): void {
    const at = this.#header(this.#reserve(FRAME_HEADER_SIZE + 8), 8, PING, ack ? FLAG_ACK : 0, 0);
    for (let i = 0; i < 8; i++) this.#buf[at + i] = payload[i] ?? 0;
  }

  goaway(lastStreamId: number, code: number, debug: Uint8Array = EMPTY): void {
    const at = this.#header(this.#reserve(FRAME_HEADER_SIZE + 8 + debug.length), 8 + debug.length, GOAWAY, 0, 0);
    this.#u32(at, lastStreamId);
    this.#u32(at + 4, code);
    this.#buf.set(debug, at + 8);
  }

  windowUpdate(streamId: number, increment: number): void {
    const at = this.#header(this.#reserve(FRAME_HEADER_SIZE + 4), 4, WINDOW_UPDATE, 0, streamId);
    this.#u32(at, increment);
  }
}
