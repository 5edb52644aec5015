/**
 * The composition root as a value: a data plane (`data-plane/`: routes, listeners, proxies, traffic telemetry)
 * driven by a control plane (`control-plane/`: source, model, health, admin, Events, LB controller), joined by the
 * plain-data interface of `data-plane/types.ts`, plus the shutdown sequence that spans both. `main.ts` runs one
 * from flags; tests and the demo start one in process.
 */
import type { Config } from "./config/flags.ts";
import { type ControlPlane, startControlPlane } from "./control-plane/index.ts";
import { availableCpus, instanceName, tcpMigrateReq } from "./config/host.ts";
import { handoverSocket, printable, Succession } from "./control-plane/succession.ts";
import { type DataPlane, dataPlaneSettings, startDataPlane } from "./data-plane/index.ts";
import { WorkerPool, workerCommand } from "./data-plane/workers.ts";
import { loadKubeConfig } from "./kube/kubeconfig.ts";
import { rt } from "./runtime/index.ts";
import type { Source } from "./kube/source.ts";
import type { StateStatus } from "./kube/state-file.ts";
import { type Logger, silentLogger } from "./log.ts";
import type { Snapshot } from "./model/types.ts";
import { type GatewayMetrics, otlpMetricsSettings, startOtlpMetricsExport } from "./telemetry/metrics/index.ts";
import pkg from "../package.json" with { type: "json" };

export { modelOptions } from "./control-plane/index.ts";

export interface GatewayDeps {
  readonly log?: Logger;
  /** Use this source instead of the one the config names (tests); `--state-file` still wraps it. */
  readonly source?: Source;
}

