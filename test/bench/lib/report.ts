/**
 * From raw samples to the report: medians per case and proxy, ratios to nginx, haproxy, the direct
 * path and (multi-core mode) a baseline row such as kubegate --workers 1, the markdown table, and the
 * issues' targets checked against the same run.
 */
import { type CaseName, caseDef } from "./cases.ts";
import type { CpuUsage } from "./cpu.ts";
import { median, ratio } from "./stats.ts";

/** The kind of thing a target is; ratios compare against the nginx, haproxy and direct targets. */
export type TargetKind = "kubegate" | "nginx" | "haproxy" | "direct";

/** One measured run of one case through one proxy. */
export interface Sample {
  readonly case: CaseName;
  readonly target: string;
  readonly kind: TargetKind;
  readonly repeat: number;
  /** req/s, Gbit/s for iperf3, messages/s for the pipelined case (for the fixed-rate case: the achieved rate). */
  readonly throughput: number;
  /** The offered rate of the fixed-rate case (NaN elsewhere). */
  readonly offeredRps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Requests served, bytes moved for iperf3, messages echoed for the pipelined case. */
  readonly ops: number;
  readonly errors: number;
  /** Proxy CPU (absent for the direct path). */
  readonly cpu: CpuUsage | undefined;
  /** µs of proxy CPU per request (per message in the pipelined case), or ms per GB for iperf3; NaN for the direct path. */
  readonly cpuPerOp: number;
  /** Proxy CPU (process + core softirq) as a percentage of the run's wall time; NaN for direct. */
  readonly busyPct: number;
  /** The load generator core's busy time as a percentage of wall time. */
  readonly loadCorePct: number;
  /** CPU that other processes took on both cores during the run, as a percentage of wall time (noise). */
  readonly noisePct: number;
  /** Runs made to get this one (more than 1 when earlier ones were too noisy). */
  readonly attempts: number;
}

/** One row of the table: the medians of a case's samples through one proxy. */
export interface Row {
  readonly case: CaseName;
  readonly target: string;
  readonly kind: TargetKind;
  readonly label: string;
  /** Runs the medians come from (the quiet ones, when any). */
  readonly runs: number;
  readonly totalRuns: number;
  /** Median share of a core other processes took during those runs. */
  readonly noisePct: number;
  readonly throughput: number;
  readonly throughputMin: number;
  readonly throughputMax: number;
  readonly offeredRps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuPerOp: number;
  readonly busyPct: number;
  readonly errors: number;
  readonly vsNginx: number;
  readonly vsHaproxy: number;
  readonly vsDirect: number;
  readonly p99VsNginx: number;
  readonly cpuVsNginx: number;
  readonly cpuVsHaproxy: number;
  /** Ratios to the baseline row of the same case (see {@link aggregate}); NaN without one. */
  readonly vsBaseline: number;
  readonly cpuVsBaseline: number;
}

/** The label of `target` in a case: L4 rows of the proxies say so. */
export function rowLabel(c: CaseName, target: string, kind: TargetKind): string {
  const endpoint = caseDef(c).endpoint;
  if (endpoint === "http" || endpoint === "h2c" || kind === "direct") return target;
  return kind === "haproxy" ? `${target} (tcp mode)` : `${target} (tcp)`;
}

/**
 * Medians per (case, target), in the order first seen, with ratios to the reference targets
 * (paired per repeat, see {@link pairedRatio}) and, given `baseline`, to the target of that name. With
 * `maxNoisePct`, a row uses only its runs during which other processes took at most that much of a
 * core, when it has any (all its runs otherwise).
 */
