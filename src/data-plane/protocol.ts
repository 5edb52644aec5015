/**
 * The messages between the control plane and a worker data plane (another process), and the snapshot codec that
 * keeps them small: the first snapshot goes whole, later ones as the entrypoints that changed (xDS's incremental
 * variant in miniature). Everything here is plain data; `workers.ts` sends it over the runtime's IPC channel and
 * `worker.ts` receives it.
 *
 * The worker rebuilds each snapshot from the last one it has, sharing every unchanged entrypoint object and attaching
 * a {@link Snapshot.delta}, so its listeners do O(changed) work per change exactly as in process.
 */
import type { LogLevel } from "../log.ts";
import type { Entrypoint, EntrypointDelta, HealthCheckService, ModelError, NodeInfo, Snapshot } from "../model/types.ts";
import type { TrafficDump } from "../telemetry/metrics/traffic.ts";
import type { ConnectionCounts, DataPlaneSettings, EntrypointListeners, ListenerCounts, OutlierStats } from "./types.ts";

/** A snapshot as sent: whole (`full`), or the entrypoints that changed since version `base`. */
export interface SnapshotMessage {
  readonly type: "snapshot";
  readonly version: number;
  /** The version this message applies to; absent: a full snapshot (`upserts` is every entrypoint). */
  readonly base?: number | undefined;
  /** Entrypoints added or replaced (full: all of them). */
  readonly upserts: readonly Entrypoint[];
  /** Keys of entrypoints removed since `base`. */
  readonly removes: readonly string[];
  readonly errors: readonly ModelError[];
  readonly node: NodeInfo;
  readonly healthChecks?: readonly HealthCheckService[] | undefined;
}

/** Control plane -> worker. */
export type ToWorker =
  | { readonly type: "start"; readonly worker: number; readonly settings: DataPlaneSettings }
  | SnapshotMessage
  | { readonly type: "closing" }
  | { readonly type: "drain"; readonly graceMs: number }
  /** Ask for the listener states and balancing of these entrypoint keys (all: absent) in the next report. */
  | { readonly type: "query"; readonly id: number; readonly what: "listeners" | "balancing"; readonly key?: string | undefined };

/** What a worker reports about itself, periodically and after each change. */
export interface WorkerReport {
  readonly type: "report";
  readonly worker: number;
  readonly pid: number;
  /** The highest snapshot version whose listeners are all bound (or failed). */
  readonly settledVersion: number;
  readonly counts: ListenerCounts;
  /** Service ports that have ejected endpoints; absent in a report sent because a snapshot settled (unchanged). */
  readonly outliers?: readonly OutlierStats[] | undefined;
  readonly connections?: ConnectionCounts | undefined;
  /**
   * The per-Service traffic series changed since the last dump (the first: all of them); absent in a report sent
   * because a snapshot settled.
   */
  readonly traffic?: TrafficDump | undefined;
  /** Entrypoints whose listeners failed to bind (their states), so Events and admin see failures without a query. */
  readonly failed: readonly EntrypointListeners[];
}

/** Worker -> control plane. */
export type FromWorker =
  | { readonly type: "ready"; readonly worker: number; readonly pid: number; readonly tracing: string }
  | WorkerReport
  | { readonly type: "answer"; readonly id: number; readonly value: unknown }
  | { readonly type: "drained"; readonly worker: number }
  /** A log line of the worker, written by the control plane's logger (the access log goes to stdout directly). */
  | { readonly type: "log"; readonly level: LogLevel; readonly msg: string; readonly fields?: Readonly<Record<string, unknown>> | undefined };

/**
 * The message for `next`, given the snapshot the workers have (`sent`): the changed entrypoints when `next.delta` is
 * relative to `sent`'s entrypoints, else the whole snapshot.
 */
export function encodeSnapshot(sent: Snapshot | undefined, next: Snapshot): SnapshotMessage {
  const common = { type: "snapshot", version: next.version, errors: next.errors, node: next.node, healthChecks: next.healthChecks } as const;
  const delta = next.delta;
  if (sent === undefined || delta === undefined || delta.base !== sent.entrypoints) {
    return { ...common, upserts: next.entrypoints, removes: [] };
  }
  const byKey = new Map<string, Entrypoint>();
  for (const ep of next.entrypoints) if (delta.changed.has(ep.key)) byKey.set(ep.key, ep);
  const removes: string[] = [];
  for (const key of delta.changed) if (!byKey.has(key)) removes.push(key);
  return { ...common, base: sent.version, upserts: [...byKey.values()], removes };
}

/** Rebuilds snapshots from {@link SnapshotMessage}s, in a worker. */
export class SnapshotDecoder {
  #current: Snapshot | undefined;

  /** The last snapshot decoded. */
  get current(): Snapshot | undefined {
    return this.#current;
  }

  /**
   * The snapshot `message` describes. Throws when it is relative to a version this decoder does not hold (the
   * sender then has to send it whole).
   */
  apply(message: SnapshotMessage): Snapshot {
    const prev = this.#current;
    let entrypoints: readonly Entrypoint[];
    let delta: EntrypointDelta | undefined;
    if (message.base === undefined) {
      entrypoints = [...message.upserts].sort(byKey);
    } else {
      if (prev === undefined || prev.version !== message.base) {
        throw new Error(`Snapshot ${message.version} is relative to version ${message.base}, but this worker has ${prev?.version ?? "none"}`);
      }
      const changed = new Set<string>(message.removes);
      const upserts = new Map<string, Entrypoint>();
      for (const ep of message.upserts) {
        upserts.set(ep.key, ep);
        changed.add(ep.key);
      }
      // One pass over the sorted list (O(n + k log k), no sort of n): keep, replace or drop each entrypoint, then
      // merge in the added ones.
      const kept: Entrypoint[] = [];
      for (const ep of prev.entrypoints) {
        if (!changed.has(ep.key)) kept.push(ep);
        else if (upserts.has(ep.key)) (kept.push(upserts.get(ep.key)!), upserts.delete(ep.key));
      }
      entrypoints = upserts.size === 0 ? kept : merge(kept, [...upserts.values()].sort(byKey));
      delta = { base: prev.entrypoints, changed };
    }
    const snapshot: Snapshot = {
      version: message.version,
      entrypoints,
      errors: message.errors,
      node: message.node,
      ...(message.healthChecks ? { healthChecks: message.healthChecks } : {}),
    };
    if (delta) Object.defineProperty(snapshot, "delta", { value: delta, enumerable: false });
    this.#current = snapshot;
    return snapshot;
  }
}

/** Two lists sorted by key, merged. */
function merge(a: readonly Entrypoint[], b: readonly Entrypoint[]): Entrypoint[] {
  const out: Entrypoint[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) out.push(byKey(a[i]!, b[j]!) <= 0 ? a[i++]! : b[j++]!);
  while (i < a.length) out.push(a[i++]!);
  while (j < b.length) out.push(b[j++]!);
  return out;
}

function byKey(a: Entrypoint, b: Entrypoint): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}
