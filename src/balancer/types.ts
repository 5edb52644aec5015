/**
 * The balancer interface. One per route (cluster of one entrypoint, per snapshot); every algorithm
 * behind it passes the shared conformance suite (`test/balancer/conformance.ts`).
 */
import type { Endpoint } from "../model/types.ts";

/** What a balancer may key on. */
export interface PickContext {
  /** The downstream client's IP. */
  readonly clientAddress: string;
  /** Endpoints already tried for this request/connection (retries go elsewhere). */
  readonly exclude?: ReadonlySet<Endpoint> | undefined;
  /**
   * The key consistent-hash balancers hash (a header or cookie value, per the route's `hashOn`); absent:
   * they hash `clientAddress`. Other balancers ignore it.
   */
  readonly hashKey?: string | undefined;
}

/**
 * How one request (HTTP) or connection (TCP/UDP flow) sent to an endpoint ended, for passive outlier
 * detection. `connect-failure`: the connection to the endpoint could not be made (refused, reset before
 * use, connect timeout); `server-error`: an HTTP 5xx from the endpoint (502/503/504 included), or a reset or
 * a response-head timeout after the request was sent; `success`: anything else (client aborts included).
 */
export type Outcome = "success" | "connect-failure" | "server-error";

export interface Balancer {
  /** The endpoints this balancer chooses among (the cluster's serving set). */
  readonly endpoints: readonly Endpoint[];
  /** Choose an endpoint, or undefined when none is left (empty set, or all excluded). */
  pick(ctx: PickContext): Endpoint | undefined;
  /**
   * The proxy dispatched a request/connection to `ep` (a result of {@link pick}); least-request counts it as in
   * flight. Every `begin` is followed by exactly one {@link end} for the same endpoint.
   */
  begin(ep: Endpoint): void;
  /** The request/connection begun on `ep` ended with `outcome` (outlier detection reads it). */
  end(ep: Endpoint, outcome: Outcome): void;
  /**
   * Whether passive outlier detection has ejected `ep` now (affinity wrappers then move the client). Optional:
   * balancers without outlier detection leave it out.
   */
  ejected?(ep: Endpoint): boolean;
}
