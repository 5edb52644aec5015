/**
 * What `status.loadBalancer.ingress` each LoadBalancer Service should have: one pure function over the
 * cached Services, Nodes and EndpointSlices (the effects live in lb-reconciler.ts).
 *
 * - In scope: `type: LoadBalancer` with `spec.loadBalancerClass` equal to {@link LOAD_BALANCER_CLASS}, or
 *   unset when `claimUnclassed`. A Service of another class is never touched.
 * - Node addresses (ServiceLB style, no pool): the ExternalIP addresses of the eligible nodes, or their
 *   InternalIP addresses when no node has an ExternalIP (k3s ServiceLB's rule), filtered by the Service's
 *   `ipFamilies`. With `externalTrafficPolicy: Local`, only nodes that have a ready endpoint of the Service.
 *   Nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers` are left out.
 * - Pool (MetalLB style): one address per Service, stable: the address it already holds (in status or from an
 *   earlier pass; when `spec.loadBalancerIP` is set, only that one); else `spec.loadBalancerIP` when it is in
 *   the pool and free; else the lowest free address of the Service's primary family. A held address is never
 *   taken away; older Services win a contested one. Failures (pool exhausted, requested IP outside the pool or
 *   in use) leave the Service without ingress and are reported as `AllocationFailed` Events.
 * - Every entry is `{ ip, ipMode: "Proxy" }`: kube-proxy (1.30+) then leaves that traffic to kubegate.
 * - Cleanup: a Service that left the scope (type changed) loses the ingress we wrote. We know we wrote it when
 *   we saw the Service in scope, or, when claiming unclassed Services, when a non-LoadBalancer Service still
 *   carries only `ipMode: Proxy` entries (written by an earlier leader).
 */
import type { EndpointSlice, Node, Service } from "../kube/objects.ts";
import { LOAD_BALANCER_CLASS, ownsLoadBalancer } from "../model/in-scope.ts";
import { compareIP, ipFamily, type IPFamily } from "../model/net.ts";
import { describePool, firstFree, poolAddress, type Pool } from "./pool.ts";

/** One ingress entry as kubegate writes it. */
export interface LbIngress {
  readonly ip: string;
  readonly ipMode: "Proxy";
}

/** An ingress entry as found on a Service. */
export interface ObservedIngress {
  readonly ip?: string | undefined;
  readonly hostname?: string | undefined;
  readonly ipMode?: string | undefined;
}

/** Label that keeps a node out of load balancer address lists (as the cloud service controller does). */
export const EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers";

/** Event reason when no address can be given to a Service. */
export const ALLOCATION_FAILED = "AllocationFailed";

export interface LbPlanOptions {
  /** Also implement LoadBalancer Services without a `loadBalancerClass` (default true in the controller). */
  readonly claimUnclassed: boolean;
  /** MetalLB-style pool; node addresses are used without it. */
  readonly pool?: Pool | undefined;
}

export interface LbPlanInput {
  /** Services by `namespace/name`. */
  readonly services: ReadonlyMap<string, Service>;
  /** Nodes by name (unused in pool mode). */
  readonly nodes: ReadonlyMap<string, Node>;
  /** EndpointSlices by `namespace/name` (for the Local policy). */
  readonly endpointSlices: ReadonlyMap<string, EndpointSlice>;
  /** Services seen in scope (whose ingress we may have written). */
  readonly managed: ReadonlySet<string>;
  /** Pool addresses held from earlier passes, by Service key. */
  readonly allocations: ReadonlyMap<string, string>;
}

/** The decision for one Service the controller acts on. */
export interface LbDecision {
  readonly key: string;
  /** In scope (false: a cleanup of a Service that left it). */
  readonly inScope: boolean;
  readonly desired: readonly LbIngress[];
  /** The status differs from `desired`: write it. */
  readonly write: boolean;
  /** Why `desired` is empty for an in-scope Service, as an Event. */
  readonly failure?: { readonly reason: string; readonly message: string } | undefined;
}

export interface LbPlan {
  /** In-scope Services and cleanups, by key, in key order. */
  readonly decisions: ReadonlyMap<string, LbDecision>;
  /** Pool addresses held after this pass, by Service key (empty without a pool). */
  readonly allocations: ReadonlyMap<string, string>;
  /** Keys to forget from `managed`: deleted, or out of scope with no ingress left. */
  readonly release: readonly string[];
}

