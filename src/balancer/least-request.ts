/**
 * Least request with the power of two choices (P2C, as in Envoy and Finagle): draw two distinct available
 * endpoints at random and take the one with fewer requests in flight (counted from `begin`/`end`, shared
 * by all routes of the cluster). O(1) per pick while weights are equal.
 *
 * With slow start, candidates are drawn in proportion to their weight and compared by in-flight / weight;
 * a tie goes to the first candidate (itself drawn by weight), so an idle cluster still spreads by weight
 * and a ramping endpoint holds about its weight's share of the requests in flight.
 */
import type { Endpoint } from "../model/types.ts";
import { type AlgorithmOptions, EndpointBalancer } from "./base.ts";
import type { PickContext } from "./types.ts";

/**
 * @example
 * const lr = new LeastRequest(cluster.serving, Math.random, { state });
 * const ep = lr.pick({ clientAddress: "192.0.2.1" })!;
 * lr.begin(ep); // ... lr.end(ep, "success");
 */
export class LeastRequest extends EndpointBalancer {
  constructor(endpoints: readonly Endpoint[], rng: () => number = Math.random, options?: AlgorithmOptions) {
    super(endpoints, rng, options);
  }

  protected choose(ctx: PickContext, skipEjected: boolean, weighted: boolean, now: number): number {
    const exclude = ctx.exclude;
    const a = weighted ? this.drawWeighted(exclude, skipEjected, -1, now) : this.drawUniform(exclude, skipEjected, -1);
    if (a < 0) return -1;
    const b = weighted ? this.drawWeighted(exclude, skipEjected, a, now) : this.drawUniform(exclude, skipEjected, a);
    if (b < 0) return a;
    const hosts = this.hosts;
    if (!weighted) return hosts[b]!.inflight < hosts[a]!.inflight ? b : a;
    return hosts[b]!.inflight / this.weight(b, now) < hosts[a]!.inflight / this.weight(a, now) ? b : a;
  }
}
