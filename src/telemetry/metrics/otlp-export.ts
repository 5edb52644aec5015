/**
 * The optional OTLP metrics export: the series of `/metrics` pushed to an OpenTelemetry collector over OTLP/HTTP
 * (JSON) on a timer, configured by OpenTelemetry's standard environment only (no flag):
 *
 * - on when `OTEL_METRICS_EXPORTER=otlp` or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set (a bare
 *   `OTEL_EXPORTER_OTLP_ENDPOINT`, which turns tracing on, does not turn this on: `/metrics` is kubegate's first
 *   metrics path); off with `OTEL_METRICS_EXPORTER=none` or `OTEL_SDK_DISABLED=true`;
 * - URL `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/metrics`, else
 *   `http://localhost:4318/v1/metrics`; headers `OTEL_EXPORTER_OTLP_HEADERS` + `OTEL_EXPORTER_OTLP_METRICS_HEADERS`;
 *   `OTEL_EXPORTER_OTLP_[METRICS_]COMPRESSION=gzip`;
 * - every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60000), each request bounded by `OTEL_METRIC_EXPORT_TIMEOUT`
 *   (default 30000, at most the interval).
 *
 * It runs in the main process only (worker processes' traffic reaches its registry already). Bounded: one request
 * in flight (a tick that finds one still running is skipped), a timeout, and no retry: a failed export is dropped
 * and counted (`kubegate_otlp_metrics_export_failures_total{reason}`), with one warning a minute at most; the
 * next tick sends the cumulative values again, so a collector loses resolution, not counts. A last export on
 * {@link OtlpMetricsExport.shutdown} (at most 5 s).
 */
import { type Logger, rateLimited, silentLogger } from "../../log.ts";
import { envMillis, envTrue, envValue, type OtelEnv, OtelEnvError, resourceAttributes, signalTransport } from "../otlp-env.ts";
import { otlpMetricsRequest, type OtlpRequestContext } from "./otlp.ts";
import type { CounterChild, Registry } from "./registry.ts";

/** Where, how often and how the export sends. */
export interface OtlpMetricsSettings {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly gzip: boolean;
  /** Settings that were read but not followed (an unsupported protocol, ...), for the startup log. */
  readonly notes: readonly string[];
}

export const DEFAULT_INTERVAL_MS = 60_000;
export const DEFAULT_TIMEOUT_MS = 30_000;
/** The last export, on shutdown, waits at most this long. */
export const SHUTDOWN_TIMEOUT_MS = 5_000;
/** Where an OTLP/HTTP collector listens by default. */
export const DEFAULT_URL = "http://localhost:4318/v1/metrics";

/**
 * The export's settings from the environment, or undefined when it is off (see the module comment).
 *
 * @throws {OtelEnvError} on a malformed setting (headers, interval, timeout, URL, exporter name).
 * @example otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })?.url // "http://c:4318/v1/metrics"
 */
