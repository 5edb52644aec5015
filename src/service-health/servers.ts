/**
 * Service health: the healthCheckNodePort servers (externalTrafficPolicy: Local), reconciled from each
 * snapshot the way kube-proxy's ServiceHealthServer does it (pkg/proxy/healthcheck/service_health.go;
 * kube-proxy's own /healthz, "proxy health", is `admin/proxy-health.ts`):
 *
 * - one HTTP server per Service on `healthCheckNodePort`, on each of its addresses; any path answers;
 * - a Service whose port and addresses are unchanged keeps its servers: only its count changes;
 * - a Service that is gone, or whose port or addresses changed, has its servers closed (and reopened
 *   on the new port);
 * - a port that cannot be bound closes what was opened for that Service and is an error in
 *   {@link ServiceHealthServers.status} (kube-proxy raises the Event `FailedToStartServiceHealthcheck`);
 *   it is retried on the next apply and on a timer (the listeners' {@link BindQueue}, binding at once).
 */
import { BindQueue, bindErrorMessage } from "../listeners/bind-queue.ts";
import { type Logger, silentLogger } from "../log.ts";
import type { HealthCheckService, Snapshot } from "../model/types.ts";
import { rt } from "../runtime/index.ts";
import type { HttpServer, Runtime } from "../runtime/types.ts";
import { healthCheckResponse } from "./response.ts";

export interface ServiceHealthServersOptions {
  /** The proxy's own health (kube-proxy's `serviceProxyHealthy`), read on every request: wire it to HealthState. */
  readonly proxyHealthy: () => boolean;
  /** How often health checks that failed to start are retried, ms (default 5 s; 0: only on `apply`). */
  readonly retryIntervalMs?: number | undefined;
  readonly log?: Logger | undefined;
  /** The HTTP server function (default: the current runtime's). */
  readonly serveHttp?: Runtime["serveHttp"] | undefined;
  /** Bind with SO_REUSEPORT: a successor gateway on the node answers on the same ports (hand-over). */
  readonly reusePort?: boolean | undefined;
}

/** One health check, for the admin API. */
export interface ServiceHealthState {
  readonly namespace: string;
  readonly name: string;
  readonly port: number;
  readonly addresses: readonly string[];
  /** The count it answers with. */
  readonly localEndpoints: number;
  /** Listening on every address. */
  readonly bound: boolean;
  /** Why not, e.g. `Cannot start health check "ns/web" on 127.0.0.1:32000: address already in use`. */
  readonly error?: string | undefined;
}

interface Instance {
  readonly namespace: string;
  readonly name: string;
  readonly port: number;
  readonly addresses: readonly string[];
  /** `addresses` joined: a change rebinds. */
  readonly addressKey: string;
  localEndpoints: number;
  /** One per address once started; empty while failed. */
  servers: HttpServer[];
  error: string | undefined;
}

/**
 * Runs the healthCheckNodePort servers of the latest snapshot. Dispose to close them.
 *
 * @example
 * await using checks = new ServiceHealthServers({ proxyHealthy: () => health.healthy().healthy, log });
 * checks.apply(snapshot);
 * checks.status(); // [{ namespace: "ns", name: "web", port: 32000, addresses: ["10.0.0.5"], localEndpoints: 1, bound: true }]
 */
export class ServiceHealthServers implements AsyncDisposable {
  readonly #proxyHealthy: () => boolean;
  readonly #log: Logger;
  readonly #serveHttp: Runtime["serveHttp"];
  readonly #reusePort: boolean;
  /** Starts health checks at once (no queue: there are few), and runs the retry timer. */
  readonly #binds: BindQueue<Instance>;
  /** By `namespace/name`. */
  #instances = new Map<string, Instance>();
  readonly #closing = new Set<Promise<void>>();
  #closed = false;

