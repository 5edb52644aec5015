/**
 * Listener reconciliation: keeps the bound sockets equal to what the latest snapshot asks for. This file
 * orchestrates; each job has its own file:
 *
 * - reconcile.ts decides: only endpoints changed (swap the routes of those entrypoints into their
 *   listeners' {@link RouteRef}s, so new connections take the new endpoints while open ones finish where
 *   they are: Traefik's switcher), or plan the slots anew: new (address, port) -> bind; unchanged -> stays
 *   bound, its route swapped; removed or protocol changed (tcp <-> http) -> retired, then rebound.
 * - bind-queue.ts decides when TCP binds happen: the first `syncBinds` in `apply`, the rest in slices of
 *   about `bindSliceMs` between which the event loop runs (the first snapshot at 10k Services; see
 *   {@link ListenerManager.settled}); a port that cannot be bound is an error on that entrypoint only
 *   (see {@link ListenerManager.status}), retried on the next apply and on a timer.
 * - file-reserve.ts keeps file descriptors back from listeners (health, admin, the API watch and connections
 *   need some): a bind past the soft limit minus the reserve fails with EMFILE and what to do, like one the
 *   kernel refused.
 * - udp-binding.ts binds UDP entrypoints (asynchronously) with the UDP proxy's flow table.
 * - source-admission.ts runs loadBalancerSourceRanges where connections open and flows start.
 * - drain.ts retires listeners: stop accepting now, drain up to a grace period, close (UDP: at once).
 * - report.ts: status per entrypoint, totals, and log lines about what is not served.
 */
import { type Logger, silentLogger } from "../log.ts";
import type { Snapshot } from "../model/types.ts";
import { defaultProxyOptions, routeTraffic } from "../proxy/types.ts";
import type { ListenerProxyFactory, ProxyOptions } from "../proxy/types.ts";
import type { UdpListenerProxy, UdpProxyFactory } from "../proxy/udp/types.ts";
import type { RouteBuilder } from "../routes/builder.ts";
import type { Route, RouteRef } from "../routes/types.ts";
import { rt } from "../runtime/index.ts";
import type { Runtime, TcpHandlers } from "../runtime/types.ts";
import { BindQueue, bindErrorMessage } from "./bind-queue.ts";
import { desiredListeners } from "./desired.ts";
import { Drains } from "./drain.ts";
import { DEFAULT_FILE_RESERVE, FileReserve } from "./file-reserve.ts";
import { endpointsOnlyChanges, nextRoutes, planSlots } from "./reconcile.ts";
import { type EntrypointListeners, type ListenerCounts, ListenerReport } from "./report.ts";
import type { Slot, SlotProxy } from "./slot.ts";
import { SourceAdmission } from "./source-admission.ts";
import { bindUdpSlot, type UdpBindContext } from "./udp-binding.ts";

export type { EntrypointListeners, ListenerCounts, ListenerState } from "./report.ts";

/** The data plane to run per protocol. */
export interface ListenerProxyFactories {
  readonly http: ListenerProxyFactory;
  /** HTTP/2 cleartext (gRPC); without it, h2c entrypoints are served by the `tcp` factory (L4, per connection). */
  readonly h2c?: ListenerProxyFactory | undefined;
  readonly tcp: ListenerProxyFactory;
  /** Without it, UDP entrypoints are reported as not served. */
  readonly udp?: UdpProxyFactory | undefined;
}

