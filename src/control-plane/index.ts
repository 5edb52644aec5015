/**
 * The control plane: source -> model store -> snapshot -> the data plane, plus everything a node runs once
 * whatever carries its traffic: kube-proxy's health state and servers (`/healthz`, `/livez`, `/readyz`), the
 * healthCheckNodePort servers, the admin app and `/metrics`, Warning Events, the LoadBalancer controller and the
 * state file. It talks to the data plane only through {@link DataPlane} (plain data, see `data-plane/types.ts`).
 *
 * Data flows one way: source events -> store (coalesced, incremental) -> snapshot -> `dataPlane.apply` (bind /
 * switch routes / drain) and the service-health servers -> health, metrics, Events, admin subscribers.
 */
import { adminApp, type AdminView } from "../admin/app.ts";
import { type HealthCounts, HealthState, healthApp } from "../admin/proxy-health.ts";
import type { Config } from "../config/flags.ts";
import { hostAddresses, instanceName } from "../config/host.ts";
import { modelErrorEvents } from "../controller/model-events.ts";
import { EventRecorder, type LbController, startLbController } from "../controller/index.ts";
import { bindFailuresByReason, fileReserveAt } from "../data-plane/index.ts";
import type { DataPlane } from "../data-plane/types.ts";
import { ServiceHealthServers } from "../service-health/servers.ts";
import { KubeClient } from "../kube/client.ts";
import { ApiServerSource } from "../kube/apiserver-source.ts";
import { type KubeConnection, loadKubeConfig } from "../kube/kubeconfig.ts";
import { ManifestSource } from "../kube/manifests.ts";
import type { Node } from "../kube/objects.ts";
import type { CacheEvent, Source, SourceSink } from "../kube/source.ts";
import { PersistentSource, type StateStatus } from "../kube/state-file.ts";
import { type Logger, rateLimited, silentLogger } from "../log.ts";
import { ModelStore } from "../model/store.ts";
import type { ModelOptions, Snapshot } from "../model/types.ts";
import { rt } from "../runtime/index.ts";
import type { HttpServer } from "../runtime/types.ts";
import { FileDescriptorMetrics, GatewayMetrics, ipFamiliesOf, ProcessMetrics } from "../telemetry/metrics/index.ts";
import type { TrafficMetrics } from "../telemetry/metrics/traffic.ts";
import { bindFailureEvents } from "./bind-failure-events.ts";
import type { Succession } from "./succession.ts";

export interface ControlPlaneDeps {
  /** The data plane the snapshots go to. */
  readonly dataPlane: DataPlane;
  /** The data plane's traffic counters, registered in `/metrics` (an in-process data plane's). */
  readonly traffic?: TrafficMetrics | undefined;
  readonly log?: Logger | undefined;
  /** Use this source instead of the one the config names (tests); `--state-file` still wraps it. */
  readonly source?: Source | undefined;
  /** The API server connection, when the gateway loaded it already (shared with an in-process data plane's port-forward). */
  readonly kube?: KubeConnection | undefined;
  /**
   * This gateway's place in the node's succession (`--handover-socket`): its servers bind with SO_REUSEPORT, the
   * state file is written only while it is the incumbent, `/readyz` yields to a starting successor.
   */
  readonly succession?: Succession | undefined;
}

/** A running control plane; the composition root (`gateway.ts`) sequences its shutdown with the data plane's. */
export interface ControlPlane extends AsyncDisposable {
  readonly metrics: GatewayMetrics;
  readonly healthPort: number;
  readonly adminPort: number;
  /** Resolves once the first snapshot has been applied and its listeners are all bound. */
  ready(): Promise<void>;
  snapshot(): Snapshot | undefined;
  /** Resolves with the first snapshot whose version is greater than `version`. */
  nextSnapshot(version: number): Promise<Snapshot>;
  /** The state file's status (with `--state-file`). */
  state(): StateStatus | undefined;
  /** Shutdown started: `/healthz`, `/readyz` and healthCheckNodePorts' proxy health answer 503; the page shows it. */
  shuttingDown(): void;
  /** Another gateway serves this node (a ready successor, or our incumbent): hand over on SIGTERM (`succession.ts`). */
  peerServes(): boolean;
  /**
   * Hand the node's health, admin and healthCheckNodePort answers to the other gateway: this process's servers close
   * now (their ports stay served by the other's), instead of answering 503 through the shutdown.
   */
  handOver(): Promise<void>;
  /** No snapshot after this; the healthCheckNodePort servers close; resolves when they have. */
  stopPublishing(): Promise<void>;
  /** Stop the LB controller, the source (which writes the state file) and the Events writer. */
  stopSources(): Promise<void>;
}

