/**
 * Port-forward micro-benchmark (not a test): what a stream through the API server's pods/portforward
 * (src/kube/portforward.ts: TLS + WebSocket upgrade + v4 channel framing) costs next to a plain TCP connect to
 * the same backend, against the Bun emulation of the API server and kubelet (test/kube/portforward-server-main.ts,
 * a separate process, so this process's RSS is the client's alone).
 *
 *   bun test/bench/portforward-dial.ts [--connects 300] [--mib 128] [--streams 500] [--wait-quiet 600]
 *
 * Prints a table: connect time per new stream (sequential: TCP, TLS, upgrade and port frames, until `connect`
 * resolves), one stream's throughput each way (`get N` / `put N` on the bulk backend), and RSS per open idle
 * stream (RSS delta over --streams streams after a GC). It measures time, so it runs alone: it refuses to start
 * (or waits up to --wait-quiet seconds) while another test/bench process runs.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { KubeConnection } from "../../src/kube/kubeconfig.ts";
import { PortForwardDialer } from "../../src/kube/portforward.ts";
import { rt, type TcpHandlers, type TcpSocket } from "../../src/runtime/index.ts";

const { values } = parseArgs({
  options: {
    connects: { type: "string", default: "300" },
    mib: { type: "string", default: "128" },
    streams: { type: "string", default: "500" },
    "wait-quiet": { type: "string", default: "0" },
  },
  strict: true,
});
const CONNECTS = Number(values.connects);
const MIB = Number(values.mib);
const STREAMS = Number(values.streams);

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

interface ServerInfo {
  url: string;
  ca: string;
  pods: Record<string, number>;
}

async function startServer(): Promise<{ info: ServerInfo; stop: () => Promise<void> }> {
  const child = Bun.spawn([process.execPath, join(root, "test", "kube", "portforward-server-main.ts")], { stdout: "pipe", stderr: "inherit" });
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`The port-forward server exited early: ${text}`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return {
    info: JSON.parse(text.slice(0, text.indexOf("\n"))) as ServerInfo,
    stop: async () => {
      child.kill("SIGTERM");
      await child.exited;
    },
  };
}

/** A way to open a stream to the bulk backend. */
type Dial = (handlers: TcpHandlers<Slot>, data: Slot) => Promise<TcpSocket<Slot>>;

/** Per-stream state reached through `socket.data`. */
interface Slot {
  received: number;
  text: string;
  want: number;
  done: PromiseWithResolvers<void> | undefined;
  toSend: Uint8Array | undefined;
  sent: number;
}

const slot = (): Slot => ({ received: 0, text: "", want: 0, done: undefined, toSend: undefined, sent: 0 });

function pump(s: TcpSocket<Slot>): void {
  const d = s.data;
  while (d.toSend !== undefined && d.sent < d.toSend.length) {
    const n = s.write(d.toSend.subarray(d.sent, d.sent + 256 * 1024));
    if (n <= 0) return;
    d.sent += n;
  }
}

const handlers: TcpHandlers<Slot> = {
  data(s, chunk) {
    const d = s.data;
    d.received += chunk.length;
    if (d.want === 0) d.text += new TextDecoder().decode(chunk);
    if (d.done && ((d.want > 0 && d.received >= d.want) || (d.want === 0 && d.text.includes("ok\n")))) d.done.resolve();
  },
  drain: pump,
};

function stats(samples: number[]): { mean: number; p50: number; p99: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { mean: samples.reduce((a, b) => a + b, 0) / samples.length, p50: at(0.5), p99: at(0.99) };
}

async function connectCost(dial: Dial): Promise<{ mean: number; p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < CONNECTS; i++) {
    const t0 = performance.now();
    const s = await dial(handlers, slot());
    times.push(performance.now() - t0);
    s.terminate();
  }
  return stats(times.slice(Math.min(20, CONNECTS / 10))); // the first few warm up the JIT
}

async function download(dial: Dial, bytes: number): Promise<number> {
  const d = slot();
  d.want = bytes;
  d.done = Promise.withResolvers();
  const s = await dial(handlers, d);
  const t0 = performance.now();
  s.write(new TextEncoder().encode(`get ${bytes}\n`));
  await d.done.promise;
  const secs = (performance.now() - t0) / 1000;
  s.terminate();
  return bytes / secs / (1024 * 1024);
}

