/**
 * The route table a data plane reads. A listener stays bound across snapshots; its {@link RouteRef} is
 * swapped when the entrypoint changes, so new connections (and new requests on kept-alive HTTP
 * connections) take the new endpoints while open TCP connections finish where they are (Traefik's
 * switcher, without re-registering handlers). Routes are built by `builder.ts`.
 */
import type { CookieAffinity } from "../balancer/cookie.ts";
import type { Balancer } from "../balancer/types.ts";
import type { Endpoint, Entrypoint } from "../model/types.ts";

/** An entrypoint with its balancer: immutable, one per snapshot in which the entrypoint changed. */
export interface Route {
  readonly entrypoint: Entrypoint;
  readonly balancer: Balancer;
  /**
   * HTTP cookie affinity (annotation `kubegate.io/affinity-cookie`): requests whose cookie names a serving
   * endpoint go there; other responses set the cookie. Built by `RouteBuilder`; absent for other routes.
   */
  readonly cookie?: CookieAffinity | undefined;
}

/** The switch: one per bound listener; `current` is replaced on each snapshot that changes the route. */
export interface RouteRef {
  current: Route;
}

/** An ExternalName target's addresses, held while an entrypoint uses them. */
export interface ExternalNameLease {
  /** The DNS name (normalised). */
  readonly hostname: string;
  /** Endpoints at the addresses resolved now, on `port`: a new array whenever the addresses change. */
  endpoints(port: number): readonly Endpoint[];
  /** Resolves once the first resolution has finished. */
  ready(): Promise<void>;
  /** The resolver's state, for the admin API. */
  status(): ExternalNameStatus;
  /** Stop using the name (idempotent). */
  release(): void;
}

/** What the admin API shows of an ExternalName target. */
export interface ExternalNameStatus {
  readonly hostname: string;
  readonly addresses: readonly string[];
  readonly error?: string | undefined;
}

/** Where ExternalName leases come from (the DNS registry of `dns/`). */
export interface ExternalNames {
  acquire(hostname: string): ExternalNameLease;
}
