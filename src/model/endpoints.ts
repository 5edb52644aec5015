/**
 * From EndpointSlices to the endpoints of one Service port, and kube-proxy's choice of which of them
 * serve (`CategorizeEndpoints`, pkg/proxy/topology.go). Pure.
 *
 * Rules (pkg/proxy/endpointslicecache.go):
 * - A slice belongs to the Service named by its `kubernetes.io/service-name` label, in its namespace.
 *   FQDN slices are ignored.
 * - A Service port takes, from each slice, the slice port with the same name (unnamed = `""`) and protocol;
 *   that slice port's number is what to dial. A named `targetPort` is thus resolved per slice (pods may
 *   expose the name on different numbers). A slice port without a number means "all ports": the numeric
 *   targetPort (default: the Service port) is dialled; a named one cannot be resolved and is skipped.
 * - Only the first address of an endpoint is used. Endpoints are merged over all slices (in slice-name
 *   order) and deduplicated by address and port; the first wins, except that a copy on this node is preferred.
 * - Conditions: ready nil -> true; serving nil -> ready (the API's rule); terminating nil -> false.
 */
import type { EndpointSlice, ServicePort } from "../kube/objects.ts";
import { formatIP, type IPFamily, ipSortKey, parseIP, parseIPv4Number } from "./net.ts";
import type { Endpoint, ModelError } from "./types.ts";

/** The label joining an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = "kubernetes.io/service-name";
/** The zone label of a Node. */
export const ZONE_LABEL = "topology.kubernetes.io/zone";

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** One endpoint of a slice, normalised (canonical address, nil rules applied), before port resolution. */
export interface SliceEndpoint {
  readonly address: string;
  /** Orders addresses numerically: the 32-bit value of an IPv4 address, `ipSortKey` of an IPv6 one. */
  readonly sortKey: number | string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly nodeName?: string | undefined;
  readonly zone?: string | undefined;
  readonly hints?: Endpoint["hints"];
  readonly targetRef?: Endpoint["targetRef"];
}

/** One port of a slice. */
export interface SlicePort {
  readonly name: string;
  readonly protocol: string;
  readonly port?: number | undefined;
}

/** What the model needs from one IPv4/IPv6 EndpointSlice. */
export interface SliceInfo {
  /** `metadata.name`: slices are merged in name order. */
  readonly name: string;
  readonly family: IPFamily;
  readonly ports: readonly SlicePort[];
  readonly endpoints: readonly SliceEndpoint[];
  /** Problems with single endpoints (they are skipped). */
  readonly errors: readonly ModelError[];
}

