/**
 * The RFC 6455 client (src/kube/websocket.ts) against two independent servers: Bun's native WebSocket server
 * (uWebSockets, over TLS with the test certificates) for the handshake, echo, large messages and masking, and a
 * raw TCP server that writes hand-made frames for what a well-behaved server never sends (masked frames,
 * fragments with a ping between them, oversized messages, split headers, a wrong accept key).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { acceptKey, connectWebSocket, maskedFrame, WebSocketHandshakeError, type WebSocketCloseInfo, type WebSocketListener } from "../../src/kube/websocket.ts";
import { testCerts, type TestCerts } from "../support/certs.ts";
import { waitFor } from "../support/wait.ts";

let certs: TestCerts;
beforeAll(async () => {
  certs = await testCerts();
});

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A listener that records everything. */
function recorder() {
  const messages: Uint8Array[] = [];
  const chunks: { start: boolean; end: boolean; binary: boolean; length: number }[] = [];
  let current: Uint8Array[] = [];
  const closed = Promise.withResolvers<WebSocketCloseInfo>();
  const frames: { code: number; reason: string }[] = [];
  const listener: WebSocketListener & { drains: number } = {
    drains: 0,
    onMessage(chunk, start, end, binary) {
      chunks.push({ start, end, binary, length: chunk.length });
      if (start) current = [];
      current.push(chunk.slice());
      if (end) messages.push(Buffer.concat(current));
    },
    onDrain() {
      listener.drains++;
    },
    onCloseFrame(code, reason) {
      frames.push({ code, reason });
    },
    onClose(info) {
      closed.resolve(info);
    },
  };
  return { listener, messages, chunks, closed: closed.promise, frames };
}

/** One frame from a client, unmasked. */
interface ClientFrame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Uint8Array;
}

/** Parse complete frames from `buf`; returns them and the bytes left over. */
function parseClientFrames(buf: Uint8Array): { frames: ClientFrame[]; rest: Uint8Array } {
  const frames: ClientFrame[] = [];
  let at = 0;
  for (;;) {
    if (buf.length - at < 2) break;
    const b0 = buf[at]!;
    const b1 = buf[at + 1]!;
    let len = b1 & 0x7f;
    let h = 2;
    if (len === 126) (len = (buf[at + 2]! << 8) | buf[at + 3]!), (h = 4);
    else if (len === 127) (len = Number(new DataView(buf.buffer, buf.byteOffset + at + 2, 8).getBigUint64(0))), (h = 10);
    const masked = (b1 & 0x80) !== 0;
    const total = h + (masked ? 4 : 0) + len;
    if (buf.length - at < total) break;
    const key = buf.subarray(at + h, at + h + 4);
    const payload = buf.slice(at + h + (masked ? 4 : 0), at + total);
    if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!;
    frames.push({ fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, masked, payload });
    at += total;
  }
  return { frames, rest: buf.slice(at) };
}

/** A server frame (unmasked unless `mask`). */
function serverFrame(opcode: number, payload: Uint8Array, { fin = true, mask = false } = {}): Uint8Array {
  const len = payload.length;
  const h = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = new Uint8Array(h + (mask ? 4 : 0) + len);
  out[0] = (fin ? 0x80 : 0) | opcode;
  if (len < 126) out[1] = len;
  else if (len < 65536) (out[1] = 126), (out[2] = len >> 8), (out[3] = len & 0xff);
  else (out[1] = 127), new DataView(out.buffer).setBigUint64(2, BigInt(len));
  if (mask) out[1]! |= 0x80;
  out.set(payload, h + (mask ? 4 : 0)); // mask key 0: the bytes are unchanged, only the bit is set
  return out;
}

/**
 * A raw TCP server: answers the upgrade with `respond(key, protocols)` and then lets `onOpen` write frames;
 * collects the client's frames.
 */
