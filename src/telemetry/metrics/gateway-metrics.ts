/**
 * Every metric the gateway exposes on `/metrics`, in one registry: kube-proxy's sync and health
 * metrics, per-Service traffic, watch relists/restarts and listener states. The control plane
 * creates one, feeds it from the sink and `onSnapshot`, and registers the data plane's traffic counters.
 */
import { Kinds } from "../../kube/objects.ts";
import type { CacheEvent, SyncStatus } from "../../kube/source.ts";
import type { PublishInfo } from "../../model/store.ts";
import type { Snapshot } from "../../model/types.ts";
import { metricsHandler } from "./handler.ts";
import { type HealthCountsView, type IpFamily, KubeProxyMetrics } from "./kube-proxy.ts";
import { Registry } from "./registry.ts";
import { TrafficMetrics } from "./traffic.ts";
import { WorkerMetrics, type WorkerView } from "./worker-metrics.ts";

/** Listener totals (the listener manager's `counts()`). */
export interface ListenerCountsView {
  readonly bound: number;
  readonly failed: number;
  readonly draining: number;
}

/** Outlier detection counts of one Service port (`namespace/service:port`). */
export interface OutlierStatsView {
  readonly cluster: string;
  readonly ejected: number;
  readonly ejectionsTotal: number;
}

/** The state file's status (`--state-file`), read at scrape time (see `PersistentSource.state()`). */
export interface StateFileView {
  /** Serving objects replayed from the state file that the live source has not confirmed yet. */
  readonly stale: boolean;
  /** When the replayed state was written (ms since the epoch). */
  readonly savedAt?: number | undefined;
  readonly writes: number;
  readonly writeErrors: number;
  /** When this process last wrote the file (ms since the epoch). */
  readonly lastWriteAt?: number | undefined;
}

export interface GatewayMetricsOptions {
  /** IP families the node serves (default `["IPv4"]`); see `ipFamiliesOf`. */
  readonly ipFamilies?: readonly IpFamily[] | undefined;
  /** At most this many Service ports get per-Service series (default 20 000); ignored with `traffic`. */
  readonly maxSeries?: number | undefined;
  /**
   * The data plane's per-Service traffic counters, registered here; the data plane follows the snapshots with them
   * (worker processes: a `NodeTrafficMetrics` summing theirs). Default: a new one of this registry's own, followed by
   * {@link GatewayMetrics.applied} (tests, benchmarks).
   */
  readonly traffic?: TrafficMetrics | undefined;
  /** The data plane's worker processes, read at scrape time; without it the `kubegate_worker_*` families are not registered. */
  readonly workers?: (() => readonly WorkerView[]) | undefined;
  /** The health server's answer counts (the object passed to `healthApp`). */
  readonly healthCounts?: HealthCountsView | undefined;
  /** Sync state of the sources, read at scrape time. */
  readonly sources?: (() => readonly SyncStatus[]) | undefined;
  /** Listener totals, read at scrape time. */
  readonly listeners?: (() => ListenerCountsView) | undefined;
  /** The state file's status; without it the `kubegate_state_*` families are not registered. */
  readonly state?: (() => StateFileView) | undefined;
  /** Whether the gateway is shutting down (`kubegate_shutting_down`). */
  readonly shuttingDown?: (() => boolean) | undefined;
  /** Passive outlier detection per Service port (`RouteBuilder.outlierStats`), read at scrape time. */
  readonly outliers?: (() => readonly OutlierStatsView[]) | undefined;
  /** The gateway-wide connection budget (`--max-connections`); without it those families are not registered. */
  readonly connections?: (() => { readonly active: number; readonly refused: number }) | undefined;
  /** Access log records dropped so far (`AccessLog.dropped`, summed over workers); without it the family is not registered. */
  readonly accessLogDropped?: (() => number) | undefined;
  /** Wall clock in ms since the epoch (default `Date.now`). */
  readonly now?: (() => number) | undefined;
  /** A scrape-time view failed; that family is left out of the scrape. */
  readonly onCollectError?: ((metric: string, error: unknown) => void) | undefined;
}

