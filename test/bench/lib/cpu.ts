/**
 * CPU accounting from /proc: the busy time of a process tree (utime + stime of every process in
 * it; a process's /proc/<pid>/stat already sums all its threads, live and exited) and the per-core
 * counters of /proc/stat, whose softirq column is where loopback network work lands.
 *
 * Softirq time is counted once. With CONFIG_IRQ_TIME_ACCOUNTING the kernel keeps it out of task
 * times, so the proxy's figure is its process time plus its core's softirq time. Without it
 * (tick-based accounting), a tick that lands in a softirq is charged both to the interrupted
 * task's stime and to the core's softirq column; loopback softirqs run in the sending task's
 * context, so the proxy's stime already holds the softirq work it caused, and adding the column
 * would count it twice.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { release } from "node:os";
import { gunzipSync } from "node:zlib";
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
  /** Ticks of our own processes on the load core: the backends, this script, and its reaped children (the load generators). */
  readonly ownLoadTicks: number;
  /** The proxy's core. */
  readonly core: CoreTicks;
  /** The load generator's core. */
  readonly loadCore: CoreTicks;
}

/** What a run cost, in seconds. */
export interface CpuUsage {
  /** Busy time of the proxy's process tree (user + system, all threads). */
  readonly procS: number;
  /** Softirq time of the proxy's core (loopback packet processing). */
  readonly softirqS: number;
  /**
   * The figure the table reports: `procS + softirqS` when the kernel accounts irq time apart from
   * tasks, else `procS` (which then already holds the softirq work done in the proxy's context).
   */
  readonly totalS: number;
  /** Everything the proxy's core did (user+nice+system+irq+softirq), whoever did it: a cross-check. */
  readonly coreBusyS: number;
  /** Time the hypervisor took from the proxy's core. */
  readonly stealS: number;
  /** Busy time of the proxy's core not charged to the proxy: other processes (noise). */
  readonly foreignS: number;
  /** Busy time of the load core not charged to the backends, this script or the load generator: other processes (noise). */
  readonly foreignLoadS: number;
  /** Busy time of the load generator's core (wrk and the backends): near the wall time means the load side was the limit. */
  readonly loadCoreBusyS: number;
}

let hz: number | undefined;
let irqAccounting: boolean | undefined;

/**
 * Whether the kernel accounts irq/softirq time apart from task times (CONFIG_IRQ_TIME_ACCOUNTING),
 * from /proc/config.gz or /boot/config-<release>; true when neither can be read (the common
 * default of distribution kernels).
 */
export function irqTimeAccounting(): boolean {
  if (irqAccounting === undefined) {
    let config: string | undefined;
    try {
      config = gunzipSync(readFileSync("/proc/config.gz")).toString("utf8");
    } catch {
      try {
        config = readFileSync(`/boot/config-${release()}`, "utf8");
      } catch {
        config = undefined;
      }
    }
    irqAccounting = config === undefined ? true : /^CONFIG_IRQ_TIME_ACCOUNTING=y$/m.test(config);
  }
  return irqAccounting;
}

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

/** A core of /proc/stat, or "all": the summed `cpu` line (for unpinned runs). */
export type CoreId = number | "all";

/**
 * The counters of core `core` (or of all cores summed) from the text of /proc/stat.
 * @throws {Error} when the core has no line.
 */
