/**
 * The node's traffic series summed over worker processes: two TrafficMetrics fed different traffic, dumped and
 * summed by a NodeTrafficMetrics, expose exactly what one TrafficMetrics fed all of it does (through change dumps,
 * Service ports removed and re-added, and the series cap); a restarted or removed worker never makes a counter go
 * backwards, and its late dumps are not counted twice; dumps stay small at 10k Service ports; the per-worker series.
 */
import { describe, expect, test } from "bun:test";
import type { Entrypoint, Snapshot } from "../../../src/model/types.ts";
import {
  NodeTrafficMetrics,
  PROXY_ERROR_REASONS,
  Registry,
  type TrafficDump,
  TrafficMetricNames as N,
  TrafficMetrics,
  WorkerMetricNames as W,
  WorkerMetrics,
} from "../../../src/telemetry/metrics/index.ts";
import { entrypoint } from "../../support/entrypoints.ts";
import { parseScrape, type Scrape, valueOf } from "../../support/metrics-parse.ts";
import { seeded } from "../../support/random.ts";

let version = 0;
function snap(...eps: Entrypoint[]): Snapshot {
  return { version: ++version, entrypoints: [...eps].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)), errors: [], node: { name: "node-a" } };
}

/** Durations that are sums of powers of two: histogram sums come out exact whatever the order of additions. */
const SECONDS = [2 ** -13, 2 ** -11, 2 ** -10, 2 ** -8, 2 ** -6, 2 ** -3, 0.5, 3, 64];

const web = entrypoint({ name: "shop/web:http", protocol: "http", endpoints: [8080, 8081] });
const webLb: Entrypoint = { ...web, type: "LoadBalancer", key: "LoadBalancer/shop/web:http", port: 80 };
const db = entrypoint({ name: "shop/db:5432", protocol: "tcp", endpoints: [5432] });
const dns = entrypoint({ name: "dns/coredns:53", protocol: "udp", endpoints: [53, 54, 55] });
const idle = entrypoint({ name: "shop/idle:http", protocol: "http", endpoints: [9000] });
const odd = entrypoint({ name: 'odd/we"ird\\svc:http', protocol: "http", endpoints: [1] });

/** One data plane's counters: what a worker process (or the reference single process) records. */
class Plane {
  readonly traffic: TrafficMetrics;
  /** Open connections per Service port name. */
  readonly open = new Map<string, number>();
  constructor(maxSeries?: number) {
    this.traffic = new TrafficMetrics(maxSeries === undefined ? {} : { maxSeries });
  }
}

/**
 * Random traffic on `eps`, each event recorded by one of `workers` (chosen at random) and by `reference`: a
 * connection is closed by the worker that opened it.
 */
function drive(r: () => number, eps: readonly Entrypoint[], workers: readonly Plane[], reference: Plane, events: number): void {
  for (let i = 0; i < events; i++) {
    const ep = eps[Math.floor(r() * eps.length)]!;
    const w = workers[Math.floor(r() * workers.length)]!;
    const ops = [w.traffic.forEntrypoint(ep), reference.traffic.forEntrypoint(ep)];
    const pick = r();
    const seconds = SECONDS[Math.floor(r() * SECONDS.length)]!;
    if (pick < 0.35) {
      const status = [101, 200, 204, 302, 404, 503][Math.floor(r() * 6)]!;
      for (const t of ops) t.request(status, seconds);
    } else if (pick < 0.5) {
      for (const t of ops) t.connectDuration(seconds);
    } else if (pick < 0.65) {
      for (const t of ops) t.connOpened();
      w.open.set(ep.name, (w.open.get(ep.name) ?? 0) + 1);
    } else if (pick < 0.75) {
      const n = w.open.get(ep.name) ?? 0;
      if (n === 0) continue;
      for (const t of ops) t.connClosed();
      w.open.set(ep.name, n - 1);
    } else if (pick < 0.9) {
      const a = Math.floor(r() * 5000);
      const b = Math.floor(r() * 50_000);
      for (const t of ops) t.bytes(a, b);
    } else {
      const reason = PROXY_ERROR_REASONS[Math.floor(r() * PROXY_ERROR_REASONS.length)]!;
      for (const t of ops) t.error(reason);
    }
  }
}

function registryOf(traffic: TrafficMetrics): () => string {
  const registry = new Registry();
  registry.register(traffic);
  return () => registry.expose();
}

const byKey = <T extends { key: string }>(list: T[]): T[] => list.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));

/** Every plane (node included) follows the same snapshot. */
function syncAll(s: Snapshot, ...all: TrafficMetrics[]): void {
  for (const t of all) t.sync(s);
}

