/**
 * HPACK micro-benchmark: decodes/s and encodes/s of a typical gRPC request header list (a grpc-python unary
 * call), one connection's encoder and decoder, each case run for DURATION_MS (default 1000) after a warm-up.
 *
 *   bun test/bench/hpack.ts
 *
 * Cases: the same list again (the steady state of a channel calling one method), the list with a new
 * grpc-timeout per call (a literal each time), and the first block of a connection (literals, Huffman, a fresh
 * decoder per block).
 */
import { type HeaderField, HpackDecoder, HpackEncoder } from "../../src/proxy/h2/hpack.ts";

const DURATION_MS = Number(process.env.DURATION_MS ?? 1000);
const BATCH = 1000;

const GRPC: HeaderField[] = [
  [":method", "POST"],
  [":scheme", "http"],
  [":path", "/helloworld.Greeter/SayHello"],
  [":authority", "greeter.default.svc.cluster.local:50051"],
  ["content-type", "application/grpc"],
  ["te", "trailers"],
  ["grpc-accept-encoding", "identity,deflate,gzip"],
  ["user-agent", "grpc-python/1.60.1 grpc-c/37.0.0 (linux; chttp2)"],
  ["grpc-timeout", "4999m"],
];

/** The list with the n-th call's grpc-timeout. */
function withTimeout(n: number): HeaderField[] {
  const out = GRPC.slice();
  out[out.length - 1] = ["grpc-timeout", `${4000 + (n % 1000)}m`];
  return out;
}

/** Run `op` in batches for DURATION_MS (after a quarter of that as warm-up); returns operations per second. */
function rate(op: (i: number) => void): number {
  const run = (ms: number): number => {
    const start = performance.now();
    let n = 0;
    while (performance.now() - start < ms) {
      for (let i = 0; i < BATCH; i++) op(n + i);
      n += BATCH;
    }
    return (n * 1000) / (performance.now() - start);
  };
  run(DURATION_MS / 4);
  return run(DURATION_MS);
}

const rows: [string, number, number][] = [];

{
  const e = new HpackEncoder();
  e.encode(GRPC);
  const block = e.encode(GRPC);
  rows.push(["encode, same list", rate(() => e.encode(GRPC)), block.length]);
  const d = new HpackDecoder({ maxHeaderListSize: 16384 });
  d.decode(new HpackEncoder().encode(GRPC));
  rows.push(["decode, same list", rate(() => d.decode(block)), block.length]);
}
{
  const lists = Array.from({ length: 1000 }, (_, i) => withTimeout(i));
  const e = new HpackEncoder();
  e.encode(GRPC);
  rows.push(["encode, new grpc-timeout", rate((i) => e.encode(lists[i % 1000]!)), e.encode(lists[1]!).length]);
  const source = new HpackEncoder();
  const d = new HpackDecoder({ maxHeaderListSize: 16384 });
  d.decode(source.encode(GRPC));
  // Blocks in encoding order, replayed against a decoder whose table matches (nothing new is indexed).
  const blocks = lists.map((l) => source.encode(l));
  rows.push(["decode, new grpc-timeout", rate((i) => d.decode(blocks[i % 1000]!)), blocks[1]!.length]);
}
{
  const first = new HpackEncoder().encode(GRPC);
  rows.push(["encode, first block", rate(() => new HpackEncoder().encode(GRPC)), first.length]);
  rows.push(["decode, first block", rate(() => new HpackDecoder({ maxHeaderListSize: 16384 }).decode(first)), first.length]);
}

const runtime = typeof Bun !== "undefined" ? `bun ${Bun.version}` : `deno ${(globalThis as { Deno?: { version: { deno: string } } }).Deno?.version.deno}`;
console.log(`HPACK, gRPC request header list (${GRPC.length} fields), ${runtime}, ${DURATION_MS} ms per case`);
for (const [name, perSecond, bytes] of rows) {
  console.log(`${name.padEnd(26)} ${Math.round(perSecond).toLocaleString("en-US").padStart(12)} /s   block ${bytes} B`);
}
