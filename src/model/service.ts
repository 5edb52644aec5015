/**
 * One Service (and its EndpointSlices) -> its entrypoints, before listener conflicts are resolved.
 * Pure; shared by the full build (`build.ts`) and the incremental store (`store.ts`).
 *
 * Scope, exposures and protocol selection:
 * - Served: Services labelled `service.kubernetes.io/service-proxy-name: <serviceProxyName>`; with
 *   `allServices`, every Service except those labelled with another proxy name. Never: ClusterIP and headless
 *   (`clusterIP: None`) Services, nor ExternalName Services unless annotated `kubegate.io/expose-external-name: "true"`.
 * - NodePort entrypoint per port with a `nodePort` (types NodePort and LoadBalancer), on the host addresses
 *   selected by `nodePortAddresses` (and limited to the Service's `ipFamilies` when set).
 * - LoadBalancer entrypoint per port of a LoadBalancer Service whose `loadBalancerClass` is unset or
 *   {@link LOAD_BALANCER_CLASS}, on the Service `port` (ServiceLB style): the NodePort addresses plus every
 *   `status.loadBalancer.ingress[].ip` and `spec.externalIPs` entry that is an address of this host (of the
 *   Service's `ipFamilies`, when set). A Service of another load-balancer class keeps its NodePort entrypoints
 *   (that balancer sends traffic to them).
 * - ExternalName (exposed): a NodePort-typed entrypoint per `kubegate.io/external-name-ports` entry, on the node
 *   addresses, with `externalName` set and a cluster without endpoints (see annotations.ts).
 * - Protocol: `udp` for UDP ports; else the `kubegate.io/protocol` annotation (`http` | `tcp`) when set;
 *   else `http` for appProtocol `http` / `kubernetes.io/ws`, `tcp` for anything else. SCTP ports are skipped.
 *
 * Service semantics on every entrypoint:
 * - `externalTrafficPolicy` picks the endpoints (`Cluster.serving`, with `Cluster.selection` saying why: see
 *   endpoints.ts `selectEndpoints`).
 * - `sessionAffinity`: `ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800; outside
 *   1..86400 is an error and the default applies); HTTP entrypoints add the cookie of `kubegate.io/affinity-cookie`.
 *   Undefined when neither applies.
 * - `sourceRanges`: LoadBalancer entrypoints only (kube-proxy filters load-balancer traffic, not node ports), from
 *   `spec.loadBalancerSourceRanges`, canonical CIDRs (a bare IP is taken as /32 or /128). Like kube-proxy, entries
 *   are trimmed and an invalid one is skipped (and reported here); when none is valid, or the list is empty, it is
 *   undefined and nothing is filtered.
 * - `proxyProtocol`: `kubegate.io/proxy-protocol: v2` on TCP entrypoints.
 * - `policy`: the {@link TrafficPolicy} of the `kubegate.io/*` policy annotations (balancer, hash-on, timeouts, limits,
 *   retries), one frozen object shared by every entrypoint of the Service and kept from the previous result while it
 *   says the same (so routes are not rebuilt); absent when none is set. An invalid value is reported (reason
 *   `InvalidAnnotation`) and left out: the gateway default applies.
 * - `serviceUid`: `metadata.uid`, for Events about the Service.
 * - `--max-endpoints-per-service` (`maxEndpointsPerService`): a port with more endpoints is reported (reason
 *   `TooManyEndpoints`) and only the first that-many of its serving endpoints (sorted by address) serve.
 *
 * Every Service error carries a {@link ModelErrorReason} (`InvalidService` unless more is known), for Events.
 *
 * Health check (kube-proxy's `NeedsHealthCheck`): a LoadBalancer Service (of any class) with externalTrafficPolicy
 * Local and a `healthCheckNodePort` gets a {@link HealthCandidate}; listener conflicts decide if it is served
 * (health.ts).
 */
