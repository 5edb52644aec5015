/**
 * Per-Service traffic metrics: what the data plane records is what a scrape reads; series follow
 * the snapshots (shared by a Service port's entrypoints, deleted with the Service); the series cap
 * holds at 10k Services and counts what it drops.
 */
import { describe, expect, test } from "bun:test";
import type { Endpoint, Entrypoint, Snapshot } from "../../../src/model/types.ts";
import { NOOP_TRAFFIC, Registry, REQUEST_DURATION_BUCKETS, TrafficMetricNames as N, TrafficMetrics } from "../../../src/telemetry/metrics/index.ts";
import { entrypoint } from "../../support/entrypoints.ts";
import { parseScrape, seriesOf, valueOf } from "../../support/metrics-parse.ts";

let version = 0;
function snap(...eps: Entrypoint[]): Snapshot {
  return { version: ++version, entrypoints: [...eps].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)), errors: [], node: { name: "node-a" } };
}

function setup(maxSeries?: number) {
  const registry = new Registry();
  const traffic = new TrafficMetrics(maxSeries === undefined ? {} : { maxSeries });
  registry.register(traffic);
  return { registry, traffic, scrape: () => parseScrape(registry.expose()) };
}

/** The LoadBalancer twin of a NodePort entrypoint (same Service port). */
function lbOf(ep: Entrypoint): Entrypoint {
  return { ...ep, type: "LoadBalancer", key: `LoadBalancer/${ep.name}`, port: 80 };
}

const web = { namespace: "shop", service: "web", port: "http", protocol: "http" };

