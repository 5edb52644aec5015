/**
 * Listener reconciliation: keeps the bound sockets equal to what the latest snapshot asks for.
 *
 * - New (address, port) -> bind, with the proxy of the entrypoint's protocol.
 * - Unchanged -> stays bound; when the entrypoint changed, its {@link RouteRef} is swapped, so new
 *   connections take the new endpoints while open ones finish where they are (Traefik's switcher).
 * - Removed -> stop accepting now, drain open connections up to a grace period, then close them.
 * - Protocol change (tcp <-> http) on the same address:port -> the old one is closed, a new one bound.
 * - A port that cannot be bound is an error on that entrypoint only (see {@link ListenerManager.status});
 *   it is retried on the next apply and on a timer.
 * - Many new listeners at once (the first snapshot at 10k Services): the first `syncBinds` are bound in
 *   `apply`, the rest in slices of about `bindSliceMs` between which the event loop runs, so routes
 *   switch, watches are read and health is answered while thousands of ports are bound (see
 *   {@link ListenerManager.settled}).
 * - UDP entrypoints get a UDP socket (`bindUdp`, asynchronous: see {@link ListenerManager.settled}) and
 *   the UDP proxy's flow table; a removed UDP listener closes at once (there is nothing to drain).
 * - loadBalancerSourceRanges: a connection from outside the entrypoint's CIDRs is terminated in `open`,
 *   before the proxy sees it (so before any upstream connect); a UDP datagram from outside is dropped
 *   before a flow is made. Refusals are counted per entrypoint and logged at a rate limit. Only `open`
 *   (and `close`, to hide refused sockets from the proxy) is wrapped, and only on listeners whose
 *   entrypoint has ranges: the data path pays nothing.
 */
import { RouteBuilder } from "../routes/builder.ts";
import { type Logger, rateLimited, silentLogger } from "../log.ts";
import { entrypointByKey } from "../model/store.ts";
import type { Entrypoint, Snapshot } from "../model/types.ts";
import { DnsRegistry } from "../routes/dns/registry.ts";
import { defaultProxyOptions, routeTraffic } from "../proxy/types.ts";
import type { ListenerProxy, ListenerProxyFactory, ProxyOptions } from "../proxy/types.ts";
import type { Route, RouteRef } from "../routes/types.ts";
import type { UdpListenerProxy, UdpProxyFactory } from "../proxy/udp/types.ts";
import { rt } from "../runtime/index.ts";
import type { Runtime, TcpHandlers } from "../runtime/types.ts";
import { desiredListeners, hostPort, type ListenerProtocol, type ListenerSpec } from "./desired.ts";
import { type SourceGuard, sourceAllowed, sourceGuard } from "./source-ranges.ts";

/** The data plane to run per protocol. */
export interface ListenerProxyFactories {
  readonly http: ListenerProxyFactory;
  readonly tcp: ListenerProxyFactory;
  /** Without it, UDP entrypoints are reported as not served. */
  readonly udp?: UdpProxyFactory | undefined;
}

export interface ListenerManagerOptions {
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
  /** The UDP bind function (default: the current runtime's). */
  readonly bindUdp?: Runtime["bindUdp"] | undefined;
  /** At most one log line per entrypoint per this interval about refused sources, ms (default 10 s). */
  readonly refusedLogIntervalMs?: number | undefined;
  /**
   * Builds each entrypoint's route and keeps affinity tables and ExternalName resolvers across snapshots
   * (default: one with a DNS registry logging to `log`, disposed by {@link ListenerManager.close}; one
   * passed in is left to its owner).
   */
  readonly routes?: RouteBuilder | undefined;
}

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

/** What the manager needs of a TCP or UDP data plane once its socket is bound. */
type Proxy = Pick<ListenerProxy, "active" | "drain" | "closeAll">;