export function parseCoreTicks(procStat: string, core: CoreId): CoreTicks {
  const prefix = core === "all" ? "cpu " : `cpu${core} `;
  const line = procStat.split("\n").find((l) => l.startsWith(prefix));
  if (!line) throw new Error(`No "${prefix.trim()}" line in /proc/stat`);
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

/** utime + stime + cutime + cstime from the text of /proc/<pid>/stat (the process and its reaped children). */
export function procStatTicksWithChildren(text: string): number {
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return procStatTicks(text) + Number(rest[13]) + Number(rest[14]);
}

/**
 * Read the proxy tree's ticks (when `pid` is given), our own load-side ticks (`loadPids`' trees
 * plus this process with its reaped children) and the counters of both cores, now.
 */
export function sampleCpu(pid: number | undefined, core: CoreId, loadCore: CoreId, loadPids: readonly number[] = []): CpuSample {
  const stat = readFileSync("/proc/stat", "utf8");
  const self = procStatTicksWithChildren(readFileSync("/proc/self/stat", "utf8"));
  return {
    procTicks: pid === undefined ? 0 : treeTicks(pid),
    ownLoadTicks: self + loadPids.reduce((a, p) => a + treeTicks(p), 0),
    core: parseCoreTicks(stat, core),
    loadCore: parseCoreTicks(stat, loadCore),
  };
}

function busy(a: CoreTicks, b: CoreTicks): number {
  return b.user - a.user + (b.nice - a.nice) + (b.system - a.system) + (b.irq - a.irq) + (b.softirq - a.softirq);
}

/** The usage between two samples, in seconds. */
export function cpuUsage(before: CpuSample, after: CpuSample, ticksPerSecond = clockTicksPerSecond(), separateIrqTime = irqTimeAccounting()): CpuUsage {
  const procS = (after.procTicks - before.procTicks) / ticksPerSecond;
  const softirqS = (after.core.softirq - before.core.softirq) / ticksPerSecond;
  const coreBusyS = busy(before.core, after.core) / ticksPerSecond;
  const totalS = separateIrqTime ? procS + softirqS : procS;
  const loadCoreBusyS = busy(before.loadCore, after.loadCore) / ticksPerSecond;
  return {
    procS,
    softirqS,
    totalS,
    coreBusyS,
    stealS: (after.core.steal - before.core.steal) / ticksPerSecond,
    foreignS: Math.max(0, coreBusyS - totalS),
    loadCoreBusyS,
    foreignLoadS: Math.max(
      0,
      loadCoreBusyS - (after.ownLoadTicks - before.ownLoadTicks) / ticksPerSecond - (separateIrqTime ? (after.loadCore.softirq - before.loadCore.softirq) / ticksPerSecond : 0),
    ),
  };
}

/**
 * The usage between two samples of an unpinned run (both taken with core "all"), in seconds. The proxy's figure
 * is its process tree's time only: softirq work cannot be told apart by core when nothing is pinned (with
 * tick-based accounting the softirq work done in the proxy's context is in its stime anyway). `loadCoreBusyS` is
 * our load side's own time (load generator, backends, harness); noise is every core's busy time that is neither
 * the proxy's nor ours (nor, with separate irq accounting, softirq).
 */
export function cpuUsageUnpinned(before: CpuSample, after: CpuSample, ticksPerSecond = clockTicksPerSecond(), separateIrqTime = irqTimeAccounting()): CpuUsage {
  const procS = (after.procTicks - before.procTicks) / ticksPerSecond;
  const softirqS = (after.core.softirq - before.core.softirq) / ticksPerSecond;
  const coreBusyS = busy(before.core, after.core) / ticksPerSecond;
  const ownLoadS = (after.ownLoadTicks - before.ownLoadTicks) / ticksPerSecond;
  return {
    procS,
    softirqS,
    totalS: procS,
    coreBusyS,
    stealS: (after.core.steal - before.core.steal) / ticksPerSecond,
    foreignS: Math.max(0, coreBusyS - procS - ownLoadS - (separateIrqTime ? softirqS : 0)),
    loadCoreBusyS: ownLoadS,
    foreignLoadS: 0,
  };
}

/**
 * How busy other processes kept `cores` over the next `windowMs`: the cores' busy time minus the
 * time of `ownPids`' trees and of this process, as a percentage of one core.
 */
export async function othersBusyPct(ownPids: readonly number[], cores: readonly number[], windowMs: number): Promise<number> {
  const read = () => {
    const stat = readFileSync("/proc/stat", "utf8");
    const busyTicks = cores.reduce((a, c) => {
      const t = parseCoreTicks(stat, c);
      return a + t.user + t.nice + t.system + t.irq + t.softirq;
    }, 0);
    const own = procStatTicksWithChildren(readFileSync("/proc/self/stat", "utf8")) + ownPids.reduce((a, p) => a + treeTicks(p), 0);
    return { busyTicks, own, at: performance.now() };
  };
  const a = read();
  await new Promise((r) => setTimeout(r, windowMs));
  const b = read();
  const seconds = (b.at - a.at) / 1000;
  const otherS = (b.busyTicks - a.busyTicks - (b.own - a.own)) / clockTicksPerSecond();
  return Math.max(0, (otherS / seconds) * 100);
}
