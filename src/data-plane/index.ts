/**
 * The data plane, in process: snapshot -> routes -> listeners and their proxies -> traffic telemetry. It owns
 * everything that carries a request: the route builder (balancers, affinity tables, outlier state per Service port),
 * ExternalName DNS leases, the listeners with their HTTP/TCP/UDP proxies, tracing, the access log and the
 * per-Service traffic counters. The control plane drives it through the {@link DataPlane} interface (`types.ts`).
 *
 * @example
 * await using plane = await startDataPlane(dataPlaneSettings(config, "0.1.0"), { log });
 * plane.apply(snapshot);
 * await plane.settled();
 */
import type { KubeConnection } from "../kube/kubeconfig.ts";
import { ListenerManager } from "../listeners/manager.ts";
import { type Logger, silentLogger } from "../log.ts";
import { rt } from "../runtime/index.ts";
import { routeError } from "../runtime/route-check.ts";
import type { Snapshot } from "../model/types.ts";
import { endpointAccess, useEndpointAccess } from "../proxy/dial.ts";
import { EndpointAccess } from "../proxy/endpoint-access.ts";
import { createH2Proxy } from "../proxy/h2/index.ts";
import { createHttpProxy } from "../proxy/http/index.ts";
import { createTcpProxy } from "../proxy/tcp/index.ts";
import type { ProxyTelemetry } from "../proxy/types.ts";
import { createUdpProxy } from "../proxy/udp/index.ts";
import { RouteBuilder } from "../routes/builder.ts";
import { DnsRegistry } from "../routes/dns/registry.ts";
import { AccessLog } from "../telemetry/access-log.ts";
import { TrafficMetrics } from "../telemetry/metrics/traffic.ts";
import { proxyOptions } from "./settings.ts";
import type { DataPlane, DataPlaneSettings } from "./types.ts";

export type * from "./types.ts";

export { dataPlaneSettings, proxyOptions, trustedPeers } from "./settings.ts";
/** Pure readings of listener states, for the control plane's metrics (it reaches the data plane only through here). */
export { bindFailuresByReason } from "../listeners/bind-queue.ts";
export { fileReserveAt } from "../listeners/file-reserve.ts";

export interface DataPlaneDeps {
  readonly log?: Logger | undefined;
  /** This data plane's worker number, when it runs in a worker process. */
  readonly worker?: number | undefined;
  /** The API server connection the control plane uses too (in process): port-forward shares its credentials. */
  readonly kube?: KubeConnection | undefined;
}

/** The in-process data plane; {@link trafficMetrics} is its counters as a collector for the node's `/metrics`. */
export interface LocalDataPlane extends DataPlane {
  /** Per-Service traffic series; registered in the control plane's metrics registry (same process only). */
  readonly trafficMetrics: TrafficMetrics;
  /** Reopen the access log's file (SIGUSR1, forwarded to a worker process); no-op on stdout. */
  reopenAccessLog(): void;
}

