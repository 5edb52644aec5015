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
import { compareKeys, entrypointByKey, mergeEntrypoints } from "../model/entrypoint-list.ts";
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
  /** The last traffic dump did not follow the one before (a gap): the next one must be whole. */
  | { readonly type: "resync" }
  /** Reopen the access log's file (the control plane got SIGUSR1: logrotate moved it). */
  | { readonly type: "reopen" };

/** Listener totals a worker keeps as it binds (cheap to read, unlike connection counts). */
export interface ListenerTally {
  readonly bound: number;
  readonly failed: number;
  readonly draining: number;
}

/** What a worker reports about itself every `REPORT_MS`, and once more when it has drained. */
export interface WorkerReport {
  readonly type: "report";
  readonly worker: number;
  readonly pid: number;
  readonly counts: ListenerCounts;
  /** Service ports that have ejected endpoints. */
  readonly outliers: readonly OutlierStats[];
  readonly connections?: ConnectionCounts | undefined;
  /** The per-Service traffic series changed since the last dump (the first, and after a resync: all of them), with their latest latency exemplars. */
  readonly traffic: TrafficDump;
  /** Entrypoints whose listeners failed to bind (their states), so Events and admin see failures without a query. */
  readonly failed: readonly EntrypointListeners[];
  /** Access log records this worker dropped (its sink could not keep up), since it started. */
  readonly accessLogDropped: number;
}

/** Worker -> control plane. */
export type FromWorker =
  | { readonly type: "ready"; readonly worker: number; readonly pid: number; readonly tracing: string }
  | WorkerReport
  /** Every listener of snapshot `version` (and of those before it) is bound or has failed; the listener totals then. */
  | { readonly type: "settled"; readonly worker: number; readonly version: number; readonly listeners: ListenerTally }
  /** A log line of the worker, written by the control plane's logger (the access log goes to stdout directly). */
  | { readonly type: "log"; readonly level: LogLevel; readonly msg: string; readonly fields?: Readonly<Record<string, unknown>> | undefined };

/**
 * The message for `next`, given the snapshot the workers have (`sent`): the changed entrypoints when `next.delta` is
 * relative to `sent`'s entrypoints, else the whole snapshot.
 */
export function encodeSnapshot(sent: Snapshot | undefined, next: Snapshot): SnapshotMessage {
  // A data plane reads only the entrypoints (and the node): the model's errors and the healthCheckNodePort servers
  // stay with the control plane, which serves them.
  const common = { type: "snapshot", version: next.version, errors: [], node: next.node } as const;
  const delta = next.delta;
  if (sent === undefined || delta === undefined || delta.base !== sent.entrypoints) {
    return { ...common, upserts: next.entrypoints, removes: [] };
  }
  const upserts: Entrypoint[] = [];
  const removes: string[] = [];
  for (const key of delta.changed) {
    const ep = entrypointByKey(next.entrypoints, key); // binary search: O(changed x log n), not a pass over n
    if (ep) upserts.push(ep);
    else removes.push(key);
  }
  return { ...common, base: sent.version, upserts, removes };
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
      entrypoints = [...message.upserts].sort((a, b) => compareKeys(a.key, b.key));
    } else {
      if (prev === undefined || prev.version !== message.base) {
        throw new Error(`Snapshot ${message.version} is relative to version ${message.base}, but this worker has ${prev?.version ?? "none"}`);
      }
      const changes = new Map<string, Entrypoint | null>();
      for (const key of message.removes) changes.set(key, null);
      for (const ep of message.upserts) changes.set(ep.key, ep);
      // The model's own merge: O(changed x log n) for replacements, one pass when entrypoints come or go.
      const merged = mergeEntrypoints(prev.entrypoints, changes);
      entrypoints = merged.entrypoints;
      delta = { base: prev.entrypoints, changed: merged.changed };
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

