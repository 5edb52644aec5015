/**
 * Tracing of the HTTP forwarder: a SERVER span per request and a CLIENT span per upstream attempt,
 * with the client's W3C `traceparent`/`tracestate` as the parent and the CLIENT span's context written
 * into the upstream head. Context is passed explicitly (no context manager on the hot path).
 *
 * Cost when a request cannot be sampled (tracing off, or ratio 0 and no incoming `traceparent`): the
 * caller checks {@link ProxyTracing} first and nothing here runs. A request that is not sampled keeps the
 * client's `traceparent` untouched and gets no spans.
 */
import { viaOf } from "../dial.ts";
import type { Attributes, Span } from "@opentelemetry/api";
import type { Endpoint, Entrypoint } from "../../model/types.ts";
import { type ProxyTracing, SPAN_KIND_CLIENT, SPAN_KIND_SERVER, SPAN_STATUS_ERROR, TRACE_FLAGS_SAMPLED } from "../../telemetry/tracing/types.ts";
import { parseTraceparent, remoteParent, TRACEPARENT_SPAN_ID_OFFSET } from "../../telemetry/tracing/w3c.ts";
import { latin1Bytes } from "./bytes.ts";
import { F_OTHER, fields, kinds, latin1, type RequestInfo } from "./parser.ts";
import type { TraceInject } from "./head.ts";

const TP = [116, 114, 97, 99, 101, 112, 97, 114, 101, 110, 116]; // "traceparent"
const TS = [116, 114, 97, 99, 101, 115, 116, 97, 116, 101]; // "tracestate"

function nameIs(buf: Uint8Array, s: number, name: readonly number[]): boolean {
  for (let k = 0; k < name.length; k++) if ((buf[s + k]! | 0x20) !== name[k]) return false;
  return true;
}

/** Field indexes of the last parsed head's `traceparent` and `tracestate` (-1 when absent). */
export const traceFields = { tp: -1, ts: -1 };

/** Find `traceparent`/`tracestate` in the head just parsed (same turn as the parse). */
export function findTraceFields(buf: Uint8Array, fieldCount: number): void {
  let tp = -1;
  let ts = -1;
  for (let i = 0; i < fieldCount; i++) {
    if (kinds[i] !== F_OTHER) continue;
    const s = fields[i * 5]!;
    const len = fields[i * 5 + 1]! - s;
    if (len === 11 && tp < 0 && nameIs(buf, s, TP)) tp = i;
    else if (len === 10 && ts < 0 && nameIs(buf, s, TS)) ts = i;
  }
  traceFields.tp = tp;
  traceFields.ts = ts;
}

function fieldValue(buf: Uint8Array, i: number): string {
  return latin1(buf, fields[i * 5 + 2]!, fields[i * 5 + 3]!);
}

/** The request path (target without the query), and the method, of the head just parsed. */
export function requestLine(buf: Uint8Array, req: RequestInfo): { method: string; path: string } {
  const method = latin1(buf, req.start, req.methodEnd);
  let s = req.pathStart >= 0 ? req.pathStart : req.targetStart;
  const e = req.targetEnd;
  let q = s;
  while (q < e && buf[q] !== 63) q++; // "?"
  if (s === q && req.pathStart >= 0) return { method, path: "/" };
  if (s > e) s = e;
  return { method, path: latin1(buf, s, q) };
}

/** The trace state of one request. */
export interface RequestTrace {
  readonly server: Span;
  readonly inject: TraceInject;
  client: Span | null;
  /** CLIENT spans started so far (the resend count of the next one). */
  attempts: number;
}

/**
 * Start the SERVER span of the request just parsed, or return null when it is not sampled (the
 * client's trace fields then go upstream untouched). Call only when {@link ProxyTracing} can sample
 * it (see `sampleRoots`/`sampleParents` and {@link traceFields}).
 */
