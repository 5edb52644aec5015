/**
 * The telemetry of a downstream connection's exchanges: per request one metrics update, the SERVER/CLIENT
 * spans and one access-log record; per connection the open/close counts and the bytes not reported yet.
 *
 * One {@link ExchangeTelemetry} is allocated per connection, and only when the proxy has telemetry: without
 * it the connection holds `null` and the request path pays one null check per step.
 */
import type { Endpoint } from "../../model/types.ts";
import type { Route } from "../../routes/types.ts";
import type { ProxyErrorReason, ServiceTraffic } from "../../telemetry/metrics/traffic.ts";
import { type ProxyTelemetry, routeTraffic } from "../types.ts";
import type { Downstream } from "./downstream.ts";
import type { RequestInfo } from "./parser.ts";
import { endRequestSpans, findTraceFields, type RequestTrace, requestLine, startServerSpan, traceFields } from "./trace.ts";

/** `address:port` of each endpoint as the access log writes it (`[v6]:port`), made once per endpoint object. */
const endpointTexts = new WeakMap<Endpoint, string>();
function endpointText(ep: Endpoint): string {
  let t = endpointTexts.get(ep);
  if (t === undefined) {
    t = ep.address.includes(":") ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
    endpointTexts.set(ep, t);
  }
  return t;
}

/** The telemetry state of one downstream connection (see the file comment). */
export class ExchangeTelemetry {
  /** The metrics handle the connection was counted on (connOpened/connClosed). */
  readonly connTraffic: ServiceTraffic | undefined;
  /** The route {@link trafficOfRoute} is the metrics handle of. */
  trafficRoute: Route | null = null;
  trafficOfRoute: ServiceTraffic | undefined = undefined;
  /** A request is started and not reported yet. */
  inflight = false;
  /** performance.now() at the request's start. */
  t0 = 0;
  /** The final response's status (0 before one). */
  status = 0;
  method = "";
  path = "";
  trace: RequestTrace | null = null;
  /** Where the trace line is in the request's first upstream write (-1: none). */
  traceAt = -1;

  constructor(readonly tel: ProxyTelemetry, route: Route) {
    this.connTraffic = routeTraffic(tel, route);
    this.connTraffic?.connOpened();
  }

  /** Start the telemetry of the request just parsed into `req` (same turn as the parse). */
  beginRequest(d: Downstream, buf: Uint8Array, req: RequestInfo, route: Route): void {
    this.inflight = true;
    this.status = 0;
    this.t0 = performance.now();
    this.trace = null;
    const tr = this.tel.tracing;
    let traced = false;
    if (tr !== undefined) {
      findTraceFields(buf, req.fieldCount);
      traced = traceFields.tp >= 0 ? tr.sampleParents : tr.sampleRoots;
    }
    if (!traced && this.tel.accessLog === undefined) return;
    const line = requestLine(buf, req);
    this.method = line.method;
    this.path = line.path;
    if (traced) {
      const s = d.sock;
      this.trace = startServerSpan(tr!, buf, line.method, line.path, req.host, s.localPort, d.ctx.ip, s.remotePort, route.entrypoint);
    }
  }

  /** The metrics handle of `route` (cached for the last route: one identity check per request). */
  traffic(route: Route): ServiceTraffic | undefined {
    if (route === this.trafficRoute) return this.trafficOfRoute;
    this.trafficRoute = route;
    return (this.trafficOfRoute = routeTraffic(this.tel, route));
  }

  /**
   * Report the current request once: metrics, spans, access log. A failure before any request counts as one.
   * `reason` (none: success) is the metric's `reason`, the span's `error.type` and the log's `error`.
   */
  report(d: Downstream, status: number, reason: ProxyErrorReason | undefined): void {
    const started = this.inflight;
    this.inflight = false;
    const route = d.route ?? d.proxy.ref.current;
    const secs = started ? (performance.now() - this.t0) / 1000 : 0;
    const rx = d.rx;
    const tx = d.tx;
    d.rx = d.tx = 0;
    const tr = this.trace;
    const sc = tr?.server.spanContext();
    const t = this.traffic(route);
    if (t !== undefined) {
      t.request(status, secs, sc); // a sampled request's ids: its latency bucket's exemplar
      if (reason !== undefined) t.error(reason);
      t.bytes(rx, tx);
    }
    let traceId = "";
    if (tr !== null) {
      this.trace = null;
      traceId = sc!.traceId;
      endRequestSpans(tr, status, reason ?? "");
    }
    const log = this.tel.accessLog;
    if (log !== undefined && log.keeps(status < 500 && reason === undefined)) {
      const ep = d.endpoint;
      log.httpKept({
        entrypoint: route.entrypoint.name,
        client: d.ctx.ip,
        endpoint: ep === null || !started ? "" : endpointText(ep),
        method: started ? this.method : "",
        path: started ? this.path : "",
        status,
        bytesIn: rx,
        bytesOut: tx,
        durationMs: secs * 1000,
        error: reason ?? "",
        traceId,
      });
    }
  }

  /** The connection has closed: an unfinished request, the bytes not reported yet, the connection count. */
  connectionClosed(d: Downstream): void {
    if (this.inflight) this.report(d, this.status, "client_closed");
    const t = this.connTraffic;
    if (t === undefined) return;
    const rt = d.route !== null ? (this.traffic(d.route) ?? t) : t;
    if (d.rx || d.tx) rt.bytes(d.rx, d.tx);
    d.rx = d.tx = 0;
    t.connClosed();
  }
}
