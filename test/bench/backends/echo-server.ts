/**
 * The echo backend of the pipelined case (not a test): writes back every chunk it reads, as it reads it (one write
 * per read, so small messages stay small writes), on 127.0.0.1:PORT until killed.
 *
 *   bun test/bench/backends/echo-server.ts PORT
 */
import { flushPending, type PendingWrites, writeOrQueue } from "../lib/pending-writes.ts";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65_535) {
  console.error(`Usage: bun test/bench/backends/echo-server.ts PORT (got "${process.argv[2] ?? ""}")`);
  process.exit(2);
}

type Conn = PendingWrites;

Bun.listen<Conn>({
  hostname: "127.0.0.1",
  port,
  socket: {
    open(s) {
      s.data = { pending: [] };
      s.setNoDelay(true);
    },
    // Bun reuses its read buffer: what is queued is a copy.
    data: (s, data) => writeOrQueue(s, data, true),
    drain: flushPending,
  },
});
console.log(`echo server listening on 127.0.0.1:${port}`);
