/**
 * Per-Service traffic metrics (kube-proxy has none: kubernetes/kubernetes#9125), labelled
 * `namespace`, `service`, `port` (the Service port's name, or number when unnamed) and `protocol`
 * (`http`, `tcp`, `udp`). NodePort and LoadBalancer entrypoints of one Service port share a series.
 *
 * Hot path: the data plane resolves a {@link ServiceTraffic} handle once per route
 * (`traffic.forEntrypoint(route.entrypoint)`); each update is then a few increments in one
 * preallocated `Float64Array` (no strings, no Map lookups).
 *
 * Lifecycle: {@link TrafficMetrics.sync} follows each snapshot: a series exists while an entrypoint of
 * its Service port does, and is deleted with the last one, so removed Services leave nothing behind.
 *
 * Cardinality: at most `maxSeries` Service ports get series. Past the cap a Service port gets no
 * series (its handle does nothing) and `kubegate_metrics_series_dropped_total{metric}` counts it once
 * per family; it is admitted when room frees up (its data plane picks the series up on its next route).
 *
 * Across processes: {@link TrafficMetrics.dump} turns the counters into plain data (the series changed since
 * the last dump), which a worker data plane sends to the control plane; there `NodeTrafficMetrics`
 * (`node-traffic.ts`) sums the workers' dumps into the node's series.
 */
import { entrypointByKey } from "../../model/entrypoint-list.ts";
import type { Entrypoint, Snapshot } from "../../model/types.ts";
import { bucketIndex, CONNECT_DURATION_BUCKETS, REQUEST_DURATION_BUCKETS } from "./buckets.ts";
import { escapeLabelValue, type Exemplar, type ExemplarIds, type ExpositionWriter, labelPairs } from "./exposition.ts";
import type { Collector } from "./registry.ts";
import { isHttpProtocol } from "../../model/entrypoint.ts";

/**
 * Why the proxy failed a request or connection: the `reason` label of `kubegate_proxy_errors_total`, the
 * `error.type` of the request's span, the access log's `error`, and (for the ones that answer a request, see
 * `GatewayReason` in `proxy/http/responses.ts`) the `x-kubegate-reason` field of the gateway's own responses.
 * One snake_case vocabulary everywhere.
 */
export const PROXY_ERROR_REASONS = [
  /** The Service port has no serving endpoint (HTTP 503; TCP closed). */
  "no_endpoints",
  /** Every connect attempt was refused or failed (HTTP 502). */
  "connect_failed",
  /** Every connect attempt timed out (HTTP 502). */
  "connect_timeout",
  /** The upstream did not send a response head in time (HTTP 504), or stalled mid-response (cut). */
  "upstream_timeout",
  /** The upstream closed or reset the connection mid-exchange (HTTP 502), or broke the response body's framing (cut). */
  "upstream_reset",
  /** The client sent a malformed request (HTTP 400). */
  "bad_request",
  /** The client did not send a full request head in time (HTTP 408). */
  "request_timeout",
  /** The client's address is outside loadBalancerSourceRanges (connection refused). */
  "source_refused",
  /** The client went away before the exchange finished. */
  "client_closed",
  /** HTTP 503 from the circuit breaker: the Service port had its maximum of requests in flight. */
  "circuit_open",
  /** HTTP 413: the request body was over the limit. */
  "body_too_large",
  /** The connection was closed at accept: the listener's or the gateway's connection limit was reached. */
  "connection_limit",
  /** HTTP 405: a CONNECT request (the gateway is not a forward proxy). */
  "method_not_allowed",
  /** HTTP 505: the request was not HTTP/1.x. */
  "version_not_supported",
  /** HTTP 431: the request head was over the size or field-count limit. */
  "header_too_large",
  /** HTTP 502: the upstream's response head (or the framing of its body, before any of it was relayed) was invalid. */
  "invalid_response",
  /** HTTP 504: the exchange took longer than the max request duration before the response head. */
  "max_duration",
] as const;
export type ProxyErrorReason = (typeof PROXY_ERROR_REASONS)[number];

const REASON_INDEX: Readonly<Record<string, number>> = Object.freeze(Object.fromEntries(PROXY_ERROR_REASONS.map((r, i) => [r, i])));

