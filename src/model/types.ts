/**
 * The model's output: an immutable Snapshot of what this node serves. Produced by the pure model (the full
 * build, `build.ts`, and the incremental store, `store.ts`), consumed by listeners, the data plane and the admin API.
 * Envoy vocabulary: entrypoint (listener) -> cluster -> endpoint.
 */

export type EntrypointType = "NodePort" | "LoadBalancer";
/** `http`: HTTP/1.1 at L7; `h2c`: HTTP/2 cleartext (gRPC) at L7, balanced per stream; `tcp`, `udp`: L4. */
export type EntrypointProtocol = "http" | "h2c" | "tcp" | "udp";

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
  /** Why `serving` is what it is (shown on the admin API). */
  readonly selection?: EndpointSelection | undefined;
}

/** How `Cluster.serving` was chosen, per kube-proxy's CategorizeEndpoints. */
export interface EndpointSelection {
  readonly policy: "Cluster" | "Local";
  /** Topology used: none, or zone/node hints that matched this node. */
  readonly topology: "none" | "zone" | "node";
  /** When hints exist but were ignored: why (e.g. "not every endpoint has a hint", "no hint matches zone z1"). */
  readonly topologyIgnored?: string | undefined;
  /** `serving-terminating` when no endpoint was ready and the KEP-1669 fallback applied. */
  readonly fallback: "none" | "serving-terminating";
}

/** sessionAffinity of a Service port, plus kubegate's opt-in HTTP cookie affinity. */
export interface SessionAffinity {
  /** `ClientIP`: a client IP sticks to one endpoint for `timeoutSeconds` (sliding). */
  readonly mode: "None" | "ClientIP";
  /** sessionAffinityConfig.clientIP.timeoutSeconds (default 10800, max 86400). */
  readonly timeoutSeconds: number;
  /** HTTP only, annotation `kubegate.io/affinity-cookie: NAME`: stick by a cookie the gateway sets. */
  readonly cookie?: { readonly name: string; readonly ttlSeconds: number } | undefined;
}

/** An ExternalName Service exposed through the annotation `kubegate.io/expose-external-name: "true"`. */
export interface ExternalTarget {
  /** The DNS name to dial (spec.externalName). */
  readonly hostname: string;
  /** The port to dial (the Service port's targetPort when numeric, else its port). */
  readonly port: number;
}

/** A healthCheckNodePort server (externalTrafficPolicy: Local), kube-proxy's contract. */
export interface HealthCheckService {
  readonly namespace: string;
  readonly name: string;
  /** spec.healthCheckNodePort. */
  readonly port: number;
  /** Listen addresses (the nodeport addresses). */
  readonly addresses: readonly string[];
  /**
   * This node's *ready* endpoints of the Service (terminating ones do not count); for dual-stack pods, the
   * larger of the per-family counts so a pod counts once.
   */
  readonly localEndpoints: number;
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
  /**
   * The Service's annotations, as they are (one frozen object shared by its entrypoints). Nothing downstream reads
   * them: the `kubegate.io/*` ones are already parsed into the fields that use them (`protocol`,
   * `sessionAffinity.cookie`, `proxyProtocol`, `externalName`, `policy`).
   */
  readonly annotations: Readonly<Record<string, string>>;
  /** Set when this entrypoint cannot be served (e.g. a listener conflict); it is then not bound. */
  readonly error?: string | undefined;
  /** sessionAffinity (default None). */
  readonly sessionAffinity?: SessionAffinity | undefined;
  /**
   * LoadBalancer entrypoints: spec.loadBalancerSourceRanges as canonical CIDRs; connections from elsewhere are
   * refused. Undefined means no filtering — also when every entry was invalid (reported), as in kube-proxy.
   */
  readonly sourceRanges?: readonly string[] | undefined;
  /** TCP: send a PROXY protocol v2 header to the backend (annotation `kubegate.io/proxy-protocol: v2`). */
  readonly proxyProtocol?: "v2" | undefined;
  /** ExternalName Services: the DNS target instead of EndpointSlices (the cluster then has no endpoints). */
  readonly externalName?: ExternalTarget | undefined;
  /** Per-Service data-plane policy from `kubegate.io/*` annotations; absent fields take the gateway defaults. */
  readonly policy?: TrafficPolicy | undefined;
  /**
   * `metadata.uid` of the Service, when known: Events about the Service name it, so that `kubectl describe service`
   * (which selects Events by `involvedObject.uid`) shows them.
   */
  readonly serviceUid?: string | undefined;
}

/** The balancing algorithms (annotation `kubegate.io/balancer`, flag `--default-balancer`). */
export type BalancerAlgorithm = "round-robin" | "least-request" | "random" | "ring-hash" | "maglev";

/** What a consistent-hash balancer (ring-hash, maglev) keys on (annotation `kubegate.io/hash-on`). Default: client IP. */
export type HashOn =
  | { readonly source: "client-ip" }
  /** HTTP only: a request header's value (lowercase name); requests without it fall back to the client IP. */
  | { readonly source: "header"; readonly name: string }
  /** HTTP only: a request cookie's value; requests without it fall back to the client IP. */
  | { readonly source: "cookie"; readonly name: string };

/**
 * Per-Service overrides of the gateway's data-plane defaults, parsed from annotations (see
 * `model/annotations.ts`). Every field is optional: absent means the gateway-wide flag applies.
 */