export function aggregate(samples: readonly Sample[], maxNoisePct = Number.POSITIVE_INFINITY, baseline?: string): Row[] {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const k = `${s.case}\u0000${s.target}`;
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  const base = [...groups.values()].map((all) => {
    const quiet = all.filter((s) => s.noisePct <= maxNoisePct);
    const g = quiet.length ? quiet : all;
    const first = g[0]!;
    const tp = g.map((s) => s.throughput);
    return {
      case: first.case,
      target: first.target,
      kind: first.kind,
      label: rowLabel(first.case, first.target, first.kind),
      runs: g.length,
      totalRuns: all.length,
      noisePct: median(g.map((s) => s.noisePct)),
      throughput: median(tp),
      throughputMin: Math.min(...tp),
      throughputMax: Math.max(...tp),
      offeredRps: median(g.map((s) => s.offeredRps)),
      p50Ms: median(g.map((s) => s.p50Ms)),
      p99Ms: median(g.map((s) => s.p99Ms)),
      cpuPerOp: median(g.map((s) => s.cpuPerOp)),
      busyPct: median(g.map((s) => s.busyPct)),
      errors: g.reduce((a, s) => a + s.errors, 0),
      used: g,
    };
  });
  const named = (c: CaseName, target: string) => base.find((b) => b.case === c && b.target === target);
  return base.map(({ used, ...r }) => {
    const ref = (kind: TargetKind) => base.find((b) => b.case === r.case && b.kind === kind);
    const nginx = ref("nginx");
    const haproxy = ref("haproxy");
    const direct = ref("direct");
    const baseRow = baseline === undefined ? undefined : named(r.case, baseline);
    return {
      ...r,
      vsNginx: pairedRatio(used, nginx?.used, "throughput"),
      vsHaproxy: pairedRatio(used, haproxy?.used, "throughput"),
      vsDirect: pairedRatio(used, direct?.used, "throughput"),
      p99VsNginx: pairedRatio(used, nginx?.used, "p99Ms"),
      cpuVsNginx: pairedRatio(used, nginx?.used, "cpuPerOp"),
      cpuVsHaproxy: pairedRatio(used, haproxy?.used, "cpuPerOp"),
      vsBaseline: pairedRatio(used, baseRow?.used, "throughput"),
      cpuVsBaseline: pairedRatio(used, baseRow?.used, "cpuPerOp"),
    };
  });
}

/**
 * The ratio of `a` to `b` in `field`: the median of the per-repeat ratios over the repeats both
 * have (runs of one repeat are interleaved, so pairing them cancels slow drift of the machine),
 * else the ratio of the medians; NaN without `b`.
 */
export function pairedRatio(a: readonly Sample[], b: readonly Sample[] | undefined, field: "throughput" | "p99Ms" | "cpuPerOp"): number {
  if (!b || b.length === 0) return Number.NaN;
  const pairs: number[] = [];
  for (const x of a) {
    const y = b.find((s) => s.repeat === x.repeat);
    if (y) {
      const q = ratio(x[field], y[field]);
      if (Number.isFinite(q)) pairs.push(q);
    }
  }
  if (pairs.length) return median(pairs);
  return ratio(median(a.map((s) => s[field])), median(b.map((s) => s[field])));
}

const dash = "—";
const fx = (v: number) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : dash);
const ms = (v: number) => (Number.isFinite(v) ? (v >= 10 ? v.toFixed(1) : v.toFixed(2)) : dash);

function throughputText(r: Row): string {
  if (!Number.isFinite(r.throughput)) return dash;
  if (r.case === "tcp-iperf3") return `${r.throughput.toFixed(1)} Gbit/s`;
  if (r.case === "tcp-pipelined") return `${Math.round(r.throughput).toLocaleString("en-US")} msg/s`;
  if (Number.isFinite(r.offeredRps)) return `${Math.round(r.throughput).toLocaleString("en-US")} of ${Math.round(r.offeredRps).toLocaleString("en-US")} req/s`;
  return `${Math.round(r.throughput).toLocaleString("en-US")} req/s`;
}

function cpuText(r: Row): string {
  if (!Number.isFinite(r.cpuPerOp)) return dash;
  if (r.case === "tcp-iperf3") return `${Math.round(r.cpuPerOp)} ms/GB`;
  return `${r.cpuPerOp.toFixed(r.cpuPerOp < 1 ? 2 : 1)} µs/${r.case === "tcp-pipelined" ? "msg" : "req"}`;
}

/**
 * The table, one row per (case, proxy). With `baseline` (the label of the baseline target, e.g. "kubegate
 * --workers 1"), two more columns: throughput and CPU/op as multiples of the baseline row's.
 */
