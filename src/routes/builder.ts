/**
 * Builds the {@link Route} of each entrypoint: its balancer (the Service's algorithm, `policy.balancer` else
 * the gateway default, over the serving endpoints with slow start and outlier detection; or a round robin
 * over an ExternalName's resolved addresses), wrapped with ClientIP affinity when the Service asks for it,
 * plus the HTTP cookie affinity table. Every worker process builds its own routes from the same snapshot: what
 * must agree across them (consistent-hash tables, a new ClientIP client's first choice) depends on the
 * entrypoint alone; what is per worker (round-robin positions, in-flight counts, ejections, affinity tables)
 * is listed in docs/balancing.md. Owns what must outlive a single route, each per Service port
 * (`entrypoint.name`, shared by its NodePort and LoadBalancer entrypoints, as kube-proxy shares them): the
 * ClientIP affinity tables and the {@link ClusterState}s (in flight, slow start, outlier ejections); and the
 * DNS leases of ExternalName entrypoints. The listener manager keeps one builder and calls {@link route} for
 * each entrypoint of a snapshot, then {@link retain} with all of them.
 */
import { sameAffinity, sameBalancerPolicy, sameExternalTarget } from "../model/equal.ts";
import type { BalancerAlgorithm, Entrypoint, HashOn } from "../model/types.ts";
import type { ExternalNameLease, ExternalNames, ExternalNameStatus, Route } from "./types.ts";
export type { ExternalNameLease, ExternalNames, ExternalNameStatus } from "./types.ts";
import { AffinityTable, type AffinityRow, ClientIpAffinity } from "../balancer/affinity.ts";
import { createBalancer, isConsistentHash } from "../balancer/algorithms.ts";
import { ClusterState, type EjectedEndpoint, type OutlierSettings, type OutlierStats } from "../balancer/cluster-state.ts";
import { CookieAffinity } from "../balancer/cookie.ts";
import { DynamicRoundRobin } from "../balancer/dynamic.ts";
import type { Balancer } from "../balancer/types.ts";

export type { EjectedEndpoint, OutlierSettings, OutlierStats } from "../balancer/cluster-state.ts";

export interface RouteBuilderOptions {
  /**
   * Randomness of the balancers: round-robin start offsets, random and least-request draws (default
   * `Math.random`). Nothing that must agree across workers reads it (consistent-hash tables, ClientIP first choices).
   */
  readonly rng?: (() => number) | undefined;
  /** Clock of the affinity tables, slow start and outlier detection, ms (default `Date.now`). */
  readonly now?: (() => number) | undefined;
  /** Bound of each ClientIP affinity table (default 100 000 clients). */
  readonly maxAffinityEntries?: number | undefined;
  /**
   * HMAC key of affinity cookies (default: random per process). Every worker of a node must get the same one,
   * or a cookie set by one worker is unknown to the others; set the same on replicas to share cookies across them.
   */
  readonly cookieSecret?: Uint8Array | string | undefined;
  /** Resolvers for ExternalName entrypoints; without them such entrypoints have no endpoints. */
  readonly externalNames?: ExternalNames | undefined;
  /** The algorithm of Services without a `kubegate.io/balancer` annotation (default round-robin). */
  readonly defaultBalancer?: BalancerAlgorithm | undefined;
  /** Passive outlier detection (gateway-wide); absent or `consecutiveFailures: 0`: off. */
  readonly outlier?: OutlierSettings | undefined;
}

/** How an entrypoint balances, for the admin API. */
export interface BalancingInfo {
  /** The algorithm in use (ExternalName targets: always round-robin). */
  readonly algorithm: BalancerAlgorithm;
  /** ring-hash and maglev: what they hash (default the client IP). */
  readonly hashOn?: HashOn | undefined;
  /** The slow-start window, ms, when on and the algorithm honours it (not ring-hash, maglev, ExternalName). */
  readonly slowStartMs?: number | undefined;
  readonly affinity?: { readonly mode: "ClientIP"; readonly timeoutSeconds: number; readonly clients: number } | undefined;
  readonly cookie?: { readonly name: string; readonly ttlSeconds: number } | undefined;
  readonly externalName?: (ExternalNameStatus & { readonly port: number }) | undefined;
  /** The Service port's endpoints ejected now by outlier detection (present when detection is on). */
  readonly ejected?: readonly EjectedEndpoint[] | undefined;
}

/** Whether `b` can keep `a`'s balancer (and its round-robin position). */
function sameBalancing(a: Entrypoint, b: Entrypoint): boolean {
  if (a.protocol !== b.protocol || a.name !== b.name || !sameAffinity(a.sessionAffinity, b.sessionAffinity)) return false;
  if (!sameBalancerPolicy(a.policy, b.policy)) return false;
  if (a.externalName !== undefined || b.externalName !== undefined) return sameExternalTarget(a.externalName, b.externalName);
  return a.cluster === b.cluster;
}

