/**
 * The load-balancer address pool of `--lb-pool` (MetalLB style): parsed CIDRs, membership, and the
 * free addresses in order. Pure; addresses are handled as bigints so IPv6 pools of any size work.
 *
 * In an IPv4 CIDR of /30 or wider, the network and broadcast addresses are never handed out (some
 * clients and routers drop traffic to them); every address of a /31 or /32, and of an IPv6 CIDR, is usable.
 */
import { formatCidr, formatIP, parseCidr, parseIP, type IPFamily } from "../model/net.ts";

/** One CIDR of the pool, with its usable range. */
export interface PoolRange {
  /** Canonical text, e.g. `192.0.2.0/28`. */
  readonly cidr: string;
  readonly family: IPFamily;
  /** First and last usable address. */
  readonly first: bigint;
  readonly last: bigint;
}

/** A parsed pool: ranges in the order given. */
export interface Pool {
  readonly ranges: readonly PoolRange[];
  /** Usable addresses in all ranges. */
  readonly size: bigint;
}

/** A pool entry is not a CIDR, or the pool is empty. */
export class PoolError extends Error {
  override name = "PoolError";
}

/**
 * Parse the pool CIDRs (a bare IP is a pool of one address). Throws a {@link PoolError} naming the bad entry.
 *
 * @example parsePool(["192.0.2.0/30"]).size // 2n (.1 and .2)
 */
export function parsePool(cidrs: readonly string[]): Pool {
  const ranges: PoolRange[] = [];
  for (const raw of cidrs) {
    const text = raw.trim();
    if (text === "") continue;
    const ip = text.includes("/") ? undefined : parseIP(text);
    const cidr = ip ? parseCidr(`${text}/${ip.family === 4 ? 32 : 128}`) : parseCidr(text);
    if (!cidr) throw new PoolError(`Invalid load balancer pool entry "${text}": expected a CIDR such as 192.0.2.0/28 or 2001:db8::/120`);
    const bits = cidr.family === 4 ? 32 : 128;
    const base = toBig(cidr.bytes);
    const span = 1n << BigInt(bits - cidr.prefix);
    const trim = cidr.family === 4 && cidr.prefix <= 30 ? 1n : 0n;
    const range: PoolRange = { cidr: formatCidr(cidr), family: cidr.family, first: base + trim, last: base + span - 1n - trim };
    const overlap = ranges.find((r) => r.family === range.family && r.first <= range.last && range.first <= r.last);
    if (overlap) throw new PoolError(`Invalid load balancer pool entry "${text}": it overlaps "${overlap.cidr}"`);
    ranges.push(range);
  }
  if (ranges.length === 0) throw new PoolError("Invalid load balancer pool: it has no CIDR");
  return { ranges, size: ranges.reduce((n, r) => n + (r.last - r.first + 1n), 0n) };
}

/** The canonical text of `ip` when it is a usable pool address, else undefined. */
export function poolAddress(pool: Pool, ip: string): string | undefined {
  const parsed = parseIP(ip);
  if (!parsed || parsed.zone !== undefined) return undefined;
  const n = toBig(parsed.bytes);
  return pool.ranges.some((r) => r.family === parsed.family && r.first <= n && n <= r.last) ? formatIP(parsed) : undefined;
}

/**
 * The lowest usable address not in `taken` (a set or map of canonical texts), from the ranges of `family`
 * (any family when undefined), in pool order; undefined when every address is taken. Scans at most
 * `taken.size + 1` addresses per range, so a huge pool costs nothing extra.
 */
export function firstFree(pool: Pool, taken: { has(ip: string): boolean }, family?: IPFamily): string | undefined {
  for (const r of pool.ranges) {
    if (family !== undefined && r.family !== family) continue;
    for (let n = r.first; n <= r.last; n++) {
      const text = formatIP({ family: r.family, bytes: fromBig(n, r.family) });
      if (!taken.has(text)) return text;
    }
  }
  return undefined;
}

/** The pool as text for messages: `"192.0.2.0/30", "2001:db8::/126"`. */
export function describePool(pool: Pool): string {
  return pool.ranges.map((r) => `"${r.cidr}"`).join(", ");
}

function toBig(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function fromBig(n: bigint, family: IPFamily): Uint8Array {
  const bytes = new Uint8Array(family === 4 ? 4 : 16);
  for (let i = bytes.length - 1; i >= 0; i--) {
    bytes[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return bytes;
}
