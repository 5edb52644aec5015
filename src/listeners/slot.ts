/**
 * One wanted listener and its bind state, the record every part of the listener manager works on:
 * reconcile makes and keeps slots, the TCP and UDP binds fill them, source admission guards them,
 * drain empties them, the report reads them.
 */
import type { Entrypoint } from "../model/types.ts";
import type { ListenerProxy } from "../proxy/types.ts";
import type { UdpListenerProxy } from "../proxy/udp/types.ts";
import type { RouteRef } from "../routes/types.ts";
import type { TcpHandlers } from "../runtime/types.ts";
import type { ListenerProtocol, ListenerSpec } from "./desired.ts";
import type { SourceGuard } from "./source-ranges.ts";

/** What the manager needs of a TCP or UDP data plane once its socket is bound. */
export type SlotProxy = Pick<ListenerProxy, "active" | "drain" | "closeAll">;

/**
 * One wanted listener: bound (`listener` set), binding (a UDP bind in flight, or a TCP bind queued in the
 * manager's bind queue) or failed (`error` set).
 */
export interface Slot {
  readonly key: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: ListenerProtocol;
  entrypoint: Entrypoint;
  /** The entrypoint's source-range check, when it has loadBalancerSourceRanges. */
  guard: SourceGuard | undefined;
  ref: RouteRef | undefined;
  proxy: SlotProxy | undefined;
  udp: UdpListenerProxy | undefined;
  /** Stops accepting (TCP: the runtime's listener) or closes the socket (UDP). Set while bound. */
  listener: { stop(): void; reload?(handlers: TcpHandlers<unknown>): void } | undefined;
  /** TCP: the proxy's own handlers, and whether the listener runs them behind the source-range check. */
  handlers: TcpHandlers<unknown> | undefined;
  guarded: boolean;
  /** A UDP bind is in flight (a queued TCP bind is the bind queue's to know). */
  binding: boolean;
  error: string | undefined;
}

/** A new, unbound slot for `spec`. */
export function newSlot(spec: ListenerSpec): Slot {
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
