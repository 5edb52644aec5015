/**
 * The phases of an incremental update, as the store's flush runs them (kube-proxy's `EndpointsMap.Update`: apply
 * what is pending, return what changed; the caller does the bookkeeping):
 * 1. {@link applyServiceChanges}: recompute the dirty Services, re-index their exposures' claims and health check
 *    candidates -> {@link ServiceChanges} (which Services changed, which entrypoints to rebuild, which claims moved);
 * 2. {@link resolveEntrypoints}: rebuild those entrypoints with their conflict errors -> {@link EntrypointChanges};
 * 3. {@link resolveHealthChecks}: re-decide the health checks that changed or whose port's claims moved ->
 *    {@link HealthChanges};
 * then assemble.ts merges the changes into the next snapshot.
 *
 * Each phase updates the {@link DerivedState} it is given and returns what it changed; nothing here reads a clock,
 * counts metrics or calls back.
 */
import { type Exposure, tcpPortOfClaim } from "./claims.ts";
import { ClaimIndex, withError } from "./conflicts.ts";
import { sameClaims, sameErrors } from "./equal.ts";
import { EMPTY_RESULT, type ServiceResult } from "./service.ts";
import { type HealthCandidate, healthCheckConflict, healthCheckError } from "./service-health.ts";
import type { Entrypoint, HealthCheckService, ModelError } from "./types.ts";

/** What the store derives from its objects and keeps between flushes: per-Service results and their indexes. */
export class DerivedState {
  /** The last result of each Service that contributes something. */
  readonly results = new Map<string, ServiceResult>();
  /** Every exposure by entrypoint key, as indexed in {@link claims}. */
  readonly exposures = new Map<string, Exposure>();
  readonly claims = new ClaimIndex();
  /** The published entrypoints by key (an exposure's entrypoint, with its conflict error if any). */
  readonly finals = new Map<string, Entrypoint>();
  /** Keys of the entrypoints that lost a claim. */
  readonly conflicted = new Set<string>();
  /** The errors of each Service that has some. */
  readonly serviceErrors = new Map<string, readonly ModelError[]>();
  /** Health check candidates by Service key, and the Service keys per health check port. */
  readonly healthCandidates = new Map<string, HealthCandidate>();
  readonly healthByPort = new Map<number, Set<string>>();
  /** Served health checks, and the errors of skipped ones, by Service key. */
  readonly healthFinals = new Map<string, HealthCheckService>();
  readonly healthErrors = new Map<string, ModelError>();
}

/** What {@link applyServiceChanges} changed. */
export interface ServiceChanges {
  /** Services whose entrypoints, errors or health check changed. */
  readonly services: ReadonlySet<string>;
  /** Keys of the entrypoints that went away. */
  readonly removed: readonly string[];
  /** Keys of the entrypoints to rebuild: new or changed, or a claimant of a claim that moved. */
  readonly entrypoints: ReadonlySet<string>;
  /** The claims added or removed, as `[claimPort, address]`. */
  readonly claims: readonly (readonly [claim: number, address: string])[];
  /** Services whose health check candidate changed, and the health check ports involved. */
  readonly healthServices: ReadonlySet<string>;
  readonly healthPorts: ReadonlySet<number>;
  /** Whether a Service's errors changed, or a conflicted entrypoint went away. */
  readonly errorsChanged: boolean;
}

/** Whether one of `exposures` (a Service's few) is of entrypoint `key`. */
function hasExposure(exposures: readonly Exposure[], key: string): boolean {
  for (let i = 0; i < exposures.length; i++) if ((exposures[i] as Exposure).entrypoint.key === key) return true;
  return false;
}

/**
 * Phase 1: recompute each of `dirty` (Service keys) with `compute` (its new result from its previous one) and apply
 * the result to `state`: its errors, its exposures and their claims, its health check candidate.
 */
export function applyServiceChanges(
  state: DerivedState,
  dirty: Iterable<string>,
  compute: (key: string, previous: ServiceResult) => ServiceResult,
): ServiceChanges {
  const services = new Set<string>();
  const removed: string[] = [];
  const entrypoints = new Set<string>();
  const claims: [claim: number, address: string][] = [];
  const touch = (claim: number, address: string) => void claims.push([claim, address]);
  const healthServices = new Set<string>();
  const healthPorts = new Set<number>();
  let errorsChanged = false;

  for (const key of dirty) {
    const previous = state.results.get(key) ?? EMPTY_RESULT;
    const next = compute(key, previous);
    if (next === EMPTY_RESULT) state.results.delete(key);
    else state.results.set(key, next);
    let serviceChanged = false;
    if (!sameErrors(previous.errors, next.errors)) {
      errorsChanged = true;
      serviceChanged = true;
      if (next.errors.length > 0) state.serviceErrors.set(key, next.errors);
      else state.serviceErrors.delete(key);
    }
    // A linear scan for the usual few exposures; a set when a Service has many ports.
    const nextKeys =
      previous.exposures.length * next.exposures.length > 256 ? new Set(next.exposures.map((e) => e.entrypoint.key)) : undefined;
    for (const old of previous.exposures) {
      const epKey = old.entrypoint.key;
      if (nextKeys !== undefined ? nextKeys.has(epKey) : hasExposure(next.exposures, epKey)) continue;
      state.claims.remove(old, touch);
      state.exposures.delete(epKey);
      state.finals.delete(epKey);
      if (state.conflicted.delete(epKey)) errorsChanged = true;
      removed.push(epKey);
      serviceChanged = true;
    }
    for (const exposure of next.exposures) {
      const epKey = exposure.entrypoint.key;
      const old = state.exposures.get(epKey);
      if (old && sameClaims(old, exposure)) {
        /* same claims: keep the indexed exposure object, refresh its entrypoint */
        if (old.entrypoint !== exposure.entrypoint) {
          state.exposures.set(epKey, exposure);
          state.claims.replace(old, exposure);
          serviceChanged = true;
        }
      } else {
        if (old) state.claims.remove(old, touch);
        state.exposures.set(epKey, exposure);
        state.claims.add(exposure, touch);
        serviceChanged = true;
      }
      entrypoints.add(epKey);
    }
    if (previous.healthCheck !== next.healthCheck) {
      setHealthCandidate(state, key, previous.healthCheck, next.healthCheck, healthPorts);
      healthServices.add(key);
      serviceChanged = true;
    }
    if (serviceChanged) services.add(key);
  }
  for (const [claim, address] of claims) {
    for (const exposure of state.claims.claimants(claim, address)) entrypoints.add(exposure.entrypoint.key);
  }
  return { services, removed, entrypoints, claims, healthServices, healthPorts, errorsChanged };
}

