/**
 * HTTP/1.1 clients of an h2c listener (src/proxy/h2/http1.ts): their requests go upstream as HTTP/2 streams to
 * h2c-only endpoints (sessions of the frame layer, harness.ts), balanced each. Bodies of 2 MiB both ways
 * (Content-Length and chunked), keep-alive, pipelining, HEAD, trailers, malformed requests, gateway errors, and
 * curl over HTTP/1.1 and over `Upgrade: h2c`.
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FLAG_END_STREAM, HEADERS, SETTINGS } from "../../../src/proxy/h2/frames.ts";
import { HpackDecoder } from "../../../src/proxy/h2/hpack.ts";
import type { H2Stream, HeaderList } from "../../../src/proxy/h2/session.ts";
import { endpoint } from "../../support/entrypoints.ts";
import { concatBytes, header, RawClient, text } from "../../support/http-harness.ts";
import { REFUSED_PORT } from "../../support/ports.ts";
import { waitFor } from "../../support/wait.ts";
import { h2Server, holdingServer, StreamLog, type TestServer } from "./harness.ts";
import { run, startH2Proxy } from "./proxy-harness.ts";

const MiB = 1024 * 1024;

/** An h2c-only upstream that echoes each request's body once it ended; `seen` has every request head it got. */
function echoServer(name: string): TestServer & { readonly seen: HeaderList[] } {
  const seen: HeaderList[] = [];
  const server = h2Server({}, () => ({
    stream(stream, headers, endStream) {
      seen.push(headers);
      const log = new StreamLog();
      stream.handlers = log;
      if (endStream) answer(stream, headers, log);
      else log.onEnd = (s) => answer(s, headers, log);
    },
  }));
  /**
   * 200 with `x-server` and the body echoed: with content-length when the request has `x-with-length`, then
   * trailers when it has `x-trailers`; HEAD gets a content-length and no body.
   */
  function answer(s: H2Stream, headers: HeaderList, log: StreamLog): void {
    const has = (n: string) => headers.some(([k]) => k === n);
    const body = Buffer.concat(log.chunks);
    const head: [string, string][] = [
      [":status", "200"],
      ["x-server", name],
    ];
    if (headers.some(([k, v]) => k === ":method" && v === "HEAD")) return s.sendHeaders([...head, ["content-length", "123"]], true);
    if (has("x-with-length")) head.push(["content-length", String(body.length)]);
    s.sendHeaders(head, false);
    const trailers = has("x-trailers");
    s.sendData(body, !trailers);
    if (trailers) s.sendTrailers([["grpc-status", "0"], ["x-bytes", String(body.length)]]);
  }
  return Object.assign(server, { seen });
}