/** Start a data plane with these settings (it serves nothing until the first {@link DataPlane.apply}). */
export async function startDataPlane(settings: DataPlaneSettings, deps: DataPlaneDeps = {}): Promise<LocalDataPlane> {
  const log = deps.log ?? silentLogger;
  const { tracing: t } = settings;
  // The OTel SDK and exporter (~0.15 s and ~17 MiB at start) load only when tracing can be on.
  const { setupTracing } = t.wanted ? await import("../telemetry/tracing/setup.ts") : { setupTracing: () => undefined };
  const tracing = setupTracing({
    enabled: t.wanted,
    ...(t.sampleRatio !== undefined ? { sampleRatio: t.sampleRatio } : {}),
    env: t.env,
    serviceVersion: t.serviceVersion,
    onShutdownError: (e) => log.warn("Trace export failed on shutdown", { error: String(e) }),
    log,
  });
  // --endpoint-access port-forward|auto: the kubeconfig and the WebSocket client load only when asked for.
  const access = settings.endpointAccess ? await endpointAccessFor(settings.endpointAccess, deps.kube, log) : undefined;
  useEndpointAccess(access);
  // Worker processes share the pod's stdout: the access log cuts its writes to a pipe into atomic pieces (PIPE_BUF).
  const accessLog = settings.accessLog
    ? new AccessLog({ worker: deps.worker, sample: settings.accessLogSample, file: settings.accessLogFile })
    : undefined;
  // logrotate: SIGUSR1 reopens the file (a worker process also when the control plane forwards it, workers.ts).
  const stopReopen = accessLog && settings.accessLogFile !== undefined ? rt.onSignal("SIGUSR1", () => accessLog.reopen()) : undefined;
  const trafficMetrics = new TrafficMetrics({ maxSeries: settings.maxTrafficSeries });
  const telemetry: ProxyTelemetry = {
    traffic: (ep) => trafficMetrics.forEntrypoint(ep),
    ...(tracing ? { tracing: tracing.proxy } : {}),
    ...(accessLog ? { accessLog } : {}),
  };
  const proxy = { ...proxyOptions(settings.proxy), telemetry, log };
  // Routes (balancers, affinity tables, ExternalName resolvers) outlive snapshots.
  const dns = new DnsRegistry({ log });
  const routes = new RouteBuilder({
    externalNames: dns,
    defaultBalancer: settings.defaultBalancer,
    outlier: settings.outlier,
    cookieSecret: settings.cookieSecret,
  });
  const listeners = new ListenerManager(
    { http: createHttpProxy, h2c: createH2Proxy, tcp: createTcpProxy, udp: createUdpProxy },
    { proxyOptions: proxy, drainGraceMs: settings.drainGraceMs, log, routes, reusePort: settings.reusePort ?? false },
  );
  let disposed: Promise<void> | undefined;

  return {
    trafficMetrics,
    tracing: tracing?.sampler ?? "off",
    apply(snapshot: Snapshot) {
      listeners.apply(snapshot);
      trafficMetrics.sync(snapshot);
    },
    settled: () => listeners.settled(),
    closing() {
      if (proxy.lifecycle) proxy.lifecycle.closing = true;
    },
    drain: (graceMs) => listeners.close(graceMs),
    listeners: () => listeners.status(),
    counts: () => listeners.counts(),
    balancing: (key) => routes.describe(key),
    outliers: () => routes.outlierStats(),
    connections: () => (proxy.connections ? { active: proxy.connections.active, refused: proxy.connections.refused } : undefined),
    traffic: () => trafficMetrics.samples(),
    accessLogDropped: () => accessLog?.dropped ?? 0,
    ...(access ? { endpointAccess: () => ({ mode: access.mode, decisions: access.decisions(), dials: structuredClone(access.counts) }) } : {}),
    reopenAccessLog: () => accessLog?.reopen(),
    [Symbol.asyncDispose]: () =>
      (disposed ??= (async () => {
        await listeners.close(0);
        routes[Symbol.dispose]();
        dns[Symbol.dispose]();
        stopReopen?.();
        if (access !== undefined && endpointAccess() === access) useEndpointAccess(undefined);
        await accessLog?.close();
        await tracing?.shutdown();
      })()),
  };
}

/**
 * The port-forward dialer over the API server (`kube`, or the kubeconfig loaded here: a worker process loads its own),
 * and the access `mode` on top of it.
 */
async function endpointAccessFor(s: NonNullable<DataPlaneSettings["endpointAccess"]>, kube: KubeConnection | undefined, log: Logger): Promise<EndpointAccess> {
  const { PortForwardDialer } = await import("../kube/portforward.ts");
  const connection = kube ?? (await (await import("../kube/kubeconfig.ts")).loadKubeConfig(s.kubeconfig));
  return new EndpointAccess({ mode: s.mode, connectTcp: rt.connectTcp, portForward: new PortForwardDialer(connection), routeError, log });
}
