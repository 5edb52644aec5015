/**
 * Reconcile, the deciding half: what a new snapshot changes in the listeners. Either only endpoints
 * changed (the common case at scale: swap the routes of a few entrypoints), or the slots are planned
 * anew against the desired listeners (kept, new, removed). No sockets are touched here; the manager
 * binds, swaps and drains what this returns.
 */
import { entrypointByKey } from "../model/entrypoint-list.ts";
import type { Entrypoint, Snapshot } from "../model/types.ts";
import type { RouteBuilder } from "../routes/builder.ts";
import type { Route } from "../routes/types.ts";
import type { ListenerSpec } from "./desired.ts";
import { newSlot, type Slot } from "./slot.ts";
import { sameOptionalList } from "../model/equal.ts";


/** Whether two versions of an entrypoint want exactly the same listeners (only their clusters may differ). */
export function sameListenSide(a: Entrypoint, b: Entrypoint): boolean {
  return (
    a.key === b.key &&
    a.port === b.port &&
    a.protocol === b.protocol &&
    a.error === b.error &&
    sameOptionalList(a.addresses, b.addresses) &&
    sameOptionalList(a.sourceRanges, b.sourceRanges)
  );
}

/**
 * The endpoint-churn fast path: when `next` has the same entrypoints as `previous` (keys, in order) whose
 * listen side (addresses, port, protocol, error, source ranges) is unchanged, the entrypoints that changed
 * (some have new clusters); otherwise undefined (the full reconcile is needed). The changed ones come from
 * the snapshot's delta when it is relative to `previous` (O(changed log n)); else from comparing the two
 * lists (one pointer comparison per entrypoint).
 *
 * @example endpointsOnlyChanges(s1, s2)?.map((e) => e.key) // ["NodePort/ns/web:http"] after an endpoint change
 */
export function endpointsOnlyChanges(previous: Snapshot, next: Snapshot): Entrypoint[] | undefined {
  const a = previous.entrypoints;
  const b = next.entrypoints;
  if (a.length !== b.length) return undefined;
  const changed: Entrypoint[] = [];
  const delta = next.delta;
  if (delta !== undefined && delta.base === a) {
    for (const key of delta.changed) {
      const before = entrypointByKey(a, key);
      const after = entrypointByKey(b, key);
      if (before === undefined || after === undefined) return undefined; // added or removed
      if (!sameListenSide(before, after)) return undefined;
      changed.push(after);
    }
  } else {
    for (let i = 0; i < b.length; i++) {
      const before = a[i]!;
      const after = b[i]!;
      if (before === after) continue;
      if (!sameListenSide(before, after)) return undefined;
      changed.push(after);
    }
  }
  return changed;
}

/**
 * Routes for the entrypoints of `specs` (see {@link RouteBuilder.route}): reused when the entrypoint is
 * the same object, the balancer kept when nothing balancing depends on changed; affinity tables and
 * ExternalName resolvers carry over, and those of entrypoints no longer served are dropped.
 */
export function nextRoutes(builder: RouteBuilder, specs: Iterable<ListenerSpec>, previous: ReadonlyMap<string, Route>): Map<string, Route> {
  const next = new Map<string, Route>();
  for (const { entrypoint } of specs) {
    if (next.has(entrypoint.key)) continue;
    next.set(entrypoint.key, builder.route(entrypoint, previous.get(entrypoint.key)));
  }
  builder.retain([...next.values()].map((r) => r.entrypoint));
  return next;
}

/** The slots of a snapshot, planned from the current ones. */
export interface SlotPlan {
  /** Wanted listeners by listener key, in snapshot order: kept slots (entrypoint updated) and new, unbound ones. */
  readonly slots: Map<string, Slot>;
  /** The same slots by entrypoint key (the fast path swaps routes through it). */
  readonly byEntrypoint: Map<string, Slot[]>;
  /** Slots no longer wanted, removed or changing protocol, and why: retire them first, so their ports are free. */
  readonly removed: readonly { readonly slot: Slot; readonly reason: string }[];
}

/**
 * Plan `desired` against `current`: a listener is kept (same key and protocol) with the entrypoint's new
 * version, else a new slot is made; what `desired` no longer has, or has with another protocol, is removed.
 *
 * @example planSlots(new Map(), desiredListeners(snapshot).listeners).slots.size // one slot per listener
 */
export function planSlots(current: ReadonlyMap<string, Slot>, desired: ReadonlyMap<string, ListenerSpec>): SlotPlan {
  const removed: { slot: Slot; reason: string }[] = [];
  for (const [key, slot] of current) {
    const spec = desired.get(key);
    if (spec === undefined) removed.push({ slot, reason: "removed" });
    else if (spec.protocol !== slot.protocol) removed.push({ slot, reason: `protocol changed to ${spec.protocol}` });
  }
  const slots = new Map<string, Slot>();
  const byEntrypoint = new Map<string, Slot[]>();
  for (const spec of desired.values()) {
    const kept = current.get(spec.key);
    const slot = kept !== undefined && kept.protocol === spec.protocol ? kept : newSlot(spec);
    slot.entrypoint = spec.entrypoint;
    slots.set(spec.key, slot);
    const list = byEntrypoint.get(spec.entrypoint.key);
    if (list === undefined) byEntrypoint.set(spec.entrypoint.key, [slot]);
    else list.push(slot);
  }
  return { slots, byEntrypoint, removed };
}
