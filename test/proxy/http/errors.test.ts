/** What the HTTP forwarder answers itself: malformed and smuggling requests, missing or failing upstreams, timeouts. */
import { describe, expect, test } from "bun:test";
import { bytes, header, RawClient, RawUpstream, refusedEndpoint, startProxy, text, waitFor } from "../../support/http-harness.ts";
import { Pump } from "../../support/http-stream.ts";

/** Send `request` in one write; return the response and check the connection closes and the upstream saw nothing. */
async function rejected(request: string, options: Parameters<typeof startProxy>[1] = {}) {
  await using up = new RawUpstream();
  await using px = startProxy([up.endpoint], options);
  await using c = await RawClient.connect(px.port);
  c.send(request);
  const r = await c.readResponse();
  await c.whenClosed;
  return { status: r.status, connection: header(r, "connection"), body: r.body, upstreamBytes: up.received.length, upstreamAccepts: up.accepts };
}

const H = "Host: h\r\n";

describe("malformed and ambiguous requests are refused before anything reaches the upstream", () => {
  const cases: [string, string, number][] = [
    ["Content-Length with Transfer-Encoding", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
    ["Transfer-Encoding with Content-Length", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`, 400],
    ["duplicate equal Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`, 400],
    ["duplicate different Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`, 400],
    ["Content-Length list", `POST / HTTP/1.1\r\n${H}Content-Length: 5, 5\r\n\r\nhello`, 400],
    ["signed Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello`, 400],
    ["negative Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`, 400],
    ["hex Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length: 0x5\r\n\r\nhello`, 400],
    ["empty Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length:\r\n\r\n`, 400],
    ["huge Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length: 99999999999999999999\r\n\r\n`, 400],
    ["bad chunk size", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`, 400],
    ["chunk size with leading space", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n`, 400],
    ["chunk size with 0x prefix", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n`, 400],
    ["chunk size overflow", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n`, 400],
    ["chunk data longer than its size", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n`, 400],
    ["chunk size line ended by bare LF", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n`, 400],
    ["obs-fold", `GET / HTTP/1.1\r\n${H}X-A: a\r\n  b\r\n\r\n`, 400],
    ["space before colon", `GET / HTTP/1.1\r\nHost : h\r\n\r\n`, 400],
    ["tab before colon", `GET / HTTP/1.1\r\n${H}Content-Length\t: 0\r\n\r\n`, 400],
    ["bare LF line endings", `GET / HTTP/1.1\nHost: h\n\n`, 400],
    ["one bare LF among CRLFs", `GET / HTTP/1.1\r\n${H}X-A: a\nX-B: b\r\n\r\n`, 400],
    ["bare CR in a field value", `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`, 400],
    ["NUL in a field value", `GET / HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`, 400],
    ["Transfer-Encoding: gzip, chunked", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, 400],
    ["Transfer-Encoding: chunked, chunked", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n`, 400],
    ["Transfer-Encoding twice", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
    ["Transfer-Encoding: identity", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\n\r\n`, 400],
    ["Transfer-Encoding: xchunked", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`, 400],
    ["Transfer-Encoding in HTTP/1.0", `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
    ["missing Host in HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400],
    ["two Host fields", `GET / HTTP/1.1\r\n${H}${H}\r\n`, 400],
    ["Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400],
    ["Host with a quote", 'GET / HTTP/1.1\r\nHost: a"b\r\n\r\n', 400],
    ["invalid method character", `GE(T / HTTP/1.1\r\n${H}\r\n`, 400],
    ["space in the target", `GET /a b HTTP/1.1\r\n${H}\r\n`, 400],
    ["lowercase version", `GET / http/1.1\r\n${H}\r\n`, 400],
    ["target that is no URI form", `GET example.com HTTP/1.1\r\n${H}\r\n`, 400],
    ["userinfo in an absolute-form target", `GET http://user@h/ HTTP/1.1\r\n${H}\r\n`, 400],
    ["whitespace before the first field", `GET / HTTP/1.1\r\n ${H}\r\n`, 400],
    ["HTTP/2.0 request line", `GET / HTTP/2.0\r\n${H}\r\n`, 505],
    ["CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405],
  ];
  test.each(cases)("%s", async (_name, request, status) => {
    const r = await rejected(request);
    expect(r).toMatchObject({ status, connection: "close", upstreamBytes: 0, upstreamAccepts: 0 });
  });

  test("a head larger than maxHeaderBytes gets 431", async () => {
    const r = await rejected(`GET / HTTP/1.1\r\n${H}X-Big: ${"a".repeat(2000)}\r\n\r\n`, { maxHeaderBytes: 1024 });
    expect(r).toMatchObject({ status: 431, connection: "close", upstreamBytes: 0 });
  });

  test("an endless head gets 431 without waiting for its end", async () => {
    const r = await rejected(`GET / HTTP/1.1\r\n${H}X-Big: ${"a".repeat(5000)}`, { maxHeaderBytes: 1024 });
    expect(r).toMatchObject({ status: 431, connection: "close", upstreamBytes: 0 });
  });

  test("the error body says what was wrong", async () => {
    const r = await rejected(`POST / HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 1\r\n\r\nx`);
    expect(r.body).toBe("Bad request: duplicate Content-Length field\n");
  });

  test("a framing error later in a chunked body stops it there and closes both connections", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(`POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n`);
    await waitFor(() => text(up.received).endsWith("3\r\nabc\r\n"), "the first chunk upstream");
    c.send("3\r\ndefX\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await c.readResponse();
    expect(r.status).toBe(400);
    await c.whenClosed;
    await waitFor(() => up.sockets.size === 0, "the upstream connection to close");
    expect(text(up.received)).not.toContain("def");
    expect(up.requests).toEqual([]);
  });
});

describe("upstream failures", () => {
  test("503 names the service when it has no endpoints, and keeps the connection", async () => {
    await using px = startProxy([]);
    await using c = await RawClient.connect(px.port);
    for (let i = 0; i < 2; i++) {
      c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
      const r = await c.readResponse();
      expect({ status: r.status, body: r.body, conn: header(r, "connection") }).toEqual({
        status: 503,
        body: 'no endpoints available for service "default/web:http"\n',
        conn: undefined,
      });
    }
  });

  test("503 closes HTTP/1.0 and body-carrying requests' connections", async () => {
    await using px = startProxy([]);
    for (const request of ["GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"]) {
      await using c = await RawClient.connect(px.port);
      c.send(request);
      const r = await c.readResponse();
      expect({ status: r.status, conn: header(r, "connection") }).toEqual({ status: 503, conn: "close" });
      await c.whenClosed;
    }
  });

  test("502 when every connect attempt is refused, after trying distinct endpoints", async () => {
    // Three distinct endpoints that refuse (port 1 on 127.0.0.1, .2 and .3).
    await using px = startProxy([0, 1, 2].map((n) => refusedEndpoint(n)), { connectAttempts: 3 });
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await c.readResponse();
    expect({ status: r.status, body: r.body }).toEqual({
      status: 502,
      body: 'Bad gateway: no endpoint of service "default/web:http" accepted a connection (3 tried)\n',
    });
    await c.whenClosed;
  });

  test("a refused endpoint is skipped for a working one", async () => {
    await using up = new RawUpstream("live");
    await using px = startProxy([refusedEndpoint(), up.endpoint]);
    const r = await fetch(`${px.url}/x`);
    expect(await r.text()).toBe("live GET /x");
  });

  test("504 when the response head does not arrive in time", async () => {
    await using up = new RawUpstream("up", () => {});
    await using px = startProxy([up.endpoint], { responseHeaderTimeoutMs: 150 });
    await using c = await RawClient.connect(px.port);
    const t0 = Date.now();
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await c.readResponse();
    expect(r.status).toBe(504);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    await c.whenClosed;
    await waitFor(() => up.sockets.size === 0, "the upstream connection to close");
  });

  test("502 when the upstream closes without a response", async () => {
    await using up = new RawUpstream("up", (_req, s) => s.end());
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).status).toBe(502);
    await c.whenClosed;
  });

  test.each([
    ["garbage", "HTTP/1.1 2OO OK\r\n\r\n"],
    ["Content-Length with Transfer-Encoding", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
    ["duplicate Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"],
    ["bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"],
    ["bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n"],
  ])("502 for an invalid response: %s", async (_name, response) => {
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes(response)));
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).status).toBe(502);
    await c.whenClosed;
  });

  test("an upstream that closes mid-body makes the client connection fail, not look complete", async () => {
    await using up = new RawUpstream("up", (_req, s) => {
      s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"));
      setTimeout(() => s.end(), 5);
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.whenClosed;
    expect(c.unread).toBe("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  });
});

describe("client timeouts", () => {
  test("408 when a request head trickles in too slowly (slowloris)", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { requestHeaderTimeoutMs: 150 });
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\n");
    const sender = setInterval(() => !c.closed && c.send("X-Slow: 1\r\n"), 20);
    try {
      const r = await c.readResponse();
      expect(r.status).toBe(408);
      await c.whenClosed;
    } finally {
      clearInterval(sender);
    }
    expect(up.received.length).toBe(0);
  });

  test("a connection that sends nothing is closed without a response", async () => {
    await using px = startProxy([], { requestHeaderTimeoutMs: 100 });
    await using c = await RawClient.connect(px.port);
    await c.whenClosed;
    expect(c.unread).toBe("");
  });

  test("an idle keep-alive connection is closed after idleTimeoutMs", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { idleTimeoutMs: 150 });
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.readResponse();
    const t0 = Date.now();
    await c.whenClosed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
  });
});

describe("closing without losing the answer", () => {
  test("a 400 reaches a client that is still sending", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    let left = 8;
    const junk = new Uint8Array(512 * 1024).fill(120);
    const pump = new Pump(c.socket, { next: () => (left-- === 8 ? bytes(`POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n`) : left >= 0 ? junk : null) });
    c.ondrain = () => pump.onDrain();
    pump.start();
    const r = await c.readResponse();
    expect({ status: r.status, body: r.body }).toEqual({ status: 400, body: "Bad request: duplicate Content-Length field\n" });
    await c.whenClosed;
    expect(up.received.length).toBe(0);
  });

  test("an early upstream answer reaches curl while it is still uploading", async () => {
    await using up = new RawUpstream("up", () => {}, (_head, s) => {
      s.write(bytes("HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n\r\ntoo big!"));
    });
    await using px = startProxy([up.endpoint]);
    const proc = Bun.spawn(["curl", "-sS", "-H", "Expect:", "--data-binary", "@-", `${px.url}/upload`], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    proc.stdin.write(new Uint8Array(8 * 1024 * 1024));
    void proc.stdin.end();
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect({ out, err, code }).toEqual({ out: "too big!", err: "", code: 0 });
  });

  test("after an error the gateway shuts its side, discards input until the client closes, then gives up", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { idleTimeoutMs: 300 });
    await using c = await RawClient.connect(px.port, "127.0.0.1", false);
    c.send(`POST / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\nmore body bytes`);
    expect((await c.readResponse()).status).toBe(400);
    await waitFor(() => c.eof, "the gateway's FIN");
    // Still open for reading: more bytes are taken (and dropped) without a reset.
    c.send("still sending");
    expect({ closed: c.closed, active: px.proxy.active() }).toEqual({ closed: false, active: 1 });
    await c.whenClosed;
    expect({ unread: c.unread, upstreamBytes: up.received.length }).toEqual({ unread: "", upstreamBytes: 0 });
  });
});
