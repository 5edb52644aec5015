/**
 * The same origin as h2c-backend.ts on the runtime's node:http2 instead of kubegate's own HTTP/2 session, not a test:
 * a minimal `http2.createServer` (cleartext, prior knowledge) answering every request with 200 "ok", on
 * 127.0.0.1:PORT until killed. For h2-servers.ts, which compares the two (ARCHITECTURE.md's decision record).
 *
 *   bun test/bench/backends/node-http2-backend.ts PORT
 */
import { createServer } from "node:http2";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65_535) {
  console.error(`Usage: bun test/bench/backends/node-http2-backend.ts PORT (got "${process.argv[2] ?? ""}")`);
  process.exit(2);
}

const server = createServer((req, res) => {
  // Answer once the request has ended, as h2c-backend.ts does.
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "text/plain", "content-length": "2" });
    res.end("ok");
  });
});
server.listen(port, "127.0.0.1", () => console.log(`node:http2 backend listening on 127.0.0.1:${port}`));
