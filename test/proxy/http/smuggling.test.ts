/**
 * Request smuggling and request hygiene through real sockets: each vector goes to the gateway in front of
 * a raw upstream that records every byte it receives. A rejected vector gets 400 and a closed connection;
 * whatever reached the upstream must parse, under an independent strict parser, into canonical requests
 * only (or a canonical prefix cut off by the abort), and never into a request the gateway did not see.
 */
import { describe, expect, test } from "bun:test";
import { bytes, header, RawClient, RawUpstream, startProxy, text, waitFor } from "../../support/http-harness.ts";
import { strictRequests } from "../../support/strict-http.ts";

const H = "Host: h\r\n";
/** A request hidden after a body, if a parser disagrees about where the body ends. */
const HIDDEN = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;

/** Everything the upstream received, parsed strictly per connection; throws on any non-canonical byte. */
function upstreamRequests(up: RawUpstream): { targets: string[]; bodies: string[]; partial: string[] } {
  const targets: string[] = [];
  const bodies: string[] = [];
  const partial: string[] = [];
  for (const conn of up.byConnection) {
    const r = strictRequests(conn);
    for (const q of r.requests) {
      targets.push(`${q.method} ${q.target}`);
      bodies.push(q.body);
    }
    if (r.partial) partial.push(r.partial);
  }
  return { targets, bodies, partial };
}

/** Send `writes` (each after the previous reached the gateway), read the one answer, wait for the close. */
async function rejectedVector(writes: string[]) {
  await using up = new RawUpstream();
  await using px = startProxy([up.endpoint]);
  await using c = await RawClient.connect(px.port);
  for (const [i, w] of writes.entries()) {
    if (i > 0) await waitFor(() => up.received.length > 0 || c.closed, "the first part to reach the upstream");
    if (!c.closed) c.send(w);
  }
  const r = await c.readResponse();
  await c.whenClosed;
  await waitFor(() => up.sockets.size === 0, "the upstream connection to close");
  return { status: r.status, connection: header(r, "connection"), reason: header(r, "x-kubegate-reason"), upstream: upstreamRequests(up), extra: c.unread };
}