function rawServer(options: {
  respond?: (key: string, protocols: string) => string;
  onOpen?: (write: (bytes: Uint8Array) => void, end: () => void) => void;
}) {
  const clientFrames: ClientFrame[] = [];
  let ended = false;
  const respond =
    options.respond ??
    ((key: string) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`);
  const listener = Bun.listen<{ buf: Uint8Array; upgraded: boolean }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      binaryType: "uint8array",
      open(s) {
        s.data = { buf: new Uint8Array(0), upgraded: false };
      },
      data(s, chunk) {
        s.data.buf = Buffer.concat([s.data.buf, chunk]);
        if (!s.data.upgraded) {
          const text = dec.decode(s.data.buf);
          const end = text.indexOf("\r\n\r\n");
          if (end < 0) return;
          s.data.upgraded = true;
          const key = /sec-websocket-key: (.*)\r\n/i.exec(text)?.[1] ?? "";
          const protocols = /sec-websocket-protocol: (.*)\r\n/i.exec(text)?.[1] ?? "";
          s.data.buf = s.data.buf.slice(end + 4);
          s.write(respond(key, protocols));
          options.onOpen?.((b) => s.write(b), () => s.end());
        }
        const { frames, rest } = parseClientFrames(s.data.buf);
        s.data.buf = rest;
        clientFrames.push(...frames);
      },
      end(s) {
        ended = true;
        s.end();
      },
    },
  });
  return {
    url: `ws://127.0.0.1:${listener.port}/x`,
    clientFrames,
    get clientEnded() {
      return ended;
    },
    [Symbol.dispose]() {
      listener.stop(true);
    },
  };
}

describe("maskedFrame", () => {
  test.each([0, 1, 3, 4, 5, 124, 125, 126, 127, 65535, 65536, 100_003])("a %d-byte payload round-trips through the mask", (n) => {
    const payload = crypto.getRandomValues(new Uint8Array(Math.min(n, 65536)));
    const big = n > 65536 ? new Uint8Array(n).map((_, i) => i * 7) : payload;
    for (const prefix of [-1, 0]) {
      const { frames } = parseClientFrames(maskedFrame(2, big, prefix));
      expect(frames.length).toBe(1);
      expect(frames[0]!.masked).toBe(true);
      expect(frames[0]!.fin).toBe(true);
      const want = prefix >= 0 ? Buffer.concat([Uint8Array.of(prefix), big]) : Buffer.from(big);
      expect(Buffer.from(frames[0]!.payload).equals(want)).toBe(true);
    }
  });

  test("masking keys differ from frame to frame", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 50; i++) keys.add(Buffer.from(maskedFrame(2, new Uint8Array(8)).subarray(2, 6)).toString("hex"));
    expect(keys.size).toBe(50);
  });
});

