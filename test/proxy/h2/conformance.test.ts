/**
 * Frame-level conformance of the server session, h2spec-style: a raw-bytes client sends exactly the frames of
 * each case and asserts the frames the server answers with (GOAWAY code, RST_STREAM code), for the RFC 9113 rules
 * the proxy relies on and for the limits against known attacks.
 */
import { describe, expect, test } from "bun:test";
import {
  CANCEL,
  COMPRESSION_ERROR,
  errorName,
  FLOW_CONTROL_ERROR,
  FRAME_SIZE_ERROR,
  H2ConnectionError,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  STREAM_CLOSED,
} from "../../../src/proxy/h2/errors.ts";
import {
  CONTINUATION,
  DATA,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  HEADERS,
  PRIORITY,
  PUSH_PROMISE,
  RST_STREAM,
  SETTINGS,
  WINDOW_UPDATE,
} from "../../../src/proxy/h2/frames.ts";
import type { H2Stream, HeaderList } from "../../../src/proxy/h2/session.ts";
import { bytes } from "../../support/http-harness.ts";
import { waitFor } from "../../support/wait.ts";
import { GET, h2Server, holdingServer, POST, RawH2, StreamLog, type TestServer } from "./harness.ts";

const enc = new TextEncoder();

/** The server's GOAWAY code, by name; and the server closes the connection after it. */
async function goawayCode(raw: RawH2): Promise<string> {
  const g = await raw.goaway();
  await raw.whenClosed();
  return errorName(g.code);
}

/** The server's RST_STREAM code on `id`, by name; the connection goes on. */
async function rstCode(raw: RawH2, id: number): Promise<string> {
  const code = await raw.rst(id);
  await raw.ping();
  return errorName(code);
}

async function connect(server: TestServer, settings: [number, number][] = []): Promise<RawH2> {
  return RawH2.connect(server.port, { settings });
}

describe("connection preface and SETTINGS", () => {
  test("the server sends SETTINGS and a connection WINDOW_UPDATE first, ACKs ours, answers PING", async () => {
    await using server = h2Server();
    await using raw = await connect(server);
    await raw.ping();
    const [settings, update, ack] = raw.frames;
    expect([settings!.type, settings!.flags, [...settings!.payload]]).toEqual([SETTINGS, 0, [0, 3, 0, 0, 0, 100, 0, 4, 0, 4, 0, 0, 0, 6, 0, 1, 0, 0]]);
    expect([update!.type, update!.streamId, [...update!.payload]]).toEqual([WINDOW_UPDATE, 0, [0, 0x0f, 0, 1]]);
    expect([ack!.type, ack!.flags]).toEqual([SETTINGS, 1]);
  });

  test("an invalid preface: GOAWAY PROTOCOL_ERROR", async () => {
    await using server = h2Server();
    await using raw = await RawH2.connect(server.port, { preface: false });
    raw.send(bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    expect(await goawayCode(raw)).toBe("PROTOCOL_ERROR");
  });

  test("a first frame other than SETTINGS: GOAWAY PROTOCOL_ERROR", async () => {
    await using server = h2Server();
    await using raw = await RawH2.connect(server.port, { preface: false });
    raw.send(bytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), raw.build((w) => w.ping(new Uint8Array(8), false)));
    expect(await goawayCode(raw)).toBe("PROTOCOL_ERROR");
  });

  test.each([
    ["SETTINGS_ENABLE_PUSH 2", [2, 2], PROTOCOL_ERROR],
    ["SETTINGS_MAX_FRAME_SIZE 100", [5, 100], PROTOCOL_ERROR],
    ["SETTINGS_INITIAL_WINDOW_SIZE 2^31", [4, 2 ** 31], FLOW_CONTROL_ERROR],
  ] as const)("%s: GOAWAY", async (_, entry, code) => {
    await using server = h2Server();
    await using raw = await connect(server);
    raw.write((w) => w.settings([entry]));
    expect(await goawayCode(raw)).toBe(errorName(code));
  });

  test("unknown frame types and SETTINGS ids are ignored; PRIORITY on an idle stream too", async () => {
    await using server = h2Server();
    await using raw = await connect(server, [[0x99, 1]]);
    raw.write((w) => {
      w.frame(0xfa, 0, 0, enc.encode("x"));
      w.frame(0xfb, 0xff, 1, enc.encode("y"));
      w.frame(PRIORITY, 0, 9, Uint8Array.of(0, 0, 0, 0, 15));
    });
    raw.headers(1, GET, true);
    expect((await raw.response(1)).body).toBe("ok");
  });
});

