/**
 * Two HTTP/2 sessions (client and server roles) over real loopback sockets: requests and responses, trailers,
 * bodies larger than every window (flow control and backpressure end to end), resets both ways, GOAWAY with
 * streams in flight, the peer's SETTINGS applied mid-connection, header-size limits; then real peers (curl and
 * h2load) against a server built on the session.
 */
import { describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CANCEL, H2ConnectionError, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM } from "../../../src/proxy/h2/errors.ts";
import { FloodMeter, type H2Stream, type HeaderList } from "../../../src/proxy/h2/session.ts";
import { grpcFrame, startGrpcServer } from "../../support/grpc/peers.ts";
import { waitFor } from "../../support/wait.ts";
import { GET, h2Client, h2Server, holdingServer, okResponder, POST, StreamLog } from "./harness.ts";

const enc = new TextEncoder();

/** `n` bytes of a repeating pattern (so reordering or loss shows). */
function pattern(n: number, seed = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** Send `body` as fast as the stream takes it, 16 KiB at a time, waiting for `writable` when told to. */
function pump(stream: H2Stream, log: StreamLog, body: Uint8Array, then: (s: H2Stream) => void = (s) => s.sendData(new Uint8Array(0), true)): void {
  let at = 0;
  const go = (s: H2Stream) => {
    while (at < body.length) {
      const chunk = body.subarray(at, Math.min(body.length, at + 16_384));
      at += chunk.length;
      if (!s.sendData(chunk, false)) return;
    }
    log.onWritable = undefined;
    then(s);
  };
  log.onWritable = go;
  go(stream);
}

describe("requests and responses", () => {
  test("GET answered 200 ok; many concurrent streams on one connection", async () => {
    await using server = h2Server();
    await using client = await h2Client(server.port);
    const logs = Array.from({ length: 50 }, () => new StreamLog());
    const streams = logs.map((log) => client.session.request(GET, true, log));
    expect(streams.map((s) => s.id)).toEqual(Array.from({ length: 50 }, (_, i) => 2 * i + 1));
    await waitFor(() => logs.every((l) => l.ended), { what: "50 responses" });
    expect(logs.map((l) => [l.status, l.text])).toEqual(logs.map(() => ["200", "ok"]));
    expect(client.session.activeStreams).toBe(0);
    expect(server.sessions[0]!.activeStreams).toBe(0);
    expect(client.session.peerMaxConcurrentStreams).toBe(100);
  });

  test("request body and trailers up, response body and trailers down", async () => {
    const seen: { headers: HeaderList; body: string; trailers: HeaderList | undefined }[] = [];
    await using server = h2Server({}, () => ({
      stream(stream, headers) {
        const log = new StreamLog();
        stream.handlers = log;
        log.onEnd = (s) => {
          seen.push({ headers, body: log.text, trailers: log.heads[0] });
          s.sendHeaders([[":status", "200"], ["content-type", "application/grpc"]], false);
          s.sendData(enc.encode(`echo:${log.text}`), false);
          s.sendTrailers([["grpc-status", "0"], ["grpc-message", "fine"]]);
        };
      },
    }));
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    const s = client.session.request([...POST, ["content-type", "application/grpc"], ["te", "trailers"]], false, log);
    expect(s.sendData(enc.encode("hello "), false)).toBe(true);
    expect(s.sendData(enc.encode("world"), false)).toBe(true);
    s.sendTrailers([["x-checksum", "abc"]]);
    expect(s.localClosed).toBe(true);
    await waitFor(() => log.ended, { what: "the response" });
    expect(seen).toEqual([{ headers: [...POST, ["content-type", "application/grpc"], ["te", "trailers"]], body: "hello world", trailers: [["x-checksum", "abc"]] }]);
    expect(log.heads).toEqual([
      [
        [":status", "200"],
        ["content-type", "application/grpc"],
      ],
      [
        ["grpc-status", "0"],
        ["grpc-message", "fine"],
      ],
    ]);
    expect(log.text).toBe("echo:hello world");
    expect(s.remoteClosed).toBe(true);
  });

  test("informational responses come before the final one", async () => {
    await using server = h2Server({}, () => ({
      stream(stream) {
        stream.sendHeaders([[":status", "103"], ["link", "</a.css>; rel=preload"]], false);
        stream.sendHeaders([[":status", "204"]], true);
      },
    }));
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    client.session.request(GET, true, log);
    await waitFor(() => log.ended, { what: "the response" });
    expect(log.heads.map((h) => h[0])).toEqual([
      [":status", "103"],
      [":status", "204"],
    ]);
  });

  test("header blocks over the max frame size go in CONTINUATION frames both ways", async () => {
    const big = "v".repeat(40_000);
    let got: HeaderList = [];
    await using server = h2Server({}, () => ({
      stream(stream, headers) {
        got = headers;
        stream.sendHeaders([[":status", "200"], ["x-big", big]], true);
      },
    }));
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    client.session.request([...GET, ["x-big", big]], true, log);
    await waitFor(() => log.ended, { what: "the response" });
    expect(got.at(-1)).toEqual(["x-big", big]);
    expect(log.heads[0]).toEqual([
      [":status", "200"],
      ["x-big", big],
    ]);
  });
});

describe("flow control and backpressure", () => {
  test("bodies larger than every window, both ways, arrive intact", async () => {
    const up = pattern(3_000_000, 1);
    const down = pattern(5_000_000, 2);
    await using server = h2Server({}, () => ({
      stream(stream) {
        const log = new StreamLog();
        stream.handlers = log;
        log.onEnd = (s) => {
          expect(same(Buffer.concat(log.chunks), up)).toBe(true);
          s.sendHeaders([[":status", "200"]], false);
          pump(s, log, down);
        };
      },
    }));
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    const s = client.session.request(POST, false, log);
    pump(s, log, up);
    await waitFor(() => log.ended, { what: "the response", timeoutMs: 20_000 });
    expect(log.received).toBe(down.length);
    expect(same(Buffer.concat(log.chunks), down)).toBe(true);
  });

  test("a server that does not consume holds the client's sendData; consumed() releases it", async () => {
    const { server, streams } = holdingServer({ initialWindowSize: 100_000 });
    await using _ = server;
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    const body = pattern(300_000);
    const s = client.session.request(POST, false, log);
    await waitFor(() => streams.length === 1, { what: "the stream" });
    const held = streams[0]!;
    held.log.consume = false;
    let sent = 0;
    let refusedAt = -1;
    for (; sent < body.length; sent += 10_000) {
      if (!s.sendData(body.subarray(sent, sent + 10_000), false)) {
        refusedAt = sent + 10_000;
        break;
      }
    }
    // The tenth chunk uses up the window (100000): the eleventh waits, and the caller is told so.
    expect(refusedAt).toBe(110_000);
    await waitFor(() => held.log.received === 100_000, { what: "a window of data" });
    // The connection still works while the stream waits.
    const other = new StreamLog();
    const o = client.session.request(GET, true, other);
    await waitFor(() => streams.length === 2, { what: "a second stream" });
    streams[1]!.stream.sendHeaders([[":status", "200"]], true);
    await waitFor(() => other.ended, { what: "the second response" });
    expect(o.remoteClosed).toBe(true);
    expect(held.log.received).toBe(100_000);
    expect(log.writables).toBe(0);
    // Consuming opens the window: `writable` fires, the rest flows.
    const rest = body.subarray(refusedAt);
    log.onWritable = (st) => {
      log.onWritable = undefined;
      pump(st, log, rest, (x) => x.sendData(new Uint8Array(0), true));
    };
    held.log.consume = true;
    held.log.release(held.stream);
    await waitFor(() => held.log.ended, { what: "the whole body" });
    expect(log.writables).toBeGreaterThan(0);
    expect(same(Buffer.concat(held.log.chunks), body)).toBe(true);
  });

  test("a peer's SETTINGS applies mid-connection: max concurrent streams", async () => {
    const { server, streams } = holdingServer({ maxConcurrentStreams: 2 });
    await using _ = server;
    let settings = 0;
    await using client = await h2Client(server.port, {}, { settings: () => void settings++ });
    await waitFor(() => settings > 0, { what: "the server's SETTINGS" });
    expect(client.session.peerMaxConcurrentStreams).toBe(2);
    const logs = [new StreamLog(), new StreamLog(), new StreamLog()];
    client.session.request(GET, true, logs[0]!);
    expect(client.session.canRequest).toBe(true);
    client.session.request(GET, true, logs[1]!);
    expect(client.session.canRequest).toBe(false);
    const refused = client.session.request(GET, true, logs[2]!);
    await waitFor(() => logs[2]!.resetCode !== undefined, { what: "the refusal" });
    expect([logs[2]!.resetCode, logs[2]!.resetByPeer, refused.id]).toEqual([REFUSED_STREAM, false, 0]);
    await waitFor(() => streams.length === 2, { what: "two streams" });
    streams[0]!.stream.sendHeaders([[":status", "200"]], true);
    await waitFor(() => logs[0]!.ended, { what: "a response" });
    expect(client.session.canRequest).toBe(true);
  });
});

describe("resets and GOAWAY", () => {
  test("RST_STREAM both ways: the other side's handler hears it, the connection goes on", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using client = await h2Client(server.port);
    const a = new StreamLog();
    const b = new StreamLog();
    const sa = client.session.request(POST, false, a);
    client.session.request(POST, false, b);
    await waitFor(() => streams.length === 2, { what: "two streams" });
    sa.reset(CANCEL);
    expect(a.resetCode).toBeUndefined();
    await waitFor(() => streams[0]!.log.resetCode !== undefined, { what: "the client's reset" });
    expect([streams[0]!.log.resetCode, streams[0]!.log.resetByPeer]).toEqual([CANCEL, true]);
    streams[1]!.stream.reset(REFUSED_STREAM);
    await waitFor(() => b.resetCode !== undefined, { what: "the server's reset" });
    expect([b.resetCode, b.resetByPeer]).toEqual([REFUSED_STREAM, true]);
    // Sending on a reset stream is a no-op.
    expect(sa.sendData(enc.encode("late"), true)).toBe(true);
    expect([client.session.activeStreams, server.sessions[0]!.activeStreams]).toEqual([0, 0]);
    const c = new StreamLog();
    client.session.request(GET, true, c);
    await waitFor(() => streams.length === 3, { what: "a third stream" });
    okResponder(streams[2]!.stream, GET, true);
    await waitFor(() => c.ended, { what: "a response" });
  });

  test("server GOAWAY: streams in flight finish, new ones are refused, then both sides close", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    const goaways: [number, number][] = [];
    await using client = await h2Client(server.port, {}, { goaway: (last, code) => void goaways.push([last, code]) });
    const logs = [new StreamLog(), new StreamLog(), new StreamLog()];
    for (const l of logs) client.session.request(GET, true, l);
    await waitFor(() => streams.length === 3, { what: "three streams" });
    server.sessions[0]!.goaway();
    await waitFor(() => goaways.length === 1, { what: "GOAWAY" });
    expect(goaways).toEqual([[5, NO_ERROR]]);
    expect(client.session.canRequest).toBe(false);
    const late = new StreamLog();
    client.session.request(GET, true, late);
    await waitFor(() => late.resetCode !== undefined, { what: "the refusal" });
    expect(late.resetCode).toBe(REFUSED_STREAM);
    for (const { stream } of streams) okResponder(stream, GET, true);
    await waitFor(() => logs.every((l) => l.ended), { what: "the streams in flight" });
    expect(logs.map((l) => l.text)).toEqual(["ok", "ok", "ok"]);
    expect(await client.closed).toBeUndefined();
    await waitFor(() => server.closes.has(0), { what: "the server session to close" });
    expect(server.closes.get(0)).toBeUndefined();
    expect(server.sessions[0]!.closed).toBe(true);
  });

  test("client GOAWAY: its streams finish, the server closes once none is left", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    client.session.request(GET, true, log);
    await waitFor(() => streams.length === 1, { what: "the stream" });
    client.session.goaway();
    expect(client.session.canRequest).toBe(false);
    okResponder(streams[0]!.stream, GET, true);
    await waitFor(() => log.ended, { what: "the response" });
    await waitFor(() => server.closes.has(0), { what: "the server session to close" });
    expect(await client.closed).toBeUndefined();
  });

  test("streams over the server's GOAWAY last stream id are reset REFUSED_STREAM on the client", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using client = await h2Client(server.port);
    const first = new StreamLog();
    client.session.request(GET, true, first);
    await waitFor(() => streams.length === 1, { what: "the stream" });
    server.sessions[0]!.goaway();
    // Sent before the GOAWAY arrives: the server refuses it; the GOAWAY says it was not processed.
    const second = new StreamLog();
    client.session.request(GET, true, second);
    await waitFor(() => second.resetCode !== undefined, { what: "the refusal" });
    expect([second.resetCode, second.resetByPeer]).toEqual([REFUSED_STREAM, true]);
    expect(streams).toHaveLength(1);
    okResponder(streams[0]!.stream, GET, true);
    await waitFor(() => first.ended, { what: "the first response" });
  });

  test("the connection going away resets every stream; close() is graceful", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    client.session.request(POST, false, log);
    await waitFor(() => streams.length === 1, { what: "the stream" });
    client.session.close();
    expect(log.resetCode).toBe(CANCEL);
    expect(client.session.closed).toBe(true);
    await waitFor(() => streams[0]!.log.resetCode !== undefined, { what: "the server's streams reset" });
    await waitFor(() => server.closes.has(0), { what: "the server session to close" });
  });
});

