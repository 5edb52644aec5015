/**
 * W3C Trace Context (`traceparent`/`tracestate`) parsing and formatting on plain strings, for the data
 * plane: it reads the fields straight from the request head and writes them into the upstream head,
 * with the context passed explicitly (no context manager, no AsyncLocalStorage).
 */
import { type Context, createTraceState, ROOT_CONTEXT, type SpanContext, trace, TraceFlags } from "@opentelemetry/api";

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = "00000000000000000000000000000000";
const ZERO_SPAN = "0000000000000000";

/**
 * The remote span context a `traceparent` value names, or undefined when the value is invalid
 * (W3C Trace Context §3.2: version `ff`, all-zero ids and version 00 with extra fields are invalid).
 *
 * @example parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?.traceFlags // 1
 */
export function parseTraceparent(value: string, tracestate?: string | undefined): SpanContext | undefined {
  const m = TRACEPARENT.exec(value.trim());
  if (m === null) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  const sc: SpanContext = { traceId, spanId, traceFlags: Number.parseInt(flags, 16) & TraceFlags.SAMPLED, isRemote: true };
  if (tracestate) sc.traceState = createTraceState(tracestate);
  return sc;
}

/** The `traceparent` value for `sc` (version 00). */
export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TraceFlags.SAMPLED ? "01" : "00"}`;
}

/** A context whose active span is the remote parent `sc` (root context when undefined). */
export function remoteParent(sc: SpanContext | undefined): Context {
  return sc === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, sc);
}

/** Offset of the span id inside a `traceparent` value (`00-` + 32 hex + `-`). */
export const TRACEPARENT_SPAN_ID_OFFSET = 36;
