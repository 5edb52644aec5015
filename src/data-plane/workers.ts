/**
 * N worker data planes in child processes, behind the one {@link DataPlane} interface the control plane drives.
 * Each worker binds every entrypoint with SO_REUSEPORT (the kernel spreads new connections over them) and gets the
 * same snapshots, as deltas (`protocol.ts`). A worker that exits is started again (`RESTART_DELAY_MS`, backing off in a
 * crash loop) and gets the current snapshot whole; the others keep serving. Views are assembled from the workers'
 * latest `settled` messages and reports: counters summed, listener states from the snapshot and the workers' failures.
 * SIGUSR1 (logrotate moved `--access-log-file`) is forwarded to every worker, which reopens its file (a worker
 * signalled itself, e.g. with its process group, reopens too).
 */
import { fileURLToPath } from "node:url";
import { desiredListeners } from "../listeners/desired.ts";
import { entrypointByKey } from "../model/entrypoint-list.ts";
import { configuredBalancing } from "../routes/builder.ts";
import { type Logger, silentLogger } from "../log.ts";
import type { Snapshot } from "../model/types.ts";
import { rt } from "../runtime/index.ts";
import type { ChildProcess, Runtime } from "../runtime/types.ts";
import { NodeTrafficMetrics } from "../telemetry/metrics/node-traffic.ts";
import { encodeSnapshot, type FromWorker, type ListenerTally, type ToWorker, type WorkerReport } from "./protocol.ts";
import type {
  BalancingInfo,
  ConnectionCounts,
  DataPlane,
  DataPlaneSettings,
  EntrypointListeners,
  ListenerCounts,
  OutlierStats,
  TrafficSample,
  WorkerStatus,
} from "./types.ts";

/**
 * The command that starts a worker: the compiled binary runs its own `worker` subcommand; otherwise the runtime
 * (`execPath`) runs `worker-main.ts` beside this module.
 */
export function workerCommand(execPath: string, moduleUrl: string = import.meta.url): string[] {
  if (moduleUrl.includes("$bunfs") || moduleUrl.includes("~BUN")) return [execPath, "worker"];
  return [execPath, fileURLToPath(new URL("./worker-main.ts", moduleUrl))];
}

/**
 * Pause before a worker that exited is started again, ms; doubled (up to `MAX_RESTART_DELAY_MS`) while workers keep
 * exiting within `STABLE_MS` of their start, so a crash loop does not spin.
 */
export const RESTART_DELAY_MS = 200;
export const MAX_RESTART_DELAY_MS = 5_000;
const STABLE_MS = 10_000;

export interface WorkerPoolOptions {
  /** How many workers. */
  readonly workers: number;
  /** The command that starts a worker (see `workerCommand`). */
  readonly command: readonly string[];
  readonly spawn: Runtime["spawnChild"];
  readonly log?: Logger | undefined;
}

interface SettledWaiter {
  readonly version: number;
  readonly resolve: () => void;
}

interface Slot {
  readonly index: number;
  proc: ChildProcess | undefined;
  ready: boolean;
  restarts: number;
  report: WorkerReport | undefined;
  /** The highest snapshot version the current process has settled. */
  settledVersion: number;
  /** Its listener totals, from its latest `settled` message or report. */
  tally: ListenerTally | undefined;
  /** The pending restart. */
  restart: ReturnType<typeof setTimeout> | undefined;
  /** When the current process was started (performance.now()). */
  startedAt: number;
  /** The pause before the next start, ms. */
  delay: number;
}

/** The data plane as N worker processes. */
export class WorkerPool implements DataPlane {
  readonly #settings: DataPlaneSettings;
  readonly #options: WorkerPoolOptions;
  readonly #log: Logger;
  readonly #slots: Slot[] = [];
  /** The last snapshot applied (what a restarted worker gets whole). */
  #current: Snapshot | undefined;
  #closing = false;
  /** Ejections counted by workers that have exited, per Service port (the node's counter never goes back). */
  readonly #retiredEjections = new Map<string, number>();
  /** Access log records dropped by workers that have exited (the node's counter never goes back). */
  #retiredDropped = 0;
  /** Removes the SIGUSR1 handler (with `--access-log-file`). */
  readonly #stopReopen: (() => void) | undefined;
  #stopping = false;
  #settledWaiters: SettledWaiter[] = [];
  #listenersChanged: (() => void)[] = [];
  tracing = "off";
  /** The node's per-Service traffic: the workers' series summed (it follows the snapshots itself). */
  readonly trafficMetrics: NodeTrafficMetrics;

