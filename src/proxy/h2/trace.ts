/**
 * Tracing of HTTP/2 calls: a SERVER span per call and a CLIENT span per upstream attempt, the client's W3C
 * `traceparent`/`tracestate` as the parent, the CLIENT span's context in the upstream request's `traceparent`.
 * gRPC calls get the rpc.* semantic conventions (`rpc.system` grpc, `rpc.service`, `rpc.method`,
 * `rpc.grpc.status_code`) and are named `service/method`; other requests are named by their method, as HTTP/1.1's.
 * Nothing runs unless {@link ProxyTracing} can sample the call; an unsampled call's trace fields go upstream as
 * they came.
 */
import type { Attributes, Span } from "@opentelemetry/api";
import type { Endpoint, Entrypoint } from "../../model/types.ts";
import { type ProxyTracing, SPAN_KIND_CLIENT, SPAN_KIND_SERVER, SPAN_STATUS_ERROR, TRACE_FLAGS_SAMPLED } from "../../telemetry/tracing/types.ts";
import { parseTraceparent, remoteParent } from "../../telemetry/tracing/w3c.ts";
import { endpointAttributes } from "../http/trace.ts";
import type { HeaderList } from "./session.ts";

/** The trace state of one call. */
export interface CallTrace {
  readonly server: Span;
  client: Span | null;
  attempts: number;
  readonly rpc: boolean;
  readonly name: string;
}

/** `/pkg.Service/Method` -> [pkg.Service, Method]; undefined for any other path. */
export function grpcMethodOf(path: string): [string, string] | undefined {
  const slash = path.indexOf("/", 1);
  if (path[0] !== "/" || slash <= 1 || slash === path.length - 1 || path.indexOf("/", slash + 1) !== -1) return undefined;
  return [path.slice(1, slash), path.slice(slash + 1)];
}

/** Whether the call may be sampled at all (cheap: no span work when not). */
export function traceable(tr: ProxyTracing | undefined, headers: HeaderList): tr is ProxyTracing {
  if (tr === undefined) return false;
  if (tr.sampleRoots) return true;
  if (!tr.sampleParents) return false;
  for (const [n] of headers) if (n === "traceparent") return true;
  return false;
}

/**
 * Start the SERVER span of a call, or null when it is not sampled. `forward` (the upstream request's header list)
 * gets the trace fields replaced; the CLIENT span's id is written by {@link startCallClientSpan}.
 */
export function startCallSpan(tr: ProxyTracing, headers: HeaderList, forward: [string, string][], grpc: boolean, client: string, ep: Entrypoint): CallTrace | null {
  let method = "";
  let path = "";
  let authority = "";
  let tp: string | undefined;
  let ts: string | undefined;
  for (const [n, v] of headers) {
    if (n === ":method") method = v;
    else if (n === ":path") path = v;
    else if (n === ":authority") authority = v;
    else if (n === "traceparent") tp ??= v;
    else if (n === "tracestate") ts ??= v;
  }
  const parent = tp === undefined ? undefined : parseTraceparent(tp);
  const rpcMethod = grpc ? grpcMethodOf(path) : undefined;
  const attributes: Attributes = {
    "http.request.method": method,
    "url.path": path,
    "url.scheme": "http",
    "network.protocol.version": "2",
    "client.address": client,
    "network.peer.address": client,
    "k8s.namespace.name": ep.namespace,
    "k8s.service.name": ep.service,
    "kubegate.entrypoint": ep.name,
  };
  if (authority) attributes["server.address"] = authority.replace(/:\d+$/, "");
  if (rpcMethod) {
    attributes["rpc.system"] = "grpc";
    attributes["rpc.service"] = rpcMethod[0];
    attributes["rpc.method"] = rpcMethod[1];
  }
  const name = rpcMethod ? `${rpcMethod[0]}/${rpcMethod[1]}` : method;
  const server = tr.tracer.startSpan(name, { kind: SPAN_KIND_SERVER, attributes }, remoteParent(tr.api, parent, parent ? ts : undefined));
  if (!server.isRecording()) return null;
  const sc = server.spanContext();
  for (let i = forward.length - 1; i >= 0; i--) if (forward[i]![0] === "traceparent" || forward[i]![0] === "tracestate") forward.splice(i, 1);
  forward.push(["traceparent", `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TRACE_FLAGS_SAMPLED ? "01" : "00"}`]);
  const state = sc.traceState?.serialize();
  if (state) forward.push(["tracestate", state]);
  return { server, client: null, attempts: 0, rpc: rpcMethod !== undefined, name };
}

/** Start a CLIENT span for an attempt on `endpoint` and point the upstream request's `traceparent` at it. */
export function startCallClientSpan(t: CallTrace, tr: ProxyTracing, forward: [string, string][], ep: Entrypoint, endpoint: Endpoint, previousError: string): void {
  if (t.client !== null) endCallClientSpan(t, 0, undefined, previousError);
  const attributes = endpointAttributes(ep, endpoint);
  if (t.rpc) attributes["rpc.system"] = "grpc";
  if (t.attempts > 0) attributes["http.request.resend_count"] = t.attempts;
  t.attempts++;
  const client = tr.tracer.startSpan(t.name, { kind: SPAN_KIND_CLIENT, attributes }, tr.api.trace.setSpan(tr.api.ROOT_CONTEXT, t.server));
  t.client = client;
  const sc = client.spanContext();
  for (const f of forward) {
    if (f[0] === "traceparent") (f as [string, string])[1] = `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TRACE_FLAGS_SAMPLED ? "01" : "00"}`;
  }
}

/**
 * gRPC statuses that make a SERVER span an error (OTel's RPC conventions: the server's own failures; a status that
 * blames the request, like NOT_FOUND or INVALID_ARGUMENT, leaves it unset): UNKNOWN, DEADLINE_EXCEEDED,
 * UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. A CLIENT span is an error for any status but OK.
 */
const SERVER_ERROR_CODES = new Set([2, 4, 12, 13, 14, 15]);

function setOutcome(span: Span, rpc: boolean, server: boolean, status: number, grpcStatus: number | undefined, error: string): void {
  if (status > 0) span.setAttribute("http.response.status_code", status);
  if (rpc && grpcStatus !== undefined) span.setAttribute("rpc.grpc.status_code", grpcStatus);
  if (error) {
    span.setAttribute("error.type", error);
    span.setStatus({ code: SPAN_STATUS_ERROR, message: error });
  } else if (status >= 500 || (rpc && grpcStatus !== undefined && (server ? SERVER_ERROR_CODES.has(grpcStatus) : grpcStatus !== 0))) {
    span.setStatus({ code: SPAN_STATUS_ERROR });
  }
}

export function endCallClientSpan(t: CallTrace, status: number, grpcStatus: number | undefined, error: string): void {
  const c = t.client;
  if (c === null) return;
  t.client = null;
  setOutcome(c, t.rpc, false, status, grpcStatus, error);
  c.end();
}

/** End the call's spans. `status` is the HTTP status sent (gRPC: 200), `grpcStatus` the call's, `error` the gateway reason. */
export function endCallSpans(t: CallTrace, status: number, grpcStatus: number | undefined, error: string): void {
  if (t.client !== null) endCallClientSpan(t, status, grpcStatus, error);
  setOutcome(t.server, t.rpc, true, status, grpcStatus, error);
  t.server.end();
}
