/**
 * sessionAffinity: ClientIP, with kube-proxy's semantics: a client IP sticks to one endpoint until it has
 * made no new connection (TCP) or request (HTTP) for `timeoutSeconds` (a sliding timeout); affinity to an
 * endpoint that has left the serving set is dropped and a new endpoint is picked; when the affine endpoint
 * fails to connect (it is in `exclude`), another is picked and the client is pinned to it (kube-proxy's
 * `tryConnect` resets affinity after a failed dial), and so does a client whose endpoint outlier detection
 * ejected.
 *
 * A client without a live affinity gets a deterministic first choice: rendezvous (highest random weight)
 * hashing of its IP over the serving endpoints, with a fixed seed. Every worker process, each with its own
 * table, thus pins a new client to the same endpoint, and so does another kubegate node with the same
 * endpoints; removing an endpoint moves only its own clients, adding one takes about 1/(N+1) of the new
 * clients. Excluded endpoints are skipped and ejected ones avoided (unless every one left is ejected) in the same
 * order, so a client's second choice is deterministic too. The Service's algorithm does not choose for
 * affine clients; it still sees their requests (`begin`/`end`: in-flight counts, outlier detection).
 *
 * The {@link AffinityTable} outlives routes: the listener manager keeps one per Service port and hands it to
 * each new {@link ClientIpAffinity}, so a snapshot that changes the endpoints keeps the clients where they are.
 */
import type { Endpoint } from "../model/types.ts";
import { fmix32, murmur3 } from "./hash.ts";
import type { Balancer, Outcome, PickContext } from "./types.ts";

/** Seed of the rendezvous hash of {@link ClientIpAffinity} (fixed: every process must agree). */
const RENDEZVOUS_SEED = 0x2545f491;

/** One client IP's affinity. */
export interface AffinityEntry {
  /** The endpoint as last picked (maybe an object of an older snapshot: see {@link key}). */
  endpoint: Endpoint;
  /** `address:port` of {@link endpoint}: matches the same endpoint in a newer snapshot. */
  key: string;
  /** Clock time of the client's last connection or request, ms. */
  touched: number;
}

/** A row of {@link AffinityTable.entries}, for the admin API. */
export interface AffinityRow {
  readonly client: string;
  /** `address:port`. */
  readonly endpoint: string;
  /** Ms since the client's last connection or request. */
  readonly idleMs: number;
}

export interface AffinityTableOptions {
  /** Most clients remembered; past this the least recently seen are forgotten (default 100 000). */
  readonly maxEntries?: number | undefined;
}

/** Default bound of an {@link AffinityTable}. */
export const DEFAULT_MAX_AFFINITY_ENTRIES = 100_000;

/**
 * Entries move to the back of the table (most recently seen) at most this often, ms: a client that makes a
 * request per millisecond costs one Map re-insert per second, not one per request. The table is therefore
 * ordered by last use to within this resolution, which is all that eviction and the sweep need.
 */
const REORDER_MS = 1_000;

/** Expired entries removed per new client at most (the sweep is amortised over insertions). */
const SWEEP_BUDGET = 64;

/**
 * Client IP -> endpoint, ordered (roughly) by last use, bounded in size. Expired entries are ignored on
 * lookup and removed lazily: from the front of the table as new clients arrive, or by {@link sweep}.
 *
 * @example
 * const table = new AffinityTable({ maxEntries: 10_000 });
 * const balancer = new ClientIpAffinity(new RoundRobin(endpoints), table, 10_800_000);
 */
export class AffinityTable {
  readonly #map = new Map<string, AffinityEntry>();
  readonly maxEntries: number;

  constructor(options: AffinityTableOptions = {}) {
    this.maxEntries = Math.max(1, options.maxEntries ?? DEFAULT_MAX_AFFINITY_ENTRIES);
  }

  /** Clients remembered (including expired ones not swept yet). */
  get size(): number {
    return this.#map.size;
  }

  /** The entry of `client`, expired or not. */
  get(client: string): AffinityEntry | undefined {
    return this.#map.get(client);
  }

  /** `client` used `entry` again at `now`. */
  touch(client: string, entry: AffinityEntry, now: number): void {
    if (now - entry.touched >= REORDER_MS) {
      this.#map.delete(client);
      this.#map.set(client, entry);
    }
    entry.touched = now;
  }

