/**
 * Warning Events for ports that cannot be bound, once per new failure (the recorder counts repeats): entrypoint
 * listeners (`FailedToBindListener`, from the data plane's listener states) and healthCheckNodePort servers
 * (kube-proxy's `FailedToStartServiceHealthcheck`).
 */
import type { EventRecorder } from "../controller/index.ts";
import type { DataPlane } from "../data-plane/types.ts";
import type { Snapshot } from "../model/types.ts";

/** What this reads of the healthCheckNodePort servers. */
export interface ServiceHealthStatus {
  status(): readonly { readonly namespace: string; readonly name: string; readonly error?: string | undefined }[];
}

/** A function to call after each applied snapshot; it emits an Event for each failure not seen on the last call. */
export function bindFailureEvents(
  events: EventRecorder,
  listeners: Pick<DataPlane, "listeners" | "counts">,
  serviceHealth: ServiceHealthStatus,
): (snapshot: Snapshot) => void {
  let known = new Set<string>();
  return (snapshot) => {
    // Listener states walk every listener: skip them while nothing is failing or was (the common case at scale).
    const hcErrors = serviceHealth.status().some((hc) => hc.error);
    if (known.size === 0 && listeners.counts().failed === 0 && !hcErrors) return;
    const byKey = new Map(snapshot.entrypoints.map((e) => [e.key, e]));
    const now = new Set<string>();
    for (const entry of listeners.listeners()) {
      const ep = byKey.get(entry.key);
      for (const l of entry.listeners) {
        if (!l.error || !ep) continue;
        now.add(l.error);
        if (!known.has(l.error)) void events.warning({ kind: "Service", apiVersion: "v1", namespace: ep.namespace, name: ep.service, ...(ep.serviceUid ? { uid: ep.serviceUid } : {}) }, "FailedToBindListener", l.error);
      }
    }
    for (const hc of serviceHealth.status()) {
      if (!hc.error) continue;
      now.add(hc.error);
      const uid = snapshot.entrypoints.find((e) => e.namespace === hc.namespace && e.service === hc.name)?.serviceUid;
      if (!known.has(hc.error)) void events.warning({ kind: "Service", apiVersion: "v1", namespace: hc.namespace, name: hc.name, ...(uid ? { uid } : {}) }, "FailedToStartServiceHealthcheck", hc.error);
    }
    known = now;
  };
}
