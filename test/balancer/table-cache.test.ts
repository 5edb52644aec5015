/**
 * Consistent-hash tables do not depend on the order of the endpoint set: ring-hash and Maglev send a key to the
 * same endpoint whatever order the set came in (two workers, two snapshots), ties between ring points included.
 */
import { describe, expect, test } from "bun:test";
import { endpointKey } from "../../src/balancer/affinity.ts";
import { murmur3 } from "../../src/balancer/hash.ts";
import { Maglev } from "../../src/balancer/maglev.ts";
import { buildRing, RingHash } from "../../src/balancer/ring-hash.ts";
import { canonicalKeys, TableCache } from "../../src/balancer/table-cache.ts";
import type { Endpoint } from "../../src/model/types.ts";
import { seeded } from "../support/random.ts";

/** An endpoint at `address` (IPv4 or IPv6) on `port`. */
function at(address: string, port = 8080): Endpoint {
  return { address, port, ready: true, serving: true, terminating: false };
}

/** `items` shuffled by `rng` (Fisher-Yates), a new array. */
function shuffled<T>(items: readonly T[], rng: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const clients = Array.from({ length: 1000 }, (_, i) => `172.16.${i >> 8}.${i & 255}`);

describe("canonicalKeys", () => {
  test("sorts the keys and says where each came from; no order when already sorted", () => {
    const eps = [at("10.0.0.2"), at("2001:db8::1", 80), at("10.0.0.10")];
    const { keys, order } = canonicalKeys(eps);
    expect(keys).toEqual(["10.0.0.10:8080", "10.0.0.2:8080", "[2001:db8::1]:80"]);
    expect([...order!]).toEqual([2, 0, 1]);
    for (let j = 0; j < keys.length; j++) expect(endpointKey(eps[order![j]!]!)).toBe(keys[j]!);
    expect(canonicalKeys([at("10.0.0.1"), at("10.0.0.2")]).order).toBeUndefined();
    expect(canonicalKeys([])).toEqual({ keys: [], order: undefined });
  });

  test("one table per set whatever its order", () => {
    const cache = new TableCache<{ id: number }>(1 << 20, () => 1);
    let built = 0;
    const eps = [at("10.0.0.3"), at("10.0.0.1"), at("10.0.0.2")];
    const a = cache.get(canonicalKeys(eps).keys, () => ({ id: built++ }));
    const b = cache.get(canonicalKeys(shuffled(eps, seeded(3))).keys, () => ({ id: built++ }));
    expect(b).toBe(a);
    expect(built).toBe(1);
  });
});

describe.each([
  ["RingHash", (eps: readonly Endpoint[]) => new RingHash(eps, seeded(1))],
  ["Maglev", (eps: readonly Endpoint[]) => new Maglev(eps, seeded(2))],
] as const)("%s over the same set in another order", (_name, make) => {
  const set = [
    ...Array.from({ length: 40 }, (_, i) => at(`10.0.${i >> 4}.${i + 1}`)),
    at("2001:db8::1"),
    at("2001:db8::2", 9090),
  ];

  test("sends every key to the same endpoint, and retries (exclusions) to the same next one", () => {
    const a = make(set);
    for (let s = 1; s <= 5; s++) {
      const b = make(shuffled(set, seeded(100 + s)));
      for (const clientAddress of clients) {
        const first = a.pick({ clientAddress })!;
        expect(endpointKey(b.pick({ clientAddress })!)).toBe(endpointKey(first));
        const excludeA = new Set([first]);
        const excludeB = new Set(b.endpoints.filter((e) => endpointKey(e) === endpointKey(first)));
        expect(endpointKey(b.pick({ clientAddress, exclude: excludeB })!)).toBe(endpointKey(a.pick({ clientAddress, exclude: excludeA })!));
      }
      for (let k = 0; k < 200; k++) {
        const hashKey = `user-${k}`;
        expect(endpointKey(b.pick({ clientAddress: "x", hashKey })!)).toBe(endpointKey(a.pick({ clientAddress: "y", hashKey })!));
      }
    }
  });

  test("returns the endpoint objects of its own set", () => {
    const order = shuffled(set, seeded(9));
    const b = make(order);
    for (const clientAddress of clients.slice(0, 100)) expect(order.includes(b.pick({ clientAddress })!)).toBe(true);
  });
});

test("ring-hash: two endpoints with a point on the same hash; the key there goes to the same one in either order", () => {
  // Found by search: point 336 of 10.0.1.38:8080 and point 340 of 10.0.0.179:8080 hash alike.
  const x = at("10.0.0.179");
  const y = at("10.0.1.38");
  const tie = murmur3("10.0.1.38:8080", 336);
  expect(murmur3("10.0.0.179:8080", 340)).toBe(tie);
  // A key landing on the tied point: its hash is past the ring's previous point and at most the tie.
  const { hashes } = buildRing(["10.0.0.179:8080", "10.0.1.38:8080"]);
  const at0 = hashes.indexOf(tie);
  const previous = at0 > 0 ? hashes[at0 - 1]! : -1;
  let hashKey: string | undefined;
  for (let k = 0; k < 200_000 && hashKey === undefined; k++) {
    const h = murmur3(`k${k}`);
    if (h > previous && h <= tie) hashKey = `k${k}`;
  }
  expect(hashKey).toBeDefined();
  const picks = [[x, y], [y, x]].map((eps) => new RingHash(eps).pick({ clientAddress: "x", hashKey })!.address);
  expect(picks[1]).toBe(picks[0]!);
});
