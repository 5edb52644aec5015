/**
 * Data-plane benchmark (not a test): kubegate beside nginx (1 worker), haproxy (1 thread; http, tcp and
 * h2c mode) and the direct path, in front of the same backends, in one run on one machine.
 *
 *   bun test/bench/run.ts [--quick] [--cases a,b] [--duration 10s] [--repeat 3] [--kubegate-args="..."]
 *   bun test/bench/run.ts --multi 2 [--quick]     # every core: N workers/threads each, nothing pinned
 *
 * The proxy under test runs on core 1; the load generator, the backends and this script on core 0.
 * With --multi N nothing is pinned: nginx runs N workers (reuseport), haproxy N threads, kubegate
 * --workers N, and kubegate --workers 1 is a row of its own ("kubegate-w1"), the baseline of extra ratios.
 * Loads run interleaved across proxies (A B C D, A B C D, ...) and the table reports medians. CPU
 * per request is the proxy's process-tree busy time, with its core's softirq time (loopback network
 * work) counted once (see lib/cpu.ts), divided by the requests it served. Runs disturbed by other
 * processes are waited out or repeated. See BENCHMARKS.md for the method and its limits.
 */
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { type Backends, startBackends } from "./backends/start.ts";
import { parseBenchArgs, type BenchOptions } from "./lib/args.ts";
import { type CaseDef, caseDef } from "./lib/cases.ts";
import { type CpuSample, type CpuUsage, cpuUsage, cpuUsageUnpinned, irqTimeAccounting, sampleCpu } from "./lib/cpu.ts";
import { h2cClients, h2cLoadArgs, h2cStreams, h2loadArgs, h2loadFailed, parseH2loadLog, parseH2loadSummary } from "./lib/h2load.ts";
import { iperfClientArgs, parseIperfJson } from "./lib/iperf.ts";
import { parsePipelineOutput, pipelineArgs } from "./lib/pipeline.ts";
import { type OtlpSink, startOtlpSink, tracingOn } from "./lib/otlp-sink.ts";
import { PortAllocator } from "./lib/ports.ts";
import { QuietRunner } from "./lib/quiet.ts";
import type { Daemon } from "./lib/procs.ts";
import { type Failure, multiBaseline, type RawRun, renderReport, reviveRawRun } from "./lib/render.ts";
import type { Sample } from "./lib/report.ts";
import { median } from "./lib/stats.ts";
import { directTarget, startHaproxy, startKubegate, startNginxProxy, type Target } from "./lib/targets.ts";
import { machineInfo, startBench, toolVersions } from "./lib/tools.ts";
import { parseWrkOutput, wrkArgs } from "./lib/wrk.ts";

const parsed = parseBenchArgs(process.argv.slice(2));
if (parsed.kind === "help") {
  console.log(parsed.text);
  process.exit(0);
}
if (parsed.kind === "error") {
  console.error(parsed.message);
  process.exit(2);
}
const opts: BenchOptions = parsed.options;
if (opts.fromJson !== undefined) {
  // Render the report of an earlier run from its JSON, without running anything.
  const { md } = renderReport(reviveRawRun(JSON.parse(readFileSync(opts.fromJson, "utf8"))));
  console.log(md);
  if (opts.mdPath) writeFileSync(opts.mdPath, `${md}\n`);
  process.exit(0);
}
const log = (line: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);

const nproc = cpus().length;
const multi = opts.multi;
/** The load core and the proxy's core; both undefined in multi-core mode (nothing pinned). */
const loadCore: number | undefined = multi === undefined ? 0 : undefined;
const proxyCore: number | undefined = multi === undefined ? (nproc >= 2 ? 1 : 0) : undefined;
if (multi === undefined && proxyCore === loadCore) log("Only one core: proxy and load generator share it, so the figures mean little");
if (multi !== undefined && multi > nproc) log(`--multi ${multi} on ${nproc} cores: the workers share cores, so the figures mean little`);
/** Spawn options that pin to `core`, or none when it is undefined. */
const on = (core: number | undefined): { core?: number } => (core === undefined ? {} : { core });
/** The cores whose counters a run reads: every core when unpinned. */
const quietCores = multi === undefined ? [...new Set([loadCore!, proxyCore!])] : Array.from({ length: nproc }, (_, i) => i);
const bun = process.versions.bun ? process.execPath : "bun";

