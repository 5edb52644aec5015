/**
 * Per-Service traffic metrics benchmark: the figures test/telemetry/metrics/traffic.test.ts used to bound
 * (wall-time bounds flake on a loaded box; a benchmark reports them instead). Prints the time of 1M
 * updates through a resolved handle, of a sync of 10k Services under a 5k series cap, and of a scrape
 * of the 5k tracked series (override with SERVICES= and MAX_SERIES=). On a 2-core box shared with other
 * test runs: ~150 ms, ~130 ms and ~220 ms (~20 ms for the updates when idle); a quadratic walk shows as seconds.
 *
 *   bun test/bench/metrics-scale.ts
 */
import type { Entrypoint, Snapshot } from "../../src/model/types.ts";
import { Registry, TrafficMetrics } from "../../src/telemetry/metrics/index.ts";
import { entrypoint } from "../support/entrypoints.ts";

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const MAX_SERIES = Number(process.env.MAX_SERIES ?? 5_000);
const UPDATES = 1_000_000;

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
