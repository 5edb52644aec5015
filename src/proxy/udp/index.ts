/**
 * The UDP proxy bound to the current runtime. See `proxy.ts` for the data plane itself.
 *
 * On Deno, UDP needs the `--unstable-net` flag (`Deno.listenDatagram` is unstable); without it every
 * UDP listener fails to bind with an error that says so.
 */
import { rt } from "../../runtime/index.ts";
import { makeUdpProxyFactory } from "./proxy.ts";
import type { UdpProxyFactory } from "./types.ts";

export { makeUdpProxyFactory } from "./proxy.ts";
export * from "./types.ts";

/**
 * Builds the UDP data plane for one listener (flows bind their upstream sockets on the current runtime). Settings
 * come in the options, as for the HTTP and TCP proxies: `telemetry`, and `udp` for the flow table's limits.
 *
 * @example
 * const proxy = createUdpProxy({ current: route }, { ...defaultProxyOptions, udp: { idleTimeoutMs: 60_000 } });
 * proxy.attach(await rt.bindUdp({ hostname: "127.0.0.1", port: 30053, onMessage: proxy.onMessage }));
 */
export const createUdpProxy: UdpProxyFactory = makeUdpProxyFactory(rt.bindUdp);
