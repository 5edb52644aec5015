/**
 * The OpenTelemetry SDK, set up in this one module (everything else uses only the types of `@opentelemetry/api`,
 * and its functions through `ProxyTracing.api`, so that nothing of OpenTelemetry loads while tracing is off):
 * a tracer provider with kubegate's OTLP/HTTP (JSON) exporter (`otlp-exporter.ts`) behind the SDK's batch
 * processor, a sampler from the standard environment or the gateway's flags, the W3C Trace Context propagator,
 * and a graceful flush on {@link Tracing.shutdown}.
 *
 * Environment (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/), all from the
 * `env` given (`config.otelEnv`): `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` (+ `_ARG`); the
 * exporter's `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `_HEADERS`, `_TIMEOUT`, `_COMPRESSION`; the batch processor's
 * `OTEL_BSP_SCHEDULE_DELAY` (default 5000 ms), `OTEL_BSP_MAX_QUEUE_SIZE` (8192), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
 * (512), `OTEL_BSP_EXPORT_TIMEOUT` (30000 ms).
 * Flags win over the environment: `--tracing=false` turns tracing off, `--tracing-sample-ratio R` sets a
 * `parentbased_traceidratio` sampler with ratio R.
 */
import { createTraceState, propagation, ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace-base";
import type { Logger } from "../../log.ts";
import { envValue, type OtelEnv, OtelEnvError, resourceAttributes } from "../otlp-env.ts";
import { OtlpTraceExporter, otlpTraceSettings, type TraceExportStats } from "./otlp-exporter.ts";
import type { ProxyTracing } from "./types.ts";

/** Tracing settings from flags; every field is optional (environment, then defaults, fill the rest). */
export interface TracingOptions {
  /** `--tracing`: false turns tracing off whatever the environment says. Default: on. */
  readonly enabled?: boolean | undefined;
  /** `--tracing-sample-ratio`: 0..1, a parent-based ratio sampler. Default: from `OTEL_TRACES_SAMPLER`. */
  readonly sampleRatio?: number | undefined;
  /** Environment to read (default: the process environment, as given by the caller). */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined;
  /** Exporter override (tests: an in-memory exporter). Default: OTLP/HTTP JSON ({@link OtlpTraceExporter}). */
  readonly exporter?: SpanExporter | undefined;
  /** Export each span as it ends (tests) instead of batching. */
  readonly simpleProcessor?: boolean | undefined;
  /** Batch processor's delay between exports, ms (default 5000, or `OTEL_BSP_SCHEDULE_DELAY`). */
  readonly scheduledDelayMs?: number | undefined;
  /** `service.version` resource attribute. */
  readonly serviceVersion?: string | undefined;
  /** Called when the final export on {@link Tracing.shutdown} fails (shutdown itself never rejects). */
  readonly onShutdownError?: ((error: unknown) => void) | undefined;
  /** Where the exporter warns about failed exports (one line a minute at most) and its unsupported settings. */
  readonly log?: Logger | undefined;
}

/** Tracing set up for the gateway: hand {@link proxy} to the data plane; call {@link shutdown} on exit. */
export interface Tracing extends ProxyTracing {
  /** The sampler's description, e.g. `ParentBased{root=TraceIdRatioBased{0.1}, ...}` (for the startup log). */
  readonly sampler: string;
  /** What the proxies take (`ProxyTelemetry.tracing`). */
  readonly proxy: ProxyTracing;
  /** Export the spans ended so far. */
  forceFlush(): Promise<void>;
  /** What the OTLP exporter did so far (undefined with an exporter override). */
  exportStats(): TraceExportStats | undefined;
  /** Export what is left and stop. Idempotent; never rejects (see `onShutdownError`). */
  shutdown(): Promise<void>;
}

/** A sampler built from settings, and what it can ever sample. */
export interface SamplerChoice {
  readonly sampler: Sampler;
  readonly sampleRoots: boolean;
  readonly sampleParents: boolean;
}

/** The OTel env var error for an invalid sampler setting. */
export class TracingConfigError extends Error {
  override name = "TracingConfigError";
}

function ratioOf(raw: string | undefined, what: string): number {
  if (raw === undefined || raw.trim() === "") return 1;
  const r = Number(raw);
  if (!Number.isFinite(r) || r < 0 || r > 1) throw new TracingConfigError(`Invalid ${what} "${raw}": use a number from 0 to 1`);
  return r;
}

/**
 * The sampler for a flag ratio (wins) or `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`.
 *
 * @example chooseSampler(0, {}).sampleRoots // false: ratio 0 never starts a trace
 */
export function chooseSampler(sampleRatio: number | undefined, env: Readonly<Record<string, string | undefined>>): SamplerChoice {
  if (sampleRatio !== undefined) {
    const r = ratioOf(String(sampleRatio), "tracing sample ratio");
    return { sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(r) }), sampleRoots: r > 0, sampleParents: true };
  }
  const name = (env.OTEL_TRACES_SAMPLER ?? "parentbased_always_on").trim().toLowerCase();
  const arg = env.OTEL_TRACES_SAMPLER_ARG;
  switch (name) {
    case "always_on":
      return { sampler: new AlwaysOnSampler(), sampleRoots: true, sampleParents: true };
    case "always_off":
      return { sampler: new AlwaysOffSampler(), sampleRoots: false, sampleParents: false };
    case "traceidratio": {
      const r = ratioOf(arg, "OTEL_TRACES_SAMPLER_ARG");
      return { sampler: new TraceIdRatioBasedSampler(r), sampleRoots: r > 0, sampleParents: r > 0 };
    }
    case "parentbased_always_on":
      return { sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }), sampleRoots: true, sampleParents: true };
    case "parentbased_always_off":
      return { sampler: new ParentBasedSampler({ root: new AlwaysOffSampler() }), sampleRoots: false, sampleParents: true };
    case "parentbased_traceidratio": {
      const r = ratioOf(arg, "OTEL_TRACES_SAMPLER_ARG");
      return { sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(r) }), sampleRoots: r > 0, sampleParents: true };
    }
    default:
      throw new TracingConfigError(
        `Invalid OTEL_TRACES_SAMPLER "${name}": use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio`,
      );
  }
}

