/**
 * W3C Trace Context (`traceparent`/`tracestate`) parsing and formatting on plain strings, for the data
 * plane: it reads the fields straight from the request head and writes them into the upstream head,
 * with the context passed explicitly (no context manager, no AsyncLocalStorage). Only building a
 * context needs the API's code, given by the caller (`ProxyTracing.api`).
 */
import type { Context, SpanContext } from "@opentelemetry/api";
import { TRACE_FLAGS_SAMPLED, type TracingApi } from "./types.ts";

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = "00000000000000000000000000000000";
const ZERO_SPAN = "0000000000000000";

/**
 * The remote span context a `traceparent` value names, or undefined when the value is invalid
 * (W3C Trace Context §3.2: version `ff`, all-zero ids and version 00 with extra fields are invalid).
 * Its `tracestate` is added by {@link remoteParent}.
 *
 * @example parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?.traceFlags // 1
 */
export function parseTraceparent(value: string): SpanContext | undefined {
  const m = TRACEPARENT.exec(value.trim());
  if (m === null) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16) & TRACE_FLAGS_SAMPLED, isRemote: true };
}

/** The `traceparent` value for `sc` (version 00). */
export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TRACE_FLAGS_SAMPLED ? "01" : "00"}`;
}

/**
 * A context whose active span is the remote parent `sc` with the client's `tracestate` (root context when
 * `sc` is undefined: a `tracestate` without a valid `traceparent` is not parsed, as W3C Trace Context asks).
 *
 * @example tracer.startSpan("GET", { kind: SPAN_KIND_SERVER }, remoteParent(api, parseTraceparent(tp), ts))
 */
export function remoteParent(api: TracingApi, sc: SpanContext | undefined, tracestate?: string | undefined): Context {
  if (sc === undefined) return api.ROOT_CONTEXT;
  if (tracestate) sc.traceState = api.createTraceState(tracestate);
  return api.trace.setSpanContext(api.ROOT_CONTEXT, sc);
}

/** Offset of the span id inside a `traceparent` value (`00-` + 32 hex + `-`). */
export const TRACEPARENT_SPAN_ID_OFFSET = 36;
