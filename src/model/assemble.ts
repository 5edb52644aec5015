/**
 * The last phase of an incremental update (see update.ts): the next {@link Snapshot} from the previous one and
 * the changes, sharing every unchanged part (the entrypoint list is patched in place of a copy when only
 * entrypoints were replaced; errors and health checks are kept when unchanged), with its {@link EntrypointDelta}.
 */
import { compareErrors, entrypointError, NO_HEALTH_CHECKS } from "./build.ts";
import { mergeEntrypoints } from "./entrypoint-list.ts";
export { entrypointByKey, mergeEntrypoints } from "./entrypoint-list.ts";
import { sameErrors } from "./equal.ts";
import { compareHealthChecks } from "./service-health.ts";
import type { DerivedState, EntrypointChanges, HealthChanges, HealthCheckChange } from "./update.ts";
import type { Entrypoint, EntrypointDelta, HealthCheckService, ModelError, NodeInfo, Snapshot } from "./types.ts";

const NO_ERRORS: readonly ModelError[] = Object.freeze([]);


/** Index of `check` (by port and Service) in health checks sorted by {@link compareHealthChecks}, or -1. */
function indexOfCheck(checks: readonly HealthCheckService[], check: HealthCheckService): number {
  let lo = 0;
  let hi = checks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const order = compareHealthChecks(checks[mid] as HealthCheckService, check);
    if (order === 0) return mid;
    if (order < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** What changed besides the state, for {@link assembleSnapshot}. */
export interface SnapshotChanges {
  readonly entrypoints: EntrypointChanges;
  readonly healthChecks: HealthChanges;
  /** Whether any error may have changed (invalid objects, Services, conflicts, health checks). */
  readonly errorsChanged: boolean;
  /** The errors of invalid objects (read only when `errorsChanged`). */
  readonly invalid: Iterable<ModelError>;
  /** The node's description when it changed (always on the first snapshot), else undefined. */
  readonly node: NodeInfo | undefined;
}

/**
 * The snapshot after `prev` with `changes` applied (version + 1, with its delta), or `prev` itself when nothing in
 * it differs. `state` is the already-updated derived state.
 */
export function assembleSnapshot(prev: Snapshot | undefined, state: DerivedState, changes: SnapshotChanges): Snapshot {
  const healthChecks = mergeHealthChecks(prev?.healthChecks ?? NO_HEALTH_CHECKS, changes.healthChecks.changes, state);
  const merged = mergeEntrypoints(prev?.entrypoints ?? [], changes.entrypoints.changed);
  const entrypoints = merged.entrypoints;
  const errors = changes.errorsChanged ? collectErrors(prev?.errors ?? [], changes.invalid, state) : (prev?.errors ?? NO_ERRORS);
  const node = changes.node ?? (prev as Snapshot).node;
  if (prev && entrypoints === prev.entrypoints && errors === prev.errors && node === prev.node && healthChecks === prev.healthChecks) {
    return prev;
  }
  const version = (prev?.version ?? 0) + 1;
  const snapshot: Snapshot = { version, entrypoints, errors, node, healthChecks };
  if (prev !== undefined) {
    const delta: EntrypointDelta = Object.freeze({ base: prev.entrypoints, changed: merged.changed });
    Object.defineProperty(snapshot, "delta", { value: delta, enumerable: false });
  }
  return Object.freeze(snapshot);
}

/**
 * The previous health checks with the changes applied, sorted; `prev` when unchanged. A change of content only
 * (same port) is patched in place of a copy; anything else rebuilds the list from the served ones.
 */
function mergeHealthChecks(
  prev: readonly HealthCheckService[],
  changes: readonly HealthCheckChange[],
  state: DerivedState,
): readonly HealthCheckService[] {
  if (changes.length === 0) return prev;
  if (changes.every((c) => c.old && c.next && c.old.port === c.next.port)) {
    const at = changes.map((c) => indexOfCheck(prev, c.old as HealthCheckService));
    if (!at.includes(-1)) {
      const out = prev.slice();
      changes.forEach((c, i) => (out[at[i] as number] = c.next as HealthCheckService));
      return Object.freeze(out);
    }
  }
  if (state.healthFinals.size === 0) return NO_HEALTH_CHECKS;
  return Object.freeze([...state.healthFinals.values()].sort(compareHealthChecks));
}


/** Every error now, sorted; `prev` when the same. */
function collectErrors(prev: readonly ModelError[], invalid: Iterable<ModelError>, state: DerivedState): readonly ModelError[] {
  const errors: ModelError[] = [...invalid];
  for (const list of state.serviceErrors.values()) errors.push(...list);
  for (const epKey of state.conflicted) {
    const final = state.finals.get(epKey);
    if (final) errors.push(entrypointError(final));
  }
  for (const error of state.healthErrors.values()) errors.push(error);
  errors.sort(compareErrors);
  return sameErrors(prev, errors) ? prev : Object.freeze(errors);
}
