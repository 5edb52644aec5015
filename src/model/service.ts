/**
 * One Service (and its EndpointSlices) -> its entrypoints, before listener conflicts are resolved:
 * {@link computeService}. Pure; shared by the full build (`build.ts`) and the incremental store (`store.ts`).
 *
 * The parts, each in its file:
 * - in-scope.ts: which Services kubegate serves, and whose load balancers it implements;
 * - port-exposure.ts: the NodePort and LoadBalancer entrypoints of a port (addresses, endpoints, affinity,
 *   source ranges, PROXY protocol); external-name.ts: those of an exposed ExternalName Service;
 * - entrypoint.ts: the fields every entrypoint of a Service shares, the protocol of a port, identity reuse;
 * - claims.ts: what each entrypoint claims and its rank (resolved later, conflicts.ts);
 * - service-health.ts: the healthCheckNodePort server the Service asks for.
 *
 * Here: the Service's {@link TrafficPolicy} (`kubegate.io/*` policy annotations: balancer, hash-on, timeouts,
 * limits, retries), one frozen object shared by every entrypoint of the Service and kept from the previous result
 * while it says the same (so routes are not rebuilt); absent when none is set. An invalid value is reported
 * (reason `InvalidAnnotation`) and left out: the gateway default applies. `serviceUid` is `metadata.uid`, for
 * Events about the Service. Every Service error carries a {@link ModelErrorReason} (`InvalidService` unless more
 * is known), for Events.
 */
import type { EndpointSlice, Service } from "../kube/objects.ts";
import { ANNOTATIONS, HASH_BALANCERS, HTTP_ONLY_POLICY_FIELDS, parseServiceAnnotations, policyOf, type ServiceAnnotations } from "./annotations.ts";
import type { Exposure } from "./claims.ts";
import { type SliceInfo, sliceInfo } from "./endpoints.ts";
import { isHttpProtocol, type ServiceCommon } from "./entrypoint.ts";
import { sameRecord, sameTrafficPolicy } from "./equal.ts";
import { exposeExternalName } from "./external-name.ts";
import { inScope } from "./in-scope.ts";
import { exposePorts } from "./port-exposure.ts";
import type { BuildContext } from "./prepared-options.ts";
import { type HealthCandidate, healthCandidate } from "./service-health.ts";
import type { Cluster, Entrypoint, ModelError, ModelErrorReason, TrafficPolicy } from "./types.ts";

/** What one Service contributes to the snapshot. */
export interface ServiceResult {
  /** Sorted by entrypoint key. */
  readonly exposures: readonly Exposure[];
  /** Problems with the Service and its slices. */
  readonly errors: readonly ModelError[];
  /** Its healthCheckNodePort server, when it needs one. */
  readonly healthCheck?: HealthCandidate | undefined;
}

/** A Service that contributes nothing. */
export const EMPTY_RESULT: ServiceResult = Object.freeze({ exposures: Object.freeze([]), errors: Object.freeze([]) });

/**
 * The entrypoints and errors of one Service. `slices` are the Service's EndpointSlices (any order);
 * objects equal to ones in `previous` (the Service's last result) are reused, so an unchanged
 * entrypoint keeps its identity.
 */