/** Orders {@link SliceEndpoint.sortKey}s: IPv4 (numbers) before IPv6 (strings). */
function compareSortKeys(a: number | string, b: number | string): number {
  if (typeof a === "number") return typeof b === "number" ? a - b : -1;
  if (typeof b === "number") return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `namespace/service` of the Service a slice belongs to, or undefined without the label. */
export function sliceServiceKey(slice: EndpointSlice): string | undefined {
  const service = slice.metadata.labels?.[SERVICE_NAME_LABEL];
  return service ? `${slice.metadata.namespace}/${service}` : undefined;
}

/** The resolved conditions of an endpoint (kube-proxy's nil rules; serving nil defers to ready). */
export function resolveConditions(c: {
  readonly ready?: boolean | null | undefined;
  readonly serving?: boolean | null | undefined;
  readonly terminating?: boolean | null | undefined;
}): { ready: boolean; serving: boolean; terminating: boolean } {
  const ready = c.ready ?? true;
  return { ready, serving: c.serving ?? ready, terminating: c.terminating ?? false };
}

const sliceInfoCache = new WeakMap<EndpointSlice, SliceInfo | null>();

/**
 * Normalise one slice (memoised per slice object: objects from sources are never mutated).
 * Returns undefined for FQDN slices.
 */
export function sliceInfo(slice: EndpointSlice): SliceInfo | undefined {
  const cached = sliceInfoCache.get(slice);
  if (cached !== undefined) return cached ?? undefined;
  const info = computeSliceInfo(slice);
  sliceInfoCache.set(slice, info ?? null);
  return info;
}

function computeSliceInfo(slice: EndpointSlice): SliceInfo | undefined {
  if (slice.addressType === "FQDN") return undefined;
  const family: IPFamily = slice.addressType === "IPv6" ? 6 : 4;
  const key = `${slice.metadata.namespace}/${slice.metadata.name}`;
  const errors: ModelError[] = [];
  const endpoints: SliceEndpoint[] = [];
  for (const ep of slice.endpoints ?? []) {
    const raw = ep.addresses[0] as string;
    let address: string;
    let sortKey: number | string;
    const v4 = family === 4 ? parseIPv4Number(raw) : -1;
    if (v4 >= 0) {
      address = raw;
      sortKey = v4;
    } else {
      const ip = parseIP(raw);
      if (!ip || ip.zone !== undefined) {
        errors.push(
          Object.freeze({ kind: "EndpointSlice", object: key, message: `Endpoint address "${raw}" is not an IP address: skipped` }),
        );
        continue;
      }
      if (ip.family !== family) {
        errors.push(
          Object.freeze({
            kind: "EndpointSlice",
            object: key,
            message: `Endpoint address "${raw}" is not an ${slice.addressType} address: skipped`,
          }),
        );
        continue;
      }
      address = formatIP(ip);
      const b = ip.bytes;
      sortKey = ip.family === 4 ? (b[0] as number) * 0x1000000 + (((b[1] as number) << 16) | ((b[2] as number) << 8) | (b[3] as number)) : ipSortKey(ip);
    }
    const c = ep.conditions;
    const ready = c.ready ?? true;
    let hints: Endpoint["hints"];
    if (ep.hints) {
      const forZones = ep.hints.forZones?.map((z) => z.name) ?? [];
      const forNodes = ep.hints.forNodes?.map((n) => n.name) ?? [];
      if (forZones.length > 0 || forNodes.length > 0) {
        const h: { forZones?: readonly string[]; forNodes?: readonly string[] } = {};
        if (forZones.length > 0) h.forZones = Object.freeze(forZones);
        if (forNodes.length > 0) h.forNodes = Object.freeze(forNodes);
        hints = Object.freeze(h);
      }
    }
    let targetRef: Endpoint["targetRef"];
    if (ep.targetRef) {
      const ref: { kind?: string; name?: string; namespace?: string } = {};
      if (ep.targetRef.kind !== undefined) ref.kind = ep.targetRef.kind;
      if (ep.targetRef.name !== undefined) ref.name = ep.targetRef.name;
      if (ep.targetRef.namespace !== undefined) ref.namespace = ep.targetRef.namespace;
      targetRef = Object.freeze(ref);
    }
    /* one object shape for every endpoint (absent fields are undefined): this is the hot loop */
    const out: SliceEndpoint = {
      address,
      sortKey,
      ready,
      serving: c.serving ?? ready,
      terminating: c.terminating ?? false,
      nodeName: ep.nodeName,
      zone: ep.zone,
      hints,
      targetRef,
    };
    endpoints.push(out);
  }
  const ports: SlicePort[] = (slice.ports ?? []).map((p) =>
    p.port === undefined ? { name: p.name ?? "", protocol: p.protocol } : { name: p.name ?? "", protocol: p.protocol, port: p.port },
  );
  return Object.freeze({ name: slice.metadata.name, family, ports, endpoints, errors });
}

/** The port to dial on the endpoints of `slice` for Service port `sp`, or undefined when the slice has none. */
export function slicePortFor(
  sp: Pick<ServicePort, "name" | "protocol" | "port" | "targetPort">,
  slice: SliceInfo,
): number | undefined {
  const name = sp.name ?? "";
  for (const p of slice.ports) {
    if (p.name !== name || p.protocol !== sp.protocol) continue;
    if (p.port !== undefined) return p.port;
    const target = sp.targetPort ?? sp.port;
    return typeof target === "number" ? target : undefined;
  }
  return undefined;
}

function sameList(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameHints(a: Endpoint["hints"], b: Endpoint["hints"]): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return sameList(a.forZones, b.forZones) && sameList(a.forNodes, b.forNodes);
}

function sameRef(a: Endpoint["targetRef"], b: Endpoint["targetRef"]): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return a.kind === b.kind && a.name === b.name && a.namespace === b.namespace;
}

