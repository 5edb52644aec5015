/**
 * What an entrypoint claims on the host, and who wins a claim: the {@link Rank} of a claimant, the one encoding of
 * a claim (port and transport as one number: {@link claimPort}) and the {@link Exposure} that carries both.
 * The claim index and the conflict errors are in conflicts.ts; health check ports claim too (service-health.ts).
 */
import type { Entrypoint, EntrypointProtocol, EntrypointType } from "./types.ts";

/**
 * Priority of a listener claim: the older Service wins (creationTimestamp, then `namespace/name`); within
 * one Service, NodePort before LoadBalancer (node ports are allocated cluster-wide by the API server), then
 * the order of `spec.ports`.
 */
export interface Rank {
  /** creationTimestamp in ms since the epoch; `Infinity` when missing or unparsable (newest). */
  readonly created: number;
  readonly service: string;
  readonly type: 0 | 1;
  readonly index: number;
}

/** {@link Rank.type} of each entrypoint type: NodePort first. */
export const TYPE_RANK: Readonly<Record<EntrypointType, 0 | 1>> = { NodePort: 0, LoadBalancer: 1 };

/** Orders ranks: negative when `a` wins over `b`. */
export function compareRank(a: Rank, b: Rank): number {
  if (a.created !== b.created) return a.created < b.created ? -1 : 1;
  if (a.service !== b.service) return a.service < b.service ? -1 : 1;
  if (a.type !== b.type) return a.type - b.type;
  return a.index - b.index;
}

/**
 * The port and transport an entrypoint claims on each of its addresses, as one number: `port * 2`, plus 1
 * for UDP. Two entrypoints conflict when they share an address and this number. A health check claims
 * `claimPort(port, "tcp")`.
 *
 * @example
 * claimPort(80, "http"); // 160, as claimPort(80, "tcp")
 * claimPort(53, "udp"); // 107
 */
export function claimPort(port: number, protocol: EntrypointProtocol): number {
  return port * 2 + (protocol === "udp" ? 1 : 0);
}

/** The TCP port of a {@link claimPort} number, or undefined when it is a UDP claim. */
export function tcpPortOfClaim(claim: number): number | undefined {
  return claim % 2 === 0 ? claim / 2 : undefined;
}

/** One entrypoint of a Service with what it claims, before conflicts are resolved. */
export interface Exposure {
  /** The entrypoint without a conflict error; it claims {@link claimPort} on each of its addresses. */
  readonly entrypoint: Entrypoint;
  readonly rank: Rank;
  readonly claimPort: number;
}
