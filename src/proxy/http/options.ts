/** Options of the HTTP/1.1 forwarder. */
import type { ProxyOptions } from "../types.ts";

/** {@link ProxyOptions} plus what only the HTTP forwarder uses. */
export interface HttpProxyOptions extends ProxyOptions {
  /**
   * Whether a peer is a trusted proxy whose X-Forwarded-For/-Proto/-Host and Forwarded fields are kept
   * (X-Forwarded-For and Forwarded are appended to). Default: no peer is trusted, so client-supplied
   * forwarding fields are dropped and replaced with our own.
   */
  readonly trustForwarded?: ((peerAddress: string) => boolean) | undefined;
}
