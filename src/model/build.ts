/**
 * The full, pure build: `(services, endpointSlices, nodes, options) -> Snapshot`. The incremental store
 * (`store.ts`) must always produce what this produces from the same objects; tests hold it to that.
 *
 * Immutability: the snapshot, every entrypoint, cluster, endpoint, error and every nested array is frozen,
 * except the snapshot's top-level `entrypoints` array (typed `readonly`, never mutated after publish).
 * Freezing an array in JavaScriptCore converts its storage, ~0.4 µs per element: for 15k entrypoints that is
 * ~6 ms of CPU per publish, more than a whole incremental update (~0.5 ms), and the store re-creates that
 * array on every publish. See test/bench/model-scale.ts.
 *
 * @example
 * const snapshot = buildSnapshot({ services, endpointSlices, nodes }, options);
 * snapshot.entrypoints.map((e) => e.key); // ["LoadBalancer/default/web:http", "NodePort/default/web:http"]
 */
import type { EndpointSlice, KindName, Node, Service } from "../kube/objects.ts";
import type { Exposure } from "./claims.ts";
import { ClaimIndex, withError } from "./conflicts.ts";
import { sliceServiceKey } from "./endpoints.ts";
import { serviceKey } from "./in-scope.ts";
import { type BuildContext, nodeZone, type PreparedOptions, prepareOptions } from "./prepared-options.ts";
import { compareKeys } from "./entrypoint-list.ts";
import { computeService } from "./service.ts";
import { compareHealthChecks, type HealthCandidate, healthCheckConflict, healthCheckError } from "./service-health.ts";
import type { Entrypoint, HealthCheckService, ModelError, ModelOptions, NodeInfo, Snapshot } from "./types.ts";

export { PROTOCOL_ANNOTATION } from "./annotations.ts";
export { LOAD_BALANCER_CLASS, SERVICE_PROXY_NAME_LABEL } from "./in-scope.ts";
export { ModelOptionsError } from "./prepared-options.ts";

/** The empty health check list, shared. */
export const NO_HEALTH_CHECKS: readonly HealthCheckService[] = Object.freeze([]);

/** An object a source reported as invalid (CacheEvent `invalid`): reported, and treated as absent. */
export interface InvalidObject {
  readonly kind: KindName;
  readonly key: string;
  readonly message: string;
}

/** The objects to build from. */
export interface ModelInput {
  readonly services: Iterable<Service>;
  readonly endpointSlices: Iterable<EndpointSlice>;
  readonly nodes: Iterable<Node>;
  readonly invalid?: Iterable<InvalidObject> | undefined;
}

export { compareKeys };

/** Orders errors by kind, object, then message. */
export function compareErrors(a: ModelError, b: ModelError): number {
  return compareKeys(a.kind, b.kind) || compareKeys(a.object, b.object) || compareKeys(a.message, b.message);
}

/** The ModelError of an invalid object (no reason: a generic problem). */
export function invalidError(invalid: InvalidObject): ModelError {
  return Object.freeze({ kind: invalid.kind, object: invalid.key, message: invalid.message });
}

/** The ModelError of an entrypoint with a conflict (reason `PortConflict`); its Service is the entrypoint's. */
export function entrypointError(entrypoint: Entrypoint): ModelError {
  return Object.freeze({ kind: "Entrypoint", object: entrypoint.key, message: entrypoint.error ?? "", reason: "PortConflict" });
}

/** The frozen node description of a snapshot. */
export function nodeInfo(name: string, zone: string | undefined): NodeInfo {
  return Object.freeze(zone === undefined ? { name } : { name, zone });
}

/** Build a snapshot from parsed options (see {@link buildSnapshot}). */
export function buildFromPrepared(input: ModelInput, prepared: PreparedOptions, version = 0): Snapshot {
  const { nodeName } = prepared.options;
  let node: Node | undefined;
  for (const n of input.nodes) if (n.metadata.name === nodeName) node = n;
  const ctx: BuildContext = { prepared, nodeName, zone: nodeZone(node) };

  const slicesByService = new Map<string, EndpointSlice[]>();
  for (const slice of input.endpointSlices) {
    const key = sliceServiceKey(slice);
    if (key === undefined) continue;
    const list = slicesByService.get(key);
    if (list) list.push(slice);
    else slicesByService.set(key, [slice]);
  }
  const services = new Map<string, Service>();
  for (const service of input.services) services.set(serviceKey(service), service);

  const errors: ModelError[] = [];
  for (const invalid of input.invalid ?? []) errors.push(invalidError(invalid));
  const exposures: Exposure[] = [];
  const candidates = new Map<number, HealthCandidate[]>();
  for (const [key, service] of services) {
    const result = computeService(service, slicesByService.get(key) ?? [], ctx);
    exposures.push(...result.exposures);
    errors.push(...result.errors);
    const candidate = result.healthCheck;
    if (candidate) {
      const list = candidates.get(candidate.check.port);
      if (list) list.push(candidate);
      else candidates.set(candidate.check.port, [candidate]);
    }
  }

  const claims = new ClaimIndex();
  for (const exposure of exposures) claims.add(exposure);
  const entrypoints = exposures.map((exposure) => {
    const error = claims.conflictError(exposure);
    const entrypoint = withError(exposure.entrypoint, error);
    if (error !== undefined) errors.push(entrypointError(entrypoint));
    return entrypoint;
  });
  const healthChecks: HealthCheckService[] = [];
  for (const list of candidates.values()) {
    for (const candidate of list) {
      const error = healthCheckConflict(candidate, claims, list);
      if (error === undefined) healthChecks.push(candidate.check);
      else errors.push(healthCheckError(candidate.check, error));
    }
  }
  healthChecks.sort(compareHealthChecks);
  entrypoints.sort((a, b) => compareKeys(a.key, b.key));
  errors.sort(compareErrors);
  return Object.freeze({
    version,
    entrypoints, // not frozen: see below
    errors: Object.freeze(errors),
    node: nodeInfo(nodeName, ctx.zone),
    healthChecks: healthChecks.length === 0 ? NO_HEALTH_CHECKS : Object.freeze(healthChecks),
  });
}

/**
 * Build the snapshot of what this node serves from all objects, from scratch. Deterministic: the same
 * objects give an equal snapshot whatever their order. Everything in the result is deeply frozen.
 *
 * @throws {ModelOptionsError} when `options` holds an invalid host address or nodePortAddresses CIDR.
 */
export function buildSnapshot(input: ModelInput, options: ModelOptions, version = 0): Snapshot {
  return buildFromPrepared(input, prepareOptions(options), version);
}
