/**
 * Watch-layer benchmark (not a test): the test API server in its own process with 10k Services and
 * 10k EndpointSlices (100k endpoints in all), then
 *   1. initial sync time (start -> Services and EndpointSlices synced),
 *   2. RSS and heap after sync,
 *   3. latency from an EndpointSlice change on the server to its arrival (p50/p99 over N changes).
 *
 *   bun test/bench/watch-scale.ts [--services 10000] [--endpoints-per-slice 10] [--changes 500]
 *
 * "Arrival" is pluggable: {@link eventSink} measures to the CacheEvent reaching the sink; a later
 * step passes a sink that measures to the published snapshot.
 */
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ApiServerSource } from "../../src/kube/apiserver-source.ts";
import { loadKubeConfig } from "../../src/kube/kubeconfig.ts";
import type { KindName } from "../../src/kube/objects.ts";
import type { CacheEvent, SourceSink } from "../../src/kube/source.ts";
import { silentLogger } from "../../src/log.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** A sink that can tell when a change has arrived where it measures. */
export interface BenchSink extends SourceSink {
  /** Resolves once Services and EndpointSlices are synced (where this sink measures). */
  ready(): Promise<void>;
  /**
   * Call before making a change to EndpointSlice `key`; resolves with `performance.now()` when the
   * change has arrived.
   */
  arrival(key: string): Promise<number>;
}

/** Measures to the CacheEvent: arrival is the `apply` call. */
export function eventSink(): BenchSink {
  const synced = new Set<KindName>();
  const ready = Promise.withResolvers<void>();
  const waiting = new Map<string, (at: number) => void>();
  return {
    apply(ev: CacheEvent) {
      if (ev.kind !== "EndpointSlice" || ev.type !== "upsert") return;
      const w = waiting.get(ev.key);
      if (w) {
        waiting.delete(ev.key);
        w(performance.now());
      }
    },
    synced(kind) {
      synced.add(kind);
      if (synced.has("Service") && synced.has("EndpointSlice")) ready.resolve();
    },
    ready: () => ready.promise,
    arrival(key) {
      const p = Promise.withResolvers<number>();
      waiting.set(key, p.resolve);
      return p.promise;
    },
  };
}

export interface BenchOptions {
  readonly services: number;
  readonly endpointsPerSlice: number;
  readonly changes: number;
  readonly sink?: BenchSink;
}

export interface BenchResult {
  readonly services: number;
  readonly endpoints: number;
  readonly seedMs: number;
  readonly syncMs: number;
  readonly rssMiB: number;
  readonly heapMiB: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number; readonly n: number };
}

async function startServerProcess() {
  const child = spawn(process.execPath, [join(root, "test", "support", "apiserver-main.ts"), "--port", "0", "--bookmark-ms", "60000"], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    let text = "";
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (d: string) => {
      text += d;
      if (text.includes("\n")) resolve(text.slice(0, text.indexOf("\n")));
    });
    child.once("exit", (code) => reject(new Error(`The test API server exited with code ${code} before starting`)));
  });
  const info = JSON.parse(line) as { kubeconfig: string; controlUrl: string };
  const control = async (name: string, body: unknown) => {
    const res = await fetch(`${info.controlUrl}/_control/${name}`, { method: "POST", body: JSON.stringify(body) });
    const json = (await res.json()) as Record<string, unknown>;
    if (!res.ok) throw new Error(`Control "${name}" failed: ${JSON.stringify(json)}`);
    return json;
  };
  const killOnExit = () => child.kill("SIGTERM");
  process.once("exit", killOnExit);
  return {
    ...info,
    control,
    [Symbol.asyncDispose]: async () => {
      process.off("exit", killOnExit);
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

const ip = (i: number, j: number) => `10.${(i >> 8) & 255}.${i & 255}.${j + 1}`;

function sliceOf(i: number, endpoints: number, generation = 0) {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: `svc-${i}-abcde`, namespace: `ns-${i % 50}`, labels: { "kubernetes.io/service-name": `svc-${i}` } },
    addressType: "IPv4",
    endpoints: Array.from({ length: endpoints }, (_, j) => ({
      addresses: [ip(i, j)],
      conditions: { ready: j !== generation % endpoints },
      nodeName: `node-${j % 20}`,
      zone: `zone-${j % 3}`,
    })),
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  };
}

