/**
 * Writes what {@link planLoadBalancers} decides: the effectful half of the status writer.
 *
 * Passes are coalesced (one pending slot, a short delay to batch watch events) and run only while this
 * process leads and the caches have synced. Each status write goes through the elector's fence
 * (`whileLeading`) as a merge patch of the `/status` subresource that carries the observed
 * `resourceVersion`: a Service changed meanwhile answers 409 and is planned again when the watch delivers
 * it. A write is not repeated for the same resourceVersion while its own watch event is on the way. Other
 * failures are retried with backoff; a periodic resync repairs anything missed. Allocation failures become
 * `AllocationFailed` Warning Events (again when the message changes, else at most once per resync).
 */
import { Backoff, type BackoffOptions } from "../kube/backoff.ts";
import { KubeApiError } from "../kube/client.ts";
import type { KindName } from "../kube/objects.ts";
import type { CacheEvent } from "../kube/source.ts";
import { createLogger, rateLimited, type LogFields, type Logger } from "../log.ts";
import type { ObjectCache } from "./cache.ts";
import type { PatchClient } from "./client.ts";
import { serviceRef, type EventRecorder } from "./events.ts";
import { NotLeaderError } from "./lease.ts";
import { inScope, planLoadBalancers, type LbIngress } from "./lb-status.ts";
import type { Pool } from "./pool.ts";

/** The part of the elector the reconciler uses. */
export interface Fence {
  isLeader(): boolean;
  whileLeading<T>(fn: () => Promise<T>): Promise<T>;
}

export interface LbReconcilerOptions {
  readonly client: PatchClient;
  readonly cache: ObjectCache;
  readonly fence: Fence;
  readonly events: EventRecorder;
  readonly claimUnclassed: boolean;
  readonly pool?: Pool | undefined;
  /** Kinds that must have synced before the first pass. */
  readonly kinds: readonly KindName[];
  /** Full pass interval (default 60 000 ms). */
  readonly resyncMs?: number | undefined;
  /** Delay that batches a burst of changes into one pass (default 10 ms). */
  readonly coalesceMs?: number | undefined;
  readonly backoff?: BackoffOptions | undefined;
  readonly log?: Logger | undefined;
  /** Wall clock in ms (default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

/** One Service the controller could not give an address. */
export interface LbFailure {
  readonly service: string;
  readonly reason: string;
  readonly message: string;
}

export interface LbReconcilerStatus {
  /** LoadBalancer Services in scope at the last pass. */
  readonly services: number;
  readonly pool?: { readonly cidrs: readonly string[]; readonly size: number; readonly used: number } | undefined;
  readonly failures: readonly LbFailure[];
  /** Status writes made (this process). */
  readonly writes: number;
  readonly passes: number;
  readonly lastError: string | undefined;
  readonly lastErrorAt: string | undefined;
}

/**
 * @example
 * const reconciler = new LbReconciler({ client, cache, fence: elector, events, claimUnclassed: true, kinds: ["Service", "Node", "EndpointSlice"] });
 * reconciler.start();
 */
export class LbReconciler implements AsyncDisposable {
  readonly #o: LbReconcilerOptions;
  readonly #log: Logger;
  readonly #warn: (key: string, msg: string, fields?: LogFields) => void;
  readonly #now: () => number;
  readonly #backoff: Backoff;
  /** Services seen in scope: their ingress is ours to clear when they leave it. */
  readonly #managed = new Set<string>();
  /** Service key -> the resourceVersion we last wrote against (its watch event is on the way). */
  readonly #pending = new Map<string, string>();
  readonly #failures = new Map<string, LbFailure & { at: number }>();
  #allocations = new Map<string, string>();
  #inScope = 0;
  #dirty = false;
  #running: Promise<void> | undefined;
  #stopped = false;
  #resync: ReturnType<typeof setInterval> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #writes = 0;
  #passes = 0;
  #lastError: string | undefined;
  #lastErrorAt: string | undefined;

  constructor(options: LbReconcilerOptions) {
    this.#o = options;
    this.#log = options.log ?? createLogger();
    this.#now = options.now ?? Date.now;
    this.#warn = rateLimited((m, f) => this.#log.warn(m, f), 30_000, this.#now);
    this.#backoff = new Backoff({ baseMs: 250, capMs: 30_000, ...options.backoff });
  }

