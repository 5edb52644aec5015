/**
 * One Service (and its EndpointSlices) -> its entrypoints, before listener conflicts are resolved.
 * Pure; shared by the full build (`build.ts`) and the incremental store (`store.ts`).
 *
 * Scope, exposures and protocol selection:
 * - Served: Services labelled `service.kubernetes.io/service-proxy-name: <serviceProxyName>`; with
 *   `allServices`, every Service except those labelled with another proxy name. Never: ClusterIP,
 *   ExternalName and headless (`clusterIP: None`) Services.
 * - NodePort entrypoint per port with a `nodePort` (types NodePort and LoadBalancer), on the host addresses
 *   selected by `nodePortAddresses` (and limited to the Service's `ipFamilies` when set).
 * - LoadBalancer entrypoint per port of a LoadBalancer Service whose `loadBalancerClass` is unset or
 *   {@link LOAD_BALANCER_CLASS}, on the Service `port` (ServiceLB style): the NodePort addresses plus every
 *   `status.loadBalancer.ingress[].ip` and `spec.externalIPs` entry that is an address of this host.
 *   A Service of another load-balancer class keeps its NodePort entrypoints (that balancer sends traffic to them).
 * - Protocol: `udp` for UDP ports; else the `kubegate.io/protocol` annotation (`http` | `tcp`) when set;
 *   else `http` for appProtocol `http` / `kubernetes.io/ws`, `tcp` for anything else. SCTP ports are skipped.
 */
import type { EndpointSlice, Node, Service, ServicePort } from "../kube/objects.ts";
import { categorize, mergeEndpoints, sameEndpoints, type SliceInfo, sliceInfo, ZONE_LABEL } from "./endpoints.ts";
import { cidrContains, formatIP, type IPFamily, ipSortKey, type ParsedCidr, parseCidr, parseIP } from "./net.ts";
import type { Cluster, Entrypoint, EntrypointProtocol, EntrypointType, ModelError, ModelOptions } from "./types.ts";

/** The `spec.loadBalancerClass` kubegate implements (besides an unset class). */
export const LOAD_BALANCER_CLASS = "kubegate.io/lb";
/** The label that assigns a Service to an alternative service proxy. */
export const SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name";
/** Service annotation forcing the protocol of its TCP ports: `http` or `tcp`. */
export const PROTOCOL_ANNOTATION = "kubegate.io/protocol";

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

