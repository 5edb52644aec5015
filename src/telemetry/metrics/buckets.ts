/**
 * Histogram bucket layouts: Prometheus' helpers, kube-proxy's layouts, and kubegate's data-plane ones.
 */

/**
 * `count` buckets starting at `start`, each `factor` times the previous (client_golang's ExponentialBuckets).
 *
 * @example exponentialBuckets(0.001, 2, 3) // [0.001, 0.002, 0.004]
 */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  if (!(start > 0) || !(factor > 1) || !(count >= 1)) {
    throw new Error(`Invalid exponential buckets: start ${start}, factor ${factor}, count ${count} (need start > 0, factor > 1, count >= 1)`);
  }
  const out: number[] = [];
  for (let b = start, i = 0; i < count; i++, b *= factor) out.push(b);
  return out;
}

/**
 * `count` buckets starting at `start`, `width` apart (client_golang's LinearBuckets).
 *
 * @example linearBuckets(1, 1, 3) // [1, 2, 3]
 */
export function linearBuckets(start: number, width: number, count: number): number[] {
  if (!(width > 0) || !(count >= 1)) throw new Error(`Invalid linear buckets: width ${width}, count ${count} (need width > 0, count >= 1)`);
  const out: number[] = [];
  for (let b = start, i = 0; i < count; i++, b += width) out.push(b);
  return out;
}

/** kube-proxy's `sync_proxy_rules_duration_seconds` buckets: ExponentialBuckets(0.001, 2, 15), 1 ms .. 16.384 s. */
export const SYNC_DURATION_BUCKETS: readonly number[] = Object.freeze(exponentialBuckets(0.001, 2, 15));

/**
 * kube-proxy's `network_programming_duration_seconds` buckets. Its `merge` helper starts from a
 * one-element zero slice, so the first bucket is 0; then 0.25 s, 0.5 s, 1..59 s, 60..115 s by 5,
 * 120..300 s by 30.
 */
export const NETWORK_PROGRAMMING_BUCKETS: readonly number[] = Object.freeze([
  0,
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
]);

/** Downstream request duration: 0.5 ms .. 60 s (a gateway's requests are often sub-millisecond). */
export const REQUEST_DURATION_BUCKETS: readonly number[] = Object.freeze([
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
]);

/** Upstream connect duration: 0.1 ms .. 5 s (the connect timeout defaults to 2 s). */
export const CONNECT_DURATION_BUCKETS: readonly number[] = Object.freeze([
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
]);

/** Throws unless `bounds` is non-empty, finite and strictly increasing. */
export function checkBuckets(metric: string, bounds: readonly number[]): void {
  if (bounds.length === 0) throw new Error(`Invalid buckets for "${metric}": at least one bound is needed`);
  for (let i = 0; i < bounds.length; i++) {
    const b = bounds[i] as number;
    if (!Number.isFinite(b)) throw new Error(`Invalid buckets for "${metric}": bound ${b} is not finite (+Inf is added by itself)`);
    if (i > 0 && b <= (bounds[i - 1] as number)) throw new Error(`Invalid buckets for "${metric}": bounds must increase, got ${bounds[i - 1]} then ${b}`);
  }
}

/**
 * Index of the bucket of `value`: the first `i` with `value <= bounds[i]`, or `bounds.length` (the
 * `+Inf` bucket). Linear: data-plane values sit in the first few buckets.
 */
export function bucketIndex(bounds: readonly number[], value: number): number {
  let i = 0;
  const n = bounds.length;
  while (i < n && value > (bounds[i] as number)) i++;
  return i;
}
