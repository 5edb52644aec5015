/**
 * Leader election over a `coordination.k8s.io/v1` Lease, with client-go's leaderelection semantics:
 *
 * - A candidate acquires the Lease when it is absent, released (no holder), or expired: its `renewTime` plus
 *   `leaseDurationSeconds` is in the past. A follower wakes up right at the expiry (or every retry period,
 *   whichever is sooner), so it takes over within leaseDuration + retryPeriod of the leader's last renewal.
 * - The leader renews every retry period. Every write carries the observed `resourceVersion` (a merge patch
 *   with `metadata.resourceVersion` is a compare-and-swap): a 409 Conflict means another candidate won.
 * - `leaseTransitions` is incremented when the holder changes; `acquireTime` is set on acquisition.
 * - Fencing: the leader stops leading at once when a renewal fails (any error) or when no renewal succeeded
 *   within the renew deadline; {@link LeaderElector.whileLeading} refuses a write unless we lead and renewed
 *   within the renew deadline. So a deposed leader makes no write after it lost the Lease, while the Lease
 *   stays valid for others for leaseDuration − renewDeadline after our last renewal: the margin for a write
 *   already on the wire and for clock skew between nodes.
 * - On a graceful stop the leader releases the Lease (no holder, duration 1 s), so a follower takes over at once.
 *
 * Expiry is judged from the record's `renewTime` with the local wall clock, so nodes' clocks must agree to
 * within leaseDuration − renewDeadline (NTP does far better). The clock is injected for tests.
 */
import { KubeApiError, type KubeObject, type ResourceRef } from "../kube/client.ts";
import type { LeaseClient } from "./client.ts";
import { createLogger, type Logger } from "../log.ts";

/** The Lease resource. */
export const LEASES: ResourceRef = { group: "coordination.k8s.io", version: "v1", plural: "leases", namespaced: true };

/** The `spec` of a Lease as the elector reads and writes it. */
export interface LeaseRecord {
  readonly holderIdentity?: string | undefined;
  readonly leaseDurationSeconds?: number | undefined;
  readonly acquireTime?: string | undefined;
  readonly renewTime?: string | undefined;
  readonly leaseTransitions?: number | undefined;
}

export interface LeaderElectorOptions {
  readonly client: LeaseClient;
  /** This candidate's `holderIdentity` (unique per process: node name plus a random suffix). */
  readonly identity: string;
  /** Lease name (default `kubegate-lb-controller`). */
  readonly name?: string | undefined;
  /** Lease namespace (default `kube-system`). */
  readonly namespace?: string | undefined;
  /** How long a Lease is valid after its last renewal (default 15 s). */
  readonly leaseDurationSeconds?: number | undefined;
  /** The leader gives up when it could not renew for this long (default 10 000 ms). */
  readonly renewDeadlineMs?: number | undefined;
  /** Interval of renewals and acquisition attempts (default 2 000 ms). */
  readonly retryPeriodMs?: number | undefined;
  /** Release the Lease on a graceful stop (default true). */
  readonly releaseOnStop?: boolean | undefined;
  /** Wall clock in ms since the epoch (default `Date.now`). */
  readonly now?: (() => number) | undefined;
  readonly log?: Logger | undefined;
  /** We became the leader. */
  readonly onStartedLeading?: (() => void) | undefined;
  /** We are no longer the leader (failed renewal, deadline passed, or stop). Called once per term. */
  readonly onStoppedLeading?: ((reason: string) => void) | undefined;
  /** The observed holder changed (undefined: nobody holds the Lease). */
  readonly onNewLeader?: ((identity: string | undefined) => void) | undefined;
}

/** What the admin API shows about the election. */
export interface LeaderElectionStatus {
  readonly identity: string;
  readonly lease: string;
  readonly leading: boolean;
  /** The holder in the last observed record. */
  readonly holder: string | undefined;
  readonly leaseTransitions: number | undefined;
  /** When we last renewed (ISO time), while leading. */
  readonly lastRenew: string | undefined;
  readonly lastError: string | undefined;
}

