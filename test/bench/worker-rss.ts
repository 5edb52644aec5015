/**
 * Idle memory per added data-plane worker (not a test): starts kubegate with `--workers 1`, `2`, `4` (by default)
 * on the benchmark's manifests (or `--manifests DIR`, e.g. deploy/demo), waits for /readyz and for every worker to
 * report, lets memory settle, then sums RSS (VmRSS) and PSS (smaps_rollup: shared pages split among the processes
 * mapping them, so the Bun binary's pages are not counted once per process) over the process tree from /proc.
 * Prints a markdown table and checks issue 13's target (idle RSS per added worker <= 40 MiB).
 *
 *   bun test/bench/worker-rss.ts [--workers 1,2,4] [--runs 1] [--manifests DIR] [--settle-max 20s] [--json PATH]
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { REFUSED_PORT } from "../support/ports.ts";
import { kubegateManifests } from "./configs/kubegate-manifests.ts";
import { PortAllocator } from "./lib/ports.ts";
import { httpStatus, waitForHttp } from "./lib/probe.ts";
import { descendants, scriptGroup } from "./lib/procs.ts";
import { type MemoryRow, memoryRows, renderMemoryTable, type TreeMemory } from "./lib/memory.ts";
import { median } from "./lib/stats.ts";
import { repoRoot } from "./lib/targets.ts";

const usage = "Usage: bun test/bench/worker-rss.ts [--workers 1,2,4] [--runs 1] [--manifests DIR] [--settle-max 20s] [--json PATH]";
/** The flags, parsed strictly. */
function parseFlags() {
  return parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      workers: { type: "string", default: "1,2,4" },
      runs: { type: "string", default: "1" },
      manifests: { type: "string" },
      "settle-max": { type: "string", default: "20s" },
      json: { type: "string" },
      help: { type: "boolean" },
    },
  }).values;
}
let values: ReturnType<typeof parseFlags>;
try {
  values = parseFlags();
} catch (err) {
  console.error(`${(err as Error).message}\n${usage}`);
  process.exit(2);
}
if (values.help) {
  console.log(usage);
  process.exit(0);
}
const counts = values.workers.split(",").map((s) => Number(s.trim()));
if (counts.some((n) => !Number.isInteger(n) || n < 1 || n > 64) || !counts.includes(1)) {
  console.error(`Invalid --workers "${values.workers}": expected integers from 1 to 64, including 1 (the baseline)`);
  process.exit(2);
}
const runs = Number(values.runs);
const settleMaxS = Number(/^(\d+)s?$/.exec(values["settle-max"])?.[1]);
if (!Number.isInteger(runs) || runs < 1 || runs > 20 || !(settleMaxS > 0 && settleMaxS <= 300)) {
  console.error(`Invalid --runs or --settle-max\n${usage}`);
  process.exit(2);
}

const log = (line: string) => console.error(`[worker-rss ${new Date().toISOString().slice(11, 19)}] ${line}`);
const { tmp, group, cleanup } = scriptGroup("kubegate-worker-rss-", log);
const ports = new PortAllocator();
const bun = process.versions.bun ? process.execPath : "bun";

/** kB from a `Name:   123 kB` line of /proc/<pid>/status or smaps_rollup; 0 when absent. */
function kbField(text: string, field: string): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
}

/** RSS and PSS of `pid` and its descendants, per process, in KiB. */
function treeMemory(pid: number): TreeMemory {
  const procs = [pid, ...descendants(pid)].flatMap((p) => {
    try {
      const rssKiB = kbField(readFileSync(`/proc/${p}/status`, "utf8"), "VmRSS");
      let pssKiB = Number.NaN;
      try {
        pssKiB = kbField(readFileSync(`/proc/${p}/smaps_rollup`, "utf8"), "Pss");
      } catch {
        // No smaps_rollup (old kernel or no permission): PSS unknown.
      }
      return [{ pid: p, rssKiB, pssKiB }];
    } catch {
      return [];
    }
  });
  return { root: pid, procs };
}

/** The manifest directory for a run: `--manifests`, or the benchmark's Services with endpoints nobody calls. */
async function manifestDir(): Promise<string> {
  if (values.manifests) return values.manifests;
  const dir = join(tmp, "manifests");
  mkdirSync(dir, { recursive: true });
  const [http, tcp, iperf, echo] = [await ports.next(), await ports.next(), await ports.next(), await ports.next()];
  writeFileSync(
    join(dir, "bench.yaml"),
    kubegateManifests({ nodeName: "bench-node", httpNodePort: http, tcpNodePort: tcp, iperfNodePort: iperf, echoNodePort: echo, backends: [REFUSED_PORT, REFUSED_PORT], iperfBackend: REFUSED_PORT, echoBackend: REFUSED_PORT }),
  );
  return dir;
}