/** A temporary directory, removed on dispose. */
async function tempDir(): Promise<{ readonly path: string } & AsyncDisposable> {
  const path = await mkdtemp(join(tmpdir(), "kubegate-h1-"));
  return { path, [Symbol.asyncDispose]: () => rm(path, { recursive: true, force: true }) };
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("HTTP/1.1 clients of an h2c listener, served by h2c upstreams", () => {
  test("GET, and POST of 2 MiB with Content-Length and chunked: echoed as Content-Length and chunked (curl --http1.1)", async () => {
    await using up = echoServer("a");
    await using px = startH2Proxy([endpoint(up.port)]);
    await using dir = await tempDir();
    const body = crypto.getRandomValues(new Uint8Array(2 * MiB / 4)).buffer;
    const big = new Uint8Array(2 * MiB);
    for (let i = 0; i < 4; i++) big.set(new Uint8Array(body), i * (MiB / 2));
    await writeFile(join(dir.path, "req.bin"), big);
    const url = `http://127.0.0.1:${px.port}`;
    const curl = (out: string, ...args: string[]) =>
      run("curl", ["-sS", "--http1.1", "-o", join(dir.path, out), "-w", "%{http_code} %{http_version} %{size_download}\\n", ...args]);

    const get = await curl("get.bin", `${url}/get?x=1`);
    expect(get.out).toBe("200 1.1 0\n");
    expect(up.seen[0]!.slice(0, 4)).toEqual([
      [":method", "GET"],
      [":scheme", "http"],
      [":authority", `127.0.0.1:${px.port}`],
      [":path", "/get?x=1"],
    ]);

    const withLength = await curl("cl.bin", "-H", "x-with-length: 1", "--data-binary", `@${join(dir.path, "req.bin")}`, `${url}/cl`);
    expect(withLength.out).toBe(`200 1.1 ${2 * MiB}\n`);
    expect(sha(await readFile(join(dir.path, "cl.bin")))).toBe(sha(big));
    expect(up.seen[1]).toContainEqual(["content-length", String(2 * MiB)]);

    const chunked = await curl("chunked.bin", "-H", "transfer-encoding: chunked", "--data-binary", `@${join(dir.path, "req.bin")}`, `${url}/chunked`);
    expect(chunked.out).toBe(`200 1.1 ${2 * MiB}\n`);
    expect(sha(await readFile(join(dir.path, "chunked.bin")))).toBe(sha(big));
    // Connection-specific fields are not forwarded; Expect: 100-continue (curl's, for a big body) is answered here.
    const names = up.seen[2]!.map(([n]) => n);
    expect(names).not.toContain("transfer-encoding");
    expect(names).not.toContain("expect");
    expect(names).not.toContain("host");
  });

  test("keep-alive: two requests on one connection, each balanced (one per endpoint); fields mapped to HTTP/2", async () => {
    await using a = echoServer("a");
    await using b = echoServer("b");
    await using px = startH2Proxy([endpoint(a.port), endpoint(b.port)]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /first HTTP/1.1\r\nHost: example.test\r\nX-Custom: One\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\r\n");
    const first = await c.readResponse();
    c.send("POST http://abs.example/second?q HTTP/1.1\r\nHost: ignored.test\r\nContent-Length: 5\r\n\r\nhello");
    const second = await c.readResponse();
    expect([first.status, header(first, "x-server"), second.status, second.body, header(second, "x-server")]).toEqual([200, "a", 200, "hello", "b"]);
    expect(a.seen).toEqual([
      [
        [":method", "GET"],
        [":scheme", "http"],
        [":authority", "example.test"],
        [":path", "/first"],
        ["x-custom", "One"],
        ["te", "trailers"],
      ],
    ]);
    expect(b.seen[0]!.slice(0, 4)).toEqual([
      [":method", "POST"],
      [":scheme", "http"],
      [":authority", "abs.example"],
      [":path", "/second?q"],
    ]);
    expect(c.closed).toBe(false);
    expect(px.proxy.active()).toBe(1);
    expect([a.sessions.length, b.sessions.length]).toEqual([1, 1]);
  });

  test("pipelined requests are answered in order; Connection: close closes after its response", async () => {
    await using up = echoServer("a");
    await using px = startH2Proxy([endpoint(up.port)]);
    await using c = await RawClient.connect(px.port);
    c.send("POST /1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none" + "GET /2 HTTP/1.1\r\nHost: t\r\n\r\n" + "POST /3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nthree\r\n0\r\n\r\n");
    const r = [await c.readResponse(), await c.readResponse(), await c.readResponse()];
    expect(r.map((x) => [x.status, x.body])).toEqual([
      [200, "one"],
      [200, ""],
      [200, "three"],
    ]);
    expect(header(r[2]!, "connection")).toBe("close");
    await c.whenClosed;
    expect(up.seen.map((h) => h.find(([n]) => n === ":path")![1])).toEqual(["/1", "/2", "/3"]);
  });

  test("HTTP/1.0: a body without a length is delimited by the close; keep-alive when asked, with a length", async () => {
    await using up = echoServer("a");
    await using px = startH2Proxy([endpoint(up.port)]);
    await using kept = await RawClient.connect(px.port);
    kept.send("POST /k HTTP/1.0\r\nConnection: keep-alive\r\nx-with-length: 1\r\nContent-Length: 2\r\n\r\nhi");
    const k = await kept.readResponse();
    expect([k.status, k.body, header(k, "connection")]).toEqual([200, "hi", "keep-alive"]);
    kept.send("POST /c HTTP/1.0\r\nContent-Length: 3\r\n\r\nbye");
    await kept.whenClosed;
    const c = await kept.readResponse();
    expect([c.status, c.body, header(c, "connection"), header(c, "transfer-encoding")]).toEqual([200, "bye", "close", undefined]);
    // No Host: no :authority.
    expect(up.seen[1]!.filter(([n]) => n.startsWith(":"))).toEqual([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/c"],
    ]);
  });

  test("HEAD: the upstream's content-length, no body; the connection goes on", async () => {
    await using up = echoServer("a");
    await using px = startH2Proxy([endpoint(up.port)]);
    await using c = await RawClient.connect(px.port);
    c.send("HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    const head = await c.readResponse({ head: true });
    expect([head.status, header(head, "content-length")]).toEqual([200, "123"]);
    c.send("GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    const next = await c.readResponse();
    expect([next.status, next.body]).toEqual([200, ""]);
    expect(c.unread).toBe("");
  });

  test("trailers: chunked trailers for a client that sent TE: trailers, dropped for one that did not", async () => {
    await using up = echoServer("a");
    await using px = startH2Proxy([endpoint(up.port)]);
    await using c = await RawClient.connect(px.port);
    c.send("POST /t HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nX-Trailers: 1\r\nContent-Length: 2\r\n\r\nhi");
    const withTe = await c.readResponse();
    expect([withTe.status, header(withTe, "transfer-encoding"), withTe.body]).toEqual([200, "chunked", "hi"]);
    expect(withTe.rawBody).toBe("2\r\nhi\r\n0\r\ngrpc-status: 0\r\nx-bytes: 2\r\n\r\n");
    c.send("POST /t HTTP/1.1\r\nHost: t\r\nX-Trailers: 1\r\nContent-Length: 2\r\n\r\nhi");
    const without = await c.readResponse();
    expect(without.rawBody).toBe("2\r\nhi\r\n0\r\n\r\n");
  });

  test("a malformed request: 400 with x-kubegate-reason, the connection closes, nothing goes upstream", async () => {
    await using up = echoServer("a");
    await using px = startH2Proxy([endpoint(up.port)]);
    await using c = await RawClient.connect(px.port);
    c.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    const res = await c.readResponse();
    expect([res.status, header(res, "x-kubegate-reason")]).toEqual([400, "bad_request"]);
    await c.whenClosed;
    await using bad = await RawClient.connect(px.port);
    bad.send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    expect((await bad.readResponse()).status).toBe(400);
    await bad.whenClosed;
    expect(up.seen.length).toBe(0);
  });

  test("gateway errors: 503 no_endpoints and 502 connect_failed with x-kubegate-reason, the connection kept", async () => {
    await using px = startH2Proxy([]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    const none = await c.readResponse();
    expect([none.status, header(none, "x-kubegate-reason")]).toEqual([503, "no_endpoints"]);
    px.setEndpoints([endpoint(REFUSED_PORT)]);
    c.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    const refused = await c.readResponse();
    expect([refused.status, header(refused, "x-kubegate-reason")]).toEqual([502, "connect_failed"]);
    expect(c.closed).toBe(false);
  });

  test("a request body the upstream does not take pauses the client (backpressure), then flows once it does", async () => {
    const { server, streams } = holdingServer({ initialWindowSize: 64 * 1024 }, false);
    await using _ = server;
    await using px = startH2Proxy([endpoint(server.port)]);
    await using c = await RawClient.connect(px.port);
    const size = 32 * MiB;
    c.send(`PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: ${size}\r\n\r\n`);
    let sent = 0;
    let blocked = false;
    const chunk = new Uint8Array(64 * 1024).fill(7);
    const pump = () => {
      blocked = false;
      while (sent < size) {
        const want = Math.min(chunk.length, size - sent);
        const n = c.socket.write(chunk.subarray(0, want));
        if (n > 0) sent += n;
        if (n < want) {
          blocked = true;
          return;
        }
      }
    };
    c.ondrain = pump;
    pump();
    // The upstream has its window's worth and takes no more; the proxy stops reading, so the client's writes block.
    await waitFor(() => streams[0]?.log.received === 64 * 1024 && blocked, { what: "the upstream's window to fill", timeoutMs: 10_000 });
    // Held: the client's writes stay blocked (no drain: what it sent stops growing over a few polls).
    let last = -1;
    let still = 0;
    await waitFor(() => (sent === last ? ++still >= 5 : ((last = sent), (still = 0), false)), { what: "the client to be held", intervalMs: 50, timeoutMs: 10_000 });
    expect(sent).toBeLessThan(size / 2);
    const { stream, log } = streams[0]!;
    log.consume = true;
    log.release(stream);
    await waitFor(() => log.ended, { what: "the whole body upstream", timeoutMs: 20_000 });
    expect(log.received).toBe(size);
    stream.sendHeaders([[":status", "200"]], false);
    stream.sendData(new TextEncoder().encode("done"), true);
    const res = await c.readResponse();
    expect([res.status, res.body]).toEqual([200, "done"]);
  }, 30_000);

  test("drain: an idle client is closed at once, one with a request in flight gets its response with Connection: close", async () => {
    const { server, streams } = holdingServer();
    await using _ = server;
    await using px = startH2Proxy([endpoint(server.port)]);
    await using idle = await RawClient.connect(px.port);
    idle.send("GET /idle HTTP/1.1\r\nHost: t\r\n\r\n");
    await using busy = await RawClient.connect(px.port);
    await waitFor(() => streams.length === 1, { what: "the first request upstream" });
    streams[0]!.stream.sendHeaders([[":status", "204"]], true);
    expect((await idle.readResponse()).status).toBe(204);
    busy.send("GET /busy HTTP/1.1\r\nHost: t\r\n\r\n");
    await waitFor(() => streams.length === 2, { what: "the second request upstream" });
    const drained = px.proxy.drain();
    await idle.whenClosed;
    expect(busy.closed).toBe(false);
    streams[1]!.stream.sendHeaders([[":status", "200"], ["content-length", "2"]], false);
    streams[1]!.stream.sendData(new TextEncoder().encode("ok"), true);
    const res = await busy.readResponse();
    expect([res.status, res.body, header(res, "connection")]).toEqual([200, "ok", "close"]);
    await busy.whenClosed;
    await drained;
  });

  test("Upgrade: h2c: 101, then HTTP/2 with the request as stream 1 and its HTTP2-Settings applied; a bad one is served as HTTP/1.1", async () => {
    await using up = echoServer("a");
    await using px = startH2Proxy([endpoint(up.port)]);
    const upgrade = (path: string, settings: string) =>
      `GET ${path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: ${settings}\r\n\r\n`;
    await using bad = await RawClient.connect(px.port);
    bad.send(upgrade("/plain", "not*base64"));
    const plain = await bad.readResponse();
    expect([plain.status, header(plain, "x-server")]).toEqual([200, "a"]);

    await using c = await RawClient.connect(px.port);
    // SETTINGS_HEADER_TABLE_SIZE 0: the server's first field block must start with a table size update to 0.
    c.send(upgrade("/up", "AAEAAAAA"));
    const SWITCH = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    await waitFor(() => c.data.length >= SWITCH.length, { what: "the 101" });
    expect(text(c.data.subarray(0, SWITCH.length))).toBe(SWITCH);
    c.send(concatBytes(new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Uint8Array.of(0, 0, 0, 4, 0, 0, 0, 0, 0)));
    // The frames after the 101, up to the end of stream 1.
    const frames = await waitFor(
      () => {
        const d = c.data;
        const out: { type: number; flags: number; id: number; payload: Uint8Array }[] = [];
        for (let at = SWITCH.length; at + 9 <= d.length; ) {
          const len = (d[at]! << 16) | (d[at + 1]! << 8) | d[at + 2]!;
          if (at + 9 + len > d.length) break;
          out.push({ type: d[at + 3]!, flags: d[at + 4]!, id: new DataView(d.buffer, d.byteOffset + at + 5, 4).getUint32(0) & 0x7fff_ffff, payload: d.slice(at + 9, at + 9 + len) });
          at += 9 + len;
        }
        return out.some((f) => f.id === 1 && (f.flags & FLAG_END_STREAM) !== 0) && out;
      },
      { what: "the response on stream 1" },
    );
    expect(frames[0]!.type).toBe(SETTINGS);
    const head = frames.find((f) => f.id === 1 && f.type === HEADERS)!;
    expect(head.payload[0]).toBe(0x20);
    const fields = new HpackDecoder({}).decode(head.payload);
    expect(fields).toContainEqual([":status", "200"]);
    expect(fields).toContainEqual(["x-server", "a"]);
    expect(up.seen.map((h) => h.find(([n]) => n === ":path")![1])).toEqual(["/plain", "/up"]);
  });

  test("curl --http1.1 and curl --http2 (Upgrade: h2c) are both answered by the h2c upstream", async () => {
    await using up = echoServer("a");
    await using px = startH2Proxy([endpoint(up.port)]);
    const url = `http://127.0.0.1:${px.port}`;
    const h1 = await run("curl", ["-sS", "--http1.1", "-w", " %{http_version}", `${url}/h1`]);
    expect(h1.out).toBe(" 1.1");
    // curl reports version 2 only once the server switched protocols (101) and answered on stream 1.
    const h2 = await run("curl", ["-sS", "--http2", "-H", "x-with-length: 1", "-w", " %{http_version}", `${url}/h2`, `${url}/h2-again`]);
    expect(h2.out).toBe(" 2 2");
    expect(up.seen.map((h) => h.find(([n]) => n === ":path")![1])).toEqual(["/h1", "/h2", "/h2-again"]);
    // The upgraded request lost its connection-specific fields (HTTP2-Settings, Upgrade, Connection).
    const names = up.seen[1]!.map(([n]) => n);
    expect(names.filter((n) => ["http2-settings", "upgrade", "connection", "host"].includes(n))).toEqual([]);
    await waitFor(() => px.proxy.active() === 0, { what: "curl's connections to close" });
  });
});