/**
 * Routes for entrypoints, with the state they share across snapshots.
 *
 * @example
 * using routes = new RouteBuilder({ externalNames: new DnsRegistry({ log }) });
 * const next = snapshot.entrypoints.map((ep) => routes.route(ep, previous.get(ep.key)));
 * routes.retain(snapshot.entrypoints);
 */
export class RouteBuilder implements Disposable {
  readonly #rng: () => number;
  readonly #now: () => number;
  readonly #maxEntries: number | undefined;
  readonly #secret: Uint8Array | string | undefined;
  readonly #externalNames: ExternalNames | undefined;
  readonly #defaultBalancer: BalancerAlgorithm;
  readonly #outlier: OutlierSettings | undefined;
  /** ClientIP affinity tables by Service port (`entrypoint.name`). */
  readonly #tables = new Map<string, AffinityTable>();
  /** In-flight counts, slow start and outlier state by Service port (`entrypoint.name`). */
  readonly #clusters = new Map<string, ClusterState>();
  /** DNS leases by entrypoint key. */
  readonly #leases = new Map<string, ExternalNameLease>();
  /** The last route built or kept per entrypoint key (admin). */
  readonly #routes = new Map<string, Route>();

  constructor(options: RouteBuilderOptions = {}) {
    this.#rng = options.rng ?? Math.random;
    this.#now = options.now ?? Date.now;
    this.#maxEntries = options.maxAffinityEntries;
    this.#secret = options.cookieSecret;
    this.#externalNames = options.externalNames;
    this.#defaultBalancer = options.defaultBalancer ?? "round-robin";
    const o = options.outlier;
    this.#outlier = o !== undefined && o.consecutiveFailures > 0 ? o : undefined;
  }

  /**
   * The route of `entrypoint`: `previous` itself when the entrypoint is the same object; a route keeping
   * `previous`'s balancer when nothing that balancing depends on changed (cluster, affinity, protocol,
   * balancer, hash-on, slow start, ExternalName target); else a new one.
   */
  route(entrypoint: Entrypoint, previous?: Route): Route {
    let route: Route;
    if (previous !== undefined && previous.entrypoint === entrypoint) route = previous;
    else if (previous !== undefined && sameBalancing(previous.entrypoint, entrypoint)) {
      route = { entrypoint, balancer: previous.balancer, cookie: previous.cookie };
    } else route = this.#build(entrypoint, previous);
    this.#routes.set(entrypoint.key, route);
    return route;
  }

