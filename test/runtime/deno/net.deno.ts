/**
 * The Deno port's UDP (`src/runtime/deno/net.ts` over `Deno.listenDatagram`, unstable): a datagram round
 * trip between two sockets of the port. Its TCP side is covered by the proxies' Deno suites
 * (`test/proxy/tcp/proxy.deno.ts`, `test/proxy/http/proxy.deno.ts`).
 * Run by scripts/test.sh: `deno test -A --unstable-net --config tsconfig.deno.json test/runtime/deno/net.deno.ts`.
 */
import assert from "node:assert/strict";
import * as net from "../../../src/runtime/deno/net.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test({
  name: "UDP: a datagram round trip (needs --unstable-net)",
  // Deno.listenDatagram is unstable: without --unstable-net it is missing and this test is reported ignored.
  ignore: !("listenDatagram" in Deno),
  fn: async () => {
    const got = Promise.withResolvers<string>();
    const server = await net.bindUdp({
      hostname: "127.0.0.1",
      port: 0,
      onMessage: (data, port, address) => void server.send(enc.encode(`echo:${dec.decode(data)}`), port, address),
    });
    const client = await net.bindUdp({ hostname: "127.0.0.1", port: 0, onMessage: (data) => got.resolve(dec.decode(data)) });
    try {
      assert.equal(client.send(enc.encode("ping"), server.port, "127.0.0.1"), true);
      assert.equal(await got.promise, "echo:ping");
    } finally {
      client.close();
      server.close();
    }
  },
});