export function renderTable(rows: readonly Row[], baseline?: string): string {
  const extra = baseline === undefined ? [] : [`× ${baseline}`, `CPU × ${baseline}`];
  const head = ["Case", "Proxy", "Throughput", "× nginx", "× haproxy", "× direct", ...extra.slice(0, 1), "p50 ms", "p99 ms", "p99 × nginx", "CPU/op", "CPU × nginx", "CPU × haproxy", ...extra.slice(1), "Proxy CPU", "Noise", "Runs", "Errors"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i < 2 ? "---" : "---:")).join("|")}|`];
  for (const r of rows) {
    const cells = [
      r.case,
      r.label,
      throughputText(r),
      fx(r.vsNginx),
      fx(r.vsHaproxy),
      fx(r.vsDirect),
      ...(baseline === undefined ? [] : [fx(r.vsBaseline)]),
      ms(r.p50Ms),
      ms(r.p99Ms),
      fx(r.p99VsNginx),
      cpuText(r),
      fx(r.cpuVsNginx),
      fx(r.cpuVsHaproxy),
      ...(baseline === undefined ? [] : [fx(r.cpuVsBaseline)]),
      Number.isFinite(r.busyPct) ? `${Math.round(r.busyPct)}%` : dash,
      Number.isFinite(r.noisePct) ? `${Math.round(r.noisePct)}%` : dash,
      `${r.runs}/${r.totalRuns}`,
      String(r.errors),
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** One of the targets, checked in this run. */
export interface TargetCheck {
  readonly target: string;
  readonly goal: string;
  readonly measured: string;
  /** undefined when the run lacks the rows to decide. */
  readonly met: boolean | undefined;
}

/** The data-plane targets for the kubegate target named `kubegate`. */
export function checkTargets(rows: readonly Row[], kubegate = "kubegate"): TargetCheck[] {
  const row = (c: CaseName) => rows.find((r) => r.case === c && r.target === kubegate);
  const keep = row("http-keepalive");
  const fixed = row("http-fixed-rate");
  const fixedNginx = rows.find((r) => r.case === "http-fixed-rate" && r.kind === "nginx");
  const tcp = row("tcp-wrk");
  const iperf = row("tcp-iperf3");
  const http64 = row("http-64k");
  const tcp64 = row("tcp-64k");
  const pipelined = row("tcp-pipelined");
  const h2c = row("h2c");
  const decide = (v: number | undefined, ok: (v: number) => boolean) => (v === undefined || !Number.isFinite(v) ? undefined : ok(v));
  return [
    { target: "HTTP keep-alive req/s", goal: ">= 1.10× nginx (1 worker)", measured: fx(keep?.vsNginx ?? Number.NaN), met: decide(keep?.vsNginx, (v) => v >= 1.1) },
    {
      target: "p99 at half nginx's peak rate",
      goal: "<= nginx's p99, sustaining >= 95% of the offered rate",
      measured: fixed
        ? `${ms(fixed.p99Ms)} ms vs ${ms(fixedNginx?.p99Ms ?? Number.NaN)} ms (${fx(fixed.p99VsNginx)}); ${Math.round(fixed.throughput)} of ${Math.round(fixed.offeredRps)} req/s`
        : dash,
      met: decide(fixed?.p99VsNginx, (v) => v <= 1 && fixed!.throughput >= 0.95 * fixed!.offeredRps),
    },
    { target: "TCP (wrk over L4) req/s", goal: ">= 1.00× haproxy tcp mode", measured: fx(tcp?.vsHaproxy ?? Number.NaN), met: decide(tcp?.vsHaproxy, (v) => v >= 1) },
    { target: "TCP (iperf3) Gbit/s", goal: ">= 1.00× haproxy tcp mode", measured: fx(iperf?.vsHaproxy ?? Number.NaN), met: decide(iperf?.vsHaproxy, (v) => v >= 1) },
    { target: "HTTP 64 KiB req/s", goal: ">= 1.00× haproxy (1 thread)", measured: fx(http64?.vsHaproxy ?? Number.NaN), met: decide(http64?.vsHaproxy, (v) => v >= 1) },
    { target: "TCP 64 KiB req/s", goal: ">= 1.00× haproxy tcp mode", measured: fx(tcp64?.vsHaproxy ?? Number.NaN), met: decide(tcp64?.vsHaproxy, (v) => v >= 1) },
    {
      target: "TCP pipelined msg/s",
      goal: ">= 1.00× haproxy tcp mode",
      // One Bun client and one Bun echo server on one core may be the limit rather than the proxy: say so.
      measured:
        fx(pipelined?.vsHaproxy ?? Number.NaN) +
        (pipelined && Number.isFinite(pipelined.busyPct) && pipelined.busyPct < 85 ? ` (proxy CPU ${Math.round(pipelined.busyPct)}%: the load side was the limit; compare CPU/msg)` : ""),
      met: decide(pipelined?.vsHaproxy, (v) => v >= 1),
    },
    {
      target: "TCP pipelined CPU per message",
      goal: "<= 1.00× haproxy tcp mode",
      measured: fx(pipelined?.cpuVsHaproxy ?? Number.NaN),
      met: decide(pipelined?.cpuVsHaproxy, (v) => v <= 1),
    },
    { target: "HTTP/2 h2c req/s", goal: ">= 1.00× haproxy (1 thread, proto h2)", measured: fx(h2c?.vsHaproxy ?? Number.NaN), met: decide(h2c?.vsHaproxy, (v) => v >= 1) },
    { target: "HTTP/2 h2c CPU per request", goal: "<= 1.00× haproxy (1 thread, proto h2)", measured: fx(h2c?.cpuVsHaproxy ?? Number.NaN), met: decide(h2c?.cpuVsHaproxy, (v) => v <= 1) },
  ];
}

/**
 * Issue 13's multi-core targets for `kubegate` (N workers) against nginx (N workers), haproxy (N threads) and
 * `baseline` (kubegate --workers 1), HTTP and TCP, from a `--multi` run.
 */
export function checkMultiTargets(rows: readonly Row[], kubegate = "kubegate", baseline = "kubegate-w1"): TargetCheck[] {
  const row = (c: CaseName) => rows.find((r) => r.case === c && r.target === kubegate);
  const decide = (v: number | undefined, ok: (v: number) => boolean) => (v === undefined || !Number.isFinite(v) ? undefined : ok(v));
  const http = row("http-keepalive");
  const tcp = row("tcp-wrk");
  const check = (target: string, goal: string, v: number | undefined, ok: (v: number) => boolean): TargetCheck => ({
    target,
    goal,
    measured: fx(v ?? Number.NaN),
    met: decide(v, ok),
  });
  return [
    check("HTTP req/s", ">= 1.00× nginx (same workers)", http?.vsNginx, (v) => v >= 1),
    check("HTTP req/s", ">= 1.00× haproxy (same threads)", http?.vsHaproxy, (v) => v >= 1),
    check("TCP req/s", ">= 1.00× haproxy tcp mode (same threads)", tcp?.vsHaproxy, (v) => v >= 1),
    check("HTTP req/s", `>= 1.15× ${baseline}`, http?.vsBaseline, (v) => v >= 1.15),
    check("TCP req/s", `>= 1.15× ${baseline}`, tcp?.vsBaseline, (v) => v >= 1.15),
    check("HTTP CPU per request", `<= 1.05× ${baseline}`, http?.cpuVsBaseline, (v) => v <= 1.05),
    check("TCP CPU per request", `<= 1.05× ${baseline}`, tcp?.cpuVsBaseline, (v) => v <= 1.05),
  ];
}

/** The target checks as a markdown table. */
export function renderTargets(checks: readonly TargetCheck[]): string {
  const lines = ["| Target | Goal | Measured | Met |", "|---|---|---|---|"];
  for (const c of checks) lines.push(`| ${c.target} | ${c.goal} | ${c.measured} | ${c.met === undefined ? "not measured" : c.met ? "yes" : "**no**"} |`);
  return lines.join("\n");
}
