/**
 * Random: each pick draws an available endpoint uniformly (in proportion to its weight while an endpoint
 * ramps up under slow start). No shared position, so many gateways never synchronise; O(1) per pick while
 * weights are equal.
 */
import type { Endpoint } from "../model/types.ts";
import { type AlgorithmOptions, EndpointBalancer } from "./base.ts";
import type { PickContext } from "./types.ts";

/**
 * @example
 * const random = new RandomBalancer(cluster.serving, Math.random, { state });
 */
export class RandomBalancer extends EndpointBalancer {
  constructor(endpoints: readonly Endpoint[], rng: () => number = Math.random, options?: AlgorithmOptions) {
    super(endpoints, rng, options);
  }

  protected choose(ctx: PickContext, skipEjected: boolean, weighted: boolean, now: number): number {
    return weighted ? this.drawWeighted(ctx.exclude, skipEjected, -1, now) : this.drawUniform(ctx.exclude, skipEjected, -1);
  }
}