describe("frame checks: connection errors", () => {
  test.each([
    ["a frame over SETTINGS_MAX_FRAME_SIZE", (r: RawH2) => r.write((w) => w.frame(0xfa, 0, 0, new Uint8Array(16_385))), FRAME_SIZE_ERROR],
    ["PUSH_PROMISE from a client", (r: RawH2) => r.write((w) => w.frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, Uint8Array.of(0, 0, 0, 2, 0x82))), PROTOCOL_ERROR],
    ["PING of 7 bytes", (r: RawH2) => r.write((w) => w.frame(6, 0, 0, new Uint8Array(7))), FRAME_SIZE_ERROR],
    ["SETTINGS on a stream", (r: RawH2) => r.write((w) => w.frame(SETTINGS, 0, 1, new Uint8Array(0))), PROTOCOL_ERROR],
    ["a field block the decoder cannot decode", (r: RawH2) => r.write((w) => w.frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, Uint8Array.of(0x80))), COMPRESSION_ERROR],
    ["a frame between HEADERS and CONTINUATION", (r: RawH2) => r.write((w) => {
      w.frame(HEADERS, 0, 1, r.block(GET));
      w.ping(new Uint8Array(8), false);
    }), PROTOCOL_ERROR],
    ["CONTINUATION without HEADERS", (r: RawH2) => r.write((w) => w.frame(CONTINUATION, FLAG_END_HEADERS, 1, r.block(GET))), PROTOCOL_ERROR],
  ] as const)("%s: GOAWAY", async (_, send, code) => {
    await using server = h2Server();
    await using raw = await connect(server);
    send(raw);
    expect(await goawayCode(raw)).toBe(errorName(code));
  });
});

