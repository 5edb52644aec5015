/**
 * The UDP proxy bound to the current runtime. See `proxy.ts` for the data plane itself.
 *
 * On Deno, UDP needs the `--unstable-net` flag (`Deno.listenDatagram` is unstable); without it every
 * UDP listener fails to bind with an error that says so.
 */
import { rt } from "../../runtime/index.ts";
import { makeUdpProxyFactory } from "./proxy.ts";
import type { UdpProxyFactory, UdpProxySettings } from "./types.ts";

export { makeUdpProxyFactory } from "./proxy.ts";
export * from "./types.ts";

/**
 * The UDP data plane for one listener with default settings (30 s idle timeout, 4096 flows).
 * Use {@link udpProxyFactory} to change them.
 *
 * @example
 * const proxy = createUdpProxy({ current: route });
 * proxy.attach(await rt.bindUdp({ hostname: "127.0.0.1", port: 30053, onMessage: proxy.onMessage }));
 */
export const createUdpProxy: UdpProxyFactory = makeUdpProxyFactory({ bindUdp: rt.bindUdp });

/**
 * A UDP data-plane factory on the current runtime with these settings.
 *
 * @example new ListenerManager({ http, tcp, udp: udpProxyFactory({ idleTimeoutMs: 60_000, log }) }, { routes })
 */
export function udpProxyFactory(settings: Omit<UdpProxySettings, "bindUdp"> = {}): UdpProxyFactory {
  return makeUdpProxyFactory({ bindUdp: rt.bindUdp, ...settings });
}