  constructor(settings: DataPlaneSettings, options: WorkerPoolOptions) {
    this.#settings = { ...settings, reusePort: true };
    this.#options = options;
    this.#log = options.log ?? silentLogger;
    this.trafficMetrics = new NodeTrafficMetrics({ maxSeries: settings.maxTrafficSeries });
    this.#stopReopen = settings.accessLog && settings.accessLogFile !== undefined ? rt.onSignal("SIGUSR1", () => this.reopenAccessLog()) : undefined;
    for (let i = 0; i < options.workers; i++) {
      const slot: Slot = { index: i, proc: undefined, ready: false, restarts: 0, report: undefined, settledVersion: 0, tally: undefined, restart: undefined, startedAt: 0, delay: RESTART_DELAY_MS };
      this.#slots.push(slot);
      this.#start(slot);
    }
  }

  /** Resolves once every worker has started its data plane; rejects when they have not within `timeoutMs`. */
  async started(timeoutMs = 30_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.#slots.some((s) => !s.ready)) {
      if (performance.now() > deadline) {
        await this.drain(0);
        throw new Error(`Cannot start the data plane workers: ${this.#slots.filter((s) => !s.ready).length} of ${this.#slots.length} did not start within ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  apply(snapshot: Snapshot): void {
    const message = encodeSnapshot(this.#current, snapshot);
    this.#current = snapshot;
    this.trafficMetrics.sync(snapshot);
    for (const slot of this.#slots) if (slot.proc) this.#send(slot, message);
  }

  settled(): Promise<void> {
    const version = this.#current?.version ?? 0;
    if (this.#settledAt(version)) return Promise.resolve();
    return new Promise((resolve) => this.#settledWaiters.push({ version, resolve }));
  }

  closing(): void {
    this.#closing = true;
    for (const slot of this.#slots) if (slot.proc) this.#send(slot, { type: "closing" });
  }

  /** Every worker reopens its access log file (SIGUSR1). */
  reopenAccessLog(): void {
    for (const slot of this.#slots) if (slot.proc) this.#send(slot, { type: "reopen" });
  }

  async drain(graceMs: number): Promise<void> {
    this.#stopping = true;
    this.#stopReopen?.();
    for (const slot of this.#slots) if (slot.restart) clearTimeout(slot.restart);
    const exits = this.#slots.map((slot) => slot.proc?.exited ?? Promise.resolve(0));
    for (const slot of this.#slots) if (slot.proc) this.#send(slot, { type: "drain", graceMs });
    // A worker that does not finish within the grace period (plus time to exit) is killed.
    const timer = setTimeout(() => {
      for (const slot of this.#slots) slot.proc?.kill("SIGKILL");
    }, graceMs + 5_000);
    try {
      await Promise.all(exits);
    } finally {
      clearTimeout(timer);
    }
  }

  listeners(): readonly EntrypointListeners[] {
    const snapshot = this.#current;
    if (!snapshot) return [];
    const settled = this.#settledAt(snapshot.version);
    const errors = new Map<string, string>();
    for (const slot of this.#slots) {
      for (const e of slot.report?.failed ?? []) for (const l of e.listeners) if (l.error) errors.set(`${e.key}|${l.address}|${l.port}`, l.error);
    }
    const byKey = new Map<string, { address: string; port: number; bound: boolean; error?: string }[]>();
    for (const spec of desiredListeners(snapshot).listeners.values()) {
      const error = errors.get(`${spec.entrypoint.key}|${spec.address}|${spec.port}`);
      const list = byKey.get(spec.entrypoint.key) ?? [];
      list.push({ address: spec.address, port: spec.port, bound: settled && error === undefined, ...(error ? { error } : {}) });
      byKey.set(spec.entrypoint.key, list);
    }
    return [...byKey].map(([key, listeners]) => ({ key, listeners }));
  }

  counts(): ListenerCounts {
    const tallies: ListenerTally[] = [];
    for (const slot of this.#slots) if (slot.proc && slot.tally) tallies.push(slot.tally);
    const reports = this.#reports();
    const sum = (f: (c: ListenerCounts) => number) => reports.reduce((n, r) => n + f(r.counts), 0);
    return {
      // Every worker binds every listener: one worker's count is the node's (the fewest, while one is catching up).
      bound: tallies.length ? Math.min(...tallies.map((t) => t.bound)) : 0,
      failed: Math.max(0, ...tallies.map((t) => t.failed)),
      draining: Math.max(0, ...tallies.map((t) => t.draining)),
      connections: sum((c) => c.connections),
      flows: sum((c) => c.flows),
      refused: sum((c) => c.refused),
    };
  }


  /**
   * How an entrypoint balances, as configured (algorithm, hash key, slow start). The state each worker keeps for
   * itself (affinity table sizes, the endpoints it has ejected) is not gathered here; ejection counts are summed in
   * {@link outliers}.
   */
  balancing(key: string): BalancingInfo | undefined {
    const ep = this.#current && entrypointByKey(this.#current.entrypoints, key);
    if (!ep) return undefined;
    // As RouteBuilder.algorithm: ExternalName targets are balanced round robin over their resolved addresses.
    return configuredBalancing(ep, ep.externalName ? "round-robin" : (ep.policy?.balancer ?? this.#settings.defaultBalancer));
  }

  outliers(): readonly OutlierStats[] {
    // Outlier detection runs per worker (each sees its own share of the traffic): ejections are summed; endpoints
    // ejected now are the most any worker has ejected (one endpoint ejected by two workers is one endpoint).
    const byCluster = new Map<string, { cluster: string; ejected: number; ejectionsTotal: number }>();
    for (const [cluster, ejectionsTotal] of this.#retiredEjections) byCluster.set(cluster, { cluster, ejected: 0, ejectionsTotal });
    for (const r of this.#reports()) {
      for (const o of r.outliers ?? []) {
        const acc = byCluster.get(o.cluster) ?? { cluster: o.cluster, ejected: 0, ejectionsTotal: 0 };
        acc.ejected = Math.max(acc.ejected, o.ejected);
        acc.ejectionsTotal += o.ejectionsTotal;
        byCluster.set(o.cluster, acc);
      }
    }
    return [...byCluster.values()];
  }

  connections(): ConnectionCounts | undefined {
    const reports = this.#reports().filter((r) => r.connections);
    if (reports.length === 0) return undefined;
    return { active: reports.reduce((n, r) => n + r.connections!.active, 0), refused: reports.reduce((n, r) => n + r.connections!.refused, 0) };
  }

  traffic(): readonly TrafficSample[] {
    return this.trafficMetrics.samples();
  }

  accessLogDropped(): number {
    return this.#reports().reduce((n, r) => n + r.accessLogDropped, this.#retiredDropped);
  }


  serving(): boolean {
    return this.#slots.some((s) => s.proc !== undefined && s.ready);
  }

  onListenersChanged(handler: () => void): void {
    this.#listenersChanged.push(handler);
  }

  /** Each worker's state (admin). */
  workers(): readonly WorkerStatus[] {
    return this.#slots.map((s) => ({
      worker: s.index,
      pid: s.proc?.pid ?? 0,
      ready: s.ready,
      restarts: s.restarts,
      connections: s.report?.counts.connections ?? 0,
      requests: this.trafficMetrics.requestsOf(s.index),
    }));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#stopping) await this.drain(0);
  }

  #reports(): WorkerReport[] {
    const out: WorkerReport[] = [];
    for (const s of this.#slots) if (s.report) out.push(s.report);
    return out;
  }

  /** Whether every live worker has settled `version`, and at least one is live (all down: nothing is served). */
  #settledAt(version: number): boolean {
    return this.#slots.some((s) => s.proc && s.ready) && this.#slots.every((s) => !s.proc || (s.ready && s.settledVersion >= version));
  }

  #start(slot: Slot): void {
    slot.restart = undefined;
    // Messages are bound to this process: a late one from the process before it is ignored.
    const proc: ChildProcess = this.#options.spawn({
      cmd: this.#options.command,
      onMessage: (m) => {
        if (slot.proc === proc) this.#onMessage(slot, m as FromWorker);
      },
    });
    slot.proc = proc;
    slot.startedAt = performance.now();
    slot.ready = false;
    slot.report = undefined;
    slot.settledVersion = 0;
    slot.tally = undefined;
    this.#send(slot, { type: "start", worker: slot.index, settings: this.#settings });
    if (this.#current) this.#send(slot, encodeSnapshot(undefined, this.#current));
    if (this.#closing) this.#send(slot, { type: "closing" });
    void proc.exited.then((code) => {
      if (slot.proc !== proc) return;
      slot.proc = undefined;
      this.trafficMetrics.remove(slot.index);
      for (const o of slot.report?.outliers ?? []) this.#retiredEjections.set(o.cluster, (this.#retiredEjections.get(o.cluster) ?? 0) + o.ejectionsTotal);
      this.#retiredDropped += slot.report?.accessLogDropped ?? 0;
      // Its counts leave the node's views now (its ejections were kept just above).
      slot.report = undefined;
      slot.tally = undefined;
      slot.ready = false;
      if (this.#stopping) return;
      const lived = performance.now() - slot.startedAt;
      slot.delay = lived >= STABLE_MS ? RESTART_DELAY_MS : Math.min(MAX_RESTART_DELAY_MS, slot.restarts === 0 ? RESTART_DELAY_MS : slot.delay * 2);
      this.#log.warn("A worker exited: starting it again", { worker: slot.index, pid: proc.pid, code, inMs: slot.delay });
      slot.restarts++;
      this.#checkSettled();
      slot.restart = setTimeout(() => {
        if (!this.#stopping) this.#start(slot);
      }, slot.delay);
    });
  }

  #send(slot: Slot, message: ToWorker): void {
    slot.proc?.send(message);
  }

  #onMessage(slot: Slot, m: FromWorker): void {
    switch (m.type) {
      case "ready":
        slot.ready = true;
        this.tracing = m.tracing;
        this.#log.info("Worker started", { worker: slot.index, pid: m.pid });
        break;
      case "settled":
        slot.settledVersion = Math.max(slot.settledVersion, m.version);
        slot.tally = m.listeners;
        this.#checkSettled();
        break;
      case "report": {
        const before = slot.report;
        slot.report = m;
        slot.tally = m.counts;
        if (failuresChanged(before, m)) for (const h of this.#listenersChanged) h();
        if (!this.trafficMetrics.update(slot.index, m.traffic)) {
          // A dump that does not follow the last one (it cannot happen on an ordered channel): ask for a whole one.
          this.#log.warn("A worker's traffic dump did not follow the last one: asking for a whole one", { worker: slot.index });
          this.#send(slot, { type: "resync" });
        }
        break;
      }
      case "log":
        this.#log[m.level](m.msg, { worker: slot.index, ...m.fields });
        break;
    }
  }

  #checkSettled(): void {
    if (this.#settledWaiters.length === 0) return;
    const keep: SettledWaiter[] = [];
    for (const w of this.#settledWaiters) (this.#settledAt(w.version) ? w.resolve() : keep.push(w));
    this.#settledWaiters = keep;
  }
}

/** Whether a worker's listener failures differ between two reports. */
function failuresChanged(before: WorkerReport | undefined, after: WorkerReport): boolean {
  const a = before?.failed ?? [];
  const b = after.failed;
  if (a.length !== b.length || (before?.counts.failed ?? 0) !== after.counts.failed) return true;
  return JSON.stringify(a) !== JSON.stringify(b);
}
