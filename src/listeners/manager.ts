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
 */
import { RoundRobin } from "../balancer/round-robin.ts";
import { type Logger, silentLogger } from "../log.ts";
import type { Entrypoint, Snapshot } from "../model/types.ts";
import { defaultProxyOptions } from "../proxy/types.ts";
import type { ListenerProxy, ListenerProxyFactory, ProxyOptions, Route, RouteRef } from "../proxy/types.ts";
import { rt } from "../runtime/index.ts";
import type { Runtime, TcpListener } from "../runtime/types.ts";
import { desiredListeners, hostPort, type ListenerProtocol, type ListenerSpec } from "./desired.ts";

/** The data plane to run per protocol. */
export interface ListenerProxyFactories {
  readonly http: ListenerProxyFactory;
  readonly tcp: ListenerProxyFactory;
}

export interface ListenerManagerOptions {
  /** Data-plane settings handed to every proxy. */
  readonly proxyOptions?: ProxyOptions | undefined;
  /** How long removed listeners wait for open connections before closing them, ms (default 30 s). */
  readonly drainGraceMs?: number | undefined;
  /** How often listeners that failed to bind are retried, ms (default 5 s; 0: only on `apply`). */
  readonly retryIntervalMs?: number | undefined;
  readonly log?: Logger | undefined;
  /** The bind function (default: the current runtime's). */
  readonly listenTcp?: Runtime["listenTcp"] | undefined;
}

/** Bind state of one listener of an entrypoint. */
export interface ListenerState {
  readonly address: string;
  readonly port: number;
  readonly bound: boolean;
  /** Why it is not bound, e.g. `Cannot bind listener "ns/web:http" on 127.0.0.1:30080: address already in use`. */
  readonly error?: string | undefined;
}

/** Bind state of one entrypoint's listeners, keyed by the entrypoint key (`NodePort/ns/web:http`). */
export interface EntrypointListeners {
  readonly key: string;
  readonly listeners: readonly ListenerState[];
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
}

/** One wanted listener: bound (listener + proxy) or failed (error). */
interface Slot {
  readonly key: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: ListenerProtocol;
  entrypoint: Entrypoint;
  ref: RouteRef | undefined;
  proxy: ListenerProxy | undefined;
  listener: TcpListener | undefined;
  error: string | undefined;
}

/** A removed listener waiting for its connections. */
interface Draining {
  readonly proxy: ListenerProxy;
  readonly done: Promise<void>;
  /** End the grace period now. */
  readonly expire: () => void;
}

const DEFAULT_DRAIN_GRACE_MS = 30_000;
const DEFAULT_RETRY_INTERVAL_MS = 5_000;

const bindReasons: Readonly<Record<string, string>> = {
  EADDRINUSE: "address already in use",
  EADDRNOTAVAIL: "address not available on this host",
  EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)",
  EPERM: "permission denied",
};

/** The message for a failed bind: `Cannot bind listener "ns/web:http" on 127.0.0.1:30080: address already in use`. */
export function bindErrorMessage(entrypoint: Entrypoint, address: string, port: number, err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const reason = (typeof code === "string" ? bindReasons[code] : undefined) ?? (err instanceof Error ? err.message : String(err));
  return `Cannot bind listener "${entrypoint.name}" on ${hostPort(address, port)}: ${reason}`;
}

/**
 * Owns every data-plane listener. Call {@link apply} with each new snapshot; dispose to drain and close.
 *
 * @example
 * await using listeners = new ListenerManager({ http: createHttpProxy, tcp: createTcpProxy }, { drainGraceMs: 5_000, log });
 * listeners.apply(snapshot);
 * listeners.status(); // [{ key: "NodePort/ns/web:http", listeners: [{ address: "127.0.0.1", port: 30080, bound: true }] }]
 */
