/**
 * What the balancers of one cluster (Service port, `entrypoint.name`) share, and what outlives a route:
 * per endpoint (`address:port`) the requests in flight (least-request), when it started serving (slow
 * start) and its passive outlier-detection state. The NodePort and LoadBalancer routes of a Service port
 * share one {@link ClusterState}, and so do the routes built for successive snapshots: an endpoint ejected
 * under one route stays ejected under the next one.
 *
 * Outlier detection (Envoy's `consecutive_5xx` with its ejection algorithm):
 * - `end(ep, "connect-failure" | "server-error")` counts consecutive failures; `"success"` resets the count;
 * - at `consecutiveFailures`, the endpoint is ejected for `baseEjectionMs` x the number of its ejections in a
 *   row (capped at {@link MAX_EJECTION_MS}, or `baseEjectionMs` when that is longer); the count decays by one per
 *   `baseEjectionMs` the endpoint then serves without being ejected;
 * - an ejection that would put more than `maxEjectionPercent` of the cluster's endpoints out at once is
 *   refused, except that one endpoint may always be ejected (as in Envoy);
 * - an ejected endpoint is readmitted when its time is up (checked lazily, on the next pick or stats read).
 *
 * Memory: per-endpoint state is created on a cluster's first traffic, not at sync. At 10k Services x 10
 * endpoints most clusters never see a connection, and such a cluster holds only its serving-set array (the
 * snapshot's own) and the join times of endpoints added since (slow start).
 */
import { sameList } from "../model/equal.ts";
import type { Endpoint } from "../model/types.ts";
import { endpointKey } from "./affinity.ts";
import type { Outcome } from "./types.ts";

/** Passive outlier detection settings (`--outlier-*` flags). */
export interface OutlierSettings {
  /** Consecutive connect failures or 5xx that eject an endpoint (0: detection off). */
  readonly consecutiveFailures: number;
  /** Base ejection time, ms; the n-th ejection in a row of one endpoint lasts n times this. */
  readonly baseEjectionMs: number;
  /** At most this share (percent) of a cluster's endpoints is ejected at once (one may always be). */
  readonly maxEjectionPercent: number;
}

/** Longest ejection, ms, unless `baseEjectionMs` itself is longer (Envoy's default `max_ejection_time`). */
export const MAX_EJECTION_MS = 300_000;

/** The shared state of one endpoint (`address:port`) of a cluster. Mutated only by {@link ClusterState} and balancers. */
export interface HostState {
  /** `address:port` (IPv6 bracketed). */
  readonly key: string;
  readonly address: string;
  readonly port: number;
  /** Requests/connections begun and not ended. */
  inflight: number;
  /** Clock time it (re)joined the serving set, ms; `-Infinity` for the first endpoints of a cluster (never slowed). */
  servingSince: number;
  /** False once it left the serving set (a balancer of an older route may still hold it). */
  live: boolean;
  /** Consecutive failures (connect failures and 5xx) since the last success or readmission. */
  failures: number;
  /** Ejected by outlier detection now (readmission is lazy: see {@link ClusterState.refresh}). */
  ejected: boolean;
  /** Clock time the current ejection ends, ms (meaningful while {@link ejected}). */
  ejectedUntil: number;
  /** Ejections in a row (the ejection time multiplier). */
  ejections: number;
  /** Clock time of the last readmission, ms. */
  readmittedAt: number;
}

/** An ejected endpoint, for the admin API. */
export interface EjectedEndpoint {
  readonly address: string;
  readonly port: number;
  /** Clock time (ms since the epoch) the ejection ends. */
  readonly until: number;
  /** Ejections in a row (this one included): the ejection lasts `baseEjectionMs` x this. */
  readonly ejections: number;
}

/** Outlier counters of one cluster, for metrics. */
export interface OutlierStats {
  /** `namespace/service:port`. */
  readonly cluster: string;
  /** Endpoints ejected now (`kubegate_endpoints_ejected`). */
  readonly ejected: number;
  /** Ejections since the cluster was first seen (`kubegate_outlier_ejections_total`; resets if it goes away). */
  readonly ejectionsTotal: number;
}