  /** Start the periodic resync. */
  start(): void {
    if (this.#resync || this.#stopped) return;
    this.#resync = setInterval(() => this.kick(), this.#o.resyncMs ?? 60_000);
  }

  /** Note one cache change (remember Services seen in scope) and schedule a pass. */
  observe(event: CacheEvent | { type: "synced"; kind: KindName }): void {
    if (event.type === "upsert" && event.kind === "Service") {
      const svc = this.#o.cache.services.get(event.key);
      if (svc && inScope(svc, this.#o.claimUnclassed)) this.#managed.add(event.key);
    }
    this.kick();
  }

  /** Leadership changed: a new term starts from the Services' statuses, not from a stale memory. */
  leadershipChanged(leading: boolean): void {
    this.#pending.clear();
    this.#allocations = new Map();
    this.#failures.clear();
    if (leading) this.kick();
  }

  /** Schedule a pass (coalesced). */
  kick(): void {
    if (this.#stopped) return;
    this.#dirty = true;
    this.#running ??= this.#loop();
  }

  /** Wait until no pass is running or scheduled (tests). */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  status(): LbReconcilerStatus {
    const pool = this.#o.pool;
    return {
      services: this.#inScope,
      pool: pool && { cidrs: pool.ranges.map((r) => r.cidr), size: Number(pool.size), used: this.#allocations.size },
      failures: [...this.#failures.values()].map(({ service, reason, message }) => ({ service, reason, message })),
      writes: this.#writes,
      passes: this.#passes,
      lastError: this.#lastError,
      lastErrorAt: this.#lastErrorAt,
    };
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#resync);
    clearTimeout(this.#retry);
    await this.idle();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #loop(): Promise<void> {
    try {
      while (this.#dirty && !this.#stopped) {
        await new Promise((r) => setTimeout(r, this.#o.coalesceMs ?? 10));
        this.#dirty = false;
        try {
          await this.#pass();
        } catch (err) {
          this.#fail(err);
        }
      }
    } finally {
      this.#running = undefined;
    }
  }

  async #pass(): Promise<void> {
    const { cache, fence, client } = this.#o;
    if (!fence.isLeader() || !cache.isSynced(this.#o.kinds)) return;
    this.#passes++;
    const plan = planLoadBalancers(
      { services: cache.services, nodes: cache.nodes, endpointSlices: cache.endpointSlices, managed: this.#managed, allocations: this.#allocations },
      { claimUnclassed: this.#o.claimUnclassed, pool: this.#o.pool },
    );
    this.#allocations = new Map(plan.allocations);
    for (const key of plan.release) this.#managed.delete(key);
    for (const key of this.#pending.keys()) if (!cache.services.has(key)) this.#pending.delete(key);
    for (const key of this.#failures.keys()) if (!plan.decisions.get(key)?.failure) this.#failures.delete(key);
    let inScopeCount = 0;
    let failed = false;
    for (const d of plan.decisions.values()) {
      const svc = cache.services.get(d.key);
      if (!svc) continue;
      if (d.inScope) inScopeCount++;
      if (d.failure) this.#reportFailure(d.key, d.failure);
      const rv = svc.metadata.resourceVersion ?? "";
      if (!d.write || this.#pending.get(d.key) === rv) continue;
      this.#pending.delete(d.key);
      try {
        await fence.whileLeading(() =>
          client.patch("Service", svc.metadata.namespace, svc.metadata.name, statusPatch(rv, d.desired), { subresource: "status", type: "merge" }),
        );
        this.#pending.set(d.key, rv);
        this.#writes++;
        this.#log.info(d.desired.length > 0 ? "Load balancer status written" : "Load balancer status cleared", {
          service: d.key,
          ingress: d.desired.map((i) => i.ip),
        });
      } catch (err) {
        if (err instanceof NotLeaderError) return;
        // A newer version (409) or a deletion (404) is on its way through the watch, which plans it again.
        if (err instanceof KubeApiError && (err.status === 409 || err.status === 404)) continue;
        failed = true;
        this.#fail(err, d.key);
      }
    }
    this.#inScope = inScopeCount;
    if (failed) {
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => this.kick(), this.#backoff.next());
    } else {
      this.#backoff.healthy();
    }
  }

  #reportFailure(key: string, failure: { reason: string; message: string }): void {
    const last = this.#failures.get(key);
    const now = this.#now();
    if (last && last.message === failure.message && now - last.at < (this.#o.resyncMs ?? 60_000)) return;
    this.#failures.set(key, { service: key, ...failure, at: now });
    const svc = this.#o.cache.services.get(key);
    if (!svc) return;
    this.#log.warn("Load balancer address not allocated", { service: key, reason: failure.reason, error: failure.message });
    void this.#o.events.warning(serviceRef(svc), failure.reason, failure.message);
  }

  #fail(err: unknown, service?: string): void {
    const msg = err instanceof Error ? err.message : String(err);
    this.#lastError = msg;
    this.#lastErrorAt = new Date(this.#now()).toISOString();
    this.#warn(`write:${msg}`, "Cannot write load balancer status; retrying", { ...(service ? { service } : {}), error: msg });
  }
}

/** The merge patch of `/status`: the ingress (or its removal), guarded by the observed resourceVersion. */
export function statusPatch(resourceVersion: string, ingress: readonly LbIngress[]): object {
  return {
    metadata: { resourceVersion },
    status: { loadBalancer: { ingress: ingress.length > 0 ? ingress.map((i) => ({ ip: i.ip, ipMode: i.ipMode })) : null } },
  };
}
