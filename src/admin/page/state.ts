/**
 * The admin page's state: a compact, JSON-ready digest of the admin view (sync health, entrypoints
 * with their listeners and endpoints, errors, per-Service traffic). Pure: the same view and query
 * give the same state. Sent as the first paint (server-side render), on `/api/state` (polling) and
 * on `/api/events` (SSE).
 *
 * Bounded: at most `limit` entrypoints (those matching the filter `q`), `ENDPOINTS_PER_ENTRYPOINT`
 * endpoints each, `MAX_ERRORS` errors; the summary counts cover everything.
 */
import type { WorkerStatus } from "../../data-plane/types.ts";
import type { SyncStatus } from "../../kube/source.ts";
import type { Entrypoint, SessionAffinity, Snapshot } from "../../model/types.ts";

import type { StateStatus } from "../../kube/state-file.ts";
import type { TrafficSample } from "../../telemetry/metrics/traffic.ts";
import type { PageChart, TrafficHistory } from "./history.ts";

/** Cumulative traffic counters of one Service port, from the metrics view (`TrafficMetrics.samples()`). */
export type { TrafficSample };

/** A traffic sample with its rates over the last window (absent until two samples exist). */
export interface PageTraffic extends TrafficSample {
  /** Requests (connections) per second. */
  readonly requestRate?: number;
  /** Errors per second. */
  readonly errorRate?: number;
}

/**
 * Request and error rates per Service port from cumulative counters: shared by every page client and
 * advanced lazily, at most once per `windowMs` (a counter that goes down, e.g. after a reset, counts as 0).
 */
export class TrafficRates {
  #prev: { at: number; counts: Map<string, { requests: number; errors: number }> } | undefined;
  #rates = new Map<string, { requestRate: number; errorRate: number }>();

  constructor(readonly windowMs = 1_000) {}

