/**
 * loadBalancerSourceRanges as a check the listeners run when a connection opens (or a UDP flow
 * starts): the CIDRs are parsed once per entrypoint change, and a source is allowed when any range
 * contains it. Pure; `source-admission.ts` runs it on live listeners, counting and logging refusals.
 */
import { cidrContains, type ParsedCidr, parseCidr, parseIP } from "../model/net.ts";
import type { Entrypoint } from "../model/types.ts";

/** The parsed source ranges of one entrypoint, plus its refusal counter. */
export interface SourceGuard {
  readonly entrypointKey: string;
  /** `sourceRanges` joined with `,`: a guard is reused while this is unchanged. */
  readonly source: string;
  readonly ranges: readonly ParsedCidr[];
  /** Entries that are not CIDRs; they allow nothing. */
  readonly invalid: readonly string[];
  /** Connections and datagrams refused so far. */
  refused: number;
}

/**
 * The guard for `entrypoint`, or undefined when it has no source ranges (everything is allowed).
 * Returns `previous` itself when its ranges are the same (no parsing); otherwise a new guard that
 * keeps `previous`'s counter. An entrypoint whose every entry is invalid allows no source (fails closed).
 *
 * @example sourceGuard(lb)?.ranges.length // 2 for sourceRanges ["10.0.0.0/8", "fd00::/8"]
 */
export function sourceGuard(entrypoint: Entrypoint, previous?: SourceGuard): SourceGuard | undefined {
  const list = entrypoint.sourceRanges;
  if (list === undefined || list.length === 0) return undefined;
  const source = list.join(",");
  if (previous !== undefined && previous.source === source && previous.entrypointKey === entrypoint.key) return previous;
  const ranges: ParsedCidr[] = [];
  const invalid: string[] = [];
  for (const entry of list) {
    const cidr = parseCidr(entry.trim());
    if (cidr === undefined) invalid.push(entry);
    else ranges.push(cidr);
  }
  return { entrypointKey: entrypoint.key, source, ranges, invalid, refused: previous?.refused ?? 0 };
}

/**
 * Whether `address` (as sockets report it; `::ffff:a.b.c.d` counts as IPv4) is inside one of the guard's ranges.
 *
 * @example sourceAllowed(guard, "::ffff:127.0.0.1") // true when the ranges include 127.0.0.0/8
 */
export function sourceAllowed(guard: SourceGuard, address: string): boolean {
  const ip = parseIP(address);
  if (ip === undefined) return false;
  for (const cidr of guard.ranges) if (cidrContains(cidr, ip)) return true;
  return false;
}