const { tmp, group, cleanup: cleanupSync, nice } = startBench("kubegate-bench-", log);
const ports = new PortAllocator();
const quiet = new QuietRunner(opts, () => group.pids(), quietCores, log);

// This script and everything it starts run on the load core unless pinned elsewhere.
if (loadCore !== undefined) spawnSync("taskset", ["-a", "-p", "-c", String(loadCore), String(process.pid)], { stdio: "ignore" });

const selected: CaseDef[] = opts.cases.map(caseDef);
const targetCount = 4 + opts.variants.length + (multi === undefined ? 0 : 1);
const perRunS = (c: CaseDef) =>
  c.load === "iperf3" ? opts.iperfS + 1 : c.load === "h2load" ? opts.durationS + opts.warmupS : c.load === "pipeline" || c.load === "h2load-h2c" ? opts.durationS + 1 : opts.durationS;
const budgetS =
  180 + selected.reduce((a, c) => a + targetCount * (opts.warmupS + 5 + opts.repeat * (1 + opts.noiseRetries) * (perRunS(c) + 15 + opts.quietWaitS + 1)), 0);
const watchdog = setTimeout(() => {
  log(`Benchmark exceeded its time budget of ${Math.round(budgetS)} s: stopping`);
  cleanupSync();
  process.exit(1);
}, budgetS * 1000);
watchdog.unref();

const failures: Failure[] = [];
const samples: Sample[] = [];
const startedAt = new Date();
const loadBefore = machineInfo().loadavg;

/** Load-core busy and other processes' CPU on both cores, as percentages of wall time. */
function shares(cpu: CpuUsage, wallS: number): { loadCorePct: number; noisePct: number; attempts: number } {
  return { loadCorePct: (cpu.loadCoreBusyS / wallS) * 100, noisePct: ((cpu.foreignS + cpu.foreignLoadS) / wallS) * 100, attempts: 1 };
}

/** kubegate processes, stopped first at the end. */
const kubegateDaemons: Daemon[] = [];

/** Pids whose CPU is ours on the load core (the backends, the OTLP sink). */
let loadPids: number[] = [];

/** The OTLP trace sink, started when a kubegate row turns tracing on. */
let otlpSink: OtlpSink | undefined;

/** CPU counters now, for the proxy tree `pid`: its core and the load core, or every core when unpinned. */
function cpuNow(pid: number | undefined): CpuSample {
  return sampleCpu(pid, proxyCore ?? "all", loadCore ?? "all", loadPids);
}

/** What a run cost, by the accounting of this mode (pinned or not). */
function usage(before: CpuSample, after: CpuSample): CpuUsage {
  return multi === undefined ? cpuUsage(before, after) : cpuUsageUnpinned(before, after);
}

function alive(t: Target): boolean {
  return t.daemon === undefined || !t.daemon.hasExited();
}

function url(t: Target, c: CaseDef): string {
  return `http://127.0.0.1:${t.ports[c.endpoint]}${c.path}`;
}

async function wrkOnce(t: Target, c: CaseDef, durationS: number) {
  const load = { url: url(t, c), connections: opts.connections, threads: opts.threads, durationS, headers: c.headers };
  const before = cpuNow(t.pid);
  const r = await group.runOk(`wrk-${t.name}`, wrkArgs(load), { ...on(loadCore), timeoutMs: (durationS + 30) * 1000 });
  const after = cpuNow(t.pid);
  return { wrk: parseWrkOutput(r.stdout), cpu: usage(before, after), wallS: r.elapsedMs / 1000 };
}

