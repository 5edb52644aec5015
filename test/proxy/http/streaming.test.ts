/**
 * Large bodies through the HTTP forwarder: 1 GiB each way with matching SHA-256 and bounded RSS (the
 * gateway runs in a child process so its own peak RSS is measured), and backpressure (a client that stops reading stops the upstream; an upstream that stops reading stops
 * the client).
 */
import { expect, test } from "bun:test";
import { rt } from "../../../src/runtime/index.ts";
import type { TcpSocket } from "../../../src/runtime/types.ts";
import { bytes, concatBytes, endpoint, startProxy, text, waitFor } from "../../support/http-harness.ts";
import { GiB, MiB, Pump, SeededStream, startProxyChild } from "../../support/http-stream.ts";

const SIZE = GiB;

/** An upstream that answers one request by `onRequest` after its head arrives, passing later bytes to `onBody`. */
function streamUpstream(handlers: {
  onRequest(s: TcpSocket<unknown>, head: string, rest: Uint8Array): void;
  onBody?(s: TcpSocket<unknown>, chunk: Uint8Array): void;
  onDrain?(s: TcpSocket<unknown>): void;
}) {
  const sockets = new Set<TcpSocket<unknown>>();
  let head: Uint8Array | null = new Uint8Array(0);
  const listener = rt.listenTcp<unknown>({
    hostname: "127.0.0.1",
    port: 0,
    handlers: {
      open: (s) => void sockets.add(s),
      data: (s, chunk) => {
        if (head === null) return handlers.onBody?.(s, chunk);
        head = concatBytes(head, chunk);
        const t = text(head.subarray(0, Math.min(head.length, 16384)));
        const he = t.indexOf("\r\n\r\n");
        if (he < 0) return;
        const rest = head.subarray(he + 4);
        head = null;
        handlers.onRequest(s, t.slice(0, he + 4), rest);
      },
      drain: (s) => handlers.onDrain?.(s),
      end: (s) => s.end(),
      close: (s) => void sockets.delete(s),
    },
  });
  return {
    port: listener.port,
    sockets,
    async [Symbol.asyncDispose]() {
      listener.stop(true);
      for (const s of sockets) s.terminate();
    },
  };
}

/** A raw client socket whose events go to the given callbacks. */
async function connectClient(port: number, on: { data(chunk: Uint8Array): void; drain?(): void; close?(): void }) {
  const sock = await rt.connectTcp<null>({
    hostname: "127.0.0.1",
    port,
    data: null,
    handlers: { data: (_s, c) => on.data(c), drain: () => on.drain?.(), end: (s) => s.end(), close: () => on.close?.() },
  });
  return Object.assign(sock, { [Symbol.asyncDispose]: async () => sock.terminate() });
}

test("1 GiB request body streams to the upstream intact with bounded memory", async () => {
  const received = new Bun.CryptoHasher("sha256");
  let got = 0;
  const done = Promise.withResolvers<string>();
  await using up = streamUpstream({
    onRequest(s, head, rest) {
      expect(head).toContain(`Content-Length: ${SIZE}`);
      this.onBody!(s, rest);
    },
    onBody(s, chunk) {
      received.update(chunk);
      got += chunk.length;
      if (got === SIZE) {
        const hex = received.digest("hex");
        s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${hex.length}\r\n\r\n${hex}`));
      }
    },
  });
  await using px = await startProxyChild(up.port);
  const before = px.rss();
  let response = "";
  const source = new SeededStream(SIZE);
  let pump: Pump | undefined;
  await using client = await connectClient(px.port, {
    data: (c) => {
      response += text(c);
      if (/\r\n\r\n[0-9a-f]{64}$/.test(response)) done.resolve(response.slice(-64));
    },
    drain: () => pump?.onDrain(),
  });
  client.write(bytes(`POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: ${SIZE}\r\n\r\n`));
  pump = new Pump(client, source);
  pump.start();
  const upstreamHash = await done.promise;
  const peak = px.peakRss();
  expect(upstreamHash).toBe(source.hasher.digest("hex"));
  expect(got).toBe(SIZE);
  expect(response.startsWith("HTTP/1.1 200 OK\r\n")).toBe(true);
  expect(peak - before).toBeLessThan(64 * MiB);
}, 60_000);

test("1 GiB response body streams to the client intact with bounded memory", async () => {
  const source = new SeededStream(SIZE);
  let pump: Pump | undefined;
  await using up = streamUpstream({
    onRequest(s) {
      s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${SIZE}\r\n\r\n`));
      pump = new Pump(s, source);
      pump.start();
    },
    onDrain: () => pump?.onDrain(),
  });
  await using px = await startProxyChild(up.port);
  const before = px.rss();
  const received = new Bun.CryptoHasher("sha256");
  let head: string | null = "";
  let got = 0;
  const done = Promise.withResolvers<void>();
  await using client = await connectClient(px.port, {
    data: (c) => {
      if (head !== null) {
        head += text(c);
        const he = head.indexOf("\r\n\r\n");
        if (he < 0) return;
        c = c.subarray(c.length - (head.length - he - 4));
        head = null;
      }
      received.update(c);
      got += c.length;
      if (got >= SIZE) done.resolve();
    },
  });
  client.write(bytes("GET /download HTTP/1.1\r\nHost: h\r\n\r\n"));
  await done.promise;
  const peak = px.peakRss();
  expect(got).toBe(SIZE);
  expect(received.digest("hex")).toBe(source.hasher.digest("hex"));
  expect(peak - before).toBeLessThan(64 * MiB);
}, 60_000);