export function startServerSpan(
  tr: ProxyTracing,
  buf: Uint8Array,
  method: string,
  path: string,
  hostField: number,
  localPort: number,
  client: string,
  clientPort: number,
  ep: Entrypoint,
): RequestTrace | null {
  const { tp, ts } = traceFields;
  const parent = tp >= 0 ? parseTraceparent(fieldValue(buf, tp)) : undefined;
  let host = hostField >= 0 ? fieldValue(buf, hostField) : "";
  const colon = host.lastIndexOf(":");
  if (colon > 0 && host.indexOf("]", colon) < 0) host = host.slice(0, colon);
  const attributes: Attributes = {
    "http.request.method": method,
    "url.path": path,
    "url.scheme": "http",
    "server.port": localPort,
    "client.address": client,
    "network.peer.address": client,
    "network.peer.port": clientPort,
    "k8s.namespace.name": ep.namespace,
    "k8s.service.name": ep.service,
    "kubegate.entrypoint": ep.name,
  };
  if (host) attributes["server.address"] = host;
  const context = remoteParent(tr.api, parent, parent !== undefined && ts >= 0 ? fieldValue(buf, ts) : undefined);
  const server = tr.tracer.startSpan(method, { kind: SPAN_KIND_SERVER, attributes }, context);
  if (!server.isRecording()) return null;
  const sc = server.spanContext();
  let line = `traceparent: 00-${sc.traceId}-0000000000000000-${sc.traceFlags & TRACE_FLAGS_SAMPLED ? "01" : "00"}\r\n`;
  const state = sc.traceState?.serialize();
  if (state) line += `tracestate: ${state}\r\n`;
  return { server, inject: { line: latin1Bytes(line), drop1: tp, drop2: ts }, client: null, attempts: 0 };
}

/** Bytes of "traceparent: " before the value. */
const TP_VALUE_OFFSET = 13;

/**
 * Start a CLIENT span for an upstream attempt to `endpoint` and write its span id into the upstream head
 * `head`, whose trace line starts at `at`. Ends the previous attempt's span with `previousError`.
 */
export function startClientSpan(
  t: RequestTrace,
  tr: ProxyTracing,
  method: string,
  path: string,
  ep: Entrypoint,
  endpoint: Endpoint,
  head: Uint8Array | null,
  at: number,
  previousError: string,
): void {
  if (t.client !== null) endClientSpan(t, 0, previousError);
  const attributes = endpointAttributes(ep, endpoint);
  attributes["http.request.method"] = method;
  attributes["url.path"] = path;
  if (t.attempts > 0) attributes["http.request.resend_count"] = t.attempts;
  t.attempts++;
  const client = tr.tracer.startSpan(method, { kind: SPAN_KIND_CLIENT, attributes }, tr.api.trace.setSpan(tr.api.ROOT_CONTEXT, t.server));
  t.client = client;
  if (head !== null && at >= 0) {
    const id = client.spanContext().spanId;
    const o = at + TP_VALUE_OFFSET + TRACEPARENT_SPAN_ID_OFFSET;
    for (let k = 0; k < 16; k++) head[o + k] = id.charCodeAt(k);
  }
}

/** The attributes of a CLIENT span to `endpoint` of entrypoint `ep` (the HTTP/1.1 and HTTP/2 proxies'). */
export function endpointAttributes(ep: Entrypoint, endpoint: Endpoint): Attributes {
  const attributes: Attributes = {
    "server.address": endpoint.address,
    "server.port": endpoint.port,
    "network.peer.address": endpoint.address,
    "network.peer.port": endpoint.port,
    "k8s.namespace.name": ep.namespace,
    "k8s.service.name": ep.service,
    // direct, or port-forward through the API server (--endpoint-access)
    "kubegate.endpoint.access": viaOf(endpoint),
  };
  const ref = endpoint.targetRef;
  if (ref?.kind === "Pod" && ref.name) attributes["k8s.pod.name"] = ref.name;
  return attributes;
}

/** End the current CLIENT span: `status` (0: no response), ERROR with `error` when given or 5xx. */
export function endClientSpan(t: RequestTrace, status: number, error: string): void {
  const c = t.client;
  if (c === null) return;
  t.client = null;
  if (status > 0) c.setAttribute("http.response.status_code", status);
  if (error) c.setStatus({ code: SPAN_STATUS_ERROR, message: error });
  else if (status >= 500 || status === 0) c.setStatus({ code: SPAN_STATUS_ERROR });
  c.end();
}

/** End the request: the CLIENT span (if any) and the SERVER span, ERROR on 5xx or a proxy failure. */
export function endRequestSpans(t: RequestTrace, status: number, error: string): void {
  if (t.client !== null) endClientSpan(t, status, error);
  const s = t.server;
  if (status > 0) s.setAttribute("http.response.status_code", status);
  if (error) {
    s.setAttribute("error.type", error);
    s.setStatus({ code: SPAN_STATUS_ERROR, message: error });
  } else if (status >= 500) {
    s.setAttribute("error.type", String(status));
    s.setStatus({ code: SPAN_STATUS_ERROR });
  }
  s.end();
}