  /** The rates after taking `samples` at `now` (ms). */
  update(samples: readonly TrafficSample[], now: number): ReadonlyMap<string, { requestRate: number; errorRate: number }> {
    if (this.#prev && now - this.#prev.at < this.windowMs) return this.#rates;
    const counts = new Map(samples.map((t) => [t.key, { requests: t.requests, errors: t.errors }]));
    if (this.#prev) {
      const seconds = (now - this.#prev.at) / 1000;
      const before = this.#prev.counts;
      this.#rates = new Map(
        samples.map((t) => {
          const b = before.get(t.key) ?? { requests: 0, errors: 0 };
          return [t.key, { requestRate: Math.max(0, t.requests - b.requests) / seconds, errorRate: Math.max(0, t.errors - b.errors) / seconds }];
        }),
      );
    }
    this.#prev = { at: now, counts };
    return this.#rates;
  }
}

/** The proxy's health, as `/healthz` and `/livez` report it. */
export interface AdminHealth {
  /** No change pending longer than the health timeout (`/livez` 200). */
  readonly healthy: boolean;
  /** The node is not being deleted (`/healthz` also needs this). */
  readonly nodeEligible: boolean;
  /** The first snapshot is live (`/readyz` 200). */
  readonly ready: boolean;
  /** Wall clock (ms) of the last applied update, 0 before the first. */
  readonly lastUpdated: number;
  /** The gateway is shutting down: `/healthz` and `/readyz` answer 503 while the listeners drain. */
  readonly shuttingDown?: boolean | undefined;
}

/** The state file's status (`PersistentSource.state()`), as the page shows it. */
export type AdminStateFile = StateStatus;

/** The state file on the page. */
export interface PageStateFile {
  readonly file: string;
  readonly stale: boolean;
  /** When the replayed state was written (ms); set while stale. */
  readonly savedAt?: number;
  readonly lastWriteAt?: number;
  /** The last write or load problem. */
  readonly error?: string;
}

/** One data plane worker process (`--workers`), as the data plane reports it. */
export type PageWorker = WorkerStatus;

/** How endpoints are reached (`--endpoint-access` port-forward or auto), as the data plane reports it. */
export interface PageEndpointAccess {
  readonly mode: string;
  /** `auto`'s decisions per pod network. */
  readonly decisions: readonly { readonly network: string; readonly via: string; readonly reason: string }[];
  readonly direct: { readonly ok: number; readonly failed: number };
  readonly portForward: { readonly ok: number; readonly failed: number };
}

/** Bind state of one listener (an address:port of an entrypoint). */
export interface PageListener {
  readonly address: string;
  readonly port: number;
  readonly bound: boolean;
  readonly error?: string;
  /** UDP: open flows. */
  readonly flows?: number;
}

/** One endpoint of an entrypoint's cluster. */
export interface PageEndpoint {
  readonly address: string;
  readonly port: number;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  /** Selected for new traffic (in the cluster's serving set). */
  readonly used: boolean;
  readonly node?: string;
  readonly zone?: string;
  /** `Kind/name` of the targetRef (usually the Pod). */
  readonly target?: string;
  /** Ejected by outlier detection (no new traffic until then), as an ISO time. */
  readonly ejectedUntil?: string;
}

/** One entrypoint, as the page shows it. */
export interface PageEntrypoint {
  readonly key: string;
  readonly name: string;
  readonly type: string;
  readonly protocol: string;
  readonly namespace: string;
  readonly service: string;
  readonly addresses: readonly string[];
  readonly port: number;
  readonly policy: string;
  readonly affinity?: SessionAffinity;
  readonly sourceRanges?: readonly string[];
  readonly proxyProtocol?: string;
  /** `host:port` of an exposed ExternalName Service. */
  readonly externalName?: string;
  /** How the serving endpoints were chosen, when not the plain default (e.g. `topology zone`). */
  readonly selection?: string;
  readonly error?: string;
  readonly listeners: readonly PageListener[];
  /** Connections refused by loadBalancerSourceRanges. */
  readonly refused?: number;
  /** The first `ENDPOINTS_PER_ENTRYPOINT` endpoints; `endpointCount` is the full count. */
  readonly endpoints: readonly PageEndpoint[];
  readonly endpointCount: number;
  /** Endpoints that receive new traffic. */
  readonly serving: number;
  /** The balancing algorithm, when not the plain round robin. */
  readonly balancer?: string;
}

/** A model error or a listener bind error. */
export interface PageError {
  readonly kind: string;
  readonly object: string;
  readonly message: string;
}

/** A healthCheckNodePort server (externalTrafficPolicy: Local). */
export interface PageHealthCheck {
  readonly service: string;
  readonly port: number;
  readonly localEndpoints: number;
  readonly bound: boolean;
  readonly error?: string;
}

/** The LoadBalancer controller, when it runs. */
export interface PageController {
  readonly mode: string;
  readonly leading: boolean;
  readonly synced: boolean;
  readonly services: number;
  readonly lastError?: string;
}

/** What the page shows. */
export interface PageState {
  /** Snapshot version (0 before the first). */
  readonly version: number;
  /** Server wall clock (ms) when the state was taken. */
  readonly at: number;
  /** The first snapshot exists. */
  readonly synced: boolean;
  readonly node?: string;
  readonly zone?: string;
  readonly health?: AdminHealth;
  /** With `--state-file`. */
  readonly state?: PageStateFile;
  readonly sources: readonly SyncStatus[];
  /** The data plane's worker processes, when there are several. */
  readonly workers?: readonly PageWorker[];
  /** With `--endpoint-access` port-forward or auto (an in-process data plane). */
  readonly endpointAccess?: PageEndpointAccess;
  readonly controller?: PageController;
  readonly healthChecks?: readonly PageHealthCheck[];
  readonly summary: {
    readonly entrypoints: number;
    /** Entrypoints with an error or a listener that is not bound. */
    readonly failing: number;
    readonly listeners: { readonly bound: number; readonly unbound: number };
    readonly endpoints: { readonly total: number; readonly ready: number; readonly terminating: number; readonly notServing: number };
    readonly errors: number;
  };
  readonly filter: { readonly q: string; readonly limit: number; readonly matched: number };
  readonly entrypoints: readonly PageEntrypoint[];
  readonly errors: readonly PageError[];
  /** Per Service port, for the shown entrypoints; absent when no metrics view is connected. */
  readonly traffic?: readonly PageTraffic[];
  /** The last 15 minutes of the busiest Service ports among those the filter matches (with a history). */
  readonly charts?: readonly PageChart[];
}

/** Bind state of one entrypoint's listeners, as the listener manager reports it. */
export interface PageListenerView {
  readonly key: string;
  readonly listeners: readonly { readonly address: string; readonly port: number; readonly bound: boolean; readonly error?: string | undefined; readonly flows?: number | undefined }[];
  readonly refused?: number | undefined;
}

/** What the state is built from (a subset of `AdminView`, see `../app.ts`). */
export interface PageSource {
  snapshot(): Snapshot | undefined;
  listeners(): readonly PageListenerView[];
  sources(): readonly SyncStatus[];
  healthChecks?(): unknown;
  controller?(): unknown;
  /** The data plane's worker processes (`--workers` > 1). */
  workers?(): unknown;
  /** How endpoints are reached (`--endpoint-access` other than direct). */
  endpointAccess?(): unknown;
  health?(): AdminHealth;
  state?(): AdminStateFile;
  traffic?(): readonly TrafficSample[];
  /** Balancer state of one entrypoint (`RouteBuilder.describe`: algorithm, ejected endpoints, ...). */
  balancing?(key: string): unknown;
  /** Register for change notifications (e.g. each applied snapshot); returns the unsubscribe function. */
  subscribe?(onChange: () => void): () => void;
}

/** Which entrypoints to show. */
export interface PageQuery {
  /** Case-insensitive substring of the entrypoint key, Service or listen address (empty: all). */
  readonly q: string;
  /** At most this many entrypoints. */
  readonly limit: number;
}

export const DEFAULT_LIMIT = 200;
export const MAX_LIMIT = 2_000;
export const ENDPOINTS_PER_ENTRYPOINT = 50;
export const MAX_ERRORS = 200;

/** The query from URL search params (`q`, `limit`), clamped; bad values fall back to the defaults. */
export function pageQuery(params: URLSearchParams): PageQuery {
  const q = (params.get("q") ?? "").trim().slice(0, 200);
  const n = Number(params.get("limit") ?? DEFAULT_LIMIT);
  const limit = Number.isInteger(n) && n > 0 ? Math.min(n, MAX_LIMIT) : DEFAULT_LIMIT;
  return { q, limit };
}

/** Bind-error entries for listeners that could not be bound (the ones `/api/snapshot` reports). */
export function bindErrors(listeners: readonly PageListenerView[]): PageError[] {
  return listeners.flatMap((l) => l.listeners.filter((x) => x.error).map((x) => ({ kind: "Entrypoint", object: l.key, message: x.error! })));
}

function selectionText(ep: Entrypoint): string | undefined {
  const s = ep.cluster.selection;
  if (!s) return undefined;
  const parts: string[] = [];
  if (s.topology !== "none") parts.push(`topology ${s.topology}`);
  if (s.topologyIgnored) parts.push(`hints ignored: ${s.topologyIgnored}`);
  if (s.fallback !== "none") parts.push(`fallback ${s.fallback}`);
  return parts.length ? parts.join("; ") : undefined;
}

/** The algorithm and ejected endpoints (`address|port` -> until, ms) out of `RouteBuilder.describe`'s loose shape. */
function balancingState(raw: unknown): { algorithm?: string; ejected: Map<string, number> } {
  const ejected = new Map<string, number>();
  if (!isRecord(raw)) return { ejected };
  if (Array.isArray(raw.ejected)) {
    for (const e of raw.ejected.filter(isRecord)) ejected.set(`${String(e.address)}|${String(e.port)}`, Number(e.until));
  }
  return { ...(typeof raw.algorithm === "string" ? { algorithm: raw.algorithm } : {}), ejected };
}

function entrypointState(ep: Entrypoint, listeners: PageListenerView | undefined, balancing: unknown): PageEntrypoint {
  const used = new Set(ep.cluster.serving.map((e) => `${e.address}|${e.port}`));
  const { algorithm, ejected } = balancingState(balancing);
  const selection = selectionText(ep);
  const affinity = ep.sessionAffinity && (ep.sessionAffinity.mode !== "None" || ep.sessionAffinity.cookie) ? ep.sessionAffinity : undefined;
  return {
    key: ep.key,
    name: ep.name,
    type: ep.type,
    protocol: ep.protocol,
    namespace: ep.namespace,
    service: ep.service,
    addresses: ep.addresses,
    port: ep.port,
    policy: ep.externalTrafficPolicy,
    ...(affinity ? { affinity } : {}),
    ...(ep.sourceRanges?.length ? { sourceRanges: ep.sourceRanges } : {}),
    ...(ep.proxyProtocol ? { proxyProtocol: ep.proxyProtocol } : {}),
    ...(ep.externalName ? { externalName: `${ep.externalName.hostname}:${ep.externalName.port}` } : {}),
    ...(selection ? { selection } : {}),
    ...(ep.error ? { error: ep.error } : {}),
    listeners: (listeners?.listeners ?? []).map((l) => ({
      address: l.address,
      port: l.port,
      bound: l.bound,
      ...(l.error ? { error: l.error } : {}),
      ...(l.flows !== undefined ? { flows: l.flows } : {}),
    })),
    ...(listeners?.refused !== undefined ? { refused: listeners.refused } : {}),
    endpoints: ep.cluster.endpoints.slice(0, ENDPOINTS_PER_ENTRYPOINT).map((e) => ({
      address: e.address,
      port: e.port,
      ready: e.ready,
      serving: e.serving,
      terminating: e.terminating,
      used: used.has(`${e.address}|${e.port}`),
      ...(e.nodeName ? { node: e.nodeName } : {}),
      ...(e.zone ? { zone: e.zone } : {}),
      ...(e.targetRef?.name ? { target: `${e.targetRef.kind ?? "Pod"}/${e.targetRef.name}` } : {}),
      ...(ejected.has(`${e.address}|${e.port}`) ? { ejectedUntil: new Date(ejected.get(`${e.address}|${e.port}`)!).toISOString() } : {}),
    })),
    endpointCount: ep.cluster.endpoints.length,
    serving: ep.cluster.serving.length,
    ...(algorithm && algorithm !== "round-robin" ? { balancer: algorithm } : {}),
  };
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null;

function healthChecksState(raw: unknown): PageHealthCheck[] | undefined {
  if (!Array.isArray(raw)) return undefined;
  return raw.filter(isRecord).map((h) => ({
    service: `${String(h.namespace ?? "")}/${String(h.name ?? "")}`,
    port: Number(h.port ?? 0),
    localEndpoints: Number(h.localEndpoints ?? 0),
    bound: h.bound === true,
    ...(typeof h.error === "string" ? { error: h.error } : {}),
  }));
}

function stateFileState(s: AdminStateFile): PageStateFile {
  const error = s.lastWriteError ?? s.loadError;
  return {
    file: s.file,
    stale: s.stale,
    ...(s.stale && s.savedAt !== undefined ? { savedAt: s.savedAt } : {}),
    ...(s.lastWriteAt !== undefined ? { lastWriteAt: s.lastWriteAt } : {}),
    ...(error ? { error } : {}),
  };
}

function workersState(raw: unknown): PageWorker[] {
  if (!Array.isArray(raw)) return [];
  return raw.filter(isRecord).map((w) => ({
    worker: Number(w.worker ?? 0),
    pid: Number(w.pid ?? 0),
    ready: w.ready === true,
    restarts: Number(w.restarts ?? 0),
    connections: Number(w.connections ?? 0),
    requests: Number(w.requests ?? 0),
  }));
}

function counts(raw: unknown): { ok: number; failed: number } {
  return isRecord(raw) ? { ok: Number(raw.ok ?? 0), failed: Number(raw.failed ?? 0) } : { ok: 0, failed: 0 };
}

function endpointAccessState(raw: unknown): PageEndpointAccess | undefined {
  if (!isRecord(raw)) return undefined;
  const dials = isRecord(raw.dials) ? raw.dials : {};
  return {
    mode: String(raw.mode ?? ""),
    decisions: (Array.isArray(raw.decisions) ? raw.decisions : []).filter(isRecord).map((d) => ({ network: String(d.network ?? ""), via: String(d.via ?? ""), reason: String(d.reason ?? "") })),
    direct: counts(dials.direct),
    portForward: counts(dials.portForward),
  };
}

function controllerState(raw: unknown): PageController | undefined {
  if (!isRecord(raw)) return undefined;
  return {
    mode: String(raw.mode ?? ""),
    leading: raw.leading === true,
    synced: raw.synced === true,
    services: Number(raw.services ?? 0),
    ...(typeof raw.lastError === "string" ? { lastError: raw.lastError } : {}),
  };
}

function matches(ep: Entrypoint, q: string): boolean {
  if (!q) return true;
  const needle = q.toLowerCase();
  return ep.key.toLowerCase().includes(needle) || ep.addresses.some((a) => `${a}:${ep.port}`.includes(needle)) || String(ep.port) === q;
}

/** Options of {@link pageState}. */
export interface PageStateOptions {
  /** Wall clock in ms (default `Date.now()`). */
  readonly now?: number;
  /** Rate tracker shared by the page's clients (without it, traffic has no rates). */
  readonly rates?: TrafficRates;
  /** Traffic over time, shared by the page's clients (without it, no charts). */
  readonly history?: TrafficHistory;
}

/** At most this many charts on the page. */
export const MAX_CHARTS = 12;

/**
 * The page state of `view` now, for `query`.
 * @example pageState(view, pageQuery(new URLSearchParams("q=web"))).entrypoints.map((e) => e.key); // ["NodePort/ns/web:http"]
 */
export function pageState(view: PageSource, query: PageQuery, options: PageStateOptions = {}): PageState {
  const now = options.now ?? Date.now();
  const snap = view.snapshot();
  const listeners = view.listeners();
  const byKey = new Map(listeners.map((l) => [l.key, l]));
  const all = snap?.entrypoints ?? [];
  const endpoints = { total: 0, ready: 0, terminating: 0, notServing: 0 };
  let failing = 0;
  for (const ep of all) {
    for (const e of ep.cluster.endpoints) {
      endpoints.total++;
      if (e.ready) endpoints.ready++;
      if (e.terminating) endpoints.terminating++;
      if (!e.serving) endpoints.notServing++;
    }
    if (ep.error || byKey.get(ep.key)?.listeners.some((l) => !l.bound)) failing++;
  }
  let bound = 0;
  let unbound = 0;
  for (const l of listeners) for (const x of l.listeners) x.bound ? bound++ : unbound++;
  const matched = query.q ? all.filter((ep) => matches(ep, query.q)) : all;
  const shown = matched.slice(0, query.limit);
  const errors: PageError[] = [...(snap?.errors ?? []), ...bindErrors(listeners)];
  let traffic: PageTraffic[] | undefined;
  let charts: PageChart[] | undefined;
  if (view.traffic) {
    const samples = view.traffic();
    const rates = options.rates?.update(samples, now);
    if (options.history) {
      options.history.record(samples, all, now);
      charts = options.history.charts(matched.map((ep) => ep.name), MAX_CHARTS);
    }
    const names = new Set(shown.map((ep) => ep.name));
    traffic = samples
      .filter((t) => names.has(t.key))
      .map((t) => ({ key: t.key, requests: t.requests, errors: t.errors, active: t.active, bytesIn: t.bytesIn, bytesOut: t.bytesOut, ...rates?.get(t.key) }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
  const controller = view.controller ? controllerState(view.controller()) : undefined;
  const workers = view.workers ? workersState(view.workers()) : undefined;
  const endpointAccess = view.endpointAccess ? endpointAccessState(view.endpointAccess()) : undefined;
  const healthChecks = view.healthChecks ? healthChecksState(view.healthChecks()) : undefined;
  const stateFile = view.state ? stateFileState(view.state()) : undefined;
  return {
    version: snap?.version ?? 0,
    at: now,
    synced: snap !== undefined,
    ...(snap ? { node: snap.node.name } : {}),
    ...(snap?.node.zone ? { zone: snap.node.zone } : {}),
    ...(view.health ? { health: view.health() } : {}),
    ...(stateFile ? { state: stateFile } : {}),
    sources: view.sources(),
    ...(controller ? { controller } : {}),
    ...(workers?.length ? { workers } : {}),
    ...(endpointAccess ? { endpointAccess } : {}),
    ...(healthChecks?.length ? { healthChecks } : {}),
    summary: { entrypoints: all.length, failing, listeners: { bound, unbound }, endpoints, errors: errors.length },
    filter: { q: query.q, limit: query.limit, matched: matched.length },
    entrypoints: shown.map((ep) => entrypointState(ep, byKey.get(ep.key), view.balancing?.(ep.key))),
    errors: errors.slice(0, MAX_ERRORS).map((e) => ({ kind: e.kind, object: e.object, message: e.message })),
    ...(traffic ? { traffic } : {}),
    ...(charts?.length ? { charts } : {}),
  };
}
