/**
 * The seam between the control plane and a data plane, written as what crosses it. Everything here is plain,
 * serialisable data (no functions, no class instances), so that a data plane can live in another process and be
 * driven over a pipe: the control plane sends {@link DataPlaneSettings} once and a {@link Snapshot} per change; the
 * data plane answers with the views below (listeners, balancing, outlier and connection counts, traffic).
 *
 * ```
 *  control plane                                  data plane
 *  source -> store -> Snapshot  ── apply ──────▶  routes -> listeners -> proxies
 *  health, Events, admin, /metrics ◀── views ───  listener states, balancing, outliers, traffic
 *  SIGTERM  ── closing, drain(graceMs) ─────────▶ Connection: close, stop accepting, drain
 * ```
 */
import type { AccessDecision, DialCounts, EndpointAccessMode } from "../proxy/endpoint-access.ts";
import type { BalancerAlgorithm, Snapshot } from "../model/types.ts";
import type { OutlierStats } from "../balancer/cluster-state.ts";
import type { EntrypointListeners, ListenerCounts } from "../listeners/report.ts";
import type { BalancingInfo } from "../routes/builder.ts";
import type { TrafficSample } from "../telemetry/metrics/traffic.ts";

export type { BalancingInfo, EntrypointListeners, ListenerCounts, OutlierStats, TrafficSample };

/** Gateway-wide proxy settings (flags); Services override some by annotation (`model/annotations.ts`). */
export interface ProxySettings {
  /** Upstream connect timeout per attempt, ms (`--connect-timeout`). */
  readonly connectTimeoutMs: number;
  /** Idle timeout of client and upstream connections, ms (`--idle-timeout`). */
  readonly idleTimeoutMs: number;
  /** HTTP: a client must send a full request head within this, ms (`--request-header-timeout`). */
  readonly requestHeaderTimeoutMs: number;
  /** HTTP: the upstream must send the response head within this, ms (`--response-header-timeout`). */
  readonly responseHeaderTimeoutMs: number;
  /** HTTP: a whole exchange may last at most this, ms; 0: no limit (`--max-request-duration`). */
  readonly maxRequestDurationMs: number;
  /** HTTP: requests in flight per Service port; 0: no limit (`--max-concurrent-requests`). */
  readonly maxConcurrentRequests: number;
  /** HTTP: max request/response head bytes (`--max-header-bytes`). */
  readonly maxHeaderBytes: number;
  /** HTTP: max request body bytes; 0: no limit (`--max-body-bytes`). */
  readonly maxRequestBodyBytes: number;
  /** HTTP: retry an idempotent request that got no response byte once elsewhere (`--retry-idempotent`). */
  readonly retryIdempotent: boolean;
  /** Open client connections per listener; 0: no limit (`--max-connections-per-listener`). */
  readonly maxConnectionsPerListener: number;
  /** Open client connections over all listeners; 0: no limit (`--max-connections`). */
  readonly maxConnections: number;
  /** CIDRs whose forwarding headers are kept (`--trusted-proxies`); empty: none. */
  readonly trustedProxies: readonly string[];
}

/** What a data plane is started with: plain data derived from the config (see `settings.ts`). */
export interface DataPlaneSettings {
  readonly proxy: ProxySettings;
  /** The algorithm of Services without `kubegate.io/balancer` (`--default-balancer`). */
  readonly defaultBalancer: BalancerAlgorithm;
  /** Passive outlier detection (`--outlier-*`); `consecutiveFailures: 0` turns it off. */
  readonly outlier: { readonly consecutiveFailures: number; readonly baseEjectionMs: number; readonly maxEjectionPercent: number };
  /** How long removed listeners wait for their connections, ms (`--drain-grace-period`). */
  readonly drainGraceMs: number;
  /** Per-Service traffic series at most (`--metrics-max-series`). */
  readonly maxTrafficSeries: number;
  /**
   * The HMAC key of affinity cookies, one per gateway start, so that every worker accepts the cookies the others
   * set (clients are re-pinned after a restart).
   */
  readonly cookieSecret: string;
  /** One JSON line per request, connection and flow on stdout (`--access-log`). */
  readonly accessLog: boolean;
  /** Share of successful requests, connections and flows logged, 0..1 (`--access-log-sample`; absent: 1). */
  readonly accessLogSample?: number | undefined;
  /** Append the access log to this file, reopened on SIGUSR1 (`--access-log-file`); absent: stdout. */
  readonly accessLogFile?: string | undefined;
  readonly tracing: TracingSettings;
  /**
   * `--endpoint-access port-forward|auto`: the data plane reaches pods through the API server's port-forward too (each
   * data plane process loads the kubeconfig itself; credentials do not cross the worker channel). Absent: direct.
   */
  readonly endpointAccess?: { readonly mode: "port-forward" | "auto"; readonly kubeconfig?: string | undefined } | undefined;
  /** Bind listeners with SO_REUSEPORT (set for worker processes, which all bind every entrypoint). */
  readonly reusePort?: boolean | undefined;
}

