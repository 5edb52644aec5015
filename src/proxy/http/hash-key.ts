/**
 * The consistent-hash key of a request (`kubegate.io/hash-on: header:<name>` or `cookie:<name>`), read from
 * the head just parsed (the parser's scratch table, same turn). Absent or empty: undefined, and the
 * balancer hashes the client IP.
 */
import { cookieValue } from "./cookie.ts";
import { fields, latin1 } from "./parser.ts";
import { HASH_COOKIE, HASH_HEADER, type RouteSettings } from "./settings.ts";

/** Longer header values are cut to this many bytes. */
const MAX_KEY_BYTES = 1024;

/** The hash key of the request in `buf` (`fieldCount` fields) under `s`, or undefined. */
export function hashKey(buf: Uint8Array, fieldCount: number, s: RouteSettings): string | undefined {
  if (s.hashSource === HASH_HEADER) return headerValue(buf, fieldCount, s.hashName);
  if (s.hashSource === HASH_COOKIE) return cookieValue(buf, fieldCount, s.hashName);
  return undefined;
}

/** The first non-empty value of the field named `lower` (lowercase bytes), or undefined. */
export function headerValue(buf: Uint8Array, fieldCount: number, lower: Uint8Array): string | undefined {
  const n = lower.length;
  outer: for (let i = 0; i < fieldCount; i++) {
    const o = i * 5;
    const s = fields[o]!;
    if (fields[o + 1]! - s !== n) continue;
    for (let j = 0; j < n; j++) {
      const c = buf[s + j]!;
      if ((c >= 65 && c <= 90 ? c + 32 : c) !== lower[j]) continue outer;
    }
    const vs = fields[o + 2]!;
    const ve = fields[o + 3]!;
    if (ve > vs) return latin1(buf, vs, Math.min(ve, vs + MAX_KEY_BYTES));
  }
  return undefined;
}
