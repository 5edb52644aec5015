/**
 * gRPC unary calls per second through kubegate vs direct (not a test), issue 15's "Measure": h2load with gRPC framing
 * (test/support/grpc/peers.ts: grpcBodyFile, grpcH2loadArgs) against Debian's python3-grpcio server
 * (test/support/grpc/server.py), straight to one server and through a kubegate NodePort Service (appProtocol grpc)
 * whose calls are balanced each: to that one server, and to `--servers` servers.
 *
 * kubegate runs on core 1; the servers, h2load and this script on core 0. One python server tops out near 5k calls/s
 * on a core, and the servers share core 0, so the rate is the servers' limit on every path: what the table shows of
 * kubegate is whether it keeps that rate (× direct) and what a call costs it (CPU/call), not its own ceiling (the h2c
 * case of run.ts measures that with a fast origin). gRPC outcomes are counted by the servers (h2load sees HTTP
 * statuses only; a gateway error is a 200 with grpc-status in the trailers).
 *
 *   bun test/bench/grpc.ts [--servers 2] [--repeat 3] [--duration 5s] [--warmup 2s] [--quiet-wait 10s] ...
 */
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { type GrpcServer, grpcBodyFile, grpcH2loadArgs, startGrpcServer } from "../support/grpc/peers.ts";
import { grpcManifests } from "./configs/kubegate-manifests.ts";
import { type RunFlags, runFlagOptions, runFlags, runFlagsHelp } from "./lib/args.ts";
import { clockTicksPerSecond, cpuUsage, irqTimeAccounting, sampleCpu, treeTicks } from "./lib/cpu.ts";
import { h2cClients, h2cLoadArgs, h2cStreams, parseH2loadSummary } from "./lib/h2load.ts";
import { PortAllocator } from "./lib/ports.ts";
import { runBenchMain } from "./lib/procs.ts";
import { waitForH2 } from "./lib/probe.ts";
import { type NoisyRun, QuietRunner, quietOrAll } from "./lib/quiet.ts";
import { median } from "./lib/stats.ts";
import { launchKubegate, benchNodeName } from "./lib/targets.ts";
import { machineInfo, startBench, toolVersions } from "./lib/tools.ts";

const help = `Usage: bun test/bench/grpc.ts [flags]

gRPC unary calls/s (h2load -c${h2cClients} -m${h2cStreams} with gRPC framing) to python3-grpcio servers: direct to one,
and through kubegate (core 1) to one and to --servers of them.

Flags:
  --servers 2             gRPC servers behind the balanced Service (1 to 8).
${runFlagsHelp}
  --help                  Print this help.`;

let values;
try {
  values = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    allowPositionals: false,
    options: { ...runFlagOptions, servers: { type: "string" }, help: { type: "boolean" } },
  }).values;
} catch (err) {
  console.error(`${(err as Error).message}\n${help}`);
  process.exit(2);
}
if (values.help) {
  console.log(help);
  process.exit(0);
}
const flags = runFlags(values);
const serverCount = Number(values.servers ?? "2");
if (typeof flags === "string" || !Number.isInteger(serverCount) || serverCount < 1 || serverCount > 8) {
  console.error(typeof flags === "string" ? flags : `Invalid --servers "${values.servers}": expected an integer from 1 to 8`);
  process.exit(2);
}
const opts: RunFlags = flags;
const log = (line: string) => console.error(`[grpc ${new Date().toISOString().slice(11, 19)}] ${line}`);
if (cpus().length < 2) log("Only one core: kubegate and the load side share it, so the figures mean little");
const proxyCore = cpus().length >= 2 ? 1 : 0;
const loadCore = 0;
const { tmp, group, cleanup, nice } = startBench("kubegate-grpc-", log);
spawnSync("taskset", ["-a", "-p", "-c", String(loadCore), String(process.pid)], { stdio: "ignore" });
const ports = new PortAllocator();

/** A way to the servers: straight to one, or through one of kubegate's Services. */
interface Path {
  readonly name: string;
  readonly port: number;
  /** The servers this path reaches. */
  readonly servers: readonly GrpcServer[];
  /** kubegate's PID when the path goes through it. */
  readonly proxyPid: number | undefined;
}

interface Run extends NoisyRun {
  readonly path: string;
  readonly repeat: number;
  readonly callsPerS: number;
  /** Calls h2load completed. */
  readonly calls: number;
  /** OK calls the servers counted, by server name. */
  readonly okByServer: Readonly<Record<string, number>>;
  readonly meanMs: number;
  /** kubegate's CPU per completed call, µs (NaN direct). */
  readonly cpuPerCallUs: number;
  /** The servers' CPU per OK call, µs. */
  readonly serverCpuPerCallUs: number;
  readonly busyPct: number;
  readonly loadCorePct: number;
  /**
   * h2load's failures and non-2xx, the servers' non-OK statuses, and calls h2load completed beyond what the servers
   * counted OK (answers no server made: gateway errors).
   */
  readonly errors: number;
}