/** The sample of one closed-loop run (wrk, h2load): what the load tool counted, and the proxy's CPU over it. */
function closedLoopSample(
  t: Target,
  c: CaseDef,
  repeat: number,
  load: { rps: number; requests: number; errors: number; p50Ms: number; p99Ms: number },
  cpu: CpuUsage,
  wallS: number,
): Sample {
  const proxied = t.pid !== undefined;
  return {
    case: c.name,
    target: t.name,
    kind: t.kind,
    repeat,
    throughput: load.rps,
    offeredRps: Number.NaN,
    p50Ms: load.p50Ms,
    p99Ms: load.p99Ms,
    ops: load.requests,
    errors: load.errors,
    cpu: proxied ? cpu : undefined,
    // CPU over the load tool's whole life (connecting: a few ms) per request completed in the run.
    cpuPerOp: proxied && load.requests > 0 ? (cpu.totalS * 1e6) / load.requests : Number.NaN,
    busyPct: proxied ? (cpu.totalS / wallS) * 100 : Number.NaN,
    ...shares(cpu, wallS),
  };
}

async function measureWrk(t: Target, c: CaseDef, repeat: number): Promise<Sample> {
  const { wrk, cpu, wallS } = await wrkOnce(t, c, opts.durationS);
  return closedLoopSample(t, c, repeat, wrk, cpu, wallS);
}

/** One closed-loop HTTP/2 run of h2load (issue 15's -c16 -m32) against `t`'s h2c entrypoint. */
async function h2cOnce(t: Target, c: CaseDef, durationS: number) {
  const load = { request: url(t, c), clients: h2cClients, streams: h2cStreams, durationS };
  const before = cpuNow(t.pid);
  const r = await group.runOk(`h2load-h2c-${t.name}`, h2cLoadArgs(load), { ...on(loadCore), timeoutMs: (durationS + 30) * 1000 });
  const after = cpuNow(t.pid);
  return { res: parseH2loadSummary(r.stdout), cpu: usage(before, after), wallS: r.elapsedMs / 1000 };
}

async function measureH2c(t: Target, c: CaseDef, repeat: number): Promise<Sample> {
  const { res, cpu, wallS } = await h2cOnce(t, c, opts.durationS);
  // h2load reports percentiles only through its per-request log, which would make the load core the limit.
  return closedLoopSample(t, c, repeat, { ...res, p50Ms: Number.NaN, p99Ms: Number.NaN }, cpu, wallS);
}

async function measureRate(t: Target, c: CaseDef, repeat: number, rate: number): Promise<Sample> {
  const logFile = join(tmp, `h2load-${t.name}-${repeat}.log`);
  const total = opts.warmupS + opts.durationS;
  const load = { url: url(t, c), rate, clients: opts.rateClients, durationS: Math.ceil(total), logFile };
  const before = cpuNow(t.pid);
  const r = await group.runOk(`h2load-${t.name}`, h2loadArgs(load), { ...on(loadCore), timeoutMs: (total + 30) * 1000 });
  const after = cpuNow(t.pid);
  const res = parseH2loadLog(readFileSync(logFile, "utf8"), opts.warmupS, load.durationS - opts.warmupS, h2loadFailed(r.stdout));
  rmSync(logFile, { force: true });
  const cpu = usage(before, after);
  const proxied = t.pid !== undefined;
  return {
    case: c.name,
    target: t.name,
    kind: t.kind,
    repeat,
    throughput: res.achievedRps,
    offeredRps: rate,
    p50Ms: res.p50Ms,
    p99Ms: res.p99Ms,
    ops: res.requests,
    errors: res.errors,
    cpu: proxied ? cpu : undefined,
    cpuPerOp: proxied && res.totalRequests > 0 ? (cpu.totalS * 1e6) / res.totalRequests : Number.NaN,
    busyPct: proxied ? (cpu.totalS / (r.elapsedMs / 1000)) * 100 : Number.NaN,
    ...shares(cpu, r.elapsedMs / 1000),
  };
}