export class ListenerManager implements AsyncDisposable {
  readonly #factories: ListenerProxyFactories;
  readonly #proxyOptions: ProxyOptions;
  readonly #drainGraceMs: number;
  readonly #retryIntervalMs: number;
  readonly #log: Logger;
  readonly #listenTcp: Runtime["listenTcp"];
  /** Wanted listeners by listener key, in snapshot order. */
  #slots = new Map<string, Slot>();
  /** Routes by entrypoint key: the listeners of one entrypoint share one balancer. */
  #routes = new Map<string, Route>();
  /** Listener-level conflicts the model let through (should not happen), by entrypoint key. */
  #conflicts = new Map<string, ListenerState[]>();
  /** What was reported as not served on the last apply (reported again only when it changes). */
  #reported = new Set<string>();
  readonly #draining = new Set<Draining>();
  #retryTimer: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(factories: ListenerProxyFactories, options: ListenerManagerOptions = {}) {
    this.#factories = factories;
    this.#proxyOptions = options.proxyOptions ?? defaultProxyOptions;
    this.#drainGraceMs = options.drainGraceMs ?? DEFAULT_DRAIN_GRACE_MS;
    this.#retryIntervalMs = options.retryIntervalMs ?? DEFAULT_RETRY_INTERVAL_MS;
    this.#log = options.log ?? silentLogger;
    this.#listenTcp = options.listenTcp ?? rt.listenTcp;
  }

  /** Reconcile the listeners with `snapshot`. Never throws: a listener that cannot be bound is reported in {@link status}. */
  apply(snapshot: Snapshot): void {
    if (this.#closed) {
      this.#log.warn("Snapshot ignored: the listener manager is closed", { version: snapshot.version });
      return;
    }
    const desired = desiredListeners(snapshot);
    this.#routes = this.#nextRoutes(desired.listeners.values());

    // Removed and protocol-changed listeners first, so their ports are free for what replaces them.
    for (const [key, slot] of this.#slots) {
      const spec = desired.listeners.get(key);
      if (spec === undefined || spec.protocol !== slot.protocol) {
        this.#slots.delete(key);
        this.#retire(slot, this.#drainGraceMs, spec === undefined ? "removed" : `protocol changed to ${spec.protocol}`);
      }
    }

    const slots = new Map<string, Slot>();
    for (const spec of desired.listeners.values()) {
      const route = this.#routes.get(spec.entrypoint.key)!;
      const slot = this.#slots.get(spec.key) ?? this.#newSlot(spec);
      slot.entrypoint = spec.entrypoint;
      if (slot.listener === undefined) this.#bind(slot, route);
      else if (slot.ref!.current !== route) slot.ref!.current = route;
      slots.set(spec.key, slot);
    }
    this.#slots = slots;

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
    this.#reported = reported;
    this.#scheduleRetry();
  }

  /** Bind state per entrypoint key, sorted by key; only entrypoints that asked for listeners. */
  status(): EntrypointListeners[] {
    const byKey = new Map<string, ListenerState[]>();
    for (const slot of this.#slots.values()) {
      const list = byKey.get(slot.entrypoint.key) ?? [];
      list.push(
        slot.listener !== undefined
          ? { address: slot.address, port: slot.port, bound: true }
          : { address: slot.address, port: slot.port, bound: false, error: slot.error },
      );
      byKey.set(slot.entrypoint.key, list);
    }
    for (const [key, states] of this.#conflicts) byKey.set(key, [...(byKey.get(key) ?? []), ...states]);
    return [...byKey]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, listeners]) => ({ key, listeners }));
  }

  /** Listener and connection totals. */
  counts(): ListenerCounts {
    let bound = 0;
    let failed = 0;
    let connections = 0;
    for (const slot of this.#slots.values()) {
      if (slot.listener === undefined) failed++;
      else {
        bound++;
        connections += slot.proxy!.active();
      }
    }
    for (const d of this.#draining) connections += d.proxy.active();
    return { bound, failed, draining: this.#draining.size, connections };
  }

  /** Retry binding the listeners that failed (also runs on a timer while any have failed). */
  retryFailed(): void {
    for (const slot of this.#slots.values()) {
      if (slot.listener === undefined) this.#bind(slot, this.#routes.get(slot.entrypoint.key)!);
    }
    this.#scheduleRetry();
  }

  /**
   * Stop accepting on every listener, wait up to `graceMs` for open connections (also those of
   * listeners already draining), then close what is left.
   */
  async close(graceMs: number = this.#drainGraceMs): Promise<void> {
    this.#closed = true;
    this.#stopRetry();
    for (const slot of this.#slots.values()) this.#retire(slot, graceMs, "shutting down");
    this.#slots.clear();
    this.#conflicts.clear();
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

  /** Routes for this snapshot: reused when the entrypoint is the same object, the balancer kept when the cluster is. */
  #nextRoutes(specs: Iterable<ListenerSpec>): Map<string, Route> {
    const next = new Map<string, Route>();
    for (const { entrypoint } of specs) {
      if (next.has(entrypoint.key)) continue;
      const prev = this.#routes.get(entrypoint.key);
      if (prev?.entrypoint === entrypoint) next.set(entrypoint.key, prev);
      else if (prev !== undefined && prev.entrypoint.cluster === entrypoint.cluster) next.set(entrypoint.key, { entrypoint, balancer: prev.balancer });
      else next.set(entrypoint.key, { entrypoint, balancer: new RoundRobin(entrypoint.cluster.serving) });
    }
    return next;
  }

  #newSlot(spec: ListenerSpec): Slot {
    const { key, address, port, protocol, entrypoint } = spec;
    return { key, address, port, protocol, entrypoint, ref: undefined, proxy: undefined, listener: undefined, error: undefined };
  }

  #bind(slot: Slot, route: Route): void {
    const ref: RouteRef = { current: route };
    const proxy = this.#factories[slot.protocol](ref, this.#proxyOptions);
    const fields = { entrypoint: slot.entrypoint.key, address: slot.address, port: slot.port, protocol: slot.protocol };
    try {
      slot.listener = this.#listenTcp({ hostname: slot.address, port: slot.port, handlers: proxy.handlers });
    } catch (err) {
      const error = bindErrorMessage(slot.entrypoint, slot.address, slot.port, err);
      // Log a failure once, not on every retry.
      if (error !== slot.error) this.#log.error("Listener not bound", { ...fields, error });
      slot.error = error;
      return;
    }
    if (slot.error !== undefined) this.#log.info("Listener bound after earlier failure", fields);
    else this.#log.info("Listener bound", fields);
    slot.ref = ref;
    slot.proxy = proxy;
    slot.error = undefined;
  }

  /** Stop accepting now; drain in the background up to `graceMs`, then close what is left. */
  #retire(slot: Slot, graceMs: number, why: string): void {
    const { listener, proxy } = slot;
    if (listener === undefined || proxy === undefined) return;
    slot.listener = undefined;
    listener.stop(false);
    this.#log.info("Listener closed", { entrypoint: slot.entrypoint.key, address: slot.address, port: slot.port, reason: why, connections: proxy.active() });
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
    const failed = [...this.#slots.values()].some((s) => s.listener === undefined);
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
