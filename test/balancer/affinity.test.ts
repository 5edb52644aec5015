/**
 * ClientIP session affinity: kube-proxy's sliding timeout, dropped affinity, re-pin after a failed dial, bounds;
 * a deterministic first choice (rendezvous hashing), the same in every worker.
 */
import { describe, expect, test } from "bun:test";
import { AffinityTable, ClientIpAffinity, clientHash, endpointHash, endpointKey, rendezvousScore } from "../../src/balancer/affinity.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import type { Endpoint } from "../../src/model/types.ts";
import { ep, manualClock } from "./conformance.ts";

const TIMEOUT = 10_000;

function affinity(eps = [ep(1), ep(2), ep(3)], table = new AffinityTable(), clock = manualClock()) {
  const b = new ClientIpAffinity(new RoundRobin(eps, () => 0), table, TIMEOUT, clock.now);
  return { b, table, clock, eps };
}

/** The first choice for `clientAddress` over `eps` (a fresh table: another worker that never saw the client). */
function firstChoice(eps: readonly Endpoint[], clientAddress: string, exclude?: ReadonlySet<Endpoint>): Endpoint | undefined {
  return affinity([...eps]).b.pick({ clientAddress, exclude });
}

/** A client address (192.0.2.x, 198.51.100.x, ...) whose first choice over `eps` is `target`. */
function clientOf(eps: readonly Endpoint[], target: Endpoint, skip: readonly string[] = []): string {
  for (let i = 0; i < 4096; i++) {
    const c = `198.${18 + (i >> 8)}.${i & 255}.1`;
    if (!skip.includes(c) && firstChoice(eps, c) === target) return c;
  }
  throw new Error(`No client picks ${target.address}`);
}