/**
 * What the data plane reports for one Service port. Resolve it once per route; every method is
 * a few array increments.
 *
 * Contract for the instrumentation:
 * - HTTP: `request(status, seconds)` for every response sent downstream, including ones the gateway
 *   makes itself (502/503/504/400/408); `error(reason)` in addition says why the gateway failed it.
 *   With the request's span sampled, pass its ids (`span.spanContext()`) as the `exemplar`: the
 *   latest per latency bucket is shown in OpenMetrics scrapes.
 * - TCP/UDP: `connOpened()`/`connClosed()` per downstream connection (UDP: per flow); `error(reason)`
 *   when one fails. HTTP connections report `connOpened`/`connClosed` too.
 * - `bytes(received, sent)`: bytes read from / written to the downstream client, reported as they
 *   flow or once at close.
 */
export interface ServiceTraffic {
  /**
   * An HTTP response with `status` (100..599; others are ignored) finished `seconds` after its request started;
   * `exemplar`: the trace of a sampled request (kept as its latency bucket's exemplar).
   */
  request(status: number, seconds: number, exemplar?: ExemplarIds): void;
  /** A successful upstream connect took `seconds`. */
  connectDuration(seconds: number): void;
  /** A downstream connection (UDP: flow) opened. */
  connOpened(): void;
  /** A downstream connection (UDP: flow) closed. */
  connClosed(): void;
  /** `received` bytes came from the client and `sent` bytes went to it. */
  bytes(received: number, sent: number): void;
  /** The proxy failed a request or connection for `reason`. */
  error(reason: ProxyErrorReason): void;
}

/** A handle that records nothing: Service ports over the series cap. */
export const NOOP_TRAFFIC: ServiceTraffic = Object.freeze({
  request() {},
  connectDuration() {},
  connOpened() {},
  connClosed() {},
  bytes() {},
  error() {},
});

/** Cumulative counters of one Service port, as the admin page reads them. */
export interface TrafficSample {
  /** `namespace/service:port` (an entrypoint's `name`). */
  readonly key: string;
  /** HTTP: responses; TCP/UDP: connections (flows). */
  readonly requests: number;
  /** HTTP: 5xx responses; TCP/UDP: proxy errors. */
  readonly errors: number;
  /** Open connections (UDP: flows). */
  readonly active: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /**
   * HTTP: requests per latency bucket so far (`REQUEST_DURATION_BUCKETS`, then the overflow bucket; not cumulative),
   * for the live page's p99 over time. Absent for TCP/UDP.
   */
  readonly latency?: readonly number[];
}

/** Metric family names of the per-Service metrics. */
export const TrafficMetricNames = Object.freeze({
  requests: "kubegate_requests_total",
  requestDuration: "kubegate_request_duration_seconds",
  connectDuration: "kubegate_upstream_connect_duration_seconds",
  activeConnections: "kubegate_active_connections",
  connections: "kubegate_connections_total",
  receivedBytes: "kubegate_received_bytes_total",
  sentBytes: "kubegate_sent_bytes_total",
  errors: "kubegate_proxy_errors_total",
  endpoints: "kubegate_endpoints",
});

const SERIES_DROPPED = "kubegate_metrics_series_dropped_total";
const SERIES_TRACKED = "kubegate_metrics_series";
const SERIES_LIMIT = "kubegate_metrics_series_limit";
const SERIES_OVER_CAP = "kubegate_metrics_series_over_cap";

/** Default cap on Service ports with per-Service series. */
export const DEFAULT_MAX_SERIES = 20_000;

/* One Float64Array per series; offsets: */
const RB = REQUEST_DURATION_BUCKETS as number[];
const CB = CONNECT_DURATION_BUCKETS as number[];
const RB_TEXT = RB.map(String);
const CB_TEXT = CB.map(String);
const REQ = 0; // 5 code classes
const RD = REQ + 5; // request duration buckets, RB.length + 1
const RD_SUM = RD + RB.length + 1;
const CD = RD_SUM + 1; // connect duration buckets, CB.length + 1
if (RB.length + 1 > 32) throw new Error("REQUEST_DURATION_BUCKETS: at most 31 bounds (exemplar changes are a 32-bit mask)");
const CD_SUM = CD + CB.length + 1;
const ACTIVE = CD_SUM + 1;
const CONNS = ACTIVE + 1;
const RX = CONNS + 1;
const TX = RX + 1;
const ERR = TX + 1;
const SIZE = ERR + PROXY_ERROR_REASONS.length;

