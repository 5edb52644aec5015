/**
 * Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
 * Balancer", NSDI 2016, §3.4): a lookup table of prime size M where each endpoint fills slots in its own
 * permutation order (`offset = h1(name) mod M`, `skip = h2(name) mod (M-1) + 1`, slot j = `(offset + j*skip) mod M`),
 * the endpoints taking turns, so each owns M/N slots give or take one. A key (`hashKey`, else the client IP)
 * goes to the owner of slot `murmur3(key) mod M`: O(1) per pick, near-perfect balance, and removing one of N
 * endpoints moves little more than its own 1/N of the keys.
 *
 * M is the smallest of {@link MAGLEV_SIZES} of at least 100 x N (65537 up to 655 endpoints). The table is built
 * on the first pick, O(M log M) (a few ms for 65537), and shared by balancers over the same endpoint set
 * (recent tables are cached). Excluded (retry) and ejected endpoints are skipped by walking the table to
 * the next slot whose owner is available. Slow start is ignored.
 *
 * The table is built over the endpoints' keys in canonical (sorted) order, not in the order the set came in:
 * Maglev's population takes turns in key order, so the same set gives the same table, and every worker process
 * (each building its own routes from the same snapshot) sends a key to the same endpoint.
 */
import type { Endpoint } from "../model/types.ts";
import { type AlgorithmOptions, EndpointBalancer } from "./base.ts";
import { murmur3, pickHash } from "./hash.ts";
import { canonicalKeys, TableCache } from "./table-cache.ts";
import type { PickContext } from "./types.ts";

/** Recent tables by endpoint set (at most 8 MiB). */
const tables = new TableCache<Uint16Array | Uint32Array>(8 << 20, (t) => t.byteLength);

/** Table sizes (primes); the smallest of at least 100 slots per endpoint is used, else the largest. */
export const MAGLEV_SIZES: readonly number[] = [65537, 131101, 262147, 524309, 1048583];

const SEED_OFFSET = 0x9747b28c;
const SEED_SKIP = 0x5bd1e995;

/** The table size for `n` endpoints. */
export function maglevSize(n: number): number {
  for (const m of MAGLEV_SIZES) if (m >= n * 100) return m;
  return MAGLEV_SIZES[MAGLEV_SIZES.length - 1]!;
}

/**
 * The lookup table of `keys` (entry: index into `keys`), of prime size `m` (Maglev's population). 16-bit
 * entries up to 65536 endpoints.
 */
export function buildMaglev(keys: readonly string[], m = maglevSize(keys.length)): Uint16Array | Uint32Array {
  const n = keys.length;
  const table = n <= 0x10000 ? new Uint16Array(m) : new Uint32Array(m);
  if (n === 0) return table;
  const filled = new Uint8Array(m);
  const offset = new Uint32Array(n);
  const skip = new Uint32Array(n);
  const next = new Uint32Array(n); // j: how far along its permutation each endpoint is
  for (let i = 0; i < n; i++) {
    offset[i] = murmur3(keys[i]!, SEED_OFFSET) % m;
    skip[i] = (murmur3(keys[i]!, SEED_SKIP) % (m - 1)) + 1;
  }
  let count = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      // (offset + j*skip) mod m without overflowing: track the slot incrementally.
      let c = (offset[i]! + ((next[i]! * skip[i]!) % m)) % m;
      while (filled[c] === 1) {
        next[i]!++;
        c += skip[i]!;
        if (c >= m) c -= m;
      }
      filled[c] = 1;
      table[c] = i;
      next[i]!++;
      if (++count === m) return table;
    }
  }
}

/**
 * @example
 * const maglev = new Maglev(cluster.serving, Math.random, { state });
 * maglev.pick({ clientAddress: "192.0.2.1" }); // the same endpoint for this client while it serves
 */
export class Maglev extends EndpointBalancer {
  /** Entries index the canonical keys; see {@link #order}. */
  #table: Uint16Array | Uint32Array | undefined;
  /** Canonical key index -> endpoint index (undefined: the same). */
  #order: Uint32Array | undefined;

  constructor(endpoints: readonly Endpoint[], rng: () => number = Math.random, options?: AlgorithmOptions) {
    super(endpoints, rng, options, false);
  }

  /** The lookup table's size (builds it). */
  get tableSize(): number {
    return this.#lookup().length;
  }

  protected choose(ctx: PickContext, skipEjected: boolean): number {
    const table = this.#lookup();
    const m = table.length;
    const slot = pickHash(ctx.hashKey, ctx.clientAddress) % m;
    const exclude = ctx.exclude;
    const order = this.#order;
    const first = table[slot]!;
    const i = order === undefined ? first : order[first]!;
    if (this.available(i, exclude, skipEjected)) return i;
    if (!this.anyAvailable(exclude, skipEjected)) return -1;
    for (let k = 1; k < m; k++) {
      const j = slot + k;
      const owner = table[j >= m ? j - m : j]!;
      if (owner === first) continue;
      const o = order === undefined ? owner : order[owner]!;
      if (this.available(o, exclude, skipEjected)) return o;
    }
    return -1;
  }

  #lookup(): Uint16Array | Uint32Array {
    if (this.#table === undefined) {
      const { keys, order } = canonicalKeys(this.endpoints);
      this.#order = order;
      this.#table = tables.get(keys, (k) => buildMaglev(k));
    }
    return this.#table;
  }
}