describe("ClientIpAffinity", () => {
  test("a client sticks to its first endpoint; the first choice depends on the client and the set, not on order, table or rng", () => {
    const { b, eps } = affinity();
    const pick = (clientAddress: string) => b.pick({ clientAddress })!;
    const clients = Array.from({ length: 60 }, (_, i) => `192.0.2.${i + 1}`);
    const first = clients.map(pick);
    for (let r = 0; r < 3; r++) expect(clients.map(pick)).toEqual(first);
    // Distinct clients cover every endpoint.
    expect(new Set(first).size).toBe(3);
    // Another worker: its own table, rng and round-robin start, the set listed in another order.
    const other = new ClientIpAffinity(new RoundRobin([ep(3), ep(1), ep(2)], () => 0.7), new AffinityTable(), TIMEOUT);
    expect(clients.map((c) => other.pick({ clientAddress: c })!.address)).toEqual(first.map((e) => e.address));
  });

  test("the timeout slides: each pick refreshes it; after timeoutSeconds idle the client is balanced anew", () => {
    const three = [ep(1), ep(2), ep(3)];
    const four = [...three, ep(4)];
    // A client that goes to 10.0.0.1 among three endpoints and to 10.0.0.4 once it serves.
    let client = "";
    for (let i = 0; i < 4096 && client === ""; i++) {
      const c = `198.${18 + (i >> 8)}.${i & 255}.1`;
      if (firstChoice(three, c) === three[0] && firstChoice(four, c) === four[3]) client = c;
    }
    expect(client).not.toBe("");
    const table = new AffinityTable();
    const clock = manualClock();
    const { b } = affinity(three, table, clock);
    expect(b.pick({ clientAddress: client })!.address).toBe("10.0.0.1");
    // 10.0.0.4 joins (a new snapshot, the table carries over): the client stays while it keeps coming.
    const { b: next } = affinity([ep(1), ep(2), ep(3), ep(4)], table, clock);
    const pick = () => next.pick({ clientAddress: client })!.address;
    for (let i = 0; i < 6; i++) {
      clock.advance(TIMEOUT / 2);
      expect(pick()).toBe("10.0.0.1");
    }
    clock.advance(TIMEOUT - 1);
    expect(pick()).toBe("10.0.0.1");
    clock.advance(TIMEOUT);
    expect(pick()).toBe("10.0.0.4"); // expired: its first choice over the set of now
    expect(pick()).toBe("10.0.0.4"); // and pinned again
  });

  test("affinity to an endpoint that left the serving set is dropped; the survivor is pinned", () => {
    const table = new AffinityTable();
    const clock = manualClock();
    const { b, eps } = affinity([ep(1), ep(2), ep(3)], table, clock);
    const c1 = clientOf(eps, eps[0]!);
    const c2 = clientOf(eps, eps[1]!);
    expect(b.pick({ clientAddress: c1 })!.address).toBe("10.0.0.1");
    expect(b.pick({ clientAddress: c2 })!.address).toBe("10.0.0.2");
    // A new snapshot: 10.0.0.1 is gone; new Endpoint objects for the rest. The table carries over.
    const next = new ClientIpAffinity(new RoundRobin([ep(2), ep(3)], () => 0), table, TIMEOUT, clock.now);
    expect(next.pick({ clientAddress: c2 })!.address).toBe("10.0.0.2"); // kept across the swap
    const moved = next.pick({ clientAddress: c1 })!;
    expect(moved.address).not.toBe("10.0.0.1");
    expect(moved.address).toBe(firstChoice([ep(2), ep(3)], c1)!.address); // where any worker sends it
    expect(next.pick({ clientAddress: c1 })).toBe(moved);
    // 10.0.0.1 comes back: the client stays where it is now.
    const back = new ClientIpAffinity(new RoundRobin([ep(1), ep(2), ep(3)], () => 0), table, TIMEOUT, clock.now);
    expect(back.pick({ clientAddress: c1 })!.address).toBe(moved.address);
    // The endpoint object returned is the new snapshot's, not the old one.
    expect(next.endpoints.includes(next.pick({ clientAddress: c2 })!)).toBe(true);
  });

  test("the first choice is the highest rendezvous score (docs/balancing.md gives the formula)", () => {
    const eps = Array.from({ length: 20 }, (_, i) => ep(i + 1, 8000 + i));
    for (let c = 0; c < 500; c++) {
      const client = `203.0.${c >> 8}.${c & 255}`;
      const scores = eps.map((e) => rendezvousScore(clientHash(client), endpointHash(endpointKey(e))));
      expect(firstChoice(eps, client)).toBe(eps[scores.indexOf(Math.max(...scores))]!);
    }
  });

  test("removing an endpoint moves only its clients; adding one takes clients only to itself", () => {
    const four = [ep(1), ep(2), ep(3), ep(4)];
    const clients = Array.from({ length: 2000 }, (_, i) => `203.0.${i >> 8}.${i & 255}`);
    const before = clients.map((c) => firstChoice(four, c)!.address);
    const after = clients.map((c) => firstChoice([ep(1), ep(2), ep(4)], c)!.address);
    let moved = 0;
    for (let i = 0; i < clients.length; i++) {
      if (before[i] === "10.0.0.3") expect(after[i]).not.toBe("10.0.0.3");
      else expect(after[i]).toBe(before[i]!);
      if (before[i] !== after[i]) moved++;
    }
    // About a quarter of the clients were on 10.0.0.3 (4 standard deviations: 25% +- 3.9%).
    expect(Math.abs(moved / clients.length - 0.25)).toBeLessThan(0.039);
    const five = clients.map((c) => firstChoice([...four, ep(5)], c)!.address);
    for (let i = 0; i < clients.length; i++) if (five[i] !== before[i]) expect(five[i]).toBe("10.0.0.5");
  });

  test("when the affine endpoint fails to connect (excluded), another is picked and the client is pinned to it", () => {
    const { b, eps } = affinity();
    const client = clientOf(eps, eps[0]!);
    expect(b.pick({ clientAddress: client })).toBe(eps[0]!);
    const retry = b.pick({ clientAddress: client, exclude: new Set([eps[0]!]) });
    expect(retry).toBeDefined();
    expect(retry).not.toBe(eps[0]!);
    // The same retry in any worker: the client's choice over the others.
    expect(retry!.address).toBe(firstChoice([ep(2), ep(3)], client)!.address);
    expect(b.pick({ clientAddress: client })).toBe(retry!);
  });

  test("IPv4-mapped IPv6 clients share the IPv4 client's affinity and first choice", () => {
    const { b, eps } = affinity();
    const first = b.pick({ clientAddress: "192.0.2.1" });
    b.pick({ clientAddress: "192.0.2.2" });
    expect(b.pick({ clientAddress: "::ffff:192.0.2.1" })).toBe(first!);
    for (let i = 1; i < 50; i++) expect(firstChoice(eps, `::ffff:192.0.2.${i}`)).toBe(firstChoice(eps, `192.0.2.${i}`)!);
  });

  test("entries() lists live affinities for the admin API", () => {
    const { b, clock } = affinity();
    const a = b.pick({ clientAddress: "192.0.2.1" })!;
    clock.advance(TIMEOUT / 2);
    const c = b.pick({ clientAddress: "2001:db8::1" })!;
    expect(b.entries()).toEqual([
      { client: "192.0.2.1", endpoint: `${a.address}:8080`, idleMs: TIMEOUT / 2 },
      { client: "2001:db8::1", endpoint: `${c.address}:8080`, idleMs: 0 },
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
    const a = b.pick({ clientAddress: "a" })!; // a is now the most recent
    clock.advance(2_000);
    b.pick({ clientAddress: "d" });
    expect(table.size).toBe(3);
    expect(table.get("b")).toBeUndefined();
    const key = (c: string) => `${firstChoice([ep(1), ep(2), ep(3)], c)!.address}:8080`;
    expect(["a", "c", "d"].map((c) => table.get(c)?.key)).toEqual([`${a.address}:8080`, key("c"), key("d")]);
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