export interface TrafficPolicy {
  readonly balancer?: BalancerAlgorithm | undefined;
  readonly hashOn?: HashOn | undefined;
  /** New endpoints ramp their share of new traffic up linearly over this long, ms (0/absent: off). */
  readonly slowStartMs?: number | undefined;
  /** Upstream connect timeout per attempt, ms. */
  readonly connectTimeoutMs?: number | undefined;
  /** HTTP: a client must send a full request head within this, ms (408). */
  readonly requestHeaderTimeoutMs?: number | undefined;
  /** HTTP: the upstream must send the response head within this, ms (504). */
  readonly responseHeaderTimeoutMs?: number | undefined;
  /** Idle timeout of client and upstream connections, ms. */
  readonly idleTimeoutMs?: number | undefined;
  /** HTTP: a whole exchange (request head to end of response) may last at most this, ms (0: no limit). */
  readonly maxRequestDurationMs?: number | undefined;
  /** HTTP: max requests in flight to this Service port from this gateway (circuit breaking; 503 beyond). */
  readonly maxConcurrentRequests?: number | undefined;
  /** HTTP: max request body bytes (413 beyond; 0: no limit). */
  readonly maxRequestBodyBytes?: number | undefined;
  /** HTTP: retry an idempotent request that got no response bytes once, on another endpoint. */
  readonly retryIdempotent?: boolean | undefined;
}

/** The balancing algorithms, in the order the messages list them. */
export const BALANCER_ALGORITHMS = ["round-robin", "least-request", "random", "ring-hash", "maglev"] as const satisfies readonly BalancerAlgorithm[];

/** The {@link TrafficPolicy} fields (each also an annotation of `annotations.ts`, named alike). */
export const POLICY_FIELDS = [
  "balancer",
  "hashOn",
  "slowStartMs",
  "connectTimeoutMs",
  "requestHeaderTimeoutMs",
  "responseHeaderTimeoutMs",
  "idleTimeoutMs",
  "maxRequestDurationMs",
  "maxConcurrentRequests",
  "maxRequestBodyBytes",
  "retryIdempotent",
] as const satisfies readonly (keyof TrafficPolicy)[];

/**
 * Why a Service or Entrypoint error happened, as a Kubernetes Event reason (see `controller/model-events.ts`):
 * - `InvalidAnnotation`: a `kubegate.io/*` annotation is invalid or does not apply; it is ignored.
 * - `PortConflict`: an entrypoint wants an address and port another (older) one holds; it is not bound.
 * - `TooManyEndpoints`: a Service port has more endpoints than `--max-endpoints-per-service`.
 * - `InvalidService`: anything else wrong with the Service (a port, a field); that part is skipped.
 */
export type ModelErrorReason = "InvalidAnnotation" | "PortConflict" | "TooManyEndpoints" | "InvalidService";

/** A problem with one object; that object (or the part of it) is skipped, the rest is served. */
export interface ModelError {
  readonly kind: "Service" | "EndpointSlice" | "Node" | "Entrypoint" | "Source";
  /** `namespace/name` or entrypoint key. */
  readonly object: string;
  readonly message: string;
  /** Set on the Service and Entrypoint errors of the model; absent on others (a generic problem). */
  readonly reason?: ModelErrorReason | undefined;
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
  /** healthCheckNodePort servers to run (externalTrafficPolicy: Local LoadBalancer Services), sorted by port; always set by the model. */
  readonly healthChecks?: readonly HealthCheckService[] | undefined;
  /**
   * How `entrypoints` differs from the previous published snapshot's, so that consumers can do O(changed)
   * work under endpoint churn. Set by the model store on every snapshot but the first; a consumer uses it
   * only when `base` is the entrypoint list it last saw (else it compares the lists in full). Not
   * enumerable: snapshots compare and serialize by content alone.
   */
  readonly delta?: EntrypointDelta | undefined;
}

/** The entrypoints of a snapshot relative to an earlier list (see {@link Snapshot.delta}). */
export interface EntrypointDelta {
  /** The previous published snapshot's `entrypoints`. */
  readonly base: readonly Entrypoint[];
  /**
   * Exactly the keys whose entrypoint is not the same object in `base` and in the new list: added, removed,
   * or replaced by a new object. Every other key has the identical entrypoint object in both.
   */
  readonly changed: ReadonlySet<string>;
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
  /**
   * `--[no-]lb-claim-unclassed` (default true): LoadBalancer Services without `spec.loadBalancerClass` get
   * LoadBalancer entrypoints. False leaves them to another implementation (their NodePorts are still served).
   */
  readonly claimUnclassedLoadBalancers?: boolean | undefined;
  /**
   * `--max-endpoints-per-service`: a Service port with more endpoints is reported (a ModelError) and served with
   * the first this-many serving endpoints in sorted order; 0 or absent: no limit.
   */
  readonly maxEndpointsPerService?: number | undefined;
  /**
   * `--lb-port-offset`: LoadBalancer entrypoints of Service ports below 1024 listen on the port plus this (a gateway
   * that may not bind privileged ports, e.g. on a developer's machine). 0 or absent: the declared port.
   */
  readonly lbPortOffset?: number | undefined;
  /**
   * `--local`: this gateway runs off the cluster (a developer's machine, not a Node). No endpoint is on this node, so
   * `externalTrafficPolicy: Local` would leave every Service without endpoints: off the cluster it selects as
   * `Cluster` does (the selection says so).
   */
  readonly offCluster?: boolean | undefined;
}
