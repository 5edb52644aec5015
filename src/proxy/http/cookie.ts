/**
 * Reads one cookie from the request head just parsed (the parser's scratch table), without decoding any
 * other cookie: the affinity cookie, or the cookie a consistent-hash route keys on. Cookie fields are
 * parsed leniently, as browsers and servers do: several Cookie fields (HTTP/2 gateways split them), `;`
 * with or without spaces, whitespace around `=`, quoted values, pairs without `=` skipped. Cookie names
 * are case-sensitive (RFC 6265 section 5.4).
 */
import type { CookieAffinity } from "../../balancer/cookie.ts";
import type { Endpoint } from "../../model/types.ts";
import { F_COOKIE, fields, kinds, latin1 } from "./parser.ts";

const SP = 32;
const HTAB = 9;
const SEMI = 59;
const EQ = 61;
const DQUOTE = 34;

/** Longer values cannot be one of our tokens: not even decoded. */
const MAX_TOKEN_BYTES = 64;
/** Longer hash-key values are cut to this many bytes (still a fine key, bounded work). */
const MAX_KEY_BYTES = 1024;

/** Scan position of {@link nextCookie} and the range of the value it found (valid until the next call). */
const cur = { field: 0, pos: -1, vs: 0, ve: 0 };

/**
 * Find the next non-empty value of cookie `name`, resuming from {@link cur} (set `cur.field = 0, cur.pos = -1`
 * to start). True with `cur.vs`/`cur.ve` set (quotes removed), false when there is none left.
 */
function nextCookie(buf: Uint8Array, fieldCount: number, name: Uint8Array): boolean {
  const nlen = name.length;
  for (let i = cur.field; i < fieldCount; i++) {
    if (kinds[i] !== F_COOKIE) continue;
    const end = fields[i * 5 + 3]!;
    let p = cur.field === i && cur.pos >= 0 ? cur.pos : fields[i * 5 + 2]!;
    while (p < end) {
      while (p < end && (buf[p] === SEMI || buf[p] === SP || buf[p] === HTAB)) p++;
      const ns = p;
      while (p < end && buf[p] !== EQ && buf[p] !== SEMI) p++;
      if (p === end || buf[p] === SEMI) continue; // no "=": not a pair
      let ne = p;
      while (ne > ns && (buf[ne - 1] === SP || buf[ne - 1] === HTAB)) ne--;
      p++; // "="
      while (p < end && (buf[p] === SP || buf[p] === HTAB)) p++;
      let vs = p;
      while (p < end && buf[p] !== SEMI) p++;
      let ve = p;
      while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
      if (ne - ns !== nlen) continue;
      let same = true;
      for (let j = 0; j < nlen; j++) {
        if (buf[ns + j] !== name[j]) {
          same = false;
          break;
        }
      }
      if (!same) continue;
      if (ve - vs >= 2 && buf[vs] === DQUOTE && buf[ve - 1] === DQUOTE) {
        vs++;
        ve--;
      }
      if (ve === vs) continue;
      cur.field = i;
      cur.pos = p;
      cur.vs = vs;
      cur.ve = ve;
      return true;
    }
    cur.pos = -1;
  }
  cur.field = fieldCount;
  return false;
}

/**
 * The serving endpoint that the request's affinity cookie names, or undefined (no cookie, or no value that
 * maps to a serving endpoint). When the cookie appears several times, the first value that maps wins.
 * Must run in the same turn as the parse of the head in `buf` (`fieldCount` fields).
 */
export function cookieEndpoint(buf: Uint8Array, fieldCount: number, affinity: CookieAffinity): Endpoint | undefined {
  cur.field = 0;
  cur.pos = -1;
  while (nextCookie(buf, fieldCount, affinity.nameBytes)) {
    if (cur.ve - cur.vs > MAX_TOKEN_BYTES) continue;
    const ep = affinity.endpointFor(latin1(buf, cur.vs, cur.ve));
    if (ep !== undefined) return ep;
  }
  return undefined;
}

/**
 * The first non-empty value of cookie `name` in the request head just parsed (at most 1 KiB of it), or
 * undefined. Same turn as the parse.
 */
export function cookieValue(buf: Uint8Array, fieldCount: number, name: Uint8Array): string | undefined {
  cur.field = 0;
  cur.pos = -1;
  if (!nextCookie(buf, fieldCount, name)) return undefined;
  return latin1(buf, cur.vs, Math.min(cur.ve, cur.vs + MAX_KEY_BYTES));
}