/** Workers listed by /api/status that report ready (undefined when the status has no `workers`). */
async function readyWorkers(metricsPort: number): Promise<number | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/api/status`, { signal: AbortSignal.timeout(1_000), headers: { connection: "close" } });
    const body = (await res.json()) as { workers?: { ready?: boolean }[] };
    return body.workers === undefined ? undefined : body.workers.filter((w) => w.ready === true).length;
  } catch {
    return undefined;
  }
}

/** Start kubegate with `workers`, wait until it is idle and settled, measure, stop it. */
async function measure(workers: number, mdir: string): Promise<TreeMemory> {
  const [healthz, metrics] = [await ports.next(), await ports.next()];
  const nodeName = values.manifests ? "demo-node" : "bench-node";
  const cmd = [
    bun, join(repoRoot, "src", "main.ts"),
    "--manifests", mdir, "--hostname-override", nodeName,
    "--nodeport-addresses", "127.0.0.0/8", "--host-addresses", "127.0.0.1",
    "--healthz-bind-address", `127.0.0.1:${healthz}`, "--metrics-bind-address", `127.0.0.1:${metrics}`,
    "--log-level", "warn", "--no-access-log", "--workers", String(workers),
  ];
  const daemon = group.start(`kubegate-w${workers}`, cmd, { cwd: repoRoot });
  try {
    await waitForHttp(`http://127.0.0.1:${healthz}/readyz`, daemon, { timeoutMs: 30_000 });
    const deadline = performance.now() + settleMaxS * 1000;
    // Every worker up and reporting (with --workers 1 there are none to wait for).
    if (workers > 1) {
      for (let i = 0; ; i++) {
        const ready = await readyWorkers(metrics);
        const procs = descendants(daemon.pid).length;
        if ((ready ?? procs) >= workers) break;
        if (daemon.hasExited()) throw new Error(`kubegate --workers ${workers} exited:\n${daemon.logTail()}`);
        if (performance.now() > deadline || i > 10_000) throw new Error(`kubegate --workers ${workers}: ${ready ?? procs} of ${workers} workers ready after ${settleMaxS} s`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    // Settled: total RSS within 1 MiB over the last 2 s (4 samples, 500 ms apart), or the deadline.
    const window: number[] = [];
    let mem = treeMemory(daemon.pid);
    for (let i = 0; i < 1_000; i++) {
      await new Promise((r) => setTimeout(r, 500));
      mem = treeMemory(daemon.pid);
      window.push(mem.procs.reduce((a, p) => a + p.rssKiB, 0));
      if (window.length > 4) window.shift();
      if (window.length === 4 && Math.max(...window) - Math.min(...window) <= 1024) break;
      if (performance.now() > deadline) {
        log(`kubegate --workers ${workers}: RSS still moving after ${settleMaxS} s; measuring anyway`);
        break;
      }
    }
    if ((await httpStatus(`http://127.0.0.1:${healthz}/readyz`)) !== 200) throw new Error(`kubegate --workers ${workers} is no longer ready`);
    log(`--workers ${workers}: ${mem.procs.length} processes, RSS ${(mem.procs.reduce((a, p) => a + p.rssKiB, 0) / 1024).toFixed(1)} MiB`);
    return mem;
  } finally {
    await group.stop(daemon, 10_000);
  }
}

let code = 1;
try {
  const mdir = await manifestDir();
  const measured = new Map<number, TreeMemory[]>();
  // Interleaved: 1, 2, 4, 1, 2, 4, ... so that drift of the machine touches every count alike.
  for (let r = 0; r < runs; r++) for (const n of counts) measured.set(n, [...(measured.get(n) ?? []), await measure(n, mdir)]);
  const rows: MemoryRow[] = memoryRows(measured, median);
  console.log(`## Idle memory per data-plane worker (${new Date().toISOString()})\n`);
  console.log(`- kubegate on ${values.manifests ?? "the benchmark's manifests (4 NodePort Services)"}, idle, after /readyz and every worker reporting, once RSS moved less than 1 MiB over 2 s; median of ${runs} run(s); bun ${process.versions.bun ?? "?"}.`);
  console.log("- RSS: VmRSS summed over the process tree (shared pages counted in every process); PSS: smaps_rollup Pss summed (shared pages split among the processes).\n");
  console.log(renderMemoryTable(rows));
  // Per added worker once the data plane runs in workers (2 -> 4 ...); 1 -> 2 also moves it out of the gateway's process.
  const steps = rows.filter((r) => r.workers > 2 && Number.isFinite(r.rssStepMiB)).map((r) => r.rssStepMiB);
  const worst = steps.length ? Math.max(...steps) : Number.NaN;
  const first = rows.find((r) => r.workers > 1);
  console.log(
    `\nTarget: idle RSS per added worker <= 40 MiB: ${Number.isFinite(worst) ? `${worst.toFixed(1)} MiB per worker beyond 2 (worst step), ${worst <= 40 ? "met" : "**not met**"}` : "not measured (needs a count above 2)"}` +
      (first ? `; 1 -> ${first.workers} (data plane out of the gateway's process) ${first.rssPerAddedMiB.toFixed(1)} MiB per added worker` : "") +
      ". PSS is the memory the node really spends (shared pages of the Bun binary counted once).",
  );
  if (values.json) writeFileSync(values.json, JSON.stringify({ counts, runs, measured: Object.fromEntries(measured), rows }, null, 2));
  code = 0;
} catch (err) {
  console.error(`worker-rss failed: ${(err as Error).message}`);
} finally {
  await group.stopAll();
  cleanup();
}
process.exit(code);
