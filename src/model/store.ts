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
 * `store.flush()` equals `buildSnapshot(...)` of the same objects (see test/model/store.test.ts).
 */
import type { EndpointSlice, KindName, Node, Service } from "../kube/objects.ts";
import type { CacheEvent, SourceSink } from "../kube/source.ts";
import { compareErrors, compareKeys, entrypointError, invalidError, NO_HEALTH_CHECKS, nodeInfo } from "./build.ts";
import { ClaimIndex, withError } from "./conflicts.ts";
import { sliceServiceKey } from "./endpoints.ts";
import { compareHealthChecks, healthCheckConflict, healthCheckError } from "./health.ts";
import {
  type BuildContext,
  compareRank,
  computeService,
  EMPTY_RESULT,
  type Exposure,
  type HealthCandidate,
  nodeZone,
  type PreparedOptions,
  prepareOptions,
  type Rank,
  type ServiceResult,
} from "./service.ts";
import type { Entrypoint, EntrypointDelta, HealthCheckService, ModelError, ModelOptions, Snapshot } from "./types.ts";

/** The slice annotation holding when the change that produced it happened. */
export const LAST_CHANGE_TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time";

const KINDS: readonly KindName[] = ["Service", "EndpointSlice", "Node"];

const NO_KEYS: ReadonlySet<string> = new Set();

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

function sameRank(a: Rank, b: Rank): boolean {
  return compareRank(a, b) === 0;
}

