/**
 * HTTP/2 cleartext origins compared (not a test), for ARCHITECTURE.md's decision record of issue 15: kubegate's own
 * HTTP/2 session (src/proxy/h2/session.ts, server role: backends/h2c-backend.ts), the runtime's node:http2
 * (a minimal `http2.createServer`: backends/node-http2-backend.ts) and, for reference, nginx (1 worker, `listen
 * ... http2`), each answering every request with 200 "ok". Each origin runs alone on core 1 under `h2load -c16
 * -m32` on core 0; runs are interleaved across origins and the table gives medians of the quiet runs.
 *
 *   bun test/bench/h2-servers.ts [--repeat 3] [--duration 5s] [--warmup 2s] [--quiet-wait 10s] ...
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { h2cBackendScript } from "./backends/start.ts";
import { nginxBackendConf } from "./backends/nginx-backend.ts";
import { type RunFlags, runFlagOptions, runFlags, runFlagsHelp } from "./lib/args.ts";
import { cpuUsage, irqTimeAccounting, sampleCpu } from "./lib/cpu.ts";
import { h2cClients, h2cLoadArgs, h2cStreams, parseH2loadSummary } from "./lib/h2load.ts";
import { PortAllocator } from "./lib/ports.ts";
import { waitForH2 } from "./lib/probe.ts";
import { type Daemon, runBenchMain } from "./lib/procs.ts";
import { type NoisyRun, QuietRunner, quietOrAll } from "./lib/quiet.ts";
import { median } from "./lib/stats.ts";
import { machineInfo, startBench, toolVersions } from "./lib/tools.ts";

const help = `Usage: bun test/bench/h2-servers.ts [flags]

HTTP/2 cleartext origins on core 1 (kubegate's session, node:http2, nginx) under h2load -c${h2cClients} -m${h2cStreams} on core 0.

Flags:
${runFlagsHelp}
  --help                  Print this help.`;

let values;
try {
  values = parseArgs({ args: process.argv.slice(2), strict: true, allowPositionals: false, options: { ...runFlagOptions, help: { type: "boolean" } } }).values;
} catch (err) {
  console.error(`${(err as Error).message}\n${help}`);
  process.exit(2);
}
if (values.help) {
  console.log(help);
  process.exit(0);
}
const flags = runFlags(values);
if (typeof flags === "string") {
  console.error(flags);
  process.exit(2);
}
const opts: RunFlags = flags;
const log = (line: string) => console.error(`[h2-servers ${new Date().toISOString().slice(11, 19)}] ${line}`);
if (cpus().length < 2) log("Only one core: origin and load generator share it, so the figures mean little");
const serverCore = cpus().length >= 2 ? 1 : 0;
const loadCore = 0;
const { tmp, group, cleanup, nice } = startBench("kubegate-h2-servers-", log);
spawnSync("taskset", ["-a", "-p", "-c", String(loadCore), String(process.pid)], { stdio: "ignore" });
const ports = new PortAllocator();
const quiet = new QuietRunner(opts, () => group.pids(), [...new Set([loadCore, serverCore])], log);
const bun = process.versions.bun ? process.execPath : "bun";
const nodeHttp2Script = fileURLToPath(new URL("./backends/node-http2-backend.ts", import.meta.url));

interface Origin {
  readonly name: string;
  readonly daemon: Daemon;
  readonly port: number;
}

interface Run extends NoisyRun {
  readonly origin: string;
  readonly rps: number;
  readonly meanMs: number;
  readonly cpuPerReqUs: number;
  /** The origin's CPU over wall time, %. */
  readonly busyPct: number;
  readonly loadCorePct: number;
  readonly errors: number;
}

async function startOrigins(): Promise<Origin[]> {
  const on = { core: serverCore };
  const [session, node, nginx] = [await ports.next(), await ports.next(), await ports.next()];
  const ndir = join(tmp, "nginx");
  mkdirSync(ndir, { recursive: true });
  const conf = join(ndir, "nginx.conf");
  writeFileSync(conf, nginxBackendConf({ port: nginx, dir: ndir, wwwDir: ndir, runAsRoot: process.getuid?.() === 0, http2: true }));
  const origins = [
    { name: "kubegate session.ts", port: session, daemon: group.start("h2c-session", [bun, h2cBackendScript, String(session)], on) },
    { name: "node:http2 (Bun)", port: node, daemon: group.start("node-http2", [bun, nodeHttp2Script, String(node)], on) },
    { name: "nginx 1 worker", port: nginx, daemon: group.start("nginx-h2c", ["nginx", "-p", ndir, "-e", "stderr", "-c", conf], on) },
  ];
  await Promise.all(origins.map((o) => waitForH2(`http://127.0.0.1:${o.port}/`, o.daemon)));
  return origins;
}