describe("malformed requests: RST_STREAM PROTOCOL_ERROR (RFC 9113 §8.1.1)", () => {
  const base = GET.filter(([n]) => n !== ":path");
  test.each([
    ["no :method", GET.filter(([n]) => n !== ":method")],
    ["no :scheme", GET.filter(([n]) => n !== ":scheme")],
    ["no :path", base],
    ["an empty :path", [...base, [":path", ""]]],
    ["an unknown pseudo-header field", [...GET, [":foo", "bar"]]],
    ["a response pseudo-header field", [...GET, [":status", "200"]]],
    ["a duplicate pseudo-header field", [...GET, [":path", "/again"]]],
    ["a pseudo-header field after a regular one", [...base, ["x-a", "1"], [":path", "/"]]],
    ["extended CONNECT (not enabled)", [[":method", "CONNECT"], [":protocol", "websocket"], [":scheme", "http"], [":authority", "a"], [":path", "/"]]],
    ["CONNECT without :authority", [[":method", "CONNECT"]]],
    ["CONNECT with :path", [[":method", "CONNECT"], [":authority", "a:443"], [":path", "/"]]],
    ["an upper-case field name", [...GET, ["X-Upper", "1"]]],
    ["a field name with a space", [...GET, ["x y", "1"]]],
    ["a value with CR", [...GET, ["x-a", "1\r2"]]],
    ["a value with a leading space", [...GET, ["x-a", " 1"]]],
    ["connection", [...GET, ["connection", "keep-alive"]]],
    ["keep-alive", [...GET, ["keep-alive", "timeout=5"]]],
    ["proxy-connection", [...GET, ["proxy-connection", "keep-alive"]]],
    ["transfer-encoding", [...GET, ["transfer-encoding", "chunked"]]],
    ["upgrade", [...GET, ["upgrade", "h2c"]]],
    ["te other than trailers", [...GET, ["te", "gzip"]]],
    ["a content-length that is not a number", [...POST, ["content-length", "12a"]]],
    ["two content-lengths that differ", [...POST, ["content-length", "1"], ["content-length", "2"]]],
    ["host differing from :authority", [...GET, ["host", "other"]]],
  ] as [string, HeaderList][])("%s", async (_, headers) => {
    const seen: HeaderList[] = [];
    await using server = h2Server({}, () => ({ stream: (_s, h) => void seen.push(h) }));
    await using raw = await connect(server);
    raw.headers(1, headers, true);
    expect(await rstCode(raw, 1)).toBe("PROTOCOL_ERROR");
    expect(seen).toEqual([]);
  });

  test("well-formed: te: trailers, host equal to :authority, CONNECT with :authority only", async () => {
    await using server = h2Server();
    await using raw = await connect(server);
    raw.headers(1, [...GET, ["te", "trailers"], ["host", "TEST"]], true);
    raw.headers(3, [[":method", "CONNECT"], [":authority", "a:443"]], true);
    expect((await raw.response(1)).body).toBe("ok");
    expect((await raw.response(3)).body).toBe("ok");
  });

  test.each([
    ["content-length 5, 3 bytes sent", "5", "abc", true],
    ["content-length 2, 3 bytes sent", "2", "abc", false],
    ["content-length 5 on HEADERS with END_STREAM", "5", undefined, true],
  ] as const)("%s", async (_, length, body, end) => {
    await using server = h2Server();
    await using raw = await connect(server);
    raw.headers(1, [...POST, ["content-length", length]], body === undefined);
    if (body !== undefined) raw.write((w) => w.data(1, enc.encode(body), 0, body.length, end));
    expect(await rstCode(raw, 1)).toBe("PROTOCOL_ERROR");
  });

  test("a body matching its content-length is fine", async () => {
    await using server = h2Server();
    await using raw = await connect(server);
    raw.headers(1, [...POST, ["content-length", "3"]], false);
    raw.write((w) => w.data(1, enc.encode("abc"), 0, 3, true));
    expect((await raw.response(1)).body).toBe("ok");
  });

  test.each([
    ["trailers with a pseudo-header field", [[":path", "/"]], true],
    ["trailers without END_STREAM", [["x-t", "1"]], false],
  ] as [string, HeaderList, boolean][])("%s", async (_, trailers, end) => {
    await using server = h2Server();
    await using raw = await connect(server);
    raw.headers(1, POST, false);
    raw.headers(1, trailers, end);
    expect(await rstCode(raw, 1)).toBe("PROTOCOL_ERROR");
  });
});