/** One h2load run of `durationS` on `p`; `loadPids` are our processes on the load core (the servers). */
async function once(p: Path, body: string, durationS: number, repeat: number, loadPids: readonly number[]): Promise<Run> {
  const args = h2cLoadArgs({ request: grpcH2loadArgs(p.port, body), clients: h2cClients, streams: h2cStreams, durationS });
  const statsBefore = await Promise.all(p.servers.map((s) => s.stats()));
  const serverTicks = () => p.servers.reduce((a, s) => a + treeTicks(s.pid), 0);
  const before = sampleCpu(p.proxyPid, proxyCore, loadCore, loadPids);
  const serversBefore = serverTicks();
  const r = await group.runOk("h2load-grpc", args, { core: loadCore, timeoutMs: (durationS + 30) * 1000 });
  const serversS = (serverTicks() - serversBefore) / clockTicksPerSecond();
  const cpu = cpuUsage(before, sampleCpu(p.proxyPid, proxyCore, loadCore, loadPids));
  const statsAfter = await Promise.all(p.servers.map((s) => s.stats()));
  const res = parseH2loadSummary(r.stdout);
  const okByServer: Record<string, number> = {};
  let ok = 0;
  let failed = 0;
  statsAfter.forEach((a, i) => {
    const b = statsBefore[i]!;
    okByServer[a.name] = a.ok - b.ok;
    ok += a.ok - b.ok;
    failed += a.failed - b.failed;
  });
  const wallS = r.elapsedMs / 1000;
  const proxied = p.proxyPid !== undefined;
  return {
    path: p.name,
    repeat,
    callsPerS: res.rps,
    calls: res.requests,
    okByServer,
    meanMs: res.meanMs,
    cpuPerCallUs: proxied && res.requests > 0 ? (cpu.totalS * 1e6) / res.requests : Number.NaN,
    serverCpuPerCallUs: ok > 0 ? (serversS * 1e6) / ok : Number.NaN,
    busyPct: proxied ? (cpu.totalS / wallS) * 100 : Number.NaN,
    loadCorePct: (cpu.loadCoreBusyS / wallS) * 100,
    noisePct: ((cpu.foreignS + cpu.foreignLoadS) / wallS) * 100,
    errors: res.errors + failed + Math.max(0, res.requests - ok),
    attempts: 1,
  };
}

const dash = "—";

