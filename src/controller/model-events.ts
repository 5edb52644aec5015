/**
 * Kubernetes Events for the model's problems with a Service, so `kubectl describe service` shows why a Service is
 * not served as asked: an invalid `kubegate.io/*` annotation, a port another Service holds, more endpoints than
 * `--max-endpoints-per-service`, a bad field. The model keeps serving everything else (see `model/types.ts`
 * ModelError); this only tells the Service's owner.
 *
 * - One Warning Event per new problem, on the Service (with its uid, when a snapshot entrypoint carries it: kubectl
 *   selects a Service's Events by `involvedObject.uid`). Reason: the error's `reason` (`InvalidAnnotation`,
 *   `PortConflict`, `TooManyEndpoints`), else `InvalidService`.
 * - A problem is not reported again while it lasts (snapshot after snapshot); once it is gone, its return is new.
 * - Errors of other kinds (EndpointSlice, Node, Source) are not Service problems: logs and the admin API show them.
 *
 * Pure but for the `warning` calls; the recorder correlates repeats and rate-limits per object and reason.
 */
import type { EventRecorder, InvolvedObject } from "./events.ts";
import type { Entrypoint, ModelError, ModelErrorReason, Snapshot } from "../model/types.ts";

/** What {@link modelErrorEvents} needs of an {@link EventRecorder}. */
export type EventRecorderLike = Pick<EventRecorder, "warning">;

/** One Event to record about a model error. */
export interface ModelErrorEvent {
  /** The Service. */
  readonly object: InvolvedObject;
  readonly reason: ModelErrorReason;
  readonly message: string;
}

/** Index of the first entrypoint whose key is `>= key` (entrypoints are sorted by key). */
function lowerBound(entrypoints: readonly Entrypoint[], key: string): number {
  let lo = 0;
  let hi = entrypoints.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((entrypoints[mid] as Entrypoint).key < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The uid of Service `namespace/name` from any of its entrypoints in `snapshot`, if known. */
function serviceUid(snapshot: Snapshot, service: string): string | undefined {
  for (const type of ["NodePort", "LoadBalancer"] as const) {
    const prefix = `${type}/${service}:`;
    const ep = snapshot.entrypoints[lowerBound(snapshot.entrypoints, prefix)];
    if (ep?.key.startsWith(prefix) && ep.serviceUid !== undefined) return ep.serviceUid;
  }
  return undefined;
}

function serviceObject(namespace: string, name: string, uid: string | undefined): InvolvedObject {
  return uid === undefined ? { kind: "Service", apiVersion: "v1", namespace, name } : { kind: "Service", apiVersion: "v1", namespace, name, uid };
}

/**
 * The Event to record for `error`, or undefined when it is not about a Service. An Entrypoint error (a port
 * conflict) is reported on the entrypoint's Service, saying which entrypoint is not served.
 *
 * @example
 * modelErrorEvent({ kind: "Service", object: "shop/web", message: "...", reason: "InvalidAnnotation" }, snapshot);
 * // { object: { kind: "Service", apiVersion: "v1", namespace: "shop", name: "web", uid: "…" }, reason: "InvalidAnnotation", message: "..." }
 */
export function modelErrorEvent(error: ModelError, snapshot: Snapshot): ModelErrorEvent | undefined {
  const reason = error.reason ?? "InvalidService";
  if (error.kind === "Service") {
    const slash = error.object.indexOf("/");
    if (slash <= 0) return undefined;
    const object = serviceObject(error.object.slice(0, slash), error.object.slice(slash + 1), serviceUid(snapshot, error.object));
    return { object, reason, message: error.message };
  }
  if (error.kind !== "Entrypoint") return undefined;
  const ep = snapshot.entrypoints[lowerBound(snapshot.entrypoints, error.object)];
  if (ep?.key === error.object) {
    return {
      object: serviceObject(ep.namespace, ep.service, ep.serviceUid),
      reason,
      message: `${ep.type} "${ep.name}" is not served: ${error.message}`,
    };
  }
  // Not in the snapshot (should not happen): the key says `Type/namespace/name:port`.
  const m = /^([^/]+)\/([^/]+)\/([^/:]+):(.+)$/.exec(error.object);
  if (!m) return undefined;
  const [, type, namespace, name, port] = m as unknown as [string, string, string, string, string];
  return { object: serviceObject(namespace, name, undefined), reason, message: `${type} "${namespace}/${name}:${port}" is not served: ${error.message}` };
}

/**
 * Report the new Service problems of each snapshot as Warning Events (see the module comment). Call the returned
 * function with every published snapshot, in order.
 *
 * @example
 * const reportModelErrors = modelErrorEvents(events);
 * store = new ModelStore(options, { onSnapshot: (snapshot) => reportModelErrors(snapshot) });
 */
export function modelErrorEvents(events: EventRecorderLike): (snapshot: Snapshot) => void {
  let known = new Set<string>();
  let lastErrors: readonly ModelError[] | undefined;
  return (snapshot) => {
    // The store keeps the errors array while no error changed: nothing new to say.
    if (snapshot.errors === lastErrors) return;
    lastErrors = snapshot.errors;
    if (known.size === 0 && snapshot.errors.length === 0) return;
    const now = new Set<string>();
    for (const error of snapshot.errors) {
      const event = modelErrorEvent(error, snapshot);
      if (!event) continue;
      const { object } = event;
      // The uid is part of the identity: a Service deleted and created again is a new object to tell.
      const id = `${object.namespace}/${object.name}/${object.uid ?? ""}\n${event.reason}\n${event.message}`;
      if (now.has(id)) continue;
      now.add(id);
      if (!known.has(id)) void events.warning(object, event.reason, event.message);
    }
    known = now;
  };
}