/** Whether kubegate implements this Service's load balancer. */
export function inScope(service: Service, claimUnclassed: boolean): boolean {
  return ownsLoadBalancer(service, { claimUnclassedLoadBalancers: claimUnclassed });
}

/** Whether two ingress lists are the same (order matters: we write a sorted list). */
export function sameIngress(a: readonly ObservedIngress[], b: readonly ObservedIngress[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((x, i) => {
    const y = b[i]!;
    return (x.ip ?? "") === (y.ip ?? "") && (x.hostname ?? "") === (y.hostname ?? "") && (x.ipMode ?? "") === (y.ipMode ?? "");
  });
}

/**
 * Plan the ingress of every Service in scope (and the cleanup of those that left it).
 *
 * @example
 * const plan = planLoadBalancers({ services, nodes, endpointSlices, managed: new Set(), allocations: new Map() }, { claimUnclassed: true });
 * for (const d of plan.decisions.values()) if (d.write) console.log(d.key, d.desired);
 */
export function planLoadBalancers(input: LbPlanInput, options: LbPlanOptions): LbPlan {
  const keys = [...input.services.keys()].sort();
  const scoped = keys.filter((k) => inScope(input.services.get(k)!, options.claimUnclassed));
  const desired = new Map<string, { ingress: LbIngress[]; failure?: LbDecision["failure"] }>();
  let allocations = new Map<string, string>();

  if (options.pool) {
    const result = allocate(input, scoped, options.pool);
    allocations = result.allocations;
    for (const key of scoped) {
      const ip = allocations.get(key);
      const failure = result.failures.get(key);
      desired.set(key, { ingress: ip ? [{ ip, ipMode: "Proxy" }] : [], ...(failure ? { failure } : {}) });
    }
  } else {
    const byService = readyNodesByService(input.endpointSlices);
    for (const key of scoped) {
      const svc = input.services.get(key)!;
      const local = svc.spec.externalTrafficPolicy === "Local" ? (byService.get(key) ?? new Set<string>()) : undefined;
      desired.set(key, { ingress: nodeIngress(input.nodes, svc, local) });
    }
  }

  const decisions = new Map<string, LbDecision>();
  const release: string[] = [];
  for (const key of keys) {
    const svc = input.services.get(key)!;
    const current = svc.status?.loadBalancer?.ingress ?? [];
    const want = desired.get(key);
    if (want) {
      decisions.set(key, { key, inScope: true, desired: want.ingress, write: !sameIngress(current, want.ingress), failure: want.failure });
      continue;
    }
    if (!input.managed.has(key) && !staleProxyIngress(svc, options.claimUnclassed)) continue;
    if (current.length === 0) {
      if (input.managed.has(key)) release.push(key);
      continue;
    }
    decisions.set(key, { key, inScope: false, desired: [], write: true });
  }
  for (const key of input.managed) if (!input.services.has(key)) release.push(key);
  return { decisions, allocations, release: release.sort() };
}

/** A non-LoadBalancer Service still carrying only `ipMode: Proxy` entries: left over from an earlier kubegate leader. */
function staleProxyIngress(svc: Service, claimUnclassed: boolean): boolean {
  const ingress = svc.status?.loadBalancer?.ingress ?? [];
  return claimUnclassed && svc.spec.type !== "LoadBalancer" && ingress.length > 0 && ingress.every((i) => i.ipMode === "Proxy");
}

/** The Service's families (`ipFamilies`), or undefined for any. */
function familiesOf(svc: Service): ReadonlySet<IPFamily> | undefined {
  const fams = svc.spec.ipFamilies;
  if (!fams || fams.length === 0) return undefined;
  return new Set(fams.map((f) => (f === "IPv4" ? 4 : 6)));
}

/** Node addresses for one Service (ServiceLB style), sorted. */
function nodeIngress(nodes: ReadonlyMap<string, Node>, svc: Service, onlyNodes: ReadonlySet<string> | undefined): LbIngress[] {
  const internal: string[] = [];
  const external: string[] = [];
  for (const [name, node] of nodes) {
    if (onlyNodes && !onlyNodes.has(name)) continue;
    if (node.metadata.labels?.[EXCLUDE_FROM_LB_LABEL] !== undefined) continue;
    for (const a of node.status.addresses ?? []) {
      if (a.type === "InternalIP") internal.push(a.address);
      else if (a.type === "ExternalIP") external.push(a.address);
    }
  }
  const families = familiesOf(svc);
  const chosen = new Set(
    (external.length > 0 ? external : internal).filter((ip) => {
      const fam = ipFamily(ip);
      return fam !== undefined && (families === undefined || families.has(fam));
    }),
  );
  return [...chosen].sort(compareIP).map((ip) => ({ ip, ipMode: "Proxy" as const }));
}

/** Service key -> names of the nodes with at least one ready endpoint (ready unset counts as ready, as in kube-proxy). */
function readyNodesByService(slices: ReadonlyMap<string, EndpointSlice>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const slice of slices.values()) {
    const svcName = slice.metadata.labels?.["kubernetes.io/service-name"];
    if (!svcName) continue;
    const key = `${slice.metadata.namespace}/${svcName}`;
    let nodes = out.get(key);
    for (const ep of slice.endpoints ?? []) {
      if (ep.conditions.ready === false || !ep.nodeName) continue;
      if (!nodes) out.set(key, (nodes = new Set()));
      nodes.add(ep.nodeName);
    }
  }
  return out;
}

