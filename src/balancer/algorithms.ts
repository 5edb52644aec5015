/** The balancing algorithms by name (annotation `kubegate.io/balancer`, flag `--default-balancer`). */
import type { BalancerAlgorithm, Endpoint } from "../model/types.ts";
import type { AlgorithmOptions, EndpointBalancer } from "./base.ts";
import { LeastRequest } from "./least-request.ts";
import { Maglev } from "./maglev.ts";
import { RandomBalancer } from "./random.ts";
import { RingHash } from "./ring-hash.ts";
import { RoundRobin } from "./round-robin.ts";

/** Every algorithm name, in documentation order. */
export { BALANCER_ALGORITHMS } from "../model/types.ts";

/** Whether `algorithm` hashes a key (ring-hash, maglev): those use `hashOn` and ignore slow start. */
export function isConsistentHash(algorithm: BalancerAlgorithm): boolean {
  return algorithm === "ring-hash" || algorithm === "maglev";
}

/**
 * A balancer of `algorithm` over `endpoints`.
 *
 * @example
 * const balancer = createBalancer("least-request", cluster.serving, Math.random, { state, slowStartMs: 30_000 });
 */
export function createBalancer(
  algorithm: BalancerAlgorithm,
  endpoints: readonly Endpoint[],
  rng: () => number = Math.random,
  options?: AlgorithmOptions,
): EndpointBalancer {
  switch (algorithm) {
    case "round-robin":
      return new RoundRobin(endpoints, rng, options);
    case "least-request":
      return new LeastRequest(endpoints, rng, options);
    case "random":
      return new RandomBalancer(endpoints, rng, options);
    case "ring-hash":
      return new RingHash(endpoints, rng, options);
    case "maglev":
      return new Maglev(endpoints, rng, options);
  }
}