export interface ClusterStateOptions {
  /** Passive outlier detection; absent or `consecutiveFailures: 0`: off. */
  readonly outlier?: OutlierSettings | undefined;
  /** Clock, ms (injected for tests; default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

/**
 * The per-cluster state shared by the balancers of a Service port across routes (see the module doc).
 *
 * Per-endpoint {@link HostState}s are created lazily, on the first `begin`/`end`/{@link host}/{@link hostsOf}:
 * until then (a cluster that never had traffic) the state holds only the serving set it was last synced to
 * and the join times of endpoints that joined a non-empty set (slow start).
 *
 * @example
 * const state = new ClusterState("ns/web:http", { outlier: { consecutiveFailures: 5, baseEjectionMs: 30_000, maxEjectionPercent: 50 } });
 * const balancer = new RoundRobin(cluster.serving, Math.random, { state });
 * balancer.end(ep, "server-error"); // the fifth in a row ejects ep for 30 s
 */
export class ClusterState {
  readonly now: () => number;
  readonly outlier: OutlierSettings | undefined;
  /** The serving set of the last {@link sync}. */
  #serving: readonly Endpoint[] = [];
  /** Serving hosts by `address:port` (undefined until some host is needed). */
  #hosts: Map<string, HostState> | undefined = undefined;
  /** Endpoint objects seen -> their host (objects of older snapshots included, weakly); with {@link #hosts}. */
  #byEndpoint: WeakMap<Endpoint, HostState> | undefined = undefined;
  /** While there are no hosts: when each endpoint that joined a non-empty serving set did (by key). */
  #joined: Map<string, number> | undefined = undefined;
  /** Clock time an endpoint last joined a non-empty serving set (-Infinity: never). */
  #lastJoin = -Infinity;
  #ejected = 0;
  #ejectionsTotal = 0;
  /** Earliest `ejectedUntil` among ejected hosts (Infinity: none). */
  #nextReadmit = Infinity;

  constructor(
    readonly name: string,
    options: ClusterStateOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    const o = options.outlier;
    this.outlier = o !== undefined && o.consecutiveFailures > 0 ? o : undefined;
  }

  /** Serving endpoints known. */
  get size(): number {
    return this.#hosts?.size ?? this.#serving.length;
  }

  /** Endpoints ejected now, as of the last {@link refresh}. */
  get ejectedCount(): number {
    return this.#ejected;
  }

  /** Ejections since this state was created. */
  get ejectionsTotal(): number {
    return this.#ejectionsTotal;
  }

  /** Clock time an endpoint last joined a non-empty serving set, i.e. started a slow start (-Infinity: never). */
  get lastJoin(): number {
    return this.#lastJoin;
  }

  /**
   * The cluster's serving set is now `serving`. New endpoints start serving now (slow start), except when the
   * cluster had none serving (nothing to protect: they start at full weight); hosts no longer serving are
   * dropped with their state. Idempotent for the same set; O(1) when the state holds no hosts and `serving`
   * holds the same endpoint objects as the last set.
   */
  sync(serving: readonly Endpoint[]): void {
    const prev = this.#serving;
    this.#serving = serving;
    // The same set again (another route of the cluster, or a route rebuilt for another reason).
    if (sameList(prev, serving)) return;
    const hosts = this.#hosts;
    if (hosts === undefined) return this.#syncJoins(prev, serving);
    const byEndpoint = this.#byEndpoint!;
    const fresh = hosts.size === 0;
    const now = fresh ? -Infinity : this.now();
    const seen = new Set<HostState>();
    for (let i = 0; i < serving.length; i++) {
      const ep = serving[i]!;
      let host = byEndpoint.get(ep);
      if (host === undefined || !host.live) {
        const key = endpointKey(ep);
        host = hosts.get(key);
        if (host === undefined) {
          host = newHost(key, ep, now);
          hosts.set(key, host);
          if (!fresh) this.#lastJoin = now;
        }
        byEndpoint.set(ep, host);
      }
      seen.add(host);
    }
    if (seen.size !== hosts.size) {
      for (const [key, host] of hosts) {
        if (seen.has(host)) continue;
        host.live = false;
        hosts.delete(key);
        if (host.ejected) {
          host.ejected = false;
          this.#ejected--;
        }
      }
      this.#recomputeNextReadmit();
    }
  }

  /** {@link sync} without hosts: keep the join times of endpoints that joined a non-empty set and still serve. */
  #syncJoins(prev: readonly Endpoint[], serving: readonly Endpoint[]): void {
    if (prev.length === 0 || serving.length === 0) {
      this.#joined = undefined;
      return;
    }
    const before = new Set<string>();
    for (const ep of prev) before.add(endpointKey(ep));
    const after = new Set<string>();
    let joined = this.#joined;
    let now: number | undefined;
    for (const ep of serving) {
      const key = endpointKey(ep);
      after.add(key);
      if (before.has(key)) continue;
      now ??= this.now();
      (joined ??= new Map()).set(key, now);
      this.#lastJoin = now;
    }
    if (joined !== undefined) for (const key of joined.keys()) if (!after.has(key)) joined.delete(key);
    this.#joined = joined !== undefined && joined.size !== 0 ? joined : undefined;
  }

