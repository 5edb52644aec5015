/**
 * Process metrics under the names every Prometheus client library uses (`process_cpu_seconds_total`,
 * `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds`), so stock
 * dashboards and alerts work, for the process serving `/metrics`; with worker processes, their CPU time and resident
 * memory too (`kubegate_worker_cpu_seconds_total{worker}`, `kubegate_worker_resident_memory_bytes{worker}`, read
 * from `/proc` at each scrape); and the event loop's lag (`kubegate_event_loop_lag_seconds`: the longest delay of a
 * 100 ms timer over the last 10 s, the time a request could wait because the loop was busy).
 *
 *   process_cpu_seconds_total 12.5
 *   kubegate_worker_cpu_seconds_total{worker="0"} 301.2
 *   kubegate_event_loop_lag_seconds 0.003
 */
import { readFileSync } from "node:fs";
import type { ExpositionWriter } from "./exposition.ts";
import type { Collector } from "./registry.ts";

export const ProcessMetricNames = Object.freeze({
  cpu: "process_cpu_seconds_total",
  rss: "process_resident_memory_bytes",
  openFds: "process_open_fds",
  maxFds: "process_max_fds",
  start: "process_start_time_seconds",
  workerCpu: "kubegate_worker_cpu_seconds_total",
  workerRss: "kubegate_worker_resident_memory_bytes",
  lag: "kubegate_event_loop_lag_seconds",
});

/** CPU seconds and resident bytes of a process, or undefined when unknown. */
export interface ProcessSample {
  readonly cpuSeconds: number;
  readonly residentBytes: number;
}

/** Linux's clock ticks per second for /proc times (USER_HZ is 100 on every Linux ABI in use) and the page size. */
const USER_HZ = 100;
const PAGE = 4096;

/**
 * CPU time and resident memory of process `pid` from `/proc/<pid>/stat` (utime, stime in ticks; rss in pages);
 * undefined when it cannot be read (gone, not Linux).
 */
export function procSample(pid: number, read: (path: string) => string = (p) => readFileSync(p, "utf8")): ProcessSample | undefined {
  let text: string;
  try {
    text = read(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state): utime is field 14, stime 15, rss 24.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  const rss = Number(rest[21]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime) || !Number.isFinite(rss)) return undefined;
  return { cpuSeconds: (utime + stime) / USER_HZ, residentBytes: rss * PAGE };
}

/** The longest delay of a periodic timer over a sliding window: the event loop's recent lag. */
export class LoopLag implements Disposable {
  readonly #intervalMs: number;
  readonly #windowMs: number;
  /** Per slot of the window: the longest delay seen, ms. */
  readonly #slots: number[];
  #slot = 0;
  #expected: number;
  #timer: ReturnType<typeof setInterval>;

  constructor(intervalMs = 100, windowMs = 10_000) {
    this.#intervalMs = intervalMs;
    this.#windowMs = windowMs;
    this.#slots = new Array<number>(Math.max(1, Math.round(windowMs / 1000))).fill(0);
    this.#expected = performance.now() + intervalMs;
    this.#timer = setInterval(() => this.#tick(), intervalMs);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  #tick(): void {
    const now = performance.now();
    const delay = Math.max(0, now - this.#expected);
    this.#expected = now + this.#intervalMs;
    const slot = Math.floor(now / 1000) % this.#slots.length;
    if (slot !== this.#slot) {
      this.#slot = slot;
      this.#slots[slot] = 0;
    }
    if (delay > this.#slots[slot]!) this.#slots[slot] = delay;
  }

  /** The longest lag over the window, seconds. */
  seconds(): number {
    return Math.max(...this.#slots) / 1000;
  }

  get windowMs(): number {
    return this.#windowMs;
  }

  [Symbol.dispose](): void {
    clearInterval(this.#timer);
  }
}

export interface ProcessMetricsOptions {
  /** Open descriptors and the soft limit of this process (see `rt.openFiles`, `rt.fileLimit`). */
  readonly files?: (() => { open?: number | undefined; limit?: number | undefined }) | undefined;
  /** The worker processes (index and pid), read at each scrape. */
  readonly workers?: (() => readonly { worker: number; pid: number }[]) | undefined;
  /** Reads a worker's /proc sample (tests). */
  readonly sample?: ((pid: number) => ProcessSample | undefined) | undefined;
}

/**
 * The collector.
 *
 * @example
 * registry.register(new ProcessMetrics({ files: () => ({ open: rt.openFiles(), limit: rt.fileLimit()?.soft }) }));
 */
export class ProcessMetrics implements Collector, Disposable {
  readonly names: readonly string[] = Object.freeze(Object.values(ProcessMetricNames));
  readonly #o: ProcessMetricsOptions;
  readonly #lag = new LoopLag();
  readonly #start = Math.round((Date.now() - performance.now()) / 10) / 100;

  constructor(options: ProcessMetricsOptions = {}) {
    this.#o = options;
  }

  collect(out: ExpositionWriter): void {
    const N = ProcessMetricNames;
    const cpu = process.cpuUsage();
    out.family(N.cpu, "Total user and system CPU time of the process serving /metrics, seconds.", "counter");
    out.sample(N.cpu, "", (cpu.user + cpu.system) / 1e6);
    out.family(N.rss, "Resident memory of the process serving /metrics, bytes.", "gauge");
    out.sample(N.rss, "", process.memoryUsage.rss());
    const files = this.#o.files?.();
    if (files?.open !== undefined) {
      out.family(N.openFds, "Open file descriptors of the process serving /metrics.", "gauge");
      out.sample(N.openFds, "", files.open);
    }
    if (files?.limit !== undefined && Number.isFinite(files.limit)) {
      out.family(N.maxFds, "The process's file descriptor limit (soft RLIMIT_NOFILE).", "gauge");
      out.sample(N.maxFds, "", files.limit);
    }
    out.family(N.start, "Start time of the process since the Unix epoch, seconds.", "gauge");
    out.sample(N.start, "", this.#start);
    out.family(N.lag, "The longest delay of the event loop of the process serving /metrics over the last 10 s, seconds.", "gauge");
    out.sample(N.lag, "", this.#lag.seconds());
    const workers = this.#o.workers?.();
    if (workers === undefined || workers.length === 0) return;
    const read = this.#o.sample ?? procSample;
    const samples = workers.map((w) => ({ worker: w.worker, s: read(w.pid) })).filter((x) => x.s !== undefined);
    out.family(N.workerCpu, "Total user and system CPU time of each data plane worker process, seconds (Linux /proc).", "counter");
    for (const { worker, s } of samples) out.sample(N.workerCpu, `worker="${worker}"`, s!.cpuSeconds);
    out.family(N.workerRss, "Resident memory of each data plane worker process, bytes (Linux /proc).", "gauge");
    for (const { worker, s } of samples) out.sample(N.workerRss, `worker="${worker}"`, s!.residentBytes);
  }

  [Symbol.dispose](): void {
    this.#lag[Symbol.dispose]();
  }
}