async function upload(dial: Dial, bytes: number): Promise<number> {
  const d = slot();
  d.done = Promise.withResolvers();
  const s = await dial(handlers, d);
  const t0 = performance.now();
  s.write(new TextEncoder().encode(`put ${bytes}\n`));
  d.toSend = new Uint8Array(bytes);
  pump(s);
  await d.done.promise;
  const secs = (performance.now() - t0) / 1000;
  s.terminate();
  return bytes / secs / (1024 * 1024);
}

function rss(): number {
  Bun.gc(true);
  return process.memoryUsage().rss;
}

async function memoryPerStream(dial: Dial): Promise<{ rssKiB: number; heapKiB: number }> {
  const open: TcpSocket<Slot>[] = [];
  // Warm up the code paths (and the allocator) before the baseline.
  for (let i = 0; i < 20; i++) (await dial(handlers, slot())).terminate();
  await Bun.sleep(200);
  const before = rss();
  const heapBefore = process.memoryUsage().heapUsed;
  for (let i = 0; i < STREAMS; i++) open.push(await dial(handlers, slot()));
  await Bun.sleep(300);
  const after = rss();
  const heapAfter = process.memoryUsage().heapUsed;
  for (const s of open) s.terminate();
  await Bun.sleep(300);
  return { rssKiB: (after - before) / STREAMS / 1024, heapKiB: (heapAfter - heapBefore) / STREAMS / 1024 };
}

/** Other benchmark processes (they would disturb this one, and this one them). */
function otherBenchmarks(): string[] {
  const out = Bun.spawnSync(["pgrep", "-fa", "test/bench/"]).stdout.toString().trim();
  return out ? out.split("\n").filter((l) => !l.startsWith(`${process.pid} `) && !l.includes("pgrep")) : [];
}

const waitUntil = Date.now() + Number(values["wait-quiet"]) * 1000;
while (otherBenchmarks().length) {
  if (Date.now() > waitUntil) {
    console.error(`Another benchmark is running; not measuring (pass --wait-quiet <s> to wait):\n${otherBenchmarks().join("\n")}`);
    process.exit(1);
  }
  await Bun.sleep(5000);
}

const server = await startServer();
try {
  const conn: KubeConnection = {
    server: server.info.url,
    tls: { ca: server.info.ca },
    auth: { description: "a static token", credentials: async () => ({ headers: { authorization: "Bearer bench" } }), invalidate: () => false },
    origin: { source: "bench", context: "bench", cluster: "bench", user: "bench" },
  };
  const dialer = new PortForwardDialer(conn);
  const bulkPort = server.info.pods["default/bulk-0"]!;
  const viaPortForward: Dial = (h, data) => dialer.connect({ namespace: "default", pod: "bulk-0", port: 9000 }, { handlers: h, data, timeoutMs: 10_000 });
  const direct: Dial = (h, data) => rt.connectTcp({ hostname: "127.0.0.1", port: bulkPort, handlers: h, data, timeoutMs: 10_000 });

  const bytes = MIB * 1024 * 1024;
  const rows: string[][] = [];
  for (const [name, dial] of [
    ["direct TCP", direct],
    ["port-forward (TLS + WebSocket)", viaPortForward],
  ] as const) {
    const c = await connectCost(dial);
    await download(dial, 16 * 1024 * 1024); // warm-up
    const down = await download(dial, bytes);
    const up = await upload(dial, bytes);
    rows.push([name, c.mean.toFixed(3), c.p50.toFixed(3), c.p99.toFixed(3), down.toFixed(0), up.toFixed(0)]);
  }
  const memDirect = await memoryPerStream(direct);
  const memPf = await memoryPerStream(viaPortForward);

  console.log(`\nPort-forward vs direct TCP, loopback, ${rt.name} ${Bun.version}; ${CONNECTS} sequential connects, ${MIB} MiB per transfer, ${STREAMS} idle streams\n`);
  console.log("| path | connect mean ms | p50 ms | p99 ms | down MiB/s | up MiB/s |");
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
  console.log("\n| path | RSS per idle stream KiB | JS heap per idle stream KiB |");
  console.log("|---|---:|---:|");
  console.log(`| direct TCP | ${memDirect.rssKiB.toFixed(1)} | ${memDirect.heapKiB.toFixed(2)} |`);
  console.log(`| port-forward | ${memPf.rssKiB.toFixed(1)} | ${memPf.heapKiB.toFixed(2)} |`);
} finally {
  await server.stop();
}