describe("stream states and identifiers (RFC 9113 §5.1)", () => {
  test.each([
    ["HEADERS on an even (server) stream id", (r: RawH2) => r.headers(2, GET, true), PROTOCOL_ERROR],
    ["a stream id lower than one already opened", (r: RawH2) => {
      r.headers(5, GET, true);
      r.headers(3, GET, true);
    }, PROTOCOL_ERROR],
    ["DATA on an idle stream", (r: RawH2) => r.write((w) => w.data(1, enc.encode("x"), 0, 1, true)), PROTOCOL_ERROR],
    ["RST_STREAM on an idle stream", (r: RawH2) => r.write((w) => w.rstStream(1, CANCEL)), PROTOCOL_ERROR],
    ["WINDOW_UPDATE on an idle stream", (r: RawH2) => r.write((w) => w.windowUpdate(1, 100)), PROTOCOL_ERROR],
  ] as const)("%s: GOAWAY", async (_, send, code) => {
    await using server = h2Server();
    await using raw = await connect(server);
    send(raw);
    expect(await goawayCode(raw)).toBe(errorName(code));
  });

  test("PRIORITY of 4 bytes: RST_STREAM FRAME_SIZE_ERROR on an open stream, GOAWAY on an idle one", async () => {
    const { server } = holdingServer();
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, POST, false);
    raw.write((w) => w.frame(PRIORITY, 0, 1, Uint8Array.of(0, 0, 0, 0)));
    expect(await rstCode(raw, 1)).toBe("FRAME_SIZE_ERROR");
    raw.write((w) => w.frame(PRIORITY, 0, 7, Uint8Array.of(0, 0, 0, 0)));
    expect(await goawayCode(raw)).toBe("FRAME_SIZE_ERROR");
  });

  test("HEADERS on a closed stream: GOAWAY STREAM_CLOSED, with the last stream id processed", async () => {
    await using server = h2Server();
    await using raw = await connect(server);
    raw.headers(1, GET, true);
    await raw.response(1);
    raw.headers(1, GET, true);
    const g = await raw.goaway();
    expect([errorName(g.code), g.lastStreamId]).toEqual(["STREAM_CLOSED", 1]);
  });

  test("DATA on a closed stream: RST_STREAM STREAM_CLOSED", async () => {
    await using server = h2Server();
    await using raw = await connect(server);
    raw.headers(1, GET, true);
    await raw.response(1);
    raw.write((w) => w.data(1, enc.encode("x"), 0, 1, false));
    expect(await rstCode(raw, 1)).toBe("STREAM_CLOSED");
  });

  test("DATA and HEADERS on a half-closed (remote) stream: RST_STREAM STREAM_CLOSED", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, GET, true);
    raw.headers(3, GET, true);
    await waitFor(() => streams.length === 2, { what: "two streams" });
    raw.write((w) => w.data(1, enc.encode("x"), 0, 1, false));
    expect(await rstCode(raw, 1)).toBe("STREAM_CLOSED");
    expect(streams[0]!.log.resetCode).toBe(STREAM_CLOSED);
    raw.headers(3, [["x-t", "1"]], true);
    expect(await rstCode(raw, 3)).toBe("STREAM_CLOSED");
  });

  test("frames on a stream we reset are ignored; WINDOW_UPDATE and RST_STREAM on closed streams too", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, POST, false);
    await waitFor(() => streams.length === 1, { what: "the stream" });
    streams[0]!.stream.reset(CANCEL);
    expect(await raw.rst(1)).toBe(CANCEL);
    raw.write((w) => {
      w.data(1, enc.encode("late"), 0, 4, false);
      w.headers(1, raw.block([["x-t", "1"]]), true, 16_384);
      w.windowUpdate(1, 10);
      w.rstStream(1, CANCEL);
    });
    await raw.ping();
    expect(raw.count(RST_STREAM)).toBe(1);
  });
});