describe("values match the traffic recorded", () => {
  test("N requests, connections and bytes driven through a handle are read back exactly", () => {
    const { traffic, scrape } = setup();
    const ep = entrypoint({ name: "shop/web:http", protocol: "http", endpoints: [8080] });
    traffic.sync(snap(ep));
    const t = traffic.forEntrypoint(ep);

    const durations: number[] = [];
    const statuses = { 200: 700, 404: 200, 502: 100 } as const;
    let i = 0;
    for (const [status, n] of Object.entries(statuses)) {
      for (let k = 0; k < n; k++, i++) {
        const seconds = ((i * 7919) % 2000) / 1000; // 0 .. 1.999 s, spread over the buckets
        durations.push(seconds);
        t.request(Number(status), seconds);
      }
    }
    t.request(0, 1); // not an HTTP status: ignored
    t.request(600, 1);
    for (let k = 0; k < 10; k++) t.connOpened();
    for (let k = 0; k < 4; k++) t.connClosed();
    for (let k = 0; k < 3; k++) t.connectDuration(0.0003);
    t.bytes(1000, 250_000);
    t.bytes(24, 6);
    for (let k = 0; k < 100; k++) t.error("connect_failed");
    t.error("no_endpoints");

    const s = scrape();
    expect(valueOf(s, N.requests, { ...web, code_class: "2xx" })).toBe(700);
    expect(valueOf(s, N.requests, { ...web, code_class: "4xx" })).toBe(200);
    expect(valueOf(s, N.requests, { ...web, code_class: "5xx" })).toBe(100);
    expect(valueOf(s, N.requests, { ...web, code_class: "1xx" })).toBeUndefined(); // never seen: not exposed
    expect(valueOf(s, `${N.requestDuration}_count`, web)).toBe(1000);
    expect(valueOf(s, `${N.requestDuration}_sum`, web)).toBeCloseTo(durations.reduce((a, b) => a + b, 0), 6);
    for (const bound of REQUEST_DURATION_BUCKETS) {
      expect(valueOf(s, `${N.requestDuration}_bucket`, { ...web, le: String(bound) })).toBe(durations.filter((d) => d <= bound).length);
    }
    expect(valueOf(s, `${N.requestDuration}_bucket`, { ...web, le: "+Inf" })).toBe(1000);
    expect(valueOf(s, `${N.connectDuration}_count`, web)).toBe(3);
    expect(valueOf(s, `${N.connectDuration}_bucket`, { ...web, le: "0.00025" })).toBe(0);
    expect(valueOf(s, `${N.connectDuration}_bucket`, { ...web, le: "0.0005" })).toBe(3);
    expect(valueOf(s, N.activeConnections, web)).toBe(6);
    expect(valueOf(s, N.connections, web)).toBe(10);
    expect(valueOf(s, N.receivedBytes, web)).toBe(1024);
    expect(valueOf(s, N.sentBytes, web)).toBe(250_006);
    expect(valueOf(s, N.errors, { ...web, reason: "connect_failed" })).toBe(100);
    expect(valueOf(s, N.errors, { ...web, reason: "no_endpoints" })).toBe(1);
    expect(valueOf(s, N.errors, { ...web, reason: "upstream_timeout" })).toBeUndefined();
    expect(s.types.get(N.requests)).toBe("counter");
    expect(s.types.get(N.requestDuration)).toBe("histogram");
    expect(s.types.get(N.activeConnections)).toBe("gauge");
  });

  test("an idle Service port exposes only its endpoint counts", () => {
    const { traffic, scrape } = setup();
    traffic.sync(snap(entrypoint({ name: "shop/idle:tcp", endpoints: [1] })));
    const s = scrape();
    const idle = { namespace: "shop", service: "idle", port: "tcp", protocol: "tcp" };
    expect(valueOf(s, N.endpoints, { ...idle, state: "ready" })).toBe(1);
    expect(valueOf(s, N.connections, idle)).toBeUndefined();
    expect(valueOf(s, N.activeConnections, idle)).toBeUndefined();
  });

  test("endpoint counts by state come from the snapshot at scrape time", () => {
    const { traffic, scrape } = setup();
    const e = (address: string, ready: boolean, serving: boolean, terminating: boolean): Endpoint => ({ address, port: 80, ready, serving, terminating });
    const endpoints = [e("10.0.0.1", true, true, false), e("10.0.0.2", true, true, false), e("10.0.0.3", false, true, true), e("10.0.0.4", false, false, true), e("10.0.0.5", false, false, false)];
    const base = entrypoint({ name: "shop/api:grpc" });
    const ep: Entrypoint = { ...base, cluster: { name: base.name, endpoints, serving: endpoints.slice(0, 1) } };
    traffic.sync(snap(ep));
    const s = scrape();
    const api = { namespace: "shop", service: "api", port: "grpc", protocol: "tcp" };
    expect(["ready", "serving", "terminating", "selected"].map((state) => valueOf(s, N.endpoints, { ...api, state }))).toEqual([2, 3, 2, 1]);
  });

  test("samples() gives the admin page cumulative counters per Service port", () => {
    const { traffic } = setup();
    const http = entrypoint({ name: "shop/web:http", protocol: "http" });
    const tcp = entrypoint({ name: "shop/db:5432" });
    traffic.sync(snap(http, tcp));
    const h = traffic.forEntrypoint(http);
    h.connOpened();
    h.request(200, 0.01);
    h.request(503, 0.01);
    h.error("no_endpoints");
    h.bytes(10, 20);
    const t = traffic.forEntrypoint(tcp);
    t.connOpened();
    t.connOpened();
    t.connClosed();
    t.error("connect_failed");
    expect(traffic.samples().sort((a, b) => a.key.localeCompare(b.key))).toEqual([
      { key: "shop/db:5432", requests: 2, errors: 1, active: 1, bytesIn: 0, bytesOut: 0 },
      // HTTP: the requests per latency bucket too (both took 10 ms: the bucket whose bound is 0.01 s).
      { key: "shop/web:http", requests: 2, errors: 1, active: 1, bytesIn: 10, bytesOut: 20, latency: REQUEST_DURATION_BUCKETS.map((b) => (b === 0.01 ? 2 : 0)).concat(0) },
    ]);
  });

  test("a million updates through a resolved handle stay cheap (array increments only)", () => {
    const { traffic, scrape } = setup();
    const ep = entrypoint({ name: "shop/web:http", protocol: "http" });
    traffic.sync(snap(ep));
    const t = traffic.forEntrypoint(ep);
    for (let i = 0; i < 1_000_000; i++) {
      t.request(200, 0.0007);
      t.bytes(100, 900);
    }
    // How cheap is a benchmark's figure (`bun test/bench/metrics-scale.ts`), not a wall-time bound here.
    expect(valueOf(scrape(), N.requests, { ...web, code_class: "2xx" })).toBe(1_000_000);
  });
});