  constructor(options: ServiceHealthServersOptions) {
    this.#proxyHealthy = options.proxyHealthy;
    this.#log = options.log ?? silentLogger;
    this.#serveHttp = options.serveHttp ?? rt.serveHttp;
    this.#reusePort = options.reusePort ?? false;
    this.#binds = new BindQueue<Instance>({
      bind: (inst) => this.#start(inst),
      anyFailed: () => {
        for (const inst of this.#instances.values()) if (inst.servers.length === 0) return true;
        return false;
      },
      retry: () => this.retryFailed(),
      retryIntervalMs: options.retryIntervalMs,
    });
  }

  /** Reconcile the servers with `snapshot.healthChecks`. Never throws: a port that cannot be bound is reported in {@link status}. */
  apply(snapshot: Snapshot): void {
    if (this.#closed) {
      this.#log.warn("Snapshot ignored: the health check servers are closed", { version: snapshot.version });
      return;
    }
    const wanted = new Map<string, HealthCheckService>();
    for (const hc of snapshot.healthChecks ?? []) {
      const key = `${hc.namespace}/${hc.name}`;
      if (!wanted.has(key)) wanted.set(key, hc);
    }
    // Closed first, so a port moving between Services is free for its new owner.
    for (const [key, inst] of this.#instances) {
      const hc = wanted.get(key);
      if (hc === undefined || hc.port !== inst.port || hc.addresses.join(",") !== inst.addressKey) {
        this.#instances.delete(key);
        this.#stop(inst, hc === undefined ? "removed" : "port or addresses changed");
      }
    }
    const toStart: Instance[] = [];
    for (const [key, hc] of wanted) {
      let inst = this.#instances.get(key);
      if (inst === undefined) {
        inst = {
          namespace: hc.namespace,
          name: hc.name,
          port: hc.port,
          addresses: hc.addresses,
          addressKey: hc.addresses.join(","),
          localEndpoints: hc.localEndpoints,
          servers: [],
          error: undefined,
        };
        this.#instances.set(key, inst);
      }
      inst.localEndpoints = hc.localEndpoints;
      if (inst.servers.length === 0) toStart.push(inst);
    }
    this.#binds.bind(toStart);
    this.#binds.scheduleRetry();
  }

  /** Every health check of the last snapshot, by port then name. */
  status(): ServiceHealthState[] {
    return [...this.#instances.values()]
      .sort((a, b) => a.port - b.port || (a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((i) => {
        const state = { namespace: i.namespace, name: i.name, port: i.port, addresses: i.addresses, localEndpoints: i.localEndpoints, bound: i.servers.length !== 0 };
        return i.error === undefined ? state : { ...state, error: i.error };
      });
  }

  /** Retry starting the health checks that failed (also runs on a timer while any have failed). */
  retryFailed(): void {
    const failed: Instance[] = [];
    for (const inst of this.#instances.values()) if (inst.servers.length === 0) failed.push(inst);
    this.#binds.bind(failed);
    this.#binds.scheduleRetry();
  }

  /** Close every server. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#binds.close();
    for (const inst of this.#instances.values()) this.#stop(inst, "shutting down");
    this.#instances.clear();
    await Promise.all(this.#closing);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #start(inst: Instance): void {
    const fields = { service: `${inst.namespace}/${inst.name}`, port: inst.port, addresses: inst.addresses };
    if (inst.addresses.length === 0) {
      this.#failed(inst, `Cannot start health check "${inst.namespace}/${inst.name}" on port ${inst.port}: no address to listen on`);
      return;
    }
    const servers: HttpServer[] = [];
    for (const address of inst.addresses) {
      try {
        servers.push(this.#serveHttp({ hostname: address, port: inst.port, reusePort: this.#reusePort, fetch: () => this.#answer(inst) }));
      } catch (err) {
        // Like kube-proxy: close what was opened, so a retry (or another owner of the port) starts clean.
        for (const s of servers) this.#dispose(s);
        this.#failed(inst, bindErrorMessage(`Cannot start health check "${inst.namespace}/${inst.name}"`, address, inst.port, err));
        return;
      }
    }
    this.#log.info(inst.error === undefined ? "Health check started" : "Health check started after earlier failure", fields);
    inst.servers = servers;
    inst.error = undefined;
  }

  #failed(inst: Instance, error: string): void {
    // Log a failure once, not on every retry.
    if (error !== inst.error) this.#log.error("Health check not started", { service: `${inst.namespace}/${inst.name}`, port: inst.port, error });
    inst.error = error;
  }

  #answer(inst: Instance): Response {
    return healthCheckResponse({
      namespace: inst.namespace,
      name: inst.name,
      localEndpoints: inst.localEndpoints,
      serviceProxyHealthy: this.#proxyHealthy(),
    });
  }

  #stop(inst: Instance, why: string): void {
    if (inst.servers.length === 0) return;
    this.#log.info("Health check closed", { service: `${inst.namespace}/${inst.name}`, port: inst.port, reason: why });
    for (const s of inst.servers) this.#dispose(s);
    inst.servers = [];
  }

  #dispose(server: HttpServer): void {
    const closing = Promise.resolve(server[Symbol.asyncDispose]()).catch((err: unknown) => {
      this.#log.warn("Health check server did not close cleanly", { port: server.port, error: err instanceof Error ? err.message : String(err) });
    });
    this.#closing.add(closing);
    void closing.finally(() => this.#closing.delete(closing));
  }
}