describe("flow control (RFC 9113 §6.9)", () => {
  test("WINDOW_UPDATE of 0 on a stream: RST_STREAM PROTOCOL_ERROR; on the connection: GOAWAY PROTOCOL_ERROR", async () => {
    const { server } = holdingServer();
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, POST, false);
    raw.write((w) => w.frame(WINDOW_UPDATE, 0, 1, new Uint8Array(4)));
    expect(await rstCode(raw, 1)).toBe("PROTOCOL_ERROR");
    raw.write((w) => w.frame(WINDOW_UPDATE, 0, 0, new Uint8Array(4)));
    expect(await goawayCode(raw)).toBe("PROTOCOL_ERROR");
  });

  test("a window over 2^31-1: stream RST_STREAM, connection GOAWAY, by SETTINGS GOAWAY (FLOW_CONTROL_ERROR)", async () => {
    const { server } = holdingServer();
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, POST, false);
    raw.write((w) => w.windowUpdate(1, 2 ** 31 - 1));
    expect(await rstCode(raw, 1)).toBe("FLOW_CONTROL_ERROR");
    raw.headers(3, POST, false);
    raw.write((w) => {
      w.windowUpdate(3, 2 ** 31 - 1 - 65_535);
      w.settings([[4, 65_536]]);
    });
    expect(await goawayCode(raw)).toBe("FLOW_CONTROL_ERROR");

    await using raw2 = await connect(server);
    raw2.write((w) => w.windowUpdate(0, 2 ** 31 - 1));
    expect(await goawayCode(raw2)).toBe("FLOW_CONTROL_ERROR");
  });

  test("DATA over the stream window: RST_STREAM FLOW_CONTROL_ERROR", async () => {
    const { server } = holdingServer({ initialWindowSize: 65_535 }, false);
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, POST, false);
    const chunk = new Uint8Array(16_384);
    raw.write((w) => {
      for (let i = 0; i < 4; i++) w.data(1, chunk, 0, chunk.length, false);
    });
    expect(await rstCode(raw, 1)).toBe("FLOW_CONTROL_ERROR");
  });

  test("DATA over the connection window: GOAWAY FLOW_CONTROL_ERROR", async () => {
    const { server } = holdingServer({ connectionWindowSize: 65_535, initialWindowSize: 1 << 20, maxFrameSize: 1 << 17 });
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, POST, false);
    const chunk = new Uint8Array(65_536);
    raw.write((w) => w.data(1, chunk, 0, chunk.length, false));
    expect(await goawayCode(raw)).toBe("FLOW_CONTROL_ERROR");
  });

  test("the peer's SETTINGS_INITIAL_WINDOW_SIZE applies to open streams, up and down, mid-stream", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using raw = await connect(server, [[4, 1000]]);
    raw.headers(1, GET, true);
    await waitFor(() => streams.length === 1, { what: "the stream" });
    const { stream, log } = streams[0]!;
    const body = new Uint8Array(5000).fill(7);
    stream.sendHeaders([[":status", "200"]], false);
    expect(stream.sendData(body, true)).toBe(false);
    const dataBytes = () => {
      raw.poll();
      return raw.frames.filter((f) => f.type === DATA).reduce((n, f) => n + f.payload.length, 0);
    };
    await waitFor(() => dataBytes() === 1000, { what: "a window of 1000" });
    raw.write((w) => w.settings([[4, 3000]]));
    await waitFor(() => dataBytes() === 3000, { what: "a window raised to 3000" });
    // Lowered to 1000: the window is 1000 - 3000 = -2000; an update of 2500 leaves room for 500.
    raw.write((w) => {
      w.settings([[4, 1000]]);
      w.windowUpdate(1, 2500);
    });
    await waitFor(() => dataBytes() === 3500, { what: "500 more" });
    expect(log.writables).toBe(0);
    raw.write((w) => w.windowUpdate(1, 10_000));
    await raw.response(1);
    expect(dataBytes()).toBe(5000);
    expect(log.writables).toBe(0);
    expect(stream.localClosed).toBe(true);
  });

  test("the peer's SETTINGS_MAX_FRAME_SIZE and SETTINGS_HEADER_TABLE_SIZE are honoured", async () => {
    const big = "h".repeat(50_000);
    await using server = h2Server({}, () => ({
      stream(stream) {
        stream.sendHeaders([[":status", "200"], ["x-big", big]], false);
        stream.sendData(new Uint8Array(100_000), true);
      },
    }));
    await using raw = await connect(server, [
      [5, 20_000],
      [4, 1 << 20],
      [1, 0],
    ]);
    raw.write((w) => w.windowUpdate(0, 1 << 20));
    raw.headers(1, GET, true);
    const res = await raw.response(1);
    expect(res.heads[0]!.at(-1)).toEqual(["x-big", big]);
    const sizes = raw.frames.filter((f) => f.streamId === 1 && f.type === DATA).map((f) => f.payload.length);
    expect(Math.max(...sizes)).toBe(20_000);
    expect(sizes.reduce((a, b) => a + b)).toBe(100_000);
    // The first header block starts with a dynamic table size update to 0 (RFC 7541 §6.3).
    const d = raw.c.data;
    let at = 0;
    while (d[at + 3] !== HEADERS) at += 9 + ((d[at]! << 16) | (d[at + 1]! << 8) | d[at + 2]!);
    expect(d[at + 9]).toBe(0x20);
  });
});