async function measureIperf(t: Target, c: CaseDef, repeat: number): Promise<Sample> {
  const port = t.ports[c.endpoint]!;
  // The iperf3 server takes one test at a time and needs a moment to reset after one: retry "busy".
  for (let attempt = 1; ; attempt++) {
    const before = cpuNow(t.pid);
    const r = await group.run(`iperf3-${t.name}`, [...iperfClientArgs("127.0.0.1", port, opts.iperfS), "-O", "1"], {
      ...on(loadCore),
      timeoutMs: (opts.iperfS + 30) * 1000,
    });
    const after = cpuNow(t.pid);
    let res;
    try {
      res = parseIperfJson(r.stdout);
    } catch (err) {
      if (attempt < 5 && /busy|unable to|control/i.test((err as Error).message)) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        continue;
      }
      throw err;
    }
    const cpu = usage(before, after);
    const proxied = t.pid !== undefined;
    return {
      case: c.name,
      target: t.name,
      kind: t.kind,
      repeat,
      throughput: res.gbitPerS,
      offeredRps: Number.NaN,
      p50Ms: Number.NaN,
      p99Ms: Number.NaN,
      ops: res.bytes,
      errors: 0,
      cpu: proxied ? cpu : undefined,
      // CPU counted over the whole run (the omitted first second too), per GB received after it.
      cpuPerOp: proxied && res.bytes > 0 ? (cpu.totalS * 1000) / (res.bytes / 1e9) : Number.NaN,
      busyPct: proxied ? (cpu.totalS / (r.elapsedMs / 1000)) * 100 : Number.NaN,
      ...shares(cpu, r.elapsedMs / 1000),
    };
  }
}

/** One run of the pipelined client against `t`'s echo entrypoint. */
async function pipelineOnce(t: Target, durationS: number) {
  const load = {
    host: "127.0.0.1",
    port: t.ports.echo!,
    connections: opts.pipelineConnections,
    depth: opts.pipelineDepth,
    size: opts.pipelineSize,
    durationS,
  };
  const before = cpuNow(t.pid);
  const r = await group.runOk(`pipeline-${t.name}`, pipelineArgs(bun, load), { ...on(loadCore), timeoutMs: (durationS + 30) * 1000 });
  const after = cpuNow(t.pid);
  return { res: parsePipelineOutput(r.stdout), cpu: usage(before, after), wallS: r.elapsedMs / 1000 };
}

async function measurePipeline(t: Target, c: CaseDef, repeat: number): Promise<Sample> {
  const { res, cpu, wallS } = await pipelineOnce(t, opts.durationS);
  // Each message echoed is the run's unit of work.
  return closedLoopSample(t, c, repeat, { rps: res.mps, requests: res.messages, errors: res.errors, p50Ms: res.p50Ms, p99Ms: res.p99Ms }, cpu, wallS);
}

/** nginx's keep-alive peak (median req/s of its quiet runs, if any) from this run, measuring it if that case was not run. */
async function nginxPeak(nginx: Target): Promise<number> {
  const keep = samples.filter((s) => s.case === "http-keepalive" && s.kind === "nginx");
  const quiet = keep.filter((s) => s.noisePct <= opts.maxNoisePct);
  if (keep.length) return median((quiet.length ? quiet : keep).map((s) => s.throughput));
  log("Measuring nginx's keep-alive peak for the fixed-rate case");
  const c = caseDef("http-keepalive");
  await wrkOnce(nginx, c, opts.warmupS);
  return (await wrkOnce(nginx, c, opts.durationS)).wrk.rps;
}

