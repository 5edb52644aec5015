/**
 * Binding a UDP listener: the socket comes asynchronously (`bindUdp`), so the slot may have been removed,
 * replaced or the manager closed by the time it does; then the socket is closed at once. Otherwise the
 * UDP proxy (flow table) is attached to it and runs with the entrypoint's route of that moment.
 */
import type { ProxyOptions } from "../proxy/types.ts";
import type { UdpListenerProxy, UdpProxyFactory } from "../proxy/udp/types.ts";
import type { Route, RouteRef } from "../routes/types.ts";
import type { Runtime } from "../runtime/types.ts";
import type { Slot } from "./slot.ts";

/** What a UDP bind needs from the manager. */
export interface UdpBindContext {
  readonly factory: UdpProxyFactory;
  /** The gateway's proxy options, as the HTTP and TCP proxies get them. */
  readonly options: ProxyOptions;
  readonly bindUdp: Runtime["bindUdp"];
  /** Bind with SO_REUSEPORT (worker processes). */
  readonly reusePort: boolean;
  /** Whether `slot` is still wanted (not removed or replaced, the manager open). */
  readonly wanted: (slot: Slot) => boolean;
  /** The entrypoint's current route (snapshots applied while binding change it). */
  readonly route: (slot: Slot) => Route | undefined;
  /** The source-range check of a new flow's first datagram. */
  readonly admit: (slot: Slot, address: string) => boolean;
  readonly bound: (slot: Slot, ref: RouteRef, proxy: UdpListenerProxy) => void;
  /** The bind failed on a slot still wanted. */
  readonly failed: (slot: Slot, err: unknown) => void;
  /** Bind state changed (binding started, or ended on a slot no longer wanted). */
  readonly changed: () => void;
  /** Counts the bind as in flight until it settles. */
  readonly track: (bind: Promise<void>) => void;
}

/**
 * Start binding `slot` (unbound, not binding) with `route`: `slot.binding` is true until the socket is
 * bound or the bind failed.
 */
export function bindUdpSlot(slot: Slot, route: Route, ctx: UdpBindContext): void {
  const ref: RouteRef = { current: route };
  const proxy = ctx.factory(ref, ctx.options, { admit: (address) => ctx.admit(slot, address) });
  slot.binding = true;
  ctx.changed();
  const done: Promise<void> = ctx.bindUdp({ hostname: slot.address, port: slot.port, onMessage: proxy.onMessage, ...(ctx.reusePort ? { reusePort: true } : {}) }).then(
    (socket) => {
      slot.binding = false;
      if (!ctx.wanted(slot)) {
        // No longer wanted (removed, or the manager closed) while binding.
        socket.close();
        proxy.closeAll();
        return;
      }
      proxy.attach(socket);
      slot.listener = { stop: () => socket.close() };
      ref.current = ctx.route(slot) ?? ref.current;
      ctx.bound(slot, ref, proxy);
    },
    (err: unknown) => {
      slot.binding = false;
      ctx.changed();
      proxy.closeAll();
      if (!ctx.wanted(slot)) return;
      ctx.failed(slot, err);
    },
  );
  ctx.track(done);
}