/** The batch processor's settings (`OTEL_BSP_*`; a flag's schedule delay wins). */
export interface BatchSettings {
  readonly scheduledDelayMillis: number;
  readonly maxQueueSize: number;
  readonly maxExportBatchSize: number;
  readonly exportTimeoutMillis: number;
}

/**
 * The batch processor's settings from `OTEL_BSP_*` (the spec's defaults, except a queue of 8192 spans instead of
 * 2048: a fraction of a second of a busy gateway's spans); the batch never exceeds the queue. A value that is not a
 * positive whole number is ignored, with a warning through `warn` (as the spec asks of invalid settings).
 *
 * @example batchSettings({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "1024" }).maxExportBatchSize // 1024
 */
export function batchSettings(env: OtelEnv, scheduledDelayMs?: number, warn: (msg: string) => void = () => {}): BatchSettings {
  const positiveInt = (name: string, fallback: number): number => {
    const raw = envValue(env, name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (Number.isInteger(n) && n > 0) return n;
    warn(`Invalid ${name} "${raw}": use a positive whole number; using ${fallback}`);
    return fallback;
  };
  const delay = scheduledDelayMs !== undefined && Number.isFinite(scheduledDelayMs) && scheduledDelayMs > 0 ? scheduledDelayMs : positiveInt("OTEL_BSP_SCHEDULE_DELAY", 5_000);
  const maxQueueSize = positiveInt("OTEL_BSP_MAX_QUEUE_SIZE", 8192);
  return {
    scheduledDelayMillis: delay,
    maxQueueSize,
    maxExportBatchSize: Math.min(positiveInt("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), maxQueueSize),
    exportTimeoutMillis: positiveInt("OTEL_BSP_EXPORT_TIMEOUT", 30_000),
  };
}

function traceSettings(env: OtelEnv) {
  try {
    return otlpTraceSettings(env);
  } catch (err) {
    throw err instanceof OtelEnvError ? new TracingConfigError(err.message) : err;
  }
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && v.trim().toLowerCase() === "true";
}

/**
 * Set up tracing, or return undefined when it is off (`enabled: false` or `OTEL_SDK_DISABLED=true`).
 * Registers the W3C propagator globally (for code that uses `propagation`); the data plane itself
 * reads and writes `traceparent` directly.
 *
 * @example
 * const tracing = setupTracing({ enabled: config.tracing, sampleRatio: config.tracingSampleRatio, env: process.env });
 * const telemetry = { traffic: (ep) => metrics.traffic.forEntrypoint(ep), tracing: tracing?.proxy, accessLog };
 * // on exit:
 * await tracing?.shutdown();
 */
export function setupTracing(options: TracingOptions = {}): Tracing | undefined {
  const env = options.env ?? {};
  if (options.enabled === false || truthy(env.OTEL_SDK_DISABLED)) return undefined;
  const choice = chooseSampler(options.sampleRatio, env);
  const otlp = options.exporter === undefined ? new OtlpTraceExporter({ settings: traceSettings(env), log: options.log }) : undefined;
  for (const note of otlp?.settings.notes ?? []) options.log?.warn(note);
  const exporter: SpanExporter = options.exporter ?? otlp!;
  const processor: SpanProcessor = options.simpleProcessor ? new SimpleSpanProcessor(exporter) : new BatchSpanProcessor(exporter, { ...batchSettings(env, options.scheduledDelayMs, (m) => options.log?.warn(m)) });
  const attrs = resourceAttributes(env, options.serviceVersion);
  const provider = new BasicTracerProvider({ sampler: choice.sampler, resource: resourceFromAttributes(attrs), spanProcessors: [processor] });
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const tracer = provider.getTracer("kubegate");
  const proxy: ProxyTracing = { tracer, api: { ROOT_CONTEXT, trace, createTraceState }, sampleRoots: choice.sampleRoots, sampleParents: choice.sampleParents };
  let closing: Promise<void> | undefined;
  return {
    ...proxy,
    proxy,
    sampler: choice.sampler.toString(),
    forceFlush: () => provider.forceFlush(),
    exportStats: () => otlp?.stats(),
    shutdown: () => (closing ??= provider.shutdown().catch((err: unknown) => options.onShutdownError?.(err))),
  };
}