/** Whether an endpoint built from `se` on `port` would equal `ep`. */
function matches(ep: Endpoint, se: SliceEndpoint, port: number): boolean {
  return (
    ep.address === se.address &&
    ep.port === port &&
    ep.ready === se.ready &&
    ep.serving === se.serving &&
    ep.terminating === se.terminating &&
    ep.nodeName === se.nodeName &&
    ep.zone === se.zone &&
    sameHints(ep.hints, se.hints) &&
    sameRef(ep.targetRef, se.targetRef)
  );
}

function makeEndpoint(se: SliceEndpoint, port: number): Endpoint {
  const ep: Mutable<Endpoint> = {
    address: se.address,
    port,
    ready: se.ready,
    serving: se.serving,
    terminating: se.terminating,
  };
  if (se.nodeName !== undefined) ep.nodeName = se.nodeName;
  if (se.zone !== undefined) ep.zone = se.zone;
  if (se.hints !== undefined) ep.hints = se.hints;
  if (se.targetRef !== undefined) ep.targetRef = se.targetRef;
  return Object.freeze(ep);
}

/** Two endpoint lists with the same elements (by identity). */
export function sameEndpoints(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Every endpoint of Service port `sp`, merged over `slices` (give them sorted by name), deduplicated by
 * address and port and sorted by address (numerically, IPv4 first) then port. Endpoint objects equal to
 * one in `previous` are reused, and so is `previous` itself when nothing changed.
 */
export function mergeEndpoints(
  sp: Pick<ServicePort, "name" | "protocol" | "port" | "targetPort">,
  slices: readonly SliceInfo[],
  nodeName: string,
  previous?: readonly Endpoint[],
): readonly Endpoint[] {
  const entries: { se: SliceEndpoint; port: number; seq: number }[] = [];
  for (const slice of slices) {
    const port = slicePortFor(sp, slice);
    if (port === undefined) continue;
    for (const se of slice.endpoints) entries.push({ se, port, seq: entries.length });
  }
  entries.sort((a, b) =>
    compareSortKeys(a.se.sortKey, b.se.sortKey) || a.port - b.port || a.seq - b.seq,
  );
  /* dedupe neighbours with the same address and port: the first (slice-name order) wins, a local copy is preferred */
  let kept = 0;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i] as (typeof entries)[number];
    const last = kept > 0 ? (entries[kept - 1] as (typeof entries)[number]) : undefined;
    if (last && last.se.address === entry.se.address && last.port === entry.port) {
      if (nodeName !== "" && last.se.nodeName !== nodeName && entry.se.nodeName === nodeName) entries[kept - 1] = entry;
      continue;
    }
    entries[kept++] = entry;
  }
  entries.length = kept;
  let byId: Map<string, Endpoint> | undefined;
  if (previous && previous.length > 0) {
    byId = new Map();
    for (const ep of previous) byId.set(`${ep.address} ${ep.port}`, ep);
  }
  const result: Endpoint[] = new Array(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const { se, port } = entries[i] as (typeof entries)[number];
    const old = byId?.get(`${se.address} ${port}`);
    result[i] = old && matches(old, se, port) ? old : makeEndpoint(se, port);
  }
  if (previous && sameEndpoints(previous, result)) return previous;
  return Object.freeze(result);
}

