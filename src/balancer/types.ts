/**
 * The balancer interface. One per route (cluster of one entrypoint, per snapshot); later issues
 * add algorithms behind it, all passing the shared conformance suite.
 */
import type { Endpoint } from "../model/types.ts";

/** What a balancer may key on. */
export interface PickContext {
  /** The downstream client's IP. */
  readonly clientAddress: string;
  /** Endpoints already tried for this request/connection (retries go elsewhere). */
  readonly exclude?: ReadonlySet<Endpoint> | undefined;
}

export interface Balancer {
  /** The endpoints this balancer chooses among (the cluster's serving set). */
  readonly endpoints: readonly Endpoint[];
  /** Choose an endpoint, or undefined when none is left (empty set, or all excluded). */
  pick(ctx: PickContext): Endpoint | undefined;
}
