/**
 * The HTTP/2 proxy on Deno's sockets: `H2Proxy` bound through the Deno port (`src/runtime/index.ts` picks it), its
 * upstream sessions connected through it too; upstreams are the HTTP/2 test sessions (test/proxy/h2/harness.ts)
 * and python grpcio, clients curl, nghttp and python grpcio. The Bun suites beside it cover the proxy itself; this one
 * covers it on Deno. Run by scripts/test.sh:
 * `deno test -A --unstable-net --config tsconfig.deno.json test/proxy/h2/proxy.deno.ts`.
 */
import assert from "node:assert/strict";
import type { H2Stream, H2StreamHandlers, HeaderList } from "../../../src/proxy/h2/session.ts";
import { endpoint } from "../../support/entrypoints.ts";
import { runGrpcClient, startGrpcServer } from "../../support/grpc/peers.ts";
import { sha256 } from "../../support/pod-backends.ts";
import { h2Server, type TestServer } from "./harness.ts";
import { run, startH2Proxy } from "./proxy-harness.ts";

const enc = new TextEncoder();

/** Answers `<name> <method> <path> <request body bytes>\n` once the request has ended. */
function namedResponder(name: string, headers: HeaderList): H2StreamHandlers {
  const field = (n: string) => headers.find(([k]) => k === n)?.[1] ?? "";
  let received = 0;
  const answer = (s: H2Stream) => {
    s.sendHeaders([[":status", "200"]], false);
    s.sendData(enc.encode(`${name} ${field(":method")} ${field(":path")} ${received}\n`), true);
  };
  return {
    headers: (s, _trailers, end) => void (end && answer(s)),
    data(s, chunk, end) {
      received += chunk.length;
      s.consumed(chunk.length);
      if (end) answer(s);
    },
    reset() {},
  };
}

/** Sends the request body back as it comes (status 200 at once), acknowledging each chunk only once the response took it. */
function echoResponder(stream: H2Stream): H2StreamHandlers {
  stream.sendHeaders([[":status", "200"]], false);
  let held = 0;
  return {
    headers: (s, _trailers, end) => void (end && s.sendData(new Uint8Array(0), true)),
    data(s, chunk, end) {
      if (s.sendData(chunk, end)) s.consumed(chunk.length);
      else held += chunk.length;
    },
    reset() {},
    writable(s) {
      s.consumed(held);
      held = 0;
    },
  };
}

/** An HTTP/2 upstream: `name`d answers, or (`echo`) the request body sent back. */
function upstream(name: string, echo = false): TestServer {
  return h2Server({}, () => ({
    stream(stream, headers, endStream) {
      stream.handlers = echo ? echoResponder(stream) : namedResponder(name, headers);
      // A request without a body ended with its HEADERS: as trailers would end it.
      if (endStream) stream.handlers.headers(stream, [], true);
    },
  }));
}

Deno.test("curl --http2-prior-knowledge through the proxy to an HTTP/2 upstream", async () => {
  await using a = upstream("a");
  await using px = startH2Proxy([endpoint(a.port)]);
  const r = await run("curl", ["-sS", "--http2-prior-knowledge", "-w", " %{http_version}", "--data-binary", "hello", `http://127.0.0.1:${px.port}/curl`]);
  assert.equal(r.out, "a POST /curl 5\n 2");
});

// curl 7.88 (Debian 12's) cannot reuse a prior-knowledge connection: its second URL fails with "Error in the HTTP2
// framing layer" against any server (curl/curl#10634, fixed in 8.0.0), so nghttp (nghttp2's client) sends the
// requests of one connection here.
Deno.test("four requests on one client connection are balanced each over two endpoints (nghttp)", async () => {
  await using a = upstream("a");
  await using b = upstream("b");
  await using px = startH2Proxy([endpoint(a.port), endpoint(b.port)]);
  const url = `http://127.0.0.1:${px.port}`;
  const r = await run("nghttp", [`${url}/1`, `${url}/2`, `${url}/3`, `${url}/4`]);
  assert.equal(r.code, 0, r.out);
  assert.deepEqual(r.out.split("\n").filter(Boolean).sort(), ["a GET /1 0", "a GET /3 0", "b GET /2 0", "b GET /4 0"]);
  // One upstream connection per endpoint, reused.
  assert.deepEqual([a.sessions.length, b.sessions.length], [1, 1]);
});

Deno.test("a 3 MiB request body comes back as a 3 MiB response, intact (flow control both ways)", async () => {
  await using up = upstream("echo", true);
  await using px = startH2Proxy([endpoint(up.port)]);
  const dir = await Deno.makeTempDir({ prefix: "kubegate-h2-" });
  await using _dir = { [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
  const size = 3 * 1024 * 1024;
  const body = new Uint8Array(size);
  for (let i = 0; i < size; i += 65_536) crypto.getRandomValues(body.subarray(i, i + 65_536));
  await Deno.writeFile(`${dir}/in.bin`, body);
  const r = await run("curl", [
    "-sS",
    "--http2-prior-knowledge",
    "--data-binary",
    `@${dir}/in.bin`,
    "-o",
    `${dir}/out.bin`,
    "-w",
    "%{http_code} %{size_upload} %{size_download}",
    `http://127.0.0.1:${px.port}/echo`,
  ]);
  assert.equal(r.out, `200 ${size} ${size}`);
  assert.equal(sha256(await Deno.readFile(`${dir}/out.bin`)), sha256(body));
});

Deno.test("gRPC: the unary calls of one grpcio channel are balanced each over two grpcio servers", async () => {
  await using a = await startGrpcServer({ name: "a" });
  await using b = await startGrpcServer({ name: "b" });
  await using px = startH2Proxy([endpoint(a.port), endpoint(b.port)]);
  const r = await runGrpcClient(px.port, { kind: "unary", count: 10 });
  assert.deepEqual({ ok: r.ok, errors: r.errors, byServer: r.byServer }, { ok: 10, errors: [], byServer: { a: 5, b: 5 } });
});
