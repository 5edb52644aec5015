/**
 * Hand-built model values for data-plane and listener tests (the model has its own tests): an
 * entrypoint with a cluster of 127.0.0.1 endpoints, and a snapshot around entrypoints.
 */
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import type { Endpoint, Entrypoint, EntrypointProtocol, Snapshot } from "../../src/model/types.ts";
import type { Route } from "../../src/routes/types.ts";

/** How tests name an endpoint (recording balancers): its port on 127.0.0.1 (`8080`), else `address:port` (`127.0.0.2:1`). */
export type EndpointId = number | `${string}:${number}`;

/** The {@link EndpointId} of `ep`. */
export function endpointId(ep: Endpoint): EndpointId {
  return ep.address === "127.0.0.1" ? ep.port : `${ep.address}:${ep.port}`;
}

/** A ready endpoint. */
export function endpoint(port: number, address = "127.0.0.1"): Endpoint {
  return { address, port, ready: true, serving: true, terminating: false };
}

export interface EntrypointSpec {
  /** `ns/svc:port`; default `test/svc:tcp`. */
  readonly name?: string;
  readonly protocol?: EntrypointProtocol;
  readonly addresses?: readonly string[];
  readonly port?: number;
  /** Upstream ports on 127.0.0.1, or endpoints. */
  readonly endpoints?: readonly (number | Endpoint)[];
  readonly error?: string;
}

/** A NodePort entrypoint (a new object each call, as the model makes on each change). */
export function entrypoint(spec: EntrypointSpec = {}): Entrypoint {
  const name = spec.name ?? "test/svc:tcp";
  const [namespace = "test", rest = "svc:tcp"] = name.split("/");
  const eps = (spec.endpoints ?? []).map((e) => (typeof e === "number" ? endpoint(e) : e));
  return {
    name,
    key: `NodePort/${name}`,
    type: "NodePort",
    protocol: spec.protocol ?? "tcp",
    namespace,
    service: rest.split(":")[0]!,
    addresses: spec.addresses ?? ["127.0.0.1"],
    port: spec.port ?? 0,
    cluster: { name, endpoints: eps, serving: eps },
    externalTrafficPolicy: "Cluster",
    annotations: {},
    ...(spec.error !== undefined ? { error: spec.error } : {}),
  };
}

/** A route over `entrypoint`'s serving endpoints; `rng` 0 starts at the first endpoint. */
export function route(ep: Entrypoint, rng: () => number = () => 0): Route {
  return { entrypoint: ep, balancer: new RoundRobin(ep.cluster.serving, rng) };
}

let version = 0;

/** A snapshot of these entrypoints (sorted by key, as the model publishes them). */
export function snapshot(...entrypoints: Entrypoint[]): Snapshot {
  return {
    version: ++version,
    entrypoints: [...entrypoints].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)),
    errors: [],
    node: { name: "node-a" },
  };
}
