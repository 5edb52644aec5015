/**
 * The composition root as a value: config -> source -> model store -> listeners, plus the health
 * and admin servers. `main.ts` runs one from flags; tests and the demo start one in process.
 *
 * Data flows one way: source events -> store (coalesced, incremental) -> snapshot -> listeners
 * reconcile (bind / switch routes / drain) -> each connection reads its route at accept (TCP) or
 * per request (HTTP).
 */
import { adminApp, type AdminView } from "./admin/app.ts";
import { type HealthCounts, HealthState, healthApp } from "./admin/health.ts";
import type { Config } from "./config/flags.ts";
import { hostAddresses } from "./config/host.ts";
import { modelErrorEvents } from "./controller/model-events.ts";
import { EventRecorder, type LbController, startLbController } from "./controller/index.ts";
import { KubeClient } from "./kube/client.ts";
import { ClusterSource } from "./kube/cluster-source.ts";
import { loadKubeConfig } from "./kube/kubeconfig.ts";
import { ManifestSource } from "./kube/manifests.ts";
import type { Node } from "./kube/objects.ts";
import type { CacheEvent, Source, SourceSink, SyncStatus } from "./kube/source.ts";
import { PersistentSource, type StateStatus } from "./kube/state-file.ts";
import { GatewayMetrics, ipFamiliesOf } from "./telemetry/metrics/index.ts";
import { ListenerManager } from "./listeners/manager.ts";
import { RouteBuilder } from "./routes/builder.ts";
import { DnsRegistry } from "./routes/dns/registry.ts";
import { type Logger, rateLimited, silentLogger } from "./log.ts";
import { ModelStore } from "./model/store.ts";
import type { Entrypoint, ModelOptions, Snapshot } from "./model/types.ts";
import { createHttpProxy } from "./proxy/http/index.ts";
import { createTcpProxy } from "./proxy/tcp/index.ts";
import { udpProxyFactory } from "./proxy/udp/index.ts";
import { HealthCheckServers } from "./health-check/servers.ts";
import { ConnectionBudget, defaultProxyOptions, type ProxyTelemetry } from "./proxy/types.ts";
import type { HttpProxyOptions } from "./proxy/http/options.ts";
import { cidrContains, parseCidr, parseIP } from "./model/net.ts";
import { AccessLog } from "./telemetry/access-log.ts";
import pkg from "../package.json" with { type: "json" };
import { rt } from "./runtime/index.ts";
import type { HttpServer } from "./runtime/types.ts";

export interface GatewayDeps {
  readonly log?: Logger;
  /** Use this source instead of the one the config names (tests); `--state-file` still wraps it. */
  readonly source?: Source;
}

export interface Gateway extends AsyncDisposable {
  /** Metrics registry and per-Service traffic handles (for the data plane and tests). */
  readonly metrics: GatewayMetrics;
  /** Resolves once the first snapshot has been applied to the listeners. */
  ready(): Promise<void>;
  snapshot(): Snapshot | undefined;
  /** Resolves with the first snapshot whose version is greater than `version`. */
  nextSnapshot(version: number): Promise<Snapshot>;
  readonly healthPort: number;
  readonly adminPort: number;
  readonly listeners: ListenerManager;
  /** The state file's status (with `--state-file`). */
  state(): StateStatus | undefined;
  /**
   * The graceful shutdown sequence (SIGTERM): `/healthz` and `/readyz` answer 503 at once; the listeners
   * keep accepting for `--shutdown-delay` (skipped when none is bound); then they stop accepting and open
   * connections get up to `--drain-grace-period` to finish; then everything closes. Each phase is logged.
   * Idempotent: later calls (and dispose) return the same promise.
   */
  shutdown(reason?: string): Promise<void>;
  /** {@link shutdown} without the delay (tests and embedders). */
  [Symbol.asyncDispose](): Promise<void>;
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
  };
}

/** Whether a peer address is inside one of `cidrs` (`--trusted-proxies`); undefined when the list is empty. */
export function trustedPeers(cidrs: readonly string[]): ((peer: string) => boolean) | undefined {
  const parsed = cidrs.map((c) => parseCidr(c)!);
  if (parsed.length === 0) return undefined;
  return (peer) => {
    const ip = parseIP(peer.startsWith("::ffff:") && peer.includes(".") ? peer.slice(7) : peer);
    return ip !== undefined && parsed.some((c) => cidrContains(c, ip));
  };
}

