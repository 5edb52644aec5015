/** Unit tables for the HTTP/1.1 head parsers and the chunked-body validator. */
import { describe, expect, test } from "bun:test";
import { ChunkedDecoder } from "../../../src/proxy/http/chunked.ts";
import { ClientContext } from "../../../src/proxy/http/head.ts";
import {
  B_CHUNKED,
  B_CLOSE,
  B_LENGTH,
  B_NONE,
  C_CLOSE,
  C_KEEP_ALIVE,
  C_UPGRADE,
  F_CONNECTION,
  F_OTHER,
  findHeadEnd,
  kinds,
  M_GET,
  M_HEAD,
  M_OTHER,
  M_POST,
  parseRequestHead,
  parseResponseHead,
  RequestInfo,
  ResponseInfo,
  responseFraming,
} from "../../../src/proxy/http/parser.ts";
import { bytes } from "../../support/http-harness.ts";

function parseReq(head: string) {
  const buf = bytes(head);
  const end = findHeadEnd(buf, 0, 0, buf.length);
  if (end <= 0) return { end };
  const info = new RequestInfo();
  const status = parseRequestHead(buf, 0, end, info);
  return { end, status, info };
}

describe("findHeadEnd", () => {
  test.each([
    ["GET / HTTP/1.1\r\nHost: h\r\n\r\n", 27],
    ["GET / HTTP/1.1\r\n\r\nbody", 18],
    ["GET / HTTP/1.1\r\nHost: h\r\n", 0],
    ["GET / HTTP/1.1\r\nHost: h\r\n\r", 0],
    ["GET / HTTP/1.1\nHost: h\n\n", -1],
    ["GET / HTTP/1.1\r\nHost: h\n\r\n", -1],
  ])("%j -> %d", (head, expected) => {
    const buf = bytes(head);
    expect(findHeadEnd(buf, 0, 0, buf.length)).toBe(expected);
  });

  test("resumes across chunks without missing a CRLFCRLF split between them", () => {
    const head = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    for (let cut = 1; cut < head.length; cut++) {
      const buf = bytes(head);
      const first = findHeadEnd(buf, 0, 0, cut);
      expect(first).toBe(0);
      expect(findHeadEnd(buf, 0, cut, buf.length)).toBe(head.length);
    }
  });
});

