/**
 * Peers for the HTTP/2 session tests, on real loopback sockets: a server that runs an {@link H2Session} per
 * accepted connection, a client session, a recording stream handler, and a raw-bytes client that sends any frame
 * and parses every frame the server sends (HEADERS decoded in order).
 */
import {
  CONTINUATION,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FrameWriter,
  GOAWAY,
  HEADERS,
  PING,
  RST_STREAM,
  SETTINGS,
} from "../../../src/proxy/h2/frames.ts";
import { type HeaderField, HpackDecoder, HpackEncoder } from "../../../src/proxy/h2/hpack.ts";
import { type H2Limits, H2Session, type H2SessionEvents, type H2Stream, type H2StreamHandlers, type HeaderList } from "../../../src/proxy/h2/session.ts";
import { rt } from "../../../src/runtime/index.ts";
import type { TcpSocket } from "../../../src/runtime/types.ts";
import { bytes, RawClient } from "../../support/http-harness.ts";
import { waitFor } from "../../support/wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

export const GET: HeaderList = [
  [":method", "GET"],
  [":scheme", "http"],
  [":authority", "test"],
  [":path", "/"],
];

export const POST: HeaderList = [
  [":method", "POST"],
  [":scheme", "http"],
  [":authority", "test"],
  [":path", "/upload"],
];

/** Everything one stream's handlers saw. Consumes what it receives unless `consume` is false. */
export class StreamLog implements H2StreamHandlers {
  readonly heads: HeaderList[] = [];
  readonly chunks: Uint8Array[] = [];
  received = 0;
  ended = false;
  resetCode: number | undefined;
  resetByPeer: boolean | undefined;
  writables = 0;
  /** Bytes received and not yet passed to `consumed` (when `consume` is false). */
  unconsumed = 0;
  onWritable: ((s: H2Stream) => void) | undefined;
  onEnd: ((s: H2Stream) => void) | undefined;

  constructor(public consume = true) {}

  headers(s: H2Stream, headers: HeaderList, endStream: boolean): void {
    this.heads.push(headers);
    if (endStream) this.end(s);
  }
  data(s: H2Stream, chunk: Uint8Array, endStream: boolean): void {
    this.chunks.push(chunk);
    this.received += chunk.length;
    if (this.consume) s.consumed(chunk.length);
    else this.unconsumed += chunk.length;
    if (endStream) this.end(s);
  }
  reset(_s: H2Stream, code: number, byPeer: boolean): void {
    this.resetCode = code;
    this.resetByPeer = byPeer;
  }
  writable(s: H2Stream): void {
    this.writables++;
    this.onWritable?.(s);
  }
  end(s: H2Stream): void {
    this.ended = true;
    this.onEnd?.(s);
  }
  /** Consume what was held back. */
  release(s: H2Stream): void {
    s.consumed(this.unconsumed);
    this.unconsumed = 0;
  }
  get text(): string {
    return dec.decode(Buffer.concat(this.chunks));
  }
  get status(): string | undefined {
    return this.heads.find((h) => h[0]?.[1]?.[0] !== "1")?.find(([n]) => n === ":status")?.[1];
  }
}

/** Answer every request with 200 "ok" once it has ended (its body consumed). */
export function okResponder(stream: H2Stream, _headers: HeaderList, endStream: boolean): void {
  const log = new StreamLog();
  stream.handlers = log;
  const answer = (s: H2Stream) => {
    s.sendHeaders([[":status", "200"], ["content-type", "text/plain"]], false);
    s.sendData(enc.encode("ok"), true);
  };
  if (endStream) answer(stream);
  else log.onEnd = answer;
}

export interface TestServer extends AsyncDisposable {
  readonly port: number;
  /** Sessions in order of accept. */
  readonly sessions: H2Session[];
  /** The error each session closed with (undefined: clean), by accept order; absent while open. */
  readonly closes: Map<number, Error | undefined>;
}