  /** Create the hosts of the serving set (on first need). */
  #activate(): WeakMap<Endpoint, HostState> {
    const hosts = new Map<string, HostState>();
    const byEndpoint = new WeakMap<Endpoint, HostState>();
    const joined = this.#joined;
    for (const ep of this.#serving) {
      const key = endpointKey(ep);
      let host = hosts.get(key);
      if (host === undefined) {
        host = newHost(key, ep, joined?.get(key) ?? -Infinity);
        hosts.set(key, host);
      }
      byEndpoint.set(ep, host);
    }
    this.#hosts = hosts;
    this.#byEndpoint = byEndpoint;
    this.#joined = undefined;
    return byEndpoint;
  }

  /** The host of `ep` (an endpoint object of any snapshot), or undefined when it is not serving. */
  host(ep: Endpoint): HostState | undefined {
    const byEndpoint = this.#byEndpoint ?? this.#activate();
    const host = byEndpoint.get(ep);
    if (host !== undefined && host.live) return host;
    const byKey = this.#hosts!.get(endpointKey(ep));
    if (byKey !== undefined) byEndpoint.set(ep, byKey);
    return byKey;
  }

  /**
   * The hosts of `endpoints` (same order), for a balancer that reads their state (in flight, slow start,
   * ejection). An endpoint no longer serving gets a host of its own that is not {@link HostState.live}.
   */
  hostsOf(endpoints: readonly Endpoint[]): HostState[] {
    const out = new Array<HostState>(endpoints.length);
    for (let i = 0; i < endpoints.length; i++) {
      const ep = endpoints[i]!;
      let host = this.host(ep);
      if (host === undefined) {
        host = newHost(endpointKey(ep), ep, -Infinity);
        host.live = false;
      }
      out[i] = host;
    }
    return out;
  }

  /** A request/connection was dispatched to `ep`. */
  begin(ep: Endpoint): void {
    const host = (this.#byEndpoint ?? this.#activate()).get(ep) ?? this.host(ep);
    if (host !== undefined) host.inflight++;
  }

  /** The request/connection on `ep` ended with `outcome`: in-flight count, then outlier detection. */
  end(ep: Endpoint, outcome: Outcome): void {
    const host = (this.#byEndpoint ?? this.#activate()).get(ep) ?? this.host(ep);
    if (host === undefined) return;
    if (host.inflight > 0) host.inflight--;
    this.record(host, outcome);
  }

  /** Outlier detection: count `outcome` of a request to `host`, ejecting it at the threshold. */
  record(host: HostState, outcome: Outcome): void {
    const o = this.outlier;
    if (o === undefined || !host.live) return;
    if (outcome === "success") {
      host.failures = 0;
      return;
    }
    if (host.ejected) {
      // Requests begun before the ejection: already counted against it. Unless the ejection is over.
      if (this.now() < host.ejectedUntil) return;
      this.refresh(this.now());
    }
    if (++host.failures < o.consecutiveFailures) return;
    const now = this.now();
    this.refresh(now);
    const total = this.size;
    // Envoy: refuse beyond the max percentage, but one host may always be ejected.
    if (this.#ejected > 0 && (this.#ejected + 1) * 100 > o.maxEjectionPercent * total) return;
    const base = Math.max(0, o.baseEjectionMs);
    if (host.ejections > 0 && base > 0) {
      const decay = Math.floor((now - host.readmittedAt) / base);
      host.ejections = Math.max(0, host.ejections - Math.max(0, decay));
    }
    host.ejections++;
    host.ejected = true;
    host.ejectedUntil = now + Math.min(base * host.ejections, Math.max(base, MAX_EJECTION_MS));
    host.failures = 0;
    this.#ejected++;
    this.#ejectionsTotal++;
    if (host.ejectedUntil < this.#nextReadmit) this.#nextReadmit = host.ejectedUntil;
  }

  /** Readmit endpoints whose ejection is over at `now`; returns the number still ejected. Cheap when none is due. */
  refresh(now: number): number {
    if (this.#ejected > 0 && now >= this.#nextReadmit) {
      for (const host of this.#hosts!.values()) {
        if (host.ejected && now >= host.ejectedUntil) {
          host.ejected = false;
          host.failures = 0;
          host.readmittedAt = host.ejectedUntil;
          this.#ejected--;
        }
      }
      this.#recomputeNextReadmit();
    }
    return this.#ejected;
  }

  /** Whether `ep` is ejected now (after a lazy readmission check). */
  isEjected(ep: Endpoint): boolean {
    if (this.#ejected === 0) return false;
    this.refresh(this.now());
    return this.host(ep)?.ejected === true;
  }

  /** The endpoints ejected now, by address then port (admin API). */
  ejectedEndpoints(): EjectedEndpoint[] {
    this.refresh(this.now());
    const rows: EjectedEndpoint[] = [];
    if (this.#ejected === 0) return rows;
    for (const h of this.#hosts!.values()) {
      if (h.ejected) rows.push({ address: h.address, port: h.port, until: h.ejectedUntil, ejections: h.ejections });
    }
    return rows.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port));
  }

  /** Outlier counters (metrics). */
  stats(): OutlierStats {
    return { cluster: this.name, ejected: this.refresh(this.now()), ejectionsTotal: this.#ejectionsTotal };
  }

  #recomputeNextReadmit(): void {
    let next = Infinity;
    if (this.#ejected > 0) for (const h of this.#hosts!.values()) if (h.ejected && h.ejectedUntil < next) next = h.ejectedUntil;
    this.#nextReadmit = next;
  }
}

function newHost(key: string, ep: Endpoint, servingSince: number): HostState {
  return {
    key,
    address: ep.address,
    port: ep.port,
    inflight: 0,
    servingSince,
    live: true,
    failures: 0,
    ejected: false,
    ejectedUntil: 0,
    ejections: 0,
    readmittedAt: -Infinity,
  };
}
