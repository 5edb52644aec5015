/** The HTTP/2 frame layer: every frame type written and read back (whole, and cut at every byte), and each check. */
import { describe, expect, test } from "bun:test";
import {
  CANCEL,
  ENHANCE_YOUR_CALM,
  FLOW_CONTROL_ERROR,
  FRAME_SIZE_ERROR,
  H2ConnectionError,
  type H2StreamError,
  PROTOCOL_ERROR,
} from "../../../src/proxy/h2/errors.ts";
import {
  CONTINUATION,
  DATA,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  type FrameSink,
  FrameReader,
  FrameWriter,
  GOAWAY,
  HEADERS,
  PING,
  PRIORITY,
  PUSH_PROMISE,
  RST_STREAM,
  SETTINGS,
  WINDOW_UPDATE,
} from "../../../src/proxy/h2/frames.ts";
import { DEFAULT_LIMITS, localSettings, PeerSettings, resolveLimits } from "../../../src/proxy/h2/settings.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A sink that records every call as a plain value. */
class Recorder implements FrameSink {
  readonly events: unknown[] = [];
  onData(streamId: number, data: Uint8Array, endStream: boolean, flowLength: number): void {
    this.events.push(["data", streamId, dec.decode(data), endStream, flowLength]);
  }
  onHeaders(streamId: number, block: Uint8Array, endStream: boolean): void {
    this.events.push(["headers", streamId, dec.decode(block), endStream]);
  }
  onRstStream(streamId: number, code: number): void {
    this.events.push(["rst", streamId, code]);
  }
  onSettings(payload: Uint8Array): void {
    this.events.push(["settings", [...payload]]);
  }
  onSettingsAck(): void {
    this.events.push(["settings-ack"]);
  }
  onPing(payload: Uint8Array, ack: boolean): void {
    this.events.push(["ping", [...payload], ack]);
  }
  onGoaway(lastStreamId: number, code: number, debug: Uint8Array): void {
    this.events.push(["goaway", lastStreamId, code, dec.decode(debug)]);
  }
  onWindowUpdate(streamId: number, increment: number): void {
    this.events.push(["window-update", streamId, increment]);
  }
  onStreamError(error: H2StreamError): void {
    this.events.push(["stream-error", error.streamId, error.code]);
  }
}

const OPTIONS = { maxFrameSize: 16_384, maxBlockSize: 65_536, maxContinuations: 32, settingsFirst: false };

function read(bytes: Uint8Array, options: Partial<typeof OPTIONS> = {}): unknown[] {
  const r = new Recorder();
  new FrameReader(r, { ...OPTIONS, ...options }).push(bytes);
  return r.events;
}

/** Feed `bytes` one byte per push. */
function readBytewise(bytes: Uint8Array): unknown[] {
  const r = new Recorder();
  const reader = new FrameReader(r, OPTIONS);
  for (let i = 0; i < bytes.length; i++) reader.push(bytes.subarray(i, i + 1));
  return r.events;
}

function written(f: (w: FrameWriter) => void): Uint8Array {
  const w = new FrameWriter();
  f(w);
  return w.take()!;
}

/** A raw frame from its parts. */
function raw(type: number, flags: number, streamId: number, payload: number[] | Uint8Array): Uint8Array {
  return written((w) => w.frame(type, flags, streamId, Uint8Array.from(payload)));
}

function connectionError(f: () => unknown): number {
  try {
    f();
  } catch (err) {
    if (err instanceof H2ConnectionError) return err.code;
    throw err;
  }
  throw new Error("no connection error");
}