describe("header limits", () => {
  test("a request over maxHeaderListSize is answered 431 (default), or by the headersTooLarge handler", async () => {
    const huge: HeaderList = [...GET, ["x-huge", "a".repeat(70_000)]];
    await using server = h2Server();
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    client.session.request(huge, true, log);
    await waitFor(() => log.ended, { what: "the 431" });
    expect(log.status).toBe("431");

    const flagged: boolean[] = [];
    await using custom = h2Server({}, () => ({
      stream: okResponder,
      headersTooLarge(stream, endStream) {
        flagged.push(stream.headersTooLarge, endStream);
        stream.sendHeaders([[":status", "200"], ["grpc-status", "8"]], true);
      },
    }));
    await using client2 = await h2Client(custom.port);
    const log2 = new StreamLog();
    client2.session.request(huge, true, log2);
    await waitFor(() => log2.ended, { what: "the custom answer" });
    expect(log2.heads[0]).toEqual([
      [":status", "200"],
      ["grpc-status", "8"],
    ]);
    expect(flagged).toEqual([true, true]);
    // The connection (and its HPACK state) carries on.
    const after = new StreamLog();
    client2.session.request(GET, true, after);
    await waitFor(() => after.ended, { what: "the next response" });
    expect(after.text).toBe("ok");
  });

  test("a response over the client's maxHeaderListSize resets the stream, flagged", async () => {
    await using server = h2Server({}, () => ({
      stream(stream, headers) {
        const big = headers.some(([n]) => n === "x-want-big");
        stream.sendHeaders([[":status", "200"], ["x-big", big ? "b".repeat(70_000) : "small"]], true);
      },
    }));
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    const s = client.session.request([...GET, ["x-want-big", "1"]], true, log);
    await waitFor(() => log.resetCode !== undefined, { what: "the reset" });
    expect([log.resetCode, log.resetByPeer, s.headersTooLarge]).toEqual([CANCEL, false, true]);
    const ok = new StreamLog();
    client.session.request(GET, true, ok);
    await waitFor(() => ok.ended, { what: "the next response" });
    expect(ok.heads[0]).toEqual([
      [":status", "200"],
      ["x-big", "small"],
    ]);
  });

  test("a malformed response is a stream error PROTOCOL_ERROR on the client", async () => {
    await using server = h2Server({}, () => ({
      stream(stream) {
        stream.sendHeaders([[":status", "200"], ["connection", "close"]], true);
      },
    }));
    await using client = await h2Client(server.port);
    const log = new StreamLog();
    client.session.request(GET, true, log);
    await waitFor(() => log.resetCode !== undefined, { what: "the reset" });
    expect([log.resetCode, log.resetByPeer]).toEqual([PROTOCOL_ERROR, false]);
  });
});

