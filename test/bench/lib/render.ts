/**
 * The report of one run, from its raw numbers alone: the method lines, the table and the target
 * checks. `run.ts` renders it at the end of a run, and `--from-json` renders it again from the
 * JSON a run wrote (e.g. after changing how rows are aggregated), without running anything.
 */
import type { BenchOptions } from "./args.ts";
import { h2cClients, h2cStreams } from "./h2load.ts";
import { aggregate, checkMultiTargets, checkTargets, renderTable, renderTargets, type Row, type Sample } from "./report.ts";
import { median } from "./stats.ts";
import type { MachineInfo } from "./tools.ts";

/** A run that failed, reported beside the table. */
export interface Failure {
  readonly case: string;
  readonly target: string;
  readonly message: string;
}

/** Everything a run recorded: what the JSON file holds. */
export interface RawRun {
  readonly startedAt: string;
  readonly options: BenchOptions;
  /** The pinned cores; null in multi-core mode (nothing pinned). */
  readonly cores: { readonly proxy: number; readonly load: number } | null;
  /** The niceness of the benchmark's processes (null when not changed). */
  readonly nice: number | null;
  readonly irqTimeAccounting: boolean;
  /** The machine at the end of the run. */
  readonly machine: MachineInfo;
  readonly loadBefore: readonly number[];
  readonly versions: Readonly<Record<string, string>>;
  readonly kubegates: readonly string[];
  readonly quietWaitedS: number;
  readonly samples: readonly Sample[];
  readonly failures: readonly Failure[];
}

/** The name of the kubegate --workers 1 row of a multi-core run (the baseline of its ratios). */
export const multiBaseline = "kubegate-w1";

const numericSampleFields = ["throughput", "offeredRps", "p50Ms", "p99Ms", "ops", "errors", "cpuPerOp", "busyPct", "loadCorePct", "noisePct", "attempts"] as const;

/**
 * A RawRun read back from JSON: JSON has no NaN (it writes null), so numeric sample fields that
 * are null become NaN again.
 */
export function reviveRawRun(json: unknown): RawRun {
  const raw = json as RawRun;
  const samples = raw.samples.map((s) => {
    const out: Record<string, unknown> = { ...s };
    for (const k of numericSampleFields) if (out[k] === null || out[k] === undefined) out[k] = Number.NaN;
    return out as unknown as Sample;
  });
  return { ...raw, samples };
}

function noiseLine(raw: RawRun): string {
  const { samples, options: o } = raw;
  if (!samples.length) return "";
  const noise = samples.map((s) => s.noisePct);
  const load = samples.map((s) => s.loadCorePct);
  const reruns = samples.reduce((a, s) => a + s.attempts - 1, 0);
  const noisy = samples.filter((s) => s.noisePct > o.maxNoisePct).length;
  return (
    `Noise: other processes on this machine took ${Math.round(median(noise))}% of a core during a run (median; max ${Math.round(Math.max(...noise))}%).` +
    ` Before each run the harness waited up to ${o.quietWaitS} s for them to drop below ${o.maxNoisePct}% (${Math.round(raw.quietWaitedS)} s in all); runs above it were repeated up to ${o.noiseRetries} times (${reruns} re-runs) and ${noisy} stayed above it.` +
    ` A row's medians come from its quiet runs when it has any ("Runs": used/all). ` +
    (raw.cores === null
      ? `The load side (load generator, backends, harness) took ${Math.round(median(load))}% of a core (median).`
      : `The load core was ${Math.round(median(load))}% busy (median).`)
  );
}

