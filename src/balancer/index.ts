/**
 * Balancers: one {@link Balancer} interface (`types.ts`), its algorithms, and the {@link RouteBuilder} that
 * composes them into each entrypoint's route. Every algorithm passes `test/balancer/conformance.ts`.
 */
export type { Balancer, Outcome, PickContext } from "./types.ts";
export { RoundRobin } from "./round-robin.ts";
export { DynamicRoundRobin, type EndpointSource } from "./dynamic.ts";
export {
  AffinityTable,
  type AffinityEntry,
  type AffinityRow,
  type AffinityTableOptions,
  affinityClient,
  ClientIpAffinity,
  DEFAULT_MAX_AFFINITY_ENTRIES,
  endpointKey,
} from "./affinity.ts";
export { CookieAffinity, type CookieSettings, cookieToken } from "./cookie.ts";
export {
  type BalancingInfo,
  type ExternalNameLease,
  type ExternalNames,
  type ExternalNameStatus,
  RouteBuilder,
  type RouteBuilderOptions,
} from "./routes.ts";