/** An HTTP/2 server on 127.0.0.1:0: one session per connection with `events` (default: {@link okResponder}). */
export function h2Server(limits: Partial<H2Limits> = {}, events: (index: number) => H2SessionEvents = () => ({ stream: okResponder })): TestServer {
  const sessions: H2Session[] = [];
  const closes = new Map<number, Error | undefined>();
  const listener = rt.listenTcp<H2Session | null>({
    hostname: "127.0.0.1",
    port: 0,
    handlers: {
      open(s) {
        const index = sessions.length;
        const ev = events(index);
        const close = ev.close;
        s.data = new H2Session(s as TcpSocket<unknown>, "server", limits, {
          ...ev,
          close(error) {
            closes.set(index, error);
            close?.(error);
          },
        });
        sessions.push(s.data);
      },
      data: (s, chunk) => s.data?.receive(chunk),
      drain: (s) => s.data?.socketDrained(),
      end: (s) => s.data?.close(),
      close: (s) => s.data?.close(),
    },
  });
  return {
    port: listener.port,
    sessions,
    closes,
    async [Symbol.asyncDispose]() {
      for (const s of sessions) s.close();
      listener.stop(true);
    },
  };
}

/**
 * A server whose streams are kept (not answered) for the test to drive, in order of arrival; their logs consume
 * what they receive unless `consume` is false.
 */
export function holdingServer(
  limits: Partial<H2Limits> = {},
  consume = true,
): { server: TestServer; streams: { stream: H2Stream; headers: HeaderList; log: StreamLog }[] } {
  const streams: { stream: H2Stream; headers: HeaderList; log: StreamLog }[] = [];
  const server = h2Server(limits, () => ({
    stream(stream, headers) {
      const log = new StreamLog(consume);
      stream.handlers = log;
      streams.push({ stream, headers, log });
    },
  }));
  return { server, streams };
}

export interface TestClient extends AsyncDisposable {
  readonly session: H2Session;
  readonly socket: TcpSocket<unknown>;
  /** Resolves with the session's close error once it closed. */
  readonly closed: Promise<Error | undefined>;
}

/** A client-role session connected to 127.0.0.1:`port`. */
export async function h2Client(port: number, limits: Partial<H2Limits> = {}, events: H2SessionEvents = {}): Promise<TestClient> {
  const closed = Promise.withResolvers<Error | undefined>();
  const socket = await rt.connectTcp<H2Session | null>({
    hostname: "127.0.0.1",
    port,
    data: null,
    handlers: {
      open(s) {
        s.data = new H2Session(s as TcpSocket<unknown>, "client", limits, {
          ...events,
          close(error) {
            closed.resolve(error);
            events.close?.(error);
          },
        });
      },
      data: (s, chunk) => s.data?.receive(chunk),
      drain: (s) => s.data?.socketDrained(),
      end: (s) => s.data?.close(),
      close: (s) => s.data?.close(),
    },
  });
  const session = socket.data!;
  return {
    session,
    socket: socket as TcpSocket<unknown>,
    closed: closed.promise,
    async [Symbol.asyncDispose]() {
      session.close();
      session.close();
    },
  };
}

/** A frame as the raw client parsed it; HEADERS (with their CONTINUATIONs) carry their decoded fields. */
export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Uint8Array;
  readonly headers?: HeaderField[];
}

const u32 = (p: Uint8Array, at: number) => ((p[at]! << 24) | (p[at + 1]! << 16) | (p[at + 2]! << 8) | p[at + 3]!) >>> 0;

/** A raw HTTP/2 client: writes any bytes or frames, parses what the server sends into {@link frames}. */
export class RawH2 implements AsyncDisposable {
  readonly frames: Frame[] = [];
  readonly encoder = new HpackEncoder();
  readonly decoder = new HpackDecoder({});
  #at = 0;
  #block: Uint8Array[] = [];
  #blockHead: { flags: number; streamId: number } | null = null;

  private constructor(readonly c: RawClient) {}

