/**
 * The node's per-Service traffic series when the data plane runs as worker processes: each worker records into its
 * own {@link TrafficMetrics} and sends {@link TrafficDump}s; this collector, in the control plane's registry, holds
 * the latest values of every worker and exposes each series once, summed over the workers (counters, histograms and
 * the open-connection gauge alike). Same families, names, labels, HELP and TYPE as one `TrafficMetrics`: it is one.
 *
 * Which Service ports have series, their endpoint counts and the series-cap bookkeeping are this collector's own: it
 * follows the published snapshots ({@link TrafficMetrics.sync}) as every worker does, with the same cap, so it makes
 * the same decisions; only the counters come from the workers. (Over the cap, a restarted worker admits the waiting
 * Service ports in key order, not in arrival order: what a worker counted for a Service port this collector has no
 * series for is not shown, as one process would not have counted it either.)
 *
 * A worker that restarts starts again from zero. So that the node's counters never go backwards, the last values of
 * a replaced or removed worker are folded into a "retired" sum (without its open connections, which died with it),
 * kept while the Service port has a series.
 *
 * Exemplars (OpenMetrics scrapes): per request-duration bucket, the latest of the workers' (by timestamp); those of
 * a retired worker are dropped with it.
 */
import type { Snapshot } from "../../model/types.ts";
import type { Exemplar } from "./exposition.ts";
import { SeriesLayout, type TrafficDump, TrafficMetrics, type TrafficMetricsOptions } from "./traffic.ts";

/** What this collector holds of one worker: its instance's latest values per series key. */
interface WorkerTraffic {
  readonly instance: string;
  seq: number;
  readonly series: Map<string, Float64Array>;
  /** Latest exemplar per request-duration bucket, per series key (only series that have any). */
  readonly exemplars: Map<string, (Exemplar | undefined)[]>;
}

/** Instances of retired workers remembered, to drop their late dumps (a bound, not a tuning knob). */
const RETIRED_INSTANCES = 256;

/**
 * The node's traffic series, summed over worker processes. Register it in the control plane's registry (as the
 * `traffic` of `GatewayMetrics`), call {@link sync} with each snapshot the workers get, {@link update} with each
 * worker's dump, and {@link remove} when a worker exits.
 *
 * @example
 * const node = new NodeTrafficMetrics({ maxSeries: settings.maxTrafficSeries });
 * registry.register(node);
 * node.sync(snapshot);                // with each snapshot sent to the workers
 * node.update(0, report.traffic);     // each worker's TrafficMetrics.dump(), in order
 * node.remove(0);                     // the worker exited (its counts are kept)
 */
export class NodeTrafficMetrics extends TrafficMetrics {
  readonly #workers = new Map<number, WorkerTraffic>();
  /** Counters of workers that are gone, per series key. */
  readonly #retired = new Map<string, Float64Array>();
  /** Instances already retired (their late dumps are ignored), oldest first. */
  readonly #retiredInstances = new Set<string>();

  constructor(options: TrafficMetricsOptions = {}) {
    super(options);
  }