export interface Gateway extends AsyncDisposable {
  /** The node's metrics registry (control plane series and the data plane's traffic). */
  readonly metrics: GatewayMetrics;
  /** Resolves once the first snapshot has been applied and its listeners are all bound. */
  ready(): Promise<void>;
  snapshot(): Snapshot | undefined;
  /** Resolves with the first snapshot whose version is greater than `version`. */
  nextSnapshot(version: number): Promise<Snapshot>;
  readonly healthPort: number;
  readonly adminPort: number;
  /** The data plane's listener states. */
  readonly listeners: { status: DataPlane["listeners"]; counts: DataPlane["counts"] };
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

/** How many data plane workers `--workers` asks for here (0: auto); 1 on runtimes without worker processes (Deno). */
function workerCount(asked: number, log: Logger): number {
  const n = asked === 0 ? availableCpus() : asked;
  if (n > 1 && rt.name !== "bun") {
    log.warn("Worker processes need Bun: running one data plane in this process", { workers: n, runtime: rt.name });
    return 1;
  }
  return n;
}

/**
 * A hand-over keeps the old gateway's listeners open at least this long after SIGTERM (or `--shutdown-delay`,
 * when longer): kept-alive clients that are busy get `Connection: close` on their next response and reconnect (to
 * either gateway) before idle connections are closed.
 */
const HANDOVER_LINGER_MS = 1_000;

/** Join the node's succession (`--handover-socket`); undefined when hand-over is off or this runtime cannot. */
async function joinSuccession(config: Config, log: Logger): Promise<Succession | undefined> {
  const path = handoverSocket(config.handoverSocket, config.healthzBindAddress.port);
  if (path === undefined) return undefined;
  const { listenUnix, connectUnix } = rt;
  if (!listenUnix || !connectUnix) {
    log.warn("No hand-over on this runtime: a second gateway on this node cannot bind beside this one", { runtime: rt.name });
    return undefined;
  }
  const succession = await Succession.start({ path, net: { listenUnix, connectUnix }, pid: process.pid, version: pkg.version, log });
  const migrate = tcpMigrateReq();
  const fields = { socket: printable(path), role: succession.incumbent ? "incumbent" : "successor", tcpMigrateReq: migrate ?? "absent" };
  if (migrate) log.info("Hand-over on: every listener binds with SO_REUSEPORT", fields);
  else log.warn("Hand-over on, but net.ipv4.tcp_migrate_req is not 1: connections queued on a listener when it closes are reset (run `kubegate prepare-node`)", fields);
  return succession;
}

/** Start a gateway. Throws when the health or admin address cannot be bound. */
export async function startGateway(config: Config, deps: GatewayDeps = {}): Promise<Gateway> {
  const log = deps.log ?? silentLogger;
  // The OTLP metrics export's settings (OTEL_METRICS_EXPORTER=otlp or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT): read before
  // anything starts, so that a malformed OTEL_* variable fails the start-up cleanly.
  const otlpSettings = otlpMetricsSettings(config.otelEnv);
  const succession = await joinSuccession(config, log);
  // With hand-over every listener shares its port with a successor's (SO_REUSEPORT); workers always do.
  const settings = { ...dataPlaneSettings(config, pkg.version), ...(succession ? { reusePort: true } : {}) };
  const workers = workerCount(config.workers, log);
  const startPool = async () => {
    const pool = new WorkerPool(settings, { workers, command: workerCommand(rt.execPath), spawn: rt.spawnChild, log });
    await pool.started();
    return pool;
  };
  // An in-process data plane that port-forwards shares the control plane's API server connection (one kubeconfig
  // load, one set of credentials to refresh); worker processes load their own.
  const kube = workers <= 1 && settings.endpointAccess && !deps.source ? await loadKubeConfig(config.kubeconfig).catch(async (err: unknown) => {
    await succession?.[Symbol.asyncDispose]();
    throw err;
  }) : undefined;
  // Either way the node's traffic series come from the data plane (its own, or the workers' summed).
  const data = await (workers > 1 ? startPool() : startDataPlane(settings, { log, kube })).catch(async (err: unknown) => {
    await succession?.[Symbol.asyncDispose]();
    throw err;
  });
  let control: ControlPlane;
  try {
    control = await startControlPlane(config, { dataPlane: data, traffic: data.trafficMetrics, log, succession, kube, ...(deps.source ? { source: deps.source } : {}) });
  } catch (err) {
    await data[Symbol.asyncDispose]();
    await succession?.[Symbol.asyncDispose]();
    throw err;
  }
  // The series of /metrics pushed to a collector, from this process only (the workers' traffic reaches its registry).
  const otlpMetrics = otlpSettings && startOtlpMetricsExport(control.metrics.registry, { settings: otlpSettings, env: config.otelEnv, serviceVersion: pkg.version, instanceId: instanceName(config.nodeName), log });
  let stopping: Promise<void> | undefined;
  const stop = (delayMs: number, reason: string) => (stopping ??= shutdownSequence(delayMs, reason));

  return {
    metrics: control.metrics,
    ready: () => control.ready(),
    snapshot: () => control.snapshot(),
    nextSnapshot: (version) => control.nextSnapshot(version),
    healthPort: control.healthPort,
    adminPort: control.adminPort,
    listeners: { status: () => data.listeners(), counts: () => data.counts() },
    state: () => control.state(),
    shutdown: (reason = "shutdown") => stop(config.shutdownDelayMs, reason),
    [Symbol.asyncDispose]: () => stop(0, "disposed"),
  };

  /** The shutdown sequence; runs once (see {@link Gateway.shutdown}). */
  async function shutdownSequence(delayMs: number, reason: string): Promise<void> {
    const started = performance.now();
    // Another gateway serves this node (the surge pod, or our incumbent): it answers the probes from now on.
    const handingOver = control.peerServes();
    const serversHandedOver = handingOver ? control.handOver() : Promise.resolve();
    control.shuttingDown();
    // Kept-alive HTTP clients get `Connection: close` on their next response and reconnect elsewhere.
    data.closing();
    const bound = data.counts().bound;
    const delay = bound === 0 ? 0 : handingOver ? Math.max(delayMs, HANDOVER_LINGER_MS) : delayMs;
    if (handingOver) log.info("Shutdown started: handing over to the other gateway on this node", { reason, lingerMs: delay, drainGraceMs: config.drainGracePeriodMs, listeners: bound });
    else log.info("Shutdown started: /healthz and /readyz answer 503", { reason, shutdownDelayMs: delay, drainGraceMs: config.drainGracePeriodMs, listeners: bound });
    await serversHandedOver;
    if (delay > 0) {
      if (handingOver) log.info("Listeners keep accepting while busy kept-alive clients are told to reconnect", { ms: delay });
      else log.info("Listeners keep accepting during the shutdown delay, so load balancers notice", { ms: delay });
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    const open = data.counts().connections;
    // No snapshot after this point; the source stops (and writes the state file) while the listeners drain.
    const drainStarted = performance.now();
    const drained = Promise.all([control.stopPublishing(), data.drain(config.drainGracePeriodMs)]);
    log.info("Listeners stop accepting: draining open connections", { connections: open, graceMs: config.drainGracePeriodMs });
    await control.stopSources();
    await drained;
    log.info("Drain finished", { ms: Math.round(performance.now() - drainStarted) });
    // The final counts, drained requests included (at most 5 s).
    await otlpMetrics?.shutdown();
    await data[Symbol.asyncDispose]();
    await control[Symbol.asyncDispose]();
    // Last: the state file is written; the successor may take the node's hand-over socket now.
    await succession?.[Symbol.asyncDispose]();
    log.info("kubegate stopped", { ms: Math.round(performance.now() - started) });
  }
}
