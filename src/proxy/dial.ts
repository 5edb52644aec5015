/**
 * The process's way to its endpoints, for the proxies that have no per-listener injection (the HTTP/1.1 and HTTP/2
 * upstream pools are per process): a TCP connect unless the data plane installed an {@link EndpointAccess}
 * (`--endpoint-access port-forward|auto`). Direct dialing, the default, costs one branch more than `rt.connectTcp`.
 */
import type { Endpoint } from "../model/types.ts";
import { rt } from "../runtime/index.ts";
import type { TcpSocket } from "../runtime/types.ts";
import type { DialOptions, EndpointAccess, Via } from "./endpoint-access.ts";

let current: EndpointAccess | undefined;

/** Reach endpoints through `access` from now on (undefined: direct TCP). One data plane per process sets it. */
export function useEndpointAccess(access: EndpointAccess | undefined): void {
  current = access;
}

/** The installed access (undefined: direct). */
export function endpointAccess(): EndpointAccess | undefined {
  return current;
}

/**
 * Open a connection to `ep` the configured way.
 * @example const socket = await dialEndpoint(ep, { handlers, data: upstream, timeoutMs: 2_000 });
 */
export function dialEndpoint<T>(ep: Endpoint, options: DialOptions<T>): Promise<TcpSocket<T>> {
  if (current === undefined) return rt.connectTcp({ hostname: ep.address, port: ep.port, handlers: options.handlers, data: options.data, timeoutMs: options.timeoutMs });
  return current.dial(ep, options);
}

/** How `ep` is reached now (for spans and logs). */
export function viaOf(ep: Endpoint): Via {
  return current === undefined ? "direct" : current.via(ep);
}
