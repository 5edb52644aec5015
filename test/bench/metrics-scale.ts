/**
 * Per-Service traffic metrics benchmark: the figures test/telemetry/metrics/traffic.test.ts used to bound
 * (wall-time bounds flake on a loaded box; a benchmark reports them instead). Prints the time of 1M
 * updates through a resolved handle, of a sync of 10k Services under a 5k series cap, and of a scrape
 * of the 5k tracked series (override with SERVICES= and MAX_SERIES=). On a 2-core box shared with other
 * test runs: ~150 ms, ~130 ms and ~220 ms (~20 ms for the updates when idle); a quadratic walk shows as seconds.
 * Then what a worker process sends every 250 ms (`TrafficMetrics.dump`, as JSON) at SERVICES Service ports with
 * traffic on BUSY (default 100) of them, full and changes only, after every Service port had traffic once, and the
 * node's side (`NodeTrafficMetrics.update` of WORKERS dumps, and its scrape).
 *
 *   bun test/bench/metrics-scale.ts
 */
import type { Entrypoint, Snapshot } from "../../src/model/types.ts";
import { NodeTrafficMetrics, Registry, type TrafficDump, TrafficMetrics } from "../../src/telemetry/metrics/index.ts";
import { entrypoint } from "../support/entrypoints.ts";

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const MAX_SERIES = Number(process.env.MAX_SERIES ?? 5_000);
const UPDATES = 1_000_000;
const BUSY = Number(process.env.BUSY ?? 100);
const WORKERS = Number(process.env.WORKERS ?? 2);

let version = 0;
const snap = (eps: Entrypoint[]): Snapshot => ({
  version: ++version,
  entrypoints: [...eps].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)),
  errors: [],
  node: { name: "node-a" },
});
const time = (f: () => void): number => {
  const started = performance.now();
  f();
  return performance.now() - started;
};

{
  const traffic = new TrafficMetrics({});
  const ep = entrypoint({ name: "shop/web:http", protocol: "http" });
  traffic.sync(snap([ep]));
  const t = traffic.forEntrypoint(ep);
  const ms = time(() => {
    for (let i = 0; i < UPDATES; i++) {
      t.request(200, 0.0007);
      t.bytes(100, 900);
    }
  });
  console.log(`${UPDATES} handle updates (request + bytes): ${ms.toFixed(1)} ms`);
}
{
  const registry = new Registry();
  const traffic = new TrafficMetrics({ maxSeries: MAX_SERIES });
  registry.register(traffic);
  const eps = Array.from({ length: SERVICES }, (_, i) =>
    entrypoint({ name: `ns-${i % 100}/svc-${i}:http`, protocol: "http", endpoints: [8080] }),
  );
  const full = snap(eps);
  const syncMs = time(() => traffic.sync(full));
  for (const ep of eps) traffic.forEntrypoint(ep).request(200, 0.001);
  let bytes = 0;
  const scrapeMs = time(() => void (bytes = registry.expose().length));
  console.log(`sync of ${SERVICES} Services under a cap of ${MAX_SERIES}: ${syncMs.toFixed(1)} ms (${traffic.trackedSeries} tracked)`);
  console.log(`scrape of ${traffic.trackedSeries} Service ports: ${scrapeMs.toFixed(1)} ms (${(bytes / 1024).toFixed(0)} KiB)`);
}
{
  // A worker's dump every 250 ms: SERVICES Service ports, traffic on BUSY of them.
  const eps = Array.from({ length: SERVICES }, (_, i) => entrypoint({ name: `ns-${i % 100}/svc-${i}:http`, protocol: "http", endpoints: [8080] }));
  const s = snap(eps);
  const node = new NodeTrafficMetrics({ maxSeries: SERVICES });
  const registry = new Registry();
  registry.register(node);
  node.sync(s);
  const workers = Array.from({ length: WORKERS }, () => new TrafficMetrics({ maxSeries: SERVICES }));
  const busy = eps.filter((_, i) => i % Math.max(1, Math.floor(SERVICES / BUSY)) === 0).slice(0, BUSY);
  const quarter = (w: TrafficMetrics, which: readonly Entrypoint[]) => {
    for (const ep of which) {
      const t = w.forEntrypoint(ep);
      t.connOpened();
      t.connectDuration(0.0004);
      for (let k = 0; k < 50; k++) t.request(k % 9 === 0 ? 404 : 200, 0.0002 + k / 20_000);
      t.bytes(50 * 180, 50 * 1200);
      t.connClosed();
    }
  };
  const send = (make: () => TrafficDump): { bytes: number; dumpMs: number; wireMs: number; updateMs: number } => {
    let bytes = 0;
    let dumpMs = 0;
    let wireMs = 0;
    let updateMs = 0;
    workers.forEach((w, i) => {
      let dump: TrafficDump | undefined;
      dumpMs += time(() => void (dump = make.call(w)));
      let text = "";
      let parsed: TrafficDump | undefined;
      wireMs += time(() => void (parsed = JSON.parse((text = JSON.stringify(dump))) as TrafficDump));
      bytes += text.length;
      updateMs += time(() => void node.update(i, parsed!));
    });
    return { bytes: bytes / WORKERS, dumpMs: dumpMs / WORKERS, wireMs: wireMs / WORKERS, updateMs: updateMs / WORKERS };
  };
  const row = (what: string, r: ReturnType<typeof send>) =>
    console.log(`${what.padEnd(58)} ${(r.bytes / 1024).toFixed(1).padStart(8)} KiB  dump ${r.dumpMs.toFixed(2).padStart(6)} ms  JSON both ways ${r.wireMs.toFixed(2).padStart(6)} ms  update ${r.updateMs.toFixed(2).padStart(6)} ms`);
  for (const w of workers) w.sync(s);
  console.log(`\nper worker dump, ${SERVICES} Service ports, ${WORKERS} workers (averages per worker):`);
  for (const w of workers) quarter(w, busy);
  let dumper: (this: TrafficMetrics) => TrafficDump = function () {
    return this.dump();
  };
  row(`first dump (full), ${busy.length} busy`, send(dumper));
  for (let i = 0; i < 3; i++) {
    for (const w of workers) quarter(w, busy);
    send(dumper);
  }
  for (const w of workers) quarter(w, busy);
  row(`change dump, ${busy.length} busy`, send(dumper));
  row("change dump, quiet", send(dumper));
  dumper = function () {
    return this.dump({ full: true });
  };
  for (const w of workers) quarter(w, busy);
  row(`full dump, ${busy.length} busy`, send(dumper));
  // Every Service port had traffic once; BUSY of them still do.
  for (const w of workers) quarter(w, eps);
  dumper = function () {
    return this.dump();
  };
  send(dumper);
  for (const w of workers) quarter(w, busy);
  row(`change dump, ${busy.length} busy, all ${SERVICES} touched once`, send(dumper));
  dumper = function () {
    return this.dump({ full: true });
  };
  for (const w of workers) quarter(w, busy);
  row(`full dump, all ${SERVICES} touched once`, send(dumper));
  let bytes = 0;
  const scrapeMs = time(() => void (bytes = registry.expose().length));
  console.log(`node scrape (${WORKERS} workers summed, ${SERVICES} series, all touched): ${scrapeMs.toFixed(1)} ms (${(bytes / 1024).toFixed(0)} KiB)`);
}
