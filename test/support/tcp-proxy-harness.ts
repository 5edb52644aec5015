/** A TCP proxy listener on 127.0.0.1:0 for proxy tests: the factory's handlers on a real listener. */
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { defaultProxyOptions, type ListenerProxy, type ListenerProxyFactory, type ProxyOptions } from "../../src/proxy/types.ts";
import type { Route, RouteRef } from "../../src/routes/types.ts";
import { rt } from "../../src/runtime/index.ts";

export interface TcpProxyHarness extends AsyncDisposable {
  readonly port: number;
  readonly proxy: ListenerProxy;
  /** Swap `ref.current` to switch routes, as the listener manager does. */
  readonly ref: RouteRef;
}

/**
 * Serve `route` through a TCP proxy (default `createTcpProxy`) on 127.0.0.1, port 0; disposing stops the
 * listener and closes every connection.
 *
 * @example await using p = startTcpProxy(route, { connectTimeoutMs: 1_000 });
 */
export function startTcpProxy(route: Route, options: Partial<ProxyOptions> = {}, factory: ListenerProxyFactory = createTcpProxy): TcpProxyHarness {
  const ref: RouteRef = { current: route };
  const proxy = factory(ref, { ...defaultProxyOptions, ...options });
  const listener = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
  return {
    port: listener.port,
    proxy,
    ref,
    async [Symbol.asyncDispose]() {
      listener.stop(true);
      proxy.closeAll();
    },
  };
}