describe("limits against known attacks", () => {
  test("rapid reset (CVE-2023-44487): streams reset before any response, over 200: GOAWAY ENHANCE_YOUR_CALM", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using raw = await connect(server);
    raw.write((w) => {
      for (let id = 1; id <= 2 * 260; id += 2) {
        w.headers(id, raw.block(GET), false, 16_384);
        w.rstStream(id, CANCEL);
      }
    });
    const g = await raw.goaway();
    expect(errorName(g.code)).toBe("ENHANCE_YOUR_CALM");
    // The meter drains at its rate while the frames arrive (a loaded machine spreads them over reads): the 201st
    // reset trips it at the soonest, and it trips well before all 260.
    expect(g.lastStreamId).toBeGreaterThanOrEqual(2 * 201 - 1);
    expect(g.lastStreamId).toBeLessThan(2 * 260 - 1);
    expect(streams.length).toBe((g.lastStreamId + 1) / 2);
  });

  test("streams reset after the response began are not counted; refused streams neither", async () => {
    await using server = h2Server({ maxConcurrentStreams: 1 }, () => ({
      stream(stream: H2Stream) {
        stream.handlers = new StreamLog();
        stream.sendHeaders([[":status", "200"]], false);
      },
    }));
    await using raw = await connect(server);
    raw.write((w) => {
      for (let id = 1; id <= 2 * 300; id += 2) {
        w.headers(id, raw.block(GET), false, 16_384);
        w.rstStream(id, CANCEL);
      }
    });
    await raw.ping();
    raw.headers(1001, GET, false);
    raw.write((w) => {
      for (let id = 1003; id <= 1003 + 2 * 300; id += 2) {
        w.headers(id, raw.block(GET), false, 16_384);
        w.rstStream(id, CANCEL);
      }
    });
    await raw.ping();
    expect(raw.frames.filter((f) => f.type === RST_STREAM && f.payload[3] === REFUSED_STREAM)).toHaveLength(301);
    expect(raw.count(7)).toBe(0);
  });

  test("more streams than SETTINGS_MAX_CONCURRENT_STREAMS: RST_STREAM REFUSED_STREAM", async () => {
    const { server, streams } = holdingServer({ maxConcurrentStreams: 2 });
    await using _ = server;
    await using raw = await connect(server);
    for (const id of [1, 3, 5]) raw.headers(id, GET, true);
    expect(await rstCode(raw, 5)).toBe("REFUSED_STREAM");
    expect(streams.map((s) => s.stream.id)).toEqual([1, 3]);
  });

  test("CONTINUATION flood: more than 32 CONTINUATION frames: GOAWAY ENHANCE_YOUR_CALM, nothing decoded", async () => {
    const seen: HeaderList[] = [];
    await using server = h2Server({}, () => ({ stream: (_s, h) => void seen.push(h) }));
    await using raw = await connect(server);
    const block = raw.block(GET);
    raw.write((w) => {
      w.frame(HEADERS, FLAG_END_STREAM, 1, block.subarray(0, 1));
      for (let i = 0; i < 33; i++) w.frame(CONTINUATION, 0, 1, new Uint8Array(0));
      w.frame(CONTINUATION, FLAG_END_HEADERS, 1, block.subarray(1));
    });
    expect(await goawayCode(raw)).toBe("ENHANCE_YOUR_CALM");
    expect(seen).toEqual([]);
  });

  test("a field block over maxHeaderListSize bytes: GOAWAY ENHANCE_YOUR_CALM before decoding", async () => {
    await using server = h2Server({ maxHeaderListSize: 4096 });
    await using raw = await connect(server);
    raw.write((w) => {
      w.frame(HEADERS, FLAG_END_STREAM, 1, new Uint8Array(3000));
      w.frame(CONTINUATION, FLAG_END_HEADERS, 1, new Uint8Array(3000));
    });
    expect(await goawayCode(raw)).toBe("ENHANCE_YOUR_CALM");
  });

  test("a header list over maxHeaderListSize (decoded) is answered 431; the connection goes on", async () => {
    await using server = h2Server();
    await using raw = await connect(server);
    raw.headers(1, [...GET, ["x-huge", "a".repeat(70_000)]], true);
    const res = await raw.response(1);
    expect(res.heads).toEqual([[[":status", "431"]]]);
    raw.headers(3, GET, true);
    expect((await raw.response(3)).body).toBe("ok");
  });

  test("empty DATA frames without END_STREAM, over 100: GOAWAY ENHANCE_YOUR_CALM", async () => {
    const { server } = holdingServer();
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, POST, false);
    raw.write((w) => {
      for (let i = 0; i < 101; i++) w.data(1, new Uint8Array(0), 0, 0, false);
    });
    expect(await goawayCode(raw)).toBe("ENHANCE_YOUR_CALM");
  });

  /**
   * A client that stops reading, with windows wide open, while the server streams a large response paced by
   * `sendData`'s answer: the server stops writing at the socket's backlog (well short of the body), then control
   * frames it owes pile up.
   */
  async function stalledClient(): Promise<{ server: TestServer; raw: RawH2; sent: () => number; total: number }> {
    const total = 256 << 20;
    let sent = 0;
    const server = h2Server({}, () => ({
      stream(stream) {
        const log = new StreamLog();
        stream.handlers = log;
        stream.sendHeaders([[":status", "200"]], false);
        const chunk = new Uint8Array(1 << 20);
        const go = (s: H2Stream) => {
          while (sent < total) {
            sent += chunk.length;
            if (!s.sendData(chunk, sent >= total)) return;
          }
        };
        log.onWritable = go;
        go(stream);
      },
    }));
    const raw = await RawH2.connect(server.port, { settings: [[4, 2 ** 31 - 1]] });
    raw.c.socket.pause();
    raw.write((w) => w.windowUpdate(0, 2 ** 31 - 1 - 65_535));
    raw.headers(1, GET, true);
    await waitFor(() => sent > 0, { what: "the response to start" });
    return { server, raw, sent: () => sent, total };
  }

  test.each([
    ["PING", (r: RawH2) => r.write((w) => w.ping(new Uint8Array(8), false))],
    ["SETTINGS", (r: RawH2) => r.write((w) => w.settings([]))],
  ] as const)("%s flood while not reading: over 64 answers owed, the connection is closed (ENHANCE_YOUR_CALM)", async (_, one) => {
    const { server, raw, sent, total } = await stalledClient();
    await using _s = server;
    await using _r = raw;
    // Bounded: at most 2000 frames over at most 5 s, until the server gives up.
    for (let i = 0; i < 200 && !server.closes.has(0); i++) {
      for (let j = 0; j < 10; j++) one(raw);
      await Bun.sleep(25);
    }
    const err = server.closes.get(0);
    expect(err).toBeInstanceOf(H2ConnectionError);
    expect(errorName((err as H2ConnectionError).code)).toBe("ENHANCE_YOUR_CALM");
    expect(err!.message).toContain("control frames owed");
    expect(sent()).toBeLessThan(total);
  });

  test("an owner ignoring sendData's false: over the outbound cap the connection is closed (ENHANCE_YOUR_CALM)", async () => {
    const answers: boolean[] = [];
    await using server = h2Server({}, () => ({
      stream(stream) {
        stream.handlers = new StreamLog();
        stream.sendHeaders([[":status", "200"]], false);
        const chunk = new Uint8Array(1 << 20);
        for (let i = 0; i < 64 && !stream.localClosed; i++) answers.push(stream.sendData(chunk, false));
      },
    }));
    await using raw = await RawH2.connect(server.port, { settings: [[4, 2 ** 31 - 1]] });
    raw.c.socket.pause();
    raw.headers(1, GET, true);
    await waitFor(() => server.closes.has(0), { what: "the server to give up" });
    const err = server.closes.get(0) as H2ConnectionError;
    expect([errorName(err.code), err.message.includes("does not read")]).toEqual(["ENHANCE_YOUR_CALM", true]);
    expect(answers[0]).toBe(false);
  });
});

describe("GOAWAY", () => {
  test("graceful: last stream id accepted, later streams refused, streams in flight finish, then FIN", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using raw = await connect(server);
    raw.headers(1, GET, true);
    await waitFor(() => streams.length === 1, { what: "the stream" });
    server.sessions[0]!.goaway();
    const g = await raw.goaway();
    expect([g.lastStreamId, errorName(g.code)]).toEqual([1, "NO_ERROR"]);
    raw.headers(3, GET, true);
    expect(errorName(await raw.rst(3))).toBe("REFUSED_STREAM");
    expect(raw.closed).toBe(false);
    const s = streams[0]!.stream;
    s.sendHeaders([[":status", "200"]], false);
    s.sendData(enc.encode("done"), true);
    expect((await raw.response(1)).body).toBe("done");
    await raw.whenClosed();
    expect(server.closes.get(0)).toBeUndefined();
  });
});