import type { EndpointSlice, Node, Service, ServicePort } from "../kube/objects.ts";
import {
  ANNOTATIONS,
  EXPOSE_EXTERNAL_NAME_ANNOTATION,
  type ExternalNamePort,
  HASH_BALANCERS,
  HTTP_ONLY_POLICY_FIELDS,
  parseServiceAnnotations,
  policyOf,
  samePolicy,
  type ServiceAnnotations,
} from "./annotations.ts";
import {
  countLocalReady,
  mergeEndpoints,
  sameEndpoints,
  sameSelection,
  selectEndpoints,
  type SliceInfo,
  sliceInfo,
  ZONE_LABEL,
} from "./endpoints.ts";
import { cidrContains, formatCidr, formatIP, type IPFamily, ipSortKey, type ParsedCidr, parseCidr, parseIP } from "./net.ts";
import type {
  Cluster,
  Endpoint,
  Entrypoint,
  EntrypointProtocol,
  EntrypointType,
  ExternalTarget,
  HealthCheckService,
  ModelError,
  ModelErrorReason,
  ModelOptions,
  SessionAffinity,
  TrafficPolicy,
} from "./types.ts";

export { PROTOCOL_ANNOTATION } from "./annotations.ts";

/** The `spec.loadBalancerClass` kubegate implements (besides an unset class). */
export const LOAD_BALANCER_CLASS = "kubegate.io/lb";
/** The label that assigns a Service to an alternative service proxy. */
export const SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name";
/** sessionAffinityConfig.clientIP.timeoutSeconds when unset (Kubernetes' default). */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10_800;
/** The largest valid sessionAffinityConfig.clientIP.timeoutSeconds (one day). */
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86_400;

