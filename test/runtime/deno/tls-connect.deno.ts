/**
 * The Deno port's outbound TLS (`connectTcp` with `tls` over `Deno.connectTls`, src/runtime/deno/net.ts) against
 * a `Deno.listenTls` server with the test certificates: the socket is handed over after the handshake (a
 * certificate from another CA rejects `connectTcp` itself, not the first read), bytes round-trip, and a server
 * that never completes the handshake is cut at `timeoutMs`. The Bun side: test/runtime/tls-connect.test.ts.
 * Run by scripts/test.sh: `deno test -A --unstable-net --config tsconfig.deno.json test/runtime/deno/tls-connect.deno.ts`.
 */
import assert from "node:assert/strict";
import * as net from "../../../src/runtime/deno/net.ts";
import type { TcpHandlers } from "../../../src/runtime/types.ts";
import { createCertAuthority, testCerts } from "../../support/certs.ts";

const noop: TcpHandlers<undefined> = { data() {} };

Deno.test("TLS connect: echo after the handshake; another CA rejects connect; a mute server times out", async (t) => {
  const certs = await testCerts();
  const server = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: certs.serverCert, key: certs.serverKey });
  const serving = (async () => {
    for await (const conn of server) {
      void (async () => {
        const buf = new Uint8Array(1024);
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            await conn.write(buf.subarray(0, n));
          }
        } catch {
          // The client went away (or failed the handshake).
        }
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      })();
    }
  })();
  const port = server.addr.port;
  try {
    await t.step("an echo over TLS, open called before connect resolves", async () => {
      const events: string[] = [];
      const got = Promise.withResolvers<string>();
      const s = await net.connectTcp({
        hostname: "127.0.0.1",
        port,
        data: undefined,
        tls: { ca: certs.ca },
        handlers: { open: () => void events.push("open"), data: (_s, d) => got.resolve(new TextDecoder().decode(d)) },
      });
      assert.deepEqual(events, ["open"]);
      assert.equal(s.write(new TextEncoder().encode("ping")), 4);
      assert.equal(await got.promise, "ping");
      s.terminate();
    });

    await t.step("a server certificate from another CA rejects connectTcp", async () => {
      const other = await createCertAuthority();
      const err = await net.connectTcp({ hostname: "127.0.0.1", port, data: undefined, tls: { ca: other.cert }, handlers: noop }).catch((e: unknown) => e);
      assert.ok(err instanceof Error, `resolved instead of rejecting: ${String(err)}`);
    });

    await t.step("a server that never completes the handshake: ETIMEDOUT", async () => {
      const mute = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const accepted: Deno.Conn[] = [];
      void (async () => {
        for await (const c of mute) accepted.push(c);
      })();
      try {
        const started = performance.now();
        const err = (await net
          .connectTcp({ hostname: "127.0.0.1", port: mute.addr.port, data: undefined, tls: { ca: certs.ca }, timeoutMs: 200, handlers: noop })
          .catch((e: unknown) => e)) as Error & { code?: string };
        assert.equal(err.code, "ETIMEDOUT");
        assert.ok(performance.now() - started >= 190);
        // Not checked here: that the TCP connection is closed too. Deno 2.9 keeps it open after `close()` of a
        // TlsConn whose handshake is pending (the handshake op is cancelled, the socket is not released).
        assert.equal(accepted.length, 1);
      } finally {
        for (const c of accepted) c.close();
        mute.close();
      }
    });
  } finally {
    server.close();
    await serving.catch(() => {});
  }
});
