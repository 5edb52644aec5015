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
import { sameHints, sameList, sameTargetRef } from "./equal.ts";
import { formatIP, type IPFamily, ipSortKey, parseIP, parseIPv4Number } from "./net.ts";
import type { Endpoint, EndpointSelection, ModelError } from "./types.ts";

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
    sameTargetRef(ep.targetRef, se.targetRef)
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
  if (previous && sameList(previous, result)) return previous;
  return Object.freeze(result);
}

/**
 * This node's *ready* endpoints of a Service, as kube-proxy counts them for its healthCheckNodePort
 * (`EndpointsMap.LocalReadyEndpoints`): distinct addresses over all the Service's slices that list a port, on this
 * node, ready (terminating and not-ready ones do not count). kube-proxy counts per IP family (one proxier per family,
 * each serving the health port on its family's addresses); a dual-stack Pod would be counted twice over both
 * families, so this is the larger of the two per-family counts.
 */
export function countLocalReady(slices: readonly SliceInfo[], nodeName: string): number {
  if (nodeName === "") return 0;
  let v4: Set<string> | undefined;
  let v6: Set<string> | undefined;
  for (const slice of slices) {
    if (slice.ports.length === 0) continue;
    for (const ep of slice.endpoints) {
      if (!ep.ready || ep.nodeName !== nodeName) continue;
      if (slice.family === 4) (v4 ??= new Set()).add(ep.address);
      else (v6 ??= new Set()).add(ep.address);
    }
  }
  return Math.max(v4?.size ?? 0, v6?.size ?? 0);
}

/** Who is asking, for {@link categorize}. */
export interface CategorizeOptions {
  /** This node's name (endpoints with this `nodeName` are local; node hints match it). */
  readonly nodeName: string;
  /** This node's zone (`topology.kubernetes.io/zone`); zone hints match it. */
  readonly zone?: string | undefined;
  /** The traffic policy that applies (`externalTrafficPolicy` for NodePort/LoadBalancer entrypoints). */
  readonly policy: "Cluster" | "Local";
  /**
   * The Service's `spec.trafficDistribution`, only to explain a missing effect: kube-proxy (and kubegate) read the
   * hints the EndpointSlice controller derives from it, never the field itself.
   */
  readonly trafficDistribution?: string | undefined;
}

/** The endpoints that receive new traffic and why (see {@link selectEndpoints}). */
export interface Selected {
  readonly serving: readonly Endpoint[];
  readonly selection: EndpointSelection;
}

type Policy = EndpointSelection["policy"];
type Topology = EndpointSelection["topology"];
type Fallback = EndpointSelection["fallback"];

/** The selections without a reason, interned (policy -> topology -> fallback): most clusters share these objects. */
const PLAIN_SELECTIONS = {} as Record<Policy, Record<Topology, Record<Fallback, EndpointSelection>>>;
for (const policy of ["Cluster", "Local"] as const) {
  const byTopology = {} as Record<Topology, Record<Fallback, EndpointSelection>>;
  for (const topology of ["none", "zone", "node"] as const) {
    byTopology[topology] = {
      none: Object.freeze({ policy, topology, fallback: "none" }),
      "serving-terminating": Object.freeze({ policy, topology, fallback: "serving-terminating" }),
    };
  }
  PLAIN_SELECTIONS[policy] = byTopology;
}

function makeSelection(policy: Policy, topology: Topology, fallback: Fallback, topologyIgnored: string | undefined): EndpointSelection {
  if (topologyIgnored === undefined) return PLAIN_SELECTIONS[policy][topology][fallback];
  return Object.freeze({ policy, topology, topologyIgnored, fallback });
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

const EMPTY: readonly Endpoint[] = Object.freeze([]);

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * The endpoints that receive new traffic, as kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go) chooses
 * them for external (NodePort/LoadBalancer) traffic, with the reasons shown on the admin API:
 * - Cluster: the ready endpoints. Topology (kube-proxy's topologyModeFromHints): node hints (trafficDistribution
 *   PreferSameNode) apply when every ready endpoint has one and one names this node; else zone hints
 *   (PreferClose/PreferSameZone, topology-aware routing) when every ready endpoint has one and one names this node's
 *   zone; then only the matching ready endpoints serve. Otherwise hints are ignored, and `topologyIgnored` says why.
 *   If no endpoint is ready anywhere: the serving+terminating ones (KEP-1669), without topology.
 * - Local: only endpoints on this node (`nodeName` equal to ours): the ready ones, else the serving+terminating ones.
 *   Topology never applies.
 *
 * `serving` is `endpoints` itself when every endpoint is chosen.
 *
 * @example selectEndpoints(eps, { nodeName: "node-a", zone: "zone-a", policy: "Cluster" }).selection
 * // { policy: "Cluster", topology: "zone", fallback: "none" }
 */
