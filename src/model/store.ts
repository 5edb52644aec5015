/**
 * The model store: a {@link SourceSink} that keeps the objects, recomputes only what an event touches,
 * and publishes coalesced, immutable snapshots.
 *
 * - Incremental: an EndpointSlice event recomputes its Service; a Service event that Service; an event
 *   for this node's Node recomputes everything only when the zone changed. Unchanged entrypoints (and
 *   clusters, endpoints) keep their identity from one snapshot to the next.
 * - Listener conflicts stay exact: an index of claimed `address port transport` -> claimants (best rank
 *   first); when a claim changes, every claimant of it is re-evaluated, so a loser recovers when the
 *   winner goes away.
 * - Coalescing (Traefik's one-slot throttle): events mark work; one flush is pending at a time, at least
 *   `minIntervalMs` after the previous publish. Nothing is published before every kind has synced once
 *   (kube-proxy waits for Services and EndpointSlices alike), and only when the snapshot changed.
 * - Each snapshot after the first carries {@link Snapshot.delta}: exactly the entrypoint keys that differ
 *   from the previous publish, so the listeners and the traffic metrics do O(changed) work per snapshot.
 *
 * - A flush is a short sequence of phases that each return what they changed (update.ts, assemble.ts):
 *   apply the pending Services -> rebuild the touched entrypoints with their conflicts -> health checks ->
 *   assemble the snapshot and its delta. The store does the bookkeeping from the results: kube-proxy's
 *   change counts and trigger times ({@link PublishInfo}), build time, callbacks.
 *
 * `store.flush()` equals `buildSnapshot(...)` of the same objects (see test/model/store.test.ts).
 */
import type { EndpointSlice, KindName, Node, Service } from "../kube/objects.ts";
import type { CacheEvent, SourceSink } from "../kube/source.ts";
import { assembleSnapshot } from "./assemble.ts";
import { invalidError, nodeInfo } from "./build.ts";
import { sliceServiceKey } from "./endpoints.ts";
import { type BuildContext, nodeZone, type PreparedOptions, prepareOptions } from "./prepared-options.ts";
import { computeService, EMPTY_RESULT } from "./service.ts";
import type { ModelError, ModelOptions, Snapshot } from "./types.ts";
import { applyServiceChanges, DerivedState, resolveEntrypoints, resolveHealthChecks } from "./update.ts";

export { entrypointByKey } from "./assemble.ts";

/** The slice annotation holding when the change that produced it happened. */
export const LAST_CHANGE_TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time";

const KINDS: readonly KindName[] = ["Service", "EndpointSlice", "Node"];

/** What changed since the previous publish (for kube-proxy-style metrics). */
export interface PublishInfo {
  /** Services whose Service object changed (add, update, delete) and whose entrypoints or errors changed. */
  readonly serviceChanges: number;
  /** Services whose EndpointSlices changed and whose entrypoints or errors changed. */
  readonly endpointChanges: number;
  /**
   * Per Service with an endpoint change: the latest `last-change-trigger-time` (ms since the epoch) of its
   * slices changed since the previous publish, when later than the store's start. Sorted ascending.
   */
  readonly triggerTimes: readonly number[];
  /** Duration of the build that produced the snapshot, in ms. */
  readonly buildMs: number;
}

/** Counters shown on the admin API. */
export interface ModelStoreStats {
  readonly services: number;
  readonly slices: number;
  /** Endpoints over all stored EndpointSlices. */
  readonly endpoints: number;
  /** Duration of the last build (flush), in ms. */
  readonly lastBuildMs: number;
  readonly publishes: number;
}