describe("round trip", () => {
  const all = written((w) => {
    w.settings([
      [3, 100],
      [4, 1 << 20],
    ]);
    w.settingsAck();
    w.headers(1, enc.encode("block"), false, 16_384);
    w.data(1, enc.encode("xxhelloxx"), 2, 7, false);
    w.data(1, new Uint8Array(0), 0, 0, true);
    w.rstStream(3, CANCEL);
    w.ping(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), false);
    w.ping(Uint8Array.of(8, 7, 6, 5, 4, 3, 2, 1), true);
    w.goaway(7, ENHANCE_YOUR_CALM, enc.encode("calm"));
    w.windowUpdate(0, 983_041);
    w.windowUpdate(5, 1);
    w.frame(0xfa, 0xff, 9, enc.encode("unknown"));
    w.headers(5, enc.encode("a".repeat(40_000)), true, 16_384);
  });
  const expected = [
    ["settings", [0, 3, 0, 0, 0, 100, 0, 4, 0, 16, 0, 0]],
    ["settings-ack"],
    ["headers", 1, "block", false],
    ["data", 1, "hello", false, 5],
    ["data", 1, "", true, 0],
    ["rst", 3, CANCEL],
    ["ping", [1, 2, 3, 4, 5, 6, 7, 8], false],
    ["ping", [8, 7, 6, 5, 4, 3, 2, 1], true],
    ["goaway", 7, ENHANCE_YOUR_CALM, "calm"],
    ["window-update", 0, 983_041],
    ["window-update", 5, 1],
    ["headers", 5, "a".repeat(40_000), true],
  ];

  test("whole", () => {
    expect(read(all)).toEqual(expected);
  });

  test("one byte at a time", () => {
    expect(readBytewise(all)).toEqual(expected);
  });

  test("a block over the max frame size goes as HEADERS + CONTINUATION", () => {
    const b = written((w) => w.headers(5, new Uint8Array(40_000), true, 16_384));
    const frames: [number, number, number][] = [];
    for (let at = 0; at < b.length; ) {
      const len = (b[at]! << 16) | (b[at + 1]! << 8) | b[at + 2]!;
      frames.push([len, b[at + 3]!, b[at + 4]!]);
      at += 9 + len;
    }
    expect(frames).toEqual([
      [16_384, HEADERS, FLAG_END_STREAM],
      [16_384, CONTINUATION, 0],
      [7232, CONTINUATION, FLAG_END_HEADERS],
    ]);
  });

  test("padding and priority are stripped", () => {
    // HEADERS: pad length 3, priority (stream 0, weight 16), block "hi", 3 bytes of padding.
    const h = raw(HEADERS, FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS, 1, [3, 0, 0, 0, 0, 15, 104, 105, 0, 0, 0]);
    const d = raw(DATA, FLAG_PADDED | FLAG_END_STREAM, 1, [2, 111, 107, 0, 0]);
    expect(read(new Uint8Array([...h, ...d]))).toEqual([
      ["headers", 1, "hi", false],
      ["data", 1, "ok", true, 5],
    ]);
  });

  test("PRIORITY is dropped; a payload spanning pushes is reassembled", () => {
    const p = raw(PRIORITY, 0, 3, [0, 0, 0, 1, 15]);
    const d = written((w) => w.data(1, enc.encode("z".repeat(1000)), 0, 1000, false));
    const r = new Recorder();
    const reader = new FrameReader(r, OPTIONS);
    reader.push(new Uint8Array([...p, ...d.subarray(0, 500)]));
    expect(r.events).toEqual([]);
    reader.push(d.subarray(500));
    expect(r.events).toEqual([["data", 1, "z".repeat(1000), false, 1000]]);
  });

  test("the writer never writes into bytes it handed out", () => {
    const w = new FrameWriter();
    w.windowUpdate(0, 1);
    const first = w.take()!;
    const copy = first.slice();
    for (let i = 0; i < 10_000; i++) w.ping(new Uint8Array(8), true);
    w.take();
    expect(first).toEqual(copy);
  });
});