/** Whether kubegate serves this Service at all (scope by proxy name label and type). */
export function inScope(service: Service, options: Pick<ModelOptions, "serviceProxyName" | "allServices">): boolean {
  const label = service.metadata.labels?.[SERVICE_PROXY_NAME_LABEL];
  if (options.allServices ? label !== undefined && label !== options.serviceProxyName : label !== options.serviceProxyName) {
    return false;
  }
  const { type, clusterIP } = service.spec;
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

/** What one Service contributes to the snapshot. */
export interface ServiceResult {
  /** Sorted by entrypoint key. */
  readonly exposures: readonly Exposure[];
  /** Problems with the Service and its slices. */
  readonly errors: readonly ModelError[];
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

function sameEntrypoint(a: Entrypoint, b: Entrypoint): boolean {
  return (
    a.key === b.key &&
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
    sameStrings(a.addresses, b.addresses)
  );
}

function protocolFor(sp: ServicePort, forced: "http" | "tcp" | undefined): EntrypointProtocol {
  if (sp.protocol === "UDP") return "udp";
  if (forced) return forced;
  const app = sp.appProtocol?.toLowerCase();
  return app === "http" || app === "kubernetes.io/ws" ? "http" : "tcp";
}

/** Parses `spec.externalIPs` / ingress IPs and keeps the local ones. */
function localAddresses(
  texts: readonly string[],
  what: string,
  hosts: ReadonlySet<string>,
  report: (message: string) => void,
): { address: string; sortKey: string }[] {
  const out: { address: string; sortKey: string }[] = [];
  for (const text of texts) {
    const ip = parseIP(text);
    if (!ip || ip.zone !== undefined) {
      report(`${what} "${text}" is not an IP address: ignored`);
      continue;
    }
    const address = formatIP(ip);
    if (hosts.has(address)) out.push({ address, sortKey: ipSortKey(ip) });
  }
  return out;
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
  const report = (message: string) => errors.push(Object.freeze({ kind: "Service", object: key, message }));

  const infos: SliceInfo[] = [];
  for (const slice of slices) {
    const info = sliceInfo(slice);
    if (info) infos.push(info);
  }
  infos.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const info of infos) errors.push(...info.errors);

  const annotationsIn = service.metadata.annotations ?? {};
  let forced: "http" | "tcp" | undefined;
  const forcedText = annotationsIn[PROTOCOL_ANNOTATION];
  if (forcedText === "http" || forcedText === "tcp") forced = forcedText;
  else if (forcedText !== undefined) {
    report(`Annotation "${PROTOCOL_ANNOTATION}" has invalid value "${forcedText}": expected "http" or "tcp"; using the default`);
  }

  const prevByKey = new Map<string, Entrypoint>();
  const prevClusters = new Map<string, Cluster>();
  for (const ex of previous?.exposures ?? []) {
    prevByKey.set(ex.entrypoint.key, ex.entrypoint);
    prevClusters.set(ex.entrypoint.cluster.name, ex.entrypoint.cluster);
  }
  const prevAnnotations = previous?.exposures[0]?.entrypoint.annotations;
  const annotations =
    prevAnnotations && sameRecord(prevAnnotations, annotationsIn) ? prevAnnotations : Object.freeze({ ...annotationsIn });

  const families = spec.ipFamilies && spec.ipFamilies.length > 0 ? spec.ipFamilies : undefined;
  const familyKey = families ? `${families.includes("IPv4") ? "4" : ""}${families.includes("IPv6") ? "6" : ""}` : "46";
  const nodePortList = ctx.prepared.nodePortLists.get(familyKey) ?? Object.freeze([]);

  const isLoadBalancer = spec.type === "LoadBalancer";
  const lbClass = spec.loadBalancerClass;
  const ourLoadBalancer = isLoadBalancer && (lbClass === undefined || lbClass === "" || lbClass === LOAD_BALANCER_CLASS);
  let lbList: readonly string[] = nodePortList;
  if (ourLoadBalancer) {
    const extra = [
      ...localAddresses(
        (service.status?.loadBalancer?.ingress ?? []).flatMap((i) => (i.ip === undefined || i.ip === "" ? [] : [i.ip])),
        "Load balancer ingress IP",
        ctx.prepared.hostAddresses,
        report,
      ),
      ...localAddresses(spec.externalIPs ?? [], "External IP", ctx.prepared.hostAddresses, report),
    ];
    if (extra.length > 0) {
      const merged = new Map<string, string>();
      for (const h of ctx.prepared.nodePortAddresses) if (nodePortList.includes(h.address)) merged.set(h.address, h.sortKey);
      for (const e of extra) merged.set(e.address, e.sortKey);
      lbList = Object.freeze(
        [...merged.entries()].sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)).map(([address]) => address),
      );
    }
  }

  const policy = spec.externalTrafficPolicy ?? "Cluster";
  const created = service.metadata.creationTimestamp ? Date.parse(service.metadata.creationTimestamp) : Number.NaN;
  const exposures: Exposure[] = [];
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
    const protocol = protocolFor(sp, forced);
    let cluster: Cluster | undefined;
    const clusterFor = (): Cluster => {
      if (cluster) return cluster;
      const old = prevClusters.get(epName);
      const endpoints = mergeEndpoints(sp, infos, ctx.nodeName, old?.endpoints);
      let serving = categorize(endpoints, { nodeName: ctx.nodeName, zone: ctx.zone, policy });
      if (old && sameEndpoints(old.serving, serving)) serving = old.serving;
      cluster =
        old && old.endpoints === endpoints && old.serving === serving
          ? old
          : Object.freeze({ name: epName, endpoints, serving });
      return cluster;
    };
    const add = (type: EntrypointType, addresses: readonly string[], port: number) => {
      const epKey = `${type}/${epName}`;
      const fresh: Entrypoint = {
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
      };
      const old = prevByKey.get(epKey);
      const entrypoint = old && sameEntrypoint(old, fresh) ? old : Object.freeze(fresh);
      exposures.push({
        entrypoint,
        rank: { created: Number.isNaN(created) ? Infinity : created, service: key, type: TYPE_RANK[type], index },
        claimPort: claimPort(port, protocol),
      });
    };
    if (sp.nodePort !== undefined && sp.nodePort > 0) add("NodePort", nodePortList, sp.nodePort);
    else if (spec.type === "NodePort") report(`Port "${portLabel}" has no nodePort: skipped`);
    if (ourLoadBalancer) add("LoadBalancer", lbList, sp.port);
  });
  exposures.sort((a, b) => (a.entrypoint.key < b.entrypoint.key ? -1 : a.entrypoint.key > b.entrypoint.key ? 1 : 0));
  if (exposures.length === 0 && errors.length === 0) return EMPTY_RESULT;
  return { exposures, errors };
}
