/**
 * The NodePort and LoadBalancer entrypoints of a NodePort or LoadBalancer Service:
 * - NodePort entrypoint per port with a `nodePort`, on the host addresses selected by `nodePortAddresses` (and
 *   limited to the Service's `ipFamilies` when set).
 * - LoadBalancer entrypoint per port when kubegate implements the Service's load balancer (in-scope.ts), on the
 *   Service `port` (ServiceLB style): the NodePort addresses plus every `status.loadBalancer.ingress[].ip` and
 *   `spec.externalIPs` entry that is an address of this host (of the Service's `ipFamilies`, when set).
 * - With `lbPortOffset`, LoadBalancer entrypoints of ports below 1024 listen on the port plus the offset.
 * - `externalTrafficPolicy` picks each port's serving endpoints (endpoints.ts `selectEndpoints`; `Local` selects as
 *   `Cluster` off the cluster, `offCluster`), capped by
 *   `--max-endpoints-per-service` (reason `TooManyEndpoints`: the first that-many by address serve).
 * - `sessionAffinity`: `ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800; outside
 *   1..86400 is an error and the default applies); HTTP entrypoints add the cookie of `kubegate.io/affinity-cookie`.
 * - `sourceRanges`: LoadBalancer entrypoints only (kube-proxy filters load-balancer traffic, not node ports), from
 *   `spec.loadBalancerSourceRanges`, canonical CIDRs (a bare IP is taken as /32 or /128). Like kube-proxy, entries
 *   are trimmed and an invalid one is skipped (and reported); when none is valid, or the list is empty, it is
 *   undefined and nothing is filtered.
 * - `proxyProtocol`: `kubegate.io/proxy-protocol: v2` on TCP entrypoints.
 */
import type { Service } from "../kube/objects.ts";
import { ANNOTATIONS } from "./annotations.ts";
import { claimPort, type Exposure, TYPE_RANK } from "./claims.ts";
import { mergeEndpoints, selectEndpoints, type SliceInfo } from "./endpoints.ts";
import { type Mutable, protocolFor, reuseEntrypoint, type ServiceCommon, withCommon } from "./entrypoint.ts";
import { sameList, sameSelection } from "./equal.ts";
import { ownsLoadBalancer } from "./in-scope.ts";
import { formatCidr, formatIP, type IPFamily, ipSortKey, type ParsedCidr, parseCidr, parseIP } from "./net.ts";
import { type BuildContext, nodePortList } from "./prepared-options.ts";
import type { Cluster, Endpoint, Entrypoint, EntrypointType, SessionAffinity } from "./types.ts";

/** sessionAffinityConfig.clientIP.timeoutSeconds when unset (Kubernetes' default). */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10_800;
/** The largest valid sessionAffinityConfig.clientIP.timeoutSeconds (one day). */
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86_400;

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

/**
 * `serving` capped at `limit` (`--max-endpoints-per-service`) when the port has more than `limit` endpoints, which is
 * reported; `serving` itself otherwise. The first `limit` serving endpoints in sorted order (by address) are kept.
 */
function limitServing(
  endpoints: readonly Endpoint[],
  serving: readonly Endpoint[],
  limit: number | undefined,
  portLabel: string,
  report: ServiceCommon["report"],
): readonly Endpoint[] {
  if (limit === undefined || limit <= 0 || endpoints.length <= limit) return serving;
  report(
    `Port "${portLabel}" has ${endpoints.length} endpoints, more than the limit of ${limit} (--max-endpoints-per-service): only the first ${limit} serving endpoints (by address) receive traffic`,
    "TooManyEndpoints",
  );
  return serving.length <= limit ? serving : Object.freeze(serving.slice(0, limit));
}

/**
 * Push the NodePort and LoadBalancer entrypoints of NodePort/LoadBalancer Service `service` onto `exposures`;
 * problems are reported through `common`. `infos` are its EndpointSlices, sorted by name.
 */
export function exposePorts(
  service: Service,
  common: ServiceCommon,
  ctx: BuildContext,
  infos: readonly SliceInfo[],
  annotationsIn: Readonly<Record<string, string>>,
  exposures: Exposure[],
): void {
  const { key, namespace, name, annotations, parsed, report, reportAnnotation } = common;
  const spec = service.spec;

  const families = spec.ipFamilies && spec.ipFamilies.length > 0 ? spec.ipFamilies : undefined;
  const familySet = families ? new Set<IPFamily>(families.map((f) => (f === "IPv4" ? 4 : 6))) : undefined;
  const nodePorts = nodePortList(service, ctx.prepared);

  const ourLoadBalancer = ownsLoadBalancer(service, ctx.prepared.options);
  let lbList: readonly string[] = nodePorts;
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
      for (const h of ctx.prepared.nodePortAddresses) if (nodePorts.includes(h.address)) merged.set(h.address, h.sortKey);
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

  const externalTrafficPolicy = spec.externalTrafficPolicy ?? "Cluster";
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
      const old = common.prevClusters.get(epName);
      const endpoints = mergeEndpoints(sp, infos, ctx.nodeName, old?.endpoints);
      const policy = ctx.prepared.options.offCluster ? "Cluster" : externalTrafficPolicy;
      const chosen = selectEndpoints(endpoints, { nodeName: ctx.nodeName, zone: ctx.zone, policy, trafficDistribution: spec.trafficDistribution });
      const limited = limitServing(endpoints, chosen.serving, ctx.prepared.options.maxEndpointsPerService, portLabel, report);
      const serving = old && sameList(old.serving, limited) ? old.serving : limited;
      const selection = old && sameSelection(old.selection, chosen.selection) ? old.selection : chosen.selection;
      cluster =
        old && old.endpoints === endpoints && old.serving === serving && old.selection === selection
          ? old
          : Object.freeze({ name: epName, endpoints, serving, selection });
      return cluster;
    };
    const add = (type: EntrypointType, addresses: readonly string[], port: number) => {
      const epKey = `${type}/${epName}`;
      const fresh: Mutable<Entrypoint> = withCommon(
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
          externalTrafficPolicy,
          annotations,
        },
        common,
      );
      const stick = protocol === "http" ? httpAffinity : affinity;
      if (stick !== undefined) fresh.sessionAffinity = stick;
      if (type === "LoadBalancer" && sourceRanges !== undefined) fresh.sourceRanges = sourceRanges;
      if (protocol === "tcp" && parsed.proxyProtocol !== undefined) fresh.proxyProtocol = parsed.proxyProtocol;
      exposures.push({
        entrypoint: reuseEntrypoint(fresh, common.prevByKey.get(epKey)),
        rank: { created: common.created, service: key, type: TYPE_RANK[type], index },
        claimPort: claimPort(port, protocol),
      });
    };
    if (sp.nodePort !== undefined && sp.nodePort > 0) add("NodePort", nodePorts, sp.nodePort);
    else if (spec.type === "NodePort") report(`Port "${portLabel}" has no nodePort: skipped`);
    if (ourLoadBalancer) add("LoadBalancer", lbList, lbPort(sp.port, ctx.prepared.options.lbPortOffset ?? 0));
  });
}

/**
 * The port a LoadBalancer entrypoint listens on: the Service port, or with `--lb-port-offset` a privileged one (below
 * 1024) moved up by the offset (80 -> 8080 with 8000). The flag bounds the offset so the result is a port.
 * @example lbPort(80, 8000) // 8080
 */
export function lbPort(port: number, offset: number): number {
  return offset > 0 && port < 1024 ? port + offset : port;
}