describe("series follow the snapshots", () => {
  test("NodePort and LoadBalancer entrypoints of one Service port share a series; it goes with the last one", () => {
    const { traffic, scrape } = setup();
    const np = entrypoint({ name: "shop/web:http", protocol: "http", endpoints: [1] });
    const lb = lbOf(np);
    traffic.sync(snap(np, lb));
    expect(traffic.forEntrypoint(np)).toBe(traffic.forEntrypoint(lb));
    traffic.forEntrypoint(lb).request(200, 0.001);
    traffic.forEntrypoint(np).request(200, 0.001);
    expect(valueOf(scrape(), N.requests, { ...web, code_class: "2xx" })).toBe(2);

    traffic.sync(snap(lb)); // the NodePort goes away: the series stays
    expect(valueOf(scrape(), N.requests, { ...web, code_class: "2xx" })).toBe(2);
    expect(traffic.trackedSeries).toBe(1);

    traffic.sync(snap()); // the Service goes away: nothing of it is left
    const s = scrape();
    expect(seriesOf(s, N.requests)).toEqual([]);
    expect(seriesOf(s, N.endpoints)).toEqual([]);
    expect(traffic.trackedSeries).toBe(0);
    expect(traffic.size).toBe(0);

    traffic.sync(snap(np)); // back again: a fresh series
    expect(valueOf(scrape(), N.requests, { ...web, code_class: "2xx" })).toBeUndefined();
    expect(valueOf(scrape(), N.endpoints, { ...web, state: "ready" })).toBe(1);
  });

  test("a changed entrypoint keeps its series; a protocol change relabels it", () => {
    const { traffic, scrape } = setup();
    const v1 = entrypoint({ name: "shop/web:http", protocol: "http", endpoints: [1] });
    traffic.sync(snap(v1));
    traffic.forEntrypoint(v1).connOpened();
    const v2 = entrypoint({ name: "shop/web:http", protocol: "http", endpoints: [1, 2] });
    traffic.sync(snap(v2));
    let s = scrape();
    expect(valueOf(s, N.connections, web)).toBe(1);
    expect(valueOf(s, N.endpoints, { ...web, state: "ready" })).toBe(2);
    const v3 = entrypoint({ name: "shop/web:http", protocol: "tcp", endpoints: [1, 2] });
    traffic.sync(snap(v3));
    s = scrape();
    expect(valueOf(s, N.connections, web)).toBeUndefined();
    expect(valueOf(s, N.endpoints, { ...web, protocol: "tcp", state: "ready" })).toBe(2);
    expect(traffic.size).toBe(1);
  });

  test("a handle resolved before the snapshot is synced is adopted; one for an entrypoint never published is dropped", () => {
    const { traffic, scrape } = setup();
    const ep = entrypoint({ name: "shop/web:http", protocol: "http" });
    const early = traffic.forEntrypoint(ep); // the listeners bind before metrics see the snapshot
    early.request(200, 0.001);
    traffic.sync(snap(ep));
    expect(traffic.forEntrypoint(ep)).toBe(early);
    expect(valueOf(scrape(), N.requests, { ...web, code_class: "2xx" })).toBe(1);

    const stray = entrypoint({ name: "shop/gone:http", protocol: "http" });
    traffic.forEntrypoint(stray).request(200, 0.001);
    expect(traffic.size).toBe(2);
    traffic.sync(snap(ep));
    expect(traffic.size).toBe(1);
    expect(seriesOf(scrape(), N.requests)).toHaveLength(1);
  });
});

