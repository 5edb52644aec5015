/**
 * Round robin over a cluster's serving endpoints, starting at a random offset (like kube-proxy's shuffled
 * list). While every endpoint has the same weight and none is ejected it is a plain rotation, O(1) per
 * pick. While an endpoint ramps up (slow start) or some are ejected, it is nginx's smooth weighted round
 * robin (SWRR) over the available endpoints, O(n) per pick: each endpoint's `current` grows by its weight,
 * the largest is picked and loses the total; picks of weights 5:1:1 interleave as a a b a c a a, and an
 * ejected endpoint's share spreads over all the others instead of falling on its neighbour.
 */
import type { Endpoint } from "../model/types.ts";
import { type AlgorithmOptions, EndpointBalancer } from "./base.ts";
import type { PickContext } from "./types.ts";

/**
 * @example
 * const rr = new RoundRobin(cluster.serving, Math.random, { state, slowStartMs: 30_000 });
 * rr.pick({ clientAddress: "192.0.2.1" });
 */
export class RoundRobin extends EndpointBalancer {
  #next: number;
  /** SWRR's `current` per endpoint (allocated on first weighted pick). */
  #current: Float64Array | undefined;

  /** @param rng injected for tests; the start offset is random so gateways don't all hit endpoint 0 first. */
  constructor(endpoints: readonly Endpoint[], rng: () => number = Math.random, options?: AlgorithmOptions) {
    super(endpoints, rng, options);
    this.#next = endpoints.length ? Math.floor(rng() * endpoints.length) : 0;
  }

  protected choose(ctx: PickContext, skipEjected: boolean, weighted: boolean, now: number): number {
    const exclude = ctx.exclude;
    const n = this.endpoints.length;
    if (!weighted && !skipEjected) {
      for (let k = 0; k < n; k++) {
        const i = this.#next;
        this.#next = i + 1 >= n ? 0 : i + 1;
        if (exclude === undefined || !exclude.has(this.endpoints[i]!)) return i;
      }
      return -1;
    }
    const current = (this.#current ??= new Float64Array(n));
    let total = 0;
    let best = -1;
    for (let i = 0; i < n; i++) {
      if (!this.available(i, exclude, skipEjected)) continue;
      const w = weighted ? this.weight(i, now) : 1;
      current[i]! += w;
      total += w;
      if (best < 0 || current[i]! > current[best]!) best = i;
    }
    if (best >= 0) {
      current[best]! -= total;
      this.#next = best + 1 >= n ? 0 : best + 1;
    }
    return best;
  }
}