  /** Forget the state of entrypoints not in `entrypoints` (call after each snapshot's {@link route} calls). */
  retain(entrypoints: Iterable<Entrypoint>): void {
    const keys = new Set<string>();
    const names = new Set<string>();
    const affine = new Set<string>();
    for (const ep of entrypoints) {
      keys.add(ep.key);
      names.add(ep.name);
      if (ep.sessionAffinity?.mode === "ClientIP") affine.add(ep.name);
    }
    for (const [key, lease] of this.#leases) {
      if (keys.has(key)) continue;
      lease.release();
      this.#leases.delete(key);
    }
    for (const key of this.#routes.keys()) if (!keys.has(key)) this.#routes.delete(key);
    for (const name of this.#tables.keys()) if (!affine.has(name)) this.#tables.delete(name);
    for (const name of this.#clusters.keys()) if (!names.has(name)) this.#clusters.delete(name);
  }

  /** The algorithm entrypoint `entrypoint` balances with: its annotation, else the gateway default (ExternalName: round-robin). */
  algorithm(entrypoint: Entrypoint): BalancerAlgorithm {
    if (entrypoint.externalName !== undefined && this.#externalNames !== undefined) return "round-robin";
    return entrypoint.policy?.balancer ?? this.#defaultBalancer;
  }

  /** How the entrypoint `key` balances now (undefined when unknown). */
  describe(key: string): BalancingInfo | undefined {
    const route = this.#routes.get(key);
    if (route === undefined) return undefined;
    const entrypoint = route.entrypoint;
    const { sessionAffinity: aff, externalName: ext } = entrypoint;
    const table = aff?.mode === "ClientIP" ? this.#tables.get(entrypoint.name) : undefined;
    const lease = this.#leases.get(key);
    const state = this.#outlier !== undefined ? this.#clusters.get(entrypoint.name) : undefined;
    return {
      ...configuredBalancing(entrypoint, this.algorithm(entrypoint)),
      ...(aff !== undefined && table !== undefined ? { affinity: { mode: "ClientIP" as const, timeoutSeconds: aff.timeoutSeconds, clients: table.size } } : {}),
      ...(route.cookie !== undefined ? { cookie: { ...route.cookie.settings } } : {}),
      ...(ext !== undefined ? { externalName: { ...(lease?.status() ?? { hostname: ext.hostname, addresses: [] }), port: ext.port } } : {}),
      ...(this.#outlier !== undefined ? { ejected: state?.ejectedEndpoints() ?? [] } : {}),
    };
  }

  /**
   * Outlier-detection counters per Service port (`entrypoint.name`) currently served, sorted by name; empty
   * when detection is off. For `kubegate_outlier_ejections_total` and `kubegate_endpoints_ejected`.
   */
  outlierStats(): OutlierStats[] {
    if (this.#outlier === undefined) return [];
    const rows: OutlierStats[] = [];
    for (const state of this.#clusters.values()) rows.push(state.stats());
    return rows.sort((a, b) => (a.cluster < b.cluster ? -1 : a.cluster > b.cluster ? 1 : 0));
  }

  /** The shared state of Service port `name` (`ns/svc:port`), when it is served. */
  cluster(name: string): ClusterState | undefined {
    return this.#clusters.get(name);
  }

  /** Live ClientIP affinities of entrypoint `key` (admin), most recently seen last. */
  affinities(key: string, limit?: number): AffinityRow[] {
    const balancer = this.#routes.get(key)?.balancer;
    return balancer instanceof ClientIpAffinity ? balancer.entries(limit) : [];
  }

  /** The DNS lease of ExternalName entrypoint `key` (tests: await `ready()`). */
  lease(key: string): ExternalNameLease | undefined {
    return this.#leases.get(key);
  }

  [Symbol.dispose](): void {
    for (const lease of this.#leases.values()) lease.release();
    this.#leases.clear();
    this.#tables.clear();
    this.#clusters.clear();
    this.#routes.clear();
  }

  #build(entrypoint: Entrypoint, previous: Route | undefined): Route {
    let balancer: Balancer;
    const state = this.#cluster(entrypoint.name);
    const ext = entrypoint.externalName;
    if (ext !== undefined && this.#externalNames !== undefined) {
      const lease = this.#lease(entrypoint.key, ext.hostname);
      const port = ext.port;
      balancer = new DynamicRoundRobin({ get endpoints() { return lease.endpoints(port); } }, this.#rng, { state });
    } else {
      this.#leases.get(entrypoint.key)?.release();
      this.#leases.delete(entrypoint.key);
      balancer = createBalancer(this.algorithm(entrypoint), entrypoint.cluster.serving, this.#rng, {
        state,
        slowStartMs: entrypoint.policy?.slowStartMs,
      });
    }
    const aff = entrypoint.sessionAffinity;
    if (aff?.mode === "ClientIP") {
      let table = this.#tables.get(entrypoint.name);
      if (table === undefined) {
        table = new AffinityTable({ maxEntries: this.#maxEntries });
        this.#tables.set(entrypoint.name, table);
      }
      balancer = new ClientIpAffinity(balancer, table, aff.timeoutSeconds * 1000, this.#now);
    }
    const cookie =
      aff?.cookie !== undefined && entrypoint.protocol === "http"
        ? new CookieAffinity(aff.cookie, entrypoint.name, balancer, this.#secret, previous?.cookie)
        : undefined;
    return { entrypoint, balancer, cookie };
  }

  #cluster(name: string): ClusterState {
    let state = this.#clusters.get(name);
    if (state === undefined) {
      state = new ClusterState(name, { outlier: this.#outlier, now: this.#now });
      this.#clusters.set(name, state);
    }
    return state;
  }

  #lease(key: string, hostname: string): ExternalNameLease {
    const held = this.#leases.get(key);
    const name = hostname.toLowerCase().replace(/\.$/, "");
    if (held !== undefined && held.hostname === name) return held;
    // Acquire before releasing, so a resolver shared with the old name is not restarted.
    const lease = this.#externalNames!.acquire(hostname);
    held?.release();
    this.#leases.set(key, lease);
    return lease;
  }
}

/**
 * What an entrypoint's balancing is configured to be, given its `algorithm` (see {@link RouteBuilder.algorithm}): the
 * algorithm, the hash key of consistent hashing, and the slow-start window where it applies. The part of
 * {@link BalancingInfo} that needs no balancer state (a data plane in other processes describes it from the snapshot).
 */
export function configuredBalancing(entrypoint: Entrypoint, algorithm: BalancerAlgorithm): Pick<BalancingInfo, "algorithm" | "hashOn" | "slowStartMs"> {
  const { policy, externalName } = entrypoint;
  const hashing = isConsistentHash(algorithm);
  const slowStartMs = !hashing && externalName === undefined ? (policy?.slowStartMs ?? 0) : 0;
  return {
    algorithm,
    ...(hashing ? { hashOn: policy?.hashOn ?? { source: "client-ip" as const } } : {}),
    ...(slowStartMs > 0 ? { slowStartMs } : {}),
  };
}
