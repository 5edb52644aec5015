/**
 * The UDP data plane's interface, the datagram counterpart of {@link ListenerProxy}: the listener
 * manager binds the listener socket (`rt.bindUdp`) with the proxy's `onMessage`, then `attach`es
 * the socket so replies can leave from it.
 */
import type { Logger } from "../../log.ts";
import type { Runtime, UdpSocket } from "../../runtime/types.ts";
import type { ProxyOptions, ProxyTelemetry } from "../types.ts";
import type { RouteRef } from "../../routes/types.ts";

/** Per-listener hooks the listener manager gives a UDP proxy. */
export interface UdpProxyHooks {
  /**
   * Asked for the first datagram of a would-be flow (and again for a flow's next datagram after a
   * route change): false drops the datagram and creates no flow (loadBalancerSourceRanges). The
   * hook counts and logs refusals itself.
   */
  readonly admit?: ((address: string) => boolean) | undefined;
}

/** Counters of one UDP proxy since it was created. */
export interface UdpProxyStats {
  /** Flows open now. */
  readonly flows: number;
  /** Flows created. */
  readonly created: number;
  /** Flows closed after the idle timeout. */
  readonly expired: number;
  /** Flows closed to make room (the flow table was full): the least recently active go first. */
  readonly evicted: number;
  /** Flows whose endpoint left the route, re-created towards a current endpoint on their next datagram. */
  readonly repointed: number;
  /** Datagrams from sources that `admit` refused. */
  readonly refused: number;
  /**
   * Datagrams dropped for other reasons: no endpoint, the pending queue of a flow still binding its
   * upstream socket was full, a send the kernel refused, an upstream socket that could not be bound.
   */
  readonly dropped: number;
}

/** The data plane of one bound UDP listener. */
export interface UdpListenerProxy {
  /** The listener socket's datagram handler (pass it to `bindUdp`). */
  readonly onMessage: (data: Uint8Array, port: number, address: string) => void;
  /** The bound listener socket, which replies are sent from. Replies before this are dropped. */
  attach(socket: UdpSocket): void;
  /** Open flows (the UDP counterpart of open connections). */
  active(): number;
  stats(): UdpProxyStats;
  /** UDP has nothing to finish gracefully: resolves at once (kept for symmetry with {@link ListenerProxy}). */
  drain(): Promise<void>;
  /** Close every flow's upstream socket and ignore datagrams from now on. */
  closeAll(): void;
}

/**
 * Builds the UDP data plane for one listener; new flows pick endpoints from `ref.current`. The same shape as the
 * HTTP and TCP factories (`ListenerProxyFactory`: route ref and the gateway's proxy options), plus the listener's hooks.
 */
export type UdpProxyFactory = (ref: RouteRef, options: UdpProxyOptions, hooks?: UdpProxyHooks) => UdpListenerProxy;

/** {@link ProxyOptions} plus what only the UDP proxy uses (`HttpProxyOptions` is its HTTP counterpart). */
export interface UdpProxyOptions extends ProxyOptions {
  /** Flow table limits; absent fields take the UDP defaults (30 s idle, 4096 flows). */
  readonly udp?: Pick<UdpProxySettings, "idleTimeoutMs" | "maxFlows" | "maxPendingDatagrams"> | undefined;
  /** Where upstream sockets that cannot be bound are reported (rate-limited). */
  readonly log?: Logger | undefined;
}

/** What one UDP proxy runs with (resolved from {@link UdpProxyOptions} and the runtime's `bindUdp`). */
export interface UdpProxySettings {
  /** Binds the per-flow upstream sockets (ephemeral ports). */
  readonly bindUdp: Runtime["bindUdp"];
  /** A flow with no datagram either way for this long is closed, ms (default 30 s; 0 disables). */
  readonly idleTimeoutMs?: number | undefined;
  /** Max flows per listener (default 4096); each holds an upstream socket (a file descriptor). */
  readonly maxFlows?: number | undefined;
  /** Datagrams a new flow holds while its upstream socket is being bound (default 64); more are dropped. */
  readonly maxPendingDatagrams?: number | undefined;
  /** Where upstream sockets that cannot be bound are reported (rate-limited). */
  readonly log?: Logger | undefined;
  /** Per-Service metrics (flows count as connections) and the access log (one line per flow). */
  readonly telemetry?: ProxyTelemetry | undefined;
}

export const defaultUdpIdleTimeoutMs = 30_000;
export const defaultUdpMaxFlows = 4096;
export const defaultUdpMaxPendingDatagrams = 64;