  /** Connect and (unless `preface` is false) send the preface and SETTINGS (`settings`). */
  static async connect(port: number, { preface = true, settings = [] as [number, number][] } = {}): Promise<RawH2> {
    const raw = new RawH2(await RawClient.connect(port));
    if (preface) raw.send(bytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), raw.build((w) => w.settings(settings)));
    return raw;
  }

  /** Frames built with a writer. */
  build(f: (w: FrameWriter) => void): Uint8Array {
    const w = new FrameWriter();
    f(w);
    return w.take() ?? new Uint8Array(0);
  }

  send(...parts: Uint8Array[]): void {
    for (const p of parts) this.c.send(p);
  }

  /** Build and send frames. */
  write(f: (w: FrameWriter) => void): void {
    this.send(this.build(f));
  }

  /** A field block for `headers`, encoded by this client's encoder (send what you encode, in order). */
  block(headers: HeaderList): Uint8Array {
    return this.encoder.encode(headers);
  }

  /** Send HEADERS on `streamId` (END_HEADERS; END_STREAM when `endStream`). */
  headers(streamId: number, headers: HeaderList, endStream: boolean): void {
    this.write((w) => w.headers(streamId, this.block(headers), endStream, 16_384));
  }

  /** Parse what arrived since the last call. */
  poll(): void {
    const d = this.c.data;
    while (d.length - this.#at >= 9) {
      const len = (d[this.#at]! << 16) | (d[this.#at + 1]! << 8) | d[this.#at + 2]!;
      if (d.length - this.#at < 9 + len) break;
      const type = d[this.#at + 3]!;
      const flags = d[this.#at + 4]!;
      const streamId = u32(d, this.#at + 5) & 0x7fff_ffff;
      const payload = d.slice(this.#at + 9, this.#at + 9 + len);
      this.#at += 9 + len;
      if (type === HEADERS || type === CONTINUATION) {
        if (type === HEADERS) this.#blockHead = { flags, streamId };
        this.#block.push(payload);
        if ((flags & FLAG_END_HEADERS) === 0) continue;
        const head = this.#blockHead!;
        const headers = this.decoder.decode(Buffer.concat(this.#block));
        this.#block = [];
        this.frames.push({ type: HEADERS, flags: head.flags | FLAG_END_HEADERS, streamId: head.streamId, payload, headers });
        continue;
      }
      this.frames.push({ type, flags, streamId, payload });
    }
  }

  /** Wait for a frame matching `pred` (among all received, in order) and return it. */
  async frame(pred: (f: Frame) => boolean, what: string, timeoutMs = 5000): Promise<Frame> {
    return waitFor(
      () => {
        this.poll();
        return this.frames.find(pred);
      },
      { timeoutMs, what, intervalMs: 2 },
    );
  }

  /** The server's GOAWAY: last stream id, code, debug text. */
  async goaway(timeoutMs = 5000): Promise<{ lastStreamId: number; code: number; debug: string }> {
    const f = await this.frame((f) => f.type === GOAWAY, "GOAWAY", timeoutMs);
    return { lastStreamId: u32(f.payload, 0) & 0x7fff_ffff, code: u32(f.payload, 4), debug: dec.decode(f.payload.subarray(8)) };
  }

  /** The code of the server's RST_STREAM on `streamId`. */
  async rst(streamId: number): Promise<number> {
    const f = await this.frame((f) => f.type === RST_STREAM && f.streamId === streamId, `RST_STREAM on stream ${streamId}`);
    return u32(f.payload, 0);
  }

  /** The server's response on `streamId`, once it ended: heads (1xx too), body text, trailers. */
  async response(streamId: number): Promise<{ heads: HeaderField[][]; body: string }> {
    await this.frame((f) => f.streamId === streamId && (f.flags & FLAG_END_STREAM) !== 0 && (f.type === HEADERS || f.type === 0), `the end of stream ${streamId}`);
    const mine = this.frames.filter((f) => f.streamId === streamId);
    return {
      heads: mine.filter((f) => f.headers).map((f) => f.headers!),
      body: dec.decode(Buffer.concat(mine.filter((f) => f.type === 0).map((f) => f.payload))),
    };
  }

  /** Frames of `type` received so far. */
  count(type: number): number {
    this.poll();
    return this.frames.filter((f) => f.type === type).length;
  }

  /** SETTINGS from the server (not ACKs) so far. */
  get serverSettings(): Frame[] {
    this.poll();
    return this.frames.filter((f) => f.type === SETTINGS && (f.flags & 1) === 0);
  }

  get closed(): boolean {
    return this.c.closed;
  }

  /** Resolves once the server closed the connection (rejects after `timeoutMs`). */
  async whenClosed(timeoutMs = 5000): Promise<void> {
    await waitFor(() => this.c.closed || this.c.eof, { what: "the connection to close", timeoutMs });
  }

  /** Send a PING and wait for its ACK: the connection is alive and the server processed all sent before. */
  async ping(): Promise<void> {
    const payload = crypto.getRandomValues(new Uint8Array(8));
    this.write((w) => w.ping(payload, false));
    await this.frame((f) => f.type === PING && (f.flags & 1) === 1 && Buffer.compare(f.payload, payload) === 0, "the PING's ACK");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.c[Symbol.asyncDispose]();
  }
}