  /** Pin `client` to `endpoint` (key `key`) from `now`; `timeoutMs` drives the sweep of expired entries. */
  pin(client: string, endpoint: Endpoint, key: string, now: number, timeoutMs: number): void {
    const map = this.#map;
    const entry = map.get(client);
    if (entry !== undefined) {
      entry.endpoint = endpoint;
      entry.key = key;
      map.delete(client);
      map.set(client, entry);
      entry.touched = now;
      return;
    }
    this.#sweepFront(now, timeoutMs, SWEEP_BUDGET);
    if (map.size >= this.maxEntries) {
      // Forget the least recently seen client.
      for (const oldest of map.keys()) {
        map.delete(oldest);
        break;
      }
    }
    map.set(client, { endpoint, key, touched: now });
  }

  /** Forget `client`. */
  delete(client: string): void {
    this.#map.delete(client);
  }

  /** Remove every entry idle for `timeoutMs` or more; returns how many were removed. */
  sweep(now: number, timeoutMs: number): number {
    let removed = 0;
    for (const [client, e] of this.#map) {
      if (now - e.touched >= timeoutMs) {
        this.#map.delete(client);
        removed++;
      }
    }
    return removed;
  }

  /** Forget everything. */
  clear(): void {
    this.#map.clear();
  }

  /** The live entries, most recently seen last (for the admin API; at most `limit`). */
  entries(now: number, timeoutMs: number, limit = 100): AffinityRow[] {
    const rows: AffinityRow[] = [];
    for (const [client, e] of this.#map) {
      if (now - e.touched >= timeoutMs) continue;
      rows.push({ client, endpoint: e.key, idleMs: now - e.touched });
    }
    return rows.slice(-limit);
  }

  /** Remove expired entries from the front (least recently seen) until a live one, at most `budget`. */
  #sweepFront(now: number, timeoutMs: number, budget: number): void {
    for (const [client, e] of this.#map) {
      if (budget-- === 0 || now - e.touched < timeoutMs) return;
      this.#map.delete(client);
    }
  }
}

/** `address:port` of an endpoint (IPv6 addresses bracketed). */
export function endpointKey(ep: Endpoint): string {
  return ep.address.includes(":") ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
}

