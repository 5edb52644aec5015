/**
 * loadBalancerSourceRanges on live listeners: keeps each entrypoint's {@link SourceGuard} across snapshots,
 * and runs it where a connection opens (TCP) or a flow starts (UDP). A connection from outside the ranges
 * is terminated in `open`, before the proxy sees it (so before any upstream connect); a datagram is dropped
 * before a flow is made. Refusals are counted per entrypoint and logged at a rate limit. Only `open` (and
 * `close`, to hide refused sockets from the proxy) is wrapped, and only on listeners whose entrypoint has
 * ranges: the data path pays nothing.
 */
import { type Logger, rateLimited } from "../log.ts";
import type { TcpHandlers } from "../runtime/types.ts";
import { hostPort, type ListenerSpec } from "./desired.ts";
import type { Slot } from "./slot.ts";
import { type SourceGuard, sourceAllowed, sourceGuard } from "./source-ranges.ts";

export interface SourceAdmissionOptions {
  readonly log: Logger;
  /** At most one log line per entrypoint per this interval about refused sources, ms. */
  readonly logIntervalMs: number;
  /** Told of every refusal (the manager counts it in the Service's traffic metrics). */
  readonly onRefused: (slot: Slot) => void;
}

/** `socket.data` of a connection refused by source ranges: its `close` is not passed to the proxy. */
const REFUSED: unique symbol = Symbol("refused");

/**
 * The source-range checks of the entrypoints served now.
 *
 * @example
 * admission.update(desired.listeners.values());
 * slot.guard = admission.guards.get(slot.entrypoint.key);
 * rt.listenTcp({ hostname, port, handlers: admission.handlers(slot, proxy.handlers) });
 */
export class SourceAdmission {
  readonly #log: (key: string, msg: string, fields?: Readonly<Record<string, unknown>>) => void;
  readonly #onRefused: (slot: Slot) => void;
  #guards = new Map<string, SourceGuard>();

  constructor(options: SourceAdmissionOptions) {
    this.#log = rateLimited(options.log.warn, options.logIntervalMs);
    this.#onRefused = options.onRefused;
  }

  /** Guards by entrypoint key (entrypoints with loadBalancerSourceRanges only). */
  get guards(): ReadonlyMap<string, SourceGuard> {
    return this.#guards;
  }

  /** Guards for the entrypoints of `specs`: parsed again only when an entrypoint's ranges changed. */
  update(specs: Iterable<ListenerSpec>): void {
    const next = new Map<string, SourceGuard>();
    for (const { entrypoint } of specs) {
      if (next.has(entrypoint.key)) continue;
      const guard = sourceGuard(entrypoint, this.#guards.get(entrypoint.key));
      if (guard !== undefined) next.set(entrypoint.key, guard);
    }
    this.#guards = next;
  }

  /** Connections and datagrams refused, over the entrypoints served now. */
  refused(): number {
    let refused = 0;
    for (const guard of this.#guards.values()) refused += guard.refused;
    return refused;
  }

  /** Whether `slot`'s entrypoint admits `address`; a refusal is counted and logged (rate-limited). */
  admit(slot: Slot, address: string): boolean {
    const guard = slot.guard;
    if (guard === undefined || sourceAllowed(guard, address)) return true;
    guard.refused++;
    this.#onRefused(slot);
    this.#log(guard.entrypointKey, slot.protocol === "udp" ? "Datagram dropped: source not in loadBalancerSourceRanges" : "Connection refused: source not in loadBalancerSourceRanges", {
      entrypoint: guard.entrypointKey,
      source: address,
      listener: hostPort(slot.address, slot.port),
      refused: guard.refused,
    });
    return false;
  }

  /** The handlers a TCP listener of `slot` runs: the proxy's own, behind the check when the slot has a guard. */
  handlers<T>(slot: Slot, h: TcpHandlers<T>): TcpHandlers<T> {
    return slot.guard !== undefined ? this.#guarded(slot, h) : h;
  }

  /**
   * The entrypoint got or lost source ranges since `slot`'s listener was bound: connections accepted from
   * now on get (or skip) the check. Nothing to do when it did not.
   */
  rehandle(slot: Slot): void {
    const handlers = slot.handlers;
    if (handlers === undefined || slot.guarded === (slot.guard !== undefined)) return;
    slot.guarded = slot.guard !== undefined;
    slot.listener!.reload!(this.handlers(slot, handlers));
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
        if (slot.guard !== undefined && !this.admit(slot, socket.remoteAddress)) {
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
}
