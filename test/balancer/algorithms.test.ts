/** Algorithm-specific behaviour: smooth weighted round robin, slow start, least-request, algorithm choice. */
import { describe, expect, test } from "bun:test";
import { BALANCER_ALGORITHMS, createBalancer } from "../../src/balancer/algorithms.ts";
import { ClusterState } from "../../src/balancer/cluster-state.ts";
import { LeastRequest } from "../../src/balancer/least-request.ts";
import { Maglev } from "../../src/balancer/maglev.ts";
import { RandomBalancer } from "../../src/balancer/random.ts";
import { RingHash } from "../../src/balancer/ring-hash.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import type { Balancer } from "../../src/balancer/types.ts";
import type { Endpoint } from "../../src/model/types.ts";
import { seeded } from "../support/random.ts";
import { ep, manualClock } from "./conformance.ts";

/** A cluster that served `old` (not slowed: the first endpoints), then also `added` from now. */
function cluster(old: Endpoint[], added: Endpoint[]) {
  const clock = manualClock();
  const state = new ClusterState("ns/web:http", { now: clock.now });
  state.sync(old);
  return { clock, state, all: [...old, ...added] };
}

function share(b: Balancer, target: Endpoint, picks: number): number {
  let n = 0;
  for (let i = 0; i < picks; i++) if (b.pick({ clientAddress: "192.0.2.1" }) === target) n++;
  return n / picks;
}

describe("RoundRobin (smooth weighted)", () => {
  test("weights 5:1:1 interleave as nginx's SWRR does: a a b a c a a", () => {
    const [a, b, c] = [ep(1), ep(2), ep(3)];
    const { clock, state, all } = cluster([a!], [b!, c!]);
    const rr = new RoundRobin(all, () => 0, { state, slowStartMs: 9_000 });
    // 1/9 into the 9 s window: weight 0.1 + 0.9 x 1/9 = 0.2, a fifth of a's.
    clock.advance(1_000);
    const seq = Array.from({ length: 14 }, () => rr.pick({ clientAddress: "x" })!.address.slice(-1));
    expect(seq.join(" ")).toBe("1 1 2 1 3 1 1 1 1 2 1 3 1 1");
  });

  test("slow start: a new endpoint's share ramps from 10% of a full weight to equal, picks spread out", () => {
    const [a, b] = [ep(1), ep(2)];
    const { clock, state, all } = cluster([a!], [b!]);
    const rr = new RoundRobin(all, () => 0, { state, slowStartMs: 10_000 });
    // At the start: weights 1 and 0.1, so 1 pick in 11; never two in a row.
    const seq = Array.from({ length: 1_100 }, () => rr.pick({ clientAddress: "x" }));
    expect(seq.filter((e) => e === b).length).toBe(100);
    for (let i = 1; i < seq.length; i++) expect(seq[i] === b && seq[i - 1] === b).toBe(false);
    clock.advance(5_000); // half way: 0.55 / 1.55
    expect(share(rr, b!, 3_100)).toBeCloseTo(0.55 / 1.55, 2);
    clock.advance(5_000); // done: a plain alternation
    const tail = Array.from({ length: 6 }, () => rr.pick({ clientAddress: "x" }));
    for (let i = 1; i < tail.length; i++) expect(tail[i]).not.toBe(tail[i - 1]!);
    expect(share(rr, b!, 1_000)).toBe(0.5);
  });

  test("an ejected endpoint's share spreads over all the others, not onto its neighbour", () => {
    const eps = [ep(1), ep(2), ep(3), ep(4)];
    const state = new ClusterState("ns/web:http", { now: manualClock().now, outlier: { consecutiveFailures: 1, baseEjectionMs: 1_000, maxEjectionPercent: 50 } });
    const rr = new RoundRobin(eps, () => 0, { state });
    rr.end(eps[1]!, "connect-failure");
    const counts = eps.map(() => 0);
    for (let i = 0; i < 300; i++) counts[eps.indexOf(rr.pick({ clientAddress: "x" })!)]!++;
    expect(counts).toEqual([100, 0, 100, 100]);
  });
});

