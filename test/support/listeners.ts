/**
 * A listener manager for tests, wired the way the composition root wires it: a route builder with an
 * ExternalName DNS registry (logging to the manager's log), both disposed when the manager closes.
 */
import { ListenerManager, type ListenerManagerOptions, type ListenerProxyFactories } from "../../src/listeners/manager.ts";
import { RouteBuilder } from "../../src/routes/builder.ts";
import { DnsRegistry } from "../../src/routes/dns/registry.ts";

/** The manager's options without `routes` (the helper makes the route builder). */
export type TestListenerOptions = Omit<ListenerManagerOptions, "routes">;

/** A {@link ListenerManager} that owns its route builder and DNS registry (see {@link listenerManager}). */
export class TestListenerManager extends ListenerManager {
  /** The route builder the manager was given. */
  readonly routes: RouteBuilder;
  readonly #dns: DnsRegistry;

  constructor(factories: ListenerProxyFactories, options: TestListenerOptions = {}) {
    const dns = new DnsRegistry({ log: options.log });
    const routes = new RouteBuilder({ externalNames: dns });
    super(factories, { ...options, routes });
    this.routes = routes;
    this.#dns = dns;
  }

  /** Closes the manager (see {@link ListenerManager.close}), then disposes the route builder and DNS registry. */
  override async close(graceMs?: number): Promise<void> {
    try {
      await super.close(graceMs);
    } finally {
      this.routes[Symbol.dispose]();
      this.#dns[Symbol.dispose]();
    }
  }
}

/**
 * A listener manager with a route builder of its own, disposed with it.
 *
 * @example
 * await using m = listenerManager({ http: createHttpProxy, tcp: createTcpProxy }, { drainGraceMs: 1_000, retryIntervalMs: 0 });
 * m.apply(snapshot(entrypoint({ port, endpoints: [echo.port] })));
 */
export function listenerManager(factories: ListenerProxyFactories, options: TestListenerOptions = {}): TestListenerManager {
  return new TestListenerManager(factories, options);
}
