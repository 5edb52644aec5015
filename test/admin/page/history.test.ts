/**
 * The live page's traffic history (src/admin/page/history.ts): one point per step from cumulative counters, the
 * busiest Service ports first, endpoint changes marked, 15 minutes kept, deleted Services forgotten.
 */
import { describe, expect, test } from "bun:test";
import { HISTORY_POINTS, HISTORY_STEP_MS, quantileMs, TrafficHistory } from "../../../src/admin/page/history.ts";
import { REQUEST_DURATION_BUCKETS } from "../../../src/telemetry/metrics/buckets.ts";
import type { Entrypoint } from "../../../src/model/types.ts";
import type { TrafficSample } from "../../../src/telemetry/metrics/traffic.ts";
import { endpoint, entrypoint } from "../../support/entrypoints.ts";

const sample = (key: string, requests: number, errors = 0): TrafficSample => ({ key, requests, errors, active: 0, bytesIn: 0, bytesOut: 0 });
const T0 = 1_000 * HISTORY_STEP_MS;

describe("TrafficHistory", () => {
  test("rates per step from counters; the busiest first; one point per step however often it is asked", () => {
    const h = new TrafficHistory();
    const eps: Entrypoint[] = [];
    h.record([sample("a", 0), sample("b", 0)], eps, T0);
    h.record([sample("a", 50), sample("b", 10)], eps, T0 + 5_000); // same step: ignored
    h.record([sample("a", 100, 10), sample("b", 20)], eps, T0 + HISTORY_STEP_MS);
    h.record([sample("a", 300, 10), sample("b", 420)], eps, T0 + 2 * HISTORY_STEP_MS);
    const charts = h.charts(["a", "b", "missing"], 12);
    expect(charts.map((c) => c.key)).toEqual(["b", "a"]);
    expect(charts[1]).toEqual({ key: "a", requests: [10, 20], errors: [1, 0], changes: [] });
    expect(charts[0]!.requests).toEqual([2, 40]);
    expect(h.charts(["a", "b"], 1).map((c) => c.key)).toEqual(["b"]);
  });

  test("an endpoint change is marked at its step; 15 minutes are kept; a Service gone from the metrics is forgotten", () => {
    const h = new TrafficHistory();
    const v1 = entrypoint({ name: "ns/web:http", endpoints: [endpoint(8080)] });
    const v2 = entrypoint({ name: "ns/web:http", endpoints: [endpoint(8080), endpoint(8081)] });
    let at = T0;
    let count = 0;
    h.record([sample("ns/web:http", 0)], [v1], at);
    for (let i = 1; i <= HISTORY_POINTS + 5; i++) {
      at += HISTORY_STEP_MS;
      count += 10 * (HISTORY_STEP_MS / 1000);
      h.record([sample("ns/web:http", count)], [i === HISTORY_POINTS ? v2 : i > HISTORY_POINTS ? v2 : v1], at);
    }
    const [c] = h.charts(["ns/web:http"], 1);
    expect(c!.requests).toHaveLength(HISTORY_POINTS);
    expect(c!.requests.every((r) => r === 10)).toBe(true);
    // The change happened 6 points before the newest.
    expect(c!.changes).toEqual([HISTORY_POINTS - 6]);
    at += HISTORY_STEP_MS;
    h.record([], [], at);
    expect(h.charts(["ns/web:http"], 1)).toEqual([]);
  });

  test("p99 per step from the latency buckets' counts, as histogram_quantile interpolates; a step without requests is a gap", () => {
    const n = REQUEST_DURATION_BUCKETS.length + 1;
    const counts = (bucket: number, k: number) => Array.from({ length: n }, (_, i) => (i === bucket ? k : 0));
    // 100 requests all in bucket 3: p99 is 99% of the way from bucket 2's bound to bucket 3's.
    const lo = REQUEST_DURATION_BUCKETS[2]! * 1000;
    const hi = REQUEST_DURATION_BUCKETS[3]! * 1000;
    expect(quantileMs(counts(3, 100), 0.99)).toBeCloseTo(lo + 0.99 * (hi - lo), 6);
    expect(quantileMs(counts(0, 0), 0.99)).toBeNull();
    expect(quantileMs(counts(n - 1, 5), 0.99)).toBe(REQUEST_DURATION_BUCKETS.at(-1)! * 1000);

    const h = new TrafficHistory();
    const http = (requests: number, latency: number[]): TrafficSample => ({ ...sample("ns/web:http", requests), latency });
    h.record([http(0, counts(3, 0))], [], T0);
    h.record([http(100, counts(3, 100))], [], T0 + HISTORY_STEP_MS);
    h.record([http(100, counts(3, 100))], [], T0 + 2 * HISTORY_STEP_MS); // nothing new: a gap
    const more = counts(3, 100);
    more[5] = 100; // 100 slower requests this step: its p99 lies in bucket 5
    h.record([http(200, more)], [], T0 + 3 * HISTORY_STEP_MS);
    const [c] = h.charts(["ns/web:http"], 1);
    expect(c!.p99!.map((v) => (v === null ? null : Math.round(v * 100) / 100))).toEqual([
      Math.round((lo + 0.99 * (hi - lo)) * 100) / 100,
      null,
      Math.round((REQUEST_DURATION_BUCKETS[4]! + 0.99 * (REQUEST_DURATION_BUCKETS[5]! - REQUEST_DURATION_BUCKETS[4]!)) * 100000) / 100,
    ]);
    // TCP Service ports (no latency) have no p99.
    expect(new TrafficHistory().charts([], 1)).toEqual([]);
  });
});
