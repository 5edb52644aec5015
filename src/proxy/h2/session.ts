/**
 * One HTTP/2 connection (RFC 9113) on a runtime TCP socket, in either role: `server` for a downstream client,
 * `client` for an upstream connection to an endpoint. The session owns the protocol (preface, SETTINGS, stream
 * states, flow control both ways, HPACK, PING, GOAWAY) and reports streams through callbacks; it never reads the
 * socket itself: the owner calls {@link H2Session.receive} from the socket's `data` handler,
 * {@link H2Session.socketDrained} from `drain`, and {@link H2Session.close} from `end` and `close`.
 *
 * Writing: frames accumulate in one buffer ({@link FrameWriter}) and go to the socket once per turn (at the end of
 * `receive`, or in a microtask after calls from outside it), so a response's HEADERS, DATA and trailers usually
 * leave in one write. What the socket does not take waits for `drain`. DATA waits for the stream's and the
 * connection's send windows and for the socket: `sendData` returns false while the caller should wait, and the
 * stream's `writable` handler fires once its queue has gone out. Queued output over a hard cap
 * ({@link H2Session} doc) closes the connection.
 *
 * Receiving: the connection-level window is replenished as DATA arrives (one slow stream does not stall the
 * others); a stream's window only as its consumer calls `consumed(n)`, so a slow reader holds its sender and
 * buffering per stream is bounded by the window we advertise.
 *
 * Malformed messages (RFC 9113 §8.1.1: `fields.ts`) are stream errors PROTOCOL_ERROR; frames in the wrong stream
 * state get the error the RFC gives (§5.1). Limits against known attacks:
 * - rapid reset (CVE-2023-44487): streams the client resets before we sent any HEADERS are counted; over
 *   max(200, 2 x maxConcurrentStreams) within about a second: GOAWAY ENHANCE_YOUR_CALM;
 * - CONTINUATION flood: a field block over maxHeaderListSize bytes (compressed) or with more than 32 CONTINUATION
 *   frames: GOAWAY ENHANCE_YOUR_CALM before anything is decoded;
 * - SETTINGS / PING floods: more than 64 SETTINGS ACKs, PING ACKs or RST_STREAMs we owe queued while the socket
 *   does not take our bytes: ENHANCE_YOUR_CALM;
 * - empty frames: more than 100 zero-length DATA (or HEADERS) frames without END_STREAM within about a second:
 *   ENHANCE_YOUR_CALM;
 * - streams over our SETTINGS_MAX_CONCURRENT_STREAMS are refused (RST_STREAM REFUSED_STREAM), not counted as resets;
 * - a request whose decoded header list is over maxHeaderListSize opens its stream with `headersTooLarge` set and
 *   goes to {@link H2SessionEvents.headersTooLarge} (answer 431, or a gRPC error); without that handler the session
 *   answers `:status 431` itself. Any other field block over the limit (a response, trailers) resets its stream
 *   with CANCEL, `headersTooLarge` set.
 *
 * @example
 * // Server role, in a listener's handlers (the session reads the client preface itself):
 * open(s) { s.data = new H2Session(s, "server", {}, { stream(st, headers, end) { st.handlers = h; ... } }); },
 * data(s, chunk) { s.data.receive(chunk); }, drain(s) { s.data.socketDrained(); },
 * end(s) { s.data.close(); }, close(s) { s.data.close(); },
 */