test("FloodMeter: a burst over the limit within no time, none at the sustained rate", () => {
  const m = new FloodMeter(200, 200);
  let over = false;
  for (let i = 0; i < 200; i++) over ||= m.hit(0);
  expect(over).toBe(false);
  expect(m.hit(0)).toBe(true);
  const slow = new FloodMeter(200, 200);
  for (let i = 0; i < 2000; i++) over ||= slow.hit(i * 5);
  expect(over).toBe(false);
});

test("an exception in a handler ends the connection with INTERNAL_ERROR", async () => {
  await using server = h2Server({}, () => ({
    stream() {
      throw new Error("handler bug");
    },
  }));
  await using client = await h2Client(server.port);
  client.session.request(GET, true, new StreamLog());
  expect(await client.closed).toBeUndefined();
  await waitFor(() => server.closes.has(0), { what: "the server session to close" });
  expect(server.closes.get(0)?.message).toBe("handler bug");
  expect(server.closes.get(0)).not.toBeInstanceOf(H2ConnectionError);
});

describe("real peers", () => {
  async function run(cmd: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => proc.kill(), 30_000);
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    return { code, stdout, stderr };
  }

  /** A temporary file holding `body`, removed on dispose. */
  async function bodyFile(body: Uint8Array): Promise<{ path: string } & AsyncDisposable> {
    const dir = await mkdtemp(join(tmpdir(), "kubegate-h2-"));
    const path = join(dir, "body");
    await writeFile(path, body);
    return { path, [Symbol.asyncDispose]: () => rm(dir, { recursive: true }) };
  }

  test("curl --http2-prior-knowledge: GET, and a POST larger than the windows", async () => {
    await using server = h2Server();
    const get = await run(["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", " %{http_code} %{http_version}", `http://127.0.0.1:${server.port}/`]);
    expect(get).toEqual({ code: 0, stdout: "ok 200 2", stderr: "" });
    await using file = await bodyFile(pattern(2_000_000));
    const post = await run(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", `@${file.path}`, "-o", "-", "-w", " %{http_code}", `http://127.0.0.1:${server.port}/u`]);
    expect(post).toEqual({ code: 0, stdout: "ok 200", stderr: "" });
  });

  test("h2load: 2000 requests on 4 connections, 16 streams each, all succeed", async () => {
    await using server = h2Server();
    const r = await run(["h2load", "-n2000", "-c4", "-m16", `http://127.0.0.1:${server.port}/`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout");
    expect(r.stdout).toContain("status codes: 2000 2xx");
  });

  test("client role against a real gRPC server (python grpcio): concurrent unary calls, messages over the windows", async () => {
    await using grpc = await startGrpcServer({ name: "a" });
    await using client = await h2Client(grpc.port);
    const call = (method: string, message: Uint8Array) => {
      const log = new StreamLog();
      const s = client.session.request(
        [[":method", "POST"], [":scheme", "http"], [":authority", "test"], [":path", `/kubegate.test.Echo/${method}`], ["content-type", "application/grpc"], ["te", "trailers"]],
        false,
        log,
      );
      pump(s, log, grpcFrame(message));
      return log;
    };
    const unary = Array.from({ length: 20 }, (_, i) => call("Unary", enc.encode(`m${i}`)));
    const padding = enc.encode("0123456789abcdef".repeat((3 << 20) / 16));
    const big = call("Big", new Uint8Array([...enc.encode(`{"size": ${8 << 20}}\n`), ...padding]));
    await waitFor(() => [...unary, big].every((l) => l.ended), { what: "every call", timeoutMs: 20_000 });
    expect(unary.map((l) => [l.status, l.text.slice(5), l.heads.at(-1)?.find(([n]) => n === "grpc-status")?.[1]])).toEqual(
      unary.map((_, i) => ["200", `a:m${i}`, "0"]),
    );
    expect(big.received).toBe(5 + (8 << 20));
    const head = JSON.parse(big.text.slice(5, big.text.indexOf("\n")));
    expect(head).toEqual({ name: "a", received: 3 << 20, intact: true });
  });

  test("h2load with request bodies larger than the windows", async () => {
    await using server = h2Server();
    await using file = await bodyFile(pattern(600_000));
    const r = await run(["h2load", "-n40", "-c2", "-m4", "-d", file.path, `http://127.0.0.1:${server.port}/`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("requests: 40 total, 40 started, 40 done, 40 succeeded, 0 failed, 0 errored, 0 timeout");
  });
});