describe("the series cap", () => {
  const services = (n: number, offset = 0) =>
    Array.from({ length: n }, (_, i) => entrypoint({ name: `ns-${(offset + i) % 100}/svc-${offset + i}:http`, protocol: "http", endpoints: [8080] }));

  test("10k Services under a cap of 5k: 5k series, the rest dropped and counted once, admitted when room frees", () => {
    const { traffic, registry } = setup(5_000);
    const eps = services(10_000);
    const full = snap(...eps);
    traffic.sync(full);
    expect(traffic.trackedSeries).toBe(5_000);
    expect(traffic.droppedSeries).toBe(5_000);

    // Refused Service ports get a handle that records nothing.
    const refused = eps.filter((ep) => traffic.forEntrypoint(ep) === NOOP_TRAFFIC);
    expect(refused).toHaveLength(5_000);
    for (const ep of eps) traffic.forEntrypoint(ep).request(200, 0.001);

    const text = registry.expose();
    const s = parseScrape(text);
    expect(seriesOf(s, N.requests)).toHaveLength(5_000);
    expect(seriesOf(s, N.endpoints)).toHaveLength(5_000 * 4);
    for (const metric of Object.values(N)) expect(valueOf(s, "kubegate_metrics_series_dropped_total", { metric })).toBe(5_000);
    expect(valueOf(s, "kubegate_metrics_series")).toBe(5_000);
    expect(valueOf(s, "kubegate_metrics_series_limit")).toBe(5_000);
    expect(valueOf(s, "kubegate_metrics_series_over_cap")).toBe(5_000);

    // The same snapshot again, and a new version of it: nothing is counted twice.
    traffic.sync(snap(...eps));
    expect(traffic.droppedSeries).toBe(5_000);

    // 2 000 tracked Services go away: 2 000 waiting ones take their place; nothing is dropped anew.
    const tracked = eps.filter((ep) => traffic.forEntrypoint(ep) !== NOOP_TRAFFIC);
    const gone = new Set(tracked.slice(0, 2_000));
    traffic.sync(snap(...eps.filter((ep) => !gone.has(ep))));
    expect(traffic.trackedSeries).toBe(5_000);
    expect(traffic.size).toBe(8_000);
    expect(traffic.droppedSeries).toBe(5_000);
    expect(valueOf(parseScrape(registry.expose()), "kubegate_metrics_series_over_cap")).toBe(3_000);
    expect(eps.filter((ep) => !gone.has(ep) && traffic.forEntrypoint(ep) !== NOOP_TRAFFIC)).toHaveLength(5_000);

    // Everything goes away: the registry holds nothing.
    traffic.sync(snap());
    expect(traffic.trackedSeries).toBe(0);
    expect(traffic.size).toBe(0);
    expect(seriesOf(parseScrape(registry.expose()), N.endpoints)).toEqual([]);
    // Sync and scrape times at this scale are figures of `bun test/bench/metrics-scale.ts`, not bounds here.
  });

  test("churn through 50k distinct Services keeps memory bounded by the cap", () => {
    const { traffic, registry } = setup(5_000);
    let maxSize = 0;
    for (let round = 0; round < 5; round++) {
      const eps = services(10_000, round * 10_000);
      traffic.sync(snap(...eps));
      for (const ep of eps) traffic.forEntrypoint(ep).connOpened();
      maxSize = Math.max(maxSize, traffic.size);
      expect(traffic.trackedSeries).toBe(5_000);
    }
    expect(maxSize).toBe(10_000); // Service ports of one snapshot, never more
    traffic.sync(snap());
    expect(traffic.size).toBe(0);
    expect(traffic.droppedSeries).toBe(5 * 5_000);
    const s = parseScrape(registry.expose());
    expect(seriesOf(s, N.connections)).toEqual([]);
  });

  test("a cap of 0 tracks nothing and counts every Service port", () => {
    const { traffic } = setup(0);
    const eps = services(3);
    traffic.sync(snap(...eps));
    expect(traffic.trackedSeries).toBe(0);
    expect(traffic.droppedSeries).toBe(3);
    expect(() => new TrafficMetrics({ maxSeries: -1 })).toThrow("Invalid metrics series cap -1: use a whole number of 0 or more");
  });
});