async function runCase(c: CaseDef, targets: readonly Target[]): Promise<void> {
  const here = targets.filter((t) => t.ports[c.endpoint] !== undefined);
  let rate = 0;
  if (c.load === "h2load") {
    const nginx = targets.find((t) => t.kind === "nginx");
    if (!nginx || !alive(nginx)) {
      failures.push({ case: c.name, target: "nginx", message: "No nginx to set the rate: case skipped" });
      return;
    }
    rate = Math.round((await nginxPeak(nginx)) / 2);
    log(`${c.name}: ${rate} req/s over ${opts.rateClients} connections (half of nginx's keep-alive peak)`);
  }
  if (c.load === "wrk" || c.load === "pipeline" || c.load === "h2load-h2c") {
    for (const t of here) {
      if (!alive(t)) continue;
      try {
        if (c.load === "wrk") await wrkOnce(t, c, opts.warmupS);
        else if (c.load === "h2load-h2c") await h2cOnce(t, c, opts.warmupS);
        else await pipelineOnce(t, opts.warmupS);
      } catch (err) {
        failures.push({ case: c.name, target: t.name, message: `Warm-up failed: ${(err as Error).message}` });
      }
    }
  }
  for (let repeat = 1; repeat <= opts.repeat; repeat++) {
    for (const t of here) {
      if (!alive(t)) {
        failures.push({ case: c.name, target: t.name, message: `Process exited: ${t.daemon?.logTail(5) ?? ""}` });
        continue;
      }
      try {
        const s = await quiet.measure(() => {
          switch (c.load) {
            case "wrk":
              return measureWrk(t, c, repeat);
            case "h2load":
              return measureRate(t, c, repeat, rate);
            case "pipeline":
              return measurePipeline(t, c, repeat);
            case "iperf3":
              return measureIperf(t, c, repeat);
            case "h2load-h2c":
              return measureH2c(t, c, repeat);
          }
        }, (s) => `${s.case} / ${s.target}`);
        samples.push(s);
        const unit = c.load === "pipeline" ? "msg/s" : "req/s";
        const tp =
          c.load === "iperf3"
            ? `${s.throughput.toFixed(2)} Gbit/s`
            : `${Math.round(s.throughput)} ${unit}${Number.isFinite(s.p99Ms) ? `, p99 ${s.p99Ms.toFixed(2)} ms` : ""}`;
        log(`${c.name} #${repeat} ${t.name}: ${tp}, proxy CPU ${Number.isFinite(s.busyPct) ? Math.round(s.busyPct) : "-"}%, ${multi === undefined ? "load core" : "load side"} ${Math.round(s.loadCorePct)}%, other processes ${Math.round(s.noisePct)}%${s.attempts > 1 ? ` (attempt ${s.attempts})` : ""}, errors ${s.errors}`);
      } catch (err) {
        failures.push({ case: c.name, target: t.name, message: (err as Error).message });
        log(`${c.name} #${repeat} ${t.name} failed: ${(err as Error).message}`);
      }
    }
  }
}

async function startTargets(b: Backends): Promise<Target[]> {
  const targets: Target[] = [];
  // In multi-core mode --workers comes last, so it wins over one in --kubegate-args.
  const workers = (n: number) => (multi === undefined ? [] : ["--workers", String(n)]);
  const kubegates: { name: string; args: readonly string[] }[] = opts.noKubegate
    ? []
    : [
        { name: "kubegate", args: [...opts.kubegateArgs, ...workers(multi ?? 1)] },
        ...(multi === undefined ? [] : [{ name: multiBaseline, args: [...opts.kubegateArgs, ...workers(1)] }]),
        ...opts.variants.map((v) => ({ name: v.name, args: [...v.args, ...workers(multi ?? 1)] })),
      ];
  // Rows with tracing on export to a loopback OTLP sink on the load core (only they get its endpoint: an
  // OTEL_EXPORTER_OTLP_ENDPOINT alone turns kubegate's tracing on).
  if (kubegates.some((k) => tracingOn(k.args))) {
    otlpSink = await startOtlpSink(group, ports, loadCore);
    loadPids.push(otlpSink.daemon.pid);
    log(`OTLP trace sink on ${otlpSink.endpoint} for ${kubegates.filter((k) => tracingOn(k.args)).map((k) => k.name).join(", ")}`);
  }
  for (const k of kubegates) {
    try {
      const env = otlpSink && tracingOn(k.args) ? { OTEL_EXPORTER_OTLP_ENDPOINT: otlpSink.endpoint } : undefined;
      const t = await startKubegate(group, ports, tmp, proxyCore, b, k.name, k.args, opts.bunArgs, env);
      if (t.daemon) kubegateDaemons.push(t.daemon);
      targets.push(t);
      log(`${k.name} is serving`);
    } catch (err) {
      failures.push({ case: "setup", target: k.name, message: (err as Error).message });
      log(`${k.name} did not start; continuing without it: ${(err as Error).message}`);
    }
  }
  targets.push(await startNginxProxy(group, ports, tmp, proxyCore, b, multi ?? 1));
  targets.push(await startHaproxy(group, ports, tmp, proxyCore, b, multi ?? 1));
  targets.push(directTarget(b));
  return targets;
}