/** A fenced write was refused: this process does not hold a fresh Lease. */
export class NotLeaderError extends Error {
  override name = "NotLeaderError";
}

/** The election options are inconsistent. */
export class LeaderElectionConfigError extends Error {
  override name = "LeaderElectionConfigError";
}

/**
 * @example
 * const elector = new LeaderElector({ client, identity: `${node}_${suffix}`, onStartedLeading: () => reconcile() });
 * elector.start();
 * await elector.whileLeading(() => client.patch("Service", ns, name, body, { subresource: "status" }));
 */
export class LeaderElector implements AsyncDisposable {
  readonly identity: string;
  readonly #o: LeaderElectorOptions;
  readonly #name: string;
  readonly #namespace: string;
  readonly #durationS: number;
  readonly #deadlineMs: number;
  readonly #retryMs: number;
  readonly #now: () => number;
  readonly #log: Logger;
  readonly #stop = new AbortController();
  #running: Promise<void> | undefined;
  #leading = false;
  /** Local wall-clock time of our last successful acquire/renew. */
  #lastRenewAt = 0;
  #deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  /** The last record we saw or wrote, and its resourceVersion. */
  #observed: LeaseRecord | undefined;
  #observedRV: string | undefined;
  #lastError: string | undefined;

  constructor(options: LeaderElectorOptions) {
    this.#o = options;
    this.identity = options.identity;
    this.#name = options.name ?? "kubegate-lb-controller";
    this.#namespace = options.namespace ?? "kube-system";
    this.#durationS = options.leaseDurationSeconds ?? 15;
    this.#deadlineMs = options.renewDeadlineMs ?? 10_000;
    this.#retryMs = options.retryPeriodMs ?? 2_000;
    this.#now = options.now ?? Date.now;
    this.#log = options.log ?? createLogger();
    if (!options.identity) throw new LeaderElectionConfigError("Leader election needs an identity");
    if (!Number.isInteger(this.#durationS) || this.#durationS < 1) {
      throw new LeaderElectionConfigError(`Invalid lease duration "${this.#durationS}": it must be a whole number of seconds, at least 1`);
    }
    if (!(this.#deadlineMs < this.#durationS * 1000)) {
      throw new LeaderElectionConfigError(`Invalid renew deadline "${this.#deadlineMs} ms": it must be shorter than the lease duration (${this.#durationS} s)`);
    }
    if (!(this.#retryMs > 0 && this.#retryMs < this.#deadlineMs)) {
      throw new LeaderElectionConfigError(`Invalid retry period "${this.#retryMs} ms": it must be positive and shorter than the renew deadline (${this.#deadlineMs} ms)`);
    }
  }

  /** `namespace/name` of the Lease. */
  get lease(): string {
    return `${this.#namespace}/${this.#name}`;
  }

  /** Start campaigning (idempotent). */
  start(): void {
    if (this.#running || this.#stop.signal.aborted) return;
    this.#running = this.#run();
  }

  /** Whether we lead and renewed within the renew deadline: a write now is fenced. */
  isLeader(): boolean {
    return this.#leading && this.#now() - this.#lastRenewAt < this.#deadlineMs;
  }

  /**
   * Run `fn` (a write) only while we hold a fresh Lease; otherwise throw {@link NotLeaderError} without calling it.
   */
  async whileLeading<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.isLeader()) {
      throw new NotLeaderError(`Write refused: "${this.identity}" does not hold lease "${this.lease}"`);
    }
    return fn();
  }

  status(): LeaderElectionStatus {
    return {
      identity: this.identity,
      lease: this.lease,
      leading: this.isLeader(),
      holder: this.#observed?.holderIdentity || undefined,
      leaseTransitions: this.#observed?.leaseTransitions,
      lastRenew: this.#leading ? new Date(this.#lastRenewAt).toISOString() : undefined,
      lastError: this.#lastError,
    };
  }

  /** Stop campaigning; a leader releases the Lease (unless `releaseOnStop` is false) and stops leading. */
  async stop(): Promise<void> {
    if (this.#stop.signal.aborted) return this.#running;
    this.#stop.abort();
    const wasLeading = this.#leading;
    this.#lose("stopped");
    // A request in flight cannot be aborted (the client takes no signal for writes); wait for it at most
    // the renew deadline, and release only when we know the Lease's current version.
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#running?.then(() => void (settled = true)),
      new Promise<void>((r) => (timer = setTimeout(r, this.#deadlineMs))),
    ]);
    clearTimeout(timer);
    if (wasLeading && settled && this.#o.releaseOnStop !== false) await this.#release();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      let delay = this.#retryMs;
      if (this.#leading) {
        const ok = await this.#tryAcquireOrRenew();
        if (signal.aborted) break;
        if (!ok) this.#lose(`failed to renew lease "${this.lease}"${this.#lastError ? `: ${this.#lastError}` : ""}`);
      } else {
        const ok = await this.#tryAcquireOrRenew();
        if (signal.aborted) break;
        if (ok) this.#gain();
        else delay = this.#untilExpiry();
      }
      await sleep(delay, signal);
    }
  }

  /** How long to wait before the next attempt as a follower: the retry period, or until the holder's Lease expires. */
  #untilExpiry(): number {
    const r = this.#observed;
    const renew = r?.renewTime ? Date.parse(r.renewTime) : Number.NaN;
    if (!r?.holderIdentity || Number.isNaN(renew)) return this.#retryMs;
    const expiresIn = renew + (r.leaseDurationSeconds ?? this.#durationS) * 1000 - this.#now();
    return Math.max(1, Math.min(this.#retryMs, expiresIn + 1));
  }

  #gain(): void {
    this.#leading = true;
    this.#log.info("Became the load balancer controller leader", { lease: this.lease, identity: this.identity });
    try {
      this.#o.onStartedLeading?.();
    } catch (err) {
      this.#log.warn("onStartedLeading failed", { error: errText(err) });
    }
  }

  #lose(reason: string): void {
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    if (!this.#leading) return;
    this.#leading = false;
    this.#lastRenewAt = 0;
    this.#log.warn("Stopped leading the load balancer controller", { lease: this.lease, identity: this.identity, reason });
    try {
      this.#o.onStoppedLeading?.(reason);
    } catch (err) {
      this.#log.warn("onStoppedLeading failed", { error: errText(err) });
    }
  }

  #renewed(at: number): void {
    this.#lastRenewAt = at;
    clearTimeout(this.#deadlineTimer);
    if (this.#stop.signal.aborted) return;
    // A renewal that hangs must not keep us leading: give up at the deadline even without an answer.
    this.#deadlineTimer = setTimeout(() => this.#lose(`no renewal of lease "${this.lease}" within ${this.#deadlineMs} ms`), this.#deadlineMs);
  }

  #observe(record: LeaseRecord, rv: string | undefined): void {
    const before = this.#observed?.holderIdentity || undefined;
    this.#observed = record;
    this.#observedRV = rv;
    const after = record.holderIdentity || undefined;
    if (before !== after) {
      try {
        this.#o.onNewLeader?.(after);
      } catch (err) {
        this.#log.warn("onNewLeader failed", { error: errText(err) });
      }
    }
  }

  /** One attempt (client-go's tryAcquireOrRenew). True when we hold the Lease afterwards. */
  async #tryAcquireOrRenew(): Promise<boolean> {
    const { client } = this.#o;
    const now = this.#now();
    const ours: LeaseRecord = {
      holderIdentity: this.identity,
      leaseDurationSeconds: this.#durationS,
      renewTime: microTime(now),
    };
    try {
      // The leader renews from its own last write (no GET): a 409 then means someone else wrote the Lease.
      if (this.#leading && this.#observed && this.#observedRV) {
        const renewed = { ...this.#observed, ...ours };
        await this.#write(renewed, this.#observedRV);
        this.#renewed(now);
        return true;
      }
      let current: KubeObject;
      try {
        current = await client.get(LEASES, this.#namespace, this.#name);
      } catch (err) {
        if (!(err instanceof KubeApiError && err.status === 404)) throw err;
        const record: LeaseRecord = { ...ours, acquireTime: microTime(now), leaseTransitions: 0 };
        const created = await client.create(LEASES, { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: this.#name, namespace: this.#namespace }, spec: record }, this.#namespace);
        this.#observe(recordOf(created), rvOf(created));
        this.#renewed(now);
        this.#lastError = undefined;
        return true;
      }
      const record = recordOf(current);
      this.#observe(record, rvOf(current));
      const holder = record.holderIdentity ?? "";
      if (holder !== "" && holder !== this.identity && !leaseExpired(record, now, this.#durationS)) {
        this.#lastError = undefined;
        return false;
      }
      const next: LeaseRecord =
        holder === this.identity
          ? { ...record, ...ours }
          : { ...ours, acquireTime: microTime(now), leaseTransitions: (record.leaseTransitions ?? 0) + 1 };
      await this.#write(next, rvOf(current));
      this.#renewed(now);
      return true;
    } catch (err) {
      const lost = err instanceof KubeApiError && (err.status === 409 || err.status === 404);
      this.#lastError = lost ? `lease "${this.lease}" was written by another candidate` : errText(err);
      if (!lost) this.#log.warn("Leader election request failed", { lease: this.lease, error: errText(err) });
      if (lost) this.#observedRV = undefined;
      return false;
    }
  }

  /** Compare-and-swap the Lease spec (409 when `rv` is stale). */
  async #write(record: LeaseRecord, rv: string | undefined): Promise<void> {
    const spec = {
      holderIdentity: record.holderIdentity ?? null,
      leaseDurationSeconds: record.leaseDurationSeconds ?? null,
      acquireTime: record.acquireTime ?? null,
      renewTime: record.renewTime ?? null,
      leaseTransitions: record.leaseTransitions ?? null,
    };
    const written = await this.#o.client.patch(LEASES, this.#namespace, this.#name, { metadata: { resourceVersion: rv }, spec }, { type: "merge" });
    this.#observe(recordOf(written), rvOf(written));
    this.#lastError = undefined;
  }

  /** Give the Lease up so a follower takes over at once (client-go's ReleaseOnCancel). */
  async #release(): Promise<void> {
    if (!this.#observed || !this.#observedRV || this.#observed.holderIdentity !== this.identity) return;
    const now = microTime(this.#now());
    try {
      await this.#write(
        { leaseDurationSeconds: 1, acquireTime: now, renewTime: now, leaseTransitions: this.#observed.leaseTransitions },
        this.#observedRV,
      );
    } catch (err) {
      this.#log.warn("Cannot release the leader election lease", { lease: this.lease, error: errText(err) });
    }
  }
}

/** Whether the record's holder lost its claim: no renewal within its lease duration. */
export function leaseExpired(record: LeaseRecord, now: number, defaultDurationSeconds: number): boolean {
  const renew = record.renewTime ? Date.parse(record.renewTime) : Number.NaN;
  if (Number.isNaN(renew)) return true;
  return renew + (record.leaseDurationSeconds ?? defaultDurationSeconds) * 1000 < now;
}

/** A Kubernetes MicroTime: RFC 3339 with microseconds, UTC. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, "000Z");
}

function recordOf(lease: KubeObject): LeaseRecord {
  const spec = (lease["spec"] ?? {}) as Record<string, unknown>;
  const s = (v: unknown) => (typeof v === "string" ? v : undefined);
  const n = (v: unknown) => (typeof v === "number" ? v : undefined);
  return {
    holderIdentity: s(spec["holderIdentity"]),
    leaseDurationSeconds: n(spec["leaseDurationSeconds"]),
    acquireTime: s(spec["acquireTime"]),
    renewTime: s(spec["renewTime"]),
    leaseTransitions: n(spec["leaseTransitions"]),
  };
}

function rvOf(obj: KubeObject): string | undefined {
  const rv = (obj["metadata"] as { resourceVersion?: unknown } | undefined)?.resourceVersion;
  return typeof rv === "string" && rv ? rv : undefined;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
