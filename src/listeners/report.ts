/**
 * What the listener manager reports: bind state per entrypoint for the admin API and Events
 * ({@link ListenerReport.status}), totals for metrics ({@link ListenerReport.counts}, cheap at 10k
 * listeners), and log lines about what a snapshot leaves unserved, each said once while it lasts.
 */
import type { Logger } from "../log.ts";
import { hostPort, type SkippedListener } from "./desired.ts";
import type { Drains } from "./drain.ts";
import type { Slot } from "./slot.ts";
import type { SourceGuard } from "./source-ranges.ts";

/** Bind state of one listener of an entrypoint. */
export interface ListenerState {
  readonly address: string;
  readonly port: number;
  readonly bound: boolean;
  /** Why it is not bound, e.g. `Cannot bind listener "ns/web:http" on 127.0.0.1:30080: address already in use`. */
  readonly error?: string | undefined;
  /** UDP listeners: open flows. */
  readonly flows?: number | undefined;
}

/** Bind state of one entrypoint's listeners, keyed by the entrypoint key (`NodePort/ns/web:http`). */
export interface EntrypointListeners {
  readonly key: string;
  readonly listeners: readonly ListenerState[];
  /**
   * Entrypoints with loadBalancerSourceRanges: connections (TCP) and datagrams (UDP) refused because
   * their source is outside the ranges, since the entrypoint got its listeners.
   */
  readonly refused?: number | undefined;
}

/** Totals for the admin API. */
export interface ListenerCounts {
  /** Listeners accepting connections. */
  readonly bound: number;
  /** Listeners the snapshot asks for that could not be bound. */
  readonly failed: number;
  /** Removed listeners still waiting for their connections. */
  readonly draining: number;
  /** Open downstream connections, on bound and draining listeners. */
  readonly connections: number;
  /** Open UDP flows. */
  readonly flows: number;
  /** Connections and datagrams refused by loadBalancerSourceRanges (entrypoints served now). */
  readonly refused: number;
}

/**
 * The reporting state the manager keeps between snapshots: listener-level conflicts, what was logged,
 * and the bound/failed totals (counted again only after {@link changed}).
 *
 * @example
 * report.record(desired.skipped, admission.guards.values()); // on each full reconcile
 * report.changed(); // after any change of bind state
 * report.counts(slots, pending, drains, admission.refused()).failed
 */
export class ListenerReport {
  readonly #log: Logger;
  /** Listener-level conflicts the model let through (should not happen), by entrypoint key. */
  #conflicts = new Map<string, ListenerState[]>();
  /** What was reported as not served on the last snapshot (reported again only when it changes). */
  #reported = new Set<string>();
  /** Bound and failed listeners, counted again after any change of bind state (undefined: stale). */
  #tally: { bound: number; failed: number } | undefined;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Bind state changed: the listeners are counted again on the next {@link counts}. */
  changed(): void {
    this.#tally = undefined;
  }

  /**
   * What a snapshot leaves unserved: entrypoints not served and listener conflicts (logged when they
   * appear; conflicts also shown by {@link status}), and invalid source-range entries (logged when they appear).
   */
  record(skipped: readonly SkippedListener[], guards: Iterable<SourceGuard>): void {
    this.#conflicts = new Map();
    const reported = new Set<string>();
    for (const s of skipped) {
      const id = `${s.entrypoint.key}|${s.address ?? ""}|${s.reason}`;
      const isNew = !this.#reported.has(id);
      reported.add(id);
      if (s.address === undefined) {
        if (isNew) this.#log.info("Entrypoint not served", { entrypoint: s.entrypoint.key, reason: s.reason });
        continue;
      }
      const error = `Cannot bind listener "${s.entrypoint.name}" on ${hostPort(s.address, s.entrypoint.port)}: ${s.reason}`;
      const list = this.#conflicts.get(s.entrypoint.key) ?? [];
      list.push({ address: s.address, port: s.entrypoint.port, bound: false, error });
      this.#conflicts.set(s.entrypoint.key, list);
      if (isNew) this.#log.error("Listener not bound", { entrypoint: s.entrypoint.key, error });
    }
    for (const guard of guards) {
      const id = `${guard.entrypointKey}|invalid|${guard.source}`;
      reported.add(id);
      if (guard.invalid.length !== 0 && !this.#reported.has(id)) {
        this.#log.error("Invalid loadBalancerSourceRanges entries ignored: they allow no source", {
          entrypoint: guard.entrypointKey,
          invalid: guard.invalid,
        });
      }
    }
    this.#reported = reported;
    this.#tally = undefined;
  }

  /** Forget the conflicts (the manager closed). */
  clear(): void {
    this.#conflicts.clear();
    this.#tally = undefined;
  }

  /** Bind state per entrypoint key, sorted by key; only entrypoints that asked for listeners. */
  status(slots: Iterable<Slot>, guards: ReadonlyMap<string, SourceGuard>): EntrypointListeners[] {
    const byKey = new Map<string, ListenerState[]>();
    for (const slot of slots) {
      const list = byKey.get(slot.entrypoint.key) ?? [];
      const { address, port } = slot;
      if (slot.listener === undefined) list.push({ address, port, bound: false, error: slot.error });
      else if (slot.udp !== undefined) list.push({ address, port, bound: true, flows: slot.udp.active() });
      else list.push({ address, port, bound: true });
      byKey.set(slot.entrypoint.key, list);
    }
    for (const [key, states] of this.#conflicts) byKey.set(key, [...(byKey.get(key) ?? []), ...states]);
    return [...byKey]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, listeners]) => {
        const guard = guards.get(key);
        return guard === undefined ? { key, listeners } : { key, listeners, refused: guard.refused };
      });
  }

  /**
   * Listener, connection and flow totals. Cheap enough to call on every snapshot at 10k listeners: the
   * listener totals are kept between changes of bind state, and `connections` and `flows` (which ask
   * every proxy) are counted when read. `pending` says whether an unbound slot is still binding (not failed).
   */
  counts(slots: ReadonlyMap<string, Slot>, pending: (slot: Slot) => boolean, drains: Drains, refused: number): ListenerCounts {
    let tally = this.#tally;
    if (tally === undefined) {
      let bound = 0;
      let failed = 0;
      for (const slot of slots.values()) {
        if (slot.listener !== undefined) bound++;
        else if (!pending(slot)) failed++;
      }
      this.#tally = tally = { bound, failed };
    }
    return {
      bound: tally.bound,
      failed: tally.failed,
      draining: drains.size,
      get connections() {
        let connections = drains.active();
        for (const slot of slots.values()) if (slot.listener !== undefined && slot.udp === undefined) connections += slot.proxy!.active();
        return connections;
      },
      get flows() {
        let flows = 0;
        for (const slot of slots.values()) if (slot.listener !== undefined && slot.udp !== undefined) flows += slot.udp.active();
        return flows;
      },
      refused,
    };
  }
}
