/**
 * HTTP/1.1 clients of an h2c listener: a connection whose first bytes are not the HTTP/2 preface is served as
 * HTTP/1.1 (each request goes to the backend as an HTTP/2 call, `src/proxy/h2/http1.ts`). Kept-alive
 * requests, a head split over writes, garbage, clients that stall before the protocol is known, and the listener's
 * connection limit. The backend speaks HTTP/1.1 and h2c on one port, so what the client sees is asserted, whichever
 * protocol the proxy forwards in.
 */
import { describe, expect, test } from "bun:test";
import { H2Session, type H2Stream, type HeaderList } from "../../../src/proxy/h2/session.ts";
import { rt } from "../../../src/runtime/index.ts";
import type { TcpSocket } from "../../../src/runtime/types.ts";
import { endpoint } from "../../support/entrypoints.ts";
import { concatBytes, RawClient, text } from "../../support/http-harness.ts";
import { waitFor } from "../../support/wait.ts";
import { h2Client, StreamLog } from "./harness.ts";
import { run, startH2Proxy } from "./proxy-harness.ts";

const enc = new TextEncoder();
const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/** A backend connection: sniffing, then HTTP/1.1 (buffered bytes) or an HTTP/2 session. */
interface BackendConn {
  readonly index: number;
  buf: Uint8Array;
  h2: H2Session | null;
  h1: boolean;
}

/**
 * A backend on 127.0.0.1:0 that speaks HTTP/1.1 (Content-Length bodies, kept alive) and h2c with prior knowledge
 * on one port, as the proxy does (it sniffs the preface). Every request is answered 200
 * `<method> <path> <body bytes>`; `requests` records each one's protocol and connection (accept order).
 */
function backend() {
  const requests: { protocol: "HTTP/1.1" | "HTTP/2"; conn: number }[] = [];
  let accepted = 0;
  const h2Request = (conn: number) => (stream: H2Stream, headers: HeaderList, endStream: boolean) => {
    requests.push({ protocol: "HTTP/2", conn });
    const field = (n: string) => headers.find(([k]) => k === n)?.[1] ?? "";
    const log = new StreamLog();
    stream.handlers = log;
    const answer = (s: H2Stream) => {
      s.sendHeaders([[":status", "200"]], false);
      s.sendData(enc.encode(`${field(":method")} ${field(":path")} ${log.received}`), true);
    };
    if (endStream) answer(stream);
    else log.onEnd = answer;
  };
  const h1Requests = (s: TcpSocket<BackendConn>) => {
    const c = s.data;
    for (;;) {
      const head = text(c.buf);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head.slice(0, end + 2))?.[1] ?? 0);
      if (c.buf.length < end + 4 + length) return;
      const [method, path] = head.split(" ");
      c.buf = c.buf.slice(end + 4 + length);
      requests.push({ protocol: "HTTP/1.1", conn: c.index });
      const body = `${method} ${path} ${length}`;
      s.write(enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
    }
  };
  const listener = rt.listenTcp<BackendConn>({
    hostname: "127.0.0.1",
    port: 0,
    handlers: {
      open: (s) => void (s.data = { index: accepted++, buf: new Uint8Array(0), h2: null, h1: false }),
      data(s, chunk) {
        const c = s.data;
        if (c.h2 !== null) return c.h2.receive(chunk);
        c.buf = concatBytes(c.buf, chunk);
        if (!c.h1) {
          const head = text(c.buf.subarray(0, PREFACE.length));
          if (!PREFACE.startsWith(head)) c.h1 = true;
          else if (head.length < PREFACE.length) return;
          else {
            c.h2 = new H2Session(s as TcpSocket<unknown>, "server", {}, { stream: h2Request(c.index) });
            return c.h2.receive(c.buf);
          }
        }
        h1Requests(s);
      },
      drain: (s) => s.data.h2?.socketDrained(),
      end: (s) => (s.data.h2 ? s.data.h2.close() : s.end()),
      close: (s) => s.data.h2?.close(),
    },
  });
  return { port: listener.port, requests, [Symbol.asyncDispose]: async () => listener.stop(true) };
}

