/**
 * The LoadBalancer controller (`--lb-controller`): writes `status.loadBalancer.ingress` of the LoadBalancer
 * Services kubegate implements, one writer at a time through a Lease.
 *
 * Every kubegate runs it as a candidate; the leader writes. It watches all Services (and, for node
 * addresses, all Nodes and EndpointSlices) with its own reflectors, plans with the pure `planLoadBalancers`,
 * and writes through the elector's fence. Addresses of a pool are written, not announced: pair pool mode with
 * something that routes them to the nodes (MetalLB in BGP/L2 mode with its own allocation off, kube-vip,
 * static routes) — kubegate listens on the ones that are local to a node.
 *
 * RBAC: leases get, create, patch (coordination.k8s.io, the Lease's namespace); services list, watch; services/status
 * patch; nodes and endpointslices list, watch (node-address mode); events create, patch (core).
 */
import type { KindName } from "../kube/objects.ts";
import { Reflector, type ReflectorTuning } from "../kube/reflector.ts";
import type { SyncStatus } from "../kube/source.ts";
import { createLogger, type Logger } from "../log.ts";
import { ObjectCache } from "./cache.ts";
import type { ControllerClient } from "./client.ts";
import { EventRecorder, type EventRecorderStatus } from "./events.ts";
import { LeaderElector, type LeaderElectionStatus } from "./lease.ts";
import { LbReconciler, type LbFailure } from "./lb-reconciler.ts";
import { parsePool } from "./pool.ts";

export type { ControllerClient, EventClient, LeaseClient, ListWatchClient, PatchClient } from "./client.ts";
export { EventRecorder, serviceRef, type InvolvedObject, type EventType, type RecordOutcome } from "./events.ts";
export { LeaderElector, NotLeaderError, type LeaderElectorOptions } from "./lease.ts";
export { parsePool, PoolError, type Pool } from "./pool.ts";
export { planLoadBalancers, inScope, type LbDecision, type LbIngress, type LbPlan } from "./lb-status.ts";

/** Lease settings (client-go's names and defaults). */
export interface LbLeaseOptions {
  /** Lease name (default `kubegate-lb-controller`). */
  readonly name?: string | undefined;
  /** Lease namespace (default `kube-system`). */
  readonly namespace?: string | undefined;
  /** Default 15. */
  readonly leaseDurationSeconds?: number | undefined;
  /** Default 10 000. */
  readonly renewDeadlineMs?: number | undefined;
  /** Default 2 000. */
  readonly retryPeriodMs?: number | undefined;
  /** `holderIdentity` (default `<node name>_<random hex>`). */
  readonly identity?: string | undefined;
  /** Release the Lease on dispose (default true). */
  readonly releaseOnStop?: boolean | undefined;
}

export interface LbControllerOptions {
  /** The API client (a `KubeClient`; tests pass an in-memory fake). */
  readonly client: ControllerClient;
  /** This node's name (Lease identity, Event source). */
  readonly nodeName: string;
  /** `--lb-pool` CIDRs: allocate from them (MetalLB style) instead of writing node addresses. */
  readonly pool?: readonly string[] | undefined;
  /** Also implement LoadBalancer Services without `loadBalancerClass` (default true). */
  readonly claimUnclassed?: boolean | undefined;
  /** Label selector of the nodes whose addresses are written (default: all nodes). */
  readonly nodeSelector?: string | undefined;
  readonly lease?: LbLeaseOptions | undefined;
  /** Shared with the data plane; the controller makes its own when absent (and disposes only that one). */
  readonly events?: EventRecorder | undefined;
  /** Reflector timings (tests make them short). */
  readonly reflector?: ReflectorTuning | undefined;
  /** Full pass interval (default 60 000 ms). */
  readonly resyncMs?: number | undefined;
  readonly log?: Logger | undefined;
  /** Wall clock in ms (default `Date.now`). */
  readonly now?: (() => number) | undefined;
  /** Called when this process starts (true) or stops (false) leading. */
  readonly onLeadershipChange?: ((leading: boolean) => void) | undefined;
}