/** A JSON round trip: what crosses the pipe. */
const wire = (d: TrafficDump): TrafficDump => JSON.parse(JSON.stringify(d)) as TrafficDump;

describe("NodeTrafficMetrics: the node's series summed over workers", () => {
  test("two workers' dumps expose exactly what one TrafficMetrics fed all the traffic does, round after round", () => {
    const r = seeded(7);
    const workers = [new Plane(), new Plane()];
    const reference = new Plane();
    const node = new NodeTrafficMetrics();
    const scrapeNode = registryOf(node);
    const scrapeRef = registryOf(reference.traffic);
    const all = () => [node, reference.traffic, ...workers.map((w) => w.traffic)];
    let eps = [web, webLb, db, dns, idle, odd];
    syncAll(snap(...eps), ...all());

    for (let round = 0; round <= 12; round++) {
      // Service ports come and go: db leaves in round 4 and comes back (from zero) in round 7.
      if (round === 4) syncAll(snap(...(eps = eps.filter((e) => e !== db))), ...all());
      if (round === 7) syncAll(snap(...(eps = [...eps, db])), ...all());
      drive(r, eps.filter((e) => e !== idle), workers, reference, 400);
      // Only worker 1 reports in odd rounds: the node shows its latest values of each worker.
      workers.forEach((w, i) => {
        if (round % 2 === 0 || i === 1) expect(node.update(i, wire(w.traffic.dump()))).toBe(true);
      });
      if (round % 2 === 1) continue;
      const text = scrapeNode();
      expect(parseScrape(text)).toEqual(parseScrape(scrapeRef()));
      expect(text).toBe(scrapeRef());
      expect(byKey(node.samples())).toEqual(byKey(reference.traffic.samples()));
    }
    const s = parseScrape(scrapeNode());
    const webLabels = { namespace: "shop", service: "web", port: "http", protocol: "http" };
    expect(valueOf(s, N.requests, { ...webLabels, code_class: "2xx" })).toBeGreaterThan(0);
    expect(valueOf(s, N.activeConnections, webLabels)).toBe((workers[0]!.open.get(web.name) ?? 0) + (workers[1]!.open.get(web.name) ?? 0));
    expect(node.workers()).toEqual([0, 1]);
    const requests = (p: Plane) => p.traffic.samples().reduce((n, x) => n + x.requests, 0);
    expect(node.requestsOf(0)).toBe(requests(workers[0]!));
    expect(node.requestsOf(1)).toBe(requests(workers[1]!));
    expect(node.requestsOf(0) + node.requestsOf(1)).toBe(requests(reference));
  });

  test("over the series cap, the node's series and cap bookkeeping are one process's", () => {
    const r = seeded(11);
    const workers = [new Plane(2), new Plane(2)];
    const reference = new Plane(2);
    const node = new NodeTrafficMetrics({ maxSeries: 2 });
    const all = () => [node, reference.traffic, ...workers.map((w) => w.traffic)];
    syncAll(snap(web, db, dns, odd), ...all());
    drive(r, [web, db, dns, odd], workers, reference, 300);
    workers.forEach((w, i) => node.update(i, wire(w.traffic.dump())));
    expect(parseScrape(registryOf(node)())).toEqual(parseScrape(registryOf(reference.traffic)()));
    expect(node.trackedSeries).toBe(2);
    expect(node.droppedSeries).toBe(reference.traffic.droppedSeries);
    expect(node.droppedSeries).toBeGreaterThan(0);
  });

  test("a Service port that leaves and comes back starts from zero, though no worker counted anything for it since", () => {
    const plane = new Plane();
    const node = new NodeTrafficMetrics();
    const scrape = () => parseScrape(registryOf(node)());
    syncAll(snap(web, db), node, plane.traffic);
    plane.traffic.forEntrypoint(db).connOpened();
    node.update(0, wire(plane.traffic.dump()));
    const dbLabels = { namespace: "shop", service: "db", port: "5432", protocol: "tcp" };
    expect(valueOf(scrape(), N.connections, dbLabels)).toBe(1);
    // The worker follows the snapshot without db, then with it again, between two of its dumps.
    syncAll(snap(web), node, plane.traffic);
    syncAll(snap(web, db), node, plane.traffic);
    node.update(0, wire(plane.traffic.dump()));
    expect(valueOf(scrape(), N.connections, dbLabels)).toBeUndefined();
    expect(valueOf(scrape(), N.endpoints, { ...dbLabels, state: "ready" })).toBe(1);
  });
});