/** One wanted listener: bound (listener + proxy), binding (UDP in flight, or TCP queued) or failed (error). */
interface Slot {
  readonly key: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: ListenerProtocol;
  entrypoint: Entrypoint;
  /** The entrypoint's source-range check, when it has loadBalancerSourceRanges. */
  guard: SourceGuard | undefined;
  ref: RouteRef | undefined;
  proxy: Proxy | undefined;
  udp: UdpListenerProxy | undefined;
  /** Stops accepting (TCP: the runtime's listener) or closes the socket (UDP). Set while bound. */
  listener: { stop(): void; reload?(handlers: TcpHandlers<unknown>): void } | undefined;
  /** TCP: the proxy's own handlers, and whether the listener runs them behind the source-range check. */
  handlers: TcpHandlers<unknown> | undefined;
  guarded: boolean;
  /** A UDP bind is in flight, or a TCP bind is queued. */
  binding: boolean;
  error: string | undefined;
}

const sameList = (x: readonly string[] | undefined, y: readonly string[] | undefined): boolean =>
  x === y || (x !== undefined && y !== undefined && x.length === y.length && x.every((v, i) => v === y[i]));

/** Whether two versions of an entrypoint want exactly the same listeners (only their clusters may differ). */
function sameListenSide(a: Entrypoint, b: Entrypoint): boolean {
  return (
    a.key === b.key &&
    a.port === b.port &&
    a.protocol === b.protocol &&
    a.error === b.error &&
    sameList(a.addresses, b.addresses) &&
    sameList(a.sourceRanges, b.sourceRanges)
  );
}

/** `socket.data` of a connection refused by source ranges: its `close` is not passed to the proxy. */
const REFUSED: unique symbol = Symbol("refused");

/** A removed listener waiting for its connections. */
interface Draining {
  readonly proxy: Proxy;
  readonly done: Promise<void>;
  /** End the grace period now. */
  readonly expire: () => void;
}

const DEFAULT_DRAIN_GRACE_MS = 30_000;
const DEFAULT_RETRY_INTERVAL_MS = 5_000;
const DEFAULT_REFUSED_LOG_INTERVAL_MS = 10_000;
const DEFAULT_SYNC_BINDS = 256;
const DEFAULT_BIND_SLICE_MS = 5;

const bindReasons: Readonly<Record<string, string>> = {
  EADDRINUSE: "address already in use",
  EADDRNOTAVAIL: "address not available on this host",
  EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)",
  EPERM: "permission denied",
};

/** Why a bind failed, for people: `address already in use` for EADDRINUSE, else the error's message. */
export function bindReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return (typeof code === "string" ? bindReasons[code] : undefined) ?? (err instanceof Error ? err.message : String(err));
}

/** The message for a failed bind: `Cannot bind listener "ns/web:http" on 127.0.0.1:30080: address already in use`. */
export function bindErrorMessage(entrypoint: Entrypoint, address: string, port: number, err: unknown): string {
  return `Cannot bind listener "${entrypoint.name}" on ${hostPort(address, port)}: ${bindReason(err)}`;
}

/**
 * Owns every data-plane listener. Call {@link apply} with each new snapshot; dispose to drain and close.
 *
 * @example
 * await using listeners = new ListenerManager({ http: createHttpProxy, tcp: createTcpProxy, udp: createUdpProxy }, { drainGraceMs: 5_000, log });
 * listeners.apply(snapshot);
 * await listeners.settled(); // UDP binds, and TCP binds beyond `syncBinds`, finish later
 * listeners.status(); // [{ key: "NodePort/ns/web:http", listeners: [{ address: "127.0.0.1", port: 30080, bound: true }] }]
 */