/** How the h2c case loads the proxies (the same sentence pinned or not). */
function h2cMethod(o: BenchOptions): string {
  return (
    `h2c: h2load -t1 -c${h2cClients} -m${h2cStreams} over HTTP/2 with prior knowledge, ${o.durationS} s per run after ${o.warmupS} s of warm-up per proxy; HTTP/2 cleartext on both sides` +
    " (haproxy `proto h2` on the bind and server lines with http-reuse always; kubegate appProtocol kubernetes.io/h2c; no nginx row: nginx has no HTTP/2 upstream)" +
    " to two h2c origins beside the other backends (test/bench/backends/h2c-backend.ts: kubegate's HTTP/2 session answering 200 \"ok\"); p50/p99 left empty (h2load's per-request log would make the load core the limit)."
  );
}

/** The method lines of a multi-core (unpinned) run. */
function multiMethodLines(raw: RawRun, n: number): string[] {
  const { machine: m, versions: v, options: o } = raw;
  return [
    `Machine: ${m.nproc} cores (${m.cpuModel}), ${m.memGiB} GiB, ${m.os}, kernel ${m.kernel}; load average ${raw.loadBefore.join(" ")} at start, ${m.loadavg.join(" ")} at end.`,
    `Versions: bun ${v.bun}, ${v.nginx}, haproxy ${v.haproxy}, ${v.wrk}, h2load ${v.h2load}, ${v.iperf3}.`,
    `Multi-core mode (--multi ${n}), nothing pinned: nginx worker_processes ${n} with reuseport and upstream keepalive 64; haproxy nbthread ${n}; ` +
      `kubegate --workers ${n} (row kubegate) and kubegate --workers 1 (row ${multiBaseline}); the load generator and the backends (2 nginx, 1 worker each; iperf3; echo) share the same cores.` +
      (raw.nice === null ? "" : ` All benchmark processes run at nice ${raw.nice}.`),
    `Load: wrk -t${o.threads} -c${o.connections}, ${o.durationS} s per run after ${o.warmupS} s of warm-up per proxy and case; ${o.repeat} run(s) per proxy, interleaved; medians shown.` +
      ` Pipelined: ${o.pipelineConnections} connections x ${o.pipelineDepth} messages of ${o.pipelineSize} B in flight.` +
      (o.cases.includes("h2c") ? ` ${h2cMethod(o)}` : ""),
    "CPU/op: the proxy's process tree utime+stime (every worker process or thread) per request or message; unpinned, softirq time cannot be attributed to a proxy and is not added" +
      (raw.irqTimeAccounting ? " (this kernel accounts it apart, so it is left out for every proxy alike)." : " (this kernel has no CONFIG_IRQ_TIME_ACCOUNTING, so softirq work run in the proxy's context is in its stime).") +
      ` Proxy CPU: that time over wall time (100% = one core). "× kubegate --workers 1": throughput and CPU/op over the ${multiBaseline} row's, paired per repeat.`,
    "kubegate flags: defaults plus --no-access-log" +
      (o.kubegateArgs.length ? `, plus ${o.kubegateArgs.join(" ")}` : "") +
      `, then --workers ${n} or --workers 1` +
      (o.bunArgs.length ? `; bun flags: ${o.bunArgs.join(" ")}` : "") +
      o.variants.map((x) => `; row ${x.name}: defaults plus --no-access-log ${x.args.join(" ")} --workers ${n}`).join("") +
      ".",
    noiseLine(raw),
  ].filter(Boolean);
}