async function main(): Promise<number> {
  log(multi === undefined ? `Temp dir ${tmp}; proxy core ${proxyCore}, load core ${loadCore}` : `Temp dir ${tmp}; multi-core mode: ${multi} workers/threads per proxy, nothing pinned`);
  const versions = toolVersions();
  const backends = await startBackends(group, ports, tmp, loadCore);
  loadPids = backends.daemons.map((d) => d.pid);
  log(`Backends on ${backends.http.join(", ")} (HTTP), ${backends.iperf} (iperf3), ${backends.echo} (echo) and ${backends.h2c.join(", ")} (h2c)`);
  const targets = await startTargets(backends);
  log(`Targets: ${targets.map((t) => t.name).join(", ")}`);
  for (const c of selected) {
    log(`Case ${c.name}: ${c.title}`);
    await runCase(c, targets);
  }

  const raw: RawRun = {
    startedAt: startedAt.toISOString(),
    options: opts,
    cores: proxyCore === undefined || loadCore === undefined ? null : { proxy: proxyCore, load: loadCore },
    nice: nice ?? null,
    irqTimeAccounting: irqTimeAccounting(),
    machine: machineInfo(),
    loadBefore,
    versions,
    kubegates: targets.filter((t) => t.kind === "kubegate").map((t) => t.name),
    quietWaitedS: quiet.waitedS,
    samples,
    failures,
  };
  if (otlpSink) {
    const st = await otlpSink.stats();
    log(st ? `OTLP trace sink received ${st.spans} spans in ${st.requests} requests (${(st.bytes / 1e6).toFixed(1)} MB)` : "OTLP trace sink: no stats (it exited?)");
  }
  const { md, rows } = renderReport(raw);
  console.log(md);
  const jsonPath = opts.jsonPath ?? join(tmpdir(), `kubegate-bench-${raw.startedAt.replace(/[:.]/g, "-")}.json`);
  writeFileSync(jsonPath, JSON.stringify({ ...raw, rows }, null, 2));
  if (opts.mdPath) writeFileSync(opts.mdPath, `${md}\n`);
  log(`Raw numbers: ${jsonPath}`);
  return failures.some((f) => f.case !== "setup") || rows.length === 0 ? 1 : 0;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error(`Benchmark failed: ${(err as Error).message}`);
} finally {
  clearTimeout(watchdog);
  // kubegate first and with time to drain, so that a profile asked for with --bun-args gets written.
  await Promise.all(
    kubegateDaemons.map(async (d) => {
      const t0 = performance.now();
      await group.stop(d, 10_000);
      const code = d.hasExited() ? await d.exited : "none";
      log(`${d.name} stopped in ${Math.round(performance.now() - t0)} ms (exit code ${code})`);
    }),
  );
  await group.stopAll();
  cleanupSync();
}
process.exit(code);