/** Options that cannot be used (not an IP, not a CIDR). */
export class ModelOptionsError extends Error {
  override name = "ModelOptionsError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A host address, parsed once. */
interface HostAddress {
  readonly address: string;
  readonly family: IPFamily;
  readonly sortKey: string;
}

/** {@link ModelOptions}, validated and parsed once. */
export interface PreparedOptions {
  readonly options: ModelOptions;
  /** Canonical host addresses. */
  readonly hostAddresses: ReadonlySet<string>;
  /** The host addresses selected by `nodePortAddresses`, sorted (IPv4 first). */
  readonly nodePortAddresses: readonly HostAddress[];
  /** Frozen address lists by family filter: "46", "4", "6". */
  readonly nodePortLists: ReadonlyMap<string, readonly string[]>;
}

/**
 * Validate and parse the model options.
 *
 * @throws {ModelOptionsError} when a host address or a `nodePortAddresses` entry is invalid.
 */
export function prepareOptions(options: ModelOptions): PreparedOptions {
  const cidrs: ParsedCidr[] = options.nodePortAddresses.map((text) => {
    const cidr = parseCidr(text);
    if (!cidr) throw new ModelOptionsError(`Invalid nodePortAddresses entry "${text}": expected a CIDR such as "10.0.0.0/8"`);
    return cidr;
  });
  const hosts = new Map<string, HostAddress>();
  for (const text of options.hostAddresses) {
    const ip = parseIP(text);
    if (!ip) throw new ModelOptionsError(`Invalid host address "${text}": expected an IPv4 or IPv6 address`);
    const address = formatIP(ip);
    hosts.set(address, { address, family: ip.family, sortKey: ipSortKey(ip) });
  }
  const sorted = [...hosts.values()].sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
  const nodePortAddresses =
    cidrs.length === 0
      ? sorted
      : sorted.filter((h) => {
          const ip = parseIP(h.address) as NonNullable<ReturnType<typeof parseIP>>;
          return cidrs.some((c) => cidrContains(c, ip));
        });
  const list = (keep: (h: HostAddress) => boolean) => Object.freeze(nodePortAddresses.filter(keep).map((h) => h.address));
  const nodePortLists = new Map<string, readonly string[]>([
    ["46", list(() => true)],
    ["4", list((h) => h.family === 4)],
    ["6", list((h) => h.family === 6)],
  ]);
  return { options, hostAddresses: new Set(hosts.keys()), nodePortAddresses, nodePortLists };
}

/** Everything a Service's build depends on besides its own objects. */
export interface BuildContext {
  readonly prepared: PreparedOptions;
  readonly nodeName: string;
  /** This node's zone, from its Node object; undefined when unknown. */
  readonly zone: string | undefined;
}

/** The zone of a Node (`topology.kubernetes.io/zone`), if any. */
export function nodeZone(node: Node | undefined): string | undefined {
  return node?.metadata.labels?.[ZONE_LABEL];
}

/** The key a Service is known by: `namespace/name`. */
export function serviceKey(service: Service): string {
  return `${service.metadata.namespace}/${service.metadata.name}`;
}

/**
 * Whether kubegate serves this Service at all (scope by proxy name label and type). An ExternalName Service is in
 * scope when it carries the `kubegate.io/expose-external-name` annotation (its value is checked by computeService).
 */
export function inScope(service: Service, options: Pick<ModelOptions, "serviceProxyName" | "allServices">): boolean {
  const label = service.metadata.labels?.[SERVICE_PROXY_NAME_LABEL];
  if (options.allServices ? label !== undefined && label !== options.serviceProxyName : label !== options.serviceProxyName) {
    return false;
  }
  const { type, clusterIP } = service.spec;
  if (type === "ExternalName") return service.metadata.annotations?.[EXPOSE_EXTERNAL_NAME_ANNOTATION] !== undefined;
  if (type !== "NodePort" && type !== "LoadBalancer") return false;
  return clusterIP !== "None";
}

/**
 * Priority of a listener claim: the older Service wins (creationTimestamp, then `namespace/name`); within
 * one Service, NodePort before LoadBalancer (node ports are allocated cluster-wide by the API server), then
 * the order of `spec.ports`.
 */
export interface Rank {
  /** creationTimestamp in ms since the epoch; `Infinity` when missing or unparsable (newest). */
  readonly created: number;
  readonly service: string;
  readonly type: 0 | 1;
  readonly index: number;
}

/** Orders ranks: negative when `a` wins over `b`. */
export function compareRank(a: Rank, b: Rank): number {
  if (a.created !== b.created) return a.created < b.created ? -1 : 1;
  if (a.service !== b.service) return a.service < b.service ? -1 : 1;
  if (a.type !== b.type) return a.type - b.type;
  return a.index - b.index;
}

/**
 * The port and transport an entrypoint claims on each of its addresses, as one number: `port * 2`, plus 1
 * for UDP. Two entrypoints conflict when they share an address and this number.
 */
export function claimPort(port: number, protocol: EntrypointProtocol): number {
  return port * 2 + (protocol === "udp" ? 1 : 0);
}

/** One entrypoint of a Service with what it claims, before conflicts are resolved. */
export interface Exposure {
  /** The entrypoint without a conflict error; it claims {@link claimPort} on each of its addresses. */
  readonly entrypoint: Entrypoint;
  readonly rank: Rank;
  readonly claimPort: number;
}

/** A healthCheckNodePort server a Service asks for, before conflicts with listeners are resolved (health.ts). */
export interface HealthCandidate {
  readonly check: HealthCheckService;
  /** Who wins when two health checks want the same port (older Service first). */
  readonly rank: Rank;
}

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

const TYPE_RANK: Record<EntrypointType, 0 | 1> = { NodePort: 0, LoadBalancer: 1 };

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameRecord(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  if (a === b) return true;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (a[k] !== b[k]) return false;
  return true;
}

function sameOptionalStrings(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === b) return true;
  return a !== undefined && b !== undefined && sameStrings(a, b);
}

function sameAffinity(a: SessionAffinity | undefined, b: SessionAffinity | undefined): boolean {
  if (a === b) return true;
  if (!a || !b || a.mode !== b.mode || a.timeoutSeconds !== b.timeoutSeconds) return false;
  return a.cookie === b.cookie || (!!a.cookie && !!b.cookie && a.cookie.name === b.cookie.name && a.cookie.ttlSeconds === b.cookie.ttlSeconds);
}

function sameTarget(a: ExternalTarget | undefined, b: ExternalTarget | undefined): boolean {
  if (a === b) return true;
  return !!a && !!b && a.hostname === b.hostname && a.port === b.port;
}

