/**
 * IP address and CIDR helpers for the model: parse IPv4/IPv6 literals, print them in canonical form
 * (RFC 5952 for IPv6), detect the family, test CIDR membership. Pure; no runtime APIs.
 *
 * Like Go's `net.ParseIP` (which Kubernetes uses), an IPv4-mapped IPv6 literal (`::ffff:10.0.0.1`)
 * is an IPv4 address, and IPv4 octets with leading zeros are rejected (they are ambiguous: octal or decimal).
 */

/** 4 for IPv4, 6 for IPv6. */
export type IPFamily = 4 | 6;

/** A parsed IP address. */
export interface ParsedIP {
  readonly family: IPFamily;
  /** 4 bytes for IPv4 (also for IPv4-mapped IPv6 input), 16 for IPv6. */
  readonly bytes: Uint8Array;
  /** IPv6 zone (`fe80::1%eth0` -> `eth0`), when given. */
  readonly zone?: string | undefined;
}

/** A parsed CIDR; `bytes` has the host bits cleared. */
export interface ParsedCidr {
  readonly family: IPFamily;
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

function parseIPv4Bytes(s: string, out: Uint8Array, offset: number): boolean {
  let octet = 0;
  let digits = 0;
  let index = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46; /* virtual trailing "." */
    if (c === 46) {
      if (digits === 0 || index > 3) return false;
      out[offset + index++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return false; /* leading zero */
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return false;
    } else {
      return false;
    }
  }
  return index === 4;
}

function parseIPv6Bytes(s: string, out: Uint8Array): boolean {
  if (s.length < 2) return false;
  const gap = s.indexOf("::");
  if (gap !== -1 && s.indexOf("::", gap + 1) !== -1) return false;
  const head = gap === -1 ? s : s.slice(0, gap);
  const tail = gap === -1 ? "" : s.slice(gap + 2);
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === "" ? [] : tail.split(":");
  const words: number[] = [];
  const all = [...headGroups, ...tailGroups];
  let dottedTail = false;
  for (let i = 0; i < all.length; i++) {
    const group = all[i] as string;
    if (group.includes(".")) {
      /* only the last group of the whole address may be dotted (not "1.2.3.4::") */
      if (i !== all.length - 1 || (gap !== -1 && i < headGroups.length)) return false;
      const v4 = new Uint8Array(4);
      if (!parseIPv4Bytes(group, v4, 0)) return false;
      dottedTail = true;
      continue;
    }
    if (group.length === 0 || group.length > 4 || !/^[0-9a-fA-F]+$/.test(group)) return false;
    words.push(Number.parseInt(group, 16));
  }
  const groupCount = words.length + (dottedTail ? 2 : 0);
  if (gap === -1 ? groupCount !== 8 : groupCount > 7) return false;
  const headWords = headGroups.length;
  const tailWords = tailGroups.length - (dottedTail ? 1 : 0);
  out.fill(0);
  for (let i = 0; i < headWords && i < words.length; i++) {
    const w = words[i] as number;
    out[i * 2] = w >> 8;
    out[i * 2 + 1] = w & 0xff;
  }
  const tailEnd = dottedTail ? 12 : 16;
  for (let i = 0; i < tailWords; i++) {
    const w = words[headWords + i] as number;
    const at = tailEnd - (tailWords - i) * 2;
    out[at] = w >> 8;
    out[at + 1] = w & 0xff;
  }
  if (dottedTail) {
    const last = all[all.length - 1] as string;
    parseIPv4Bytes(last, out, 12);
  }
  return true;
}

function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Parse a dotted-quad IPv4 literal into its 32-bit value (unsigned), or -1 when `s` is not one. The fast
 * path for endpoint addresses: no allocation, and a valid input is already canonical text.
 */
export function parseIPv4Number(s: string): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  const n = s.length;
  if (n < 7 || n > 15) return -1;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return -1;
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return -1;
    } else {
      return -1;
    }
  }
  if (digits === 0 || dots !== 3) return -1;
  return value * 256 + octet;
}

/**
 * Parse an IPv4 or IPv6 literal (an IPv6 literal may carry a `%zone`). IPv4-mapped IPv6 becomes IPv4.
 * Returns undefined when `s` is not an IP literal (no brackets, no ports, no CIDR suffix).
 *
 * @example parseIP("::ffff:10.0.0.1") // { family: 4, bytes: [10, 0, 0, 1] }
 */
export function parseIP(s: string): ParsedIP | undefined {
  if (s.includes(":")) {
    let zone: string | undefined;
    let addr = s;
    const pct = s.indexOf("%");
    if (pct !== -1) {
      zone = s.slice(pct + 1);
      addr = s.slice(0, pct);
      if (zone === "" || zone.includes("%")) return undefined;
    }
    const bytes = new Uint8Array(16);
    if (!parseIPv6Bytes(addr, bytes)) return undefined;
    if (isV4Mapped(bytes)) return zone === undefined ? { family: 4, bytes: bytes.slice(12) } : undefined;
    return zone === undefined ? { family: 6, bytes } : { family: 6, bytes, zone };
  }
  const bytes = new Uint8Array(4);
  return parseIPv4Bytes(s, bytes, 0) ? { family: 4, bytes } : undefined;
}