describe("against Bun's WebSocket server (TLS)", () => {
  let server: ReturnType<typeof Bun.serve<{ protocol: string }>>;
  const seen: { auth: string | null; protocols: string | null }[] = [];
  beforeAll(() => {
    server = Bun.serve<{ protocol: string }>({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: certs.serverCert, key: certs.serverKey },
      fetch(req, srv) {
        seen.push({ auth: req.headers.get("authorization"), protocols: req.headers.get("sec-websocket-protocol") });
        const url = new URL(req.url);
        if (url.pathname === "/big") return srv.upgrade(req, { data: { protocol: "big" } }) ? undefined : new Response(null, { status: 500 });
        return srv.upgrade(req, { headers: { "Sec-WebSocket-Protocol": "two" }, data: { protocol: "two" } })
          ? undefined
          : new Response("no", { status: 500 });
      },
      websocket: {
        maxPayloadLength: 8 * 1024 * 1024,
        open(ws) {
          if (ws.data.protocol === "big") ws.send(new Uint8Array(3 * 1024 * 1024).map((_, i) => i & 0xff));
        },
        message(ws, m) {
          ws.send(m);
        },
      },
    });
  });
  afterAll(() => server.stop(true));

  test("handshake with a subprotocol and headers, then echo", async () => {
    const r = recorder();
    const ws = await connectWebSocket({
      url: `wss://127.0.0.1:${server.port}/echo`,
      protocols: ["one", "two"],
      headers: { Authorization: "Bearer abc" },
      tls: { ca: certs.ca },
      listener: r.listener,
    });
    expect(ws.protocol).toBe("two");
    expect(seen.at(-1)).toEqual({ auth: "Bearer abc", protocols: "one, two" });
    expect(ws.sendBinary(enc.encode("hello"), 7)).toBe(5);
    expect(ws.sendBinary(new Uint8Array(200_000).fill(9))).toBe(200_000);
    await waitFor(() => r.messages.length === 2, { what: "two echoes" });
    expect([...r.messages[0]!]).toEqual([7, ...enc.encode("hello")]);
    expect(r.messages[1]!.length).toBe(200_000);
    expect(r.messages[1]!.every((b) => b === 9)).toBe(true);
    ws.close();
    const info = await r.closed;
    expect(info).toEqual({ code: 1000, reason: "", clean: true });
  });

  test("a 3 MiB message arrives streamed in chunks, not reassembled", async () => {
    const r = recorder();
    await connectWebSocket({ url: `wss://127.0.0.1:${server.port}/big`, tls: { ca: certs.ca }, listener: r.listener });
    await waitFor(() => r.messages.length === 1, { what: "the big message" });
    expect(r.chunks.length).toBeGreaterThan(1);
    expect(r.chunks[0]!.start).toBe(true);
    expect(r.chunks.at(-1)!.end).toBe(true);
    expect(r.messages[0]!.every((b, i) => b === (i & 0xff))).toBe(true);
  });

  test("the server rejects an unmasked client frame (so masking is checked by the other suites)", async () => {
    const closed = Promise.withResolvers<void>();
    let got = "";
    const key = btoa("0123456789abcdef");
    const s = await Bun.connect({
      hostname: "127.0.0.1",
      port: server.port!,
      tls: { ca: certs.ca },
      socket: {
        open(sock) {
          sock.write(`GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
        },
        data(sock, d) {
          got += dec.decode(d);
          if (got.includes("\r\n\r\n") && !got.includes("sent")) {
            got += "sent";
            sock.write(serverFrame(2, enc.encode("unmasked")));
          }
        },
        close() {
          closed.resolve();
        },
      },
    });
    await closed.promise;
    s.terminate();
    expect(got.startsWith("HTTP/1.1 101")).toBe(true);
    expect(got).not.toContain("unmasked"); // not echoed: the connection was closed instead
  });

  test("a wrong CA fails the TLS handshake", async () => {
    const other = await (await import("../support/certs.ts")).createCertAuthority();
    const err = await connectWebSocket({ url: `wss://127.0.0.1:${server.port}/echo`, tls: { ca: other.cert }, listener: recorder().listener }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain("TLS handshake");
  });
});

describe("against a raw server", () => {
  test("a wrong Sec-WebSocket-Accept is refused", async () => {
    using srv = rawServer({ respond: () => "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n" });
    const err = await connectWebSocket({ url: srv.url, listener: recorder().listener }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebSocketHandshakeError);
    expect((err as WebSocketHandshakeError).status).toBe(101);
    expect((err as Error).message).toContain("Sec-WebSocket-Accept");
  });

  test("a subprotocol that was not offered is refused", async () => {
    using srv = rawServer({
      respond: (key) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\nSec-WebSocket-Protocol: evil\r\n\r\n`,
    });
    const err = await connectWebSocket({ url: srv.url, protocols: ["good"], listener: recorder().listener }).catch((e: unknown) => e);
    expect((err as Error).message).toContain('"evil", which was not offered');
  });

  test.each([
    ["Content-Length", `HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{"message":"no!"}`],
    ["chunked", `HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"mes\r\nc\r\nsage":"no!"}\r\n0\r\n\r\n`],
  ])("a refusal with a %s body carries status and body", async (_, response) => {
    using srv = rawServer({ respond: () => response });
    const err = (await connectWebSocket({ url: srv.url, listener: recorder().listener }).catch((e: unknown) => e)) as WebSocketHandshakeError;
    expect(err).toBeInstanceOf(WebSocketHandshakeError);
    expect([err.status, err.statusText, err.body]).toEqual([403, "Forbidden", '{"message":"no!"}']);
  });

  test("fragments with a ping between them; the ping is answered with a masked pong", async () => {
    using srv = rawServer({
      onOpen: (write) => {
        write(serverFrame(1, enc.encode("hel"), { fin: false }));
        write(serverFrame(9, enc.encode("p1")));
        write(serverFrame(0, enc.encode("lo "), { fin: false }));
        write(serverFrame(0, enc.encode("world")));
      },
    });
    const r = recorder();
    await connectWebSocket({ url: srv.url, listener: r.listener });
    await waitFor(() => r.messages.length === 1 && srv.clientFrames.length === 1, { what: "the message and the pong" });
    expect(dec.decode(r.messages[0])).toBe("hello world");
    expect(r.chunks.map((c) => [c.start, c.end, c.binary])).toEqual([[true, false, false], [false, false, false], [false, true, false]]);
    expect(srv.clientFrames[0]).toMatchObject({ opcode: 10, masked: true, fin: true });
    expect(dec.decode(srv.clientFrames[0]!.payload)).toBe("p1");
  });

  test("headers split byte by byte across reads", async () => {
    using srv = rawServer({
      onOpen: (write) => {
        const bytes = Buffer.concat([serverFrame(2, new Uint8Array(300).fill(1)), serverFrame(2, new Uint8Array(70_000).fill(2))]);
        void (async () => {
          for (let i = 0; i < 12; i++) {
            write(bytes.subarray(i, i + 1));
            await Bun.sleep(1); // separate reads on purpose: this test is about reassembling split headers
          }
          write(bytes.subarray(12));
        })();
      },
    });
    const r = recorder();
    await connectWebSocket({ url: srv.url, listener: r.listener });
    await waitFor(() => r.messages.length === 2, { what: "two messages" });
    expect(r.messages.map((m) => [m.length, m[0]])).toEqual([[300, 1], [70_000, 2]]);
  });

  test("a masked server frame is a protocol error: close 1002 and an EPROTO error", async () => {
    using srv = rawServer({ onOpen: (write) => write(serverFrame(2, enc.encode("x"), { mask: true })) });
    const r = recorder();
    await connectWebSocket({ url: srv.url, listener: r.listener, closeTimeoutMs: 200 });
    const info = await r.closed;
    expect(info.clean).toBe(false);
    expect((info.error as Error & { code: string }).code).toBe("EPROTO");
    expect(info.error!.message).toContain("masked");
    await waitFor(() => srv.clientFrames.length === 1, { what: "the close frame" });
    expect(srv.clientFrames[0]!.opcode).toBe(8);
    expect((srv.clientFrames[0]!.payload[0]! << 8) | srv.clientFrames[0]!.payload[1]!).toBe(1002);
    expect(r.messages.length).toBe(0);
  });

  test("a message over maxMessageBytes closes with 1009", async () => {
    using srv = rawServer({ onOpen: (write) => write(serverFrame(2, new Uint8Array(2000))) });
    const r = recorder();
    await connectWebSocket({ url: srv.url, listener: r.listener, maxMessageBytes: 1000, closeTimeoutMs: 200 });
    const info = await r.closed;
    expect(info.error!.message).toContain("longer than 1000 bytes");
    await waitFor(() => srv.clientFrames.length === 1, { what: "the close frame" });
    expect((srv.clientFrames[0]!.payload[0]! << 8) | srv.clientFrames[0]!.payload[1]!).toBe(1009);
  });

  test("the server's close frame is echoed; the connection closes cleanly", async () => {
    const payload = Buffer.concat([Uint8Array.of(0x03, 0xe8), enc.encode("bye")]);
    using srv = rawServer({ onOpen: (write) => write(serverFrame(8, payload)) });
    const r = recorder();
    await connectWebSocket({ url: srv.url, listener: r.listener });
    const info = await r.closed;
    expect(info).toEqual({ code: 1000, reason: "bye", clean: true });
    expect(r.frames).toEqual([{ code: 1000, reason: "bye" }]);
    expect(srv.clientFrames.map((f) => [f.opcode, [...f.payload]])).toEqual([[8, [0x03, 0xe8]]]);
    expect(srv.clientEnded).toBe(true); // the client half-closed TCP after its close frame
  });

  test("pause holds later messages until resume, in order", async () => {
    using srv = rawServer({ onOpen: (write) => write(Buffer.concat([1, 2, 3].map((n) => serverFrame(2, Uint8Array.of(n))))) });
    const got: number[] = [];
    let ws: Awaited<ReturnType<typeof connectWebSocket>> | undefined;
    const r = recorder();
    const listener: WebSocketListener = {
      ...r.listener,
      onOpen: (w) => void (ws = w),
      onMessage(chunk) {
        got.push(chunk[0]!);
        if (got.length === 1) ws!.pause();
      },
    };
    await connectWebSocket({ url: srv.url, listener });
    await waitFor(() => got.length === 1, { what: "the first message" });
    await Bun.sleep(20); // a negative check: nothing more may arrive while paused
    expect(got).toEqual([1]);
    ws!.resume();
    expect(got).toEqual([1]); // not within resume()
    await waitFor(() => got.length === 3, { what: "the held messages" });
    expect(got).toEqual([1, 2, 3]);
  });
});
