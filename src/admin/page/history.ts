/**
 * The live page's traffic over time: requests and errors per second of every Service port with traffic, one point
 * per {@link HISTORY_STEP_MS} over the last 15 minutes, and the points at which its endpoints changed. Pure apart from
 * the clock it is given: advanced lazily by whoever builds the page state (at most one point per step), shared by
 * every page client. Memory: two Float32Array rings per Service port with traffic, three for HTTP ones (p99 from
 * the latency histogram's counts per step): 720 or 1080 bytes.
 *
 * @example
 * const history = new TrafficHistory();
 * history.record(trafficSamples, snapshot.entrypoints, Date.now());
 * history.charts(["ns/web:http", "ns/api:grpc"], 12); // the busiest first, oldest point first in each
 */
import type { Entrypoint } from "../../model/types.ts";
import { REQUEST_DURATION_BUCKETS } from "../../telemetry/metrics/buckets.ts";
import type { TrafficSample } from "../../telemetry/metrics/traffic.ts";

/** One point per this many ms. */
export const HISTORY_STEP_MS = 10_000;
/** Points kept: 15 minutes. */
export const HISTORY_POINTS = 90;

/** One Service port's chart, as the page draws it. */
export interface PageChart {
  readonly key: string;
  /** Requests (TCP/UDP: connections) per second, oldest first, one per step; at most {@link HISTORY_POINTS}. */
  readonly requests: readonly number[];
  /** Errors per second, aligned with `requests`. */
  readonly errors: readonly number[];
  /** Indexes into `requests` of the points during which the Service port's endpoints changed. */
  readonly changes: readonly number[];
  /**
   * HTTP: the 99th percentile latency of each step's requests, ms (the upper bound of the latency bucket it falls in,
   * as Prometheus' histogram_quantile interpolates within it), null for a step without requests.
   */
  readonly p99?: readonly (number | null)[];
}

/**
 * The `q` quantile of requests counted per latency bucket (`REQUEST_DURATION_BUCKETS` and overflow), ms, linearly
 * interpolated within its bucket as `histogram_quantile` does; null without requests. The overflow bucket answers its
 * lower bound.
 *
 * @example quantileMs([0, 10, 0, ...], 0.99) // inside the second bucket
 */
export function quantileMs(counts: readonly number[], q: number): number | null {
  let total = 0;
  for (const c of counts) total += c;
  if (total <= 0) return null;
  const rank = q * total;
  let seen = 0;
  const bounds = REQUEST_DURATION_BUCKETS;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (seen + c >= rank && c > 0) {
      if (i >= bounds.length) return bounds[bounds.length - 1]! * 1000;
      const lo = i === 0 ? 0 : bounds[i - 1]!;
      const hi = bounds[i]!;
      return (lo + ((hi - lo) * (rank - seen)) / c) * 1000;
    }
    seen += c;
  }
  return bounds[bounds.length - 1]! * 1000;
}

interface Series {
  readonly req: Float32Array;
  readonly err: Float32Array;
  /** p99 ms per step (NaN: no requests); allocated with the first latency seen. */
  p99: Float32Array | undefined;
  /** Steps (absolute) at which the endpoints changed. */
  changes: number[];
  /** The first step recorded (points before it do not exist). */
  readonly since: number;
}

const round = (x: number) => Math.round(x * 100) / 100;

export class TrafficHistory {
  readonly #series = new Map<string, Series>();
  /** Counters at the last recorded step. */
  #prev: ReadonlyMap<string, { requests: number; errors: number; latency: readonly number[] | undefined }> | undefined;
  #prevAt = 0;
  /** The last step recorded (floor(now / step)). */
  #step = -1;
  /** The endpoint list each entrypoint name had at the last record (snapshots share unchanged ones). */
  #endpoints = new Map<string, unknown>();

