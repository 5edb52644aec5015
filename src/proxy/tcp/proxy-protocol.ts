/**
 * PROXY protocol version 2 (haproxy's spec, section 2.2): the binary header a TCP entrypoint with
 * `kubegate.io/proxy-protocol: v2` sends to its upstream before any client byte, so the backend learns the
 * client's address (externalTrafficPolicy's source-IP preservation, for TCP).
 *
 * Layout: 12-byte signature, version/command `0x21` (v2, PROXY), family/transport (`0x11` TCP over IPv4,
 * `0x21` TCP over IPv6), address-block length (big endian), then source address, destination address,
 * source port, destination port. The source is the client; the destination is the listener's local address.
 * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as IPv4; when only one side is IPv4, both are sent as
 * IPv6 (the IPv4 one mapped).
 */

/** `\r\n\r\n\0\r\nQUIT\n`. */
export const PROXY_V2_SIGNATURE: Uint8Array = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);

/** Version 2, command PROXY. */
const VERSION_COMMAND = 0x21;
const TCP4 = 0x11;
const TCP6 = 0x21;

/** The 4 bytes of an IPv4 literal, or undefined. */
export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

/** The 16 bytes of an IPv6 literal (`::` compression, embedded IPv4, `%zone` ignored), or undefined. */
export function parseIpv6(text: string): Uint8Array | undefined {
  let s = text;
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const out = new Uint8Array(16);
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const head = groups(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1]!, true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const total = head.length + tail.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return undefined;
  for (let i = 0; i < head.length; i++) {
    out[i * 2] = head[i]! >> 8;
    out[i * 2 + 1] = head[i]! & 0xff;
  }
  const at = 8 - tail.length;
  for (let i = 0; i < tail.length; i++) {
    out[(at + i) * 2] = tail[i]! >> 8;
    out[(at + i) * 2 + 1] = tail[i]! & 0xff;
  }
  return out;
}

/** 16-bit groups of one side of `::`; the last group may be dotted IPv4 when `last`. */
function groups(s: string, last: boolean): number[] | undefined {
  if (s === "") return [];
  const out: number[] = [];
  const parts = s.split(":");
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (last && i === parts.length - 1 && p.includes(".")) {
      const v4 = parseIpv4(p);
      if (v4 === undefined) return undefined;
      out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
    out.push(parseInt(p, 16));
  }
  return out;
}

/** IPv4 bytes of an IPv4 literal or of an IPv4-mapped IPv6 literal, else undefined. */
function asIpv4(text: string): Uint8Array | undefined {
  if (!text.includes(":")) return parseIpv4(text);
  const v6 = parseIpv6(text);
  if (v6 === undefined) return undefined;
  for (let i = 0; i < 10; i++) if (v6[i] !== 0) return undefined;
  if (v6[10] !== 0xff || v6[11] !== 0xff) return undefined;
  return v6.subarray(12);
}

/** IPv6 bytes of any literal (IPv4 mapped). */
function asIpv6(text: string): Uint8Array | undefined {
  if (text.includes(":")) return parseIpv6(text);
  const v4 = parseIpv4(text);
  if (v4 === undefined) return undefined;
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(v4, 12);
  return out;
}

/**
 * The PROXY v2 header for a TCP connection from `source` to `destination` (address literals as the socket
 * reports them).
 *
 * @example
 * proxyV2Header("192.0.2.7", 51234, "10.0.0.1", 30080); // 28 bytes: signature, 0x21, 0x11, 0x000c, addresses, ports
 * @throws {Error} when an address is not an IP literal.
 */
export function proxyV2Header(source: string, sourcePort: number, destination: string, destinationPort: number): Uint8Array {
  const s4 = asIpv4(source);
  const d4 = asIpv4(destination);
  const v4 = s4 !== undefined && d4 !== undefined;
  const src = v4 ? s4 : asIpv6(source);
  const dst = v4 ? d4 : asIpv6(destination);
  if (src === undefined) throw new Error(`Cannot build a PROXY protocol header: "${source}" is not an IP address`);
  if (dst === undefined) throw new Error(`Cannot build a PROXY protocol header: "${destination}" is not an IP address`);
  const alen = src.length * 2 + 4;
  const out = new Uint8Array(16 + alen);
  out.set(PROXY_V2_SIGNATURE, 0);
  out[12] = VERSION_COMMAND;
  out[13] = v4 ? TCP4 : TCP6;
  out[14] = alen >> 8;
  out[15] = alen & 0xff;
  out.set(src, 16);
  out.set(dst, 16 + src.length);
  const p = 16 + src.length * 2;
  out[p] = sourcePort >> 8;
  out[p + 1] = sourcePort & 0xff;
  out[p + 2] = destinationPort >> 8;
  out[p + 3] = destinationPort & 0xff;
  return out;
}
