/**
 * CPU accounting from /proc: the busy time of a process tree (utime + stime of every process in
 * it; a process's /proc/<pid>/stat already sums all its threads, live and exited) and the per-core
 * counters of /proc/stat, whose softirq column is where loopback network work lands.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { descendants } from "./procs.ts";

/** The per-core counters of one `cpuN` line of /proc/stat, in clock ticks. */
export interface CoreTicks {
  readonly user: number;
  readonly nice: number;
  readonly system: number;
  readonly idle: number;
  readonly iowait: number;
  readonly irq: number;
  readonly softirq: number;
  readonly steal: number;
}

/** One reading, taken before and after a load run. */
export interface CpuSample {
  /** utime + stime of the process tree, in clock ticks (0 without a process). */
  readonly procTicks: number;
  readonly core: CoreTicks;
}

/** What a run cost, in seconds. */
export interface CpuUsage {
  /** Busy time of the proxy's process tree (user + system, all threads). */
  readonly procS: number;
  /** Softirq time of the proxy's core (loopback packet processing). */
  readonly softirqS: number;
  /** The figure the table reports: `procS + softirqS`. */
  readonly totalS: number;
  /** Everything the proxy's core did (user+nice+system+irq+softirq), whoever did it: a cross-check. */
  readonly coreBusyS: number;
  /** Time the hypervisor took from the proxy's core. */
  readonly stealS: number;
}

let hz: number | undefined;

/** Clock ticks per second (`getconf CLK_TCK`, 100 when that fails). */
export function clockTicksPerSecond(): number {
  if (hz === undefined) {
    const out = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
    const n = Number(out.stdout?.trim());
    hz = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return hz;
}

/**
 * utime + stime (clock ticks) from the text of /proc/<pid>/stat. The command name in field 2 may
 * hold spaces and parentheses, so fields are counted after its last ")".
 * @example procStatTicks("42 (bun) S 1 ... ") // utime + stime
 */
export function procStatTicks(text: string): number {
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`Unexpected /proc/<pid>/stat line: "${text.slice(0, 80)}"`);
  return utime + stime;
}

/**
 * The counters of core `core` from the text of /proc/stat.
 * @throws {Error} when the core has no line.
 */
export function parseCoreTicks(procStat: string, core: number): CoreTicks {
  const line = procStat.split("\n").find((l) => l.startsWith(`cpu${core} `));
  if (!line) throw new Error(`No "cpu${core}" line in /proc/stat`);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return { user, nice, system, idle, iowait, irq, softirq, steal };
}

/** utime + stime of `pid` and all its descendants, in clock ticks; processes that vanished count 0. */
export function treeTicks(pid: number): number {
  let total = 0;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      total += procStatTicks(readFileSync(`/proc/${p}/stat`, "utf8"));
    } catch {
      // Exited between listing and reading.
    }
  }
  return total;
}

/** Read the proxy tree's ticks (when `pid` is given) and core `core`'s counters now. */
export function sampleCpu(pid: number | undefined, core: number): CpuSample {
  return { procTicks: pid === undefined ? 0 : treeTicks(pid), core: parseCoreTicks(readFileSync("/proc/stat", "utf8"), core) };
}

/** The usage between two samples, in seconds. */
export function cpuUsage(before: CpuSample, after: CpuSample, ticksPerSecond = clockTicksPerSecond()): CpuUsage {
  const d = (k: keyof CoreTicks) => (after.core[k] - before.core[k]) / ticksPerSecond;
  const procS = (after.procTicks - before.procTicks) / ticksPerSecond;
  const softirqS = d("softirq");
  return {
    procS,
    softirqS,
    totalS: procS + softirqS,
    coreBusyS: d("user") + d("nice") + d("system") + d("irq") + d("softirq"),
    stealS: d("steal"),
  };
}