async function once(o: Origin, durationS: number): Promise<Run> {
  const args = h2cLoadArgs({ request: `http://127.0.0.1:${o.port}/`, clients: h2cClients, streams: h2cStreams, durationS });
  const before = sampleCpu(o.daemon.pid, serverCore, loadCore);
  const r = await group.runOk("h2load", args, { core: loadCore, timeoutMs: (durationS + 30) * 1000 });
  const cpu = cpuUsage(before, sampleCpu(o.daemon.pid, serverCore, loadCore));
  const res = parseH2loadSummary(r.stdout);
  const wallS = r.elapsedMs / 1000;
  return {
    origin: o.name,
    rps: res.rps,
    meanMs: res.meanMs,
    cpuPerReqUs: res.requests > 0 ? (cpu.totalS * 1e6) / res.requests : Number.NaN,
    busyPct: (cpu.totalS / wallS) * 100,
    loadCorePct: (cpu.loadCoreBusyS / wallS) * 100,
    noisePct: ((cpu.foreignS + cpu.foreignLoadS) / wallS) * 100,
    errors: res.errors,
    attempts: 1,
  };
}

function table(origins: readonly Origin[], runs: readonly Run[]): string {
  const head = ["Origin (core 1)", "req/s (min–max)", "× session.ts", "CPU/req", "CPU × session.ts", "Origin CPU", "Load core", "Mean latency", "Noise", "Runs", "Errors"];
  const rows = origins.map((o) => {
    const all = runs.filter((r) => r.origin === o.name);
    const used = quietOrAll(all, opts.maxNoisePct);
    const m = (f: (r: Run) => number) => median(used.map(f));
    return { name: o.name, all, used, rps: m((r) => r.rps), cpu: m((r) => r.cpuPerReqUs), busy: m((r) => r.busyPct), load: m((r) => r.loadCorePct), mean: m((r) => r.meanMs), noise: m((r) => r.noisePct) };
  });
  const base = rows[0]!;
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`];
  for (const r of rows) {
    const rps = r.used.map((x) => x.rps);
    lines.push(
      `| ${[
        r.name,
        `${Math.round(r.rps).toLocaleString("en-US")} (${Math.round(Math.min(...rps)).toLocaleString("en-US")}–${Math.round(Math.max(...rps)).toLocaleString("en-US")})`,
        `${(r.rps / base.rps).toFixed(2)}×`,
        `${r.cpu.toFixed(2)} µs`,
        `${(r.cpu / base.cpu).toFixed(2)}×`,
        `${Math.round(r.busy)}%`,
        `${Math.round(r.load)}%`,
        `${r.mean.toFixed(2)} ms`,
        `${Math.round(r.noise)}%`,
        `${r.used.length}/${r.all.length}`,
        String(r.all.reduce((a, x) => a + x.errors, 0)),
      ].join(" | ")} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const loadBefore = machineInfo().loadavg;
  const origins = await startOrigins();
  for (const o of origins) await once(o, opts.warmupS);
  const runs: Run[] = [];
  for (let repeat = 1; repeat <= opts.repeat; repeat++) {
    for (const o of origins) {
      const r = await quiet.measure(() => once(o, opts.durationS), (s) => s.origin);
      runs.push(r);
      log(`#${repeat} ${o.name}: ${Math.round(r.rps)} req/s, ${r.cpuPerReqUs.toFixed(2)} µs/req, origin CPU ${Math.round(r.busyPct)}%, load core ${Math.round(r.loadCorePct)}%, noise ${Math.round(r.noisePct)}%, errors ${r.errors}`);
    }
  }
  const m = machineInfo();
  const v = toolVersions();
  console.log(
    [
      `### HTTP/2 origins: kubegate's session vs node:http2 (${startedAt})`,
      "",
      `- Machine: ${m.nproc} cores (${m.cpuModel}), ${m.os}, kernel ${m.kernel}; load average ${loadBefore.join(" ")} at start, ${m.loadavg.join(" ")} at end. Versions: bun ${v.bun}, ${v.nginx}, h2load ${v.h2load}.`,
      `- Each origin alone on core ${serverCore}; h2load -t1 -c${h2cClients} -m${h2cStreams} (HTTP/2 prior knowledge, GET /, 200 "ok") on core ${loadCore}; ${opts.durationS} s per run after ${opts.warmupS} s of warm-up per origin; ${opts.repeat} runs each, interleaved; medians of the runs with at most ${opts.maxNoisePct}% of a core taken by other processes (waited up to ${opts.quietWaitS} s before each run, ${opts.noiseRetries} re-run(s) at most; ${Math.round(quiet.waitedS)} s waited in all).` +
        (nice === undefined ? "" : ` All processes at nice ${nice}.`),
      `- CPU/req: the origin's process tree utime+stime${irqTimeAccounting() ? ` plus core ${serverCore}'s softirq time` : " (softirq work in its context included: no CONFIG_IRQ_TIME_ACCOUNTING)"} per request completed.`,
      "",
      table(origins, runs),
    ].join("\n"),
  );
}

await runBenchMain("h2-servers", main, { group, cleanup });
