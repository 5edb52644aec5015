/**
 * Building one entrypoint: the per-Service values every entrypoint of a Service shares ({@link ServiceCommon}),
 * the protocol of a Service port, and the identity rule: an entrypoint equal to the Service's previous one of the
 * same key is that previous object ({@link reuseEntrypoint}), so listeners and routes skip it cheaply.
 */
import type { ServicePort } from "../kube/objects.ts";
import type { ServiceAnnotations } from "./annotations.ts";
import { sameEntrypoint } from "./equal.ts";
import type { Cluster, Entrypoint, EntrypointProtocol, ModelErrorReason, TrafficPolicy } from "./types.ts";

/** `T` with its fields writable (an entrypoint while it is being built, before it is frozen). */
export type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The per-Service values every entrypoint of it shares, and how to report a problem with the Service. */
export interface ServiceCommon {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly annotations: Readonly<Record<string, string>>;
  readonly parsed: ServiceAnnotations;
  /** The Service's traffic policy (shared by its entrypoints; the previous object when unchanged). */
  readonly policy: TrafficPolicy | undefined;
  /** `metadata.uid`, when set. */
  readonly uid: string | undefined;
  readonly created: number;
  /** The Service's previous entrypoints by key, and clusters by name, to reuse. */
  readonly prevByKey: ReadonlyMap<string, Entrypoint>;
  readonly prevClusters: ReadonlyMap<string, Cluster>;
  /** Report a problem with the Service (reason `InvalidService` unless given). */
  readonly report: (message: string, reason?: ModelErrorReason) => void;
  /** Report a problem with an annotation (reason `InvalidAnnotation`). */
  readonly reportAnnotation: (message: string) => void;
}

/** `fresh` with the fields every entrypoint of the Service shares besides name, port and cluster (policy, uid). */
export function withCommon(fresh: Mutable<Entrypoint>, common: ServiceCommon): Mutable<Entrypoint> {
  if (common.policy !== undefined) fresh.policy = common.policy;
  if (common.uid !== undefined) fresh.serviceUid = common.uid;
  return fresh;
}

/**
 * The protocol of Service port `sp`: `udp` for UDP; else the `kubegate.io/protocol` annotation (`forced`) when set;
 * else `http` for appProtocol `http` / `kubernetes.io/ws`, `h2c` for `kubernetes.io/h2c`, `h2c` and `grpc` (gRPC
 * over cleartext HTTP/2, what NGINX Gateway Fabric and Envoy Gateway key on), `tcp` for anything else.
 */
export function protocolFor(sp: ServicePort, forced: "http" | "h2c" | "tcp" | undefined): EntrypointProtocol {
  if (sp.protocol === "UDP") return "udp";
  if (forced) return forced;
  const app = sp.appProtocol?.toLowerCase();
  if (app === "http" || app === "kubernetes.io/ws") return "http";
  return app === "kubernetes.io/h2c" || app === "h2c" || app === "grpc" ? "h2c" : "tcp";
}

/** An entrypoint the gateway serves at L7 (requests, not connections): HTTP/1.1 or HTTP/2. */
export function isHttpProtocol(protocol: EntrypointProtocol): boolean {
  return protocol === "http" || protocol === "h2c";
}

/** The entrypoint to publish: `previous` when it equals `fresh`, else `fresh` frozen. */
export function reuseEntrypoint(fresh: Entrypoint, previous: Entrypoint | undefined): Entrypoint {
  return previous && sameEntrypoint(previous, fresh) ? previous : Object.freeze(fresh);
}