describe("smuggling vectors are refused with 400 and a closed connection", () => {
  const vectors: [string, string][] = [
    ["CL+TE", `POST /a HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["TE+CL", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["duplicate equal CL", `POST /a HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello${HIDDEN}`],
    ["duplicate different CL", `POST /a HTTP/1.1\r\n${H}Content-Length: 0\r\nContent-Length: ${HIDDEN.length}\r\n\r\n${HIDDEN}`],
    ["CL list", `POST /a HTTP/1.1\r\n${H}Content-Length: 0, ${HIDDEN.length}\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding: xchunked", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding: chunked, identity", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding: identity, chunked", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding: identity", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello${HIDDEN}`],
    ["Transfer-Encoding with a vertical tab", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding ending in a vertical tab", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding with a form feed", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding:\x0cchunked\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding value on a folded line", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding line folded into the previous field", `POST /a HTTP/1.1\r\n${H}X-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`],
    ["Transfer-Encoding line starting with a space", `POST /a HTTP/1.1\r\n Transfer-Encoding: chunked\r\n${H}\r\n0\r\n\r\n${HIDDEN}`],
    ["space before the colon of Transfer-Encoding", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Transfer_Encoding look-alike with CL", `POST /a HTTP/1.1\r\n${H}Transfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["Content_Length look-alike", `POST /a HTTP/1.1\r\n${H}Content_Length: ${HIDDEN.length}\r\n\r\n${HIDDEN}`],
    ["Transfer-Encoding in HTTP/1.0", `POST /a HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${HIDDEN}`],
    ["bare LF ending the request line", `GET /a HTTP/1.1\n${H}\r\n`],
    ["bare LF ending a field line", `GET /a HTTP/1.1\r\n${H}X-A: a\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ["bare LF ending the head", `GET /a HTTP/1.1\r\n${H}\n`],
    ["bare CR in a field line", `GET /a HTTP/1.1\r\n${H}X-A: a\rTransfer-Encoding: chunked\r\n\r\n`],
    ["bare LF after a chunk size", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n${HIDDEN}`],
    ["bare LF after chunk data", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n${HIDDEN}`],
    ["bare LF ending the last chunk", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\n\r\n${HIDDEN}`],
    ["bare LF in a chunk extension", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n`],
    ["chunk size fffffffffffffffff1", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n`],
    ["chunk size 2^64+5 (wraps to 5 in 64 bits)", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n${HIDDEN}`],
    ["chunk size with 0x", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n`],
    ["chunk size with +", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n`],
    ["chunk size with -", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n`],
    ["chunk size with a leading space", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n`],
    ["chunk size with trailing whitespace and no extension", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n`],
    ["chunk longer than its size", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n`],
    ["empty chunk size", `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n`],
    ["NUL in a field value", `GET /a HTTP/1.1\r\n${H}X-A: a\0Transfer-Encoding: chunked\r\n\r\n`],
  ];

  test.each(vectors)("%s (one write)", async (_name, request) => {
    const r = await rejectedVector([request]);
    expect(r).toMatchObject({ status: 400, connection: "close", reason: "bad_request", extra: "" });
    expect(r.upstream).toEqual({ targets: [], bodies: [], partial: [] });
  });

  const later: [string, string][] = [
    ["bare LF after a later chunk size", "5\r\nhello\r\n3\nabc\r\n0\r\n\r\n"],
    ["oversized later chunk size", "5\r\nhello\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n"],
    ["later chunk size with 0x", "5\r\nhello\r\n0x3\r\nabc\r\n0\r\n\r\n"],
    ["a request hidden after a later chunk that overruns its size", `3\r\nabc${HIDDEN}\r\n0\r\n\r\n`],
  ];
  test.each(later)("%s, after the head went upstream: the upstream gets a canonical prefix, then the close", async (_name, body) => {
    const r = await rejectedVector([`POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n`, body]);
    expect(r).toMatchObject({ status: 400, connection: "close", reason: "bad_request" });
    // Only the head (and any chunks validated before the bad one): never the hidden request.
    expect(r.upstream.targets).toEqual([]);
    expect(r.upstream.partial).toHaveLength(1);
    expect(r.upstream.partial[0]).toStartWith("POST /a HTTP/1.1\r\n");
    expect(r.upstream.partial[0]).not.toContain("smuggled");
  });
});

describe("valid but unusual framing is forwarded in canonical form", () => {
  /** Send one write; answer every request; return the targets/bodies the upstream parsed strictly. */
  async function forwarded(request: string, responses: number) {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(request);
    const statuses: number[] = [];
    for (let i = 0; i < responses; i++) statuses.push((await c.readResponse()).status);
    await waitFor(() => up.requests.length >= responses, "the upstream to see every request");
    const got = upstreamRequests(up);
    const heads = up.requests.map((q) => q.head);
    return { statuses, ...got, heads };
  }

  test.each([
    ["an extra space", "Transfer-Encoding:  chunked"],
    ["a tab", "Transfer-Encoding:\tchunked"],
    ["trailing whitespace", "Transfer-Encoding: chunked \t"],
    ["upper case", "Transfer-Encoding: CHUNKED"],
    ["a lower-case name", "transfer-encoding: chunked"],
  ])("Transfer-Encoding with %s is sent as `Transfer-Encoding: chunked`", async (_name, line) => {
    const r = await forwarded(`POST /a HTTP/1.1\r\n${H}${line}\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\n${H}\r\n`, 2);
    expect(r.statuses).toEqual([200, 200]);
    expect(r.targets).toEqual(["POST /a", "GET /b"]);
    expect(r.bodies).toEqual(["hello", ""]);
    expect(r.heads[0]).toMatch(/\r\n(Transfer-Encoding|transfer-encoding): chunked\r\n/);
  });

  test.each([
    ["an extra space", "Content-Length:  5"],
    ["a tab", "Content-Length:\t5"],
    ["trailing whitespace", "Content-Length: 5  "],
    ["leading zeros", "Content-Length: 005"],
  ])("Content-Length with %s is sent as one canonical line", async (_name, line) => {
    const r = await forwarded(`POST /a HTTP/1.1\r\n${H}${line}\r\n\r\nhelloGET /b HTTP/1.1\r\n${H}\r\n`, 2);
    expect(r.targets).toEqual(["POST /a", "GET /b"]);
    expect(r.bodies).toEqual(["hello", ""]);
  });

  test("a request inside a Content-Length body stays body: the upstream sees one request", async () => {
    const r = await forwarded(`POST /a HTTP/1.1\r\n${H}Content-Length: ${HIDDEN.length}\r\n\r\n${HIDDEN}`, 1);
    expect(r.targets).toEqual(["POST /a"]);
    expect(r.bodies).toEqual([HIDDEN]);
  });

  test("a request inside a chunked body stays body: the upstream sees one request", async () => {
    const chunk = `${HIDDEN.length.toString(16)}\r\n${HIDDEN}\r\n0\r\n\r\n`;
    const r = await forwarded(`POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${chunk}`, 1);
    expect(r.targets).toEqual(["POST /a"]);
    expect(r.bodies).toEqual([HIDDEN]);
  });

  test("chunk sizes with leading zeros and upper-case hex are accepted and passed through", async () => {
    const r = await forwarded(`POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0000000000000000000A\r\n0123456789\r\n0\r\n\r\n`, 1);
    expect(r.bodies).toEqual(["0123456789"]);
  });
});

describe("never an open proxy", () => {
  test("an absolute-form target goes to the service's endpoint in origin form, whatever its authority", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(`GET http://evil.example/x?y=1 HTTP/1.1\r\nHost: other.example\r\n\r\nGET http://127.0.0.1:1 HTTP/1.1\r\n${H}\r\n`);
    expect((await c.readResponse()).body).toBe("up GET /x?y=1");
    expect((await c.readResponse()).body).toBe("up GET /");
    const got = upstreamRequests(up);
    expect(got.targets).toEqual(["GET /x?y=1", "GET /"]);
    expect(up.requests.map((q) => header(q, "host"))).toEqual(["evil.example", "127.0.0.1:1"]);
  });

  test("CONNECT is refused with 405 and nothing reaches the upstream", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n");
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 405, reason: "method_not_allowed" });
    await c.whenClosed;
    expect(up.accepts).toBe(0);
  });

  test("a non-http scheme is refused", async () => {
    const r = await rejectedVector([`GET ftp://evil.example/x HTTP/1.1\r\n${H}\r\n`]);
    expect({ status: r.status, targets: r.upstream.targets }).toEqual({ status: 400, targets: [] });
  });
});

