/**
 * Traffic metrics follow snapshots through their delta (O(changed)) exactly as through a full
 * comparison of the entrypoint lists, over random churn; a delta not relative to the last list seen is
 * ignored; a Service port that moves between its entrypoints in one snapshot keeps its series.
 */
import { describe, expect, test } from "bun:test";
import type { Entrypoint, EntrypointProtocol, Snapshot } from "../../../src/model/types.ts";
import { Registry, TrafficMetricNames as N, TrafficMetrics } from "../../../src/telemetry/metrics/index.ts";
import { entrypoint } from "../../support/entrypoints.ts";
import { parseScrape, valueOf } from "../../support/metrics-parse.ts";
import { seeded } from "../../support/random.ts";

const byKey = (a: Entrypoint, b: Entrypoint) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

let version = 0;
/** A snapshot of `eps`; with `base`, a delta naming every key whose entrypoint object differs from `base`'s. */
function snap(eps: readonly Entrypoint[], base?: readonly Entrypoint[], changed?: readonly string[]): Snapshot {
  const entrypoints = [...eps].sort(byKey);
  const s: Snapshot = { version: ++version, entrypoints, errors: [], node: { name: "node-a" } };
  if (base !== undefined) {
    const before = new Map(base.map((e) => [e.key, e]));
    const after = new Map(entrypoints.map((e) => [e.key, e]));
    const keys = changed ?? [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k));
    Object.defineProperty(s, "delta", { value: { base, changed: new Set(keys) }, enumerable: false });
  }
  return s;
}

function lbOf(ep: Entrypoint): Entrypoint {
  return { ...ep, type: "LoadBalancer", key: `LoadBalancer/${ep.name}`, port: 80 };
}

/** What a scrape shows of the series: label sets of the connection gauge, which every tracked series exposes. */
function seriesState(traffic: TrafficMetrics): unknown {
  return {
    size: traffic.size,
    tracked: traffic.trackedSeries,
    // Twins share a key (and may differ in protocol mid-churn): order by the whole sample.
    samples: traffic
      .samples()
      .map((x) => JSON.stringify(x))
      .sort()
      .map((x) => JSON.parse(x) as unknown),
  };
}

describe("TrafficMetrics.sync with snapshot deltas", () => {
  test("equals the full comparison over random churn (adds, removals, replacements, protocol changes, LB twins)", () => {
    const names = Array.from({ length: 12 }, (_, i) => `ns/svc-${i}:p`);
    const protocols: EntrypointProtocol[] = ["http", "tcp", "udp"];
    const seen = new Set<string>();
    for (let seed = 1; seed <= 40; seed++) {
      const r = seeded(seed);
      const withDelta = new TrafficMetrics();
      const full = new TrafficMetrics();
      let current: Entrypoint[] = [];
      let previous: readonly Entrypoint[] | undefined;
      for (let step = 0; step < 60; step++) {
        const byName = new Map(current.map((e) => [e.key, e]));
        const next: Entrypoint[] = [];
        for (const name of names) {
          for (const type of ["NodePort", "LoadBalancer"] as const) {
            const key = `${type}/${name}`;
            const old = byName.get(key);
            const roll = r();
            let ep: Entrypoint | undefined;
            if (old !== undefined && roll < 0.7) ep = old; // unchanged: same object
            else if (roll < 0.8) ep = undefined; // absent
            else {
              const protocol = old !== undefined && roll < 0.95 ? old.protocol : protocols[Math.floor(r() * protocols.length)]!;
              const np = entrypoint({ name, protocol, endpoints: [Math.floor(r() * 1000)] });
              ep = type === "NodePort" ? np : lbOf(np);
            }
            if (ep !== undefined) next.push(ep);
            if (old === undefined && ep !== undefined) seen.add("added");
            if (old !== undefined && ep === undefined) seen.add("removed");
            if (old !== undefined && ep !== undefined && old !== ep) seen.add(old.protocol === ep.protocol ? "replaced" : "protocol changed");
          }
        }
        const s = snap(next, previous);
        withDelta.sync(s);
        full.sync({ ...s }); // a spread copy drops the (non-enumerable) delta: the full comparison
        expect({ seed, step, ...(seriesState(withDelta) as object) }).toEqual({ seed, step, ...(seriesState(full) as object) });
        // Every Service port of the snapshot has a series; nothing else does.
        const expected = new Set(s.entrypoints.map((e) => `${e.name}|${e.protocol}`));
        expect(withDelta.size).toBe(expected.size);
        previous = s.entrypoints;
        current = next;
      }
    }
    expect([...seen].sort()).toEqual(["added", "protocol changed", "removed", "replaced"]);
  });

  test("a delta relative to a list the metrics did not see is ignored", () => {
    const traffic = new TrafficMetrics();
    const a = entrypoint({ name: "ns/a:p", protocol: "tcp" });
    const b = entrypoint({ name: "ns/b:p", protocol: "tcp" });
    const s1 = snap([a]);
    traffic.sync(s1);
    const s2 = snap([a, b], s1.entrypoints); // never synced
    const c = entrypoint({ name: "ns/c:p", protocol: "tcp" });
    traffic.sync(snap([a, b, c], s2.entrypoints)); // its delta names only c
    expect(traffic.samples().map((x) => x.key).sort()).toEqual(["ns/a:p", "ns/b:p", "ns/c:p"]);
  });

  test("only the keys the delta names are visited", () => {
    const traffic = new TrafficMetrics();
    const a = entrypoint({ name: "ns/a:p", protocol: "tcp" });
    const s1 = snap([a]);
    traffic.sync(s1);
    // b is new but the delta (wrongly) names nothing: a delta-driven sync does not see it.
    const b = entrypoint({ name: "ns/b:p", protocol: "tcp" });
    traffic.sync(snap([a, b], s1.entrypoints, []));
    expect(traffic.samples().map((x) => x.key)).toEqual(["ns/a:p"]);
  });

  test("a Service port moving from its NodePort to its LoadBalancer entrypoint in one snapshot keeps its counters", () => {
    const registry = new Registry();
    const traffic = new TrafficMetrics();
    registry.register(traffic);
    // A walk in key order would remove "LoadBalancer/ns/web:http" (deleting the series) before adding
    // "NodePort/ns/web:http" (a new, empty one); the delta adds first.
    const lb = lbOf(entrypoint({ name: "ns/web:http", protocol: "http" }));
    const s1 = snap([lb]);
    traffic.sync(s1);
    traffic.forEntrypoint(lb).request(200, 0.01);
    const np = entrypoint({ name: "ns/web:http", protocol: "http" });
    traffic.sync(snap([np], s1.entrypoints));
    const scrape = parseScrape(registry.expose());
    expect(valueOf(scrape, N.requests, { namespace: "ns", service: "web", port: "http", protocol: "http", code_class: "2xx" })).toBe(1);
  });
});
