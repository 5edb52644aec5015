/**
 * The admin app (hono), on `--metrics-bind-address`: the live page at `/` (see `page/`), the current
 * snapshot as JSON, sync status and `/metrics`. Read-only: what the control plane knows and the data plane reports.
 */
import { Hono } from "hono";
import type { SyncStatus } from "../kube/source.ts";
import type { Entrypoint, Snapshot } from "../model/types.ts";
import { type AdminHealth, type AdminStateFile, type TrafficSample, pageRoutes } from "./page/index.ts";

export type { AdminHealth, AdminStateFile, TrafficSample } from "./page/index.ts";

/** Bind state of one entrypoint's listeners, from the listener manager. */
export interface ListenerView {
  readonly key: string;
  readonly listeners: readonly {
    readonly address: string;
    readonly port: number;
    readonly bound: boolean;
    readonly error?: string | undefined;
    /** UDP: open flows. */
    readonly flows?: number | undefined;
  }[];
  /** Connections refused by loadBalancerSourceRanges. */
  readonly refused?: number | undefined;
}

/** What the admin app reads. */
export interface AdminView {
  snapshot(): Snapshot | undefined;
  listeners(): readonly ListenerView[];
  sources(): readonly SyncStatus[];
  /** Balancer state of one entrypoint (algorithm, affinity table size, ExternalName resolution). */
  balancing?(key: string): unknown;
  /** Prometheus exposition of `/metrics`. */
  readonly metrics?: ((req: Request) => Response) | undefined;
  /** healthCheckNodePort servers (externalTrafficPolicy: Local). */
  healthChecks?(): unknown;
  /** The LB controller's state, when it runs. */
  controller?(): unknown;
  /** The data plane's worker processes (`--workers` > 1): pid, connections, requests of each. */
  workers?(): unknown;
  /** The proxy's health as `/healthz`, `/livez` and `/readyz` report it (shown on the page). */
  health?(): AdminHealth;
  /** How endpoints are reached (`--endpoint-access` other than direct): mode, `auto`'s decisions, dial counts. */
  endpointAccess?(): object | undefined;
  /** This gateway's place in the node's succession as JSON (`control-plane/succession.ts`): role and peers. */
  succession?(): object;
  /** The state file's status (`--state-file`): whether the gateway serves replayed, unconfirmed objects. */
  state?(): AdminStateFile;
  /** Cumulative per-Service-port traffic counters from the metrics (the page shows "—" without it). */
  traffic?(): readonly TrafficSample[];
  /** Register for change notifications (call `onChange` after each applied snapshot); returns the unsubscribe function. */
  subscribe?(onChange: () => void): () => void;
}