function sameEntrypoint(a: Entrypoint, b: Entrypoint): boolean {
  return (
    a.key === b.key &&
    a.proxyProtocol === b.proxyProtocol &&
    sameAffinity(a.sessionAffinity, b.sessionAffinity) &&
    sameOptionalStrings(a.sourceRanges, b.sourceRanges) &&
    sameTarget(a.externalName, b.externalName) &&
    a.name === b.name &&
    a.protocol === b.protocol &&
    a.port === b.port &&
    a.cluster === b.cluster &&
    a.externalTrafficPolicy === b.externalTrafficPolicy &&
    a.annotations === b.annotations &&
    a.namespace === b.namespace &&
    a.service === b.service &&
    a.type === b.type &&
    a.error === b.error &&
    a.policy === b.policy &&
    a.serviceUid === b.serviceUid &&
    sameStrings(a.addresses, b.addresses)
  );
}

function protocolFor(sp: ServicePort, forced: "http" | "tcp" | undefined): EntrypointProtocol {
  if (sp.protocol === "UDP") return "udp";
  if (forced) return forced;
  const app = sp.appProtocol?.toLowerCase();
  return app === "http" || app === "kubernetes.io/ws" ? "http" : "tcp";
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const EMPTY_ENDPOINTS: readonly Cluster["endpoints"][number][] = Object.freeze([]);

/** `spec.externalName` as the API server validates it: an RFC 1123 subdomain, optionally with a trailing dot. */
const DNS_NAME = /^(?=.{1,253}\.?$)[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*\.?$/;

/** Parses `spec.externalIPs` / ingress IPs and keeps the local ones (of `families`, when given). */
function localAddresses(
  texts: readonly string[],
  what: string,
  hosts: ReadonlySet<string>,
  families: ReadonlySet<IPFamily> | undefined,
  report: (message: string) => void,
): { address: string; sortKey: string }[] {
  const out: { address: string; sortKey: string }[] = [];
  for (const text of texts) {
    const ip = parseIP(text);
    if (!ip || ip.zone !== undefined) {
      report(`${what} "${text}" is not an IP address: ignored`);
      continue;
    }
    if (families && !families.has(ip.family)) continue;
    const address = formatIP(ip);
    if (hosts.has(address)) out.push({ address, sortKey: ipSortKey(ip) });
  }
  return out;
}

/** sessionAffinityConfig.clientIP.timeoutSeconds, validated (1..86400), else the default. */
function affinityTimeout(service: Service, report: (message: string) => void): number {
  const seconds = service.spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
  if (seconds === undefined) return DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_AFFINITY_TIMEOUT_SECONDS) {
    report(
      `sessionAffinityConfig.clientIP.timeoutSeconds ${seconds} is out of range: expected 1 to ${MAX_AFFINITY_TIMEOUT_SECONDS}; using ${DEFAULT_AFFINITY_TIMEOUT_SECONDS}`,
    );
    return DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  }
  return seconds;
}

/**
 * `spec.loadBalancerSourceRanges` as canonical CIDRs (deduplicated, in order), or undefined when there is none to
 * enforce. Like kube-proxy: each entry is trimmed, an invalid one is skipped; kubegate also takes a bare IP as a
 * /32 or /128 and reports what it skipped.
 */
function sourceRangesOf(texts: readonly string[] | undefined, report: (message: string) => void): readonly string[] | undefined {
  if (!texts || texts.length === 0) return undefined;
  const out: string[] = [];
  for (const raw of texts) {
    const text = raw.trim();
    let cidr: ParsedCidr | undefined;
    if (text.includes("/")) cidr = parseCidr(text);
    else {
      const ip = parseIP(text);
      if (ip && ip.zone === undefined) cidr = { family: ip.family, bytes: ip.bytes, prefix: ip.family === 4 ? 32 : 128 };
    }
    if (!cidr) {
      report(`loadBalancerSourceRanges entry "${raw}" is not a CIDR: ignored`);
      continue;
    }
    const canonical = formatCidr(cidr);
    if (!out.includes(canonical)) out.push(canonical);
  }
  if (out.length === 0) {
    report("loadBalancerSourceRanges has no valid entry: LoadBalancer traffic is not filtered (as kube-proxy does)");
    return undefined;
  }
  return Object.freeze(out);
}

function sameCheck(a: HealthCheckService, b: HealthCheckService): boolean {
  return (
    a.namespace === b.namespace &&
    a.name === b.name &&
    a.port === b.port &&
    a.localEndpoints === b.localEndpoints &&
    sameStrings(a.addresses, b.addresses)
  );
}

/**
 * `serving` capped at `limit` (`--max-endpoints-per-service`) when the port has more than `limit` endpoints, which is
 * reported; `serving` itself otherwise. The first `limit` serving endpoints in sorted order (by address) are kept.
 */
function limitServing(
  endpoints: readonly Endpoint[],
  serving: readonly Endpoint[],
  limit: number | undefined,
  portLabel: string,
  report: ServiceScope["report"],
): readonly Endpoint[] {
  if (limit === undefined || limit <= 0 || endpoints.length <= limit) return serving;
  report(
    `Port "${portLabel}" has ${endpoints.length} endpoints, more than the limit of ${limit} (--max-endpoints-per-service): only the first ${limit} serving endpoints (by address) receive traffic`,
    "TooManyEndpoints",
  );
  return serving.length <= limit ? serving : Object.freeze(serving.slice(0, limit));
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
  return samePolicy(fresh, previous) ? previous : fresh;
}

const HASH_ON_ONLY: ReadonlySet<keyof TrafficPolicy> = new Set(["hashOn"]);

/**
 * Tell a Service without HTTP entrypoints that its HTTP-only policy annotations (and a `hash-on` header or cookie)
 * have no effect. Their values stay in the policy: the TCP and UDP proxies do not read them.
 */
function checkHttpOnly(scope: ServiceScope, exposures: readonly Exposure[]): void {
  const { policy, key } = scope;
  if (policy === undefined || exposures.length === 0 || exposures.some((e) => e.entrypoint.protocol === "http")) return;
  for (const field of HTTP_ONLY_POLICY_FIELDS) {
    if (policy[field] === undefined) continue;
    const annotation = ANNOTATIONS[field].key;
    scope.reportAnnotation(`Annotation "${annotation}" on Service "${key}" applies to HTTP ports only, and the Service has none: no effect`);
  }
  const hashOn = policy.hashOn;
  if (hashOn !== undefined && hashOn.source !== "client-ip") {
    scope.reportAnnotation(
      `Annotation "${ANNOTATIONS.hashOn.key}" on Service "${key}" keys on a ${hashOn.source}, which only HTTP ports have, and the Service has none: the client IP is hashed instead`,
    );
  }
}

/** The entrypoint to publish: `previous` when it equals `fresh`, else `fresh` frozen. */
function reuseEntrypoint(fresh: Entrypoint, previous: Entrypoint | undefined): Entrypoint {
  return previous && sameEntrypoint(previous, fresh) ? previous : Object.freeze(fresh);
}

/** The per-Service values every entrypoint of it shares. */
interface ServiceScope {
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
  readonly prevByKey: ReadonlyMap<string, Entrypoint>;
  readonly prevClusters: ReadonlyMap<string, Cluster>;
  /** Report a problem with the Service (reason `InvalidService` unless given). */
  readonly report: (message: string, reason?: ModelErrorReason) => void;
  /** Report a problem with an annotation (reason `InvalidAnnotation`). */
  readonly reportAnnotation: (message: string) => void;
}

/** The fields every entrypoint of a Service shares besides name, port and cluster. */
function shared(fresh: Mutable<Entrypoint>, scope: ServiceScope): Mutable<Entrypoint> {
  if (scope.policy !== undefined) fresh.policy = scope.policy;
  if (scope.uid !== undefined) fresh.serviceUid = scope.uid;
  return fresh;
}

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
  const scope: ServiceScope = {
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
    exposeExternalName(service, scope, ctx, annotationsIn, exposures);
  } else {
    for (const field of ["exposeExternalName", "externalNamePorts"] as const) {
      const annotation = ANNOTATIONS[field].key;
      if (annotationsIn[annotation] !== undefined) {
        reportAnnotation(`Annotation "${annotation}" on Service "${key}" applies to ExternalName Services only: ignored`);
      }
    }
    healthCheck = exposePorts(service, scope, ctx, infos, annotationsIn, exposures, previous?.healthCheck);
  }
  checkHttpOnly(scope, exposures);
  exposures.sort((a, b) => (a.entrypoint.key < b.entrypoint.key ? -1 : a.entrypoint.key > b.entrypoint.key ? 1 : 0));
  if (exposures.length === 0 && errors.length === 0 && healthCheck === undefined) return EMPTY_RESULT;
  return healthCheck === undefined ? { exposures, errors } : { exposures, errors, healthCheck };
}

