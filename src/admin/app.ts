/**
 * The admin app (hono), on `--metrics-bind-address`: the current snapshot as JSON, sync status,
 * and (later issues) `/metrics` and the live page. Read-only views of the gateway's state.
 */
import { Hono } from "hono";
import type { SyncStatus } from "../kube/source.ts";
import type { Entrypoint, Snapshot } from "../model/types.ts";

/** Bind state of one entrypoint's listeners, from the listener manager. */
export interface ListenerView {
  readonly key: string;
  readonly listeners: readonly { readonly address: string; readonly port: number; readonly bound: boolean; readonly error?: string | undefined }[];
}

/** What the admin app reads. */
export interface AdminView {
  snapshot(): Snapshot | undefined;
  listeners(): readonly ListenerView[];
  sources(): readonly SyncStatus[];
  /** healthCheckNodePort servers (externalTrafficPolicy: Local). */
  healthChecks?(): unknown;
  /** The LB controller's state, when it runs. */
  controller?(): unknown;
}

/** The JSON shape of one entrypoint on `/api/snapshot`. */
export function entrypointJson(ep: Entrypoint, listeners: ListenerView | undefined) {
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
    entrypoints: (snap?.entrypoints ?? []).map((ep) => entrypointJson(ep, byKey.get(ep.key))),
    errors: [...(snap?.errors ?? []), ...bindErrors],
  };
}

export function adminApp(view: AdminView): Hono {
  const app = new Hono();
  app.get("/api/snapshot", (c) => c.json(snapshotJson(view)));
  app.get("/api/status", (c) =>
    c.json({ sources: view.sources(), listeners: view.listeners(), ...(view.healthChecks ? { healthChecks: view.healthChecks() } : {}), ...(view.controller ? { controller: view.controller() } : {}) }),
  );
  app.get("/", (c) => c.text("kubegate admin: see /api/snapshot and /api/status\n"));
  return app;
}
