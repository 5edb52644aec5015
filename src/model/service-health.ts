/**
 * Service health: the healthCheckNodePort servers of LoadBalancer Services with externalTrafficPolicy Local
 * (kube-proxy's "service health", pkg/proxy/healthcheck/service_health.go; not the gateway's own /healthz, which
 * is its "proxy health"). Which Services ask for one, which are served, and the conflicts that stop one.
 * Pure; shared by the full build and the incremental store.
 *
 * A Service asks for one (kube-proxy's `NeedsHealthCheck`) when it is of type LoadBalancer (any class), with
 * externalTrafficPolicy Local and a `healthCheckNodePort`: a {@link HealthCandidate}. A health check listens on TCP
 * `port` on each of its addresses. It is skipped (and reported on its Service) when
 * - an entrypoint listens on TCP or HTTP on the same address and port (entrypoints win: they carry traffic), or
 * - the health check of an older Service (creationTimestamp, then `namespace/name`) wants the same address and port.
 * The API server allocates healthCheckNodePorts from the node-port range, so this only happens with hand-written
 * objects or a LoadBalancer `port` inside that range.
 */
import type { Service } from "../kube/objects.ts";
import { claimPort, compareRank, type Rank } from "./claims.ts";
import type { ClaimIndex } from "./conflicts.ts";
import { countLocalReady, type SliceInfo } from "./endpoints.ts";
import type { ServiceCommon } from "./entrypoint.ts";
import { sameHealthCheck } from "./equal.ts";
import { type BuildContext, nodePortList } from "./prepared-options.ts";
import type { HealthCheckService, ModelError } from "./types.ts";

/** A healthCheckNodePort server a Service asks for, before conflicts with listeners are resolved. */
export interface HealthCandidate {
  readonly check: HealthCheckService;
  /** Who wins when two health checks want the same port (older Service first). */
  readonly rank: Rank;
}

/**
 * The health check `service` asks for, or undefined (reported when externalTrafficPolicy is Local without a
 * `healthCheckNodePort`). `previous` (the Service's last one) is returned when it says the same.
 */
export function healthCandidate(
  service: Service,
  common: ServiceCommon,
  ctx: BuildContext,
  infos: readonly SliceInfo[],
  previous: HealthCandidate | undefined,
): HealthCandidate | undefined {
  const spec = service.spec;
  if (spec.type !== "LoadBalancer" || (spec.externalTrafficPolicy ?? "Cluster") !== "Local") return undefined;
  const port = spec.healthCheckNodePort;
  if (port === undefined || port === 0) {
    common.report("externalTrafficPolicy is Local but healthCheckNodePort is not set: no health check is served");
    return undefined;
  }
  const check: HealthCheckService = {
    namespace: common.namespace,
    name: common.name,
    port,
    addresses: nodePortList(service, ctx.prepared),
    localEndpoints: countLocalReady(infos, ctx.nodeName),
  };
  const rank: Rank = { created: common.created, service: common.key, type: 0, index: 0 };
  if (previous && sameHealthCheck(previous.check, check) && compareRank(previous.rank, rank) === 0) return previous;
  return Object.freeze({ check: Object.freeze(check), rank: Object.freeze(rank) });
}

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
