/**
 * Balancers: one {@link Balancer} interface (`types.ts`), its algorithms, and the per-Service-port state they
 * share; `routes/builder.ts` composes them into each entrypoint's route. Every algorithm passes `test/balancer/conformance.ts`.
 */
export type { Balancer, Outcome, PickContext } from "./types.ts";
export { type AlgorithmOptions, EndpointBalancer, SLOW_START_MIN_WEIGHT } from "./base.ts";
export { BALANCER_ALGORITHMS, createBalancer, isConsistentHash } from "./algorithms.ts";
export { RoundRobin } from "./round-robin.ts";
export { LeastRequest } from "./least-request.ts";
export { RandomBalancer } from "./random.ts";
export { buildRing, RING_MAX, RING_PER_ENDPOINT, type Ring, RingHash, ringPointsPerEndpoint } from "./ring-hash.ts";
export { buildMaglev, Maglev, MAGLEV_SIZES, maglevSize } from "./maglev.ts";
export { murmur3 } from "./hash.ts";
export { type CanonicalKeys, canonicalKeys, TableCache } from "./table-cache.ts";
export {
  ClusterState,
  type ClusterStateOptions,
  type EjectedEndpoint,
  type HostState,
  MAX_EJECTION_MS,
  type OutlierSettings,
  type OutlierStats,
} from "./cluster-state.ts";
export { DynamicRoundRobin, type EndpointSource } from "./dynamic.ts";
export {
  AffinityTable,
  type AffinityEntry,
  type AffinityRow,
  type AffinityTableOptions,
  affinityClient,
  ClientIpAffinity,
  clientHash,
  DEFAULT_MAX_AFFINITY_ENTRIES,
  endpointHash,
  endpointKey,
  rendezvousScore,
} from "./affinity.ts";
export { CookieAffinity, type CookieSettings, cookieToken } from "./cookie.ts";