/** The resource label of a kind: its API plural (`services`, `endpointslices`, `nodes`). */
function resourceOf(kind: SyncStatus["kind"]): string {
  return Kinds[kind]?.plural ?? kind.toLowerCase();
}

/**
 * The gateway's metrics.
 *
 * @example
 * const metrics = new GatewayMetrics({ ipFamilies: ipFamiliesOf(hostAddresses), healthCounts, sources: () => source.status(), listeners: () => listeners.counts() });
 * // sink:       metrics.queued(event)
 * // onSnapshot: metrics.applied(snapshot, info, applySeconds)
 * // admin app:  app.get("/metrics", (c) => metrics.handler(c.req.raw))
 * // data plane: metrics.traffic.forEntrypoint(route.entrypoint)
 */
export class GatewayMetrics {
  readonly registry: Registry;
  readonly kubeProxy: KubeProxyMetrics;
  readonly traffic: TrafficMetrics;
  /** The `/metrics` handler. */
  readonly handler: (req: Request) => Response;
  #snapshot: Snapshot | undefined;
  readonly #ownsTraffic: boolean;

  constructor(options: GatewayMetricsOptions = {}) {
    this.registry = new Registry({ onCollectError: options.onCollectError });
    this.kubeProxy = new KubeProxyMetrics(this.registry, {
      ipFamilies: options.ipFamilies,
      healthCounts: options.healthCounts,
      snapshot: () => this.#snapshot,
      now: options.now,
    });
    this.#ownsTraffic = options.traffic === undefined;
    this.traffic = options.traffic ?? new TrafficMetrics({ maxSeries: options.maxSeries });
    this.registry.register(this.traffic);

    const sources = options.sources;
    this.registry.counter({
      name: "kubegate_watch_lists_total",
      help: "Full lists of a resource (the first one and every relist), per resource.",
      labelNames: ["resource"],
      collect: (c) => {
        for (const s of sources?.() ?? []) c.labels(resourceOf(s.kind)).set(s.lists);
      },
    });
    this.registry.counter({
      name: "kubegate_watch_restarts_total",
      help: "Watches started again after the first one (reconnects, timeouts, relists), per resource.",
      labelNames: ["resource"],
      collect: (c) => {
        for (const s of sources?.() ?? []) c.labels(resourceOf(s.kind)).set(Math.max(0, s.watches - 1));
      },
    });
    const listeners = options.listeners;
    this.registry.gauge({
      name: "kubegate_listeners",
      help: "Listeners by state: bound (accepting), failed (cannot bind), draining (removed, waiting for connections).",
      labelNames: ["state"],
      collect: (g) => {
        if (!listeners) return;
        const c = listeners();
        g.labels("bound").set(c.bound);
        g.labels("failed").set(c.failed);
        g.labels("draining").set(c.draining);
      },
    });
    const shuttingDown = options.shuttingDown;
    this.registry.gauge({
      name: "kubegate_shutting_down",
      help: "1 from the shutdown signal until exit: /healthz and /readyz answer 503, then the listeners drain.",
      collect: (g) => g.set(shuttingDown?.() ? 1 : 0),
    });
    const outliers = options.outliers;
    // One series per Service port that has ever ejected an endpoint (not one per Service: 10k Services stay cheap).
    const outlierLabels = (cluster: string): [string, string, string] => {
      const slash = cluster.indexOf("/");
      const colon = cluster.lastIndexOf(":");
      return [cluster.slice(0, slash), cluster.slice(slash + 1, colon), cluster.slice(colon + 1)];
    };
    this.registry.gauge({
      name: "kubegate_endpoints_ejected",
      help: "Endpoints of a Service port ejected by passive outlier detection now (consecutive connect failures or 5xx).",
      labelNames: ["namespace", "service", "port"],
      collect: (g) => {
        for (const o of outliers?.() ?? []) if (o.ejected > 0 || o.ejectionsTotal > 0) g.labels(...outlierLabels(o.cluster)).set(o.ejected);
      },
    });
    this.registry.counter({
      name: "kubegate_outlier_ejections_total",
      help: "Ejections by passive outlier detection, per Service port (restarts from 0 when the Service port stops being served).",
      labelNames: ["namespace", "service", "port"],
      collect: (c) => {
        for (const o of outliers?.() ?? []) if (o.ejectionsTotal > 0) c.labels(...outlierLabels(o.cluster)).set(o.ejectionsTotal);
      },
    });
    const connections = options.connections;
    if (connections) {
      this.registry.gauge({
        name: "kubegate_connections_open",
        help: "Open client connections over all listeners, counted against --max-connections.",
        collect: (g) => g.set(connections().active),
      });
      this.registry.counter({
        name: "kubegate_connections_refused_total",
        help: "Client connections closed at accept because --max-connections was reached.",
        collect: (c) => c.labels().set(connections().refused),
      });
    }
    const accessLogDropped = options.accessLogDropped;
    if (accessLogDropped) {
      this.registry.counter({
        name: "kubegate_access_log_dropped_total",
        help: "Access log records dropped because the log's sink (stdout or --access-log-file) could not keep up or failed.",
        collect: (c) => c.labels().set(accessLogDropped()),
      });
    }
    if (options.workers) this.registry.register(new WorkerMetrics(options.workers));
    if (options.state) this.#stateMetrics(options.state, options.now ?? Date.now);
    this.handler = metricsHandler(this.registry);
  }

