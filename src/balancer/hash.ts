/**
 * The hash of the consistent-hash balancers: MurmurHash3 (x86, 32-bit) over the UTF-16LE code units of a
 * string, read straight from the string (no encoding, no allocation). For ASCII keys (addresses, most header
 * values) it is the murmur3 of the bytes interleaved with zero bytes: a fixed, well-mixed 32-bit function.
 */

/**
 * MurmurHash3_x86_32 of `s` from index `start` (UTF-16LE code units), with `seed`. Unsigned 32-bit result.
 *
 * @example
 * murmur3("10.0.0.1:8080"); // a stable unsigned 32-bit number
 * murmur3("::ffff:192.0.2.1", 0, 7) === murmur3("192.0.2.1"); // true: hash a suffix without slicing
 */
export function murmur3(s: string, seed = 0, start = 0): number {
  let h = seed | 0;
  const len = s.length - start;
  const pairsEnd = start + (len & ~1);
  let i = start;
  for (; i < pairsEnd; i += 2) {
    let k = (s.charCodeAt(i) & 0xffff) | (s.charCodeAt(i + 1) << 16);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  if ((len & 1) !== 0) {
    let k = s.charCodeAt(i) & 0xffff;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= len * 2;
  return fmix32(h);
}

/** murmur3's finaliser: every input bit affects every output bit. Unsigned 32-bit result. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The hash of a pick's key: `hashKey` when set and not empty, else the client address, an IPv4-mapped IPv6
 * address counting as the IPv4 address (as ClientIP affinity does).
 */
export function pickHash(hashKey: string | undefined, clientAddress: string): number {
  if (hashKey !== undefined && hashKey !== "") return murmur3(hashKey);
  const mapped = clientAddress.startsWith("::ffff:") && clientAddress.includes(".");
  return murmur3(clientAddress, 0, mapped ? 7 : 0);
}
