/** Passive outlier detection (ClusterState): thresholds, ejection times, max percent, readmission, bookkeeping. */
import { describe, expect, test } from "bun:test";
import { ClusterState, MAX_EJECTION_MS, type OutlierSettings } from "../../src/balancer/cluster-state.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import type { Endpoint } from "../../src/model/types.ts";
import { ep, manualClock } from "./conformance.ts";

const BASE = 30_000;

function setup(n: number, outlier: Partial<OutlierSettings> = {}) {
  const clock = manualClock();
  const state = new ClusterState("ns/web:http", {
    now: clock.now,
    outlier: { consecutiveFailures: 5, baseEjectionMs: BASE, maxEjectionPercent: 50, ...outlier },
  });
  const eps = Array.from({ length: n }, (_, i) => ep(i + 1));
  const rr = new RoundRobin(eps, () => 0, { state });
  const fail = (e: Endpoint, times = 1, outcome: "connect-failure" | "server-error" = "server-error") => {
    for (let i = 0; i < times; i++) {
      rr.begin(e);
      rr.end(e, outcome);
    }
  };
  return { clock, state, eps, rr, fail };
}

describe("outlier detection", () => {
  test("consecutive connect failures and 5xx eject at the threshold; a success resets the count", () => {
    const { state, eps, fail, rr } = setup(4);
    const e = eps[0]!;
    fail(e, 2, "connect-failure");
    fail(e, 2, "server-error");
    rr.end(e, "success");
    fail(e, 4);
    expect(state.ejectedCount).toBe(0);
    fail(e, 1, "connect-failure");
    expect(state.ejectedCount).toBe(1);
    expect(state.ejectionsTotal).toBe(1);
    expect(state.ejectedEndpoints()).toEqual([{ address: "10.0.0.1", port: 8080, until: 1_000_000 + BASE, ejections: 1 }]);
  });

  test("an ejected endpoint is readmitted when its time is up (lazily, by the injected clock)", () => {
    const { state, eps, fail, rr, clock } = setup(3);
    fail(eps[0]!, 5);
    for (let i = 0; i < 30; i++) expect(rr.pick({ clientAddress: "x" })).not.toBe(eps[0]!);
    clock.advance(BASE - 1);
    expect(rr.ejected(eps[0]!)).toBe(true);
    clock.advance(1);
    expect(state.stats()).toEqual({ cluster: "ns/web:http", ejected: 0, ejectionsTotal: 1 });
    expect(Array.from({ length: 3 }, () => rr.pick({ clientAddress: "x" }))).toContain(eps[0]!);
  });

  test("the n-th ejection in a row lasts n x base (capped), and the count decays while the endpoint serves well", () => {
    const { state, eps, fail, clock } = setup(4);
    const e = eps[0]!;
    const durations: number[] = [];
    for (let n = 0; n < 3; n++) {
      fail(e, 5);
      const [row] = state.ejectedEndpoints();
      durations.push(row!.until - clock.now());
      expect(row!.ejections).toBe(n + 1);
      clock.advance(row!.until - clock.now());
      expect(state.refresh(clock.now())).toBe(0);
    }
    expect(durations).toEqual([BASE, 2 * BASE, 3 * BASE]);
    // Two base periods of good service take two off the count: the next ejection is the second in a row.
    clock.advance(2 * BASE);
    fail(e, 5);
    expect(state.ejectedEndpoints()[0]!.ejections).toBe(2);
    expect(state.ejectedEndpoints()[0]!.until - clock.now()).toBe(2 * BASE);
  });

  test(`ejections last at most ${MAX_EJECTION_MS / 1000} s (or the base time, when longer)`, () => {
    const { state, eps, fail, clock } = setup(4, { baseEjectionMs: 100_000 });
    const lengths: number[] = [];
    for (let n = 0; n < 5; n++) {
      fail(eps[0]!, 5);
      const until = state.ejectedEndpoints()[0]!.until;
      lengths.push(until - clock.now());
      clock.advance(until - clock.now());
    }
    expect(lengths).toEqual([100_000, 200_000, 300_000, 300_000, 300_000]);
    const long = setup(2, { baseEjectionMs: 600_000, consecutiveFailures: 1 });
    long.fail(long.eps[0]!);
    expect(long.state.ejectedEndpoints()[0]!.until - long.clock.now()).toBe(600_000);
  });

  test("at most maxEjectionPercent of the endpoints are ejected at once; a refused one is ejected once room frees", () => {
    const { state, eps, fail, clock } = setup(10, { maxEjectionPercent: 30 });
    for (const e of eps.slice(0, 3)) fail(e, 5);
    expect(state.ejectedCount).toBe(3);
    fail(eps[3]!, 5);
    expect(state.ejectedCount).toBe(3);
    clock.advance(BASE);
    // The three are readmitted; the fourth's next failure ejects it (its count was kept).
    fail(eps[3]!, 1);
    expect(state.ejectedEndpoints().map((r) => r.address)).toEqual(["10.0.0.4"]);
  });

  test("one endpoint may always be ejected, whatever the percentage (as in Envoy)", () => {
    const { state, eps, fail } = setup(2, { maxEjectionPercent: 10 });
    fail(eps[0]!, 5);
    fail(eps[1]!, 5);
    expect(state.ejectedEndpoints().map((r) => r.address)).toEqual(["10.0.0.1"]);
  });

  test("outcomes of requests that end while their endpoint is ejected neither count nor extend the ejection", () => {
    const { state, eps, fail } = setup(4);
    fail(eps[0]!, 5);
    const until = state.ejectedEndpoints()[0]!.until;
    fail(eps[0]!, 20);
    expect(state.ejectionsTotal).toBe(1);
    expect(state.ejectedEndpoints()[0]!.until).toBe(until);
  });

  test("consecutiveFailures 0 turns detection off", () => {
    const { state, eps, fail } = setup(4, { consecutiveFailures: 0 });
    fail(eps[0]!, 100);
    expect(state.outlier).toBeUndefined();
    expect(state.ejectedCount).toBe(0);
  });

  test("an ejected endpoint that leaves the serving set is forgotten; its in-flight feedback is ignored", () => {
    const { state, eps, fail, rr } = setup(4);
    fail(eps[0]!, 5);
    expect(state.ejectedCount).toBe(1);
    const next = new RoundRobin(eps.slice(1), () => 0, { state });
    expect(state.ejectedCount).toBe(0);
    expect(state.size).toBe(3);
    rr.end(eps[0]!, "server-error");
    expect(state.host(eps[0]!)).toBeUndefined();
    // Back later: it starts clean.
    new RoundRobin(eps, () => 0, { state });
    expect(state.host(ep(1))!.failures).toBe(0);
    expect(next.pick({ clientAddress: "x" })).toBeDefined();
  });

  test("state is per address:port: a rebuilt balancer over new Endpoint objects sees the ejection", () => {
    const { state, eps, fail } = setup(3);
    fail(eps[2]!, 5);
    const fresh = [ep(1), ep(2), ep(3)];
    const rebuilt = new RoundRobin(fresh, () => 0, { state });
    for (let i = 0; i < 20; i++) expect(rebuilt.pick({ clientAddress: "x" })).not.toBe(fresh[2]!);
    expect(rebuilt.ejected(fresh[2]!)).toBe(true);
  });
});