/** Counter and histogram samples (everything but the open-connection gauge) that went down from `a` to `b`. */
function wentBackwards(a: Scrape, b: Scrape): string[] {
  const out: string[] = [];
  for (const [id, before] of a.samples) {
    const name = id.split("{")[0]!;
    if (name === N.activeConnections || name === N.endpoints || name.startsWith("kubegate_metrics_series")) continue;
    const after = b.samples.get(id);
    if (after === undefined || after < before) out.push(`${id}: ${before} -> ${after}`);
  }
  return out;
}

describe("a worker that restarts", () => {
  test("starts from zero, and the node's counters do not go backwards: the dead worker's counts are kept", () => {
    const r = seeded(3);
    let workers = [new Plane(), new Plane()];
    const reference = new Plane();
    const node = new NodeTrafficMetrics();
    const scrapeNode = registryOf(node);
    const scrapeRef = registryOf(reference.traffic);
    let eps = [web, db, dns];
    syncAll(snap(...eps), node, reference.traffic, ...workers.map((w) => w.traffic));
    drive(r, eps, workers, reference, 600);
    workers.forEach((w, i) => node.update(i, wire(w.traffic.dump())));
    const before = parseScrape(scrapeNode());

    // Worker 1 dies with its connections; its replacement (a new TrafficMetrics) starts from the same snapshot.
    const dead = workers[1]!;
    for (const ep of eps) for (let k = dead.open.get(ep.name) ?? 0; k > 0; k--) reference.traffic.forEntrypoint(ep).connClosed();
    const replacement = new Plane();
    replacement.traffic.sync(snap(...eps));
    workers = [workers[0]!, replacement];
    expect(node.update(1, wire(replacement.traffic.dump()))).toBe(true);
    const right = parseScrape(scrapeNode());
    expect(wentBackwards(before, right)).toEqual([]);
    expect(right).toEqual(parseScrape(scrapeRef()));

    // The replacement counts on; the node keeps summing the dead worker's counts with the live ones.
    drive(r, eps, workers, reference, 600);
    workers.forEach((w, i) => node.update(i, wire(w.traffic.dump())));
    expect(scrapeNode()).toBe(scrapeRef());

    // A Service port that goes takes the dead worker's counts with it; back again, it starts from zero.
    syncAll(snap(...(eps = [web, dns])), node, reference.traffic, ...workers.map((w) => w.traffic));
    workers.forEach((w, i) => node.update(i, wire(w.traffic.dump())));
    syncAll(snap(...(eps = [web, db, dns])), node, reference.traffic, ...workers.map((w) => w.traffic));
    drive(r, [db], workers, reference, 50);
    workers.forEach((w, i) => node.update(i, wire(w.traffic.dump())));
    expect(scrapeNode()).toBe(scrapeRef());
    expect(byKey(node.samples())).toEqual(byKey(reference.traffic.samples()));
  });

  test("remove() keeps what a worker counted; its late dumps are ignored, not counted twice", () => {
    const r = seeded(5);
    const workers = [new Plane(), new Plane()];
    const reference = new Plane();
    const node = new NodeTrafficMetrics();
    const scrapeNode = registryOf(node);
    syncAll(snap(web, db), node, reference.traffic, ...workers.map((w) => w.traffic));
    drive(r, [web, db], workers, reference, 300);
    workers.forEach((w, i) => node.update(i, wire(w.traffic.dump())));
    const before = parseScrape(scrapeNode());

    node.remove(1);
    expect(node.workers()).toEqual([0]);
    expect(node.requestsOf(1)).toBe(0);
    const removed = parseScrape(scrapeNode());
    expect(wentBackwards(before, removed)).toEqual([]);
    // Its open connections died with it.
    const dbLabels = { namespace: "shop", service: "db", port: "5432", protocol: "tcp" };
    expect(valueOf(removed, N.activeConnections, dbLabels)).toBe(workers[0]!.open.get(db.name) ?? 0);

    // A dump the dead worker sent before it went, arriving late (full or not), changes nothing.
    drive(r, [web, db], [workers[1]!], new Plane(), 100);
    expect(node.update(1, wire(workers[1]!.traffic.dump()))).toBe(true);
    expect(node.update(1, wire(workers[1]!.traffic.dump({ full: true })))).toBe(true);
    expect(parseScrape(scrapeNode())).toEqual(removed);
    expect(node.workers()).toEqual([0]);
  });

  test("update() says when a change dump does not follow the last one taken", () => {
    const node = new NodeTrafficMetrics();
    const plane = new Plane();
    syncAll(snap(web), node, plane.traffic);
    const t = plane.traffic.forEntrypoint(web);
    t.request(200, 0.5);
    const first = plane.traffic.dump();
    expect(first).toMatchObject({ seq: 1, full: true, removed: [] });
    t.request(200, 0.5);
    const second = plane.traffic.dump();
    t.request(200, 0.5);
    const third = plane.traffic.dump();
    expect(node.update(0, second)).toBe(false); // a change dump first
    expect(node.update(1, first)).toBe(true);
    expect(node.update(1, third)).toBe(false); // the second was missed
    expect(node.update(1, plane.traffic.dump({ full: true }))).toBe(true); // a full one puts it right
    const webLabels = { namespace: "shop", service: "web", port: "http", protocol: "http" };
    expect(valueOf(parseScrape(registryOf(node)()), N.requests, { ...webLabels, code_class: "2xx" })).toBe(3 + 2);
  });
});