/** The method lines of the report. */
export function methodLines(raw: RawRun): string[] {
  const { machine: m, versions: v, options: o, cores } = raw;
  if (o.multi !== undefined || cores === null) return multiMethodLines(raw, o.multi ?? 2);
  return [
    `Machine: ${m.nproc} cores (${m.cpuModel}), ${m.memGiB} GiB, ${m.os}, kernel ${m.kernel}; load average ${raw.loadBefore.join(" ")} at start, ${m.loadavg.join(" ")} at end.`,
    `Versions: bun ${v.bun}, ${v.nginx}, haproxy ${v.haproxy}, ${v.wrk}, h2load ${v.h2load}, ${v.iperf3}.`,
    `Pinning (taskset): proxy under test on core ${cores.proxy}; wrk/h2load/iperf3/the pipelined client, the backends (2 nginx, 1 worker each; an iperf3 server; an echo server) and the harness on core ${cores.load}.` +
      (raw.nice === null ? "" : ` All benchmark processes run at nice ${raw.nice}.`),
    `Load: wrk -t1 -c${o.connections}, ${o.durationS} s per run after ${o.warmupS} s of warm-up per proxy and case; ${o.repeat} run(s) per proxy, interleaved; medians shown.` +
      ` Fixed rate: h2load --h1 -c${o.rateClients} --rps, ${o.durationS} s measured after ${o.warmupS} s. iperf3: 1 stream, ${o.iperfS} s (first second omitted).` +
      // Runs made before the pipelined case existed have no pipeline options.
      (o.pipelineConnections === undefined
        ? ""
        : ` Pipelined (tcp-pipelined): ${o.pipelineConnections} connections to an echo backend, each keeping ${o.pipelineDepth} messages of ${o.pipelineSize} B in flight, one write per message (test/bench/load/pipeline-client.ts).`) +
      (o.cases.includes("h2c") ? ` ${h2cMethod(o)}` : ""),
    (raw.irqTimeAccounting
      ? `CPU/op: proxy process tree utime+stime plus core ${cores.proxy} softirq time (loopback work), per request or message (µs) or per GB (ms).`
      : `CPU/op: proxy process tree utime+stime, per request or message (µs) or per GB (ms); this kernel has no CONFIG_IRQ_TIME_ACCOUNTING, so that stime already holds the softirq (loopback) work run in the proxy's context, and core ${cores.proxy}'s softirq column is not added again.`) +
      " Proxy CPU: the same time over wall time (100% = the proxy's core is saturated). Noise: CPU other processes took on both cores during the run, in % of a core.",
    "kubegate flags: defaults plus --no-access-log (nginx and haproxy log nothing either)" +
      (o.kubegateArgs.length ? `, plus ${o.kubegateArgs.join(" ")}` : "") +
      (o.bunArgs.length ? `; bun flags: ${o.bunArgs.join(" ")}` : "") +
      o.variants.map((x) => `; row ${x.name}: defaults plus --no-access-log ${x.args.join(" ")}`).join("") +
      (o.variants.length ? "." : '; tracing is off unless a variant turns it on (--kubegate-variant="trace0=--tracing --tracing-sample-ratio 0").'),
    noiseLine(raw),
  ].filter(Boolean);
}

/** The whole markdown report and the rows behind it. */
export function renderReport(raw: RawRun): { readonly md: string; readonly rows: Row[] } {
  const multi = raw.options.multi;
  const rows = aggregate(raw.samples, raw.options.maxNoisePct, multi === undefined ? undefined : multiBaseline);
  const kubegates = raw.kubegates.length ? raw.kubegates : ["kubegate"];
  const sections = [
    `## Data-plane benchmark${multi === undefined ? "" : `, ${multi} workers`} (${raw.startedAt}${raw.options.quick ? ", --quick" : ""})`,
    methodLines(raw)
      .map((line) => `- ${line}`)
      .join("\n"),
    renderTable(rows, multi === undefined ? undefined : "kubegate --workers 1"),
    ...(multi === undefined
      ? kubegates.map((k) => `Targets for ${k}:\n\n${renderTargets(checkTargets(rows, k))}`)
      : kubegates.filter((k) => k !== multiBaseline).map((k) => `Targets for ${k} (--workers ${multi}):\n\n${renderTargets(checkMultiTargets(rows, k, multiBaseline))}`)),
  ];
  if (raw.failures.length) sections.push(`Failures:\n${raw.failures.map((f) => `- ${f.case} / ${f.target}: ${f.message.split("\n")[0]}`).join("\n")}`);
  return { md: sections.join("\n\n"), rows };
}