/** Wait until a pump has been blocked with no progress for a while (socket buffers full). */
async function stalled(pump: () => Pump | undefined): Promise<number> {
  let last = -1;
  let stableSince = Date.now();
  await waitFor(() => {
    const p = pump();
    if (!p) return false;
    if (p.written !== last || !p.blocked) {
      last = p.written;
      stableSince = Date.now();
      return false;
    }
    return Date.now() - stableSince > 300;
  }, "the sender to stall", 10_000);
  return last;
}

test("a client that stops reading stops the upstream: the gateway does not buffer the body", async () => {
  const total = 512 * MiB;
  const source = new SeededStream(total);
  let pump: Pump | undefined;
  await using up = streamUpstream({
    onRequest(s) {
      s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${total}\r\n\r\n`));
      pump = new Pump(s, source);
      pump.start();
    },
    onDrain: () => pump?.onDrain(),
  });
  await using px = startProxy([endpoint(up.port)]);
  let got = 0;
  const done = Promise.withResolvers<void>();
  await using client = await connectClient(px.port, {
    data: (c) => {
      got += c.length;
      if (got >= total) done.resolve();
    },
  });
  client.pause();
  client.write(bytes("GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
  const upstreamWrote = await stalled(() => pump);
  // Only kernel socket buffers (and at most a chunk in the gateway) hold the unread bytes.
  expect(upstreamWrote).toBeLessThan(16 * MiB);
  client.resume();
  await done.promise;
  expect(got).toBe(total + `HTTP/1.1 200 OK\r\nContent-Length: ${total}\r\n\r\n`.length);
}, 30_000);

test("an upstream that stops reading stops the client's upload", async () => {
  const total = 512 * MiB;
  let upstreamSocket: TcpSocket<unknown> | undefined;
  let got = 0;
  const done = Promise.withResolvers<void>();
  await using up = streamUpstream({
    onRequest(s, _head, rest) {
      upstreamSocket = s;
      s.pause();
      got += rest.length;
    },
    onBody(s, chunk) {
      got += chunk.length;
      if (got === total) {
        s.write(bytes("HTTP/1.1 204 No Content\r\n\r\n"));
        done.resolve();
      }
    },
  });
  await using px = startProxy([endpoint(up.port)]);
  const source = new SeededStream(total);
  let pump: Pump | undefined;
  await using client = await connectClient(px.port, { data: () => {}, drain: () => pump?.onDrain() });
  client.write(bytes(`PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: ${total}\r\n\r\n`));
  pump = new Pump(client, source);
  pump.start();
  const clientWrote = await stalled(() => pump);
  expect(clientWrote).toBeLessThan(16 * MiB);
  upstreamSocket!.resume();
  await done.promise;
  expect(got).toBe(total);
}, 30_000);
