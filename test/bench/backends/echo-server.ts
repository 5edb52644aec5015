/**
 * The echo backend of the pipelined case (not a test): writes back every chunk it reads, as it reads it (one write
 * per read, so small messages stay small writes), on 127.0.0.1:PORT until killed.
 *
 *   bun test/bench/backends/echo-server.ts PORT
 */
import type { Socket } from "bun";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65_535) {
  console.error(`Usage: bun test/bench/backends/echo-server.ts PORT (got "${process.argv[2] ?? ""}")`);
  process.exit(2);
}

interface Conn {
  /** Bytes the kernel did not take yet, in order. */
  pending: Uint8Array[];
}

function flush(s: Socket<Conn>): void {
  const c = s.data;
  while (c.pending.length > 0) {
    const chunk = c.pending[0]!;
    const n = s.write(chunk);
    if (n >= chunk.length) {
      c.pending.shift();
      continue;
    }
    c.pending[0] = chunk.subarray(Math.max(0, n));
    return;
  }
}

Bun.listen<Conn>({
  hostname: "127.0.0.1",
  port,
  socket: {
    open(s) {
      s.data = { pending: [] };
      s.setNoDelay(true);
    },
    data(s, data) {
      if (s.data.pending.length > 0) {
        // Bun reuses its read buffer: keep a copy.
        s.data.pending.push(new Uint8Array(data));
        return;
      }
      const n = s.write(data);
      if (n < data.length) s.data.pending.push(new Uint8Array(data.subarray(Math.max(0, n))));
    },
    drain: flush,
  },
});
console.log(`echo server listening on 127.0.0.1:${port}`);