describe("TrafficMetrics.dump", () => {
  test("at 10k Service ports with traffic on 100, a change dump carries those 100, a quiet one nothing", () => {
    const eps = Array.from({ length: 10_000 }, (_, i) => entrypoint({ name: `ns-${i % 100}/service-number-${i}:http`, protocol: "http", endpoints: [8080] }));
    const traffic = new TrafficMetrics();
    traffic.sync(snap(...eps));
    const busy = eps.filter((_, i) => i % 100 === 0).map((ep) => traffic.forEntrypoint(ep));
    const round = () => {
      for (const t of busy) {
        t.connOpened();
        t.connectDuration(0.0004);
        for (let k = 0; k < 20; k++) t.request(k % 7 === 0 ? 404 : 200, 0.0003 + k / 10_000);
        t.bytes(20 * 180, 20 * 1200);
        t.error("client_closed");
      }
    };
    round();
    const first = traffic.dump();
    expect(first.full).toBe(true);
    expect(Object.keys(first.series)).toHaveLength(100);
    round();
    const change = traffic.dump();
    expect(change.full).toBe(false);
    expect(Object.keys(change.series)).toHaveLength(100);
    // About 250 bytes of JSON per busy series: the dump does not grow with the idle Service ports.
    expect(JSON.stringify(change).length).toBeLessThan(100 * 400);
    const quiet = traffic.dump();
    expect(quiet).toMatchObject({ seq: 3, full: false, series: {}, removed: [] });
    expect(Object.keys(traffic.dump({ full: true }).series)).toHaveLength(100);
  });

  test("a deleted series is reported once, and only when a dump had sent it", () => {
    const traffic = new TrafficMetrics();
    traffic.sync(snap(web, db, dns));
    traffic.forEntrypoint(web).request(200, 0.5);
    traffic.dump();
    traffic.forEntrypoint(dns).connOpened(); // never dumped before it goes
    traffic.sync(snap(db));
    const d = traffic.dump();
    expect(d.removed).toEqual([`${web.name}\u0000http`]);
    expect(d.series).toEqual({});
    expect(traffic.dump().removed).toEqual([]);
  });
});

describe("WorkerMetrics", () => {
  test("one series per worker: up, open connections, restarts; read at each scrape", () => {
    const registry = new Registry();
    let workers = [
      { worker: 1, pid: 102, ready: false, restarts: 2, connections: 0, requests: 0 },
      { worker: 0, pid: 101, ready: true, restarts: 0, connections: 17, requests: 900 },
    ];
    registry.register(new WorkerMetrics(() => workers));
    let s = parseScrape(registry.expose());
    expect(Object.fromEntries(s.samples)).toEqual({
      'kubegate_worker_up{worker="0"}': 1,
      'kubegate_worker_up{worker="1"}': 0,
      'kubegate_worker_connections{worker="0"}': 17,
      'kubegate_worker_connections{worker="1"}': 0,
      'kubegate_worker_restarts_total{worker="0"}': 0,
      'kubegate_worker_restarts_total{worker="1"}': 2,
    });
    expect([W.up, W.connections, W.restarts].map((n) => s.types.get(n))).toEqual(["gauge", "gauge", "counter"]);
    workers = [{ ...workers[0]!, ready: true, connections: 3 }]; // worker 1 is back; worker 0 gone from the view
    s = parseScrape(registry.expose());
    expect(valueOf(s, W.up, { worker: "1" })).toBe(1);
    expect(valueOf(s, W.connections, { worker: "1" })).toBe(3);
    expect(valueOf(s, W.up, { worker: "0" })).toBeUndefined();
  });
});