export function computeService(
  service: Service,
  slices: Iterable<EndpointSlice>,
  ctx: BuildContext,
  previous?: ServiceResult,
): ServiceResult {
  const { options } = ctx.prepared;
  if (!inScope(service, options)) return EMPTY_RESULT;
  const namespace = service.metadata.namespace;
  const name = service.metadata.name;
  const key = `${namespace}/${name}`;
  const spec = service.spec;
  const errors: ModelError[] = [];
  const report = (message: string, reason: ModelErrorReason = "InvalidService") =>
    errors.push(Object.freeze({ kind: "Service", object: key, message, reason }));
  const reportAnnotation = (message: string) => report(message, "InvalidAnnotation");

  const infos: SliceInfo[] = [];
  for (const slice of slices) {
    const info = sliceInfo(slice);
    if (info) infos.push(info);
  }
  infos.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const info of infos) errors.push(...info.errors);

  const annotationsIn = service.metadata.annotations ?? {};
  const parsed = parseServiceAnnotations(annotationsIn, key, reportAnnotation);

  const prevByKey = new Map<string, Entrypoint>();
  const prevClusters = new Map<string, Cluster>();
  for (const ex of previous?.exposures ?? []) {
    prevByKey.set(ex.entrypoint.key, ex.entrypoint);
    prevClusters.set(ex.entrypoint.cluster.name, ex.entrypoint.cluster);
  }
  const prevAnnotations = previous?.exposures[0]?.entrypoint.annotations;
  const annotations =
    prevAnnotations && sameRecord(prevAnnotations, annotationsIn) ? prevAnnotations : Object.freeze({ ...annotationsIn });
  const created = service.metadata.creationTimestamp ? Date.parse(service.metadata.creationTimestamp) : Number.NaN;
  const uid = service.metadata.uid === undefined || service.metadata.uid === "" ? undefined : service.metadata.uid;
  const common: ServiceCommon = {
    key,
    namespace,
    name,
    annotations,
    parsed,
    policy: servicePolicy(parsed, key, previous?.exposures[0]?.entrypoint.policy, reportAnnotation),
    uid,
    created: Number.isNaN(created) ? Infinity : created,
    prevByKey,
    prevClusters,
    report,
    reportAnnotation,
  };

  const exposures: Exposure[] = [];
  let healthCheck: HealthCandidate | undefined;
  if (spec.type === "ExternalName") {
    exposeExternalName(service, common, ctx, annotationsIn, exposures);
  } else {
    for (const field of ["exposeExternalName", "externalNamePorts"] as const) {
      const annotation = ANNOTATIONS[field].key;
      if (annotationsIn[annotation] !== undefined) {
        reportAnnotation(`Annotation "${annotation}" on Service "${key}" applies to ExternalName Services only: ignored`);
      }
    }
    exposePorts(service, common, ctx, infos, annotationsIn, exposures);
    healthCheck = healthCandidate(service, common, ctx, infos, previous?.healthCheck);
  }
  checkHttpOnly(common, exposures);
  exposures.sort((a, b) => (a.entrypoint.key < b.entrypoint.key ? -1 : a.entrypoint.key > b.entrypoint.key ? 1 : 0));
  if (exposures.length === 0 && errors.length === 0 && healthCheck === undefined) return EMPTY_RESULT;
  return healthCheck === undefined ? { exposures, errors } : { exposures, errors, healthCheck };
}

/**
 * The traffic policy of a Service from its parsed annotations (undefined when none is set), reusing `previous` when
 * it says the same, so unchanged entrypoints keep their identity. A `kubegate.io/hash-on` next to a balancer that
 * does not hash is reported and left out.
 */
function servicePolicy(
  parsed: ServiceAnnotations,
  key: string,
  previous: TrafficPolicy | undefined,
  reportAnnotation: (message: string) => void,
): TrafficPolicy | undefined {
  let omit: ReadonlySet<keyof TrafficPolicy> | undefined;
  if (parsed.hashOn !== undefined && parsed.balancer !== undefined && !HASH_BALANCERS.has(parsed.balancer)) {
    reportAnnotation(
      `Annotation "${ANNOTATIONS.hashOn.key}" on Service "${key}" applies to the ring-hash and maglev balancers only, not "${parsed.balancer}": ignored`,
    );
    omit = HASH_ON_ONLY;
  }
  const fresh = policyOf(parsed, omit);
  return sameTrafficPolicy(fresh, previous) ? previous : fresh;
}

const HASH_ON_ONLY: ReadonlySet<keyof TrafficPolicy> = new Set(["hashOn"]);

/**
 * Tell a Service without HTTP entrypoints that its HTTP-only policy annotations (and a `hash-on` header or cookie)
 * have no effect. Their values stay in the policy: the TCP and UDP proxies do not read them.
 */
function checkHttpOnly(common: ServiceCommon, exposures: readonly Exposure[]): void {
  const { policy, key } = common;
  if (policy === undefined || exposures.length === 0 || exposures.some((e) => isHttpProtocol(e.entrypoint.protocol))) return;
  for (const field of HTTP_ONLY_POLICY_FIELDS) {
    if (policy[field] === undefined) continue;
    const annotation = ANNOTATIONS[field].key;
    common.reportAnnotation(`Annotation "${annotation}" on Service "${key}" applies to HTTP ports only, and the Service has none: no effect`);
  }
  const hashOn = policy.hashOn;
  if (hashOn !== undefined && hashOn.source !== "client-ip") {
    common.reportAnnotation(
      `Annotation "${ANNOTATIONS.hashOn.key}" on Service "${key}" keys on a ${hashOn.source}, which only HTTP ports have, and the Service has none: the client IP is hashed instead`,
    );
  }
}