  /** Record a point when a new step has begun since the last one (rates since then); note endpoint changes. */
  record(samples: readonly TrafficSample[], entrypoints: readonly Entrypoint[], now: number): void {
    const step = Math.floor(now / HISTORY_STEP_MS);
    for (const ep of entrypoints) {
      const before = this.#endpoints.get(ep.name);
      if (before !== undefined && before !== ep.cluster.endpoints) {
        const s = this.#series.get(ep.name);
        if (s && s.changes.at(-1) !== step) s.changes.push(step);
      }
      this.#endpoints.set(ep.name, ep.cluster.endpoints);
    }
    if (step === this.#step) return;
    const counts = new Map(samples.map((t) => [t.key, { requests: t.requests, errors: t.errors, latency: t.latency }]));
    const prev = this.#prev;
    if (prev !== undefined) {
      const seconds = Math.max(0.001, (now - this.#prevAt) / 1000);
      for (const [key, c] of counts) {
        let s = this.#series.get(key);
        if (s === undefined) {
          s = { req: new Float32Array(HISTORY_POINTS), err: new Float32Array(HISTORY_POINTS), p99: undefined, changes: [], since: step };
          this.#series.set(key, s);
        }
        const b = prev.get(key) ?? { requests: 0, errors: 0, latency: undefined };
        if (c.latency !== undefined) s.p99 ??= new Float32Array(HISTORY_POINTS).fill(Number.NaN);
        // Steps skipped (nobody looked) stay 0; the rate covers the whole gap and lands on this step.
        for (let k = this.#step + 1; k < step && k > step - HISTORY_POINTS; k++) {
          s.req[k % HISTORY_POINTS] = 0;
          s.err[k % HISTORY_POINTS] = 0;
          if (s.p99) s.p99[k % HISTORY_POINTS] = Number.NaN;
        }
        if (s.p99 && c.latency) {
          const before = b.latency;
          const delta = c.latency.map((n, i) => Math.max(0, n - (before?.[i] ?? 0)));
          s.p99[step % HISTORY_POINTS] = quantileMs(delta, 0.99) ?? Number.NaN;
        }
        s.req[step % HISTORY_POINTS] = Math.max(0, c.requests - b.requests) / seconds;
        s.err[step % HISTORY_POINTS] = Math.max(0, c.errors - b.errors) / seconds;
        s.changes = s.changes.filter((x) => x > step - HISTORY_POINTS);
      }
      // Service ports gone from the metrics (the Service was deleted) are forgotten.
      for (const key of this.#series.keys()) if (!counts.has(key)) this.#series.delete(key);
    }
    this.#prev = counts;
    this.#prevAt = now;
    this.#step = step;
    const names = new Set(entrypoints.map((e) => e.name));
    for (const name of this.#endpoints.keys()) if (!names.has(name)) this.#endpoints.delete(name);
  }

  /** The charts of `keys` with history, the busiest (latest requests/s) first, at most `n`. */
  charts(keys: Iterable<string>, n: number): PageChart[] {
    const step = this.#step;
    const out: { chart: PageChart; last: number }[] = [];
    for (const key of new Set(keys)) {
      const s = this.#series.get(key);
      if (s === undefined) continue;
      const first = Math.max(s.since, step - HISTORY_POINTS + 1);
      const requests: number[] = [];
      const errors: number[] = [];
      const p99: (number | null)[] = [];
      for (let k = first; k <= step; k++) {
        requests.push(round(s.req[k % HISTORY_POINTS]!));
        errors.push(round(s.err[k % HISTORY_POINTS]!));
        if (s.p99) {
          const v = s.p99[k % HISTORY_POINTS]!;
          p99.push(Number.isNaN(v) ? null : round(v));
        }
      }
      const changes = s.changes.filter((x) => x >= first).map((x) => x - first);
      out.push({ chart: { key, requests, errors, changes, ...(s.p99 ? { p99 } : {}) }, last: requests.at(-1) ?? 0 });
    }
    out.sort((a, b) => b.last - a.last || (a.chart.key < b.chart.key ? -1 : 1));
    return out.slice(0, n).map((x) => x.chart);
  }
}