describe("parseRequestHead accepts", () => {
  const accepted: [string, string, Record<string, unknown>][] = [
    ["a plain GET", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", { method: M_GET, minor: 1, contentLength: -1, chunked: false, rewrite: false }],
    ["HEAD", "HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n", { method: M_HEAD }],
    ["POST with Content-Length", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n", { method: M_POST, contentLength: 42 }],
    ["Content-Length 0", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", { contentLength: 0 }],
    ["Content-Length with leading zeros", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n", { contentLength: 7 }],
    ["chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", { chunked: true, contentLength: -1 }],
    ["chunked in any case with OWS", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  ChUnKeD \r\n\r\n", { chunked: true }],
    ["lowercase field names", "GET / HTTP/1.1\r\nhost: h\r\ncontent-length: 1\r\n\r\n", { contentLength: 1, host: 0 }],
    ["HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", { minor: 0, host: -1, rewrite: true }],
    ["HTTP/1.2 as 1.1", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", { minor: 1 }],
    ["an unknown method", "PURGE /c HTTP/1.1\r\nHost: h\r\n\r\n", { method: M_OTHER }],
    ["Connection: close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", { conn: C_CLOSE, rewrite: true }],
    ["Connection: Keep-Alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", { conn: C_KEEP_ALIVE }],
    [
      "an upgrade",
      "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
      { conn: C_KEEP_ALIVE | C_UPGRADE, upgrade: 2 },
    ],
    ["Connection naming other fields", "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-a, X-B\r\n\r\n", { connOther: ["x-a", "x-b"] }],
    ["Expect: 100-continue", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", { expectContinue: true }],
    ["an empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", { host: 0 }],
    ["an IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", { host: 0 }],
    ["OWS around values", "GET / HTTP/1.1\r\nHost: \t h \t\r\n\r\n", { host: 0 }],
    ["obs-text in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: caf\xe9\r\n\r\n", { fieldCount: 2 }],
    ["an empty value", "GET / HTTP/1.1\r\nHost: h\r\nX:\r\n\r\n", { fieldCount: 2 }],
    ["OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", {}],
    ["absolute-form", "GET http://a.example:81/p?q HTTP/1.1\r\nHost: h\r\n\r\n", { authStart: 11, authEnd: 23, pathStart: 23, rewrite: true }],
    ["absolute-form without path", "GET https://a.example HTTP/1.1\r\nHost: h\r\n\r\n", { authStart: 12, authEnd: 21 }],
    ["a target with obs-text", "GET /caf\xe9 HTTP/1.1\r\nHost: h\r\n\r\n", {}],
    ["X-Forwarded-For", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", { rewrite: true }],
    ["a lone Connection: keep-alive", "GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n", { conn: C_KEEP_ALIVE, rewrite: false, keepAliveLine: true }],
    ["Connection: keep-alive twice", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n\r\n", { rewrite: true, keepAliveLine: false }],
    ["Connection: keep-alive with Keep-Alive", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n", { rewrite: true, keepAliveLine: false }],
    ["Connection: keep-alive from HTTP/1.0", "GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", { rewrite: true, keepAliveLine: false }],
  ];
  test.each(accepted)("%s", (_name, head, expected) => {
    const r = parseReq(head);
    expect(r.status).toBe(0);
    expect(r.info).toMatchObject(expected);
  });

  test("leading CRLFs are the caller's to skip; a request line cannot start with one", () => {
    expect(parseReq("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").status).toBe(400);
  });

  test("fields named in Connection are marked hop-by-hop", () => {
    const r = parseReq("GET / HTTP/1.1\r\nHost: h\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\n\r\n");
    expect(r.status).toBe(0);
    expect([...kinds.subarray(0, 4)]).toEqual([1, F_CONNECTION, F_CONNECTION, F_OTHER]);
  });

  test("more than 512 field lines is 431", () => {
    const r = parseReq(`GET / HTTP/1.1\r\nHost: h\r\n${"X: y\r\n".repeat(512)}\r\n`);
    expect(r.status).toBe(431);
  });
});

describe("parseRequestHead rejects", () => {
  const rejected: [string, number, string][] = [
    ["GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "missing request target"],
    [" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "missing method"],
    ["GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400, "malformed HTTP version"],
    ["GET /\tx HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid character in request target"],
    ["GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid character in request target"],
    ["G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid character in method"],
    ["GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400, "malformed HTTP version"],
    ["GET / HTTP/11\r\nHost: h\r\n\r\n", 400, "malformed HTTP version"],
    ["GET / HTTPS/1.1\r\nHost: h\r\n\r\n", 400, "malformed HTTP version"],
    ["GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505, "HTTP version 3.0 is not supported"],
    ["GET /\r\nHost: h\r\n\r\n", 400, "invalid character in request target"],
    ["CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 405, "CONNECT is not supported"],
    ["GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400, "asterisk-form target is only valid for OPTIONS"],
    ["GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "unsupported URI scheme in absolute-form target"],
    ["GET http:/h HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid request target"],
    ["GET http:/// HTTP/1.1\r\nHost: h\r\n\r\n", 400, "empty authority in request target"],
    ["GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "userinfo in request target"],
    ["GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid request target"],
    ["GET / HTTP/1.1\r\nHost: h\r\n X: y\r\n\r\n", 400, "obsolete line folding (obs-fold)"],
    ["GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400, "whitespace before the first field line"],
    ["GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400, "whitespace between field name and colon"],
    ["GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", 400, "empty field name"],
    ["GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400, "field line without a colon"],
    ["GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n", 400, "invalid character in field name"],
    ["GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400, "invalid character in field value"],
    ["GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", 400, "invalid character in field value"],
    ["GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400, "bare CR in field line"],
    ["GET / HTTP/1.1\r\n\r\n", 400, "missing Host field"],
    ["GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400, "duplicate Host field"],
    ["GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid Host field value"],
    ["GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400, "invalid Host field value"],
    ["POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n", 400, "duplicate Content-Length field"],
    ["POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400, "invalid Content-Length value"],
    ["POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1e3\r\n\r\n", 400, "invalid Content-Length value"],
    ["POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1234567890123456\r\n\r\n", 400, "invalid Content-Length value"],
    ["POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "unsupported Transfer-Encoding (only a single chunked coding is accepted)"],
    ["POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, "unsupported Transfer-Encoding (only a single chunked coding is accepted)"],
    ["POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "unsupported Transfer-Encoding (only a single chunked coding is accepted)"],
    ["POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400, "unsupported Transfer-Encoding (only a single chunked coding is accepted)"],
    ["POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400, "both Content-Length and Transfer-Encoding present"],
    ["POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "Transfer-Encoding in an HTTP/1.0 request"],
    ["GET / HTTP/1.1\r\nHost: h\r\nConnection: close;x\r\n\r\n", 400, "invalid Connection field value"],
  ];
  test.each(rejected)("%j", (head, status, reason) => {
    const r = parseReq(head);
    expect({ status: r.status, reason: r.info?.error }).toEqual({ status, reason });
  });
});

function parseRes(head: string) {
  const buf = bytes(head);
  const end = findHeadEnd(buf, 0, 0, buf.length);
  const info = new ResponseInfo();
  const ok = end > 0 && parseResponseHead(buf, 0, end, info);
  return { ok, info };
}

describe("parseResponseHead and framing (RFC 9112 §6.3)", () => {
  const cases: [string, string, boolean, number, Record<string, unknown>][] = [
    ["Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, B_LENGTH, { status: 200, contentLength: 5 }],
    ["Content-Length 0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, B_NONE, {}],
    ["chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, B_CHUNKED, { chunked: true }],
    ["gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, B_CHUNKED, {}],
    ["gzip only: read until close", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, B_CLOSE, { te: true, chunked: false }],
    ["no length: read until close", "HTTP/1.1 200 OK\r\n\r\n", false, B_CLOSE, {}],
    ["HEAD response", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, B_NONE, {}],
    ["204", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false, B_NONE, { status: 204 }],
    ["304", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", false, B_NONE, {}],
    ["100", "HTTP/1.1 100 Continue\r\n\r\n", false, B_NONE, { status: 100 }],
    ["no reason phrase", "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, {}],
    ["empty reason phrase", "HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, {}],
    ["HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, { minor: 0 }],
    ["Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, { conn: C_CLOSE, rewrite: true }],
    ["Keep-Alive is hop-by-hop", "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, { rewrite: true }],
    ["end-to-end fields only", "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, { rewrite: false }],
    ["a lone Connection: keep-alive", "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, { conn: C_KEEP_ALIVE, rewrite: false, keepAliveLine: true }],
    ["Connection: keep-alive, x", "HTTP/1.1 200 OK\r\nConnection: keep-alive, x\r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, { rewrite: true, keepAliveLine: false }],
    ["Connection: keep-alive from HTTP/1.0", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false, B_LENGTH, { rewrite: true, keepAliveLine: false }],
  ];
  test.each(cases)("%s", (_name, head, isHead, framing, expected) => {
    const r = parseRes(head);
    expect(r.ok).toBe(true);
    expect(responseFraming(r.info, isHead)).toBe(framing);
    expect(r.info).toMatchObject(expected);
  });

  test.each([
    ["HTTP/1.1 20 OK\r\n\r\n", "malformed status code"],
    ["HTTP/1.1 600 X\r\n\r\n", "malformed status code"],
    ["HTTP/2 200 OK\r\n\r\n", "malformed status line"],
    ["HTTP/1.1 200 O\x01K\r\n\r\n", "invalid character in reason phrase"],
    ["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "duplicate Content-Length field"],
    ["HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid Content-Length value"],
    ["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding present"],
    ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip, chunked\r\n\r\n", "chunked is not the final transfer coding"],
    ["HTTP/1.1 200 OK\r\nX : y\r\n\r\n", "whitespace between field name and colon"],
    ["HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n", "obsolete line folding (obs-fold)"],
  ])("rejects %j", (head, reason) => {
    const r = parseRes(head);
    expect({ ok: r.ok, reason: r.info.error }).toEqual({ ok: false, reason });
  });
});

describe("ClientContext", () => {
  test("reads the local address only when a request needs it (each read is a getsockname)", () => {
    let reads = 0;
    const local = {
      get localAddress() {
        reads++;
        return "::ffff:10.0.0.1";
      },
      get localPort() {
        reads++;
        return 30080;
      },
    };
    const ctx = new ClientContext("::ffff:192.0.2.7", local, false);
    expect({ ip: ctx.ip, reads }).toEqual({ ip: "192.0.2.7", reads: 0 });
    expect([ctx.localHost, ctx.localHost]).toEqual(["10.0.0.1:30080", "10.0.0.1:30080"]);
    expect(reads).toBe(2);
  });
});

describe("ChunkedDecoder", () => {
  function run(body: string, pieces = 1, dechunk = false) {
    const buf = bytes(body);
    const d = new ChunkedDecoder(1024);
    let payload = "";
    const sink = dechunk ? (b: Uint8Array, s: number, e: number) => void (payload += String.fromCharCode(...b.subarray(s, e))) : undefined;
    const step = Math.ceil(buf.length / pieces);
    for (let p = 0; p < buf.length; p += step) {
      const end = Math.min(buf.length, p + step);
      const r = d.feed(buf, p, end, sink);
      if (r < 0) return { error: d.error };
      if (d.done) return { end: r, payload };
    }
    return { incomplete: true, payload };
  }

  const valid = "5\r\nhello\r\n6;name=value;x\r\n world\r\nA\r\n0123456789\r\n0\r\nTrailer-A: 1\r\nB: 2\r\n\r\n";

  test("accepts a body with extensions and trailers, in any split", () => {
    for (let pieces = 1; pieces <= valid.length; pieces++) {
      expect(run(valid, pieces)).toEqual({ end: valid.length, payload: "" });
    }
  });

  test("stops exactly at the end of the body, leaving the next message", () => {
    expect(run("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n")).toEqual({ end: 13, payload: "" });
  });

  test("hands out the payload when de-chunking", () => {
    expect(run(valid, 7, true)).toEqual({ end: valid.length, payload: "hello world0123456789" });
  });

  test("leading zeros are not size digits", () => {
    expect(run("00000000000000000005\r\nhello\r\n0\r\n\r\n")).toEqual({ end: 34, payload: "" });
  });

  test("whitespace before an extension is tolerated", () => {
    expect(run("5 ;x=1\r\nhello\r\n0\r\n\r\n")).toMatchObject({ end: 20 });
  });

  test("incomplete bodies ask for more", () => {
    expect(run("5\r\nhel")).toEqual({ incomplete: true, payload: "" });
  });

  test.each([
    ["x\r\n", "invalid chunk size"],
    [" 5\r\nhello\r\n", "invalid chunk size"],
    ["0x5\r\nhello\r\n", "invalid chunk size"],
    ["-5\r\n", "invalid chunk size"],
    ["5\nhello\r\n", "invalid chunk size"],
    ["5;x\nhello\r\n", "invalid chunk extension"],
    ["5\r\r\nhello\r\n", "chunk size line not ended by CRLF"],
    ["5 \r\nhello\r\n", "invalid chunk size line"],
    ["5\r\nhelloX\r\n", "chunk data not followed by CRLF"],
    ["5\r\nhello\rX", "chunk data not followed by CRLF"],
    ["5\r\nhello\n", "chunk data not followed by CRLF"],
    ["fffffffffffffff\r\n", "chunk size too large"],
    ["5;a\x01\r\nhello\r\n", "invalid chunk extension"],
    [`5;${"e".repeat(5000)}\r\n`, "chunk extension too long"],
    ["0\r\n bad: trailer\r\n\r\n", "invalid trailer field"],
    ["0\r\nBad Name: v\r\n\r\n", "invalid trailer field name"],
    ["0\r\nT: a\x00\r\n\r\n", "invalid trailer field value"],
    ["0\r\nT: a\n\r\n", "invalid trailer field value"],
    ["0\r\nT: a\rX\r\n", "trailer field not ended by CRLF"],
    ["0\r\n\rX", "chunked body not ended by CRLF"],
    [`0\r\nT: ${"v".repeat(2000)}\r\n\r\n`, "trailer section too large"],
  ])("rejects %j", (body, error) => {
    for (const pieces of [1, 3]) expect(run(body, pieces)).toEqual({ error });
  });
});