/** The data-plane options this config implies (gateway-wide defaults; Services override some by annotation). */
export function proxyOptions(config: Config): HttpProxyOptions {
  const trust = trustedPeers(config.trustedProxies);
  return {
    ...defaultProxyOptions,
    connectTimeoutMs: config.connectTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    requestHeaderTimeoutMs: config.requestHeaderTimeoutMs,
    upstreamResponseTimeoutMs: config.responseHeaderTimeoutMs,
    maxRequestDurationMs: config.maxRequestDurationMs,
    maxConcurrentRequests: config.maxConcurrentRequests,
    maxHeaderBytes: config.maxHeaderBytes,
    maxRequestBodyBytes: config.maxBodyBytes,
    retryIdempotent: config.retryIdempotent,
    maxConnectionsPerListener: config.maxConnectionsPerListener,
    ...(config.maxConnections > 0 ? { connections: new ConnectionBudget(config.maxConnections) } : {}),
    lifecycle: { closing: false },
    ...(trust ? { trustForwarded: trust } : {}),
  };
}

/** The object source, plus (on a cluster) the client that Events and the LB controller share. */
async function createSource(config: Config, log: Logger): Promise<{ source: Source; client?: KubeClient }> {
  if (config.manifests) {
    const warn = rateLimited(log.warn, 10_000);
    return {
      source: new ManifestSource(config.manifests, { onError: (message) => warn("manifests", "Manifest problem", { error: message }) }),
    };
  }
  const client = new KubeClient(await loadKubeConfig(config.kubeconfig));
  return { source: new ClusterSource({ client, nodeName: config.nodeName, log }), client };
}

/**
 * Emits a Warning Event once per new bind failure (the recorder counts repeats): listeners
 * (`FailedToBindListener`) and healthCheckNodePort servers (kube-proxy's `FailedToStartServiceHealthcheck`).
 */
function bindFailureEvents(events: EventRecorder, listeners: ListenerManager, healthChecks: HealthCheckServers): (snapshot: Snapshot) => void {
  let known = new Set<string>();
  return (snapshot) => {
    // status() walks every listener: skip it while nothing is failing or was (the common case at scale).
    const hcErrors = healthChecks.status().some((hc) => hc.error);
    if (known.size === 0 && listeners.counts().failed === 0 && !hcErrors) return;
    const byKey = new Map(snapshot.entrypoints.map((e) => [e.key, e]));
    const now = new Set<string>();
    for (const entry of listeners.status()) {
      const ep = byKey.get(entry.key);
      for (const l of entry.listeners) {
        if (!l.error || !ep) continue;
        now.add(l.error);
        if (!known.has(l.error)) void events.warning({ kind: "Service", apiVersion: "v1", namespace: ep.namespace, name: ep.service, ...(ep.serviceUid ? { uid: ep.serviceUid } : {}) }, "FailedToBindListener", l.error);
      }
    }
    for (const hc of healthChecks.status()) {
      if (!hc.error) continue;
      now.add(hc.error);
      const uid = snapshot.entrypoints.find((e) => e.namespace === hc.namespace && e.service === hc.name)?.serviceUid;
      if (!known.has(hc.error)) void events.warning({ kind: "Service", apiVersion: "v1", namespace: hc.namespace, name: hc.name, ...(uid ? { uid } : {}) }, "FailedToStartServiceHealthcheck", hc.error);
    }
    known = now;
  };
}