/** Print a parsed address: dotted quad, or RFC 5952 IPv6 (lowercase, longest zero run compressed). */
export function formatIP(ip: ParsedIP): string {
  const b = ip.bytes;
  if (ip.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i] as number) << 8) | (b[i + 1] as number));
  let bestStart = -1;
  let bestLen = 1; /* RFC 5952: a single zero group is not compressed */
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  const text =
    bestStart === -1
      ? hex(words)
      : `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
  return ip.zone === undefined ? text : `${text}%${ip.zone}`;
}

/**
 * The canonical text of an IP literal, or undefined when it is not one.
 *
 * @example canonicalIP("2001:DB8:0:0:0:0:0:1") // "2001:db8::1"
 */
export function canonicalIP(s: string): string | undefined {
  const ip = parseIP(s);
  return ip && formatIP(ip);
}

/** The family of an IP literal (4 or 6), or undefined when it is not one. `::ffff:a.b.c.d` is 4. */
export function ipFamily(s: string): IPFamily | undefined {
  return parseIP(s)?.family;
}

/** Whether `s` is an IPv4 or IPv6 literal. */
export function isIP(s: string): boolean {
  return parseIP(s) !== undefined;
}

/**
 * A string that sorts IP addresses numerically, IPv4 before IPv6 (`"4" + hex` / `"6" + hex` + zone).
 * Used to order endpoints and listen addresses deterministically.
 */
export function ipSortKey(ip: ParsedIP): string {
  let key = ip.family === 4 ? "4" : "6";
  for (const byte of ip.bytes) key += byte < 16 ? `0${byte.toString(16)}` : byte.toString(16);
  return ip.zone === undefined ? key : `${key}%${ip.zone}`;
}

/** Compare two IP literals numerically (IPv4 first); non-IPs sort last, by text. */
export function compareIP(a: string, b: string): number {
  const pa = parseIP(a);
  const pb = parseIP(b);
  if (!pa || !pb) return pa ? -1 : pb ? 1 : a < b ? -1 : a > b ? 1 : 0;
  const ka = ipSortKey(pa);
  const kb = ipSortKey(pb);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/**
 * Parse `address/prefix`. Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`, as Go's ParseCIDR does);
 * an IPv4-mapped IPv6 CIDR with a prefix of at least 96 becomes the IPv4 CIDR. Undefined when invalid.
 *
 * @example parseCidr("192.168.0.0/16") // { family: 4, prefix: 16, bytes: [192, 168, 0, 0] }
 */
export function parseCidr(s: string): ParsedCidr | undefined {
  const slash = s.indexOf("/");
  if (slash === -1) return undefined;
  const prefixText = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) return undefined;
  let prefix = Number(prefixText);
  const addrText = s.slice(0, slash);
  if (addrText.includes("%")) return undefined;
  let ip = parseIP(addrText);
  if (!ip) return undefined;
  if (ip.family === 4 && addrText.includes(":")) {
    /* IPv4-mapped IPv6 form: the prefix counts IPv6 bits */
    if (prefix > 128) return undefined;
    if (prefix < 96) {
      const bytes = new Uint8Array(16);
      bytes[10] = 0xff;
      bytes[11] = 0xff;
      bytes.set(ip.bytes, 12);
      ip = { family: 6, bytes };
    } else {
      prefix -= 96;
    }
  }
  const bits = ip.family === 4 ? 32 : 128;
  if (prefix > bits) return undefined;
  const bytes = ip.bytes.slice();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    bytes[i] = (bytes[i] as number) & ((0xff << (8 - keep)) & 0xff);
  }
  return { family: ip.family, bytes, prefix };
}

/** Whether the CIDR contains the address (same family only; IPv4-mapped input counts as IPv4). */
export function cidrContains(cidr: ParsedCidr, ip: ParsedIP): boolean {
  if (cidr.family !== ip.family) return false;
  let remaining = cidr.prefix;
  for (let i = 0; remaining > 0; i++, remaining -= 8) {
    const keep = Math.min(8, remaining);
    const mask = (0xff << (8 - keep)) & 0xff;
    if (((ip.bytes[i] as number) & mask) !== cidr.bytes[i]) return false;
  }
  return true;
}

/** Print a parsed CIDR canonically (`10.0.0.0/8`, `fd00::/8`). */
export function formatCidr(cidr: ParsedCidr): string {
  return `${formatIP({ family: cidr.family, bytes: cidr.bytes })}/${cidr.prefix}`;
}