export function selectEndpoints(endpoints: readonly Endpoint[], options: CategorizeOptions): Selected {
  const { nodeName, zone, policy } = options;
  if (endpoints.length === 0) return { serving: endpoints, selection: makeSelection(policy, "none", "none", undefined) };
  if (policy === "Local") {
    let localReady = false;
    let localServingTerminating = false;
    let hinted = false;
    for (const ep of endpoints) {
      if (ep.hints !== undefined) hinted = true;
      if (ep.nodeName !== nodeName || nodeName === "") continue;
      if (ep.ready) localReady = true;
      else if (ep.serving && ep.terminating) localServingTerminating = true;
    }
    const ignored = hinted ? "topology hints do not apply with externalTrafficPolicy Local" : undefined;
    if (localReady) {
      return { serving: filterOrSame(endpoints, (ep) => ep.nodeName === nodeName && ep.ready), selection: makeSelection("Local", "none", "none", ignored) };
    }
    if (localServingTerminating) {
      return {
        serving: filterOrSame(endpoints, (ep) => ep.nodeName === nodeName && ep.serving && ep.terminating),
        selection: makeSelection("Local", "none", "serving-terminating", ignored),
      };
    }
    return { serving: EMPTY, selection: makeSelection("Local", "none", "none", ignored) };
  }

  /* topologyModeFromHints, counting what is needed to explain an ignored hint */
  let ready = 0;
  let hinted = false;
  let withNodeHint = 0;
  let nodeMatch = false;
  let withZoneHint = 0;
  let zoneMatch = false;
  for (const ep of endpoints) {
    const hints = ep.hints;
    if (hints !== undefined) hinted = true;
    if (!ep.ready) continue;
    ready++;
    if (hints === undefined) continue;
    const forNodes = hints.forNodes;
    if (forNodes && forNodes.length > 0) {
      withNodeHint++;
      if (forNodes.includes(nodeName)) nodeMatch = true;
    }
    const forZones = hints.forZones;
    if (forZones && forZones.length > 0) {
      withZoneHint++;
      if (zone !== undefined && forZones.includes(zone)) zoneMatch = true;
    }
  }

  let topology: Topology = "none";
  const reasons: string[] = [];
  if (ready === 0) {
    if (hinted) reasons.push("no endpoint is ready, so hints do not apply");
  } else {
    if (withNodeHint === ready && nodeMatch) topology = "node";
    else if (withNodeHint === ready) reasons.push(`node hints ignored: no ready endpoint is hinted for node "${nodeName}"`);
    else if (withNodeHint > 0) reasons.push(`node hints ignored: ${plural(ready - withNodeHint, "ready endpoint has", "ready endpoints have")} no node hint`);
    if (topology === "none") {
      if (withZoneHint === ready && zoneMatch) topology = "zone";
      else if (withZoneHint === ready) {
        reasons.push(
          zone === undefined || zone === ""
            ? `zone hints ignored: this node has no "${ZONE_LABEL}" label`
            : `zone hints ignored: no ready endpoint is hinted for zone "${zone}"`,
        );
      } else if (withZoneHint > 0) {
        reasons.push(`zone hints ignored: ${plural(ready - withZoneHint, "ready endpoint has", "ready endpoints have")} no zone hint`);
      }
    }
    const td = options.trafficDistribution;
    if (td !== undefined && td !== "" && withNodeHint === 0 && withZoneHint === 0) {
      reasons.push(`trafficDistribution "${td}" is set but no ready endpoint has a hint`);
    }
  }
  const ignored = reasons.length > 0 ? reasons.join("; ") : undefined;

  if (ready > 0) {
    const chosen = filterOrSame(endpoints, (ep) => {
      if (!ep.ready) return false;
      if (topology === "node") return ep.hints?.forNodes?.includes(nodeName) ?? false;
      if (topology === "zone") return zone !== undefined && (ep.hints?.forZones?.includes(zone) ?? false);
      return true;
    });
    return { serving: chosen, selection: makeSelection("Cluster", topology, "none", ignored) };
  }
  const fallback = filterOrSame(endpoints, (ep) => ep.serving && ep.terminating);
  return {
    serving: fallback,
    selection: makeSelection("Cluster", "none", fallback.length > 0 ? "serving-terminating" : "none", ignored),
  };
}

/**
 * The endpoints that receive new traffic (see {@link selectEndpoints}, which also says why).
 *
 * @example categorize(eps, { nodeName: "node-a", zone: "zone-a", policy: "Cluster" })
 */
export function categorize(endpoints: readonly Endpoint[], options: CategorizeOptions): readonly Endpoint[] {
  return selectEndpoints(endpoints, options).serving;
}