  #stateMetrics(state: () => StateFileView, now: () => number): void {
    this.registry.gauge({
      name: "kubegate_state_stale",
      help: "1 while the gateway serves objects replayed from --state-file that the live source has not confirmed yet.",
      collect: (g) => g.set(state().stale ? 1 : 0),
    });
    this.registry.gauge({
      name: "kubegate_state_age_seconds",
      help: "While stale: seconds since the replayed state file was written; 0 once the live source has synced.",
      collect: (g) => {
        const s = state();
        g.set(s.stale && s.savedAt !== undefined ? Math.max(0, (now() - s.savedAt) / 1000) : 0);
      },
    });
    this.registry.counter({
      name: "kubegate_state_writes_total",
      help: "Writes of --state-file, by result (success, error).",
      labelNames: ["result"],
      collect: (c) => {
        const s = state();
        c.labels("success").set(s.writes);
        c.labels("error").set(s.writeErrors);
      },
    });
    this.registry.gauge({
      name: "kubegate_state_last_write_timestamp_seconds",
      help: "When this process last wrote --state-file (Unix seconds; 0 before the first write).",
      collect: (g) => g.set((state().lastWriteAt ?? 0) / 1000),
    });
  }

  /** Call from the sink for every event, before the store applies it. */
  queued(event: CacheEvent): void {
    this.kubeProxy.queued(event);
  }

  /**
   * Call from the store's `onSnapshot` after the snapshot is applied (listeners, health checks):
   * `applySeconds` is how long applying took. Follows the snapshot's Services and records the sync.
   */
  applied(snapshot: Snapshot, info: PublishInfo, applySeconds: number): void {
    this.#snapshot = snapshot;
    if (this.#ownsTraffic) this.traffic.sync(snapshot);
    this.kubeProxy.applied(info, applySeconds);
  }

  /** Call when the store flushed without publishing (nothing changed); see {@link KubeProxyMetrics.settled}. */
  settled(buildMs = 0): void {
    this.kubeProxy.settled(buildMs);
  }

  /** The scrape text. */
  expose(): string {
    return this.registry.expose();
  }
}