/** The model options this config implies. */
export function modelOptions(config: Config): ModelOptions {
  return {
    nodeName: config.nodeName,
    hostAddresses: config.hostAddresses.length ? config.hostAddresses : hostAddresses(),
    nodePortAddresses: config.nodePortAddresses,
    serviceProxyName: config.serviceProxyName,
    allServices: config.allServices,
    claimUnclassedLoadBalancers: config.lbClaimUnclassed,
    maxEndpointsPerService: config.maxEndpointsPerService,
    ...(config.lbPortOffset > 0 ? { lbPortOffset: config.lbPortOffset } : {}),
    ...(config.local ? { offCluster: true } : {}),
  };
}

/** The object source, plus (on a cluster) the client that Events and the LB controller share. */
async function createSource(config: Config, log: Logger, kube: KubeConnection | undefined): Promise<{ source: Source; client?: KubeClient }> {
  if (config.manifests) {
    const warn = rateLimited(log.warn, 10_000);
    return {
      source: new ManifestSource(config.manifests, { onError: (message) => warn("manifests", "Manifest problem", { error: message }) }),
    };
  }
  const client = new KubeClient(kube ?? (await loadKubeConfig(config.kubeconfig)));
  return { source: new ApiServerSource({ client, nodeName: config.nodeName, log }), client };
}

