/**
 * The common part of the balancing algorithms: the endpoints' shared {@link HostState}s, slow-start
 * weights, the outlier filter with its panic fallback, and begin/end bookkeeping. An algorithm implements
 * {@link EndpointBalancer.choose}: the index of an endpoint that is not excluded (and, when asked, not
 * ejected), or -1.
 */
import type { Endpoint } from "../model/types.ts";
import { ClusterState, type HostState } from "./cluster-state.ts";
import type { Balancer, Outcome, PickContext } from "./types.ts";

/** Options of every algorithm. */
export interface AlgorithmOptions {
  /**
   * The cluster's shared state (in flight, slow start, outlier detection). Absent: a private one (no outlier
   * detection, the endpoints not slowed), with clock {@link now}.
   */
  readonly state?: ClusterState | undefined;
  /** Slow-start window, ms (0/absent: off). Consistent-hash algorithms ignore it. */
  readonly slowStartMs?: number | undefined;
  /** Clock of the private state when {@link state} is absent (default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

/** A slowed endpoint's weight starts at this share of a full one and grows linearly to 1 over the window. */
export const SLOW_START_MIN_WEIGHT = 0.1;

/** Uniform draws tried before counting the available endpoints (rejection sampling, then a scan). */
const DRAWS = 8;

/** See the module doc. */
export abstract class EndpointBalancer implements Balancer {
  readonly state: ClusterState;
  readonly slowStartMs: number;
  /** `hosts[i]` is the shared state of `endpoints[i]` (see {@link hosts}). */
  #hosts: readonly HostState[] | undefined = undefined;
  /** Until this clock time some endpoint is still ramping up (slow start); -Infinity: none is. */
  #rampUntil = -Infinity;

  constructor(
    readonly endpoints: readonly Endpoint[],
    protected readonly rng: () => number,
    options: AlgorithmOptions = {},
    honoursSlowStart = true,
  ) {
    const state = (this.state = options.state ?? new ClusterState("", { now: options.now }));
    state.sync(endpoints);
    this.slowStartMs = honoursSlowStart ? Math.max(0, options.slowStartMs ?? 0) : 0;
    // Only endpoints that joined a non-empty set ramp up: skip the hosts when none joined within the window.
    if (this.slowStartMs > 0 && state.lastJoin + this.slowStartMs > state.now()) {
      for (const h of this.hosts) this.#rampUntil = Math.max(this.#rampUntil, h.servingSince + this.slowStartMs);
    }
  }

  /**
   * `hosts[i]` is the shared state of `endpoints[i]`, fetched from the cluster state on first use (an
   * ejection, a ramp-up or a least-request pick): a balancer that only rotates holds no per-endpoint state.
   */
  protected get hosts(): readonly HostState[] {
    return (this.#hosts ??= this.state.hostsOf(this.endpoints));
  }

  pick(ctx: PickContext): Endpoint | undefined {
    if (this.endpoints.length === 0) return undefined;
    const state = this.state;
    let now = 0;
    let weighted = false;
    if (this.#rampUntil !== -Infinity || state.ejectedCount > 0) {
      now = state.now();
      if (now >= this.#rampUntil) this.#rampUntil = -Infinity;
      else weighted = true;
    }
    const skipEjected = state.ejectedCount > 0 && state.refresh(now) > 0;
    let i = this.choose(ctx, skipEjected, weighted, now);
    // Panic: every endpoint left is ejected; balance over them rather than fail (Envoy's panic mode).
    if (i < 0 && skipEjected) i = this.choose(ctx, false, weighted, now);
    return i < 0 ? undefined : this.endpoints[i];
  }

  begin(ep: Endpoint): void {
    this.state.begin(ep);
  }

  end(ep: Endpoint, outcome: Outcome): void {
    this.state.end(ep, outcome);
  }

  /** Whether outlier detection has ejected `ep` now. */
  ejected(ep: Endpoint): boolean {
    return this.state.isEjected(ep);
  }

  /**
   * The index of the endpoint to use, or -1 when none is available.
   * @param skipEjected avoid ejected endpoints too (false in panic mode).
   * @param weighted some endpoint is ramping up: use {@link weight} (else every weight is 1).
   * @param now the clock, read only when `weighted` or something is ejected.
   */
  protected abstract choose(ctx: PickContext, skipEjected: boolean, weighted: boolean, now: number): number;

  /** Whether `endpoints[i]` may be picked. */
  protected available(i: number, exclude: ReadonlySet<Endpoint> | undefined, skipEjected: boolean): boolean {
    return !(skipEjected && this.hosts[i]!.ejected) && (exclude === undefined || !exclude.has(this.endpoints[i]!));
  }

  /** The slow-start weight of `endpoints[i]` at `now`, in [{@link SLOW_START_MIN_WEIGHT}, 1]. */
  protected weight(i: number, now: number): number {
    const elapsed = now - this.hosts[i]!.servingSince;
    const window = this.slowStartMs;
    if (window <= 0 || elapsed >= window) return 1;
    return SLOW_START_MIN_WEIGHT + ((1 - SLOW_START_MIN_WEIGHT) * Math.max(0, elapsed)) / window;
  }

  /** A uniformly random available index other than `avoid`, or -1. */
  protected drawUniform(exclude: ReadonlySet<Endpoint> | undefined, skipEjected: boolean, avoid: number): number {
    const n = this.endpoints.length;
    for (let t = 0; t < DRAWS; t++) {
      const i = Math.floor(this.rng() * n);
      if (i !== avoid && this.available(i, exclude, skipEjected)) return i;
    }
    let m = 0;
    for (let i = 0; i < n; i++) if (i !== avoid && this.available(i, exclude, skipEjected)) m++;
    if (m === 0) return -1;
    let r = Math.floor(this.rng() * m);
    for (let i = 0; i < n; i++) {
      if (i !== avoid && this.available(i, exclude, skipEjected) && r-- === 0) return i;
    }
    return -1;
  }

  /** An available index other than `avoid` drawn with probability proportional to its weight, or -1. */
  protected drawWeighted(exclude: ReadonlySet<Endpoint> | undefined, skipEjected: boolean, avoid: number, now: number): number {
    const n = this.endpoints.length;
    let total = 0;
    for (let i = 0; i < n; i++) if (i !== avoid && this.available(i, exclude, skipEjected)) total += this.weight(i, now);
    if (total === 0) return -1;
    let r = this.rng() * total;
    let last = -1;
    for (let i = 0; i < n; i++) {
      if (i === avoid || !this.available(i, exclude, skipEjected)) continue;
      last = i;
      r -= this.weight(i, now);
      if (r < 0) return i;
    }
    return last; // rounding
  }

  /**
   * Whether any endpoint is available, answered cheaply when fewer are excluded/ejected than there are
   * endpoints (consistent hashes check this before walking their table).
   */
  protected anyAvailable(exclude: ReadonlySet<Endpoint> | undefined, skipEjected: boolean): boolean {
    const n = this.endpoints.length;
    const out = (exclude?.size ?? 0) + (skipEjected ? this.state.ejectedCount : 0);
    if (out < n) return true;
    for (let i = 0; i < n; i++) if (this.available(i, exclude, skipEjected)) return true;
    return false;
  }
}