/** How to build a {@link ModelStore}. */
export interface ModelStoreOptions {
  /** Called with each published snapshot. */
  readonly onSnapshot: (snapshot: Snapshot, info: PublishInfo) => void;
  /**
   * Called when a flush applied pending changes but the snapshot did not change (nothing to publish):
   * everything received is applied all the same (kube-proxy's `Updated()` for a no-op sync).
   */
  readonly onSettled?: ((buildMs: number) => void) | undefined;
  /** Minimum time between two publishes (default 5 ms). */
  readonly minIntervalMs?: number | undefined;
  /** Run `fn` after `ms` (default `setTimeout`). Injected by tests. */
  readonly schedule?: ((fn: () => void, ms: number) => unknown) | undefined;
  /** Monotonic clock in ms (default `performance.now`), for the interval and build durations. */
  readonly now?: (() => number) | undefined;
  /** Wall clock in ms since the epoch (default `Date.now`), to drop trigger times older than the store. */
  readonly wallClock?: (() => number) | undefined;
}

interface StoredSlice {
  readonly slice: EndpointSlice;
  readonly service: string | undefined;
}

function parseTriggerTime(slice: EndpointSlice): number | undefined {
  const text = slice.metadata.annotations?.[LAST_CHANGE_TRIGGER_TIME_ANNOTATION];
  if (text === undefined) return undefined;
  const t = Date.parse(text);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * Holds Services, EndpointSlices and Nodes and publishes the model's snapshots.
 *
 * @example
 * const store = new ModelStore(options, { onSnapshot: (snapshot) => listeners.apply(snapshot) });
 * source.start(store);
 */
export class ModelStore implements SourceSink, Disposable {
  readonly #prepared: PreparedOptions;
  readonly #onSnapshot: ModelStoreOptions["onSnapshot"];
  readonly #onSettled: ModelStoreOptions["onSettled"];
  readonly #minInterval: number;
  readonly #schedule: (fn: () => void, ms: number) => unknown;
  readonly #now: () => number;
  readonly #startedAt: number;

  readonly #services = new Map<string, Service>();
  readonly #slices = new Map<string, StoredSlice>();
  /**
   * The EndpointSlices of each Service: the key of its only slice (the usual case: no Map per Service,
   * about 250 bytes each at 10k Services), or a Map of slice key -> slice.
   */
  readonly #slicesByService = new Map<string, string | Map<string, EndpointSlice>>();
  readonly #nodes = new Map<string, Node>();
  readonly #invalid = new Map<string, ModelError>();
  readonly #synced = new Set<KindName>();
  #endpointCount = 0;

  #ctx: BuildContext;
  readonly #state = new DerivedState();

  readonly #dirty = new Set<string>();
  readonly #serviceEvents = new Set<string>();
  readonly #endpointEvents = new Set<string>();
  readonly #triggerTimes = new Map<string, number>();
  #invalidDirty = false;
  #nodeDirty = false;

  #current: Snapshot | undefined;
  #pending = false;
  #lastPublishAt = Number.NEGATIVE_INFINITY;
  #lastBuildMs = 0;
  #publishes = 0;
  #disposed = false;

  /** @throws {ModelOptionsError} when the model options are invalid. */
  constructor(model: ModelOptions, options: ModelStoreOptions) {
    this.#prepared = prepareOptions(model);
    this.#onSnapshot = options.onSnapshot;
    this.#onSettled = options.onSettled;
    this.#minInterval = options.minIntervalMs ?? 5;
    this.#schedule = options.schedule ?? ((fn, ms) => setTimeout(fn, ms));
    this.#now = options.now ?? (() => performance.now());
    this.#startedAt = (options.wallClock ?? Date.now)();
    this.#ctx = { prepared: this.#prepared, nodeName: model.nodeName, zone: undefined };
  }

  /** The last published snapshot, if any. */
  current(): Snapshot | undefined {
    return this.#current;
  }

  /** Object and build counters. */
  get stats(): ModelStoreStats {
    return {
      services: this.#services.size,
      slices: this.#slices.size,
      endpoints: this.#endpointCount,
      lastBuildMs: this.#lastBuildMs,
      publishes: this.#publishes,
    };
  }

  /** Whether every kind has synced at least once. */
  get ready(): boolean {
    return this.#synced.size === KINDS.length;
  }

  /** The objects held now (for a full rebuild, and for tests). */
  objects(): {
    services: readonly Service[];
    endpointSlices: readonly EndpointSlice[];
    nodes: readonly Node[];
    invalid: readonly { kind: KindName; key: string; message: string }[];
  } {
    return {
      services: [...this.#services.values()],
      endpointSlices: [...this.#slices.values()].map((s) => s.slice),
      nodes: [...this.#nodes.values()],
      invalid: [...this.#invalid.values()].map((e) => ({ kind: e.kind as KindName, key: e.object, message: e.message })),
    };
  }

  apply(event: CacheEvent): void {
    switch (event.kind) {
      case "Service":
        this.#applyService(event as CacheEvent<"Service">);
        break;
      case "EndpointSlice":
        this.#applySlice(event as CacheEvent<"EndpointSlice">);
        break;
      case "Node":
        this.#applyNode(event as CacheEvent<"Node">);
        break;
    }
    if (event.type === "invalid") {
      const invalidKey = `${event.kind}\u0000${event.key}`;
      const previous = this.#invalid.get(invalidKey);
      if (previous?.message !== event.message) {
        this.#invalid.set(invalidKey, invalidError(event));
        this.#invalidDirty = true;
      }
    } else if (this.#invalid.size !== 0 && this.#invalid.delete(`${event.kind}\u0000${event.key}`)) {
      // (No key string is built per event while nothing is invalid: the common case.)
      this.#invalidDirty = true;
    }
    this.#request();
  }

  synced(kind: KindName): void {
    const wasReady = this.ready;
    this.#synced.add(kind);
    if (!wasReady && this.ready) this.#request();
  }

  /** Stop publishing; a pending flush does nothing. */
  [Symbol.dispose](): void {
    this.#disposed = true;
  }

  #applyService(event: CacheEvent<"Service">): void {
    if (event.type === "upsert") this.#services.set(event.key, event.object);
    else if (!this.#services.delete(event.key) && event.type === "delete") return;
    this.#dirty.add(event.key);
    this.#serviceEvents.add(event.key);
  }

  #applySlice(event: CacheEvent<"EndpointSlice">): void {
    const old = this.#slices.get(event.key);
    if (old) {
      this.#endpointCount -= old.slice.endpoints?.length ?? 0;
      this.#slices.delete(event.key);
      if (old.service !== undefined) {
        this.#unlinkSlice(old.service, event.key);
        this.#dirty.add(old.service);
        this.#endpointEvents.add(old.service);
      }
    }
    if (event.type !== "upsert") return;
    const slice = event.object;
    const service = sliceServiceKey(slice);
    this.#slices.set(event.key, { slice, service });
    this.#endpointCount += slice.endpoints?.length ?? 0;
    if (service === undefined) return;
    this.#linkSlice(service, event.key, slice);
    this.#dirty.add(service);
    this.#endpointEvents.add(service);
    const t = parseTriggerTime(slice);
    if (t !== undefined && t > this.#startedAt && t > (this.#triggerTimes.get(service) ?? Number.NEGATIVE_INFINITY)) {
      this.#triggerTimes.set(service, t);
    }
  }

  /** Add slice `key` (already in `#slices`) to Service `service`'s slices. */
  #linkSlice(service: string, key: string, slice: EndpointSlice): void {
    const group = this.#slicesByService.get(service);
    if (group === undefined) this.#slicesByService.set(service, key);
    else if (typeof group !== "string") group.set(key, slice);
    else if (group !== key) {
      const only = (this.#slices.get(group) as StoredSlice).slice;
      this.#slicesByService.set(service, new Map([[group, only], [key, slice]]));
    }
  }

  /** Remove slice `key` from Service `service`'s slices. */
  #unlinkSlice(service: string, key: string): void {
    const group = this.#slicesByService.get(service);
    if (group === undefined) return;
    if (typeof group === "string") {
      if (group === key) this.#slicesByService.delete(service);
      return;
    }
    group.delete(key);
    if (group.size === 1) this.#slicesByService.set(service, group.keys().next().value as string);
    else if (group.size === 0) this.#slicesByService.delete(service);
  }

  /** Service `service`'s slices. */
  #slicesOf(service: string): Iterable<EndpointSlice> {
    const group = this.#slicesByService.get(service);
    if (group === undefined) return [];
    if (typeof group === "string") return [(this.#slices.get(group) as StoredSlice).slice];
    return group.values();
  }

  #applyNode(event: CacheEvent<"Node">): void {
    if (event.type === "upsert") this.#nodes.set(event.key, event.object);
    else this.#nodes.delete(event.key);
    if (event.key === this.#prepared.options.nodeName) this.#nodeDirty = true;
  }

  #request(): void {
    if (this.#pending || this.#disposed || !this.ready) return;
    this.#pending = true;
    const wait = Math.max(0, this.#lastPublishAt + this.#minInterval - this.#now());
    this.#schedule(() => {
      this.#pending = false;
      if (!this.#disposed) this.flush();
    }, wait);
  }

  /**
   * Apply pending changes now and publish when the snapshot changed (a pending scheduled flush then
   * finds nothing to do). Does nothing before every kind has synced. Returns the current snapshot.
   */
  flush(): Snapshot | undefined {
    if (!this.ready || this.#disposed) return this.#current;
    const started = this.#now();
    const prev = this.#current;
    const nodeChanged = this.#refreshZone() || prev === undefined;
    const state = this.#state;
    const services = applyServiceChanges(state, this.#dirty, (key, previous) => {
      const service = this.#services.get(key);
      return service ? computeService(service, this.#slicesOf(key), this.#ctx, previous) : EMPTY_RESULT;
    });
    const entrypoints = resolveEntrypoints(state, services);
    const healthChecks = resolveHealthChecks(state, services);
    const snapshot = assembleSnapshot(prev, state, {
      entrypoints,
      healthChecks,
      errorsChanged: this.#invalidDirty || services.errorsChanged || entrypoints.errorsChanged || healthChecks.errorsChanged,
      invalid: this.#invalid.values(),
      node: nodeChanged ? nodeInfo(this.#ctx.nodeName, this.#ctx.zone) : undefined,
    });
    const buildMs = this.#now() - started;

    /* bookkeeping, from what the phases returned */
    const info = this.#publishInfo(services.services, buildMs);
    this.#invalidDirty = false;
    this.#dirty.clear();
    this.#serviceEvents.clear();
    this.#endpointEvents.clear();
    this.#triggerTimes.clear();
    this.#lastBuildMs = buildMs;
    if (snapshot === prev) {
      this.#onSettled?.(buildMs);
      return prev;
    }
    this.#current = snapshot;
    this.#publishes++;
    this.#lastPublishAt = this.#now();
    this.#onSnapshot(snapshot, info);
    return snapshot;
  }

  /** Read this node's zone when its Node changed; when the zone differs, every Service is dirty. Whether it did. */
  #refreshZone(): boolean {
    if (!this.#nodeDirty) return false;
    this.#nodeDirty = false;
    const zone = nodeZone(this.#nodes.get(this.#prepared.options.nodeName));
    if (zone === this.#ctx.zone) return false;
    this.#ctx = { ...this.#ctx, zone };
    for (const key of this.#services.keys()) this.#dirty.add(key);
    return true;
  }

  /** kube-proxy's counts for the Services that changed (`changed`), from the events received since the last flush. */
  #publishInfo(changed: ReadonlySet<string>, buildMs: number): PublishInfo {
    let serviceChanges = 0;
    let endpointChanges = 0;
    const triggerTimes: number[] = [];
    for (const key of changed) {
      if (this.#serviceEvents.has(key)) serviceChanges++;
      if (this.#endpointEvents.has(key)) {
        endpointChanges++;
        const t = this.#triggerTimes.get(key);
        if (t !== undefined) triggerTimes.push(t);
      }
    }
    triggerTimes.sort((a, b) => a - b);
    return Object.freeze({ serviceChanges, endpointChanges, triggerTimes: Object.freeze(triggerTimes), buildMs });
  }
}