describe("forwarding fields", () => {
  const spoofed =
    "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Port: 443\r\n" +
    "X-Forwarded-Prefix: /admin\r\nx-forwarded-server: evil\r\nForwarded: for=6.6.6.6\r\nX-Forwardedness: kept\r\n";

  test("an untrusted client's X-Forwarded-* and Forwarded fields are dropped and replaced", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    const r = await fetchRaw(px.port, `GET / HTTP/1.1\r\n${H}${spoofed}\r\n`);
    expect(r.status).toBe(200);
    const q = up.requests[0]!;
    const names = q.headers.map(([n]) => n.toLowerCase());
    expect(names.filter((n) => n.startsWith("x-forwarded") || n === "forwarded")).toEqual([
      "x-forwardedness",
      "x-forwarded-for",
      "x-forwarded-proto",
      "x-forwarded-host",
      "forwarded",
    ]);
    expect({ xff: header(q, "x-forwarded-for"), proto: header(q, "x-forwarded-proto"), host: header(q, "x-forwarded-host") }).toEqual({
      xff: "127.0.0.1",
      proto: "http",
      host: "h",
    });
    expect(header(q, "forwarded")).toBe('for=127.0.0.1;host="h";proto=http');
    strictRequests(up.byConnection[0]!);
  });

  test("a trusted peer's forwarding fields are kept, and X-Forwarded-For is appended to", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { trustForwarded: (peer) => peer === "127.0.0.1" });
    const r = await fetchRaw(px.port, `GET / HTTP/1.1\r\n${H}${spoofed}\r\n`);
    expect(r.status).toBe(200);
    const q = up.requests[0]!;
    expect({
      xff: header(q, "x-forwarded-for"),
      proto: header(q, "x-forwarded-proto"),
      port: header(q, "x-forwarded-port"),
      prefix: header(q, "x-forwarded-prefix"),
    }).toEqual({ xff: "6.6.6.6, 127.0.0.1", proto: "https", port: "443", prefix: "/admin" });
  });
});

/** One request on a new connection; the parsed response. */
async function fetchRaw(port: number, request: string) {
  await using c = await RawClient.connect(port);
  c.send(bytes(request));
  const r = await c.readResponse();
  return { status: r.status, body: r.body, raw: text(bytes(r.head)) };
}
