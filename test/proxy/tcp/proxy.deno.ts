/**
 * The TCP proxy on Deno's sockets: `makeTcpProxyFactory` over the Deno port (`src/runtime/deno/net.ts`),
 * with upstreams and clients on Deno sockets too. The Bun suite beside it (`proxy.test.ts`) covers the
 * proxy itself; this one covers what differs on Deno (EOF instead of RST, backpressure, half-close).
 * Run by scripts/test.sh: `deno test -A --unstable-net --config tsconfig.deno.json test/proxy/tcp/proxy.deno.ts`.
 *
 * Imports the Deno port directly (not `src/runtime/index.ts`) so this suite needs nothing else of
 * the Deno runtime.
 */
import assert from "node:assert/strict";
import { makeTcpProxyFactory } from "../../../src/proxy/tcp/proxy.ts";
import { defaultProxyOptions, type ProxyOptions } from "../../../src/proxy/types.ts";
import * as net from "../../../src/runtime/deno/net.ts";
import type { TcpHandlers, TcpSocket } from "../../../src/runtime/types.ts";
import { entrypoint, route } from "../../support/entrypoints.ts";
import { REFUSED_PORT } from "../../support/ports.ts";
import { connectClient, echoServer } from "../../support/tcp-peers.ts";
import { patternSha256, randomPattern, transferClient, transferUpstream } from "../../support/tcp-transfer.ts";
import { waitFor } from "../../support/wait.ts";

const createTcpProxy = makeTcpProxyFactory(net.connectTcp);

function startProxy(upstreams: readonly number[], options: Partial<ProxyOptions> = {}) {
  const proxy = createTcpProxy({ current: route(entrypoint({ endpoints: upstreams })) }, { ...defaultProxyOptions, ...options });
  const listener = net.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
  return {
    port: listener.port,
    proxy,
    async [Symbol.asyncDispose]() {
      listener.stop(true);
      proxy.closeAll();
      await waitFor(() => proxy.active() === 0, { what: "the proxy's connections to close" });
    },
  };
}

Deno.test("echo through the proxy, round robin over two upstreams", async () => {
  await using a = echoServer(net, { tag: "a" });
  await using b = echoServer(net, { tag: "b" });
  await using p = startProxy([a.port, b.port]);
  const replies: string[] = [];
  for (let i = 0; i < 4; i++) {
    await using c = await connectClient(net, p.port);
    replies.push(await c.exchange(`ping${i}`, `x:ping${i}`.length));
  }
  assert.deepEqual(replies, ["a:ping0", "b:ping1", "a:ping2", "b:ping3"]);
  assert.deepEqual([a.accepted, b.accepted], [2, 2]);
  await waitFor(() => a.open + b.open === 0, { what: "upstream connections to close" });
});

Deno.test("a half-closed exchange completes: the upstream reads to EOF, then replies and closes", async () => {
  let got = 0;
  const handlers: TcpHandlers<unknown> = {
    data: (_s, chunk) => void (got += chunk.length),
    end: (s) => {
      s.write(new TextEncoder().encode(`got ${got} bytes`));
      s.end();
    },
  };
  const upstream = net.listenTcp({ hostname: "127.0.0.1", port: 0, handlers });
  await using _u = { [Symbol.asyncDispose]: async () => upstream.stop(true) };
  await using p = startProxy([upstream.port]);
  await using c = await connectClient(net, p.port);
  const body = new Uint8Array(3 * 1024 * 1024).fill(7);
  await c.send(body);
  c.end();
  await c.ended;
  assert.equal(c.text(), `got ${body.length} bytes`);
  assert.equal(await c.closed, undefined);
  await waitFor(() => p.proxy.active() === 0, { what: "the proxy to forget the connection" });
});

Deno.test("64 MiB each way through the proxy arrives intact", async () => {
  const total = 64 * 1024 * 1024;
  const pattern = randomPattern();
  const expected = patternSha256(pattern, total);
  await using upstream = transferUpstream(net, pattern, total);
  await using p = startProxy([upstream.port]);
  const [down, up] = await Promise.all([transferClient(net, p.port, pattern, total), upstream.received]);
  assert.deepEqual(down, { bytes: total, sent: total, sha256: expected });
  assert.deepEqual(up, { bytes: total, sent: total, sha256: expected });
});

Deno.test("a refused endpoint is retried on the next one; no endpoints closes the client", async () => {
  await using echo = echoServer(net, { tag: "ok" });
  await using p = startProxy([REFUSED_PORT, echo.port]);
  await using c = await connectClient(net, p.port);
  assert.equal(await c.exchange("hi", 5), "ok:hi");
  assert.equal(echo.accepted, 1);

  await using empty = startProxy([]);
  await using c2 = await connectClient(net, empty.port);
  // Deno cannot send RST (no SO_LINGER): `terminate()` closes with FIN, which the client sees as EOF.
  await c2.ended;
  assert.equal(c2.received, 0);
});

Deno.test("backpressure: a paused client stalls the upstream; resuming delivers everything", async () => {
  const total = 64 * 1024 * 1024;
  const chunk = new Uint8Array(256 * 1024).fill(1);
  let accepted = 0;
  const pump = (s: TcpSocket<unknown>) => {
    while (accepted < total) {
      const next = chunk.subarray(0, Math.min(chunk.length, total - accepted));
      const n = s.write(next);
      if (n > 0) accepted += n;
      if (n < next.length) return;
    }
    s.end();
  };
  const upstream = net.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: { open: pump, drain: pump, data() {} } });
  await using _u = { [Symbol.asyncDispose]: async () => upstream.stop(true) };
  await using p = startProxy([upstream.port]);
  await using c = await connectClient(net, p.port, { keep: false });
  c.socket.pause();
  let last = -1;
  let stableSince = performance.now();
  await waitFor(
    () => {
      if (accepted !== last) [last, stableSince] = [accepted, performance.now()];
      return accepted > 0 && performance.now() - stableSince > 300;
    },
    { what: "the upstream's writes to stall", timeoutMs: 10_000, intervalMs: 20 },
  );
  assert.ok(accepted < 32 * 1024 * 1024, `upstream wrote ${accepted} bytes into a paused client`);
  c.socket.resume();
  await c.receivedAtLeast(total);
  await c.ended;
  assert.equal(c.received, total);
});