/** Tracing as the flags and the `OTEL_*` environment ask for it (read once, in config parsing). */
export interface TracingSettings {
  /** `--tracing`, or an OTLP endpoint set in the environment. */
  readonly wanted: boolean;
  /** `--tracing-sample-ratio`; absent: from `OTEL_TRACES_SAMPLER`. */
  readonly sampleRatio?: number | undefined;
  /** The `OTEL_*` variables of the gateway's environment. */
  readonly env: Readonly<Record<string, string>>;
  /** The `service.version` resource attribute. */
  readonly serviceVersion: string;
}

/** Connection totals against `--max-connections`. */
export interface ConnectionCounts {
  readonly active: number;
  readonly refused: number;
}

/**
 * A data plane as the control plane drives it. Commands go in ({@link apply}, {@link closing}, {@link drain});
 * views come out as plain data. The in-process implementation is `index.ts`'s {@link startDataPlane}; one in a
 * worker process (`workers.ts`) sends the same commands as messages and answers from the workers' last reports.
 */
export interface DataPlane extends AsyncDisposable {
  /** Serve this snapshot: bind, switch routes, drain removed listeners. `snapshot.delta` (when set) makes it O(changed). */
  apply(snapshot: Snapshot): void;
  /** Resolves once the listeners of every applied snapshot have been bound (or have failed). */
  settled(): Promise<void>;
  /** Shutdown started: responses carry `Connection: close` from now on; listeners keep accepting. */
  closing(): void;
  /** Stop accepting; open connections get up to `graceMs` to finish, then are closed. */
  drain(graceMs: number): Promise<void>;
  /** Bind state per entrypoint key. */
  listeners(): readonly EntrypointListeners[];
  counts(): ListenerCounts;
  /** How an entrypoint balances now (algorithm, affinity, ExternalName, ejected endpoints). */
  balancing(key: string): BalancingInfo | undefined;
  /** Per Service port with outlier detection on. */
  outliers(): readonly OutlierStats[];
  /** Against `--max-connections`; undefined when there is no limit. */
  connections(): ConnectionCounts | undefined;
  /** Cumulative per-Service-port traffic counters (the admin page). */
  traffic(): readonly TrafficSample[];
  /** Access log records dropped because its sink could not keep up, since the start (`kubegate_access_log_dropped_total`). */
  accessLogDropped(): number;
  /** The tracing sampler in use, or `off` (for the start-up log). */
  readonly tracing: string;
  /** The worker processes, when the data plane runs in several (`--workers`); absent in process. */
  workers?(): readonly WorkerStatus[];
  /**
   * Call `handler` when listener states change after `apply` returned (bind failures reported later by worker
   * processes); in process they are known when `apply` returns, and this is absent.
   */
  onListenersChanged?(handler: () => void): void;
  /** Whether anything serves now (worker processes: at least one is up); absent: always (in process). */
  serving?(): boolean;
  /** How endpoints are reached (`--endpoint-access` other than direct, in process); absent: direct, or workers. */
  endpointAccess?(): EndpointAccessStatus;
}

/** `--endpoint-access` as the data plane applies it (admin `/api/status`). */
export interface EndpointAccessStatus {
  readonly mode: EndpointAccessMode;
  /** `auto`'s decisions per endpoint network. */
  readonly decisions: readonly AccessDecision[];
  /** Connections opened (ok) and not (failed), by how. */
  readonly dials: DialCounts;
}

/** One worker as the control plane sees it (admin `/api/status`). */
export interface WorkerStatus {
  readonly worker: number;
  readonly pid: number;
  /** Started and reporting. */
  readonly ready: boolean;
  readonly restarts: number;
  readonly connections: number;
  readonly requests: number;
}

