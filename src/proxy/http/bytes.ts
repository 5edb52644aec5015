/** Small byte helpers for the HTTP data path (no Buffer, no TextEncoder on the hot path). */

/** Encode a latin1/ASCII string (every char < 256) as bytes. */
export function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Write a latin1/ASCII string into `out` at `pos`; returns the position after it. */
export function putLatin1(out: Uint8Array, pos: number, s: string): number {
  for (let i = 0; i < s.length; i++) out[pos++] = s.charCodeAt(i);
  return pos;
}

/** Concatenate two byte arrays into a new one. */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Byte-wise equality of buf[s..e) and `b`. */
export function rangeEquals(buf: Uint8Array, s: number, e: number, b: Uint8Array): boolean {
  if (e - s !== b.length) return false;
  for (let i = 0; i < b.length; i++) if (buf[s + i] !== b[i]) return false;
  return true;
}

/**
 * Copy src[s..e) into dst at `pos`; returns the position after it. Short ranges are copied by a loop,
 * which is cheaper than creating a subarray view for `set`.
 */
export function copyRange(dst: Uint8Array, pos: number, src: Uint8Array, s: number, e: number): number {
  if (e - s <= 64) {
    while (s < e) dst[pos++] = src[s++]!;
    return pos;
  }
  dst.set(src.subarray(s, e), pos);
  return pos + (e - s);
}