/** Record Service `key`'s health check candidate changing from `old` to `next`; adds the ports involved to `ports`. */
function setHealthCandidate(
  state: DerivedState,
  key: string,
  old: HealthCandidate | undefined,
  next: HealthCandidate | undefined,
  ports: Set<number>,
): void {
  if (old) {
    const keys = state.healthByPort.get(old.check.port);
    keys?.delete(key);
    if (keys?.size === 0) state.healthByPort.delete(old.check.port);
    state.healthCandidates.delete(key);
    ports.add(old.check.port);
  }
  if (next) {
    let keys = state.healthByPort.get(next.check.port);
    if (!keys) state.healthByPort.set(next.check.port, (keys = new Set()));
    keys.add(key);
    state.healthCandidates.set(key, next);
    ports.add(next.check.port);
  }
}

/** What {@link resolveEntrypoints} changed. */
export interface EntrypointChanges {
  /** The published entrypoint of each key that may differ from the previous snapshot's; null: removed. */
  readonly changed: ReadonlyMap<string, Entrypoint | null>;
  /** Whether an entrypoint's conflict error appeared, changed or went away. */
  readonly errorsChanged: boolean;
}

/** Phase 2: the entrypoints `changes` names, rebuilt with their conflict errors (and recorded in `state`). */
export function resolveEntrypoints(state: DerivedState, changes: ServiceChanges): EntrypointChanges {
  const changed = new Map<string, Entrypoint | null>();
  let errorsChanged = false;
  for (const epKey of changes.removed) changed.set(epKey, null);
  for (const epKey of changes.entrypoints) {
    const exposure = state.exposures.get(epKey);
    if (!exposure) continue;
    const previous = state.finals.get(epKey);
    const error = state.claims.conflictError(exposure);
    const final = withError(exposure.entrypoint, error, previous);
    if (final === previous) continue;
    state.finals.set(epKey, final);
    changed.set(epKey, final);
    if (previous?.error !== error) {
      errorsChanged = true;
      if (error === undefined) state.conflicted.delete(epKey);
      else state.conflicted.add(epKey);
    }
  }
  return { changed, errorsChanged };
}

/** One served health check that changed (`old` or `next` undefined: not served before or after). */
export interface HealthCheckChange {
  readonly key: string;
  readonly old: HealthCheckService | undefined;
  readonly next: HealthCheckService | undefined;
}

/** What {@link resolveHealthChecks} changed. */
export interface HealthChanges {
  readonly changes: readonly HealthCheckChange[];
  /** Whether a health check's conflict error appeared, changed or went away. */
  readonly errorsChanged: boolean;
}

/**
 * Phase 3: re-decide the health checks whose candidate changed, and every one on a port whose claims moved (an
 * entrypoint on that TCP port appeared or went away) or where another candidate came or went.
 */
export function resolveHealthChecks(state: DerivedState, changes: ServiceChanges): HealthChanges {
  const ports = new Set(changes.healthPorts);
  for (const [claim] of changes.claims) {
    const port = tcpPortOfClaim(claim);
    if (port !== undefined && state.healthByPort.has(port)) ports.add(port);
  }
  const keys = new Set(changes.healthServices);
  for (const port of ports) for (const key of state.healthByPort.get(port) ?? []) keys.add(key);

  const out: HealthCheckChange[] = [];
  let errorsChanged = false;
  for (const key of keys) {
    const candidate = state.healthCandidates.get(key);
    const old = state.healthFinals.get(key);
    const oldError = state.healthErrors.get(key);
    let error: string | undefined;
    if (candidate) {
      const rivals: HealthCandidate[] = [];
      for (const k of state.healthByPort.get(candidate.check.port) ?? []) rivals.push(state.healthCandidates.get(k) as HealthCandidate);
      error = healthCheckConflict(candidate, state.claims, rivals);
    }
    const next = candidate && error === undefined ? candidate.check : undefined;
    if (next !== old) {
      if (next) state.healthFinals.set(key, next);
      else state.healthFinals.delete(key);
      out.push({ key, old, next });
    }
    if (candidate && error !== undefined) {
      if (oldError?.message !== error) {
        state.healthErrors.set(key, healthCheckError(candidate.check, error));
        errorsChanged = true;
      }
    } else if (oldError) {
      state.healthErrors.delete(key);
      errorsChanged = true;
    }
  }
  return { changes: out, errorsChanged };
}