  /**
   * Take worker `worker`'s latest dump. A dump from another instance than the one held for `worker` (the worker
   * was restarted) retires the one held first; a dump from an instance already retired is ignored. Returns false
   * when the dump does not follow the last one taken from its instance (a change dump after a gap, or without a
   * full one first): its series are applied anyway, but series changed in the missed dumps may be stale until the
   * worker sends a full dump (`dump({ full: true })`).
   */
  update(worker: number, dump: TrafficDump): boolean {
    if (this.#retiredInstances.has(dump.instance)) return true;
    let held = this.#workers.get(worker);
    if (held !== undefined && held.instance !== dump.instance) {
      this.#retire(held);
      held = undefined;
    }
    let inOrder = true;
    if (held === undefined) {
      held = { instance: dump.instance, seq: 0, series: new Map(), exemplars: new Map() };
      this.#workers.set(worker, held);
      inOrder = dump.full;
    } else if (dump.full) {
      held.series.clear();
      held.exemplars.clear();
    } else inOrder = dump.seq === held.seq + 1;
    for (const key of dump.removed) {
      held.series.delete(key);
      held.exemplars.delete(key);
    }
    for (const key in dump.series) {
      const values = dump.series[key]!;
      const v = new Float64Array(SeriesLayout.size);
      v.set(values.length > v.length ? values.slice(0, v.length) : values);
      held.series.set(key, v);
    }
    for (const key in dump.exemplars) {
      // The buckets whose exemplar changed replace the ones held; the others stay.
      const ex = dump.exemplars[key]!;
      let into = held.exemplars.get(key);
      if (into === undefined) held.exemplars.set(key, (into = new Array<Exemplar | undefined>(SeriesLayout.exemplarBuckets)));
      const n = Math.min(ex.length, SeriesLayout.exemplarBuckets);
      for (let i = 0; i < n; i++) if (ex[i] != null) into[i] = ex[i]!;
    }
    held.seq = dump.seq;
    return inOrder;
  }

  /** Worker `worker` is gone: keep what it counted (not its open connections) and forget the rest. */
  remove(worker: number): void {
    const held = this.#workers.get(worker);
    if (held === undefined) return;
    this.#workers.delete(worker);
    this.#retire(held);
  }

  /** The workers with values held, in the order they first reported. */
  workers(): number[] {
    return [...this.#workers.keys()];
  }

  /**
   * What worker `worker` (its current process) counted: HTTP responses plus TCP connections and UDP flows, over
   * every Service port (the admin page's per-worker `requests`).
   */
  requestsOf(worker: number): number {
    const held = this.#workers.get(worker);
    if (held === undefined) return 0;
    let n = 0;
    for (const [key, v] of held.series) n += SeriesLayout.requests(SeriesLayout.protocolOf(key), v);
    return n;
  }

  /** Follows the snapshot (see {@link TrafficMetrics.sync}); retired counts of Service ports without a series go. */
  override sync(snapshot: Snapshot): void {
    super.sync(snapshot);
    for (const key of this.#retired.keys()) if (!this.hasSeries(key)) this.#retired.delete(key);
  }

  protected override valuesOf(key: string, own: Float64Array): Float64Array {
    // The common cases allocate nothing: one source (or none) has values for the series.
    let only: Float64Array | undefined;
    let sum: Float64Array | undefined;
    const add = (v: Float64Array | undefined): void => {
      if (v === undefined) return;
      if (sum !== undefined) SeriesLayout.add(sum, v, true);
      else if (only === undefined) only = v;
      else {
        sum = new Float64Array(SeriesLayout.size);
        SeriesLayout.add(sum, only, true);
        SeriesLayout.add(sum, v, true);
      }
    };
    add(this.#retired.get(key));
    for (const w of this.#workers.values()) add(w.series.get(key));
    if (only === undefined) return own;
    if (SeriesLayout.touched(own)) add(own);
    return sum ?? only;
  }

  protected override exemplarsOf(key: string, own: readonly (Exemplar | undefined)[] | undefined): readonly (Exemplar | undefined)[] | undefined {
    let latest = own;
    let merged: (Exemplar | undefined)[] | undefined;
    for (const w of this.#workers.values()) {
      const ex = w.exemplars.get(key);
      if (ex === undefined) continue;
      if (latest === undefined) {
        latest = ex;
        continue;
      }
      // Two sources: the latest per bucket (allocated only then).
      merged ??= Array.from(latest);
      for (let i = 0; i < ex.length; i++) {
        const e = ex[i];
        if (e !== undefined && (merged[i] === undefined || e.timestamp > merged[i]!.timestamp)) merged[i] = e;
      }
      latest = merged;
    }
    return latest;
  }

  #retire(held: WorkerTraffic): void {
    held.exemplars.clear();
    for (const [key, v] of held.series) {
      if (!this.hasSeries(key)) continue;
      let acc = this.#retired.get(key);
      if (acc === undefined) this.#retired.set(key, (acc = new Float64Array(SeriesLayout.size)));
      SeriesLayout.add(acc, v, false);
    }
    held.series.clear();
    this.#retiredInstances.add(held.instance);
    if (this.#retiredInstances.size > RETIRED_INSTANCES) {
      const oldest = this.#retiredInstances.values().next().value;
      if (oldest !== undefined) this.#retiredInstances.delete(oldest);
    }
  }
}
