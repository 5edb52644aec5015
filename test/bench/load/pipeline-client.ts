/**
 * The pipelined small-message load client (not a test): C connections to an echo service, each keeping D
 * messages of S bytes in flight, every message written on its own (a small write), a new one as soon as one comes
 * back whole; for a fixed time. Prints one `PIPE_JSON {...}` line (see `lib/pipeline.ts`). Bounded: it stops
 * sending at the deadline and exits within a second of it whatever the peer does.
 *
 *   bun test/bench/load/pipeline-client.ts --port 8080 [--connections 16] [--depth 16] [--size 100] [--duration 10]
 */
import type { Socket } from "bun";
import { flushPending, type PendingWrites, writeOrQueue } from "../lib/pending-writes.ts";
import { LatencyHistogram, parsePipelineArgs, pipelineJsonPrefix } from "../lib/pipeline.ts";

let load;
try {
  load = parsePipelineArgs(process.argv.slice(2));
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
const { host, port, connections, depth, size, durationS } = load;

/** Every message is the same bytes; stream offset i of an echo must hold message[i % size]. */
const message = new Uint8Array(size);
for (let i = 0; i < size; i++) message[i] = 97 + (i % 26);

interface Conn extends PendingWrites {
  /** Send times of the messages in flight, oldest at `head` (FIFO: TCP and the proxy keep order). */
  readonly sentAt: Float64Array;
  head: number;
  inFlight: number;
  /** Bytes received on this connection. */
  received: number;
}

const histogram = new LatencyHistogram();
let messages = 0;
let bytes = 0;
let writes = 0;
let reads = 0;
let errors = 0;
let sending = true;
let startedAt = 0;
let endedAt = 0;

function send(s: Socket<Conn>): void {
  const c = s.data;
  c.sentAt[(c.head + c.inFlight) % depth] = performance.now();
  c.inFlight++;
  writes++;
  writeOrQueue(s, message);
}


function onData(s: Socket<Conn>, data: Uint8Array): void {
  const c = s.data;
  reads++;
  if (data[0] !== message[c.received % size]) errors++;
  const before = Math.floor(c.received / size);
  c.received += data.length;
  const done = Math.floor(c.received / size) - before;
  if (!sending) return;
  const now = performance.now();
  for (let i = 0; i < done && c.inFlight > 0; i++) {
    histogram.record((now - c.sentAt[c.head]!) * 1000);
    c.head = (c.head + 1) % depth;
    c.inFlight--;
    messages++;
    bytes += size;
    send(s);
  }
}

const sockets: Socket<Conn>[] = [];
const opened: Promise<void>[] = [];
for (let i = 0; i < connections; i++) {
  const ready = Promise.withResolvers<void>();
  opened.push(ready.promise);
  const s = await Bun.connect<Conn>({
    hostname: host,
    port,
    data: { sentAt: new Float64Array(depth), head: 0, inFlight: 0, received: 0, pending: [] },
    socket: {
      open: () => ready.resolve(),
      data: onData,
      drain: flushPending,
      close: () => {
        if (sending) errors++;
      },
      error: () => {
        errors++;
        ready.resolve();
      },
      connectError: (_s, err) => ready.reject(err),
    },
  }).catch((err: Error) => {
    console.error(`Cannot connect to ${host}:${port}: ${err.message}`);
    process.exit(1);
  });
  s.setNoDelay(true);
  sockets.push(s);
}
await Promise.all(opened);

startedAt = performance.now();
for (const s of sockets) for (let i = 0; i < depth; i++) send(s);

await new Promise((resolve) => setTimeout(resolve, durationS * 1000));
sending = false;
endedAt = performance.now();
for (const s of sockets) s.end();

const elapsedS = (endedAt - startedAt) / 1000;
const result = {
  messages,
  durationS: elapsedS,
  bytes,
  writes,
  reads,
  p50Us: histogram.percentileUs(50),
  p99Us: histogram.percentileUs(99),
  maxUs: histogram.maxUs,
  errors,
};
console.log(`${pipelineJsonPrefix}${JSON.stringify(result)}`);
console.error(`${Math.round(messages / elapsedS)} messages/s over ${connections} connections, ${depth} in flight each, ${size} B`);
process.exit(0);
