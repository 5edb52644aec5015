/**
 * The port-forward emulation (./portforward-server.ts) as a process, for the Deno suite (portforward.deno.ts),
 * which cannot run Bun's WebSocket server in process:
 *
 *   bun test/kube/portforward-server-main.ts [--require-client-cert] [--token T]
 *
 * Serves pods `default/web-0` (an HTTP backend answering `pod says hi to <path>`), `default/bulk-0` (a TCP backend:
 * a line `get N` makes it send N bytes; after `put N` it reads N bytes and answers `ok`) and `default/closed-0`
 * (a port nothing listens on). Prints ONE JSON line once listening —
 * `{"url","port","ca","clientCert","clientKey","pods":{"default/web-0":<backend port>,...}}` — then serves until
 * SIGTERM/SIGINT.
 */
import { parseArgs } from "node:util";
import { testCerts } from "../support/certs.ts";
import { startFakePortForward } from "./portforward-server.ts";

const { values } = parseArgs({
  options: { "require-client-cert": { type: "boolean", default: false }, token: { type: "string" } },
  strict: true,
});
const certs = await testCerts();
const web = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => new Response(`pod says hi to ${new URL(req.url).pathname}`) });
const spare = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
const closedPort = spare.port;
spare.stop(true);
/** `get N`: send N bytes (with backpressure); `put N`: read N bytes, answer `ok\n`. */
const CHUNK = new Uint8Array(256 * 1024);
const bulk = Bun.listen<{ toSend: number; toRead: number }>({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    open(s) {
      s.data = { toSend: 0, toRead: 0 };
    },
    data(s, d) {
      if (s.data.toRead > 0) {
        s.data.toRead -= d.length;
        if (s.data.toRead <= 0) s.write("ok\n");
        return;
      }
      const m = /^(get|put) (\d+)\n/.exec(new TextDecoder().decode(d.subarray(0, 40)));
      if (!m) return;
      if (m[1] === "put") {
        s.data.toRead = Number(m[2]) - (d.length - m[0].length);
        if (s.data.toRead <= 0) s.write("ok\n");
        return;
      }
      s.data.toSend = Number(m[2]);
      pump(s);
    },
    drain: (s) => pump(s),
  },
});
function pump(s: Bun.Socket<{ toSend: number; toRead: number }>): void {
  while (s.data.toSend > 0) {
    const n = s.write(CHUNK.subarray(0, Math.min(CHUNK.length, s.data.toSend)));
    if (n <= 0) return;
    s.data.toSend -= n;
  }
}
const token = values.token;
const api = startFakePortForward({
  certs,
  pods: { "default/web-0": web.port!, "default/bulk-0": bulk.port, "default/closed-0": closedPort },
  requireClientCert: values["require-client-cert"],
  ...(token !== undefined ? { token: () => token } : {}),
});
process.stdout.write(`${JSON.stringify({ url: api.url, port: api.port, ca: certs.ca, clientCert: certs.clientCert, clientKey: certs.clientKey, pods: { "default/web-0": web.port, "default/bulk-0": bulk.port, "default/closed-0": closedPort } })}\n`);
const stop = async () => {
  await api[Symbol.asyncDispose]();
  web.stop(true);
  bulk.stop(true);
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