describe("slow start", () => {
  test("the first endpoints of a brand-new cluster are not slowed, nor are any when the window is 0", () => {
    const state = new ClusterState("ns/web:http", { now: manualClock().now });
    const eps = [ep(1), ep(2)];
    const rr = new RoundRobin(eps, () => 0, { state, slowStartMs: 60_000 });
    expect(share(rr, eps[1]!, 1_000)).toBe(0.5);
    const { state: s2, all } = cluster([ep(1)], [ep(2)]);
    expect(share(new RoundRobin(all, () => 0, { state: s2, slowStartMs: 0 }), all[1]!, 1_000)).toBe(0.5);
  });

  test.each([
    ["random", (all: Endpoint[], state: ClusterState) => new RandomBalancer(all, seeded(3), { state, slowStartMs: 10_000 })],
    ["least-request (idle)", (all: Endpoint[], state: ClusterState) => new LeastRequest(all, seeded(3), { state, slowStartMs: 10_000 })],
  ] as const)("%s: the new endpoint's share follows its weight: 10%%, 55%%, 100%% of a full one", (_name, make) => {
    const { clock, state, all } = cluster([ep(1)], [ep(2)]);
    const b = make(all, state);
    expect(share(b, all[1]!, 20_000)).toBeCloseTo(0.1 / 1.1, 1.6);
    clock.advance(5_000);
    expect(share(b, all[1]!, 20_000)).toBeCloseTo(0.55 / 1.55, 1.6);
    clock.advance(5_000);
    expect(share(b, all[1]!, 20_000)).toBeCloseTo(0.5, 1.6);
  });

  test("least-request under load: a ramping endpoint holds about its weight's share of the requests in flight", () => {
    const { state, all } = cluster([ep(1), ep(2), ep(3)], [ep(4)]);
    const lr = new LeastRequest(all, seeded(5), { state, slowStartMs: 10_000 });
    // 400 requests begun and none ended: in flight spreads as weights 1:1:1:0.1.
    for (let i = 0; i < 400; i++) lr.begin(lr.pick({ clientAddress: "x" })!);
    const inflight = all.map((e) => state.host(e)!.inflight);
    for (const n of inflight.slice(0, 3)) expect(Math.abs(n - 129)).toBeLessThanOrEqual(3);
    expect(inflight[3]).toBeLessThanOrEqual(15);
    expect(inflight[3]).toBeGreaterThanOrEqual(10);
  });

  test("an endpoint that leaves the serving set and returns ramps again; one that stays keeps its start across rebuilds", () => {
    const { clock, state, all } = cluster([ep(1)], [ep(2)]);
    new RoundRobin(all, () => 0, { state, slowStartMs: 10_000 });
    const since = state.host(all[1]!)!.servingSince;
    clock.advance(4_000);
    // A new snapshot with new Endpoint objects for the same addresses: the start is kept.
    const again = [ep(1), ep(2), ep(3)];
    new RoundRobin(again, () => 0, { state, slowStartMs: 10_000 });
    expect(state.host(again[1]!)!.servingSince).toBe(since);
    expect(state.host(again[2]!)!.servingSince).toBe(clock.now());
    // 10.0.0.2 leaves, then comes back: it starts over.
    new RoundRobin([ep(1), ep(3)], () => 0, { state });
    clock.advance(1_000);
    new RoundRobin(again, () => 0, { state });
    expect(state.host(ep(2))!.servingSince).toBe(clock.now());
  });

  test("consistent hashes ignore slow start (weights would move keys)", () => {
    for (const make of [(e: Endpoint[], s: ClusterState) => new RingHash(e, Math.random, { state: s, slowStartMs: 60_000 }), (e: Endpoint[], s: ClusterState) => new Maglev(e, Math.random, { state: s, slowStartMs: 60_000 })]) {
      const { state, all } = cluster([ep(1)], [ep(2)]);
      const b = make(all, state);
      expect(b.slowStartMs).toBe(0);
      let hits = 0;
      for (let i = 0; i < 2_000; i++) if (b.pick({ clientAddress: "x", hashKey: `k${i}` }) === all[1]) hits++;
      expect(Math.abs(hits / 2_000 - 0.5)).toBeLessThan(0.06);
    }
  });
});

describe("LeastRequest", () => {
  test("prefers the less loaded endpoint: the most loaded one is never chosen while others have fewer in flight", () => {
    const eps = [ep(1), ep(2), ep(3), ep(4)];
    const lr = new LeastRequest(eps, seeded(1));
    for (let i = 0; i < 3; i++) lr.begin(eps[0]!);
    lr.begin(eps[1]!);
    const counts = eps.map(() => 0);
    for (let i = 0; i < 1_000; i++) counts[eps.indexOf(lr.pick({ clientAddress: "x" })!)]!++;
    expect(counts[0]).toBe(0);
    // ep 2 (1 in flight) only wins against ep 1: about a sixth of the pairs.
    expect(counts[1]! / 1_000).toBeCloseTo(1 / 6, 1);
    expect(counts[2]).toBeGreaterThan(350);
    expect(counts[3]).toBeGreaterThan(350);
    // Two endpoints: the loaded one is never chosen until its requests end.
    const two = new LeastRequest([eps[0]!, eps[1]!], seeded(2), { state: lr.state });
    for (let i = 0; i < 100; i++) expect(two.pick({ clientAddress: "x" })).toBe(eps[1]!);
    for (let i = 0; i < 3; i++) lr.end(eps[0]!, "success");
    expect(new Set(Array.from({ length: 100 }, () => two.pick({ clientAddress: "x" })))).toEqual(new Set([eps[0]!]));
  });

  test("in-flight counts are shared by the balancers of a cluster (routes of one Service port, rebuilt routes) and never go negative", () => {
    const state = new ClusterState("ns/web:http");
    const a = new LeastRequest([ep(1), ep(2)], seeded(1), { state });
    const b = new LeastRequest([ep(1), ep(2)], seeded(1), { state });
    const first = a.pick({ clientAddress: "x" })!;
    a.begin(first);
    a.begin(first);
    expect(b.pick({ clientAddress: "x" })).not.toBe(first);
    // An Endpoint object of another snapshot for the same address:port counts as the same endpoint.
    b.end({ ...first }, "success");
    expect(state.host(first)!.inflight).toBe(1);
    a.end(first, "success");
    a.end(first, "success");
    expect(state.host(first)!.inflight).toBe(0);
  });

  test("one endpoint: always it (no second candidate)", () => {
    const only = ep(1);
    const lr = new LeastRequest([only], seeded(1));
    lr.begin(only);
    expect(lr.pick({ clientAddress: "x" })).toBe(only);
  });
});

describe("createBalancer", () => {
  test("builds every algorithm by name", () => {
    const eps = [ep(1), ep(2)];
    expect(BALANCER_ALGORITHMS.map((a) => createBalancer(a, eps).constructor.name)).toEqual(["RoundRobin", "LeastRequest", "RandomBalancer", "RingHash", "Maglev"]);
  });
});