const CODE_CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"] as const;
const LABEL_NAMES = ["namespace", "service", "port", "protocol"] as const;

/** The live counters of one Service port. */
/** The counters of every series nothing was recorded in yet: shared, never written. */
const ZEROS = new Float64Array(SIZE);

class Series implements ServiceTraffic {
  /**
   * The counters: {@link ZEROS} until the first update, so that the idle Service ports of a large cluster
   * (most of them) cost no array (about 400 bytes each).
   */
  v: Float64Array = ZEROS;
  /** Written since the last {@link TrafficMetrics.dump}. */
  dirty = false;
  /** Sent by a dump: its deletion has to be reported. */
  dumped = false;
  /** The latest exemplar per request-duration bucket; absent until a sampled request (no cost without tracing). */
  exemplars: (Exemplar | undefined)[] | undefined = undefined;
  /** Bit `b` set: bucket `b`'s exemplar changed since the last dump (the buckets fit in 32 bits). */
  exemplarsChanged = 0;
  constructor(readonly labels: string) {}

  /** The counters, to write. */
  #w(): Float64Array {
    this.dirty = true;
    const v = this.v;
    return v !== ZEROS ? v : (this.v = new Float64Array(SIZE));
  }

  request(status: number, seconds: number, exemplar?: ExemplarIds): void {
    const c = (status / 100) | 0;
    if (c < 1 || c > 5) return;
    const v = this.#w();
    v[REQ + c - 1]!++;
    if (seconds === seconds) {
      const b = bucketIndex(RB, seconds);
      v[RD + b]!++;
      v[RD_SUM]! += seconds;
      if (exemplar !== undefined) {
        (this.exemplars ??= new Array<Exemplar | undefined>(RB.length + 1))[b] = {
          traceId: exemplar.traceId,
          spanId: exemplar.spanId,
          value: seconds,
          timestamp: Date.now() / 1000,
        };
        this.exemplarsChanged |= 1 << b;
      }
    }
  }

  connectDuration(seconds: number): void {
    if (seconds !== seconds) return;
    const v = this.#w();
    v[CD + bucketIndex(CB, seconds)]!++;
    v[CD_SUM]! += seconds;
  }

  connOpened(): void {
    const v = this.#w();
    v[ACTIVE]!++;
    v[CONNS]!++;
  }

  connClosed(): void {
    this.#w()[ACTIVE]!--;
  }

  bytes(received: number, sent: number): void {
    const v = this.#w();
    if (received > 0) v[RX]! += received;
    if (sent > 0) v[TX]! += sent;
  }

  error(reason: ProxyErrorReason): void {
    const i = REASON_INDEX[reason];
    if (i !== undefined) this.#w()[ERR + i]!++;
  }
}

/** Whether anything was ever recorded in `v` (idle series expose only their endpoint counts). */
function touched(v: Float64Array): boolean {
  if (v === ZEROS) return false;
  for (let i = 0; i < SIZE; i++) if (v[i] !== 0) return true;
  return false;
}

/** A Service port referenced by the current snapshot (or by a data plane ahead of it). */
interface Slot {
  readonly key: string;
  /** Entrypoints of the snapshot that map to this Service port. */
  refs: number;
  /** The latest of them (for endpoint counts and labels). */
  entrypoint: Entrypoint;
  /** Absent while over the cap. */
  series: Series | undefined;
}

/** The Service port of an entrypoint: `namespace/service:port` plus the protocol. */
function slotKey(ep: Entrypoint): string {
  return `${ep.name}\u0000${ep.protocol}`;
}

/** The Service port's name (or number) from `namespace/service:port`. */
function portLabel(ep: Entrypoint): string {
  return ep.name.slice(ep.name.lastIndexOf(":") + 1);
}

/**
 * The counters of a {@link TrafficMetrics} as plain data (JSON-safe), for the control plane to sum over workers
 * (`NodeTrafficMetrics.update`). Dumps of one instance form a sequence: the first is `full`, each later one carries
 * the series changed since the one before (O(traffic), not O(Service ports)).
 */
