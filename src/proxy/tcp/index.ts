/**
 * The TCP proxy bound to the current runtime. See `proxy.ts` for the data plane itself.
 */
import { rt } from "../../runtime/index.ts";
import { dialEndpoint, viaOf } from "../dial.ts";
import type { ListenerProxyFactory } from "../types.ts";
import { makeTcpProxyFactory } from "./proxy.ts";

export { makeTcpProxyFactory, PRECONNECT_BUFFER_BYTES } from "./proxy.ts";
export { proxyV2Header } from "./proxy-protocol.ts";

/**
 * Builds the TCP data plane for one listener: each accepted connection is piped to an endpoint
 * picked from `ref.current` at accept time (the connection keeps that route for its life).
 *
 * @example
 * const proxy = createTcpProxy({ current: route }, defaultProxyOptions);
 * const listener = rt.listenTcp({ hostname: "127.0.0.1", port: 30080, handlers: proxy.handlers });
 */
export const createTcpProxy: ListenerProxyFactory = makeTcpProxyFactory(rt.connectTcp, dialEndpoint, viaOf);