export class ListenerManager implements AsyncDisposable {
  readonly #factories: ListenerProxyFactories;
  readonly #proxyOptions: ProxyOptions;
  readonly #drainGraceMs: number;
  readonly #retryIntervalMs: number;
  readonly #log: Logger;
  readonly #listenTcp: Runtime["listenTcp"];
  readonly #bindUdp: Runtime["bindUdp"];
  readonly #logRefused: (key: string, msg: string, fields?: Readonly<Record<string, unknown>>) => void;
  /** Route construction, with the per-entrypoint state that outlives routes. */
  readonly #routeBuilder: RouteBuilder;
  /** Disposed on close when the manager made it. */
  readonly #ownRoutes: Disposable | undefined;
  /** The last snapshot applied (for the endpoint-churn fast path). */
  #applied: Snapshot | undefined;
  /** Whether a listener failed to bind at the last check (then applies and a timer retry). */
  #anyFailed = false;
  /** Slots by entrypoint key (rebuilt by the full reconcile). */
  #slotsByEntrypoint = new Map<string, Slot[]>();
  /** Wanted listeners by listener key, in snapshot order. */
  #slots = new Map<string, Slot>();
  /** Routes by entrypoint key: the listeners of one entrypoint share one balancer. */
  #routes = new Map<string, Route>();
  /** Source-range checks by entrypoint key (entrypoints with loadBalancerSourceRanges only). */
  #guards = new Map<string, SourceGuard>();
  /** Listener-level conflicts the model let through (should not happen), by entrypoint key. */
  #conflicts = new Map<string, ListenerState[]>();
  /** What was reported as not served on the last apply (reported again only when it changes). */
  #reported = new Set<string>();
  readonly #draining = new Set<Draining>();
  /** UDP binds in flight, and the TCP bind queue's completion while it is not empty. */
  readonly #binding = new Set<Promise<void>>();
  readonly #syncBinds: number;
  readonly #bindSliceMs: number;
  /** TCP listeners waiting to be bound (beyond `syncBinds`), in snapshot order. */
  #bindQueue: Slot[] = [];
  #bindQueueAt = 0;
  /** Resolved when the bind queue empties. */
  #bindQueueDone: PromiseWithResolvers<void> | undefined;
  #retryTimer: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  /** Bound and failed listeners, counted again after any change of bind state (undefined: stale). */
  #tally: { bound: number; failed: number } | undefined;