export interface ListenerManagerOptions {
  /**
   * Builds each entrypoint's route and keeps affinity tables and ExternalName resolvers across snapshots.
   * Supplied by whoever builds the manager (the data plane, `data-plane/index.ts`), which also disposes it.
   */
  readonly routes: RouteBuilder;
  /** Data-plane settings handed to every proxy. */
  readonly proxyOptions?: ProxyOptions | undefined;
  /** How long removed listeners wait for open connections before closing them, ms (default 30 s). */
  readonly drainGraceMs?: number | undefined;
  /** How often listeners that failed to bind are retried, ms (default 5 s; 0: only on `apply`). */
  readonly retryIntervalMs?: number | undefined;
  /**
   * New TCP listeners bound within `apply` (default 256); more are queued and bound in slices of about
   * `bindSliceMs` (default 5 ms) with the event loop running between them. {@link ListenerManager.settled}
   * resolves once the queue is empty.
   */
  readonly syncBinds?: number | undefined;
  readonly bindSliceMs?: number | undefined;
  readonly log?: Logger | undefined;
  /** The bind function (default: the current runtime's). */
  readonly listenTcp?: Runtime["listenTcp"] | undefined;
  /**
   * Bind TCP listeners with SO_REUSEPORT, so that several processes (the worker data planes) each bind every
   * entrypoint and the kernel spreads new connections over them (default false: one process per port).
   */
  readonly reusePort?: boolean | undefined;
  /** The UDP bind function (default: the current runtime's). */
  readonly bindUdp?: Runtime["bindUdp"] | undefined;
  /**
   * File descriptors kept from new listeners for health, admin, the API watch and accepted connections: a bind that
   * would eat into them fails with EMFILE and what to do (default: {@link DEFAULT_FILE_RESERVE} of this process's).
   */
  readonly fileReserve?: FileReserve | undefined;
  /** At most one log line per entrypoint per this interval about refused sources, ms (default 10 s). */
  readonly refusedLogIntervalMs?: number | undefined;
}

const DEFAULT_DRAIN_GRACE_MS = 30_000;
const DEFAULT_REFUSED_LOG_INTERVAL_MS = 10_000;
const DEFAULT_SYNC_BINDS = 256;

/**
 * Owns every data-plane listener. Call {@link apply} with each new snapshot; dispose to drain and close.
 *
 * @example
 * await using listeners = new ListenerManager({ http: createHttpProxy, tcp: createTcpProxy, udp: createUdpProxy }, { routes, drainGraceMs: 5_000, log });
 * listeners.apply(snapshot);
 * await listeners.settled(); // UDP binds, and TCP binds beyond `syncBinds`, finish later
 * listeners.status(); // [{ key: "NodePort/ns/web:http", listeners: [{ address: "127.0.0.1", port: 30080, bound: true }] }]
 */
export class ListenerManager implements AsyncDisposable {
  readonly #factories: ListenerProxyFactories;
  readonly #proxyOptions: ProxyOptions;
  readonly #drainGraceMs: number;
  readonly #log: Logger;
  readonly #listenTcp: Runtime["listenTcp"];
  readonly #reusePort: boolean;
  /** Route construction, with the per-entrypoint state that outlives routes (owned by whoever built the manager). */
  readonly #routeBuilder: RouteBuilder;
  readonly #binds: BindQueue<Slot>;
  /** Set when there is a UDP proxy (without one, UDP entrypoints get no slots). */
  readonly #udp: UdpBindContext | undefined;
  readonly #admission: SourceAdmission;
  readonly #drains: Drains;
  readonly #report: ListenerReport;
  /** The last snapshot applied (for the endpoint-churn fast path). */
  #applied: Snapshot | undefined;
  /** Wanted listeners by listener key, in snapshot order. */
  #slots = new Map<string, Slot>();
  /** The same slots by entrypoint key (rebuilt by the full reconcile). */
  #slotsByEntrypoint = new Map<string, Slot[]>();
  /** Routes by entrypoint key: the listeners of one entrypoint share one balancer. */
  #routes = new Map<string, Route>();
  #closed = false;