describe("checks", () => {
  test.each([
    ["DATA on stream 0", raw(DATA, 0, 0, [1]), PROTOCOL_ERROR],
    ["DATA padding as long as the payload", raw(DATA, FLAG_PADDED, 1, [2, 0]), PROTOCOL_ERROR],
    ["padded DATA without a pad length", raw(DATA, FLAG_PADDED, 1, []), FRAME_SIZE_ERROR],
    ["HEADERS on stream 0", raw(HEADERS, FLAG_END_HEADERS, 0, [0x82]), PROTOCOL_ERROR],
    ["HEADERS padding longer than the payload", raw(HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, [5, 0x82]), PROTOCOL_ERROR],
    ["HEADERS too short for its priority", raw(HEADERS, FLAG_PRIORITY | FLAG_END_HEADERS, 1, [0, 0, 0]), FRAME_SIZE_ERROR],
    ["HEADERS depending on itself", raw(HEADERS, FLAG_PRIORITY | FLAG_END_HEADERS, 3, [0, 0, 0, 3, 15, 0x82]), PROTOCOL_ERROR],
    ["PRIORITY on stream 0", raw(PRIORITY, 0, 0, [0, 0, 0, 1, 15]), PROTOCOL_ERROR],
    ["RST_STREAM on stream 0", raw(RST_STREAM, 0, 0, [0, 0, 0, 8]), PROTOCOL_ERROR],
    ["RST_STREAM of 3 bytes", raw(RST_STREAM, 0, 1, [0, 0, 8]), FRAME_SIZE_ERROR],
    ["SETTINGS on a stream", raw(SETTINGS, 0, 1, []), PROTOCOL_ERROR],
    ["SETTINGS of 5 bytes", raw(SETTINGS, 0, 0, [0, 3, 0, 0, 0]), FRAME_SIZE_ERROR],
    ["SETTINGS ACK with a payload", raw(SETTINGS, 1, 0, [0, 3, 0, 0, 0, 1]), FRAME_SIZE_ERROR],
    ["PUSH_PROMISE", raw(PUSH_PROMISE, FLAG_END_HEADERS, 1, [0, 0, 0, 2, 0x82]), PROTOCOL_ERROR],
    ["PING on a stream", raw(PING, 0, 1, [0, 0, 0, 0, 0, 0, 0, 0]), PROTOCOL_ERROR],
    ["PING of 7 bytes", raw(PING, 0, 0, [0, 0, 0, 0, 0, 0, 0]), FRAME_SIZE_ERROR],
    ["GOAWAY on a stream", raw(GOAWAY, 0, 1, [0, 0, 0, 0, 0, 0, 0, 0]), PROTOCOL_ERROR],
    ["GOAWAY of 7 bytes", raw(GOAWAY, 0, 0, [0, 0, 0, 0, 0, 0, 0]), FRAME_SIZE_ERROR],
    ["WINDOW_UPDATE of 3 bytes", raw(WINDOW_UPDATE, 0, 1, [0, 0, 1]), FRAME_SIZE_ERROR],
    ["WINDOW_UPDATE of 0 on the connection", raw(WINDOW_UPDATE, 0, 0, [0, 0, 0, 0]), PROTOCOL_ERROR],
    ["CONTINUATION without HEADERS", raw(CONTINUATION, FLAG_END_HEADERS, 1, [0x82]), PROTOCOL_ERROR],
    ["a frame over the max frame size", raw(DATA, 0, 1, new Uint8Array(16_385)), FRAME_SIZE_ERROR],
    ["a frame inside a field block", new Uint8Array([...raw(HEADERS, 0, 1, [0x82]), ...raw(PING, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0])]), PROTOCOL_ERROR],
    ["an unknown frame inside a field block", new Uint8Array([...raw(HEADERS, 0, 1, [0x82]), ...raw(0xfa, 0, 0, [])]), PROTOCOL_ERROR],
    ["CONTINUATION of another stream", new Uint8Array([...raw(HEADERS, 0, 1, [0x82]), ...raw(CONTINUATION, FLAG_END_HEADERS, 3, [0x84])]), PROTOCOL_ERROR],
  ])("%s: connection error", (_, bytes, code) => {
    expect(connectionError(() => read(bytes))).toBe(code);
  });

  test("the frame size is checked from the header, before the payload arrives", () => {
    const reader = new FrameReader(new Recorder(), OPTIONS);
    expect(connectionError(() => reader.push(Uint8Array.of(0, 0x40, 1, DATA, 0, 0, 0, 0, 1)))).toBe(FRAME_SIZE_ERROR);
  });

  test.each([
    ["PRIORITY of 4 bytes", raw(PRIORITY, 0, 1, [0, 0, 0, 3]), FRAME_SIZE_ERROR],
    ["PRIORITY depending on itself", raw(PRIORITY, 0, 3, [0, 0, 0, 3, 15]), PROTOCOL_ERROR],
    ["WINDOW_UPDATE of 0 on a stream", raw(WINDOW_UPDATE, 0, 1, [0, 0, 0, 0]), PROTOCOL_ERROR],
  ])("%s: stream error, reading goes on", (_, bytes, code) => {
    const streamId = (bytes[5]! << 24) | (bytes[6]! << 16) | (bytes[7]! << 8) | bytes[8]!;
    expect(read(new Uint8Array([...bytes, ...raw(PING, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0])]))).toEqual([
      ["stream-error", streamId, code],
      ["ping", [0, 0, 0, 0, 0, 0, 0, 0], false],
    ]);
  });

  test("the first frame must be SETTINGS (connection preface)", () => {
    const ping = raw(PING, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0]);
    expect(connectionError(() => read(ping, { settingsFirst: true }))).toBe(PROTOCOL_ERROR);
    expect(connectionError(() => read(raw(SETTINGS, 1, 0, []), { settingsFirst: true }))).toBe(PROTOCOL_ERROR);
    expect(read(new Uint8Array([...raw(SETTINGS, 0, 0, []), ...ping]), { settingsFirst: true })).toHaveLength(2);
  });

  test("CONTINUATION flood: more than maxContinuations frames, or a block over maxBlockSize", () => {
    const many = [raw(HEADERS, 0, 1, [0x82])];
    for (let i = 0; i < 5; i++) many.push(raw(CONTINUATION, 0, 1, []));
    const r = new Recorder();
    const reader = new FrameReader(r, { ...OPTIONS, maxContinuations: 4 });
    expect(connectionError(() => many.forEach((f) => reader.push(f)))).toBe(ENHANCE_YOUR_CALM);
    expect(r.events).toEqual([]);

    const big = [raw(HEADERS, 0, 1, new Uint8Array(600)), raw(CONTINUATION, 0, 1, new Uint8Array(600))];
    const r2 = new Recorder();
    const reader2 = new FrameReader(r2, { ...OPTIONS, maxBlockSize: 1000 });
    reader2.push(big[0]!);
    expect(connectionError(() => reader2.push(big[1]!))).toBe(ENHANCE_YOUR_CALM);
    expect(connectionError(() => read(raw(HEADERS, FLAG_END_HEADERS, 1, new Uint8Array(1001)), { maxBlockSize: 1000 }))).toBe(ENHANCE_YOUR_CALM);
  });

  test("a halted reader delivers nothing more", () => {
    const r = new Recorder();
    const reader = new FrameReader(r, OPTIONS);
    const ping = raw(PING, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0]);
    const sink = r.onPing.bind(r);
    r.onPing = (p, ack) => {
      sink(p, ack);
      reader.halt();
    };
    reader.push(new Uint8Array([...ping, ...ping]));
    reader.push(ping);
    expect(r.events).toHaveLength(1);
  });
});