export interface TrafficDump {
  /** The {@link TrafficMetrics} that made it: another instance (a restarted worker) starts again from zero. */
  readonly instance: string;
  /** 1 for the instance's first dump, then +1 per dump. */
  readonly seq: number;
  /** Whether `series` is every series with anything recorded (else: those changed since dump `seq - 1`). */
  readonly full: boolean;
  /**
   * Series key (the Service port: `namespace/service:port`, NUL, protocol) -> its values in the series layout,
   * trailing zeros left out. A key listed here replaces what the receiver had for it.
   */
  readonly series: Readonly<Record<string, readonly number[]>>;
  /** Keys whose series were deleted (their Service port left the snapshot) since dump `seq - 1`. */
  readonly removed: readonly string[];
  /**
   * Series key -> the latest exemplar per request-duration bucket, for the buckets whose exemplar changed since dump
   * `seq - 1` (`full`: every bucket with one); `null` for the others, which keep what the receiver had. Only series
   * with such a change are listed (absent: none).
   */
  readonly exemplars?: Readonly<Record<string, readonly (Exemplar | null)[]>> | undefined;
}

/**
 * The series layout, for `node-traffic.ts` (which sums series of the same layout); nothing else reads the arrays.
 * @internal
 */
export const SeriesLayout = Object.freeze({
  /** Values per series. */
  size: SIZE,
  /** Adds `from` into `into`; without `gauges`, the open-connection gauge is left out (a retired worker's counts). */
  add(into: Float64Array, from: ArrayLike<number>, gauges: boolean): void {
    const n = Math.min(from.length, SIZE);
    for (let i = 0; i < n; i++) if (gauges || i !== ACTIVE) into[i]! += from[i] as number;
  },
  /** The admin page's `requests` of a series: HTTP responses, else connections (flows). */
  requests(protocol: string, v: ArrayLike<number>): number {
    if (protocol !== "http") return (v[CONNS] as number | undefined) ?? 0;
    let n = 0;
    for (let c = 0; c < 5; c++) n += (v[REQ + c] as number | undefined) ?? 0;
    return n;
  },
  /** Whether anything was recorded in `v`. */
  touched: (v: Float64Array): boolean => touched(v),
  /** The protocol of a series key. */
  protocolOf(key: string): string {
    return key.slice(key.lastIndexOf("\u0000") + 1);
  },
  /** Request-duration buckets (with `+Inf`): the length of a series' exemplars. */
  exemplarBuckets: RB.length + 1,
});

/** A dump's values of `v`: a plain array without its trailing zeros. */
function dumpValues(v: Float64Array): number[] {
  let end = SIZE;
  while (end > 0 && v[end - 1] === 0) end--;
  const out = new Array<number>(end);
  for (let i = 0; i < end; i++) out[i] = v[i]!;
  return out;
}

export interface TrafficMetricsOptions {
  /** At most this many Service ports get series (default {@link DEFAULT_MAX_SERIES}). */
  readonly maxSeries?: number | undefined;
}

/**
 * The per-Service traffic collector. Register it in a {@link Registry}, call {@link sync} with each
 * published snapshot, and hand {@link forEntrypoint} to the data plane.
 *
 * @example
 * const traffic = new TrafficMetrics({ maxSeries: 20_000 });
 * registry.register(traffic);
 * traffic.sync(snapshot);
 * const t = traffic.forEntrypoint(route.entrypoint); // once per route
 * t.request(200, 0.0021);
 */
export class TrafficMetrics implements Collector {
  readonly names: readonly string[] = Object.freeze([...Object.values(TrafficMetricNames), SERIES_DROPPED, SERIES_TRACKED, SERIES_LIMIT, SERIES_OVER_CAP]);
  readonly maxSeries: number;
  readonly #slots = new Map<string, Slot>();
  /** Slots over the cap, in arrival order: admitted first when room frees up. */
  readonly #waiting = new Set<Slot>();
  /** Slots a data plane asked for that no snapshot referenced yet. */
  readonly #orphans = new Set<Slot>();
  #entrypoints: readonly Entrypoint[] = [];
  #tracked = 0;
  #dropped = 0;
  /** Identifies this instance's dumps (see {@link TrafficDump.instance}). */
  readonly #instance = crypto.randomUUID();
  #dumps = 0;
  /** Keys of dumped series deleted since the last dump. */
  #removed: string[] = [];

  constructor(options: TrafficMetricsOptions = {}) {
    const max = options.maxSeries ?? DEFAULT_MAX_SERIES;
    if (!Number.isInteger(max) || max < 0) throw new Error(`Invalid metrics series cap ${max}: use a whole number of 0 or more`);
    this.maxSeries = max;
  }

