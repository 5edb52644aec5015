/**
 * healthCheckNodePort servers: which Services' health checks are served, and the conflicts that stop one.
 * Pure; shared by the full build and the incremental store.
 *
 * A health check listens on TCP `port` on each of its addresses. It is skipped (and reported on its Service) when
 * - an entrypoint listens on TCP or HTTP on the same address and port (entrypoints win: they carry traffic), or
 * - the health check of an older Service (creationTimestamp, then `namespace/name`) wants the same address and port.
 * The API server allocates healthCheckNodePorts from the node-port range, so this only happens with hand-written
 * objects or a LoadBalancer `port` inside that range.
 */
import type { ClaimIndex } from "./conflicts.ts";
import { claimPort, compareRank, type HealthCandidate } from "./service.ts";
import type { HealthCheckService, ModelError } from "./types.ts";

/** Why `candidate` cannot be served, or undefined when it can. `rivals` are the candidates on the same port. */
export function healthCheckConflict(
  candidate: HealthCandidate,
  claims: ClaimIndex,
  rivals: Iterable<HealthCandidate>,
): string | undefined {
  const { check } = candidate;
  const claim = claimPort(check.port, "tcp");
  for (const address of check.addresses) {
    const winner = claims.claimants(claim, address)[0];
    if (winner) return conflictMessage(check, address, `${winner.entrypoint.type} "${winner.entrypoint.name}"`);
  }
  let best: HealthCandidate | undefined;
  let bestAddress = "";
  for (const rival of rivals) {
    if (rival === candidate || rival.check.port !== check.port || compareRank(rival.rank, candidate.rank) >= 0) continue;
    const shared = check.addresses.find((a) => rival.check.addresses.includes(a));
    if (shared === undefined) continue;
    if (!best || compareRank(rival.rank, best.rank) < 0) {
      best = rival;
      bestAddress = shared;
    }
  }
  if (best) return conflictMessage(check, bestAddress, `the health check of Service "${best.check.namespace}/${best.check.name}"`);
  return undefined;
}

function conflictMessage(check: HealthCheckService, address: string, by: string): string {
  return `Health check port ${check.port} on ${address} is already used by ${by}: health check not served`;
}

/** The ModelError of a health check that is not served. */
export function healthCheckError(check: HealthCheckService, message: string): ModelError {
  return Object.freeze({ kind: "Service", object: `${check.namespace}/${check.name}`, message, reason: "PortConflict" });
}

/** Orders health checks by port, then `namespace/name`. */
export function compareHealthChecks(a: HealthCheckService, b: HealthCheckService): number {
  if (a.port !== b.port) return a.port - b.port;
  const ka = `${a.namespace}/${a.name}`;
  const kb = `${b.namespace}/${b.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
