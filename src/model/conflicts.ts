/**
 * Listener conflicts: two entrypoints that want the same (address, port, tcp|udp). They are resolved in
 * the model, not by bind order: the claimant with the best {@link Rank} (the older Service) wins every
 * contested claim; an entrypoint that loses any claim gets `error` set and is not bound. Each claim is
 * decided on its own (a loser still holds its rank on its other claims), so a change never cascades.
 */
import { type claimPort, compareRank, type Exposure } from "./claims.ts";
import { sameApartFromError } from "./equal.ts";
import type { Entrypoint } from "./types.ts";

/** Claimants per (claim, address), best rank first (a claim is a {@link claimPort} number). Used whole by the build, kept up to date by the store. */
export class ClaimIndex {
  readonly #byPort = new Map<number, Map<string, Exposure[]>>();

  /** Insert `exposure` on each of its claims, in rank order; calls `touched` per claim. */
  add(exposure: Exposure, touched?: (claim: number, address: string) => void): void {
    const port = exposure.claimPort;
    let byAddress = this.#byPort.get(port);
    if (!byAddress) this.#byPort.set(port, (byAddress = new Map()));
    for (const address of exposure.entrypoint.addresses) {
      touched?.(port, address);
      const list = byAddress.get(address);
      if (!list) {
        byAddress.set(address, [exposure]);
        continue;
      }
      let at = list.length;
      while (at > 0 && compareRank((list[at - 1] as Exposure).rank, exposure.rank) > 0) at--;
      list.splice(at, 0, exposure);
    }
  }

  /** Remove the claims of `exposure` (matched by entrypoint key); calls `touched` per claim. */
  remove(exposure: Exposure, touched?: (claim: number, address: string) => void): void {
    const port = exposure.claimPort;
    const byAddress = this.#byPort.get(port);
    if (!byAddress) return;
    for (const address of exposure.entrypoint.addresses) {
      touched?.(port, address);
      const list = byAddress.get(address);
      if (!list) continue;
      const at = list.findIndex((e) => e.entrypoint.key === exposure.entrypoint.key);
      if (at !== -1) list.splice(at, 1);
      if (list.length === 0) byAddress.delete(address);
    }
    if (byAddress.size === 0) this.#byPort.delete(port);
  }

  /** Swap `old` for `next`, which has the same claims and rank. */
  replace(old: Exposure, next: Exposure): void {
    const byAddress = this.#byPort.get(old.claimPort);
    for (const address of old.entrypoint.addresses) {
      const list = byAddress?.get(address);
      const at = list ? list.indexOf(old) : -1;
      if (at !== -1) (list as Exposure[])[at] = next;
    }
  }

  /** Everyone claiming `address` with `claim` ({@link claimPort}), best first. */
  claimants(claim: number, address: string): readonly Exposure[] {
    return this.#byPort.get(claim)?.get(address) ?? [];
  }

  /**
   * The conflict error of `exposure`: for the first of its addresses (in order) where another entrypoint
   * ranks first; undefined when it wins every claim.
   */
  conflictError(exposure: Exposure): string | undefined {
    const { entrypoint } = exposure;
    const byAddress = this.#byPort.get(exposure.claimPort);
    if (!byAddress) return undefined;
    for (const address of entrypoint.addresses) {
      const winner = byAddress.get(address)?.[0];
      if (winner && winner.entrypoint.key !== entrypoint.key) return conflictMessage(entrypoint, winner.entrypoint, address);
    }
    return undefined;
  }
}

/** The message for an entrypoint that lost `address`:`port` to `winner`. */
export function conflictMessage(loser: Entrypoint, winner: Entrypoint, address: string): string {
  const by = winner.type === loser.type ? `"${winner.name}"` : `${winner.type} "${winner.name}"`;
  return `Port ${loser.port} on ${address} is already used by ${by}`;
}

/**
 * `base` with `error` set (or `base` itself without an error). Reuses `previous` when it is already that.
 */
export function withError(base: Entrypoint, error: string | undefined, previous?: Entrypoint): Entrypoint {
  if (error === undefined) return base;
  if (previous && previous.error === error && sameApartFromError(previous, base)) return previous;
  return Object.freeze({ ...base, error });
}