async function parallel(n: number, limit: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < n) await task(next++);
  }));
}

const progress = (m: string) => process.stderr.write(`watch-scale: ${m}\n`);
const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

/** Run the benchmark once. */
export async function runWatchBench(options: BenchOptions): Promise<BenchResult> {
  await using api = await startServerProcess();
  progress("test API server started");
  const seedStart = performance.now();
  await parallel(options.services, 32, async (i) => {
    await api.control("create", {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: `svc-${i}`, namespace: `ns-${i % 50}` },
      spec: { selector: { app: `svc-${i}` }, ports: [{ name: "http", port: 80, targetPort: 8080 }] },
    });
    await api.control("create", sliceOf(i, options.endpointsPerSlice));
  });
  const seedMs = performance.now() - seedStart;
  progress(`seeded ${options.services} services and slices in ${round(seedMs)} ms`);

  const sink = options.sink ?? eventSink();
  const kube = await loadKubeConfig({ path: api.kubeconfig, env: () => undefined });
  await using source = new ApiServerSource({ kube, log: silentLogger });
  const syncStart = performance.now();
  source.start(sink);
  await sink.ready();
  const syncMs = performance.now() - syncStart;
  progress(`synced in ${round(syncMs)} ms`);
  (globalThis as { Bun?: { gc(force: boolean): void } }).Bun?.gc(true);
  const mem = process.memoryUsage();

  const latencies: number[] = [];
  for (let c = 0; c < options.changes; c++) {
    const i = (c * 7919) % options.services;
    const key = `ns-${i % 50}/svc-${i}-abcde`;
    const arrived = sink.arrival(key);
    const t0 = performance.now();
    await api.control("patch", {
      resource: "endpointslices",
      namespace: `ns-${i % 50}`,
      name: `svc-${i}-abcde`,
      // The annotation makes every patch a real change (a no-op patch sends no event).
      patch: {
        metadata: { annotations: { "kubegate.bench/change": String(c) } },
        endpoints: sliceOf(i, options.endpointsPerSlice, c + 1).endpoints,
      },
    });
    const at = await Promise.race([
      arrived,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`Change ${c} of EndpointSlice "${key}" did not arrive within 10 s`)), 10_000).unref?.(),
      ),
    ]);
    latencies.push(at - t0);
  }
  latencies.sort((a, b) => a - b);
  return {
    services: options.services,
    endpoints: options.services * options.endpointsPerSlice,
    seedMs,
    syncMs,
    rssMiB: mem.rss / 2 ** 20,
    heapMiB: mem.heapUsed / 2 ** 20,
    latencyMs: { p50: pct(latencies, 50), p99: pct(latencies, 99), max: latencies.at(-1) ?? NaN, n: latencies.length },
  };
}

/** The result as a table. */
export function formatResult(r: BenchResult, runtime: string): string {
  const rows: [string, string][] = [
    ["runtime", runtime],
    ["services / slices", `${r.services} / ${r.services}`],
    ["endpoints", String(r.endpoints)],
    ["seed (server, via control API)", `${round(r.seedMs / 1000)} s`],
    ["initial sync (list all pages)", `${round(r.syncMs)} ms`],
    ["RSS after sync", `${round(r.rssMiB, 1)} MiB`],
    ["heap used after sync", `${round(r.heapMiB, 1)} MiB`],
    [`change -> event p50 (n=${r.latencyMs.n})`, `${round(r.latencyMs.p50, 3)} ms`],
    ["change -> event p99", `${round(r.latencyMs.p99, 3)} ms`],
    ["change -> event max", `${round(r.latencyMs.max, 3)} ms`],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      services: { type: "string", default: "10000" },
      "endpoints-per-slice": { type: "string", default: "10" },
      changes: { type: "string", default: "500" },
    },
  });
  const result = await runWatchBench({
    services: Number(values.services),
    endpointsPerSlice: Number(values["endpoints-per-slice"]),
    changes: Number(values.changes),
  });
  const runtime = (globalThis as { Bun?: { version: string } }).Bun ? `bun ${(globalThis as { Bun: { version: string } }).Bun.version}` : "deno";
  console.log(formatResult(result, runtime));
}
