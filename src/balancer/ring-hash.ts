/**
 * Ring hash (Ketama-style consistent hashing): every endpoint owns many points ("virtual nodes") on a
 * 32-bit hash ring, at `murmur3(address:port, seed = i)`; a key (`hashKey`, else the client IP) goes to the
 * owner of the first point at or after its hash. Removing one of N endpoints moves only the keys it owned
 * (about 1/N); adding one moves about 1/(N+1), all taken from the others.
 *
 * Ring size: {@link RING_PER_ENDPOINT} points per endpoint whatever the cluster size (up to {@link RING_MAX}
 * points in all). The ring is built on the first pick (routes nobody uses cost nothing), O(M log M) for M
 * points (about 1 ms per 10 endpoints), and shared by balancers over the same endpoint set (recent rings are
 * cached).
 *
 * Excluded (retry) and ejected endpoints are skipped by walking the ring to the next point whose owner is
 * available, so a key's fallback is as consistent as its first choice. Slow start is ignored: weights would
 * move keys as they ramp.
 *
 * The ring is built over the endpoints' keys in canonical (sorted) order, so two points with the same hash go
 * to the same endpoint whatever order the set came in: every worker process, building its own routes from the
 * same snapshot, sends a key to the same endpoint.
 */
import type { Endpoint } from "../model/types.ts";
import { type AlgorithmOptions, EndpointBalancer } from "./base.ts";
import { murmur3, pickHash } from "./hash.ts";
import { canonicalKeys, TableCache } from "./table-cache.ts";
import type { PickContext } from "./types.ts";

/** A ring: sorted point hashes and the owner (index into the endpoints) of each. */
export interface Ring {
  readonly hashes: Uint32Array;
  readonly owners: Uint32Array;
}

/** Recent rings by endpoint set (at most 16 MiB). */
const rings = new TableCache<Ring>(16 << 20, (r) => r.hashes.byteLength + r.owners.byteLength);

/**
 * Points per endpoint. The same for every cluster size, so that adding or removing an endpoint moves only
 * the keys of that endpoint's points (a count that depends on N, like Envoy's `min_ring_size / N`, would move
 * keys between the other endpoints too). 512 points keep each endpoint within about 4% of its share.
 */
export const RING_PER_ENDPOINT = 512;
/** Most points on a ring: past it, the points per endpoint halve (see {@link ringPointsPerEndpoint}). */
export const RING_MAX = 1 << 21;

/**
 * Points per endpoint for `n` endpoints: {@link RING_PER_ENDPOINT}, halved as many times as needed to stay
 * within {@link RING_MAX} points (from 4097 endpoints); crossing such a size moves about half the keys.
 */
export function ringPointsPerEndpoint(n: number): number {
  let per = RING_PER_ENDPOINT;
  while (per > 1 && per * n > RING_MAX) per >>= 1;
  return per;
}

/**
 * The ring of `keys`: sorted point hashes and the owner (index into `keys`) of each. Points with the same
 * hash are ordered by owner index, the first one winning: give `keys` in a canonical order (sorted) for a
 * ring that does not depend on the order of the set.
 */
export function buildRing(keys: readonly string[]): Ring {
  const n = keys.length;
  if (n === 0) return { hashes: new Uint32Array(0), owners: new Uint32Array(0) };
  const per = ringPointsPerEndpoint(n);
  const total = per * n;
  // Pack hash and owner into one exact float (hash * 2^21 + owner < 2^53) and sort natively.
  const packed = new Float64Array(total);
  const ownerSpace = 2 ** 21;
  let p = 0;
  for (let i = 0; i < n; i++) {
    const key = keys[i]!;
    for (let v = 0; v < per; v++) packed[p++] = murmur3(key, v) * ownerSpace + i;
  }
  packed.sort();
  const hashes = new Uint32Array(total);
  const owners = new Uint32Array(total);
  for (let j = 0; j < total; j++) {
    const x = packed[j]!;
    const h = Math.floor(x / ownerSpace);
    hashes[j] = h;
    owners[j] = x - h * ownerSpace;
  }
  return { hashes, owners };
}

/**
 * @example
 * const ring = new RingHash(cluster.serving, Math.random, { state });
 * ring.pick({ clientAddress: "192.0.2.1", hashKey: "user-42" }); // the same endpoint for user-42 while it serves
 */
export class RingHash extends EndpointBalancer {
  /** Owners index the canonical keys; see {@link #order}. */
  #ring: Ring | undefined;
  /** Canonical key index -> endpoint index (undefined: the same). */
  #order: Uint32Array | undefined;

  constructor(endpoints: readonly Endpoint[], rng: () => number = Math.random, options?: AlgorithmOptions) {
    super(endpoints, rng, options, false);
  }

  /** Points on the ring (builds it). */
  get ringSize(): number {
    return this.#table().hashes.length;
  }

  protected choose(ctx: PickContext, skipEjected: boolean): number {
    const { hashes, owners } = this.#table();
    const m = hashes.length;
    const h = pickHash(ctx.hashKey, ctx.clientAddress);
    // First point >= h (wrapping to 0).
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    const start = lo === m ? 0 : lo;
    const exclude = ctx.exclude;
    const order = this.#order;
    const first = owners[start]!;
    const i = order === undefined ? first : order[first]!;
    if (this.available(i, exclude, skipEjected)) return i;
    if (!this.anyAvailable(exclude, skipEjected)) return -1;
    for (let k = 1; k < m; k++) {
      const j = start + k;
      const owner = owners[j >= m ? j - m : j]!;
      if (owner === first) continue;
      const o = order === undefined ? owner : order[owner]!;
      if (this.available(o, exclude, skipEjected)) return o;
    }
    return -1;
  }

  #table(): Ring {
    if (this.#ring === undefined) {
      const { keys, order } = canonicalKeys(this.endpoints);
      this.#order = order;
      this.#ring = rings.get(keys, buildRing);
    }
    return this.#ring;
  }
}