  constructor(factories: ListenerProxyFactories, options: ListenerManagerOptions) {
    this.#factories = factories;
    this.#routeBuilder = options.routes;
    this.#proxyOptions = options.proxyOptions ?? defaultProxyOptions;
    this.#drainGraceMs = options.drainGraceMs ?? DEFAULT_DRAIN_GRACE_MS;
    this.#log = options.log ?? silentLogger;
    const files = options.fileReserve ?? new FileReserve({ openFiles: rt.openFiles, fileLimit: rt.fileLimit });
    this.#listenTcp = files.guard(options.listenTcp ?? rt.listenTcp) as Runtime["listenTcp"];
    this.#reusePort = options.reusePort ?? false;
    this.#drains = new Drains(this.#log);
    this.#report = new ListenerReport(this.#log);
    this.#admission = new SourceAdmission({
      log: this.#log,
      logIntervalMs: options.refusedLogIntervalMs ?? DEFAULT_REFUSED_LOG_INTERVAL_MS,
      onRefused: (slot) => {
        const route = this.#routes.get(slot.entrypoint.key);
        if (route !== undefined) routeTraffic(this.#proxyOptions.telemetry, route)?.error("source_refused");
      },
    });
    this.#binds = new BindQueue<Slot>({
      bind: (slot) => this.#bindTcp(slot),
      // Still wanted (not removed or replaced by a later snapshot) and still unbound.
      wanted: (slot) => this.#slots.get(slot.key) === slot && slot.listener === undefined,
      anyFailed: () => {
        for (const slot of this.#slots.values()) if (this.#failed(slot)) return true;
        return false;
      },
      retry: () => this.retryFailed(),
      onIdle: () => this.#report.changed(),
      syncBinds: options.syncBinds ?? DEFAULT_SYNC_BINDS,
      sliceMs: options.bindSliceMs,
      retryIntervalMs: options.retryIntervalMs,
    });
    this.#udp = factories.udp && {
      factory: factories.udp,
      options: this.#proxyOptions,
      bindUdp: files.guardAsync(options.bindUdp ?? rt.bindUdp),
      reusePort: options.reusePort ?? false,
      wanted: (slot) => !this.#closed && this.#slots.get(slot.key) === slot,
      route: (slot) => this.#routes.get(slot.entrypoint.key),
      admit: (slot, address) => this.#admission.admit(slot, address),
      bound: (slot, ref, proxy) => this.#bound(slot, ref, proxy, proxy),
      failed: (slot, err) => {
        this.#bindFailed(slot, err);
        this.#binds.scheduleRetry();
      },
      changed: () => this.#report.changed(),
      track: (bind) => this.#binds.track(bind),
    };
  }

  /**
   * Reconcile the listeners with `snapshot`. Never throws: a listener that cannot be bound is reported in
   * {@link status}. TCP listeners are bound when this returns (up to `syncBinds` new ones; the rest are
   * queued); UDP binds finish later (see {@link settled}).
   */
  apply(snapshot: Snapshot): void {
    if (this.#closed) {
      this.#log.warn("Snapshot ignored: the listener manager is closed", { version: snapshot.version });
      return;
    }
    const previous = this.#applied;
    this.#applied = snapshot;
    const changed = previous === undefined ? undefined : endpointsOnlyChanges(previous, snapshot);
    if (changed !== undefined) {
      // Endpoint churn: O(changed) work instead of rebuilding every listener map (tens of ms at 10k).
      for (const entrypoint of changed) {
        const slots = this.#slotsByEntrypoint.get(entrypoint.key);
        if (slots === undefined) continue; // not served (e.g. UDP without a UDP proxy): nothing is bound
        const route = this.#routeBuilder.route(entrypoint, this.#routes.get(entrypoint.key));
        this.#routes.set(entrypoint.key, route);
        for (const slot of slots) {
          slot.entrypoint = entrypoint;
          if (slot.listener !== undefined && slot.ref!.current !== route) slot.ref!.current = route;
        }
      }
      // Like the full reconcile, every apply retries listeners that failed to bind.
      if (this.#binds.failing) this.retryFailed();
      return;
    }

    const desired = desiredListeners(snapshot, { udp: this.#factories.udp !== undefined });
    this.#routes = nextRoutes(this.#routeBuilder, desired.listeners.values(), this.#routes);
    this.#admission.update(desired.listeners.values());
    const plan = planSlots(this.#slots, desired.listeners);
    // Removed and protocol-changed listeners first, so their ports are free for what replaces them.
    for (const { slot, reason } of plan.removed) this.#drains.retire(slot, this.#drainGraceMs, reason);
    const toBind: Slot[] = [];
    for (const slot of plan.slots.values()) {
      slot.guard = this.#admission.guards.get(slot.entrypoint.key);
      if (slot.listener !== undefined) {
        const route = this.#routes.get(slot.entrypoint.key)!;
        if (slot.ref!.current !== route) slot.ref!.current = route;
        this.#admission.rehandle(slot);
      } else if (!this.#pending(slot)) toBind.push(slot);
    }
    this.#slots = plan.slots;
    this.#slotsByEntrypoint = plan.byEntrypoint;
    this.#bindAll(toBind);
    this.#report.record(desired.skipped, this.#admission.guards.values());
    this.#binds.scheduleRetry();
  }

  /** Resolves once no UDP bind is in flight and no TCP bind is queued. */
  settled(): Promise<void> {
    return this.#binds.settled();
  }

  /** Bind state per entrypoint key, sorted by key; only entrypoints that asked for listeners. */
  status(): EntrypointListeners[] {
    return this.#report.status(this.#slots.values(), this.#admission.guards);
  }

  /**
   * Listener, connection and flow totals. Cheap enough to call on every snapshot at 10k listeners: the
   * listener totals are kept between changes of bind state, and `connections` and `flows` (which ask
   * every proxy) are counted when read.
   */
  counts(): ListenerCounts {
    return this.#report.counts(this.#slots, (slot) => this.#pending(slot), this.#drains, this.#admission.refused());
  }

  /** Retry binding the listeners that failed (also runs on a timer while any have failed). */
  retryFailed(): void {
    const failed: Slot[] = [];
    for (const slot of this.#slots.values()) if (this.#failed(slot)) failed.push(slot);
    this.#bindAll(failed);
    this.#binds.scheduleRetry();
  }

  /**
   * Stop accepting on every listener, wait up to `graceMs` for open connections (also those of
   * listeners already draining), then close what is left. The route builder is its owner's to dispose.
   */
  async close(graceMs: number = this.#drainGraceMs): Promise<void> {
    this.#closed = true;
    this.#binds.close();
    for (const slot of this.#slots.values()) this.#drains.retire(slot, graceMs, "shutting down");
    this.#slots.clear();
    this.#report.clear();
    // A UDP bind still in flight closes its socket as it completes (its slot is no longer wanted).
    await this.settled();
    await this.#drains.close(graceMs);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** A UDP bind is in flight, or a TCP bind is queued: neither bound nor failed yet. */
  #pending(slot: Slot): boolean {
    return slot.binding || this.#binds.queued(slot);
  }

  #failed(slot: Slot): boolean {
    return slot.listener === undefined && !this.#pending(slot);
  }

  /** Bind `slots` (none bound, none pending): UDP ones start now; TCP ones now or through the bind queue. */
  #bindAll(slots: readonly Slot[]): void {
    this.#report.changed();
    const tcp: Slot[] = [];
    for (const slot of slots) {
      if (slot.protocol === "udp") bindUdpSlot(slot, this.#routes.get(slot.entrypoint.key)!, this.#udp!);
      else tcp.push(slot);
    }
    this.#binds.bind(tcp);
  }

  /** Bind one TCP listener with its entrypoint's current route. */
  #bindTcp(slot: Slot): void {
    const ref: RouteRef = { current: this.#routes.get(slot.entrypoint.key)! };
    const f = this.#factories;
    const factory = slot.protocol === "http" ? f.http : slot.protocol === "h2c" ? (f.h2c ?? f.tcp) : f.tcp;
    const proxy = factory(ref, this.#proxyOptions);
    const handlers = proxy.handlers as TcpHandlers<unknown>;
    try {
      slot.listener = this.#listenTcp({
        hostname: slot.address,
        port: slot.port,
        handlers: this.#admission.handlers(slot, handlers),
        ...(this.#reusePort ? { reusePort: true } : {}),
      });
    } catch (err) {
      return this.#bindFailed(slot, err);
    }
    slot.handlers = handlers;
    slot.guarded = slot.guard !== undefined;
    this.#bound(slot, ref, proxy, undefined);
  }

  #bound(slot: Slot, ref: RouteRef, proxy: SlotProxy, udp: UdpListenerProxy | undefined): void {
    const fields = { entrypoint: slot.entrypoint.key, address: slot.address, port: slot.port, protocol: slot.protocol };
    if (slot.error !== undefined) this.#log.info("Listener bound after earlier failure", fields);
    else this.#log.info("Listener bound", fields);
    slot.ref = ref;
    slot.proxy = proxy;
    slot.udp = udp;
    slot.error = undefined;
    this.#report.changed();
  }

  #bindFailed(slot: Slot, err: unknown): void {
    const error = bindErrorMessage(`Cannot bind listener "${slot.entrypoint.name}"`, slot.address, slot.port, err);
    // Log a failure once, not on every retry.
    if (error !== slot.error) {
      this.#log.error("Listener not bound", { entrypoint: slot.entrypoint.key, address: slot.address, port: slot.port, protocol: slot.protocol, error });
    }
    slot.error = error;
    this.#report.changed();
  }
}