/** The client address affinity keys on: an IPv4-mapped IPv6 address counts as the IPv4 address. */
export function affinityClient(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/**
 * The rendezvous score of a client (hash `client`, from {@link clientHash}) for an endpoint (hash `endpoint`,
 * from {@link endpointHash}): the client goes to the endpoint of highest score, ties to the smaller key.
 */
export function rendezvousScore(client: number, endpoint: number): number {
  return fmix32(client ^ endpoint);
}

/** The rendezvous hash of a client address (as {@link affinityClient} gives it). */
export function clientHash(client: string): number {
  return murmur3(client, RENDEZVOUS_SEED);
}

/** The rendezvous hash of an endpoint key (`address:port`, see {@link endpointKey}). */
export function endpointHash(key: string): number {
  return murmur3(key, RENDEZVOUS_SEED);
}

/**
 * Wraps a balancer with ClientIP session affinity. A client without a live affinity gets the rendezvous-hash
 * choice of its IP over the inner balancer's endpoints (see the module doc); the inner balancer counts the
 * requests (`begin`/`end`) and says which endpoints outlier detection ejected. Its `endpoints` may change
 * over time (ExternalName): the wrapper re-indexes when they do.
 *
 * @example
 * const balancer = new ClientIpAffinity(new RoundRobin(cluster.serving), table, 10_800 * 1000);
 * balancer.pick({ clientAddress: "10.0.0.7" }); // the same endpoint for 10.0.0.7 in every worker, while it serves
 */
export class ClientIpAffinity implements Balancer {
  #indexed: readonly Endpoint[] | undefined;
  #keys = new Map<Endpoint, string>();
  #byKey = new Map<string, Endpoint>();
  /** `address:port` of `endpoints[i]`. */
  #keyList: string[] = [];
  /** {@link endpointHash} of `endpoints[i]`. */
  #hashes = new Uint32Array(0);

  /**
   * @param inner the Service's balancer: its endpoints, in-flight counts and outlier ejections.
   * @param table shared across routes of one Service port.
   * @param timeoutMs sliding timeout (sessionAffinityConfig.clientIP.timeoutSeconds x 1000).
   * @param now clock, ms (injected for tests).
   */
  constructor(
    readonly inner: Balancer,
    readonly table: AffinityTable,
    readonly timeoutMs: number,
    readonly now: () => number = Date.now,
  ) {}

  get endpoints(): readonly Endpoint[] {
    return this.inner.endpoints;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    const eps = this.inner.endpoints;
    if (eps !== this.#indexed) this.#index(eps);
    if (eps.length === 0) return undefined;
    const client = affinityClient(ctx.clientAddress);
    const table = this.table;
    const now = this.now();
    const entry = table.get(client);
    if (entry !== undefined && now - entry.touched < this.timeoutMs) {
      let ep: Endpoint | undefined = entry.endpoint;
      if (!this.#keys.has(ep)) {
        // An endpoint object of an older snapshot: find the same address:port in this one.
        ep = this.#byKey.get(entry.key);
        if (ep !== undefined) entry.endpoint = ep;
      }
      // An affine endpoint that failed (excluded) or was ejected by outlier detection loses its clients.
      if (ep !== undefined && ctx.exclude?.has(ep) !== true && this.inner.ejected?.(ep) !== true) {
        table.touch(client, entry, now);
        return ep;
      }
    }
    const i = this.#choose(eps, client, ctx.exclude);
    if (i < 0) return undefined;
    const ep = eps[i]!;
    table.pin(client, ep, this.#keyList[i]!, now, this.timeoutMs);
    return ep;
  }

  /**
   * The first choice for `client` (the index of an endpoint of `eps`, or -1): the highest rendezvous score among
   * the endpoints not excluded and not ejected; when every one left is ejected, among the ejected (Envoy's panic).
   */
  #choose(eps: readonly Endpoint[], client: string, exclude: ReadonlySet<Endpoint> | undefined): number {
    const h = clientHash(client);
    const best = this.#best(eps, h, exclude, false);
    if (best < 0 || this.inner.ejected?.(eps[best]!) !== true) return best;
    const healthy = this.#best(eps, h, exclude, true);
    return healthy < 0 ? best : healthy;
  }

  /** The endpoint of highest score for client hash `h`, skipping `exclude` (and ejected ones when asked), or -1. */
  #best(eps: readonly Endpoint[], h: number, exclude: ReadonlySet<Endpoint> | undefined, skipEjected: boolean): number {
    const hashes = this.#hashes;
    const keys = this.#keyList;
    const inner = this.inner;
    let best = -1;
    let bestScore = -1;
    for (let i = 0; i < eps.length; i++) {
      // rendezvousScore(h, hashes[i]), inlined (this loop is the cost of a new client).
      let x = h ^ hashes[i]!;
      x ^= x >>> 16;
      x = Math.imul(x, 0x85ebca6b);
      x ^= x >>> 13;
      x = Math.imul(x, 0xc2b2ae35);
      x ^= x >>> 16;
      const score = x >>> 0;
      if (score < bestScore || (score === bestScore && keys[i]! >= keys[best]!)) continue;
      const ep = eps[i]!;
      if (exclude !== undefined && exclude.has(ep)) continue;
      if (skipEjected && inner.ejected?.(ep) === true) continue;
      best = i;
      bestScore = score;
    }
    return best;
  }

  begin(ep: Endpoint): void {
    this.inner.begin(ep);
  }

  end(ep: Endpoint, outcome: Outcome): void {
    this.inner.end(ep, outcome);
  }

  ejected(ep: Endpoint): boolean {
    return this.inner.ejected?.(ep) === true;
  }

  /** Live affinities (admin API). */
  entries(limit?: number): AffinityRow[] {
    return this.table.entries(this.now(), this.timeoutMs, limit);
  }

  #index(eps: readonly Endpoint[]): void {
    this.#indexed = eps;
    this.#keys = new Map();
    this.#byKey = new Map();
    this.#keyList = new Array<string>(eps.length);
    this.#hashes = new Uint32Array(eps.length);
    for (let i = 0; i < eps.length; i++) {
      const ep = eps[i]!;
      const key = endpointKey(ep);
      this.#keys.set(ep, key);
      this.#byKey.set(key, ep);
      this.#keyList[i] = key;
      this.#hashes[i] = endpointHash(key);
    }
  }
}
