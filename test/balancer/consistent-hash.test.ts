/** Ring hash and Maglev: the hash, table balance, bounded remapping on removal and addition, key choice, fallbacks. */
import { describe, expect, test } from "bun:test";
import type { EndpointBalancer } from "../../src/balancer/base.ts";
import { murmur3 } from "../../src/balancer/hash.ts";
import { buildMaglev, Maglev, maglevSize } from "../../src/balancer/maglev.ts";
import { TableCache } from "../../src/balancer/table-cache.ts";
import { buildRing, RING_MAX, RING_PER_ENDPOINT, RingHash, ringPointsPerEndpoint } from "../../src/balancer/ring-hash.ts";
import type { Endpoint } from "../../src/model/types.ts";

/** Reference MurmurHash3_x86_32 over bytes (the textbook algorithm). */
function murmurBytes(bytes: Uint8Array, seed: number): number {
  let h = seed | 0;
  const blocks = bytes.length >> 2;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < blocks; b++) {
    let k = view.getUint32(b * 4, true);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  const tail = blocks * 4;
  const rest = bytes.length & 3;
  if (rest === 3) k ^= bytes[tail + 2]! << 16;
  if (rest >= 2) k ^= bytes[tail + 1]! << 8;
  if (rest >= 1) {
    k ^= bytes[tail]!;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= bytes.length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const utf16le = (s: string) => new Uint8Array(Buffer.from(s, "utf16le"));

describe("murmur3", () => {
  test("the reference implementation matches published vectors", () => {
    const ascii = (s: string) => new TextEncoder().encode(s);
    expect(murmurBytes(ascii(""), 0)).toBe(0);
    expect(murmurBytes(ascii(""), 1)).toBe(0x514e28b7);
    expect(murmurBytes(ascii("test"), 0)).toBe(0xba6bd213);
    expect(murmurBytes(ascii("Hello, world!"), 1234)).toBe(0xfaf6cdb3);
    expect(murmurBytes(ascii("The quick brown fox jumps over the lazy dog"), 0)).toBe(0x2e4ff723);
  });

  test("is MurmurHash3_x86_32 of the string's UTF-16LE bytes, for odd and even lengths, any seed and suffix", () => {
    for (const s of ["", "a", "ab", "10.0.0.1:8080", "[2001:db8::1]:443", "user-42", "héllo ✓ 日本"]) {
      for (const seed of [0, 1, 0x9747b28c]) expect(murmur3(s, seed)).toBe(murmurBytes(utf16le(s), seed));
    }
    expect(murmur3("::ffff:192.0.2.1", 0, 7)).toBe(murmur3("192.0.2.1"));
  });
});

function eps(n: number, from = 0): Endpoint[] {
  return Array.from({ length: n }, (_, i) => ({ address: `10.0.${(from + i) >> 8}.${(from + i) & 255}`, port: 8080, ready: true, serving: true, terminating: false }));
}

const keys = Array.from({ length: 10_000 }, (_, i) => `client-${i}`);

/** Each key's endpoint address. */
function assign(b: EndpointBalancer): string[] {
  return keys.map((hashKey) => b.pick({ clientAddress: "192.0.2.1", hashKey })!.address);
}

function moved(a: readonly string[], b: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n / a.length;
}

const algorithms = [
  ["ring-hash", (e: readonly Endpoint[]) => new RingHash(e)],
  ["maglev", (e: readonly Endpoint[]) => new Maglev(e)],
] as const;

describe.each(algorithms)("%s", (_name, make) => {
  describe.each([5, 10, 50])("N = %d", (n) => {
    const all = eps(n);
    const before = assign(make(all));

    test("removing 1 of N endpoints remaps at most 1/N + 2% of 10k keys", () => {
      // Remove each endpoint in turn (every 5th for N = 50).
      const step = n > 10 ? 5 : 1;
      let worst = 0;
      for (let r = 0; r < n; r += step) {
        const gone = all[r]!.address;
        const after = assign(make(all.filter((_, i) => i !== r)));
        const share = moved(before, after);
        worst = Math.max(worst, share);
        expect(share).toBeLessThanOrEqual(1 / n + 0.02);
        // Every key of the removed endpoint moved (to a survivor), of course.
        let stayed = 0;
        for (let k = 0; k < keys.length; k++) if (before[k] === gone && after[k] === gone) stayed++;
        expect(stayed).toBe(0);
      }
      // And the bound is not met vacuously: about 1/N of the keys must move.
      expect(worst).toBeGreaterThan(1 / n - 0.03);
    });

    test("adding one endpoint remaps at most 1/(N+1) + 2% of 10k keys, all of them to the new endpoint", () => {
      const added = eps(1, 200)[0]!;
      const after = assign(make([...all, added]));
      const share = moved(before, after);
      expect(share).toBeLessThanOrEqual(1 / (n + 1) + 0.02);
      expect(share).toBeGreaterThan(1 / (n + 1) - 0.03);
      // Ring hash moves keys only onto the new endpoint; Maglev nearly so.
      let elsewhere = 0;
      for (let k = 0; k < keys.length; k++) if (before[k] !== after[k] && after[k] !== added.address) elsewhere++;
      expect(elsewhere / keys.length).toBeLessThanOrEqual(0.02);
    });

    test("keys spread evenly: each endpoint gets its 1/N share of 10k keys within 25%", () => {
      const counts = new Map<string, number>();
      for (const a of before) counts.set(a, (counts.get(a) ?? 0) + 1);
      expect(counts.size).toBe(n);
      for (const c of counts.values()) expect(Math.abs(c - keys.length / n)).toBeLessThan((keys.length / n) * 0.25);
    });
  });

  test("keys on the hash key when given, else on the client IP (IPv4-mapped IPv6 as IPv4)", () => {
    const b = make(eps(10));
    const byKey = b.pick({ clientAddress: "192.0.2.1", hashKey: "user-7" });
    for (let i = 0; i < 50; i++) expect(b.pick({ clientAddress: `198.51.100.${i}`, hashKey: "user-7" })).toBe(byKey!);
    const spread = new Set(Array.from({ length: 50 }, (_, i) => b.pick({ clientAddress: `198.51.100.${i}` })));
    expect(spread.size).toBeGreaterThan(5);
    expect(b.pick({ clientAddress: "::ffff:198.51.100.9" })).toBe(b.pick({ clientAddress: "198.51.100.9" })!);
    // An empty key counts as none: every client would otherwise land on one endpoint.
    for (let i = 0; i < 20; i++) {
      const clientAddress = `198.51.100.${i}`;
      expect(b.pick({ clientAddress, hashKey: "" })).toBe(b.pick({ clientAddress })!);
    }
    // The choice is a function of the key and the endpoint set, not of the balancer instance or the rng.
    const other = make(eps(10));
    expect(other.pick({ clientAddress: "192.0.2.1", hashKey: "user-7" })!.address).toBe(byKey!.address);
  });

  test("an excluded endpoint's keys fall back consistently, spread over the others", () => {
    const all = eps(5);
    const b = make(all);
    const bad = all[2]!;
    const exclude = new Set([bad]);
    const fallbacks = new Map<string, number>();
    for (const hashKey of keys.slice(0, 3000)) {
      if (b.pick({ clientAddress: "x", hashKey }) !== bad) continue;
      const alt = b.pick({ clientAddress: "x", hashKey, exclude })!;
      expect(alt).not.toBe(bad);
      expect(b.pick({ clientAddress: "x", hashKey, exclude })).toBe(alt); // same key, same fallback
      fallbacks.set(alt.address, (fallbacks.get(alt.address) ?? 0) + 1);
    }
    expect(fallbacks.size).toBe(4);
    // Keys of other endpoints do not move at all.
    for (const hashKey of keys.slice(0, 300)) {
      const first = b.pick({ clientAddress: "x", hashKey });
      if (first !== bad) expect(b.pick({ clientAddress: "x", hashKey, exclude })).toBe(first!);
    }
  });
});

describe("tables", () => {
  test("Maglev: the table size is a prime of at least 100 slots per endpoint; each endpoint owns M/N slots, give or take one", () => {
    expect(maglevSize(5)).toBe(65537);
    expect(maglevSize(656)).toBe(131101);
    for (const n of [3, 7, 50]) {
      const table = buildMaglev(eps(n).map((e) => `${e.address}:${e.port}`));
      expect(table.length).toBe(65537);
      const counts = new Array<number>(n).fill(0);
      for (const owner of table) counts[owner]!++;
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    }
    expect(buildMaglev([]).every((x) => x === 0)).toBe(true);
  });

  test("ring: 512 points per endpoint whatever N (halving only past RING_MAX points), sorted, every endpoint present", () => {
    const small = buildRing(["a:1", "b:1", "c:1"]);
    expect(small.hashes.length).toBe(3 * RING_PER_ENDPOINT);
    expect(buildRing(eps(100).map((e) => `${e.address}:${e.port}`)).hashes.length).toBe(100 * 512);
    for (let i = 1; i < small.hashes.length; i++) expect(small.hashes[i]! >= small.hashes[i - 1]!).toBe(true);
    expect(new Set(small.owners).size).toBe(3);
    expect(new RingHash(eps(2)).ringSize).toBe(1024);
    expect([4096, 4097, 8193].map(ringPointsPerEndpoint)).toEqual([512, 256, 128]);
    expect(RING_MAX).toBe(4096 * 512);
  });
});

describe("TableCache", () => {
  test("shares a table per endpoint set, evicts the least recently used past its byte budget, keeps none too large", () => {
    let builds = 0;
    const build = (keys: readonly string[]) => {
      builds++;
      return new Uint8Array(keys.length * 10);
    };
    const cache = new TableCache<Uint8Array>(50, (t) => t.byteLength);
    const a = cache.get(["a", "b"], build);
    expect(cache.get(["a", "b"], build)).toBe(a);
    expect(builds).toBe(1);
    cache.get(["c", "d"], build);
    cache.get(["a", "b"], build); // a is now the most recent
    cache.get(["e", "f"], build); // 60 bytes held > 50: c,d goes
    expect(cache.size).toBe(2);
    expect(cache.bytes).toBe(40);
    cache.get(["a", "b"], build);
    expect(builds).toBe(3);
    cache.get(["c", "d"], build);
    expect(builds).toBe(4);
    cache.get(["1", "2", "3", "4", "5", "6"], build); // 60 bytes: built, not kept
    expect(cache.bytes).toBe(40);
    expect(cache.size).toBe(2);
  });
});