describe("settings", () => {
  const entry = (id: number, value: number) => Uint8Array.of(id >> 8, id, value >>> 24, value >>> 16, value >>> 8, value);

  test("peer settings apply in order; unknown ids are ignored", () => {
    const p = new PeerSettings("server");
    const prev = p.apply(new Uint8Array([...entry(4, 1000), ...entry(0x99, 7), ...entry(4, 2000), ...entry(5, 20_000), ...entry(1, 0), ...entry(3, 10)]));
    expect(prev).toBe(65_535);
    expect({ ...p }).toEqual({
      role: "server",
      headerTableSize: 0,
      enablePush: true,
      maxConcurrentStreams: 10,
      initialWindowSize: 2000,
      maxFrameSize: 20_000,
      maxHeaderListSize: Infinity,
    });
  });

  test.each([
    ["ENABLE_PUSH 2", "server", entry(2, 2), PROTOCOL_ERROR],
    ["ENABLE_PUSH 1 from a server", "client", entry(2, 1), PROTOCOL_ERROR],
    ["INITIAL_WINDOW_SIZE over 2^31-1", "server", entry(4, 0x8000_0000), FLOW_CONTROL_ERROR],
    ["MAX_FRAME_SIZE under 16384", "server", entry(5, 16_383), PROTOCOL_ERROR],
    ["MAX_FRAME_SIZE over 2^24-1", "server", entry(5, 0x100_0000), PROTOCOL_ERROR],
  ] as const)("%s: connection error", (_, role, payload, code) => {
    expect(connectionError(() => new PeerSettings(role).apply(payload))).toBe(code);
  });

  test("limits: defaults, overrides, ranges; what each role advertises", () => {
    expect(resolveLimits({})).toEqual(DEFAULT_LIMITS);
    expect(resolveLimits({ maxConcurrentStreams: 7 }).maxConcurrentStreams).toBe(7);
    expect(() => resolveLimits({ maxFrameSize: 1000 })).toThrow(RangeError);
    expect(() => resolveLimits({ initialWindowSize: 2 ** 31 })).toThrow(RangeError);
    expect(localSettings(DEFAULT_LIMITS, "server")).toEqual([
      [3, 100],
      [4, 262_144],
      [6, 65_536],
    ]);
    expect(localSettings(resolveLimits({ maxFrameSize: 32_768 }), "client")).toEqual([
      [2, 0],
      [4, 262_144],
      [5, 32_768],
      [6, 65_536],
    ]);
  });
});