/** For the admin API. */
export interface LbControllerStatus {
  readonly mode: "node-addresses" | "pool";
  readonly leading: boolean;
  readonly election: LeaderElectionStatus;
  /** Every watched kind has synced. */
  readonly synced: boolean;
  /** LoadBalancer Services in scope at the last pass (as leader). */
  readonly services: number;
  readonly pool?: { readonly cidrs: readonly string[]; readonly size: number; readonly used: number } | undefined;
  readonly failures: readonly LbFailure[];
  readonly writes: number;
  readonly lastError: string | undefined;
  readonly lastErrorAt: string | undefined;
  readonly sync: readonly SyncStatus[];
  readonly events: EventRecorderStatus;
}

export interface LbController extends AsyncDisposable {
  /** The Lease `holderIdentity` of this process. */
  readonly identity: string;
  /** The recorder the controller writes Events with (share it with the data plane). */
  readonly events: EventRecorder;
  status(): LbControllerStatus;
}

/**
 * Start the controller: reflectors, leader election, reconciler. Throws a `PoolError` for a bad pool.
 *
 * @example
 * await using lb = startLbController({ client, nodeName: "node-a", pool: ["192.0.2.0/28"], log });
 * lb.status(); // { mode: "pool", leading: true, services: 3, pool: { used: 3, size: 14, ... }, ... }
 */
export function startLbController(options: LbControllerOptions): LbController {
  const { client, nodeName } = options;
  const log = options.log ?? createLogger();
  const pool = options.pool && options.pool.length > 0 ? parsePool(options.pool) : undefined;
  const claimUnclassed = options.claimUnclassed ?? true;
  const lease = options.lease ?? {};
  const identity = lease.identity ?? `${nodeName}_${randomHex(8)}`;
  const ownEvents = options.events === undefined;
  const events = options.events ?? new EventRecorder({ client, nodeName, log, ...(options.now ? { now: options.now } : {}) });
  const kinds: KindName[] = pool ? ["Service"] : ["Service", "Node", "EndpointSlice"];

  // The reconciler and the cache refer to each other through these callbacks.
  let reconciler: LbReconciler | undefined;
  const cache = new ObjectCache((ev) => reconciler?.observe(ev));
  const elector = new LeaderElector({
    client,
    identity,
    name: lease.name,
    namespace: lease.namespace,
    leaseDurationSeconds: lease.leaseDurationSeconds,
    renewDeadlineMs: lease.renewDeadlineMs,
    retryPeriodMs: lease.retryPeriodMs,
    releaseOnStop: lease.releaseOnStop,
    now: options.now,
    log,
    onStartedLeading: () => {
      reconciler?.leadershipChanged(true);
      options.onLeadershipChange?.(true);
    },
    onStoppedLeading: () => {
      reconciler?.leadershipChanged(false);
      options.onLeadershipChange?.(false);
    },
  });
  reconciler = new LbReconciler({ client, cache, fence: elector, events, claimUnclassed, pool, kinds, resyncMs: options.resyncMs, log, now: options.now });
  const reflectors = kinds.map(
    (kind) =>
      new Reflector({
        log,
        ...options.reflector,
        client,
        kind,
        sink: cache,
        ...(kind === "Node" && options.nodeSelector ? { labelSelector: options.nodeSelector } : {}),
      }),
  );
  for (const r of reflectors) r.start();
  reconciler.start();
  elector.start();
  const rec = reconciler;

  return {
    identity,
    events,
    status(): LbControllerStatus {
      const s = rec.status();
      const election = elector.status();
      const sync = reflectors.map((r) => r.status());
      return {
        mode: pool ? "pool" : "node-addresses",
        leading: election.leading,
        election,
        synced: sync.every((x) => x.synced),
        services: s.services,
        pool: s.pool,
        failures: s.failures,
        writes: s.writes,
        lastError: s.lastError ?? election.lastError,
        lastErrorAt: s.lastErrorAt,
        sync,
        events: events.status(),
      };
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await rec.stop();
      await elector.stop();
      await Promise.all(reflectors.map((r) => r.stop()));
      if (ownEvents) await events[Symbol.asyncDispose]();
    },
  };
}

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}