/** Start a gateway. Throws when the health or admin address cannot be bound. */
export async function startGateway(config: Config, deps: GatewayDeps = {}): Promise<Gateway> {
  const log = deps.log ?? silentLogger;
  const health = new HealthState();
  const healthCounts: HealthCounts = { healthz: {}, livez: {} };
  const model = modelOptions(config);
  let sourceStatus: () => readonly SyncStatus[] = () => [];
  let stateStatus: () => StateStatus | undefined = () => undefined;
  // Tracing (the SDK lives in telemetry/tracing/setup.ts) and the access log ride in the proxies' options;
  // the traffic closure reads `metrics` only when a connection arrives.
  const otlpConfigured = Boolean(process.env.OTEL_EXPORTER_OTLP_ENDPOINT || process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  // The SDK and exporter (~0.15 s and ~17 MiB at start) load only when tracing can be on.
  const tracingWanted = config.tracing || otlpConfigured;
  const { setupTracing } = tracingWanted ? await import("./telemetry/tracing/setup.ts") : { setupTracing: () => undefined };
  const tracing = setupTracing({
    enabled: tracingWanted,
    ...(config.tracingSampleRatio !== undefined ? { sampleRatio: config.tracingSampleRatio } : {}),
    env: process.env,
    serviceVersion: pkg.version,
    onShutdownError: (e) => log.warn("Trace export failed on shutdown", { error: String(e) }),
  });
  const accessLog = config.accessLog ? new AccessLog() : undefined;
  const telemetry: ProxyTelemetry = {
    traffic: (ep: Entrypoint) => metrics.traffic.forEntrypoint(ep),
    ...(tracing ? { tracing: tracing.proxy } : {}),
    ...(accessLog ? { accessLog } : {}),
  };
  const proxy = { ...proxyOptions(config), telemetry };
  // Routes (balancers, affinity tables, ExternalName resolvers) outlive snapshots; the admin API reads them.
  const dns = new DnsRegistry({ log });
  const routes = new RouteBuilder({
    externalNames: dns,
    defaultBalancer: config.defaultBalancer,
    outlier: {
      consecutiveFailures: config.outlierConsecutiveFailures,
      baseEjectionMs: config.outlierEjectionTimeMs,
      maxEjectionPercent: config.outlierMaxEjectionPercent,
    },
  });
  const listeners = new ListenerManager(
    { http: createHttpProxy, tcp: createTcpProxy, udp: udpProxyFactory({ log, telemetry }) },
    { proxyOptions: proxy, drainGraceMs: config.drainGracePeriodMs, log, routes },
  );
  const metrics = new GatewayMetrics({
    ipFamilies: ipFamiliesOf(model.hostAddresses),
    maxSeries: config.metricsMaxSeries,
    healthCounts,
    sources: () => sourceStatus(),
    listeners: () => listeners.counts(),
    ...(config.stateFile ? { state: () => stateStatus() ?? { stale: false, writes: 0, writeErrors: 0 } } : {}), // set before any scrape
    shuttingDown: () => health.shuttingDown,
    outliers: () => routes.outlierStats(),
    ...(proxy.connections ? { connections: () => proxy.connections! } : {}),
    onCollectError: (metric, err) => log.warn("Metrics view failed", { metric, error: String(err) }),
  });
  // healthCheckNodePort servers answer with the proxy's health, not the node's eligibility (kube-proxy's IsHealthy).
  const healthChecks = new HealthCheckServers({ proxyHealthy: () => health.healthy().healthy && !health.shuttingDown, log });
  const ready = Promise.withResolvers<void>();
  let firstApplied = false;
  health.awaitListeners();
  const waiters = new Set<{ version: number; resolve: (s: Snapshot) => void }>();
  let ownNode: Node | undefined;
  let reported = new Set<string>();
  const adminSubscribers = new Set<() => void>();
  const closing = new AbortController();
  let afterApply: (snapshot: Snapshot) => void = () => {};

  const store = new ModelStore(model, {
    onSettled(buildMs) {
      // A flush that changed nothing still applied everything received (e.g. a Node heartbeat).
      health.updated();
      metrics.settled(buildMs);
    },
    onSnapshot(snapshot, info) {
      const started = performance.now();
      listeners.apply(snapshot);
      healthChecks.apply(snapshot);
      afterApply(snapshot);
      health.updated();
      metrics.applied(snapshot, info, (info.buildMs + performance.now() - started) / 1000);
      for (const notify of adminSubscribers) notify();
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
      // bind in slices after apply (ListenerManager's bind queue).
      if (!firstApplied) {
        firstApplied = true;
        void listeners.settled().then(() => {
          health.listenersBound();
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
      if (event.kind === "Node" && event.key === config.nodeName) {
        ownNode = event.type === "upsert" ? (event.object as Node) : undefined;
        health.syncNode(ownNode);
      }
      store.apply(event);
    },
    synced(kind) {
      store.synced(kind);
    },
  };

  const created = deps.source ? { source: deps.source } : await createSource(config, log);
  const { client } = created;
  // With --state-file, the live source is wrapped: the file is replayed first, then kept up to date.
  const source = config.stateFile ? await PersistentSource.open(created.source, { path: config.stateFile, nodeName: config.nodeName, log }) : created.source;
  sourceStatus = () => source.status();
  if (source instanceof PersistentSource) stateStatus = () => source.state();
  const events = client ? new EventRecorder({ client, nodeName: config.nodeName, log }) : undefined;
  const reportBindFailures = events ? bindFailureEvents(events, listeners, healthChecks) : () => {};
  const reportModelErrors = events ? modelErrorEvents(events) : () => {};
  afterApply = (snapshot) => {
    reportBindFailures(snapshot);
    reportModelErrors(snapshot);
  };
  let controller: LbController | undefined;
  if (config.lbController && client) {
    controller = startLbController({
      client,
      nodeName: config.nodeName,
      pool: config.lbPool,
      claimUnclassed: config.lbClaimUnclassed,
      ...(events ? { events } : {}),
      log,
    });
  }
  const servers: HttpServer[] = [];
  try {
    const hApp = healthApp(health, healthCounts);
    servers.push(rt.serveHttp({ hostname: config.healthzBindAddress.host, port: config.healthzBindAddress.port, fetch: (r) => hApp.fetch(r) }));
    const view: AdminView = {
      snapshot: () => store.current(),
      listeners: () => listeners.status(),
      sources: () => source.status(),
      healthChecks: () => healthChecks.status(),
      health: () => {
        const h = health.healthy();
        return { healthy: h.healthy, nodeEligible: health.nodeEligible, ready: health.ready, lastUpdated: h.lastUpdated, shuttingDown: health.shuttingDown };
      },
      ...(source instanceof PersistentSource ? { state: () => source.state() } : {}),
      traffic: () => metrics.traffic.samples(),
      balancing: (key) => routes.describe(key),
      metrics: metrics.handler,
      subscribe: (notify) => (adminSubscribers.add(notify), () => void adminSubscribers.delete(notify)),
      ...(controller ? { controller: () => controller.status() } : {}),
    };
    const aApp = adminApp(view, { signal: closing.signal });
    servers.push(rt.serveHttp({ hostname: config.metricsBindAddress.host, port: config.metricsBindAddress.port, fetch: (r) => aApp.fetch(r) }));
  } catch (err) {
    await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
    throw new Error(`Cannot start the health/admin servers: ${(err as Error).message}`, { cause: err });
  }
  source.start(sink);
  log.info("kubegate started", {
    source: config.manifests ? `manifests:${config.manifests}` : "cluster",
    tracing: tracing?.sampler ?? "off",
    node: config.nodeName,
    healthz: `${config.healthzBindAddress.host}:${servers[0]!.port}`,
    admin: `${config.metricsBindAddress.host}:${servers[1]!.port}`,
  });

  let stopping: Promise<void> | undefined;
  const stop = (delayMs: number, reason: string) => (stopping ??= shutdownSequence(delayMs, reason));

  return {
    ready: () => ready.promise,
    snapshot: () => store.current(),
    nextSnapshot(version) {
      const cur = store.current();
      if (cur && cur.version > version) return Promise.resolve(cur);
      return new Promise((resolve) => waiters.add({ version, resolve }));
    },
    healthPort: servers[0]!.port,
    adminPort: servers[1]!.port,
    listeners,
    metrics,
    state: () => stateStatus(),
    shutdown: (reason = "shutdown") => stop(config.shutdownDelayMs, reason),
    [Symbol.asyncDispose]: () => stop(0, "disposed"),
  };

  /** The shutdown sequence; runs once (see {@link Gateway.shutdown}). */
  async function shutdownSequence(delayMs: number, reason: string): Promise<void> {
    const started = performance.now();
    health.shutdown();
    // Kept-alive HTTP clients get `Connection: close` on their next response and reconnect elsewhere.
    if (proxy.lifecycle) proxy.lifecycle.closing = true;
    for (const notify of adminSubscribers) notify();
    const bound = listeners.counts().bound;
    const delay = bound > 0 ? delayMs : 0;
    log.info("Shutdown started: /healthz and /readyz answer 503", { reason, shutdownDelayMs: delay, drainGraceMs: config.drainGracePeriodMs, listeners: bound });
    if (delay > 0) {
      log.info("Listeners keep accepting during the shutdown delay, so load balancers notice", { ms: delay });
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    const open = listeners.counts().connections;
    // No snapshot after this point; the source stops (and writes the state file) while the listeners drain.
    store[Symbol.dispose]?.();
    const drainStarted = performance.now();
    const drained = Promise.all([listeners.close(config.drainGracePeriodMs), healthChecks.close()]);
    log.info("Listeners stop accepting: draining open connections", { connections: open, graceMs: config.drainGracePeriodMs });
    await controller?.[Symbol.asyncDispose]();
    await source[Symbol.asyncDispose]();
    await events?.[Symbol.asyncDispose]();
    client?.close();
    await drained;
    log.info("Drain finished", { ms: Math.round(performance.now() - drainStarted) });
    routes[Symbol.dispose]();
    dns[Symbol.dispose]();
    accessLog?.close();
    await tracing?.shutdown();
    closing.abort(); // ends open admin event streams, or Deno's server shutdown waits for them
    await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
    log.info("kubegate stopped", { ms: Math.round(performance.now() - started) });
  }
}