describe("HTTP/1.1 clients of an h2c listener", () => {
  test("curl without --http2: two requests on one connection, both answered, over one upstream connection", async () => {
    await using web = backend();
    await using px = startH2Proxy([endpoint(web.port)]);
    const url = `http://127.0.0.1:${px.port}`;
    const r = await run("curl", ["-sS", "-w", " connects=%{num_connects} version=%{http_version}\\n", `${url}/one`, `${url}/two`]);
    expect(r.code).toBe(0);
    expect(r.out).toBe("GET /one 0 connects=1 version=1.1\nGET /two 0 connects=0 version=1.1\n");
    expect(web.requests.length).toBe(2);
    expect(new Set(web.requests.map((r) => r.conn)).size).toBe(1);
  });

  test("a raw keep-alive client: a GET then a POST with a body on one connection", async () => {
    await using web = backend();
    await using px = startH2Proxy([endpoint(web.port)]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /first HTTP/1.1\r\nHost: test\r\n\r\n");
    const first = await c.readResponse();
    c.send("POST /second HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello");
    const second = await c.readResponse();
    expect([first.status, first.body, second.status, second.body]).toEqual([200, "GET /first 0", 200, "POST /second 5"]);
    expect(c.closed).toBe(false);
    expect(px.proxy.active()).toBe(1);
  });

  test("a head whose first write matches the preface's first byte ('P' of POST) still goes to HTTP/1.1", async () => {
    await using web = backend();
    await using px = startH2Proxy([endpoint(web.port)]);
    await using c = await RawClient.connect(px.port);
    c.send("P");
    // No condition to await (the proxy holds the byte): a turn of the loop lets it arrive alone; the outcome must
    // be the same either way.
    await new Promise((r) => setTimeout(r, 20));
    c.send("OST /split HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc");
    const res = await c.readResponse();
    expect([res.status, res.body]).toEqual([200, "POST /split 3"]);
  });

  test("garbage that is neither HTTP/2 nor HTTP/1.1: 400 (bad_request), and the connection closes", async () => {
    await using web = backend();
    await using px = startH2Proxy([endpoint(web.port)]);
    await using c = await RawClient.connect(px.port);
    c.send("\x00\x01garbage \x7f\xff\r\n\r\n");
    const res = await c.readResponse();
    expect(res.status).toBe(400);
    expect(res.headers).toContainEqual(["x-kubegate-reason", "bad_request"]);
    await c.whenClosed;
    expect(web.requests.length).toBe(0);
  });

  test("an HTTP/1.1 head left unfinished: 408 after the request head timeout", async () => {
    await using web = backend();
    await using px = startH2Proxy([endpoint(web.port)], { requestHeaderTimeoutMs: 300 });
    await using c = await RawClient.connect(px.port);
    const t0 = performance.now();
    c.send("GET /never-finished HTTP/1.1\r\nHost: te");
    const res = await c.readResponse({ timeoutMs: 3_000 });
    expect(res.status).toBe(408);
    await c.whenClosed;
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
  });

  test("a client that sends part of the preface, or nothing, then stalls is closed after the request head timeout", async () => {
    await using web = backend();
    await using px = startH2Proxy([endpoint(web.port)], { requestHeaderTimeoutMs: 300 });
    await using partial = await RawClient.connect(px.port);
    partial.send("PRI * HTTP/2.0\r\n");
    await using silent = await RawClient.connect(px.port);
    await waitFor(() => px.proxy.active() === 2, { what: "both connections accepted" });
    const t0 = performance.now();
    // The sweep runs every second: closed within the timeout plus two sweeps.
    await waitFor(() => partial.closed && silent.closed, { what: "the stalled connections to close", timeoutMs: 2_500 });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    expect([partial.data.length, silent.data.length]).toEqual([0, 0]);
    expect(px.proxy.active()).toBe(0);
  });

  test("HTTP/1.1 clients count against maxConnectionsPerListener", async () => {
    await using web = backend();
    await using px = startH2Proxy([endpoint(web.port)], { maxConnectionsPerListener: 2 });
    await using a = await RawClient.connect(px.port);
    await using b = await RawClient.connect(px.port);
    for (const c of [a, b]) {
      c.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
      expect((await c.readResponse()).status).toBe(200);
    }
    expect(px.proxy.active()).toBe(2);
    // A third client, HTTP/2 this time: over the limit, closed at accept.
    await using over = await RawClient.connect(px.port);
    await waitFor(() => over.closed || px.proxy.active() === 3, { what: "the third connection to be refused or accepted" });
    expect(px.proxy.refused).toBe(1);
    await over.whenClosed;
  });

  test("HTTP/2 with prior knowledge on the same listener beside an HTTP/1.1 client", async () => {
    await using web = backend();
    await using px = startH2Proxy([endpoint(web.port)]);
    await using h1 = await RawClient.connect(px.port);
    h1.send("GET /h1 HTTP/1.1\r\nHost: test\r\n\r\n");
    expect((await h1.readResponse()).body).toBe("GET /h1 0");
    await using h2 = await h2Client(px.port);
    const log = new StreamLog();
    const stream = h2.session.request(
      [
        [":method", "POST"],
        [":scheme", "http"],
        [":authority", "test"],
        [":path", "/h2"],
      ],
      false,
      log,
    );
    stream.sendData(enc.encode("four"), true);
    await waitFor(() => log.ended, { what: "the HTTP/2 response" });
    expect([log.status, log.text]).toEqual(["200", "POST /h2 4"]);
    expect(web.requests.at(-1)!.protocol).toBe("HTTP/2");
    h1.send("GET /h1-again HTTP/1.1\r\nHost: test\r\n\r\n");
    expect((await h1.readResponse()).body).toBe("GET /h1-again 0");
  });
});