/** Options of {@link adminApp}. */
export interface AdminAppOptions {
  /** Interval of the page's SSE state checks and keep-alives (default 1000 ms). */
  readonly tickMs?: number | undefined;
  /** Abort to end the page's open event streams (before closing the server: Deno's shutdown waits for them). */
  readonly signal?: AbortSignal | undefined;
  /** Wall clock in ms (default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

/** The JSON shape of one entrypoint on `/api/snapshot`. */
export function entrypointJson(ep: Entrypoint, listeners: ListenerView | undefined, balancing?: unknown) {
  return {
    name: ep.name,
    key: ep.key,
    type: ep.type,
    protocol: ep.protocol,
    namespace: ep.namespace,
    service: ep.service,
    addresses: ep.addresses,
    port: ep.port,
    externalTrafficPolicy: ep.externalTrafficPolicy,
    ...(ep.error ? { error: ep.error } : {}),
    listeners: listeners?.listeners ?? [],
    endpoints: ep.cluster.endpoints.map((e) => ({
      address: e.address,
      port: e.port,
      ready: e.ready,
      serving: e.serving,
      terminating: e.terminating,
      ...(e.nodeName ? { nodeName: e.nodeName } : {}),
      ...(e.zone ? { zone: e.zone } : {}),
      ...(e.targetRef?.name ? { targetRef: e.targetRef } : {}),
    })),
    servingEndpoints: ep.cluster.serving.length,
    // Which endpoints take new traffic, and why (kube-proxy's CategorizeEndpoints, see Cluster.selection).
    chosen: ep.cluster.serving.map((e) => `${e.address.includes(":") ? `[${e.address}]` : e.address}:${e.port}`),
    ...(ep.cluster.selection ? { selection: ep.cluster.selection } : {}),
    sessionAffinity: ep.sessionAffinity ?? { mode: "None" },
    ...(ep.sourceRanges ? { sourceRanges: ep.sourceRanges } : {}),
    ...(ep.proxyProtocol ? { proxyProtocol: ep.proxyProtocol } : {}),
    ...(ep.externalName ? { externalName: ep.externalName } : {}),
    ...(balancing ? { balancing } : {}),
  };
}

/** `/api/snapshot` body: entrypoints, model errors plus listener bind errors. */
export function snapshotJson(view: AdminView) {
  const snap = view.snapshot();
  const byKey = new Map(view.listeners().map((l) => [l.key, l]));
  const bindErrors = [...byKey.values()].flatMap((l) =>
    l.listeners.filter((x) => x.error).map((x) => ({ kind: "Entrypoint" as const, object: l.key, message: x.error! })),
  );
  return {
    version: snap?.version ?? 0,
    synced: snap !== undefined,
    node: snap?.node,
    entrypoints: (snap?.entrypoints ?? []).map((ep) => entrypointJson(ep, byKey.get(ep.key), view.balancing?.(ep.key))),
    errors: [...(snap?.errors ?? []), ...bindErrors],
  };
}

/** `/api/status` `state`: the state file's status with times as RFC 3339 strings. */
export function stateJson(s: AdminStateFile) {
  const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
  return {
    file: s.file,
    stale: s.stale,
    ...(s.savedAt !== undefined ? { savedAt: iso(s.savedAt) } : {}),
    replayed: s.replayed,
    removed: s.removed,
    skipped: s.skipped,
    ...(s.loadError ? { loadError: s.loadError } : {}),
    writer: s.writer,
    writes: s.writes,
    writeErrors: s.writeErrors,
    ...(s.lastWriteAt !== undefined ? { lastWriteAt: iso(s.lastWriteAt) } : {}),
    ...(s.lastWriteError ? { lastWriteError: s.lastWriteError } : {}),
  };
}

/**
 * The admin routes: `/` (live page), `/api/state`, `/api/events`, `/api/snapshot`, `/api/status`, `/metrics`.
 * @example
 * const app = adminApp(view, { signal: closing.signal });
 * rt.serveHttp({ hostname: "127.0.0.1", port: 10349, fetch: (r) => app.fetch(r) });
 */
export function adminApp(view: AdminView, options: AdminAppOptions = {}): Hono {
  const app = new Hono();
  app.get("/api/snapshot", (c) => c.json(snapshotJson(view)));
  app.get("/api/status", (c) =>
    c.json({
      ...(view.health ? { health: view.health() } : {}),
      ...(view.state ? { state: stateJson(view.state()) } : {}),
      sources: view.sources(),
      listeners: view.listeners(),
      ...(view.healthChecks ? { healthChecks: view.healthChecks() } : {}),
      ...(view.controller ? { controller: view.controller() } : {}),
      ...(view.workers ? { workers: view.workers() } : {}),
      ...(view.succession ? { succession: view.succession() } : {}),
      ...(view.endpointAccess ? { endpointAccess: view.endpointAccess() } : {}),
    }),
  );
  if (view.metrics) {
    const metrics = view.metrics;
    app.on(["GET", "HEAD"], "/metrics", (c) => metrics(c.req.raw));
  }
  pageRoutes(app, view, options);
  return app;
}