  constructor(factories: ListenerProxyFactories, options: ListenerManagerOptions = {}) {
    this.#factories = factories;
    this.#proxyOptions = options.proxyOptions ?? defaultProxyOptions;
    this.#drainGraceMs = options.drainGraceMs ?? DEFAULT_DRAIN_GRACE_MS;
    this.#retryIntervalMs = options.retryIntervalMs ?? DEFAULT_RETRY_INTERVAL_MS;
    this.#syncBinds = options.syncBinds ?? DEFAULT_SYNC_BINDS;
    this.#bindSliceMs = options.bindSliceMs ?? DEFAULT_BIND_SLICE_MS;
    this.#log = options.log ?? silentLogger;
    this.#listenTcp = options.listenTcp ?? rt.listenTcp;
    this.#bindUdp = options.bindUdp ?? rt.bindUdp;
    this.#logRefused = rateLimited(this.#log.warn, options.refusedLogIntervalMs ?? DEFAULT_REFUSED_LOG_INTERVAL_MS);
    if (options.routes !== undefined) this.#routeBuilder = options.routes;
    else {
      const dns = new DnsRegistry({ log: this.#log });
      const routes = new RouteBuilder({ externalNames: dns });
      this.#routeBuilder = routes;
      this.#ownRoutes = { [Symbol.dispose]: () => (routes[Symbol.dispose](), dns[Symbol.dispose]()) };
    }
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
    if (previous !== undefined && this.#applyEndpointsOnly(previous, snapshot)) return;
    const desired = desiredListeners(snapshot, { udp: this.#factories.udp !== undefined });
    this.#routes = this.#nextRoutes(desired.listeners.values());
    this.#guards = this.#nextGuards(desired.listeners.values());

    // Removed and protocol-changed listeners first, so their ports are free for what replaces them.
    for (const [key, slot] of this.#slots) {
      const spec = desired.listeners.get(key);
      if (spec === undefined || spec.protocol !== slot.protocol) {
        this.#slots.delete(key);
        this.#retire(slot, this.#drainGraceMs, spec === undefined ? "removed" : `protocol changed to ${spec.protocol}`);
      }
    }

    const slots = new Map<string, Slot>();
    const toBind: Slot[] = [];
    for (const spec of desired.listeners.values()) {
      const route = this.#routes.get(spec.entrypoint.key)!;
      const slot = this.#slots.get(spec.key) ?? this.#newSlot(spec);
      slot.entrypoint = spec.entrypoint;
      slot.guard = this.#guards.get(spec.entrypoint.key);
      slots.set(spec.key, slot);
      if (slot.listener !== undefined) {
        if (slot.ref!.current !== route) slot.ref!.current = route;
        if (slot.handlers !== undefined && slot.guarded !== (slot.guard !== undefined)) this.#rehandle(slot);
      } else if (!slot.binding) toBind.push(slot);
    }
    this.#slots = slots;
    this.#bindAll(toBind);
    this.#slotsByEntrypoint = new Map();
    for (const slot of slots.values()) {
      const list = this.#slotsByEntrypoint.get(slot.entrypoint.key);
      if (list === undefined) this.#slotsByEntrypoint.set(slot.entrypoint.key, [slot]);
      else list.push(slot);
    }

    this.#conflicts = new Map();
    const reported = new Set<string>();
    for (const s of desired.skipped) {
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
    for (const guard of this.#guards.values()) {
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
    this.#scheduleRetry();
  }

  /**
   * The common case at scale, endpoint churn: the same entrypoints (keys, in order) whose listen side
   * (addresses, port, protocol, error, source ranges) is unchanged, some with new clusters. Then only
   * those entrypoints get a new route, swapped into their listeners' refs: O(changed) work instead of
   * rebuilding every listener map (tens of ms at 10k). The changed entrypoints come from the snapshot's
   * delta when it is relative to `previous` (O(changed log n)); else from comparing the two lists (one
   * pointer comparison per entrypoint). Returns false, having changed nothing, when the snapshot needs
   * the full reconcile.
   */
  #applyEndpointsOnly(previous: Snapshot, next: Snapshot): boolean {
    const a = previous.entrypoints;
    const b = next.entrypoints;
    if (a.length !== b.length) return false;
    const changed: Entrypoint[] = [];
    const delta = next.delta;
    if (delta !== undefined && delta.base === a) {
      for (const key of delta.changed) {
        const before = entrypointByKey(a, key);
        const after = entrypointByKey(b, key);
        if (before === undefined || after === undefined) return false; // added or removed
        if (!sameListenSide(before, after)) return false;
        changed.push(after);
      }
    } else {
      for (let i = 0; i < b.length; i++) {
        const before = a[i]!;
        const after = b[i]!;
        if (before === after) continue;
        if (!sameListenSide(before, after)) return false;
        changed.push(after);
      }
    }
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
    if (this.#anyFailed) this.retryFailed();
    return true;
  }

  /** Resolves once no UDP bind is in flight and no TCP bind is queued. */
  async settled(): Promise<void> {
    while (this.#binding.size !== 0) await Promise.all(this.#binding);
  }

  /** Bind state per entrypoint key, sorted by key; only entrypoints that asked for listeners. */
  status(): EntrypointListeners[] {
    const byKey = new Map<string, ListenerState[]>();
    for (const slot of this.#slots.values()) {
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
        const guard = this.#guards.get(key);
        return guard === undefined ? { key, listeners } : { key, listeners, refused: guard.refused };
      });
  }

  /**
   * Listener, connection and flow totals. Cheap enough to call on every snapshot at 10k listeners: the
   * listener totals are kept between changes of bind state, and `connections` and `flows` (which ask
   * every proxy) are counted when read.
   */
  counts(): ListenerCounts {
    let tally = this.#tally;
    if (tally === undefined) {
      let bound = 0;
      let failed = 0;
      for (const slot of this.#slots.values()) {
        if (slot.listener !== undefined) bound++;
        else if (!slot.binding) failed++;
      }
      this.#tally = tally = { bound, failed };
    }
    let refused = 0;
    for (const guard of this.#guards.values()) refused += guard.refused;
    const slots = this.#slots;
    const draining = this.#draining;
    return {
      bound: tally.bound,
      failed: tally.failed,
      draining: draining.size,
      get connections() {
        let connections = 0;
        for (const slot of slots.values()) if (slot.listener !== undefined && slot.udp === undefined) connections += slot.proxy!.active();
        for (const d of draining) connections += d.proxy.active();
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

  /** Retry binding the listeners that failed (also runs on a timer while any have failed). */
  retryFailed(): void {
    const failed: Slot[] = [];
    for (const slot of this.#slots.values()) if (slot.listener === undefined && !slot.binding) failed.push(slot);
    this.#bindAll(failed);
    this.#scheduleRetry();
  }

  /**
   * Stop accepting on every listener, wait up to `graceMs` for open connections (also those of
   * listeners already draining), then close what is left.
   */
  async close(graceMs: number = this.#drainGraceMs): Promise<void> {
    this.#closed = true;
    this.#stopRetry();
    this.#dropBindQueue();
    for (const slot of this.#slots.values()) this.#retire(slot, graceMs, "shutting down");
    this.#slots.clear();
    this.#tally = undefined;
    this.#ownRoutes?.[Symbol.dispose]();
    this.#conflicts.clear();
    // A UDP bind still in flight closes its socket as it completes (its slot is no longer wanted).
    await this.settled();
    const pending = [...this.#draining];
    const timer = setTimeout(() => {
      for (const d of pending) d.expire();
    }, graceMs);
    try {
      await Promise.all(pending.map((d) => d.done));
    } finally {
      clearTimeout(timer);
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Routes for this snapshot (see {@link RouteBuilder.route}): reused when the entrypoint is the same object,
   * the balancer kept when nothing balancing depends on changed; affinity tables and ExternalName resolvers
   * carry over, and those of entrypoints no longer served are dropped.
   */
  #nextRoutes(specs: Iterable<ListenerSpec>): Map<string, Route> {
    const next = new Map<string, Route>();
    for (const { entrypoint } of specs) {
      if (next.has(entrypoint.key)) continue;
      next.set(entrypoint.key, this.#routeBuilder.route(entrypoint, this.#routes.get(entrypoint.key)));
    }
    this.#routeBuilder.retain([...next.values()].map((r) => r.entrypoint));
    return next;
  }

  /** Source-range checks for this snapshot: parsed again only when an entrypoint's ranges changed. */
  #nextGuards(specs: Iterable<ListenerSpec>): Map<string, SourceGuard> {
    const next = new Map<string, SourceGuard>();
    for (const { entrypoint } of specs) {
      if (next.has(entrypoint.key)) continue;
      const guard = sourceGuard(entrypoint, this.#guards.get(entrypoint.key));
      if (guard !== undefined) next.set(entrypoint.key, guard);
    }
    return next;
  }

  #newSlot(spec: ListenerSpec): Slot {
    const { key, address, port, protocol, entrypoint } = spec;
    return {
      key,
      address,
      port,
      protocol,
      entrypoint,
      guard: undefined,
      ref: undefined,
      proxy: undefined,
      udp: undefined,
      listener: undefined,
      handlers: undefined,
      guarded: false,
      binding: false,
      error: undefined,
    };
  }

  /** Whether `slot`'s entrypoint admits `address`; a refusal is counted and logged (rate-limited). */
  #admit(slot: Slot, address: string): boolean {
    const guard = slot.guard;
    if (guard === undefined || sourceAllowed(guard, address)) return true;
    guard.refused++;
    const route = this.#routes.get(slot.entrypoint.key);
    if (route !== undefined) routeTraffic(this.#proxyOptions.telemetry, route)?.error("source_refused");
    this.#logRefused(guard.entrypointKey, slot.protocol === "udp" ? "Datagram dropped: source not in loadBalancerSourceRanges" : "Connection refused: source not in loadBalancerSourceRanges", {
      entrypoint: guard.entrypointKey,
      source: address,
      listener: hostPort(slot.address, slot.port),
      refused: guard.refused,
    });
    return false;
  }

  /**
   * The proxy's handlers with a source-range check in `open`: a refused socket is terminated there and
   * never reaches the proxy (its `close` is swallowed too). The other handlers are the proxy's own.
   */
  #guarded<T>(slot: Slot, h: TcpHandlers<T>): TcpHandlers<T> {
    const { open, close } = h;
    const guarded: TcpHandlers<T> = {
      data: h.data,
      open: (socket) => {
        if (slot.guard !== undefined && !this.#admit(slot, socket.remoteAddress)) {
          socket.data = REFUSED as T;
          socket.terminate();
          return;
        }
        open?.(socket);
      },
      close: (socket, error) => {
        if ((socket.data as unknown) !== REFUSED) close?.(socket, error);
      },
    };
    if (h.drain !== undefined) guarded.drain = h.drain;
    if (h.end !== undefined) guarded.end = h.end;
    return guarded;
  }

  /**
   * Bind `slots` (none bound, none binding): UDP ones start now; of the TCP ones, what `syncBinds` allows
   * now and the rest through the queue.
   */
  #bindAll(slots: readonly Slot[]): void {
    this.#tally = undefined;
    let now = 0;
    for (const slot of slots) {
      if (slot.protocol === "udp") this.#bindUdpSlot(slot, this.#routes.get(slot.entrypoint.key)!);
      else if (now < this.#syncBinds && this.#bindQueue.length === this.#bindQueueAt) {
        now++;
        this.#bind(slot);
      } else {
        slot.binding = true;
        this.#bindQueue.push(slot);
      }
    }
    if (this.#bindQueue.length !== this.#bindQueueAt && this.#bindQueueDone === undefined) {
      const done = Promise.withResolvers<void>();
      this.#bindQueueDone = done;
      this.#binding.add(done.promise);
      void done.promise.then(() => this.#binding.delete(done.promise));
      setTimeout(() => this.#bindSlice(), 0);
    }
  }

  /** Bind queued listeners for about `bindSliceMs`, then yield to the event loop (or finish). */
  #bindSlice(): void {
    const started = performance.now();
    const queue = this.#bindQueue;
    while (this.#bindQueueAt < queue.length) {
      const slot = queue[this.#bindQueueAt++]!;
      slot.binding = false;
      // Still wanted (not removed or replaced by a later snapshot, manager open) and still unbound.
      if (!this.#closed && this.#slots.get(slot.key) === slot && slot.listener === undefined) this.#bind(slot);
      if (performance.now() - started >= this.#bindSliceMs && this.#bindQueueAt < queue.length) {
        setTimeout(() => this.#bindSlice(), 0);
        return;
      }
    }
    this.#bindQueue = [];
    this.#bindQueueAt = 0;
    const done = this.#bindQueueDone;
    this.#bindQueueDone = undefined;
    this.#tally = undefined;
    this.#scheduleRetry();
    done?.resolve();
  }

  /** Forget the queued binds (closing). */
  #dropBindQueue(): void {
    for (let i = this.#bindQueueAt; i < this.#bindQueue.length; i++) this.#bindQueue[i]!.binding = false;
    this.#bindQueue = [];
    this.#bindQueueAt = 0;
    const done = this.#bindQueueDone;
    this.#bindQueueDone = undefined;
    this.#tally = undefined;
    done?.resolve();
  }

  /** Bind one TCP listener with its entrypoint's current route. */
  #bind(slot: Slot): void {
    const ref: RouteRef = { current: this.#routes.get(slot.entrypoint.key)! };
    const proxy = this.#factories[slot.protocol as "http" | "tcp"](ref, this.#proxyOptions);
    const handlers = proxy.handlers as TcpHandlers<unknown>;
    const guarded = slot.guard !== undefined;
    try {
      slot.listener = this.#listenTcp({ hostname: slot.address, port: slot.port, handlers: guarded ? this.#guarded(slot, handlers) : handlers });
    } catch (err) {
      return this.#bindFailed(slot, err);
    }
    slot.handlers = handlers;
    slot.guarded = guarded;
    this.#bound(slot, ref, proxy, undefined);
  }

  /** The entrypoint got or lost source ranges: connections accepted from now on get (or skip) the check. */
  #rehandle(slot: Slot): void {
    const handlers = slot.handlers!;
    slot.guarded = slot.guard !== undefined;
    slot.listener!.reload!(slot.guarded ? this.#guarded(slot, handlers) : handlers);
  }

  #bindUdpSlot(slot: Slot, route: Route): void {
    const ref: RouteRef = { current: route };
    const proxy = this.#factories.udp!(ref, { admit: (address) => this.#admit(slot, address) });
    slot.binding = true;
    this.#tally = undefined;
    const done: Promise<void> = this.#bindUdp({ hostname: slot.address, port: slot.port, onMessage: proxy.onMessage }).then(
      (socket) => {
        slot.binding = false;
        if (this.#closed || this.#slots.get(slot.key) !== slot) {
          // No longer wanted (removed, or the manager closed) while binding.
          socket.close();
          proxy.closeAll();
          return;
        }
        proxy.attach(socket);
        slot.listener = { stop: () => socket.close() };
        // Snapshots applied while binding changed the route.
        ref.current = this.#routes.get(slot.entrypoint.key) ?? ref.current;
        this.#bound(slot, ref, proxy, proxy);
      },
      (err: unknown) => {
        slot.binding = false;
        this.#tally = undefined;
        proxy.closeAll();
        if (this.#closed || this.#slots.get(slot.key) !== slot) return;
        this.#bindFailed(slot, err);
        this.#scheduleRetry();
      },
    );
    this.#binding.add(done);
    void done.finally(() => this.#binding.delete(done));
  }

  #bound(slot: Slot, ref: RouteRef, proxy: Proxy, udp: UdpListenerProxy | undefined): void {
    const fields = { entrypoint: slot.entrypoint.key, address: slot.address, port: slot.port, protocol: slot.protocol };
    if (slot.error !== undefined) this.#log.info("Listener bound after earlier failure", fields);
    else this.#log.info("Listener bound", fields);
    slot.ref = ref;
    slot.proxy = proxy;
    slot.udp = udp;
    slot.error = undefined;
    this.#tally = undefined;
  }

  #bindFailed(slot: Slot, err: unknown): void {
    const error = bindErrorMessage(slot.entrypoint, slot.address, slot.port, err);
    // Log a failure once, not on every retry.
    if (error !== slot.error) {
      this.#log.error("Listener not bound", { entrypoint: slot.entrypoint.key, address: slot.address, port: slot.port, protocol: slot.protocol, error });
    }
    slot.error = error;
    this.#tally = undefined;
  }

  /** Stop accepting now; drain in the background up to `graceMs`, then close what is left. UDP closes at once. */
  #retire(slot: Slot, graceMs: number, why: string): void {
    const { listener, proxy } = slot;
    if (listener === undefined || proxy === undefined) return;
    slot.listener = undefined;
    this.#tally = undefined;
    listener.stop();
    this.#log.info("Listener closed", {
      entrypoint: slot.entrypoint.key,
      address: slot.address,
      port: slot.port,
      reason: why,
      ...(slot.udp !== undefined ? { flows: slot.udp.active() } : { connections: proxy.active() }),
    });
    if (slot.udp !== undefined) {
      // Replies can only leave through the listener socket, which is gone: nothing to drain.
      slot.udp.closeAll();
      return;
    }
    const expired = Promise.withResolvers<void>();
    const timer = setTimeout(expired.resolve, graceMs);
    const draining: Draining = {
      proxy,
      expire: expired.resolve,
      done: Promise.race([proxy.drain(), expired.promise]).then(() => {
        clearTimeout(timer);
        const left = proxy.active();
        if (left > 0) this.#log.warn("Drain grace period over: closing connections", { address: slot.address, port: slot.port, connections: left });
        proxy.closeAll();
        this.#draining.delete(draining);
      }),
    };
    this.#draining.add(draining);
  }

  #scheduleRetry(): void {
    let failed = false;
    for (const s of this.#slots.values()) {
      if (s.listener === undefined && !s.binding) {
        failed = true;
        break;
      }
    }
    this.#anyFailed = failed;
    if (!failed || this.#closed) return this.#stopRetry();
    if (this.#retryTimer !== undefined || this.#retryIntervalMs <= 0) return;
    this.#retryTimer = setInterval(() => this.retryFailed(), this.#retryIntervalMs);
    (this.#retryTimer as { unref?: () => void }).unref?.();
  }

  #stopRetry(): void {
    if (this.#retryTimer !== undefined) clearInterval(this.#retryTimer);
    this.#retryTimer = undefined;
  }
}
