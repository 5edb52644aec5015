/**
 * Equality of the model's values, in one place: the model uses it to keep an unchanged object's identity from one
 * snapshot to the next, the route builder to keep a balancer, the balancers' cluster state and the DNS resolver to
 * skip a resync. Structural where the value is built afresh on every computation (affinity, policy, selection),
 * by identity where the model already shares the objects (the endpoints of a list, the strings of an address list).
 *
 * These run per entrypoint (and per endpoint) at 10k Services: plain loops, no allocation, no JSON.
 */
import { compareRank, type Exposure } from "./claims.ts";
import { POLICY_FIELDS } from "./types.ts";
import type {
  Endpoint,
  EndpointSelection,
  Entrypoint,
  ExternalTarget,
  HashOn,
  HealthCheckService,
  ModelError,
  SessionAffinity,
  TrafficPolicy,
} from "./types.ts";

/**
 * Two lists with the same elements (by identity) in the same order: string lists (addresses, CIDRs, hints),
 * endpoint lists (the model shares unchanged endpoint objects).
 *
 * @example
 * sameList(["10.0.0.1"], ["10.0.0.1"]); // true
 */
export function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** {@link sameList} of two lists that may be absent (both absent: the same). */
export function sameOptionalList<T>(a: readonly T[] | undefined, b: readonly T[] | undefined): boolean {
  if (a === b) return true;
  return a !== undefined && b !== undefined && sameList(a, b);
}

/** Two string records with the same keys and values (key order aside), e.g. a Service's annotations. */
export function sameRecord(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  if (a === b) return true;
  let count = 0;
  for (const k in a) {
    if (a[k] !== b[k]) return false;
    count++;
  }
  for (const _ in b) if (--count < 0) return false;
  return count === 0;
}

/** An endpoint's topology hints, alike. */
export function sameHints(a: Endpoint["hints"], b: Endpoint["hints"]): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return sameOptionalList(a.forZones, b.forZones) && sameOptionalList(a.forNodes, b.forNodes);
}

/** An endpoint's `targetRef`, alike. */
export function sameTargetRef(a: Endpoint["targetRef"], b: Endpoint["targetRef"]): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return a.kind === b.kind && a.name === b.name && a.namespace === b.namespace;
}

/** Two endpoint selections that say the same. */
export function sameSelection(a: EndpointSelection | undefined, b: EndpointSelection | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return a.policy === b.policy && a.topology === b.topology && a.fallback === b.fallback && a.topologyIgnored === b.topologyIgnored;
}

/** Two session affinities that say the same (mode, timeout, cookie). */
export function sameAffinity(a: SessionAffinity | undefined, b: SessionAffinity | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.mode !== b.mode || a.timeoutSeconds !== b.timeoutSeconds) return false;
  const ca = a.cookie;
  const cb = b.cookie;
  return ca === cb || (ca !== undefined && cb !== undefined && ca.name === cb.name && ca.ttlSeconds === cb.ttlSeconds);
}

/** Two `hashOn` values that are written the same: absent and `client-ip` differ (see {@link sameHashKey}). */
export function sameHashOn(a: HashOn | undefined, b: HashOn | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.source !== b.source) return false;
  return a.source === "client-ip" || a.name === (b as typeof a).name;
}

/** Two `hashOn` values that make a balancer hash the same input: absent means the client IP. */
export function sameHashKey(a: HashOn | undefined, b: HashOn | undefined): boolean {
  if (a === b) return true;
  const sa = a?.source ?? "client-ip";
  if (sa !== (b?.source ?? "client-ip")) return false;
  return sa === "client-ip" || (a as Exclude<HashOn, { source: "client-ip" }>).name === (b as Exclude<HashOn, { source: "client-ip" }>).name;
}

/** Two traffic policies that say the same, field by field (absent and undefined fields are alike). */
export function sameTrafficPolicy(a: TrafficPolicy | undefined, b: TrafficPolicy | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  for (const field of POLICY_FIELDS) {
    if (field === "hashOn") {
      if (!sameHashOn(a.hashOn, b.hashOn)) return false;
    } else if (a[field] !== b[field]) return false;
  }
  return true;
}

/**
 * Two traffic policies that balance alike: the same algorithm, slow start (absent is off) and hash key. Timeouts,
 * limits and retries may differ: a balancer does not read them.
 */
export function sameBalancerPolicy(a: TrafficPolicy | undefined, b: TrafficPolicy | undefined): boolean {
  return a === b || (a?.balancer === b?.balancer && (a?.slowStartMs ?? 0) === (b?.slowStartMs ?? 0) && sameHashKey(a?.hashOn, b?.hashOn));
}

/** Two ExternalName targets alike (hostname and port). */
export function sameExternalTarget(a: ExternalTarget | undefined, b: ExternalTarget | undefined): boolean {
  if (a === b) return true;
  return a !== undefined && b !== undefined && a.hostname === b.hostname && a.port === b.port;
}

/**
 * Two entrypoints alike, field by field; the nested objects the model shares (cluster, annotations, policy) by
 * identity, the ones it builds per computation (affinity, source ranges, target, addresses) by value.
 */
export function sameEntrypoint(a: Entrypoint, b: Entrypoint): boolean {
  return (
    a.key === b.key &&
    a.proxyProtocol === b.proxyProtocol &&
    sameAffinity(a.sessionAffinity, b.sessionAffinity) &&
    sameOptionalList(a.sourceRanges, b.sourceRanges) &&
    sameExternalTarget(a.externalName, b.externalName) &&
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
    sameList(a.addresses, b.addresses)
  );
}

/** Whether `withError` is `base` (an entrypoint without an error) plus an `error` field: every other field identical. */
export function sameApartFromError(withError: Entrypoint, base: Entrypoint): boolean {
  let count = 0;
  for (const k in base) {
    if (withError[k as keyof Entrypoint] !== base[k as keyof Entrypoint]) return false;
    count++;
  }
  for (const _ in withError) count--;
  return count === -1;
}

/** Whether exposure `next` claims exactly what `old` claims (claim port, rank, addresses): the index need not change. */
export function sameClaims(old: Exposure, next: Exposure): boolean {
  return old.claimPort === next.claimPort && compareRank(old.rank, next.rank) === 0 && sameList(old.entrypoint.addresses, next.entrypoint.addresses);
}

/** Two health checks alike (Service, port, addresses, local endpoint count). */
export function sameHealthCheck(a: HealthCheckService, b: HealthCheckService): boolean {
  return (
    a.namespace === b.namespace &&
    a.name === b.name &&
    a.port === b.port &&
    a.localEndpoints === b.localEndpoints &&
    sameList(a.addresses, b.addresses)
  );
}

/** Two error lists alike, in order (kind, object, message; the reason follows from those). */
export function sameErrors(a: readonly ModelError[], b: readonly ModelError[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as ModelError;
    const y = b[i] as ModelError;
    if (x !== y && (x.kind !== y.kind || x.object !== y.object || x.message !== y.message)) return false;
  }
  return true;
}
