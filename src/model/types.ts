/**
 * The model's output: an immutable Snapshot of what this node serves. Produced by the pure
 * model (`build.ts`/`incremental.ts`), consumed by listeners, the data plane and the admin API.
 * Envoy vocabulary: entrypoint (listener) -> cluster -> endpoint.
 */

export type EntrypointType = "NodePort" | "LoadBalancer";
export type EntrypointProtocol = "http" | "tcp" | "udp";

/** One backend address:port of a cluster, with its EndpointSlice conditions resolved (nil rules applied). */
export interface Endpoint {
  readonly address: string;
  readonly port: number;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly nodeName?: string | undefined;
  readonly zone?: string | undefined;
  /** Topology hints, when the slice carried them. */
  readonly hints?: { readonly forZones?: readonly string[]; readonly forNodes?: readonly string[] } | undefined;
  /** `targetRef` of the endpoint, e.g. the Pod. */
  readonly targetRef?: { readonly kind?: string | undefined; readonly name?: string | undefined; readonly namespace?: string | undefined } | undefined;
}

/** The endpoints of one Service port, from all of the Service's EndpointSlices merged and deduplicated. */
export interface Cluster {
  /** `namespace/service:port` (port name, or number when unnamed). */
  readonly name: string;
  /** Every known endpoint, sorted by address then port. */
  readonly endpoints: readonly Endpoint[];
  /** The endpoints that should receive new traffic (kube-proxy rules: ready, else serving+terminating). */
  readonly serving: readonly Endpoint[];
}

/** One listener-facing exposure of a Service port. */
export interface Entrypoint {
  /** `namespace/service:port`, unique per type: key is `${type}/${name}`. */
  readonly name: string;
  /** `${type}/${name}`: the unique key of this entrypoint in the snapshot. */
  readonly key: string;
  readonly type: EntrypointType;
  readonly protocol: EntrypointProtocol;
  readonly namespace: string;
  readonly service: string;
  /** Listen addresses (IPv4 and IPv6 literals). */
  readonly addresses: readonly string[];
  readonly port: number;
  readonly cluster: Cluster;
  /** The Service's externalTrafficPolicy. */
  readonly externalTrafficPolicy: "Cluster" | "Local";
  /** Annotations of the Service (for per-Service options in later issues). */
  readonly annotations: Readonly<Record<string, string>>;
  /** Set when this entrypoint cannot be served (e.g. a listener conflict); it is then not bound. */
  readonly error?: string | undefined;
}

/** A problem with one object; that object (or the part of it) is skipped, the rest is served. */
export interface ModelError {
  readonly kind: "Service" | "EndpointSlice" | "Node" | "Entrypoint" | "Source";
  /** `namespace/name` or entrypoint key. */
  readonly object: string;
  readonly message: string;
}

/** What this node is, as the model needs it. */
export interface NodeInfo {
  readonly name: string;
  readonly zone?: string | undefined;
}

export interface Snapshot {
  /** Increases by one per published snapshot. */
  readonly version: number;
  /**
   * Entrypoints sorted by key; includes ones with `error` set (not bound). Every entrypoint is frozen; this
   * array itself is not (freezing 10k+ elements costs ~6 ms per publish in Bun) but is never changed after publish.
   */
  readonly entrypoints: readonly Entrypoint[];
  readonly errors: readonly ModelError[];
  readonly node: NodeInfo;
}

/** Options of the model: who we are and what we serve. */
export interface ModelOptions {
  /** This node's name (`--hostname-override`, default the hostname). */
  readonly nodeName: string;
  /** The host's own interface addresses (IPv4/IPv6 literals). */
  readonly hostAddresses: readonly string[];
  /** `--nodeport-addresses` CIDRs; empty means all node addresses. */
  readonly nodePortAddresses: readonly string[];
  /** `--service-proxy-name` (default `kubegate`). */
  readonly serviceProxyName: string;
  /** `--all-services`: serve every Service regardless of the service-proxy-name label. */
  readonly allServices: boolean;
}