function sameAddresses(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameErrors(a: readonly ModelError[], b: readonly ModelError[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as ModelError;
    const y = b[i] as ModelError;
    if (x !== y && (x.kind !== y.kind || x.object !== y.object || x.message !== y.message)) return false;
  }
  return true;
}

/** Index of `check` (by port and Service) in health checks sorted by {@link compareHealthChecks}, or -1. */
function indexOfCheck(checks: readonly HealthCheckService[], check: HealthCheckService): number {
  let lo = 0;
  let hi = checks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const order = compareHealthChecks(checks[mid] as HealthCheckService, check);
    if (order === 0) return mid;
    if (order < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Whether one of `exposures` (a Service's few) is of entrypoint `key`. */
function hasExposure(exposures: readonly Exposure[], key: string): boolean {
  for (let i = 0; i < exposures.length; i++) if ((exposures[i] as Exposure).entrypoint.key === key) return true;
  return false;
}

/** Index of `key` in entrypoints sorted by key, or -1. */
function indexOfKey(entrypoints: readonly Entrypoint[], key: string): number {
  let lo = 0;
  let hi = entrypoints.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const k = (entrypoints[mid] as Entrypoint).key;
    if (k === key) return mid;
    if (k < key) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** The entrypoint with `key` in `entrypoints` (sorted by key, as in a snapshot), by binary search. */
export function entrypointByKey(entrypoints: readonly Entrypoint[], key: string): Entrypoint | undefined {
  const at = indexOfKey(entrypoints, key);
  return at === -1 ? undefined : entrypoints[at];
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
  readonly #results = new Map<string, ServiceResult>();
  readonly #exposures = new Map<string, Exposure>();
  readonly #finals = new Map<string, Entrypoint>();
  readonly #claims = new ClaimIndex();
  readonly #serviceErrors = new Map<string, readonly ModelError[]>();
  readonly #conflicted = new Set<string>();
  /** Health check candidates by Service key, and the Service keys per health check port. */
  readonly #healthCandidates = new Map<string, HealthCandidate>();
  readonly #healthByPort = new Map<number, Set<string>>();
  /** Served health checks, and the errors of skipped ones, by Service key. */
  readonly #healthFinals = new Map<string, HealthCheckService>();
  readonly #healthErrors = new Map<string, ModelError>();

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
    let nodeChanged = this.#current === undefined;
    if (this.#nodeDirty) {
      this.#nodeDirty = false;
      const zone = nodeZone(this.#nodes.get(this.#prepared.options.nodeName));
      if (zone !== this.#ctx.zone) {
        this.#ctx = { ...this.#ctx, zone };
        nodeChanged = true;
        for (const key of this.#services.keys()) this.#dirty.add(key);
      }
    }

    const changed = new Map<string, Entrypoint | null>();
    const touched: [port: number, address: string][] = [];
    const touch = (port: number, address: string) => void touched.push([port, address]);
    const affected = new Set<string>();
    const changedServices = new Set<string>();
    let errorsChanged = this.#invalidDirty;
    this.#invalidDirty = false;
    const healthPorts = new Set<number>();
    const healthServices = new Set<string>();

    for (const key of this.#dirty) {
      const previous = this.#results.get(key) ?? EMPTY_RESULT;
      const service = this.#services.get(key);
      const next = service ? computeService(service, this.#slicesOf(key), this.#ctx, previous) : EMPTY_RESULT;
      if (next === EMPTY_RESULT) this.#results.delete(key);
      else this.#results.set(key, next);
      let serviceChanged = false;
      if (!sameErrors(previous.errors, next.errors)) {
        errorsChanged = true;
        serviceChanged = true;
        if (next.errors.length > 0) this.#serviceErrors.set(key, next.errors);
        else this.#serviceErrors.delete(key);
      }
      // A linear scan for the usual few exposures; a set when a Service has many ports.
      const nextKeys =
        previous.exposures.length * next.exposures.length > 256 ? new Set(next.exposures.map((e) => e.entrypoint.key)) : undefined;
      for (const old of previous.exposures) {
        const epKey = old.entrypoint.key;
        if (nextKeys !== undefined ? nextKeys.has(epKey) : hasExposure(next.exposures, epKey)) continue;
        this.#claims.remove(old, touch);
        this.#exposures.delete(epKey);
        this.#finals.delete(epKey);
        if (this.#conflicted.delete(epKey)) errorsChanged = true;
        changed.set(epKey, null);
        serviceChanged = true;
      }
      for (const exposure of next.exposures) {
        const epKey = exposure.entrypoint.key;
        const old = this.#exposures.get(epKey);
        if (
          old &&
          old.claimPort === exposure.claimPort &&
          sameRank(old.rank, exposure.rank) &&
          sameAddresses(old.entrypoint.addresses, exposure.entrypoint.addresses)
        ) {
          /* same claims: keep the indexed exposure object, refresh its entrypoint */
          if (old.entrypoint !== exposure.entrypoint) {
            this.#exposures.set(epKey, exposure);
            this.#claims.replace(old, exposure);
            serviceChanged = true;
          }
        } else {
          if (old) this.#claims.remove(old, touch);
          this.#exposures.set(epKey, exposure);
          this.#claims.add(exposure, touch);
          serviceChanged = true;
        }
        affected.add(epKey);
      }
      if (previous.healthCheck !== next.healthCheck) {
        this.#setHealthCandidate(key, previous.healthCheck, next.healthCheck, healthPorts);
        healthServices.add(key);
        serviceChanged = true;
      }
      if (serviceChanged) changedServices.add(key);
    }

    for (const [port, address] of touched) {
      for (const exposure of this.#claims.claimants(port, address)) affected.add(exposure.entrypoint.key);
    }
    for (const epKey of affected) {
      const exposure = this.#exposures.get(epKey);
      if (!exposure) continue;
      const previous = this.#finals.get(epKey);
      const error = this.#claims.conflictError(exposure);
      const final = withError(exposure.entrypoint, error, previous);
      if (final === previous) continue;
      this.#finals.set(epKey, final);
      changed.set(epKey, final);
      if (previous?.error !== error) {
        errorsChanged = true;
        if (error === undefined) this.#conflicted.delete(epKey);
        else this.#conflicted.add(epKey);
      }
    }

    /* health checks: re-evaluate the changed ones and every one on a port whose claims changed */
    for (const [port] of touched) if (port % 2 === 0 && this.#healthByPort.has(port / 2)) healthPorts.add(port / 2);
    for (const port of healthPorts) for (const key of this.#healthByPort.get(port) ?? []) healthServices.add(key);
    const healthChanged: { key: string; old: HealthCheckService | undefined; next: HealthCheckService | undefined }[] = [];
    for (const key of healthServices) {
      const candidate = this.#healthCandidates.get(key);
      const old = this.#healthFinals.get(key);
      const oldError = this.#healthErrors.get(key);
      let error: string | undefined;
      if (candidate) {
        const rivals: HealthCandidate[] = [];
        for (const k of this.#healthByPort.get(candidate.check.port) ?? []) rivals.push(this.#healthCandidates.get(k) as HealthCandidate);
        error = healthCheckConflict(candidate, this.#claims, rivals);
      }
      const next = candidate && error === undefined ? candidate.check : undefined;
      if (next !== old) {
        if (next) this.#healthFinals.set(key, next);
        else this.#healthFinals.delete(key);
        healthChanged.push({ key, old, next });
      }
      if (candidate && error !== undefined) {
        if (oldError?.message !== error) {
          this.#healthErrors.set(key, healthCheckError(candidate.check, error));
          errorsChanged = true;
        }
      } else if (oldError) {
        this.#healthErrors.delete(key);
        errorsChanged = true;
      }
    }

    const prev = this.#current;
    const healthChecks = this.#mergeHealthChecks(prev?.healthChecks ?? NO_HEALTH_CHECKS, healthChanged);
    const merged = this.#mergeEntrypoints(prev?.entrypoints ?? [], changed);
    const entrypoints = merged.entrypoints;
    const errors = errorsChanged ? this.#collectErrors(prev?.errors ?? []) : (prev?.errors ?? Object.freeze([]));
    const node = nodeChanged ? nodeInfo(this.#ctx.nodeName, this.#ctx.zone) : (prev as Snapshot).node;

    let serviceChanges = 0;
    let endpointChanges = 0;
    const triggerTimes: number[] = [];
    for (const key of changedServices) {
      if (this.#serviceEvents.has(key)) serviceChanges++;
      if (this.#endpointEvents.has(key)) {
        endpointChanges++;
        const t = this.#triggerTimes.get(key);
        if (t !== undefined) triggerTimes.push(t);
      }
    }
    this.#dirty.clear();
    this.#serviceEvents.clear();
    this.#endpointEvents.clear();
    this.#triggerTimes.clear();

    const buildMs = this.#now() - started;
    this.#lastBuildMs = buildMs;
    if (prev && entrypoints === prev.entrypoints && errors === prev.errors && node === prev.node && healthChecks === prev.healthChecks) {
      this.#onSettled?.(buildMs);
      return prev;
    }
    const version = (prev?.version ?? 0) + 1;
    const snapshot: Snapshot = { version, entrypoints, errors, node, healthChecks };
    if (prev !== undefined) {
      const delta: EntrypointDelta = Object.freeze({ base: prev.entrypoints, changed: merged.changed });
      Object.defineProperty(snapshot, "delta", { value: delta, enumerable: false });
    }
    Object.freeze(snapshot);
    this.#current = snapshot;
    this.#publishes++;
    this.#lastPublishAt = this.#now();
    triggerTimes.sort((a, b) => a - b);
    this.#onSnapshot(snapshot, Object.freeze({ serviceChanges, endpointChanges, triggerTimes: Object.freeze(triggerTimes), buildMs }));
    return snapshot;
  }

  /** Record Service `key`'s health check candidate changing from `old` to `next`; marks the ports involved. */
  #setHealthCandidate(key: string, old: HealthCandidate | undefined, next: HealthCandidate | undefined, ports: Set<number>): void {
    if (old) {
      const keys = this.#healthByPort.get(old.check.port);
      keys?.delete(key);
      if (keys?.size === 0) this.#healthByPort.delete(old.check.port);
      this.#healthCandidates.delete(key);
      ports.add(old.check.port);
    }
    if (next) {
      let keys = this.#healthByPort.get(next.check.port);
      if (!keys) this.#healthByPort.set(next.check.port, (keys = new Set()));
      keys.add(key);
      this.#healthCandidates.set(key, next);
      ports.add(next.check.port);
    }
  }

  /**
   * The previous health checks with the changes applied, sorted; `prev` when unchanged. A change of content only
   * (same port) is patched in place of a copy; anything else rebuilds the list from the served ones.
   */
  #mergeHealthChecks(
    prev: readonly HealthCheckService[],
    changes: readonly { old: HealthCheckService | undefined; next: HealthCheckService | undefined }[],
  ): readonly HealthCheckService[] {
    if (changes.length === 0) return prev;
    if (changes.every((c) => c.old && c.next && c.old.port === c.next.port)) {
      const at = changes.map((c) => indexOfCheck(prev, c.old as HealthCheckService));
      if (!at.includes(-1)) {
        const out = prev.slice();
        changes.forEach((c, i) => (out[at[i] as number] = c.next as HealthCheckService));
        return Object.freeze(out);
      }
    }
    if (this.#healthFinals.size === 0) return NO_HEALTH_CHECKS;
    return Object.freeze([...this.#healthFinals.values()].sort(compareHealthChecks));
  }

  /**
   * The previous entrypoints with `changed` applied (null = removed), sorted by key (`prev` itself when
   * nothing differs), and exactly the keys whose entrypoint object differs between the two lists.
   */
  #mergeEntrypoints(
    prev: readonly Entrypoint[],
    changed: Map<string, Entrypoint | null>,
  ): { entrypoints: readonly Entrypoint[]; changed: ReadonlySet<string> } {
    if (changed.size === 0) return { entrypoints: prev, changed: NO_KEYS };
    const keys = new Set<string>();
    let replaceOnly = true;
    const positions: number[] = [];
    for (const [key, entrypoint] of changed) {
      const at = indexOfKey(prev, key);
      const old = at === -1 ? undefined : prev[at];
      if (old === (entrypoint ?? undefined)) continue;
      keys.add(key);
      if (at === -1 || entrypoint === null) replaceOnly = false;
      else positions.push(at);
    }
    if (keys.size === 0) return { entrypoints: prev, changed: NO_KEYS };
    if (replaceOnly) {
      /* not frozen: see FREEZE_NOTE in build.ts. One copy of the list per publish (about 0.3 ms at 10k). */
      const first = positions[0] as number;
      const out = prev.with(first, changed.get((prev[first] as Entrypoint).key) as Entrypoint);
      for (let i = 1; i < positions.length; i++) {
        const at = positions[i] as number;
        out[at] = changed.get((prev[at] as Entrypoint).key) as Entrypoint;
      }
      return { entrypoints: out, changed: keys };
    }
    const additions: Entrypoint[] = [];
    for (const entrypoint of changed.values()) if (entrypoint) additions.push(entrypoint);
    additions.sort((a, b) => compareKeys(a.key, b.key));
    const out: Entrypoint[] = [];
    let j = 0;
    for (const entrypoint of prev) {
      if (changed.has(entrypoint.key)) continue;
      while (j < additions.length && (additions[j] as Entrypoint).key < entrypoint.key) out.push(additions[j++] as Entrypoint);
      out.push(entrypoint);
    }
    while (j < additions.length) out.push(additions[j++] as Entrypoint);
    return { entrypoints: out, changed: keys };
  }

  #collectErrors(prev: readonly ModelError[]): readonly ModelError[] {
    const errors: ModelError[] = [...this.#invalid.values()];
    for (const list of this.#serviceErrors.values()) errors.push(...list);
    for (const epKey of this.#conflicted) {
      const final = this.#finals.get(epKey);
      if (final) errors.push(entrypointError(final));
    }
    for (const error of this.#healthErrors.values()) errors.push(error);
    errors.sort(compareErrors);
    return sameErrors(prev, errors) ? prev : Object.freeze(errors);
  }
}