import type { TcpSocket } from "../../runtime/types.ts";
import { latin1Bytes } from "../http/bytes.ts";
import {
  CANCEL,
  COMPRESSION_ERROR,
  ENHANCE_YOUR_CALM,
  errorName,
  FLOW_CONTROL_ERROR,
  H2ConnectionError,
  type H2StreamError,
  INTERNAL_ERROR,
  NO_ERROR,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  STREAM_CLOSED,
} from "./errors.ts";
import { checked, checkRequest, checkResponse, checkTrailers } from "./fields.ts";
import { type FrameSink, FrameReader, FrameWriter } from "./frames.ts";
import { type HeaderField, HeaderListTooLarge, HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";
import { DEFAULT_WINDOW_SIZE, type H2Limits, localSettings, MAX_WINDOW_SIZE, PeerSettings, resolveLimits } from "./settings.ts";

export type { H2Limits } from "./settings.ts";

/** Header fields in order; names lower-case, pseudo-header fields first. */
export type HeaderList = readonly (readonly [string, string])[];

/** What a stream's owner hears, called synchronously from the session (as methods of the handlers object). */
export interface H2StreamHandlers {
  /** The first HEADERS (request or response; each informational 1xx response too) and trailers (`endStream`). */
  headers(stream: H2Stream, headers: HeaderList, endStream: boolean): void;
  /** DATA; the chunk may be kept (it is never written to). Call `stream.consumed(n)` once it is passed on. */
  data(stream: H2Stream, chunk: Uint8Array, endStream: boolean): void;
  /**
   * The stream is gone: RST_STREAM either way (`byPeer` false when the session reset it: a malformed message,
   * a flow-control error, a header list too large), or the connection went away. Not called for the owner's
   * own {@link H2Stream.reset}.
   */
  reset(stream: H2Stream, code: number, byPeer: boolean): void;
  /** After `sendData` returned false: the stream's queued DATA is out and the socket takes more. */
  writable?(stream: H2Stream): void;
}

export interface H2Stream {
  readonly id: number;
  /** Owner slot. */
  data: unknown;
  handlers: H2StreamHandlers;
  sendHeaders(headers: HeaderList, endStream: boolean): void;
  /**
   * Queue a DATA chunk; returns false when the caller must wait for `writable` before sending more (flow-control
   * window or socket backlog); the chunk is always taken (and kept until sent: do not modify it). A no-op
   * returning true once the stream is gone.
   */
  sendData(chunk: Uint8Array, endStream: boolean): boolean;
  /** Trailers: HEADERS with END_STREAM, after the DATA queued so far. */
  sendTrailers(headers: HeaderList): void;
  /** RST_STREAM now (queued DATA is dropped); `handlers.reset` is not called. A no-op once the stream is gone. */
  reset(code: number): void;
  /**
   * The consumer forwarded n received bytes: send WINDOW_UPDATE for the stream (stream-level flow control is
   * manual: a slow reader holds its sender; the connection-level window is replenished on receipt so one slow
   * stream does not stall the others; per-stream buffering is bounded by the stream window). Updates are batched
   * (a quarter of the window at a time).
   */
  consumed(n: number): void;
  readonly localClosed: boolean;
  readonly remoteClosed: boolean;
  /** The request's (or response's, or trailers') decoded header list was over our maxHeaderListSize. */
  readonly headersTooLarge: boolean;
}

export interface H2SessionEvents {
  /** Server role: a new request stream (its first HEADERS); set `stream.handlers` inside. */
  stream?(stream: H2Stream, headers: HeaderList, endStream: boolean): void;
  /**
   * Server role: a new request stream whose header list was over maxHeaderListSize (`stream.headersTooLarge`);
   * answer it (431, or a gRPC trailers-only error) and reset it if the request has not ended. Without this
   * handler the session answers `:status 431` and resets the stream with NO_ERROR.
   */
  headersTooLarge?(stream: H2Stream, endStream: boolean): void;
  /** The peer sent GOAWAY: no new stream; our streams over `lastStreamId` were reset with REFUSED_STREAM. */
  goaway?(lastStreamId: number, code: number): void;
  /** The peer's SETTINGS were applied (e.g. its max concurrent streams changed). */
  settings?(): void;
  /** The session closed (every stream was reset first); `error` for a connection error or a lost socket. */
  close?(error?: Error): void;
}

/**
 * Server role, a connection upgraded from HTTP/1.1 (RFC 7540 §3.2, `Upgrade: h2c`): once the client preface has
 * arrived, the client's `HTTP2-Settings` apply (not acknowledged) and stream 1 opens half-closed (remote) with the
 * upgraded request's `headers`, reported by {@link H2SessionEvents.stream} as any request.
 */
export interface H2Upgrade {
  readonly headers: HeaderList;
  /** The decoded `HTTP2-Settings` value: a SETTINGS payload. */
  readonly settings: Uint8Array;
}

/** The client connection preface (§3.4). */
const PREFACE = latin1Bytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** Output not yet taken by the socket above which DATA waits (sendData returns false). */
const HIGH_WATER = 128 * 1024;
/** Control answers (SETTINGS ACK, PING ACK, RST_STREAM) we owe while the socket is backed up, before we give up. */
const MAX_PENDING_CONTROL = 64;
/** CONTINUATION frames allowed in one field block. */
const MAX_CONTINUATIONS = 32;
/** Recently closed streams remembered, to tell frames on them apart (ignored after our reset, else errors). */
const RECENT = 128;
/** How long we wait for the peer's FIN after ours before resetting the socket, ms (as the HTTP/1.1 forwarder). */
const LINGER_MS = 2_000;
/** Zero-length frames without END_STREAM tolerated within about a second. */
const EMPTY_FRAMES_BURST = 100;

const KIND_RESET_BY_US = 1;
const KIND_CLOSED = 2;

const EMPTY = new Uint8Array(0);
const TOO_LARGE: HeaderList = [[":status", "431"]];

const IGNORE: H2StreamHandlers = {
  headers() {},
  data() {},
  reset() {},
};

/**
 * Counts events in a leaky bucket: each adds one, the level drains at `perSecond`; over `burst` is a flood.
 *
 * @example
 * const m = new FloodMeter(2, 2);
 * m.hit(0); m.hit(0); // false, false
 * m.hit(0); // true (3 within no time)
 */
export class FloodMeter {
  #level = 0;
  #at = 0;
  constructor(
    readonly burst: number,
    readonly perSecond: number,
  ) {}

  /** Count one event at `now` (ms); true when over the burst. */
  hit(now: number): boolean {
    const drained = this.#level - ((now - this.#at) * this.perSecond) / 1000;
    this.#level = (drained > 0 ? drained : 0) + 1;
    this.#at = now;
    return this.#level > this.burst;
  }
}

class Stream implements H2Stream {
  data: unknown = undefined;
  handlers: H2StreamHandlers = IGNORE;
  localClosed = false;
  remoteClosed = false;
  headersTooLarge = false;
  /** Closed both ways, reset either way, or the connection went away. */
  gone = false;
  /** We sent HEADERS on it (server role: the request was answered). */
  headersSent = false;
  /** A final (non-1xx) head arrived (server role: always, the request head opened the stream). */
  headReceived = true;
  /** Client role: a HEAD request (the response's content-length describes no body). */
  bodiless = false;
  contentLength = -1;
  received = 0;
  /** Received bytes consumed (or padding) not yet returned with WINDOW_UPDATE. */
  unacked = 0;
  /** DATA waiting for windows or the socket: `out[0]` from `outAt`, `outBytes` in all. */
  out: Uint8Array[] | null = null;
  outAt = 0;
  outBytes = 0;
  /** END_STREAM goes after the queue (on its last DATA, or with `trailers`). */
  endQueued = false;
  trailers: HeaderList | null = null;
  /** In the session's waiting list. */
  queued = false;
  wantWritable = false;

  constructor(
    readonly core: Core,
    readonly id: number,
    public sendWindow: number,
    public recvWindow: number,
  ) {}

  sendHeaders(headers: HeaderList, endStream: boolean): void {
    this.core.sendHeaders(this, headers, endStream);
  }
  sendData(chunk: Uint8Array, endStream: boolean): boolean {
    return this.core.sendData(this, chunk, endStream);
  }
  sendTrailers(headers: HeaderList): void {
    this.core.sendTrailers(this, headers);
  }
  reset(code: number): void {
    this.core.resetByOwner(this, code);
  }
  consumed(n: number): void {
    this.core.consumed(this, n);
  }
}

/** The session's state and protocol; {@link H2Session} is its public face. */
class Core implements FrameSink {
  readonly isServer: boolean;
  readonly limits: H2Limits;
  readonly peer: PeerSettings;
  readonly reader: FrameReader;
  readonly w = new FrameWriter();
  readonly decoder: HpackDecoder;
  readonly encoder = new HpackEncoder();
  readonly streams = new Map<number, Stream>();
  /** Highest stream id the peer opened (server role: requests). */
  lastPeerStreamId = 0;
  /** Client role: the id of our next stream. */
  nextStreamId = 1;
  connSendWindow = DEFAULT_WINDOW_SIZE;
  connRecvWindow: number;
  connUnacked = 0;
  /** The receive window of a new stream: our advertised one once the peer acknowledged it. */
  recvInitial: number;
  readonly streamUpdateAt: number;
  settingsUnacked = 1;
  encoderTableSize = 4096;
  /** Bytes of the client preface still expected (server role). */
  prefaceAt: number;
  /** What the socket refused, oldest first. */
  backlog: Uint8Array[] = [];
  backlogBytes = 0;
  /** DATA queued in streams (not yet in the writer). */
  streamBytes = 0;
  readonly maxOutbound: number;
  /** A connection error found outside `receive` (an owner's call), raised by the next flush. */
  pendingError: Error | undefined;
  pendingControl = 0;
  /** Streams with queued DATA or waiting for `writable`. */
  waiting: Stream[] = [];
  inReceive = false;
  flushQueued = false;
  readonly flushTask = () => {
    this.flushQueued = false;
    this.guarded(this.flushBound);
  };
  readonly flushBound = () => this.flush();
  goawaySent = false;
  goawayLastId = 0x7fff_ffff;
  goawayReceived = false;
  closed = false;
  /** End the socket once everything queued is written. */
  ending = false;
  socketEnded = false;
  socketDone = false;
  linger: ReturnType<typeof setTimeout> | undefined;
  readonly resets: FloodMeter;
  readonly empties = new FloodMeter(EMPTY_FRAMES_BURST, EMPTY_FRAMES_BURST);
  readonly recentIds = new Int32Array(RECENT);
  readonly recentKinds = new Uint8Array(RECENT);
  recentAt = 0;

  constructor(
    readonly socket: TcpSocket<unknown>,
    role: "server" | "client",
    limits: Partial<H2Limits>,
    readonly events: H2SessionEvents,
    public upgraded: H2Upgrade | undefined,
  ) {
    const l = resolveLimits(limits);
    this.limits = l;
    this.isServer = role === "server";
    this.peer = new PeerSettings(role);
    this.reader = new FrameReader(this, { maxFrameSize: l.maxFrameSize, maxBlockSize: l.maxHeaderListSize, maxContinuations: MAX_CONTINUATIONS });
    this.decoder = new HpackDecoder({ maxHeaderListSize: l.maxHeaderListSize });
    this.connRecvWindow = l.connectionWindowSize;
    // Until the peer acknowledges our SETTINGS it may use the default window (§6.9.2).
    this.recvInitial = Math.max(l.initialWindowSize, DEFAULT_WINDOW_SIZE);
    this.streamUpdateAt = Math.max(1, l.initialWindowSize >>> 2);
    const burst = Math.max(200, 2 * l.maxConcurrentStreams);
    this.resets = new FloodMeter(burst, burst);
    this.maxOutbound = 4 * 1024 * 1024 + l.maxConcurrentStreams * l.initialWindowSize;
    this.prefaceAt = this.isServer ? 0 : PREFACE.length;
    if (!this.isServer) this.w.bytes(PREFACE);
    this.w.settings(localSettings(l, role));
    if (l.connectionWindowSize > DEFAULT_WINDOW_SIZE) this.w.windowUpdate(0, l.connectionWindowSize - DEFAULT_WINDOW_SIZE);
    this.flush();
  }

  // ---- socket side ----------------------------------------------------------------------------------------

  receive(chunk: Uint8Array): void {
    if (this.closed) return;
    this.inReceive = true;
    try {
      if (this.prefaceAt < PREFACE.length) {
        const at = this.preface(chunk);
        if (this.prefaceAt === PREFACE.length && this.upgraded !== undefined) this.openUpgraded(this.upgraded);
        if (at === chunk.length) return;
        chunk = chunk.subarray(at);
      }
      this.reader.push(chunk);
    } catch (err) {
      this.fatal(err);
    } finally {
      this.inReceive = false;
      // The connection window is replenished on receipt, once per chunk read.
      if (this.connUnacked >= this.limits.connectionWindowSize >>> 1 && !this.closed) {
        this.w.windowUpdate(0, this.connUnacked);
        this.connRecvWindow += this.connUnacked;
        this.connUnacked = 0;
      }
      this.guarded(this.flushBound);
    }
  }

  /** Match the client preface; returns where the frames start in `chunk`. */
  preface(chunk: Uint8Array): number {
    let i = 0;
    while (this.prefaceAt < PREFACE.length && i < chunk.length) {
      if (chunk[i++] !== PREFACE[this.prefaceAt++]) throw new H2ConnectionError(PROTOCOL_ERROR, "invalid connection preface");
    }
    return i;
  }

  /** Server role, upgraded from HTTP/1.1: the client's HTTP2-Settings apply, and stream 1 is the upgraded request. */
  openUpgraded(u: H2Upgrade): void {
    this.upgraded = undefined;
    if (u.settings.length % 6 !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, "HTTP2-Settings is not a SETTINGS payload");
    this.peer.apply(u.settings);
    const table = this.peer.headerTableSize;
    if (table !== this.encoderTableSize) {
      this.encoderTableSize = table;
      this.encoder.setMaxTableSize(table);
    }
    this.newStream(1, u.headers, true);
  }

  /** Run `f`; an exception (from an owner's handler too) ends the connection. */
  guarded(f: () => void): void {
    try {
      f();
    } catch (err) {
      this.fatal(err);
    }
  }

  schedule(): void {
    if (this.inReceive || this.flushQueued || this.socketDone) return;
    this.flushQueued = true;
    queueMicrotask(this.flushTask);
  }

  /** Write what is queued: the socket's backlog, then streams' DATA the windows allow, then new frames. */
  flush(): void {
    if (this.pendingError !== undefined && !this.closed) {
      const err = this.pendingError;
      this.pendingError = undefined;
      throw err;
    }
    if (!this.closed && this.streams.size === 0 && (this.goawaySent || this.goawayReceived)) this.finish();
    if (this.socketDone) return;
    const sock = this.socket;
    for (;;) {
      while (this.backlog.length > 0) {
        const c = this.backlog[0]!;
        const n = sock.write(c);
        if (n < 0) return this.socketLost();
        this.backlogBytes -= n;
        if (n < c.length) {
          this.backlog[0] = c.subarray(n);
          return;
        }
        this.backlog.shift();
      }
      if (this.waiting.length > 0) this.pumpAll();
      const out = this.w.take();
      if (out === null) break;
      const n = sock.write(out);
      if (n < 0) return this.socketLost();
      if (n < out.length) {
        this.backlog.push(n === 0 ? out : out.subarray(n));
        this.backlogBytes += out.length - n;
        if (this.backlogBytes + this.streamBytes > this.maxOutbound && !this.closed) {
          throw new H2ConnectionError(ENHANCE_YOUR_CALM, `the peer does not read: over ${this.maxOutbound} bytes queued`);
        }
        return;
      }
    }
    this.pendingControl = 0;
    if (this.ending) return this.endSocket();
    if (this.waiting.length > 0) this.notifyWritable();
  }

  drained(): void {
    this.guarded(this.flushBound);
  }

  socketLost(): void {
    this.socketDone = true;
    this.backlog = [];
    this.backlogBytes = 0;
    if (!this.closed) this.shutdown(CANCEL, true, new Error("HTTP/2 connection lost: the socket closed"));
  }

  endSocket(): void {
    if (this.socketEnded || this.socketDone) return;
    this.socketEnded = true;
    this.socket.end();
    this.linger = setTimeout(() => this.terminate(), LINGER_MS);
  }

  terminate(): void {
    if (this.linger !== undefined) clearTimeout(this.linger);
    this.linger = undefined;
    if (this.socketDone) return;
    this.socketDone = true;
    this.backlog = [];
    this.backlogBytes = 0;
    this.socket.terminate();
  }

  /** A connection error (or an exception): GOAWAY with its code, every stream reset, the socket ended. */
  fatal(err: unknown): void {
    if (this.closed) return;
    const code = err instanceof H2ConnectionError ? err.code : INTERNAL_ERROR;
    const debug = err instanceof H2ConnectionError ? err.message.slice(0, 200) : errorName(code);
    this.w.goaway(this.lastPeerStreamId, code, latin1Bytes(debug));
    this.shutdown(code, false, err instanceof Error ? err : new Error(String(err)));
    this.ending = true;
    this.flush();
    if (this.backlogBytes > 0) this.terminate();
  }

  /** Close the session: every stream gone, `events.close`. */
  shutdown(code: number, byPeer: boolean, error?: Error): void {
    this.closed = true;
    this.reader.halt();
    const list = [...this.streams.values()];
    this.streams.clear();
    this.waiting = [];
    for (const s of list) this.drop(s);
    for (const s of list) s.handlers.reset(s, code, byPeer);
    this.events.close?.(error);
  }

  /** Graceful end after GOAWAY, once no stream is left. */
  finish(): void {
    this.closed = true;
    this.reader.halt();
    this.ending = true;
    this.events.close?.();
  }

  /** The owner's close: GOAWAY if the socket still takes it, streams reset (CANCEL); a second call resets the socket. */
  close(error?: Error): void {
    if (this.closed) return this.terminate();
    if (!this.socketDone) this.w.goaway(this.lastPeerStreamId, NO_ERROR);
    this.shutdown(CANCEL, false, error);
    this.ending = true;
    this.flush();
    if (this.backlogBytes > 0) this.terminate();
  }

  goaway(code: number, debug: string): void {
    if (this.closed || this.goawaySent) return;
    this.goawaySent = true;
    this.goawayLastId = this.isServer ? this.lastPeerStreamId : 0;
    this.w.goaway(this.goawayLastId, code, latin1Bytes(debug));
    this.schedule();
  }

  // ---- sending ------------------------------------------------------------------------------------------

  request(headers: HeaderList, endStream: boolean, handlers: H2StreamHandlers): H2Stream {
    if (this.isServer) throw new Error("HTTP/2 session: request() is for the client role");
    if (!this.canRequest) {
      const s = new Stream(this, 0, 0, 0);
      s.gone = true;
      s.handlers = handlers;
      queueMicrotask(() => s.handlers.reset(s, REFUSED_STREAM, false));
      return s;
    }
    const s = new Stream(this, this.nextStreamId, this.peer.initialWindowSize, this.recvInitial);
    this.nextStreamId += 2;
    s.handlers = handlers;
    s.headReceived = false;
    for (let i = 0; i < headers.length; i++) {
      const f = headers[i]!;
      if (f[0] === ":method") {
        s.bodiless = f[1] === "HEAD";
        break;
      }
    }
    this.streams.set(s.id, s);
    this.sendHeaders(s, headers, endStream);
    return s;
  }

  get canRequest(): boolean {
    if (this.isServer || this.closed || this.goawaySent || this.goawayReceived) return false;
    return this.streams.size < this.peer.maxConcurrentStreams && this.nextStreamId <= 0x7fff_ffff;
  }

  sendHeaders(s: Stream, headers: HeaderList, endStream: boolean): void {
    if (s.gone) return;
    if (s.localClosed || s.endQueued) throw new Error(`HTTP/2 stream ${s.id}: headers after its end`);
    this.writeHeaders(s, headers, endStream);
    s.headersSent = true;
    if (endStream) this.localEnd(s);
    this.schedule();
  }

  writeHeaders(s: Stream, headers: HeaderList, endStream: boolean): void {
    let block: Uint8Array;
    try {
      block = this.encoder.encode(headers as readonly HeaderField[]);
    } catch (err) {
      // The encoder may be out of step with the peer now: the connection cannot go on.
      this.pendingError ??= err instanceof Error ? err : new Error(String(err));
      this.schedule();
      return;
    }
    this.w.headers(s.id, block, endStream, this.peer.maxFrameSize);
  }

  sendData(s: Stream, chunk: Uint8Array, endStream: boolean): boolean {
    if (s.gone) return true;
    if (s.localClosed || s.endQueued) throw new Error(`HTTP/2 stream ${s.id}: data after its end`);
    if (!s.headersSent) throw new Error(`HTTP/2 stream ${s.id}: data before headers`);
    const len = chunk.length;
    if (s.outBytes === 0) {
      let at = 0;
      const max = this.peer.maxFrameSize;
      while (at < len && this.backlogBytes === 0 && this.w.size < HIGH_WATER) {
        let n = len - at;
        if (n > max) n = max;
        if (n > s.sendWindow) n = s.sendWindow;
        if (n > this.connSendWindow) n = this.connSendWindow;
        if (n <= 0) break;
        this.w.data(s.id, chunk, at, at + n, endStream && at + n === len);
        s.sendWindow -= n;
        this.connSendWindow -= n;
        at += n;
      }
      if (at === len) {
        if (endStream) {
          if (len === 0) this.w.data(s.id, chunk, 0, 0, true);
          this.localEnd(s);
        }
        this.schedule();
        if (this.backlogBytes === 0 && this.w.size < HIGH_WATER) return true;
        s.wantWritable = true;
        this.enqueue(s);
        return false;
      }
      s.out = [at === 0 ? chunk : chunk.subarray(at)];
      s.outAt = 0;
      s.outBytes = len - at;
      this.streamBytes += len - at;
    } else if (len > 0) {
      s.out!.push(chunk);
      s.outBytes += len;
      this.streamBytes += len;
    }
    if (endStream) s.endQueued = true;
    s.wantWritable = true;
    this.enqueue(s);
    if (this.streamBytes + this.backlogBytes > this.maxOutbound) {
      this.pendingError ??= new H2ConnectionError(ENHANCE_YOUR_CALM, `the peer does not read: over ${this.maxOutbound} bytes queued`);
    }
    this.schedule();
    return false;
  }

  sendTrailers(s: Stream, headers: HeaderList): void {
    if (s.gone) return;
    if (s.localClosed || s.endQueued) throw new Error(`HTTP/2 stream ${s.id}: trailers after its end`);
    if (s.outBytes > 0) {
      s.trailers = headers;
      s.endQueued = true;
      this.enqueue(s);
      return;
    }
    this.writeHeaders(s, headers, true);
    this.localEnd(s);
    this.schedule();
  }

  resetByOwner(s: Stream, code: number): void {
    if (s.gone) return;
    this.resetStream(s, code, false);
    this.schedule();
  }

  consumed(s: Stream, n: number): void {
    if (s.gone || s.remoteClosed || n <= 0) return;
    s.unacked += n;
    if (s.unacked < this.streamUpdateAt) return;
    this.w.windowUpdate(s.id, s.unacked);
    s.recvWindow += s.unacked;
    s.unacked = 0;
    this.schedule();
  }

  enqueue(s: Stream): void {
    if (s.queued) return;
    s.queued = true;
    this.waiting.push(s);
  }

  /** Move queued DATA into the writer, one frame per stream per round, while windows and the high water allow. */
  pumpAll(): void {
    const list = this.waiting;
    for (let progressed = true; progressed && this.w.size < HIGH_WATER; ) {
      progressed = false;
      for (let i = 0; i < list.length && this.w.size < HIGH_WATER; i++) {
        if (this.pumpOne(list[i]!)) progressed = true;
      }
    }
    let j = 0;
    for (let i = 0; i < list.length; i++) {
      const s = list[i]!;
      if (!s.gone && (s.outBytes > 0 || (s.endQueued && !s.localClosed) || s.wantWritable)) list[j++] = s;
      else s.queued = false;
    }
    list.length = j;
  }

  /** Write the next frame of `s`'s queue if its window and the connection's allow; true when one was written. */
  pumpOne(s: Stream): boolean {
    if (s.gone) return false;
    if (s.outBytes > 0) {
      const c = s.out![0]!;
      let n = c.length - s.outAt;
      if (n > this.peer.maxFrameSize) n = this.peer.maxFrameSize;
      if (n > s.sendWindow) n = s.sendWindow;
      if (n > this.connSendWindow) n = this.connSendWindow;
      if (n <= 0) return false;
      const rest = s.outBytes - n;
      const last = rest === 0 && s.endQueued && s.trailers === null;
      this.w.data(s.id, c, s.outAt, s.outAt + n, last);
      s.sendWindow -= n;
      this.connSendWindow -= n;
      this.streamBytes -= n;
      s.outBytes = rest;
      s.outAt += n;
      if (s.outAt === c.length) {
        s.out!.shift();
        s.outAt = 0;
      }
      if (rest > 0) return true;
      s.out = null;
      if (last) this.localEnd(s);
      if (s.trailers === null) return true;
    }
    if (s.endQueued && !s.localClosed) {
      const t = s.trailers;
      s.trailers = null;
      if (t !== null) this.writeHeaders(s, t, true);
      else this.w.data(s.id, EMPTY, 0, 0, true);
      this.localEnd(s);
      return true;
    }
    return false;
  }

  /** The socket takes more: tell the streams that waited and whose queue is out. */
  notifyWritable(): void {
    if (this.backlogBytes > 0 || this.w.size >= HIGH_WATER) return;
    const list = this.waiting;
    this.waiting = [];
    for (const s of list) s.queued = false;
    for (const s of list) {
      if (s.gone) continue;
      if (s.outBytes > 0 || (s.endQueued && !s.localClosed)) {
        this.enqueue(s);
        continue;
      }
      if (s.wantWritable) {
        s.wantWritable = false;
        s.handlers.writable?.(s);
      }
    }
  }

  /** We sent END_STREAM. */
  localEnd(s: Stream): void {
    s.localClosed = true;
    if (s.remoteClosed) this.remove(s, KIND_CLOSED);
  }

  /** RST_STREAM from us; `notify`: tell the owner (a reset the session decided). */
  resetStream(s: Stream, code: number, notify: boolean): void {
    this.w.rstStream(s.id, code);
    this.remove(s, KIND_RESET_BY_US);
    if (notify) s.handlers.reset(s, code, false);
  }

  /** RST_STREAM for a stream that never opened (refused, malformed) or is already closed. */
  refuse(id: number, code: number): void {
    this.w.rstStream(id, code);
    this.remember(id, KIND_RESET_BY_US);
    this.owedControl();
  }

  remove(s: Stream, kind: number): void {
    this.streams.delete(s.id);
    this.remember(s.id, kind);
    this.drop(s);
  }

  drop(s: Stream): void {
    s.gone = true;
    this.streamBytes -= s.outBytes;
    s.out = null;
    s.outBytes = 0;
    s.trailers = null;
  }

  remember(id: number, kind: number): void {
    this.recentIds[this.recentAt] = id;
    this.recentKinds[this.recentAt] = kind;
    this.recentAt = (this.recentAt + 1) % RECENT;
  }

  /** How a stream not open now ended last, if recently: KIND_RESET_BY_US, KIND_CLOSED, or 0. */
  recentKind(id: number): number {
    for (let n = 1; n <= RECENT; n++) {
      const i = (this.recentAt - n + RECENT) % RECENT;
      if (this.recentIds[i] === id) return this.recentKinds[i]!;
    }
    return 0;
  }

  /** A stream id in the idle state: never opened by its initiator (§5.1). */
  isIdle(id: number): boolean {
    const peerInitiated = (id & 1) === (this.isServer ? 1 : 0);
    if (peerInitiated) return id > this.lastPeerStreamId;
    return this.isServer || id >= this.nextStreamId;
  }

  /** A control frame we owe the peer (ACK, RST_STREAM): too many while it does not read is a flood. */
  owedControl(): void {
    if (this.backlogBytes > 0 && ++this.pendingControl > MAX_PENDING_CONTROL) {
      throw new H2ConnectionError(ENHANCE_YOUR_CALM, `over ${MAX_PENDING_CONTROL} control frames owed while the peer does not read`);
    }
  }

  // ---- receiving (FrameSink) ------------------------------------------------------------------------------

  onData(id: number, data: Uint8Array, endStream: boolean, flowLength: number): void {
    if (flowLength > this.connRecvWindow) {
      throw new H2ConnectionError(FLOW_CONTROL_ERROR, `DATA of ${flowLength} bytes over the connection window ${this.connRecvWindow}`);
    }
    this.connRecvWindow -= flowLength;
    this.connUnacked += flowLength;
    if (data.length === 0 && !endStream && this.empties.hit(performance.now())) {
      throw new H2ConnectionError(ENHANCE_YOUR_CALM, "too many empty DATA frames");
    }
    const s = this.streams.get(id);
    if (s === undefined) {
      if (this.isIdle(id)) throw new H2ConnectionError(PROTOCOL_ERROR, `DATA on idle stream ${id}`);
      if (this.recentKind(id) !== KIND_RESET_BY_US) this.refuse(id, STREAM_CLOSED);
      return;
    }
    if (s.remoteClosed) return this.streamError(s, STREAM_CLOSED);
    if (!s.headReceived) return this.streamError(s, PROTOCOL_ERROR);
    if (flowLength > s.recvWindow) return this.streamError(s, FLOW_CONTROL_ERROR);
    s.recvWindow -= flowLength;
    if (s.contentLength >= 0) {
      s.received += data.length;
      if (s.received > s.contentLength || (endStream && s.received !== s.contentLength)) return this.streamError(s, PROTOCOL_ERROR);
    }
    if (endStream) {
      s.remoteClosed = true;
      if (s.localClosed) this.remove(s, KIND_CLOSED);
    } else if (flowLength > data.length) this.consumed(s, flowLength - data.length);
    if (data.length > 0 || endStream) s.handlers.data(s, data, endStream);
  }

  onHeaders(id: number, block: Uint8Array, endStream: boolean): void {
    let headers: HeaderField[] | null;
    try {
      headers = this.decoder.decode(block);
    } catch (err) {
      if (err instanceof HeaderListTooLarge) headers = null;
      else if (err instanceof HpackError) throw new H2ConnectionError(COMPRESSION_ERROR, err.message, { cause: err });
      else throw err;
    }
    if (block.length === 0 && !endStream && this.empties.hit(performance.now())) {
      throw new H2ConnectionError(ENHANCE_YOUR_CALM, "too many empty HEADERS frames");
    }
    const s = this.streams.get(id);
    if (s === undefined) {
      if (this.isIdle(id)) {
        if (!this.isServer || (id & 1) === 0) throw new H2ConnectionError(PROTOCOL_ERROR, `HEADERS on idle stream ${id}`);
        return this.newStream(id, headers, endStream);
      }
      const kind = this.recentKind(id);
      if (kind === KIND_RESET_BY_US) return;
      if (kind === KIND_CLOSED) throw new H2ConnectionError(STREAM_CLOSED, `HEADERS on closed stream ${id}`);
      throw new H2ConnectionError(PROTOCOL_ERROR, `HEADERS on stream ${id}, not above the last one opened`);
    }
    if (s.remoteClosed) return this.streamError(s, STREAM_CLOSED);
    if (headers === null) {
      s.headersTooLarge = true;
      return this.streamError(s, CANCEL);
    }
    if (!s.headReceived) {
      // Client role: a response head.
      if (checkResponse(headers) !== undefined) return this.streamError(s, PROTOCOL_ERROR);
      const status = checked.status;
      if (status < 200) {
        if (endStream || status === 101) return this.streamError(s, PROTOCOL_ERROR);
        s.handlers.headers(s, headers, false);
        return;
      }
      s.headReceived = true;
      s.contentLength = s.bodiless || status === 204 || status === 304 ? -1 : checked.contentLength;
      if (endStream && s.contentLength > 0) return this.streamError(s, PROTOCOL_ERROR);
    } else {
      // Trailers.
      if (!endStream || checkTrailers(headers) !== undefined) return this.streamError(s, PROTOCOL_ERROR);
      if (s.contentLength >= 0 && s.received !== s.contentLength) return this.streamError(s, PROTOCOL_ERROR);
    }
    if (endStream) {
      s.remoteClosed = true;
      if (s.localClosed) this.remove(s, KIND_CLOSED);
    }
    s.handlers.headers(s, headers, endStream);
  }

  /** Server role: HEADERS opening stream `id` (`headers` null: over maxHeaderListSize). */
  newStream(id: number, headers: HeaderList | null, endStream: boolean): void {
    this.lastPeerStreamId = id;
    if (id > this.goawayLastId || this.streams.size >= this.limits.maxConcurrentStreams) return this.refuse(id, REFUSED_STREAM);
    let contentLength = -1;
    if (headers !== null) {
      if (checkRequest(headers) !== undefined) return this.refuse(id, PROTOCOL_ERROR);
      contentLength = checked.contentLength;
      if (endStream && contentLength > 0) return this.refuse(id, PROTOCOL_ERROR);
    }
    const s = new Stream(this, id, this.peer.initialWindowSize, this.recvInitial);
    s.remoteClosed = endStream;
    s.contentLength = contentLength;
    this.streams.set(id, s);
    const ev = this.events;
    if (headers === null) {
      s.headersTooLarge = true;
      if (ev.headersTooLarge !== undefined) return ev.headersTooLarge(s, endStream);
      this.sendHeaders(s, TOO_LARGE, true);
      if (!s.gone) this.resetStream(s, NO_ERROR, false);
      return;
    }
    if (ev.stream === undefined) return this.resetStream(s, REFUSED_STREAM, false);
    ev.stream(s, headers, endStream);
  }

  /** A stream error the session found: RST_STREAM, and the owner hears of it. */
  streamError(s: Stream, code: number): void {
    this.resetStream(s, code, true);
    this.owedControl();
  }

  onRstStream(id: number, code: number): void {
    const s = this.streams.get(id);
    if (s === undefined) {
      if (this.isIdle(id)) throw new H2ConnectionError(PROTOCOL_ERROR, `RST_STREAM on idle stream ${id}`);
      return;
    }
    const premature = this.isServer && !s.headersSent;
    this.remove(s, KIND_CLOSED);
    s.handlers.reset(s, code, true);
    if (premature && this.resets.hit(performance.now())) {
      throw new H2ConnectionError(ENHANCE_YOUR_CALM, `over ${this.resets.burst} streams reset before a response (rapid reset)`);
    }
  }

  onSettings(payload: Uint8Array): void {
    const previous = this.peer.apply(payload);
    const delta = this.peer.initialWindowSize - previous;
    if (delta !== 0) {
      for (const s of this.streams.values()) {
        s.sendWindow += delta;
        if (s.sendWindow > MAX_WINDOW_SIZE) {
          throw new H2ConnectionError(FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE overflows the window of stream ${s.id}`);
        }
      }
    }
    const table = this.peer.headerTableSize;
    if (table !== this.encoderTableSize) {
      this.encoderTableSize = table;
      this.encoder.setMaxTableSize(table);
    }
    this.w.settingsAck();
    this.owedControl();
    this.events.settings?.();
  }

  onSettingsAck(): void {
    if (this.settingsUnacked === 0) return;
    this.settingsUnacked--;
    const ours = this.limits.initialWindowSize;
    if (this.recvInitial !== ours) {
      const delta = ours - this.recvInitial;
      this.recvInitial = ours;
      for (const s of this.streams.values()) s.recvWindow += delta;
    }
  }

  onPing(payload: Uint8Array, ack: boolean): void {
    if (ack) return;
    this.w.ping(payload, true);
    this.owedControl();
  }

  onGoaway(lastStreamId: number, code: number): void {
    this.goawayReceived = true;
    if (!this.isServer) {
      const refused: Stream[] = [];
      for (const s of this.streams.values()) if (s.id > lastStreamId) refused.push(s);
      for (const s of refused) this.remove(s, KIND_CLOSED);
      for (const s of refused) s.handlers.reset(s, REFUSED_STREAM, true);
    }
    this.events.goaway?.(lastStreamId, code);
  }

  onWindowUpdate(id: number, increment: number): void {
    if (id === 0) {
      this.connSendWindow += increment;
      if (this.connSendWindow > MAX_WINDOW_SIZE) throw new H2ConnectionError(FLOW_CONTROL_ERROR, "WINDOW_UPDATE overflows the connection window");
      return;
    }
    const s = this.streams.get(id);
    if (s === undefined) {
      if (this.isIdle(id)) throw new H2ConnectionError(PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${id}`);
      return;
    }
    s.sendWindow += increment;
    if (s.sendWindow > MAX_WINDOW_SIZE) return this.streamError(s, FLOW_CONTROL_ERROR);
  }

  onStreamError(error: H2StreamError): void {
    const id = error.streamId;
    const s = this.streams.get(id);
    if (s !== undefined) return this.streamError(s, error.code);
    // No RST_STREAM on an idle stream (§6.4): the error ends the connection instead.
    if (this.isIdle(id)) throw new H2ConnectionError(error.code, error.message, { cause: error });
    if (this.recentKind(id) !== KIND_RESET_BY_US) this.refuse(id, error.code);
  }
}

/**
 * An HTTP/2 connection in the server or the client role; see the module doc.
 *
 * Server role: the session reads and checks the client preface itself, so bytes already read while sniffing the
 * protocol are simply passed to {@link receive} first. Client role: the preface and our SETTINGS are written at
 * once. Both roles write SETTINGS (our {@link H2Limits}) and raise the connection window on creation.
 *
 * Outbound memory: DATA waits in its stream for windows and the socket; the socket's own backlog stays near
 * 128 KiB unless the owner ignores `sendData`'s false. Over 4 MiB + maxConcurrentStreams x initialWindowSize
 * queued in all (what a proxy forwarding every stream's window could hold), the connection is closed
 * (ENHANCE_YOUR_CALM: the peer does not read).
 *
 * @example
 * const session = new H2Session(socket, "client", {}, { goaway() { pool.retire(session); } });
 * const stream = session.request([[":method", "GET"], [":scheme", "http"], [":authority", "a"], [":path", "/"]], true, {
 *   headers(s, h, end) {}, data(s, chunk, end) { s.consumed(chunk.length); }, reset(s, code) {},
 * });
 */
export class H2Session {
  readonly #c: Core;

  /** @param upgraded server role: the connection was upgraded from HTTP/1.1 (see {@link H2Upgrade}). */
  constructor(socket: TcpSocket<unknown>, role: "server" | "client", limits: Partial<H2Limits>, events: H2SessionEvents, upgraded?: H2Upgrade) {
    this.#c = new Core(socket, role, limits, events, upgraded);
  }

  /** Call from the socket's `data` handler. */
  receive(chunk: Uint8Array): void {
    this.#c.receive(chunk);
  }

  /** Call from the socket's `drain` handler. */
  socketDrained(): void {
    this.#c.drained();
  }

  /**
   * Client role: open a stream with a request head. When the session cannot take one (`canRequest` false), the
   * stream returned is already gone and `handlers.reset(stream, REFUSED_STREAM, false)` follows in a microtask.
   */
  request(headers: HeaderList, endStream: boolean, handlers: H2StreamHandlers): H2Stream {
    return this.#c.request(headers, endStream, handlers);
  }

  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS (Infinity until it sets one). */
  get peerMaxConcurrentStreams(): number {
    return this.#c.peer.maxConcurrentStreams;
  }

  /** Streams open now (either role). */
  get activeStreams(): number {
    return this.#c.streams.size;
  }

  /** Client role: below the peer's max concurrent streams, and neither side sent GOAWAY. */
  get canRequest(): boolean {
    return this.#c.canRequest;
  }

  /**
   * Graceful: GOAWAY with the last stream id we accepted (server) or 0 (client); streams in flight finish (later
   * ones are refused); the session closes the socket once none is left.
   */
  goaway(code = NO_ERROR, debug = ""): void {
    this.#c.goaway(code, debug);
  }

  /**
   * Close now: GOAWAY (NO_ERROR) if the socket still takes it, every stream reset (`handlers.reset` with CANCEL),
   * our FIN (the socket is reset after 2 s without the peer's). Call it from the socket's `end` and `close`
   * handlers; once closed, a call resets the socket at once.
   */
  close(error?: Error): void {
    this.#c.close(error);
  }

  get closed(): boolean {
    return this.#c.closed;
  }
}