/** The NodePort and LoadBalancer entrypoints of a NodePort/LoadBalancer Service; returns its health check. */
function exposePorts(
  service: Service,
  scope: ServiceScope,
  ctx: BuildContext,
  infos: readonly SliceInfo[],
  annotationsIn: Readonly<Record<string, string>>,
  exposures: Exposure[],
  previousHealth: HealthCandidate | undefined,
): HealthCandidate | undefined {
  const { key, namespace, name, annotations, parsed, report, reportAnnotation } = scope;
  const spec = service.spec;

  const families = spec.ipFamilies && spec.ipFamilies.length > 0 ? spec.ipFamilies : undefined;
  const familyKey = families ? `${families.includes("IPv4") ? "4" : ""}${families.includes("IPv6") ? "6" : ""}` : "46";
  const familySet = families ? new Set<IPFamily>(families.map((f) => (f === "IPv4" ? 4 : 6))) : undefined;
  const nodePortList = ctx.prepared.nodePortLists.get(familyKey) ?? Object.freeze([]);

  const isLoadBalancer = spec.type === "LoadBalancer";
  const lbClass = spec.loadBalancerClass;
  const unclassed = lbClass === undefined || lbClass === "";
  const ourLoadBalancer =
    isLoadBalancer && (unclassed ? ctx.prepared.options.claimUnclassedLoadBalancers !== false : lbClass === LOAD_BALANCER_CLASS);
  let lbList: readonly string[] = nodePortList;
  let sourceRanges: readonly string[] | undefined;
  if (ourLoadBalancer) {
    const extra = [
      ...localAddresses(
        (service.status?.loadBalancer?.ingress ?? []).flatMap((i) => (i.ip === undefined || i.ip === "" ? [] : [i.ip])),
        "Load balancer ingress IP",
        ctx.prepared.hostAddresses,
        familySet,
        report,
      ),
      ...localAddresses(spec.externalIPs ?? [], "External IP", ctx.prepared.hostAddresses, familySet, report),
    ];
    if (extra.length > 0) {
      const merged = new Map<string, string>();
      for (const h of ctx.prepared.nodePortAddresses) if (nodePortList.includes(h.address)) merged.set(h.address, h.sortKey);
      for (const e of extra) merged.set(e.address, e.sortKey);
      lbList = Object.freeze(
        [...merged.entries()].sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)).map(([address]) => address),
      );
    }
    sourceRanges = sourceRangesOf(spec.loadBalancerSourceRanges, report);
  }

  /* session affinity: ClientIP from the spec; HTTP entrypoints add the cookie annotation */
  const clientIP = spec.sessionAffinity === "ClientIP";
  const timeoutSeconds = clientIP ? affinityTimeout(service, report) : DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  const affinity: SessionAffinity | undefined = clientIP ? Object.freeze({ mode: "ClientIP", timeoutSeconds }) : undefined;
  let httpAffinity = affinity;
  if (parsed.affinityCookie !== undefined) {
    const cookie = Object.freeze({ name: parsed.affinityCookie, ttlSeconds: parsed.affinityCookieTtl ?? timeoutSeconds });
    httpAffinity = Object.freeze({ mode: clientIP ? "ClientIP" : "None", timeoutSeconds, cookie });
  } else if (parsed.affinityCookieTtl !== undefined && annotationsIn[ANNOTATIONS.affinityCookie.key] === undefined) {
    reportAnnotation(
      `Annotation "${ANNOTATIONS.affinityCookieTtl.key}" on Service "${key}" has no effect without "${ANNOTATIONS.affinityCookie.key}": ignored`,
    );
  }

  const policy = spec.externalTrafficPolicy ?? "Cluster";
  const seenNames = new Set<string>();
  spec.ports.forEach((sp, index) => {
    const portLabel = sp.name ? sp.name : String(sp.port);
    if (sp.protocol === "SCTP") {
      report(`Port "${portLabel}" uses protocol "SCTP", which kubegate does not support: skipped`);
      return;
    }
    const epName = `${key}:${portLabel}`;
    if (seenNames.has(epName)) {
      report(`Port "${portLabel}" is defined twice: skipped the second one`);
      return;
    }
    seenNames.add(epName);
    const protocol = protocolFor(sp, parsed.protocol);
    if (parsed.affinityCookie !== undefined && protocol !== "http") {
      reportAnnotation(`Annotation "${ANNOTATIONS.affinityCookie.key}" on Service "${key}" applies to HTTP ports only: ignored on ${protocol} port "${portLabel}"`);
    }
    if (parsed.proxyProtocol !== undefined && protocol !== "tcp") {
      reportAnnotation(`Annotation "${ANNOTATIONS.proxyProtocol.key}" on Service "${key}" applies to TCP ports only: ignored on ${protocol} port "${portLabel}"`);
    }
    let cluster: Cluster | undefined;
    const clusterFor = (): Cluster => {
      if (cluster) return cluster;
      const old = scope.prevClusters.get(epName);
      const endpoints = mergeEndpoints(sp, infos, ctx.nodeName, old?.endpoints);
      const chosen = selectEndpoints(endpoints, { nodeName: ctx.nodeName, zone: ctx.zone, policy, trafficDistribution: spec.trafficDistribution });
      const limited = limitServing(endpoints, chosen.serving, ctx.prepared.options.maxEndpointsPerService, portLabel, report);
      const serving = old && sameEndpoints(old.serving, limited) ? old.serving : limited;
      const selection = old && sameSelection(old.selection, chosen.selection) ? old.selection : chosen.selection;
      cluster =
        old && old.endpoints === endpoints && old.serving === serving && old.selection === selection
          ? old
          : Object.freeze({ name: epName, endpoints, serving, selection });
      return cluster;
    };
    const add = (type: EntrypointType, addresses: readonly string[], port: number) => {
      const epKey = `${type}/${epName}`;
      const fresh: Mutable<Entrypoint> = shared(
        {
          name: epName,
          key: epKey,
          type,
          protocol,
          namespace,
          service: name,
          addresses,
          port,
          cluster: clusterFor(),
          externalTrafficPolicy: policy,
          annotations,
        },
        scope,
      );
      const stick = protocol === "http" ? httpAffinity : affinity;
      if (stick !== undefined) fresh.sessionAffinity = stick;
      if (type === "LoadBalancer" && sourceRanges !== undefined) fresh.sourceRanges = sourceRanges;
      if (protocol === "tcp" && parsed.proxyProtocol !== undefined) fresh.proxyProtocol = parsed.proxyProtocol;
      exposures.push({
        entrypoint: reuseEntrypoint(fresh, scope.prevByKey.get(epKey)),
        rank: { created: scope.created, service: key, type: TYPE_RANK[type], index },
        claimPort: claimPort(port, protocol),
      });
    };
    if (sp.nodePort !== undefined && sp.nodePort > 0) add("NodePort", nodePortList, sp.nodePort);
    else if (spec.type === "NodePort") report(`Port "${portLabel}" has no nodePort: skipped`);
    if (ourLoadBalancer) add("LoadBalancer", lbList, sp.port);
  });

  /* kube-proxy's NeedsHealthCheck: type LoadBalancer (any class) with externalTrafficPolicy Local */
  if (!isLoadBalancer || policy !== "Local") return undefined;
  const port = spec.healthCheckNodePort;
  if (port === undefined || port === 0) {
    report("externalTrafficPolicy is Local but healthCheckNodePort is not set: no health check is served");
    return undefined;
  }
  const check: HealthCheckService = { namespace, name, port, addresses: nodePortList, localEndpoints: countLocalReady(infos, ctx.nodeName) };
  const rank: Rank = { created: scope.created, service: key, type: 0, index: 0 };
  if (previousHealth && sameCheck(previousHealth.check, check) && compareRank(previousHealth.rank, rank) === 0) return previousHealth;
  return Object.freeze({ check: Object.freeze(check), rank: Object.freeze(rank) });
}

