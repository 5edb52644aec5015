/**
 * A round robin over an endpoint set that changes without a new route: ExternalName targets, whose
 * addresses come from DNS and are re-resolved in the background.
 */
import type { Endpoint } from "../model/types.ts";
import type { AlgorithmOptions } from "./base.ts";
import { RoundRobin } from "./round-robin.ts";
import type { Balancer, Outcome, PickContext } from "./types.ts";

/** Where a {@link DynamicRoundRobin} reads its endpoints: a new array (identity) whenever the set changes. */
export interface EndpointSource {
  readonly endpoints: readonly Endpoint[];
}

/**
 * Round robin over `source.endpoints` as they are now. When the source publishes a new set, the rotation
 * restarts on it (at a random offset); with a shared `state`, in-flight counts and outlier ejections of the
 * addresses that stay carry over.
 *
 * @example
 * const balancer = new DynamicRoundRobin({ get endpoints() { return resolver.endpoints(8080); } });
 */
export class DynamicRoundRobin implements Balancer {
  #rr: RoundRobin;

  /**
   * @param rng injected for tests (see {@link RoundRobin}).
   * @param options shared cluster state (outlier detection); slow start does not apply to DNS targets.
   */
  constructor(
    readonly source: EndpointSource,
    readonly rng: () => number = Math.random,
    readonly options: Omit<AlgorithmOptions, "slowStartMs"> = {},
  ) {
    this.#rr = new RoundRobin(source.endpoints, rng, options);
  }

  get endpoints(): readonly Endpoint[] {
    return this.source.endpoints;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    this.#current();
    return this.#rr.pick(ctx);
  }

  begin(ep: Endpoint): void {
    this.#rr.begin(ep);
  }

  end(ep: Endpoint, outcome: Outcome): void {
    this.#rr.end(ep, outcome);
  }

  ejected(ep: Endpoint): boolean {
    return this.#current().ejected(ep);
  }

  #current(): RoundRobin {
    const eps = this.source.endpoints;
    if (eps !== this.#rr.endpoints) this.#rr = new RoundRobin(eps, this.rng, this.options);
    return this.#rr;
  }
}
