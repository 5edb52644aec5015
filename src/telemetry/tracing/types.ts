/**
 * What the data plane needs from tracing: a tracer from `@opentelemetry/api` plus what the sampler can
 * ever sample, so requests that cannot be sampled skip span creation entirely (near-zero cost at ratio 0).
 *
 * The data plane imports only types from `@opentelemetry/api`: the API's code comes with the SDK
 * (`setup.ts`, imported dynamically when tracing is wanted) through {@link ProxyTracing.api}, and the
 * enum values it uses are the numbers below, so a worker with tracing off loads no OpenTelemetry package.
 */
import type * as otel from "@opentelemetry/api";

/** The functions of `@opentelemetry/api` the data plane calls (contexts for explicit parents, `tracestate`). */
export type TracingApi = Pick<typeof otel, "ROOT_CONTEXT" | "trace" | "createTraceState">;

/** Tracing as the proxies see it. Built by `setupTracing` (or by tests around an in-memory exporter). */
export interface ProxyTracing {
  readonly tracer: otel.Tracer;
  /** `@opentelemetry/api` itself (the one the tracer was built with), loaded only when tracing is on. */
  readonly api: TracingApi;
  /** A request without an incoming `traceparent` may be sampled (the root sampler is not off / ratio > 0). */
  readonly sampleRoots: boolean;
  /** A request with an incoming `traceparent` may be sampled (parent-based sampler, or ratio > 0). */
  readonly sampleParents: boolean;
}

// `@opentelemetry/api` enum values as local numbers (the types make tsc check each against the API's enum).
/** `SpanKind.SERVER`. */
export const SPAN_KIND_SERVER: otel.SpanKind.SERVER = 1;
/** `SpanKind.CLIENT`. */
export const SPAN_KIND_CLIENT: otel.SpanKind.CLIENT = 2;
/** `SpanStatusCode.ERROR`. */
export const SPAN_STATUS_ERROR: otel.SpanStatusCode.ERROR = 2;
/** `TraceFlags.SAMPLED`. */
export const TRACE_FLAGS_SAMPLED: otel.TraceFlags.SAMPLED = 1;
