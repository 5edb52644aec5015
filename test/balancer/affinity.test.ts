/** ClientIP session affinity: kube-proxy's sliding timeout, dropped affinity, re-pin after a failed dial, bounds. */
import { describe, expect, test } from "bun:test";
import { AffinityTable, ClientIpAffinity } from "../../src/balancer/affinity.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import { ep, manualClock } from "./conformance.ts";

const TIMEOUT = 10_000;

function affinity(eps = [ep(1), ep(2), ep(3)], table = new AffinityTable(), clock = manualClock()) {
  const b = new ClientIpAffinity(new RoundRobin(eps, () => 0), table, TIMEOUT, clock.now);
  return { b, table, clock, eps };
}

describe("ClientIpAffinity", () => {
  test("a client sticks to its first endpoint while other clients rotate", () => {
    const { b, eps } = affinity();
    const pick = (clientAddress: string) => b.pick({ clientAddress })!.address;
    expect(pick("192.0.2.1")).toBe(eps[0]!.address);
    expect(pick("192.0.2.2")).toBe(eps[1]!.address);
    expect([pick("192.0.2.1"), pick("192.0.2.1"), pick("192.0.2.2"), pick("192.0.2.3")]).toEqual(["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"]);
  });

  test("the timeout slides: each pick refreshes it; after timeoutSeconds idle the client is balanced anew", () => {
    const { b, clock } = affinity();
    const pick = () => b.pick({ clientAddress: "192.0.2.1" })!.address;
    expect(pick()).toBe("10.0.0.1");
    // Keep using it for three timeouts' worth of time, never idle for a whole timeout.
    for (let i = 0; i < 6; i++) {
      clock.advance(TIMEOUT / 2);
      expect(pick()).toBe("10.0.0.1");
    }
    clock.advance(TIMEOUT - 1);
    expect(pick()).toBe("10.0.0.1");
    clock.advance(TIMEOUT);
    expect(pick()).toBe("10.0.0.2"); // expired: the round robin's next
    expect(pick()).toBe("10.0.0.2"); // and pinned again
  });

  test("affinity to an endpoint that left the serving set is dropped; the survivor is pinned", () => {
    const table = new AffinityTable();
    const clock = manualClock();
    const { b } = affinity([ep(1), ep(2), ep(3)], table, clock);
    expect(b.pick({ clientAddress: "192.0.2.1" })!.address).toBe("10.0.0.1");
    expect(b.pick({ clientAddress: "192.0.2.2" })!.address).toBe("10.0.0.2");
    // A new snapshot: 10.0.0.1 is gone; new Endpoint objects for the rest. The table carries over.
    const next = new ClientIpAffinity(new RoundRobin([ep(2), ep(3)], () => 0), table, TIMEOUT, clock.now);
    expect(next.pick({ clientAddress: "192.0.2.2" })!.address).toBe("10.0.0.2"); // kept across the swap
    const moved = next.pick({ clientAddress: "192.0.2.1" })!;
    expect(moved.address).not.toBe("10.0.0.1");
    expect(next.pick({ clientAddress: "192.0.2.1" })).toBe(moved);
    // The endpoint object returned is the new snapshot's, not the old one.
    expect(next.endpoints.includes(next.pick({ clientAddress: "192.0.2.2" })!)).toBe(true);
  });

  test("when the affine endpoint fails to connect (excluded), another is picked and the client is pinned to it", () => {
    const { b, eps } = affinity();
    expect(b.pick({ clientAddress: "192.0.2.1" })).toBe(eps[0]!);
    const retry = b.pick({ clientAddress: "192.0.2.1", exclude: new Set([eps[0]!]) });
    expect(retry).toBe(eps[1]!);
    expect(b.pick({ clientAddress: "192.0.2.1" })).toBe(eps[1]!);
  });

  test("IPv4-mapped IPv6 clients share the IPv4 client's affinity", () => {
    const { b } = affinity();
    const first = b.pick({ clientAddress: "192.0.2.1" });
    b.pick({ clientAddress: "192.0.2.2" });
    expect(b.pick({ clientAddress: "::ffff:192.0.2.1" })).toBe(first!);
  });

  test("entries() lists live affinities for the admin API", () => {
    const { b, clock } = affinity();
    b.pick({ clientAddress: "192.0.2.1" });
    clock.advance(TIMEOUT / 2);
    b.pick({ clientAddress: "2001:db8::1" });
    expect(b.entries()).toEqual([
      { client: "192.0.2.1", endpoint: "10.0.0.1:8080", idleMs: TIMEOUT / 2 },
      { client: "2001:db8::1", endpoint: "10.0.0.2:8080", idleMs: 0 },
    ]);
    clock.advance(TIMEOUT / 2);
    expect(b.entries().map((r) => r.client)).toEqual(["2001:db8::1"]);
  });
});

describe("AffinityTable", () => {
  test("is bounded: past maxEntries the least recently seen client is forgotten", () => {
    const table = new AffinityTable({ maxEntries: 3 });
    const clock = manualClock();
    const { b } = affinity([ep(1), ep(2), ep(3)], table, clock);
    for (const c of ["a", "b", "c"]) {
      b.pick({ clientAddress: c });
      clock.advance(2_000);
    }
    b.pick({ clientAddress: "a" }); // a is now the most recent
    clock.advance(2_000);
    b.pick({ clientAddress: "d" });
    expect(table.size).toBe(3);
    expect(table.get("b")).toBeUndefined();
    expect(["a", "c", "d"].map((c) => table.get(c)?.key)).toEqual(["10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.1:8080"]);
  });

  test("expired entries are swept lazily as new clients arrive, and by sweep()", () => {
    const table = new AffinityTable();
    const clock = manualClock();
    const { b } = affinity([ep(1), ep(2)], table, clock);
    for (let i = 0; i < 10; i++) b.pick({ clientAddress: `192.0.2.${i}` });
    expect(table.size).toBe(10);
    clock.advance(TIMEOUT);
    b.pick({ clientAddress: "198.51.100.1" });
    expect(table.size).toBe(1);
    b.pick({ clientAddress: "198.51.100.2" });
    clock.advance(TIMEOUT);
    expect(table.sweep(clock.now(), TIMEOUT)).toBe(2);
    expect(table.size).toBe(0);
  });
});