/** Who is asking, for {@link categorize}. */
export interface CategorizeOptions {
  /** This node's name (endpoints with this `nodeName` are local; node hints match it). */
  readonly nodeName: string;
  /** This node's zone (`topology.kubernetes.io/zone`); zone hints match it. */
  readonly zone?: string | undefined;
  /** The traffic policy that applies (`externalTrafficPolicy` for NodePort/LoadBalancer entrypoints). */
  readonly policy: "Cluster" | "Local";
}

type TopologyMode = "" | "PreferSameNode" | "PreferSameZone";

/**
 * kube-proxy's topologyModeFromHints. The EndpointSlice controller writes `trafficDistribution`
 * (PreferSameNode -> `hints.forNodes`, PreferClose/PreferSameZone -> `hints.forZones`) and topology-aware
 * routing into the hints, so, like kube-proxy, only the hints are read. Node hints win over zone hints;
 * a kind of hint applies only when every ready endpoint carries it and one matches this node (zone).
 */
function topologyMode(endpoints: readonly Endpoint[], nodeName: string, zone: string | undefined): TopologyMode {
  let hasReady = false;
  let allNodeHints = true;
  let nodeMatch = false;
  let allZoneHints = true;
  let zoneMatch = false;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    hasReady = true;
    const forNodes = ep.hints?.forNodes;
    if (!forNodes || forNodes.length === 0) allNodeHints = false;
    else if (forNodes.includes(nodeName)) nodeMatch = true;
    const forZones = ep.hints?.forZones;
    if (!forZones || forZones.length === 0) allZoneHints = false;
    else if (zone !== undefined && forZones.includes(zone)) zoneMatch = true;
  }
  if (!hasReady) return "";
  if (allNodeHints && nodeMatch) return "PreferSameNode";
  if (allZoneHints && zoneMatch) return "PreferSameZone";
  return "";
}

function filterOrSame(endpoints: readonly Endpoint[], keep: (ep: Endpoint) => boolean): readonly Endpoint[] {
  let all = true;
  const out: Endpoint[] = [];
  for (const ep of endpoints) {
    if (keep(ep)) out.push(ep);
    else all = false;
  }
  return all ? endpoints : Object.freeze(out);
}

/**
 * The endpoints that receive new traffic, as kube-proxy's CategorizeEndpoints chooses them:
 * - Cluster: the ready endpoints, narrowed by topology hints when every ready endpoint is hinted and one
 *   matches this node (node hints) or zone (zone hints); if none is ready anywhere, the serving+terminating ones.
 * - Local: only endpoints on this node: the ready ones, else the serving+terminating ones (no topology).
 *
 * Returns `endpoints` itself when every endpoint is chosen.
 *
 * @example categorize(eps, { nodeName: "node-a", zone: "zone-a", policy: "Cluster" })
 */
export function categorize(endpoints: readonly Endpoint[], options: CategorizeOptions): readonly Endpoint[] {
  const { nodeName, zone, policy } = options;
  if (endpoints.length === 0) return endpoints;
  if (policy === "Local") {
    let localReady = false;
    let localServingTerminating = false;
    for (const ep of endpoints) {
      if (ep.nodeName !== nodeName || nodeName === "") continue;
      if (ep.ready) localReady = true;
      else if (ep.serving && ep.terminating) localServingTerminating = true;
    }
    if (localReady) return filterOrSame(endpoints, (ep) => ep.nodeName === nodeName && ep.ready);
    if (localServingTerminating) {
      return filterOrSame(endpoints, (ep) => ep.nodeName === nodeName && ep.serving && ep.terminating);
    }
    return Object.freeze([]);
  }
  const mode = topologyMode(endpoints, nodeName, zone);
  const ready = filterOrSame(endpoints, (ep) => {
    if (!ep.ready) return false;
    if (mode === "PreferSameNode") return ep.hints?.forNodes?.includes(nodeName) ?? false;
    if (mode === "PreferSameZone") return zone !== undefined && (ep.hints?.forZones?.includes(zone) ?? false);
    return true;
  });
  if (ready.length > 0) return ready;
  return filterOrSame(endpoints, (ep) => ep.serving && ep.terminating);
}
