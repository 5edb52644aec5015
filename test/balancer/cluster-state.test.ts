/**
 * ClusterState's serving-set bookkeeping. Per-endpoint hosts are created on first need (a begin/end, a host
 * read, a balancer that reads host state), so these tests check that what a cluster remembers before that
 * (join times for slow start) is exactly what its hosts start with, and that later syncs keep the same rules.
 */
import { describe, expect, test } from "bun:test";
import { ClusterState } from "../../src/balancer/cluster-state.ts";
import { LeastRequest } from "../../src/balancer/least-request.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import { ep, manualClock } from "./conformance.ts";

const T0 = 1_000_000;

function fixture() {
  const clock = manualClock(T0);
  return { clock, state: new ClusterState("ns/web:http", { now: clock.now }) };
}

describe("ClusterState serving set", () => {
  test("endpoints of the first set are never slowed; one that joins later starts serving when it joined", () => {
    const { clock, state } = fixture();
    state.sync([ep(1), ep(2)]);
    expect(state.lastJoin).toBe(-Infinity);
    clock.advance(1_000);
    // New objects for the same addresses (a new snapshot) plus one new endpoint.
    state.sync([ep(1), ep(2), ep(3)]);
    expect(state.size).toBe(3);
    expect(state.lastJoin).toBe(T0 + 1_000);
    clock.advance(1_000);
    expect(state.host(ep(1))!.servingSince).toBe(-Infinity);
    expect(state.host(ep(2))!.servingSince).toBe(-Infinity);
    expect(state.host(ep(3))!.servingSince).toBe(T0 + 1_000);
  });

  test("a join time is forgotten when the endpoint leaves: it rejoins at the time it comes back", () => {
    const { clock, state } = fixture();
    state.sync([ep(1)]);
    clock.advance(1_000);
    state.sync([ep(1), ep(2)]);
    clock.advance(1_000);
    state.sync([ep(1)]);
    clock.advance(1_000);
    state.sync([ep(1), ep(2)]);
    expect(state.host(ep(2))!.servingSince).toBe(T0 + 3_000);
    // Once hosts exist, the same rules: leave, come back later.
    clock.advance(1_000);
    state.sync([ep(1)]);
    expect(state.host(ep(2))).toBeUndefined();
    clock.advance(1_000);
    state.sync([ep(1), ep(2), ep(3)]);
    expect([state.host(ep(2))!.servingSince, state.host(ep(3))!.servingSince]).toEqual([T0 + 5_000, T0 + 5_000]);
    expect(state.lastJoin).toBe(T0 + 5_000);
  });

  test("an empty set resets the cluster: the next endpoints start at full weight", () => {
    const { clock, state } = fixture();
    state.sync([ep(1)]);
    clock.advance(1_000);
    state.sync([ep(1), ep(2)]);
    state.sync([]);
    expect(state.size).toBe(0);
    clock.advance(1_000);
    state.sync([ep(2), ep(3)]);
    expect(state.host(ep(2))!.servingSince).toBe(-Infinity);
    expect(state.host(ep(3))!.servingSince).toBe(-Infinity);
  });

  test("in-flight counts start at the first begin and are shared by every balancer of the cluster", () => {
    const { state } = fixture();
    const eps = [ep(1), ep(2)];
    const rr = new RoundRobin(eps, () => 0, { state });
    const lr = new LeastRequest([ep(1), ep(2)], () => 0, { state });
    rr.begin(eps[0]!);
    rr.begin(eps[0]!);
    expect(state.host(ep(1))!.inflight).toBe(2);
    // P2C over the two: the one with fewer in flight wins, whichever is drawn first.
    for (let i = 0; i < 10; i++) expect(lr.pick({ clientAddress: "x" })).toBe(lr.endpoints[1]!);
    rr.end(eps[0]!, "success");
    rr.end(eps[0]!, "success");
    expect(state.host(ep(1))!.inflight).toBe(0);
  });

  test("hostsOf gives a dead host for an endpoint no longer serving; feedback for it is ignored", () => {
    const { state } = fixture();
    const gone = ep(9);
    state.sync([ep(1), gone]);
    state.sync([ep(1)]);
    const [live, dead] = state.hostsOf([ep(1), gone]);
    expect(live!.live).toBe(true);
    expect(dead!.live).toBe(false);
    state.begin(gone);
    state.end(gone, "connect-failure");
    expect(dead!.inflight).toBe(0);
    expect(state.host(gone)).toBeUndefined();
  });
});
