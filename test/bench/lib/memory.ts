/** Memory of a process tree per worker count, and the table of `worker-rss.ts` (pure: numbers in, text out). */

/** One process's memory, KiB. */
export interface ProcMemory {
  readonly pid: number;
  readonly rssKiB: number;
  /** NaN when /proc/<pid>/smaps_rollup could not be read. */
  readonly pssKiB: number;
}

/** A process tree's memory: the root (the control plane) and every process in it, root first. */
export interface TreeMemory {
  readonly root: number;
  readonly procs: readonly ProcMemory[];
}

/** One row of the table: the medians over the runs of one worker count. */
export interface MemoryRow {
  readonly workers: number;
  readonly processes: number;
  readonly rssMiB: number;
  readonly pssMiB: number;
  /** The root process (control plane, and the data plane too with one worker). */
  readonly rootRssMiB: number;
  /** Median RSS of the processes other than the root (NaN without any). */
  readonly childRssMiB: number;
  /** (RSS with N workers - RSS with 1) / (N - 1); NaN for N = 1. */
  readonly rssPerAddedMiB: number;
  readonly pssPerAddedMiB: number;
  /**
   * (RSS with N - RSS with the previous count M) / (N - M): the cost of one more worker process once the data plane
   * runs in workers at all (1 -> 2 also moves the data plane out of the gateway's process); NaN for the first row.
   */
  readonly rssStepMiB: number;
  readonly pssStepMiB: number;
}

const mib = (kib: number) => kib / 1024;

/**
 * Rows per worker count (ascending), each the `median` of its runs, with the growth per added worker against the
 * 1-worker row.
 * @throws {Error} when there is no 1-worker measurement.
 */
export function memoryRows(measured: ReadonlyMap<number, readonly TreeMemory[]>, median: (xs: readonly number[]) => number): MemoryRow[] {
  const base = measured.get(1);
  if (!base?.length) throw new Error("No --workers 1 measurement to compare with");
  const total = (t: TreeMemory, k: "rssKiB" | "pssKiB") => mib(t.procs.reduce((a, p) => a + p[k], 0));
  const baseRss = median(base.map((t) => total(t, "rssKiB")));
  const basePss = median(base.map((t) => total(t, "pssKiB")));
  const rows = [...measured.entries()]
    .sort(([a], [b]) => a - b)
    .map(([workers, trees]) => {
      const rssMiB = median(trees.map((t) => total(t, "rssKiB")));
      const pssMiB = median(trees.map((t) => total(t, "pssKiB")));
      const children = trees.flatMap((t) => t.procs.filter((p) => p.pid !== t.root).map((p) => mib(p.rssKiB)));
      return {
        workers,
        processes: median(trees.map((t) => t.procs.length)),
        rssMiB,
        pssMiB,
        rootRssMiB: median(trees.map((t) => mib(t.procs.find((p) => p.pid === t.root)?.rssKiB ?? Number.NaN))),
        childRssMiB: children.length ? median(children) : Number.NaN,
        rssPerAddedMiB: workers > 1 ? (rssMiB - baseRss) / (workers - 1) : Number.NaN,
        pssPerAddedMiB: workers > 1 ? (pssMiB - basePss) / (workers - 1) : Number.NaN,
      };
    });
  return rows.map((r, i) => {
    const prev = rows[i - 1];
    return {
      ...r,
      rssStepMiB: prev ? (r.rssMiB - prev.rssMiB) / (r.workers - prev.workers) : Number.NaN,
      pssStepMiB: prev ? (r.pssMiB - prev.pssMiB) / (r.workers - prev.workers) : Number.NaN,
    };
  });
}

const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : "—");

/** The markdown table of `rows`. */
export function renderMemoryTable(rows: readonly MemoryRow[]): string {
  const lines = [
    "| --workers | Processes | RSS total MiB | PSS total MiB | Control-plane process RSS MiB | Worker process RSS MiB (median) | RSS per added worker MiB (vs 1) | PSS per added worker MiB (vs 1) | RSS per worker MiB (vs previous row) | PSS per worker MiB (vs previous row) |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    lines.push(`| ${r.workers} | ${r.processes} | ${f1(r.rssMiB)} | ${f1(r.pssMiB)} | ${f1(r.rootRssMiB)} | ${f1(r.childRssMiB)} | ${f1(r.rssPerAddedMiB)} | ${f1(r.pssPerAddedMiB)} | ${f1(r.rssStepMiB)} | ${f1(r.pssStepMiB)} |`);
  }
  return lines.join("\n");
}
