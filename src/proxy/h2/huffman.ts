/**
 * The HPACK Huffman code (RFC 7541 §5.2, Appendix B) for header strings.
 *
 * The code is canonical (codes of one length are consecutive, in symbol order, shorter lengths first), so the
 * table below holds only each symbol's code length; the codes are derived from it at load. Decoding is
 * table-driven, four bits at a time: the 256 internal nodes of the code tree are the states, and one lookup per
 * nibble gives the next state and the symbol completed on the way, if any (every code is at least 5 bits long, so
 * a nibble completes at most one). No bit-by-bit tree walk at run time.
 */

/** Code length in bits of each symbol: bytes 0..255, then EOS (256). RFC 7541 Appendix B. */
const LENGTHS = new Uint8Array([
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0..31
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 32..63
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 64..95
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 96..127
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 128..159
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 160..191
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 192..223
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 224..255
  30, // EOS
]);

const EOS = 256;

/** Code of each symbol, right-aligned (the low LENGTHS[sym] bits). */
const CODES = new Uint32Array(257);

/** Decoder transitions, indexed by state * 16 + nibble: next state (bits 0-7), flags, symbol (bits 16-23). */
const DECODE = new Uint32Array(256 * 16);
const EMIT = 0x100;
const FAIL = 0x200;

/**
 * 1 for the states a string may end in: the root (the last symbol ended on a byte boundary) and the nodes on the
 * all-ones path up to depth 7 (padding: the most significant bits of EOS, at most 7 of them).
 */
const ACCEPT = new Uint8Array(256);

{
  // Canonical codes: walk symbols by (length, symbol).
  const order = Array.from({ length: 257 }, (_, i) => i).sort((a, b) => LENGTHS[a]! - LENGTHS[b]! || a - b);
  let code = 0;
  let len = LENGTHS[order[0]!]!;
  for (let i = 0; i < order.length; i++) {
    const sym = order[i]!;
    if (i > 0) code = (code + 1) * 2 ** (LENGTHS[sym]! - len);
    len = LENGTHS[sym]!;
    CODES[sym] = code;
  }
  // The code tree: internal nodes 0..255 (0 is the root); a child >= 256 is the leaf of symbol child - 256.
  const child = new Int16Array(256 * 2).fill(-1);
  let nodes = 1;
  for (let sym = 0; sym <= EOS; sym++) {
    let node = 0;
    for (let bit = LENGTHS[sym]! - 1; bit > 0; bit--) {
      const slot = node * 2 + ((CODES[sym]! >>> bit) & 1);
      if (child[slot] === -1) child[slot] = nodes++;
      node = child[slot]!;
    }
    child[node * 2 + (CODES[sym]! & 1)] = 256 + sym;
  }
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let entry = 0;
      for (let bit = 3; bit >= 0; bit--) {
        const next = child[node * 2 + ((nibble >> bit) & 1)]!;
        if (next < 256) {
          node = next;
          continue;
        }
        if (next - 256 === EOS) {
          entry = FAIL;
          break;
        }
        entry = EMIT | ((next - 256) << 16);
        node = 0;
      }
      DECODE[state * 16 + nibble] = entry | node;
    }
  }
  let node = 0;
  ACCEPT[0] = 1;
  for (let depth = 1; depth <= 7; depth++) {
    node = child[node * 2 + 1]!;
    ACCEPT[node] = 1;
  }
}

/** {@link huffmanDecode}: the string holds the EOS symbol. */
export const HUFFMAN_EOS = -1;
/** {@link huffmanDecode}: the padding is longer than 7 bits or not all ones. */
export const HUFFMAN_BAD_PADDING = -2;

/**
 * Length in bytes of the Huffman coding of `s`, or -1 when `s` has a character above 255 (not a byte string).
 *
 * @example
 * huffmanLength("www.example.com"); // 12
 */
export function huffmanLength(s: string): number {
  let bits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 255) return -1;
    bits += LENGTHS[c]!;
  }
  return (bits + 7) >>> 3;
}

/**
 * Write the Huffman coding of the byte string `s` (every character below 256; see {@link huffmanLength}) into
 * `out` at `pos`, padded with ones; returns the position after it. `out` must have room for
 * `huffmanLength(s)` bytes.
 */
export function huffmanEncode(s: string, out: Uint8Array, pos: number): number {
  // `acc` holds the `n` pending bits (n < 8 between symbols); codes longer than 24 bits go in two parts so that
  // acc never holds more than 31 bits.
  let acc = 0;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let len = LENGTHS[c]!;
    let code = CODES[c]!;
    if (len > 24) {
      acc = (acc << (len - 16)) | (code >>> 16);
      n += len - 16;
      while (n >= 8) {
        n -= 8;
        out[pos++] = acc >>> n;
      }
      acc &= (1 << n) - 1;
      len = 16;
      code &= 0xffff;
    }
    acc = (acc << len) | code;
    n += len;
    while (n >= 8) {
      n -= 8;
      out[pos++] = acc >>> n;
    }
    acc &= (1 << n) - 1;
  }
  if (n > 0) out[pos++] = (acc << (8 - n)) | (0xff >>> n);
  return pos;
}

/**
 * Decode the Huffman-coded src[start..end) into `out` at 0; returns the number of bytes written, or
 * {@link HUFFMAN_EOS} / {@link HUFFMAN_BAD_PADDING} for an invalid coding (RFC 7541 §5.2). `out` must have
 * room for `((end - start) * 8) / 5` bytes (the shortest code is 5 bits).
 *
 * @example
 * const out = new Uint8Array(32);
 * const n = huffmanDecode(Uint8Array.of(0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff), 0, 12, out);
 * // out[0..n) is "www.example.com"
 */
export function huffmanDecode(src: Uint8Array, start: number, end: number, out: Uint8Array): number {
  let state = 0;
  let n = 0;
  for (let i = start; i < end; i++) {
    const b = src[i]!;
    let e = DECODE[(state << 4) | (b >> 4)]!;
    if ((e & (EMIT | FAIL)) !== 0) {
      if ((e & FAIL) !== 0) return HUFFMAN_EOS;
      out[n++] = e >>> 16;
    }
    e = DECODE[((e & 0xff) << 4) | (b & 15)]!;
    if ((e & (EMIT | FAIL)) !== 0) {
      if ((e & FAIL) !== 0) return HUFFMAN_EOS;
      out[n++] = e >>> 16;
    }
    state = e & 0xff;
  }
  return ACCEPT[state] === 1 ? n : HUFFMAN_BAD_PADDING;
}