/** Oldest first, then by key: who wins a contested pool address. */
function byAge(services: ReadonlyMap<string, Service>, keys: readonly string[]): string[] {
  const created = (k: string) => services.get(k)!.metadata.creationTimestamp ?? "";
  return [...keys].sort((a, b) => {
    const ca = created(a);
    const cb = created(b);
    return ca !== cb ? (ca < cb ? -1 : 1) : a < b ? -1 : a > b ? 1 : 0;
  });
}

function allocate(
  input: LbPlanInput,
  scoped: readonly string[],
  pool: Pool,
): { allocations: Map<string, string>; failures: Map<string, { reason: string; message: string }> } {
  const allocations = new Map<string, string>();
  const owner = new Map<string, string>();
  const failures = new Map<string, { reason: string; message: string }>();
  const ordered = byAge(input.services, scoped);
  const take = (key: string, ip: string) => {
    allocations.set(key, ip);
    owner.set(ip, key);
  };
  const fail = (key: string, message: string) => failures.set(key, { reason: ALLOCATION_FAILED, message });

  // The address each Service asks for (spec.loadBalancerIP); one outside the pool is a failure.
  const requested = new Map<string, string>();
  for (const key of ordered) {
    const want = input.services.get(key)!.spec.loadBalancerIP;
    if (want === undefined || want === "") continue;
    const ip = poolAddress(pool, want);
    if (ip) requested.set(key, ip);
    else fail(key, `Cannot allocate load balancer IP "${want}": it is not a usable address of pool ${describePool(pool)}`);
  }
  // 1. Addresses already held (earlier pass, or the status an earlier leader wrote), oldest first. Holders are
  //    never displaced: moving an address breaks the clients using it.
  for (const key of ordered) {
    if (failures.has(key)) continue;
    const svc = input.services.get(key)!;
    const want = requested.get(key);
    const held = [input.allocations.get(key), ...(svc.status?.loadBalancer?.ingress ?? []).map((i) => i.ip)];
    for (const candidate of held) {
      const ip = candidate && poolAddress(pool, candidate);
      if (ip && !owner.has(ip) && (want === undefined || want === ip) && familyFits(svc, ip)) {
        take(key, ip);
        break;
      }
    }
  }
  // 2. Requested addresses, oldest first.
  for (const [key, ip] of requested) {
    if (allocations.has(key)) continue;
    const holder = owner.get(ip);
    if (holder) fail(key, `Cannot allocate load balancer IP "${ip}": it is in use by Service "${holder}"`);
    else take(key, ip);
  }
  // 3. New addresses, lowest free first, oldest Service first.
  for (const key of ordered) {
    if (allocations.has(key) || failures.has(key)) continue;
    const svc = input.services.get(key)!;
    const family = primaryFamily(svc);
    const ip = firstFree(pool, owner, family);
    if (ip) take(key, ip);
    else {
      const mixed = pool.ranges.some((r) => r.family !== pool.ranges[0]!.family);
      const which = family !== undefined && mixed ? ` IPv${family}` : "";
      fail(key, `Cannot allocate a load balancer IP: every${which} address of pool ${describePool(pool)} is in use`);
    }
  }
  return { allocations, failures };
}

function primaryFamily(svc: Service): IPFamily | undefined {
  const f = svc.spec.ipFamilies?.[0];
  return f === undefined ? undefined : f === "IPv4" ? 4 : 6;
}

function familyFits(svc: Service, ip: string): boolean {
  const families = familiesOf(svc);
  const fam = ipFamily(ip);
  return families === undefined || (fam !== undefined && families.has(fam));
}