export function otlpMetricsSettings(env: OtelEnv): OtlpMetricsSettings | undefined {
  if (envTrue(env, "OTEL_SDK_DISABLED")) return undefined;
  const exporters = (envValue(env, "OTEL_METRICS_EXPORTER") ?? "").toLowerCase().split(",").map((e) => e.trim()).filter((e) => e !== "");
  const notes: string[] = [];
  for (const e of exporters) {
    if (e !== "otlp" && e !== "none") notes.push(`OTEL_METRICS_EXPORTER "${e}" is not supported (otlp or none): /metrics serves Prometheus`);
  }
  if (exporters.includes("none")) return undefined;
  const own = envValue(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
  if (!exporters.includes("otlp") && own === undefined) return undefined;
  const transport = signalTransport(env, "metrics", DEFAULT_URL);
  notes.push(...transport.notes);
  const intervalMs = envMillis(env, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL_MS);
  if (intervalMs <= 0) throw new OtelEnvError(`Invalid OTEL_METRIC_EXPORT_INTERVAL "${intervalMs}": use a positive number of milliseconds`);
  const timeout = envMillis(env, "OTEL_METRIC_EXPORT_TIMEOUT", DEFAULT_TIMEOUT_MS);
  const timeoutMs = Math.min(timeout > 0 ? timeout : DEFAULT_TIMEOUT_MS, intervalMs);
  return { url: transport.url, headers: transport.headers, intervalMs, timeoutMs, gzip: transport.gzip, notes };
}

/** Why an export failed (the `reason` label). */
export type ExportFailure = "status" | "network" | "timeout" | "busy";
const REASONS: readonly ExportFailure[] = ["status", "network", "timeout", "busy"];

export interface OtlpMetricsExportOptions {
  readonly settings: OtlpMetricsSettings;
  /** The environment (`config.otelEnv`): `OTEL_SERVICE_NAME` for the resource. */
  readonly env?: OtelEnv | undefined;
  /** `service.version`. */
  readonly serviceVersion?: string | undefined;
  /** `service.instance.id`: this gateway among many (the node name). */
  readonly instanceId?: string | undefined;
  /** Process start, ms since the epoch (start of every cumulative point). Default: this process's. */
  readonly startMs?: number | undefined;
  readonly log?: Logger | undefined;
  /** Wall clock, ms since the epoch (default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

/** The running export. */
export interface OtlpMetricsExport {
  readonly settings: OtlpMetricsSettings;
  /** Exports now unless one is in flight; resolves to whether the collector took it (never rejects). */
  exportNow(): Promise<boolean>;
  /**
   * Stops the timer and makes a last export (cutting short one in flight; within the timeout, at most
   * {@link SHUTDOWN_TIMEOUT_MS}). Idempotent; never rejects.
   */
  shutdown(): Promise<void>;
  /** Exports the collector accepted, and those dropped by reason (also in the registry). */
  stats(): { readonly exported: number; readonly failures: Readonly<Record<ExportFailure, number>> };
}

/**
 * Start exporting `registry` (registers its own two counter families there first, so they are exported too).
 *
 * @example
 * const settings = otlpMetricsSettings(config.otelEnv);
 * const otlp = settings && startOtlpMetricsExport(metrics.registry, { settings, env: config.otelEnv, serviceVersion: pkg.version, instanceId: config.nodeName, log });
 * // on shutdown, after the drain:
 * await otlp?.shutdown();
 */
export function startOtlpMetricsExport(registry: Registry, options: OtlpMetricsExportOptions): OtlpMetricsExport {
  const { settings } = options;
  const log = options.log ?? silentLogger;
  const now = options.now ?? Date.now;
  const warn = rateLimited((msg, fields) => log.warn(msg, fields), 60_000, now);
  const exported = registry.counter({ name: "kubegate_otlp_metrics_exports_total", help: "OTLP metrics exports the collector accepted." });
  const failed = registry.counter({
    name: "kubegate_otlp_metrics_export_failures_total",
    help: "OTLP metrics exports dropped, by reason: status (the collector answered an error), network, timeout, busy (the previous export was still in flight).",
    labelNames: ["reason"],
  });
  const failures = Object.fromEntries(REASONS.map((r) => [r, failed.labels(r)])) as Record<ExportFailure, CounterChild>;
  exported.inc(0);
  const context: OtlpRequestContext = {
    resource: resourceAttributes(options.env ?? {}, options.serviceVersion, options.instanceId),
    scope: { name: "kubegate", version: options.serviceVersion },
    startMs: options.startMs ?? Math.round(Date.now() - performance.now()),
  };
  const headers = { ...settings.headers, "Content-Type": "application/json", ...(settings.gzip ? { "Content-Encoding": "gzip" } : {}) };
  let inFlight: Promise<boolean> | undefined;
  /** Aborts the request in flight (shutdown does not wait out a slow collector). */
  let current: AbortController | undefined;
  let stopped: Promise<void> | undefined;

  const fail = (reason: ExportFailure, fields: Record<string, unknown>): false => {
    failures[reason].inc();
    warn("otlp-metrics", "OTLP metrics export failed: dropped (the next one sends the cumulative values again)", { url: settings.url, reason, ...fields });
    return false;
  };

  async function send(timeoutMs: number): Promise<boolean> {
    let body: string | ArrayBuffer;
    try {
      const { request, unmapped } = otlpMetricsRequest(registry, context, now());
      if (unmapped > 0) warn("otlp-metrics-unmapped", "OTLP metrics export: samples outside their family were left out", { samples: unmapped });
      body = JSON.stringify(request);
      if (settings.gzip) body = await new Response(new Blob([body]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
    } catch (err) {
      log.error("OTLP metrics export: building the request failed", { error: (err as Error)?.message ?? String(err) });
      return false;
    }
    const abort = new AbortController();
    const deadline = setTimeout(() => abort.abort(), timeoutMs);
    current = abort;
    const signal = abort.signal;
    try {
      const res = await fetch(settings.url, { method: "POST", headers, body, signal });
      const text = await res.text();
      if (!res.ok) return fail("status", { status: res.status, body: text.slice(0, 200) });
      exported.inc();
      const rejected = partialRejection(text);
      if (rejected !== undefined) warn("otlp-metrics-partial", "OTLP metrics export: the collector rejected some data points", { url: settings.url, ...rejected });
      return true;
    } catch (err) {
      if (signal.aborted) return fail("timeout", { timeoutMs });
      return fail("network", { error: (err as Error)?.message ?? String(err) });
    } finally {
      clearTimeout(deadline);
      current = undefined;
    }
  }

  const exportNow = (timeoutMs = settings.timeoutMs): Promise<boolean> => {
    if (inFlight !== undefined) {
      fail("busy", { timeoutMs: settings.timeoutMs });
      return Promise.resolve(false);
    }
    const p = send(timeoutMs).finally(() => {
      inFlight = undefined;
    });
    inFlight = p;
    return p;
  };

  const timer = setInterval(() => void exportNow(), settings.intervalMs);
  (timer as { unref?: () => void }).unref?.();
  log.info("OTLP metrics export on", { url: settings.url, intervalMs: settings.intervalMs, timeoutMs: settings.timeoutMs, gzip: settings.gzip });
  for (const note of settings.notes) log.warn(note);

  return {
    settings,
    exportNow: () => exportNow(),
    shutdown: () =>
      (stopped ??= (async () => {
        clearInterval(timer);
        // A running export is cut short (it is counted as timed out); the last one sends the final values, within
        // at most SHUTDOWN_TIMEOUT_MS so that a slow collector does not hold up the exit.
        current?.abort();
        if (inFlight !== undefined) await inFlight;
        await exportNow(Math.min(settings.timeoutMs, SHUTDOWN_TIMEOUT_MS));
      })()),
    stats: () => ({ exported: exported.value, failures: Object.fromEntries(REASONS.map((r) => [r, failures[r].value])) as Record<ExportFailure, number> }),
  };
}

/** The collector's `partialSuccess` when it rejected points (`{ rejectedDataPoints, errorMessage }`), else undefined. */
export function partialRejection(body: string): { rejectedDataPoints: number; errorMessage: string } | undefined {
  if (!body.includes("partialSuccess")) return undefined;
  try {
    const p = (JSON.parse(body) as { partialSuccess?: { rejectedDataPoints?: string | number; errorMessage?: string } }).partialSuccess;
    const n = Number(p?.rejectedDataPoints ?? 0);
    return n > 0 || p?.errorMessage ? { rejectedDataPoints: n, errorMessage: p?.errorMessage ?? "" } : undefined;
  } catch {
    return undefined;
  }
}