  /** Service ports with series now. */
  get trackedSeries(): number {
    return this.#tracked;
  }

  /** Service ports known now: with series, or waiting over the cap. */
  get size(): number {
    return this.#slots.size;
  }

  /** Service ports refused by the cap so far (each counted once per refusal). */
  get droppedSeries(): number {
    return this.#dropped;
  }

  /**
   * The handle for `entrypoint`'s Service port. Call it once per route, not per request. Over the
   * cap, a handle that records nothing.
   */
  forEntrypoint(entrypoint: Entrypoint): ServiceTraffic {
    const key = slotKey(entrypoint);
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      // A data plane may resolve its handle before sync() sees the snapshot: keep the slot until the
      // next sync, which adopts it or drops it.
      slot = { key, refs: 0, entrypoint, series: undefined };
      this.#slots.set(key, slot);
      this.#admit(slot);
      this.#orphans.add(slot);
    }
    return slot.series ?? NOOP_TRAFFIC;
  }

  /**
   * Follow a published snapshot: create series for new Service ports, delete those of removed
   * ones. With the snapshot's delta relative to the last list seen, only the changed keys are
   * visited; else the previous and new lists (both sorted by key) are walked, and unchanged
   * entrypoints (same identity) cost a pointer comparison.
   */
  sync(snapshot: Snapshot): void {
    const prev = this.#entrypoints;
    const next = snapshot.entrypoints;
    if (prev !== next) {
      const delta = snapshot.delta;
      if (delta !== undefined && delta.base === prev) this.#applyDelta(prev, next, delta.changed);
      else this.#walk(prev, next);
      this.#entrypoints = next;
    }
    for (const slot of this.#orphans) if (slot.refs === 0) this.#delete(slot);
    this.#orphans.clear();
    for (const slot of this.#waiting) {
      if (this.#tracked >= this.maxSeries) break;
      this.#waiting.delete(slot);
      this.#create(slot);
    }
  }

  #walk(prev: readonly Entrypoint[], next: readonly Entrypoint[]): void {
    let i = 0;
    let j = 0;
    while (i < prev.length || j < next.length) {
      const a = prev[i];
      const b = next[j];
      if (a !== undefined && a === b) {
        i++;
        j++;
      } else if (a !== undefined && b !== undefined && a.key === b.key) {
        this.#change(a, b);
        i++;
        j++;
      } else if (b === undefined || (a !== undefined && a.key < b.key)) {
        this.#remove(a as Entrypoint);
        i++;
      } else {
        this.#add(b);
        j++;
      }
    }
  }

  /**
   * Apply the entrypoints of `keys` (every key whose entrypoint differs between `prev` and `next`):
   * additions first and removals last, so a Service port that moves between entrypoints keeps its series.
   */
  #applyDelta(prev: readonly Entrypoint[], next: readonly Entrypoint[], keys: ReadonlySet<string>): void {
    let removed: Entrypoint[] | undefined;
    for (const key of keys) {
      const a = entrypointByKey(prev, key);
      const b = entrypointByKey(next, key);
      if (b === undefined) {
        if (a !== undefined) (removed ??= []).push(a);
      } else if (a !== undefined && a.name === b.name && a.protocol === b.protocol) {
        this.#change(a, b);
      } else {
        this.#add(b);
        if (a !== undefined) (removed ??= []).push(a);
      }
    }
    if (removed !== undefined) for (const a of removed) this.#remove(a);
  }

  #add(ep: Entrypoint): void {
    const key = slotKey(ep);
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      slot = { key, refs: 0, entrypoint: ep, series: undefined };
      this.#slots.set(key, slot);
      this.#admit(slot);
    }
    slot.refs++;
    slot.entrypoint = ep;
  }

  #remove(ep: Entrypoint): void {
    const slot = this.#slots.get(slotKey(ep));
    if (slot === undefined) return;
    if (--slot.refs <= 0) this.#delete(slot);
  }

  #change(a: Entrypoint, b: Entrypoint): void {
    if (a.name === b.name && a.protocol === b.protocol) {
      const slot = this.#slots.get(slotKey(b));
      if (slot !== undefined) slot.entrypoint = b;
      else this.#add(b);
      return;
    }
    this.#remove(a);
    this.#add(b);
  }

  #admit(slot: Slot): void {
    if (this.#tracked < this.maxSeries) this.#create(slot);
    else {
      this.#waiting.add(slot);
      this.#dropped++;
    }
  }

  #create(slot: Slot): void {
    const ep = slot.entrypoint;
    slot.series = new Series(labelPairs(LABEL_NAMES, [ep.namespace, ep.service, portLabel(ep), ep.protocol]));
    this.#tracked++;
  }

  #delete(slot: Slot): void {
    this.#slots.delete(slot.key);
    this.#orphans.delete(slot);
    if (slot.series !== undefined) {
      if (slot.series.dumped) this.#removed.push(slot.key);
      slot.series = undefined;
      this.#tracked--;
    } else this.#waiting.delete(slot);
  }

  /**
   * The counters as plain data: the series changed since the previous call (the first call, or `full`: every
   * series with anything recorded) and the keys of series deleted since. Cost: a pass over the Service ports
   * (a flag each) plus the changed series. Each call starts a new "since"; one consumer per instance.
   *
   * @example
   * setInterval(() => channel.send({ type: "report", traffic: traffic.dump() }), 250); // in a worker
   * node.update(worker, message.traffic); // in the control plane (NodeTrafficMetrics)
   */
  dump(options: { readonly full?: boolean | undefined } = {}): TrafficDump {
    const full = options.full === true || this.#dumps === 0;
    const series: Record<string, number[]> = {};
    let exemplars: Record<string, (Exemplar | null)[]> | undefined;
    for (const slot of this.#slots.values()) {
      const s = slot.series;
      if (s === undefined || !(full ? touched(s.v) : s.dirty)) continue;
      s.dirty = false;
      s.dumped = true;
      series[slot.key] = dumpValues(s.v);
      const changed = full ? -1 : s.exemplarsChanged;
      if (s.exemplars !== undefined && changed !== 0) {
        (exemplars ??= {})[slot.key] = Array.from(s.exemplars, (e, b) => (e !== undefined && (changed & (1 << b)) !== 0 ? e : null));
      }
      s.exemplarsChanged = 0;
    }
    const removed = full ? [] : this.#removed;
    this.#removed = [];
    return { instance: this.#instance, seq: ++this.#dumps, full, series, removed, ...(exemplars !== undefined ? { exemplars } : {}) };
  }

  /**
   * The values a scrape and {@link samples} show for the series `key`, given what this instance recorded
   * (`own`). The node's collector (`NodeTrafficMetrics`) adds its workers' here.
   */
  protected valuesOf(_key: string, own: Float64Array): Float64Array {
    return own;
  }

  /** The request-duration exemplars a scrape shows for the series `key`, given this instance's (`own`). */
  protected exemplarsOf(_key: string, own: readonly (Exemplar | undefined)[] | undefined): readonly (Exemplar | undefined)[] | undefined {
    return own;
  }

  /** Whether a Service port has a series now (`key` as in {@link TrafficDump.series}). */
  protected hasSeries(key: string): boolean {
    return this.#slots.get(key)?.series !== undefined;
  }

  /** Cumulative counters per Service port with a series (for the admin page). */
  samples(): TrafficSample[] {
    const out: TrafficSample[] = [];
    for (const slot of this.#slots.values()) {
      const s = slot.series;
      if (s === undefined) continue;
      const v = this.valuesOf(slot.key, s.v);
      const http = isHttpProtocol(slot.entrypoint.protocol);
      let requests = 0;
      for (let c = 0; c < 5; c++) requests += v[REQ + c]!;
      let errors = 0;
      for (let r = 0; r < PROXY_ERROR_REASONS.length; r++) errors += v[ERR + r]!;
      out.push({
        key: slot.entrypoint.name,
        requests: http ? requests : v[CONNS]!,
        errors: http ? v[REQ + 4]! : errors,
        active: v[ACTIVE]!,
        bytesIn: v[RX]!,
        bytesOut: v[TX]!,
        ...(http ? { latency: Array.from(v.subarray(RD, RD + RB.length + 1)) } : {}),
      });
    }
    return out;
  }

  collect(out: ExpositionWriter): void {
    const all: Slot[] = [];
    const live: { readonly labels: string; readonly v: Float64Array; readonly ex: readonly (Exemplar | undefined)[] | undefined }[] = [];
    for (const slot of this.#slots.values()) {
      const series = slot.series;
      if (series === undefined) continue;
      all.push(slot);
      const v = this.valuesOf(slot.key, series.v);
      if (touched(v)) live.push({ labels: series.labels, v, ex: out.openMetrics ? this.exemplarsOf(slot.key, series.exemplars) : undefined });
    }
    const N = TrafficMetricNames;

    out.family(N.requests, "Requests answered (HTTP), by status code class.", "counter");
    for (const s of live) {
      for (let c = 0; c < 5; c++) {
        const n = s.v[REQ + c]!;
        if (n > 0) out.sample(N.requests, `${s.labels},code_class="${CODE_CLASSES[c]}"`, n);
      }
    }
    out.family(N.requestDuration, "Time from a request's start to the end of its response (HTTP), in seconds.", "histogram");
    for (const s of live) if (hasObservations(s.v, RD, RB.length)) out.histogram(N.requestDuration, s.labels, RB_TEXT, s.v, RD, s.v[RD_SUM]!, s.ex);
    out.family(N.connectDuration, "Time to connect to an upstream endpoint, in seconds (successful connects).", "histogram");
    for (const s of live) if (hasObservations(s.v, CD, CB.length)) out.histogram(N.connectDuration, s.labels, CB_TEXT, s.v, CD, s.v[CD_SUM]!);
    out.family(N.activeConnections, "Open downstream connections (UDP: flows).", "gauge");
    for (const s of live) out.sample(N.activeConnections, s.labels, s.v[ACTIVE]!);
    out.family(N.connections, "Downstream connections (UDP: flows) accepted.", "counter");
    for (const s of live) out.sample(N.connections, s.labels, s.v[CONNS]!);
    out.family(N.receivedBytes, "Bytes received from downstream clients.", "counter");
    for (const s of live) out.sample(N.receivedBytes, s.labels, s.v[RX]!);
    out.family(N.sentBytes, "Bytes sent to downstream clients.", "counter");
    for (const s of live) out.sample(N.sentBytes, s.labels, s.v[TX]!);
    out.family(N.errors, "Requests or connections the proxy failed, by reason.", "counter");
    for (const s of live) {
      for (let r = 0; r < PROXY_ERROR_REASONS.length; r++) {
        const n = s.v[ERR + r]!;
        if (n > 0) out.sample(N.errors, `${s.labels},reason="${PROXY_ERROR_REASONS[r]}"`, n);
      }
    }

    out.family(
      N.endpoints,
      "Endpoints of the Service port by state: EndpointSlice conditions ready, serving, terminating; selected = those this node sends new traffic to.",
      "gauge",
    );
    for (const slot of all) {
      const cluster = slot.entrypoint.cluster;
      let ready = 0;
      let serving = 0;
      let terminating = 0;
      for (const e of cluster.endpoints) {
        if (e.ready) ready++;
        if (e.serving) serving++;
        if (e.terminating) terminating++;
      }
      const labels = (slot.series as Series).labels;
      out.sample(N.endpoints, `${labels},state="ready"`, ready);
      out.sample(N.endpoints, `${labels},state="serving"`, serving);
      out.sample(N.endpoints, `${labels},state="terminating"`, terminating);
      out.sample(N.endpoints, `${labels},state="selected"`, cluster.serving.length);
    }

    out.family(SERIES_DROPPED, "Per-Service series not created because the series cap was reached, by metric family.", "counter");
    for (const name of Object.values(N)) out.sample(SERIES_DROPPED, `metric="${escapeLabelValue(name)}"`, this.#dropped);
    out.family(SERIES_TRACKED, "Service ports with per-Service series.", "gauge");
    out.sample(SERIES_TRACKED, "", this.#tracked);
    out.family(SERIES_LIMIT, "The cap on Service ports with per-Service series.", "gauge");
    out.sample(SERIES_LIMIT, "", this.maxSeries);
    out.family(SERIES_OVER_CAP, "Service ports without per-Service series now because the cap is reached.", "gauge");
    out.sample(SERIES_OVER_CAP, "", this.#waiting.size);
  }
}

function hasObservations(v: Float64Array, offset: number, bounds: number): boolean {
  for (let i = offset; i <= offset + bounds; i++) if (v[i] !== 0) return true;
  return false;
}