/** The entrypoints of an ExternalName Service exposed with `kubegate.io/expose-external-name: "true"`. */
function exposeExternalName(
  service: Service,
  scope: ServiceScope,
  ctx: BuildContext,
  annotationsIn: Readonly<Record<string, string>>,
  exposures: Exposure[],
): void {
  const { key, namespace, name, annotations, parsed, report, reportAnnotation } = scope;
  if (parsed.exposeExternalName !== true) return;
  const spec = service.spec;
  const hostname = spec.externalName ?? "";
  const portsKey = ANNOTATIONS.externalNamePorts.key;
  if (!DNS_NAME.test(hostname)) {
    report(`spec.externalName "${hostname}" is not a DNS name: not served`);
    return;
  }
  if (annotationsIn[portsKey] === undefined) {
    reportAnnotation(`ExternalName Service "${key}" is exposed but has no "${portsKey}" annotation to say where to listen: not served`);
    return;
  }
  const entries: readonly ExternalNamePort[] = parsed.externalNamePorts ?? [];
  const addresses = ctx.prepared.nodePortLists.get("46") ?? Object.freeze([]);
  const seen = new Set<string>();
  for (const entry of entries) {
    const ref = entry.servicePort;
    let index: number;
    if (ref === undefined) {
      if (spec.ports.length !== 1) {
        reportAnnotation(
          `Annotation "${portsKey}" on Service "${key}" gives listen port ${entry.listen} without a Service port, but the Service has ${spec.ports.length} ports: ignored`,
        );
        continue;
      }
      index = 0;
    } else {
      index = spec.ports.findIndex((p) => (typeof ref === "number" ? p.port === ref : p.name === ref));
      if (index === -1) {
        reportAnnotation(`Annotation "${portsKey}" on Service "${key}" names Service port "${ref}", which the Service does not have: ignored`);
        continue;
      }
    }
    const sp = spec.ports[index] as ServicePort;
    const portLabel = sp.name ? sp.name : String(sp.port);
    if (sp.protocol === "SCTP") {
      report(`Port "${portLabel}" uses protocol "SCTP", which kubegate does not support: skipped`);
      continue;
    }
    const epName = `${key}:${portLabel}`;
    if (seen.has(epName)) {
      reportAnnotation(`Annotation "${portsKey}" on Service "${key}" lists Service port "${portLabel}" twice: skipped the second one`);
      continue;
    }
    seen.add(epName);
    const protocol = protocolFor(sp, parsed.protocol);
    if (parsed.proxyProtocol !== undefined && protocol !== "tcp") {
      reportAnnotation(`Annotation "${ANNOTATIONS.proxyProtocol.key}" on Service "${key}" applies to TCP ports only: ignored on ${protocol} port "${portLabel}"`);
    }
    const old = scope.prevClusters.get(epName);
    const cluster: Cluster =
      old && old.endpoints.length === 0 && old.serving.length === 0 && old.selection === undefined
        ? old
        : Object.freeze({ name: epName, endpoints: EMPTY_ENDPOINTS, serving: EMPTY_ENDPOINTS });
    const externalName: ExternalTarget = Object.freeze({ hostname, port: typeof sp.targetPort === "number" ? sp.targetPort : sp.port });
    const epKey = `NodePort/${epName}`;
    const fresh: Mutable<Entrypoint> = shared(
      {
        name: epName,
        key: epKey,
        type: "NodePort",
        protocol,
        namespace,
        service: name,
        addresses,
        port: entry.listen,
        cluster,
        externalTrafficPolicy: "Cluster",
        annotations,
        externalName,
      },
      scope,
    );
    if (protocol === "tcp" && parsed.proxyProtocol !== undefined) fresh.proxyProtocol = parsed.proxyProtocol;
    exposures.push({
      entrypoint: reuseEntrypoint(fresh, scope.prevByKey.get(epKey)),
      rank: { created: scope.created, service: key, type: 0, index },
      claimPort: claimPort(entry.listen, protocol),
    });
  }
}