/** Start the control plane: health and admin servers first (throws when they cannot bind), then the source. */
export async function startControlPlane(config: Config, deps: ControlPlaneDeps): Promise<ControlPlane> {
  const { dataPlane, succession } = deps;
  const reusePort = succession !== undefined;
  const log = deps.log ?? silentLogger;
  const health = new HealthState();
  const healthCounts: HealthCounts = { healthz: {}, livez: {} };
  const model = modelOptions(config);
  const created = deps.source ? { source: deps.source } : await createSource(config, log, deps.kube);
  const { client } = created;
  // With --state-file, the live source is wrapped: the file is replayed first, then kept up to date.
  const source = config.stateFile ? await PersistentSource.open(created.source, { path: config.stateFile, nodeName: config.nodeName, log, paused: succession?.incumbent === false }) : created.source;
  const persistent = source instanceof PersistentSource ? source : undefined;
  const metrics = new GatewayMetrics({
    ipFamilies: ipFamiliesOf(model.hostAddresses),
    traffic: deps.traffic,
    healthCounts,
    sources: () => source.status(),
    listeners: () => dataPlane.counts(),
    ...(persistent ? { state: () => persistent.state() } : {}),
    shuttingDown: () => health.shuttingDown,
    outliers: () => dataPlane.outliers(),
    ...(dataPlane.workers ? { workers: () => dataPlane.workers!() } : {}),
    ...(config.maxConnections > 0 ? { connections: () => dataPlane.connections() ?? { active: 0, refused: 0 } } : {}),
    ...(config.accessLog ? { accessLogDropped: () => dataPlane.accessLogDropped() } : {}),
    onCollectError: (metric, err) => log.warn("Metrics view failed", { metric, error: String(err) }),
  });
  metrics.registry.register(
    new FileDescriptorMetrics({
      files: () => {
        const limit = rt.fileLimit();
        return [{ open: rt.openFiles(), limit: limit?.soft, reserve: limit && fileReserveAt(limit) }];
      },
      // The listener states walk every listener: only while some fail (the common case at scale is none).
      bindFailures: () => (dataPlane.counts().failed === 0 ? new Map() : bindFailuresByReason(dataPlane.listeners())),
    }),
  );
  const processMetrics = new ProcessMetrics({
    files: () => ({ open: rt.openFiles(), limit: rt.fileLimit()?.soft }),
    ...(dataPlane.workers ? { workers: () => dataPlane.workers!().map((w) => ({ worker: w.worker, pid: w.pid })) } : {}),
  });
  metrics.registry.register(processMetrics);
  // healthCheckNodePort servers answer with the proxy's health, not the node's eligibility (kube-proxy's IsHealthy).
  const serviceHealth = new ServiceHealthServers({ proxyHealthy: () => health.healthy().healthy && !health.shuttingDown && health.serving, log, reusePort });
  const events = client ? new EventRecorder({ client, nodeName: instanceName(config.nodeName), log }) : undefined;
  const reportBindFailures = events ? bindFailureEvents(events, dataPlane, serviceHealth) : () => {};
  const reportModelErrors = events ? modelErrorEvents(events) : () => {};
  const ready = Promise.withResolvers<void>();
  const waiters = new Set<{ version: number; resolve: (s: Snapshot) => void }>();
  const adminSubscribers = new Set<() => void>();
  const notifyAdmin = () => {
    for (const notify of adminSubscribers) notify();
  };
  const closing = new AbortController();
  let firstApplied = false;
  let reported = new Set<string>();
  health.awaitListeners();
  if (dataPlane.serving) health.servingWhen(() => dataPlane.serving!());
  if (succession) {
    health.yieldWhile(() => succession.successorStarting());
    succession.onChange(notifyAdmin);
    if (persistent) succession.onIncumbent(() => persistent.resumeWrites());
  }

  const store = new ModelStore(model, {
    onSettled(buildMs) {
      // A flush that changed nothing still applied everything received (e.g. a Node heartbeat).
      health.updated();
      metrics.settled(buildMs);
    },
    onSnapshot(snapshot, info) {
      const started = performance.now();
      dataPlane.apply(snapshot);
      serviceHealth.apply(snapshot);
      reportBindFailures(snapshot);
      reportModelErrors(snapshot);
      health.updated();
      metrics.applied(snapshot, info, (info.buildMs + performance.now() - started) / 1000);
      notifyAdmin();
      log.info("Snapshot applied", {
        version: snapshot.version,
        entrypoints: snapshot.entrypoints.length,
        errors: snapshot.errors.length,
        applyMs: Math.round((performance.now() - started) * 1000) / 1000,
      });
      // Log each problem once, when it appears (not on every snapshot while it lasts).
      const now = new Set<string>();
      for (const e of snapshot.errors) {
        const id = `${e.kind}|${e.object}|${e.message}`;
        now.add(id);
        if (!reported.has(id)) log.warn("Object skipped", { ...e });
      }
      reported = now;
      // Ready (and /readyz 200) once the first snapshot's listeners are all bound: past the first batch they
      // bind in slices after apply (the listeners' bind queue).
      if (!firstApplied) {
        firstApplied = true;
        void dataPlane.settled().then(() => {
          health.listenersBound();
          log.info("Ready: the first snapshot's listeners are bound", { version: snapshot.version, listeners: dataPlane.counts().bound });
          succession?.announceReady();
          ready.resolve();
        });
      }
      for (const w of waiters) if (snapshot.version > w.version) (waiters.delete(w), w.resolve(snapshot));
    },
  });
  // Every change marks health pending until the store publishes (kube-proxy's QueuedUpdate/Updated).
  const sink: SourceSink = {
    apply(event: CacheEvent) {
      health.queued();
      metrics.queued(event);
      if (event.kind === "Node" && event.key === config.nodeName) health.syncNode(event.type === "upsert" ? (event.object as Node) : undefined);
      store.apply(event);
    },
    synced(kind) {
      store.synced(kind);
    },
  };

  const controller: LbController | undefined =
    config.lbController && client
      ? startLbController({ client, nodeName: config.nodeName, pool: config.lbPool, claimUnclassed: config.lbClaimUnclassed, ...(events ? { events } : {}), log })
      : undefined;
  let healthServer: HttpServer | undefined;
  let adminServer: HttpServer | undefined;
  try {
    const hApp = healthApp(health, healthCounts);
    healthServer = rt.serveHttp({ hostname: config.healthzBindAddress.host, port: config.healthzBindAddress.port, reusePort, fetch: (r) => hApp.fetch(r) });
    const view: AdminView = {
      snapshot: () => store.current(),
      listeners: () => dataPlane.listeners(),
      sources: () => source.status(),
      healthChecks: () => serviceHealth.status(),
      health: () => {
        const h = health.healthy();
        return { healthy: h.healthy, nodeEligible: health.nodeEligible, ready: health.ready, lastUpdated: h.lastUpdated, shuttingDown: health.shuttingDown };
      },
      ...(persistent ? { state: () => persistent.state() } : {}),
      traffic: () => dataPlane.traffic(),
      balancing: (key) => dataPlane.balancing(key),
      metrics: metrics.handler,
      subscribe: (notify) => (adminSubscribers.add(notify), () => void adminSubscribers.delete(notify)),
      ...(controller ? { controller: () => controller.status() } : {}),
      ...(dataPlane.workers ? { workers: () => dataPlane.workers!() } : {}),
      ...(succession ? { succession: () => succession.status() } : {}),
      ...(dataPlane.endpointAccess ? { endpointAccess: () => dataPlane.endpointAccess!() } : {}),
    };
    const aApp = adminApp(view, { signal: closing.signal });
    adminServer = rt.serveHttp({ hostname: config.metricsBindAddress.host, port: config.metricsBindAddress.port, reusePort, fetch: (r) => aApp.fetch(r) });
  } catch (err) {
    await healthServer?.[Symbol.asyncDispose]();
    await controller?.[Symbol.asyncDispose]();
    await events?.[Symbol.asyncDispose]();
    client?.close();
    throw new Error(`Cannot start the health/admin servers: ${(err as Error).message}`, { cause: err });
  }
  // Bind failures a worker process reports after the snapshot was applied: Events and the page follow.
  dataPlane.onListenersChanged?.(() => {
    const current = store.current();
    if (current) reportBindFailures(current);
    notifyAdmin();
  });
  source.start(sink);
  log.info("kubegate started", {
    source: config.manifests ? `manifests:${config.manifests}` : "cluster",
    tracing: dataPlane.tracing,
    node: config.nodeName,
    healthz: `${config.healthzBindAddress.host}:${healthServer.port}`,
    admin: `${config.metricsBindAddress.host}:${adminServer.port}`,
  });
  const servers = [healthServer, adminServer];
  let serversClosed: Promise<unknown> | undefined;
  const closeServers = () => {
    closing.abort(); // ends open admin event streams, or Deno's server shutdown waits for them
    return (serversClosed ??= Promise.all([...servers.map((s) => s[Symbol.asyncDispose]()), serviceHealth.close()]));
  };
  let stopped: Promise<void> | undefined;
  const stopSources = () =>
    (stopped ??= (async () => {
      await controller?.[Symbol.asyncDispose]();
      await source[Symbol.asyncDispose]();
      await events?.[Symbol.asyncDispose]();
      client?.close();
    })());

  return {
    metrics,
    healthPort: healthServer.port,
    adminPort: adminServer.port,
    ready: () => ready.promise,
    snapshot: () => store.current(),
    nextSnapshot(version) {
      const cur = store.current();
      if (cur && cur.version > version) return Promise.resolve(cur);
      return new Promise((resolve) => waiters.add({ version, resolve }));
    },
    state: () => persistent?.state(),
    shuttingDown() {
      health.shutdown();
      notifyAdmin();
    },
    peerServes: () => succession?.peerServes() ?? false,
    async handOver() {
      log.info("Hand-over: the other gateway on this node answers health, admin and healthCheckNodePort probes from now on");
      await closeServers();
    },
    stopPublishing() {
      store[Symbol.dispose]?.();
      return serviceHealth.close();
    },
    stopSources,
    async [Symbol.asyncDispose]() {
      store[Symbol.dispose]?.();
      await serviceHealth.close();
      await stopSources();
      await closeServers();
      processMetrics[Symbol.dispose]();
    },
  };
}
