/**
 * Per-worker series of a data plane run as worker processes: whether each worker is up, its open connections and
 * how often it was started again. Labelled `worker` (the worker's index, 0..N-1, stable across its restarts), so
 * the number of series is the number of workers. Everything else is the node's, summed (`node-traffic.ts`).
 */
import type { ExpositionWriter } from "./exposition.ts";
import type { Collector } from "./registry.ts";

/** One worker as these metrics read it (the data plane's `WorkerStatus` fits). */
export interface WorkerView {
  /** The worker's index. */
  readonly worker: number;
  /** Started and reporting. */
  readonly ready: boolean;
  /** Times the worker was started again after it exited. */
  readonly restarts: number;
  /** Its open downstream connections (as of its latest report). */
  readonly connections: number;
}

/** Metric family names of the per-worker series. */
export const WorkerMetricNames = Object.freeze({
  up: "kubegate_worker_up",
  connections: "kubegate_worker_connections",
  restarts: "kubegate_worker_restarts_total",
});

/**
 * The per-worker collector; `workers` is read at each scrape.
 *
 * @example
 * registry.register(new WorkerMetrics(() => pool.workers()));
 * // kubegate_worker_up{worker="0"} 1
 */
export class WorkerMetrics implements Collector {
  readonly names: readonly string[] = Object.freeze(Object.values(WorkerMetricNames));
  readonly #workers: () => readonly WorkerView[];

  constructor(workers: () => readonly WorkerView[]) {
    this.#workers = workers;
  }

  collect(out: ExpositionWriter): void {
    const workers = [...this.#workers()].sort((a, b) => a.worker - b.worker);
    const N = WorkerMetricNames;
    out.family(N.up, "1 while the data plane worker process is started and reporting, 0 while it is being replaced.", "gauge");
    for (const w of workers) out.sample(N.up, `worker="${w.worker}"`, w.ready ? 1 : 0);
    out.family(N.connections, "Open downstream connections of the data plane worker process (its latest report).", "gauge");
    for (const w of workers) out.sample(N.connections, `worker="${w.worker}"`, w.connections);
    out.family(N.restarts, "Times the data plane worker process was started again after it exited.", "counter");
    for (const w of workers) out.sample(N.restarts, `worker="${w.worker}"`, w.restarts);
  }
}