function table(paths: readonly Path[], runs: readonly Run[]): string {
  const head = ["Path", "calls/s (min–max)", "× direct", "kubegate CPU/call", "kubegate CPU", "Servers' CPU/call", "Load core", "Mean latency", "OK calls by server", "Noise", "Runs", "Errors"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`];
  const direct = quietOrAll(
    runs.filter((r) => r.path === paths[0]!.name),
    opts.maxNoisePct,
  );
  for (const p of paths) {
    const all = runs.filter((r) => r.path === p.name);
    const used = quietOrAll(all, opts.maxNoisePct);
    const m = (f: (r: Run) => number) => median(used.map(f));
    // Paired per repeat, as the main report's ratios.
    const ratios = used.flatMap((r) => {
      const d = direct.find((x) => x.repeat === r.repeat);
      return d ? [r.callsPerS / d.callsPerS] : [];
    });
    const rate = used.map((r) => r.callsPerS);
    const ok: Record<string, number> = {};
    for (const r of used) for (const [k, v] of Object.entries(r.okByServer)) ok[k] = (ok[k] ?? 0) + v;
    const okAll = Object.values(ok).reduce((a, v) => a + v, 0);
    const fmt = (v: number) => Math.round(v).toLocaleString("en-US");
    const cells = [
      p.name,
      `${fmt(m((r) => r.callsPerS))} (${fmt(Math.min(...rate))}–${fmt(Math.max(...rate))})`,
      ratios.length ? `${median(ratios).toFixed(2)}×` : dash,
      p.proxyPid === undefined ? dash : `${m((r) => r.cpuPerCallUs).toFixed(1)} µs`,
      p.proxyPid === undefined ? dash : `${Math.round(m((r) => r.busyPct))}%`,
      `${m((r) => r.serverCpuPerCallUs).toFixed(0)} µs`,
      `${Math.round(m((r) => r.loadCorePct))}%`,
      `${m((r) => r.meanMs).toFixed(1)} ms`,
      Object.entries(ok)
        .map(([k, v]) => `${k} ${Math.round((v / Math.max(1, okAll)) * 100)}%`)
        .join(", "),
      `${Math.round(m((r) => r.noisePct))}%`,
      `${used.length}/${all.length}`,
      String(all.reduce((a, r) => a + r.errors, 0)),
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const loadBefore = machineInfo().loadavg;
  await using stack = new AsyncDisposableStack();
  const servers: GrpcServer[] = [];
  for (let i = 1; i <= serverCount; i++) {
    const s = stack.use(await startGrpcServer({ name: `s${i}` }));
    // Every thread of the server on the load core, at the benchmark's niceness.
    spawnSync("taskset", ["-a", "-p", "-c", String(loadCore), String(s.pid)], { stdio: "ignore" });
    if (nice !== undefined) spawnSync("renice", ["-n", String(nice), "-p", String(s.pid)], { stdio: "ignore" });
    servers.push(s);
  }
  const serverPids = servers.map((s) => s.pid);
  const quiet = new QuietRunner(opts, () => [...group.pids(), ...serverPids], [...new Set([loadCore, proxyCore])], log);
  const body = stack.use(await grpcBodyFile("ping"));

  const [one, all] = [await ports.next(), await ports.next()];
  const manifests = grpcManifests(benchNodeName, [
    { name: "grpc-one", nodePort: one, backends: [servers[0]!.port] },
    { name: "grpc-all", nodePort: all, backends: servers.map((s) => s.port) },
  ]);
  const kubegate = await launchKubegate(group, ports, tmp, proxyCore, "kubegate", manifests, []);
  for (const port of [one, all]) await waitForH2(grpcH2loadArgs(port, body.path), kubegate);
  const paths: Path[] = [
    { name: "direct → 1 server", port: servers[0]!.port, servers: [servers[0]!], proxyPid: undefined },
    { name: "kubegate → 1 server", port: one, servers: [servers[0]!], proxyPid: kubegate.pid },
    ...(serverCount > 1 ? [{ name: `kubegate → ${serverCount} servers`, port: all, servers, proxyPid: kubegate.pid }] : []),
  ];

  for (const p of paths) await once(p, body.path, opts.warmupS, 0, serverPids);
  const runs: Run[] = [];
  for (let repeat = 1; repeat <= opts.repeat; repeat++) {
    for (const p of paths) {
      const r = await quiet.measure(() => once(p, body.path, opts.durationS, repeat, serverPids), (s) => s.path);
      runs.push(r);
      const kg = Number.isFinite(r.cpuPerCallUs) ? `, kubegate ${r.cpuPerCallUs.toFixed(1)} µs/call (${Math.round(r.busyPct)}% CPU)` : "";
      log(`#${repeat} ${p.name}: ${Math.round(r.callsPerS)} calls/s${kg}, load core ${Math.round(r.loadCorePct)}%, noise ${Math.round(r.noisePct)}%, errors ${r.errors}`);
    }
  }
  if (kubegate.hasExited()) throw new Error(`kubegate exited during the run:\n${kubegate.logTail()}`);

  const m = machineInfo();
  const v = toolVersions();
  const py = spawnSync("/usr/bin/python3", ["-c", "import grpc; print(grpc.__version__)"], { encoding: "utf8" }).stdout.trim();
  console.log(
    [
      `### gRPC unary calls through kubegate vs direct (${startedAt})`,
      "",
      `- Machine: ${m.nproc} cores (${m.cpuModel}), ${m.os}, kernel ${m.kernel}; load average ${loadBefore.join(" ")} at start, ${m.loadavg.join(" ")} at end. Versions: bun ${v.bun}, h2load ${v.h2load}, python3-grpcio ${py || "unknown"}.`,
      `- Load: h2load -t1 -c${h2cClients} -m${h2cStreams} with gRPC framing (POST /kubegate.test.Echo/Unary, a 4-byte message, content-type application/grpc, te: trailers), ${opts.durationS} s per run after ${opts.warmupS} s of warm-up per path; ${opts.repeat} runs per path, interleaved; medians of the runs with at most ${opts.maxNoisePct}% of a core taken by other processes (waited up to ${opts.quietWaitS} s before each run, ${opts.noiseRetries} re-run(s) at most; ${Math.round(quiet.waitedS)} s waited in all).` +
        (nice === undefined ? "" : ` All processes at nice ${nice}.`),
      `- kubegate (defaults plus --no-access-log; NodePort Services with appProtocol grpc, every call balanced) on core ${proxyCore}; the ${serverCount} python3-grpcio server(s) (test/support/grpc/server.py), h2load and the harness on core ${loadCore}. The servers are the limit on every path (about 5k calls/s on a core, shared by all of them): × direct says whether kubegate keeps their rate, CPU/call what a call costs it (its process tree utime+stime${irqTimeAccounting() ? ` plus core ${proxyCore}'s softirq time` : ", softirq work in its context included"}).`,
      "- Errors: h2load's failed and non-2xx requests, the servers' non-OK statuses, and calls completed beyond the servers' OK count (answers no server made). Calls cut off in flight when h2load stops are not errors.",
      "",
      table(paths, runs),
    ].join("\n"),
  );
}

await runBenchMain("grpc benchmark", main, { group, cleanup });
