/**
 * The HTTP/1.1 forwarder on Deno's sockets: `createHttpProxy` bound through the Deno port
 * (`src/runtime/deno/net.ts`), upstreams served by `Deno.serve`, clients on Deno sockets and fetch.
 * The Bun suites beside it cover the forwarder itself; this one covers it on Deno's sockets.
 * Run by scripts/test.sh: `deno test -A --unstable-net --config tsconfig.deno.json test/proxy/http/proxy.deno.ts`.
 */
import assert from "node:assert/strict";
import { createHttpProxy } from "../../../src/proxy/http/index.ts";
import { defaultProxyOptions } from "../../../src/proxy/types.ts";
import * as denoNet from "../../../src/runtime/deno/net.ts";
import { entrypoint, route } from "../../support/entrypoints.ts";
import { waitFor } from "../../support/wait.ts";

/** An upstream that answers `name method path body`, and records the client port of each request (one port = one connection). */
function upstream(name: string, respond?: (req: Request) => Response | Promise<Response>) {
  const peers: number[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req, info) => {
    peers.push(info.remoteAddr.port);
    if (respond) return respond(req);
    const body = await req.text();
    return new Response(`${name} ${req.method} ${new URL(req.url).pathname} ${body}`, { headers: { "x-backend": name } });
  });
  return { port: server.addr.port, peers, [Symbol.asyncDispose]: () => server.shutdown() };
}

/** The HTTP proxy on 127.0.0.1:0 in front of `ports`, through the Deno port. */
function startProxy(ports: readonly number[]) {
  const proxy = createHttpProxy({ current: route(entrypoint({ protocol: "http", name: "test/web:http", endpoints: ports })) }, defaultProxyOptions);
  let accepted = 0;
  const open = proxy.handlers.open!;
  const listener = denoNet.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: { ...proxy.handlers, open: (s) => (accepted++, open(s)) } });
  return {
    url: `http://127.0.0.1:${listener.port}`,
    port: listener.port,
    accepted: () => accepted,
    async [Symbol.asyncDispose]() {
      listener.stop(true);
      proxy.closeAll();
      await waitFor(() => proxy.active() === 0, { what: "the proxy's connections to close" });
    },
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("GET round trip, balanced over two upstreams", async () => {
  await using a = upstream("a");
  await using b = upstream("b");
  await using p = startProxy([a.port, b.port]);
  const seen: string[] = [];
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${p.url}/hello?i=${i}`);
    assert.equal(res.status, 200);
    seen.push(await res.text());
  }
  assert.deepEqual(seen, ["a GET /hello ", "b GET /hello ", "a GET /hello ", "b GET /hello "]);
});

Deno.test("a chunked request body and a chunked (streamed) response pass through", async () => {
  const parts = ["first chunk;", "second chunk;", "x".repeat(70_000)];
  await using up = upstream("s", async (req) => {
    const got = await req.text();
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (const part of parts) c.enqueue(enc.encode(part));
        c.enqueue(enc.encode(`|${got.length}`));
        c.close();
      },
    });
    return new Response(stream); // no length: Deno.serve answers Transfer-Encoding: chunked
  });
  await using p = startProxy([up.port]);
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(enc.encode("a".repeat(1000)));
      c.enqueue(enc.encode("b".repeat(2345)));
      c.close();
    },
  });
  const res = await fetch(`${p.url}/upload`, { method: "POST", body }); // a stream body: fetch sends it chunked
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("transfer-encoding"), "chunked");
  assert.equal(await res.text(), `${parts.join("")}|3345`);
});

Deno.test("keep-alive: one client connection carries several requests, and the upstream connection is reused", async () => {
  await using up = upstream("k");
  await using p = startProxy([up.port]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: p.port });
  using _ = { [Symbol.dispose]: () => conn.close() };
  const buf = new Uint8Array(64 * 1024);
  const responses: string[] = [];
  for (let i = 0; i < 3; i++) {
    await conn.write(enc.encode(`GET /r${i} HTTP/1.1\r\nHost: test\r\n\r\n`));
    let text = "";
    const expected = `k GET /r${i} `;
    while (!text.endsWith(expected)) {
      const n = await conn.read(buf);
      if (n === null) throw new Error(`The proxy closed the kept-alive connection after: ${JSON.stringify(text)}`);
      text += dec.decode(buf.subarray(0, n));
    }
    responses.push(text);
  }
  for (const r of responses) assert.match(r, /^HTTP\/1\.1 200 OK\r\n/);
  assert.ok(responses.every((r) => !/^connection: close/im.test(r)), "no response closes the connection");
  assert.equal(p.accepted(), 1);
  assert.equal(up.peers.length, 3);
  assert.equal(new Set(up.peers).size, 1, `the upstream saw one connection, got client ports ${up.peers.join(",")}`);
});
