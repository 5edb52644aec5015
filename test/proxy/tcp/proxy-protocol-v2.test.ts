/**
 * PROXY protocol v2 towards the upstream: the exact header bytes for IPv4 and IPv6 clients, ahead of the
 * client's bytes (also those sent before the upstream connected), once per connection even after a retry.
 */
import { describe, expect, test } from "bun:test";
import type { Entrypoint } from "../../../src/model/types.ts";
import { createTcpProxy } from "../../../src/proxy/tcp/index.ts";
import { parseIpv6, proxyV2Header } from "../../../src/proxy/tcp/proxy-protocol.ts";
import { defaultProxyOptions } from "../../../src/proxy/types.ts";
import type { RouteRef } from "../../../src/routes/types.ts";
import { rt } from "../../../src/runtime/index.ts";
import type { TcpSocket } from "../../../src/runtime/types.ts";
import { endpoint, entrypoint, route } from "../../support/entrypoints.ts";
import { REFUSED_PORT } from "../../support/ports.ts";
import { connectClient } from "../../support/tcp-peers.ts";
import { waitFor } from "../../support/wait.ts";

/** A parsed PROXY v2 header (a port of the spec's section 2.2 reference parser, TCP only). */
interface ProxyHeader {
  readonly command: "PROXY" | "LOCAL";
  readonly family: "TCP4" | "TCP6";
  readonly source: string;
  readonly sourcePort: number;
  readonly destination: string;
  readonly destinationPort: number;
  /** Header length in bytes. */
  readonly length: number;
}

const SIG = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/** Parse a v2 header at the start of `b`; undefined while incomplete; throws on anything malformed. */
function parseProxyV2(b: Uint8Array): ProxyHeader | undefined {
  if (b.length < 16) return undefined;
  SIG.forEach((x, i) => {
    if (b[i] !== x) throw new Error(`Bad signature byte ${i}: ${b[i]}`);
  });
  const verCmd = b[12]!;
  if (verCmd >> 4 !== 2) throw new Error(`Bad version: ${verCmd >> 4}`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) throw new Error(`Bad command: ${cmd}`);
  const fam = b[13]!;
  const len = (b[14]! << 8) | b[15]!;
  if (b.length < 16 + len) return undefined;
  const dv = new DataView(b.buffer, b.byteOffset + 16, len);
  if (fam === 0x11) {
    if (len < 12) throw new Error(`Short IPv4 address block: ${len}`);
    const ip = (o: number) => [0, 1, 2, 3].map((i) => dv.getUint8(o + i)).join(".");
    return { command: cmd === 1 ? "PROXY" : "LOCAL", family: "TCP4", source: ip(0), destination: ip(4), sourcePort: dv.getUint16(8), destinationPort: dv.getUint16(10), length: 16 + len };
  }
  if (fam === 0x21) {
    if (len < 36) throw new Error(`Short IPv6 address block: ${len}`);
    const ip = (o: number) => Array.from({ length: 8 }, (_, i) => dv.getUint16(o + i * 2).toString(16).padStart(4, "0")).join(":");
    return { command: cmd === 1 ? "PROXY" : "LOCAL", family: "TCP6", source: ip(0), destination: ip(16), sourcePort: dv.getUint16(32), destinationPort: dv.getUint16(34), length: 16 + len };
  }
  throw new Error(`Unexpected family/transport 0x${fam.toString(16)}`);
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const port16 = (p: number) => p.toString(16).padStart(4, "0");

/** An upstream that records every byte of each connection. */
function recordingUpstream(hostname = "127.0.0.1") {
  const conns: { bytes: Uint8Array }[] = [];
  const listener = rt.listenTcp<{ bytes: Uint8Array }>({
    hostname,
    port: 0,
    handlers: {
      open(s) {
        s.data = { bytes: new Uint8Array(0) };
        conns.push(s.data);
      },
      data(s: TcpSocket<{ bytes: Uint8Array }>, chunk) {
        const next = new Uint8Array(s.data.bytes.length + chunk.length);
        next.set(s.data.bytes);
        next.set(chunk, s.data.bytes.length);
        s.data.bytes = next;
      },
    },
  });
  return { port: listener.port, conns, async [Symbol.asyncDispose]() { listener.stop(true); } };
}

function proxyV2(ports: readonly number[], hostname = "127.0.0.1", upstreamHost = "127.0.0.1") {
  const ep: Entrypoint = { ...entrypoint({ endpoints: ports.map((p) => endpoint(p, upstreamHost)), addresses: [hostname] }), proxyProtocol: "v2" };
  const ref: RouteRef = { current: route(ep) };
  const proxy = createTcpProxy(ref, { ...defaultProxyOptions, connectTimeoutMs: 1_000 });
  const listener = rt.listenTcp({ hostname, port: 0, handlers: proxy.handlers });
  return { port: listener.port, async [Symbol.asyncDispose]() { listener.stop(true); proxy.closeAll(); } };
}

describe("PROXY protocol v2 to the upstream", () => {
  test("IPv4 client: the exact header, then the client's bytes intact", async () => {
    await using up = recordingUpstream();
    await using px = proxyV2([up.port]);
    await using c = await connectClient(rt, px.port);
    // Sent at once: most of it arrives before the upstream connection is up.
    const payload = new Uint8Array(512 * 1024).map((_, i) => (i * 31 + 7) & 0xff);
    await c.send(payload);
    await waitFor(() => up.conns[0] !== undefined && up.conns[0].bytes.length >= 28 + payload.length, { what: "header and payload at the upstream" });
    const got = up.conns[0]!.bytes;
    const cport = c.socket.localPort;
    expect(hex(got.subarray(0, 28))).toBe(`0d0a0d0a000d0a515549540a2111000c7f0000017f000001${port16(cport)}${port16(px.port)}`);
    expect(parseProxyV2(got)).toEqual({ command: "PROXY", family: "TCP4", source: "127.0.0.1", sourcePort: cport, destination: "127.0.0.1", destinationPort: px.port, length: 28 });
    expect(got.length).toBe(28 + payload.length);
    expect(Buffer.from(got.subarray(28)).equals(Buffer.from(payload))).toBe(true);
  });

  test("IPv6 client on ::1: a TCP6 header with 16-byte addresses", async () => {
    await using up = recordingUpstream("::1");
    await using px = proxyV2([up.port], "::1", "::1");
    await using c = await connectClient(rt, px.port, { hostname: "::1" });
    await c.send("hello over v6");
    await waitFor(() => (up.conns[0]?.bytes.length ?? 0) >= 52 + 13, { what: "header and payload at the upstream" });
    const got = up.conns[0]!.bytes;
    const cport = c.socket.localPort;
    const loop6 = "00000000000000000000000000000001";
    expect(hex(got.subarray(0, 52))).toBe(`0d0a0d0a000d0a515549540a21210024${loop6}${loop6}${port16(cport)}${port16(px.port)}`);
    const h = parseProxyV2(got)!;
    expect(h).toEqual({ command: "PROXY", family: "TCP6", source: "0000:0000:0000:0000:0000:0000:0000:0001", sourcePort: cport, destination: "0000:0000:0000:0000:0000:0000:0000:0001", destinationPort: px.port, length: 52 });
    expect(new TextDecoder().decode(got.subarray(52))).toBe("hello over v6");
  });

  test("after a refused endpoint, the endpoint that accepts gets exactly one header", async () => {
    await using up = recordingUpstream();
    await using px = proxyV2([REFUSED_PORT, up.port]);
    await using c = await connectClient(rt, px.port);
    await c.send("payload");
    await waitFor(() => (up.conns[0]?.bytes.length ?? 0) >= 28 + 7, { what: "the upstream's bytes" });
    const got = up.conns[0]!.bytes;
    expect(parseProxyV2(got)!.sourcePort).toBe(c.socket.localPort);
    expect(new TextDecoder().decode(got.subarray(28))).toBe("payload");
  });
});

describe("proxyV2Header", () => {
  test.each([
    ["IPv4-mapped client and listener are sent as TCP4", "::ffff:192.0.2.7", "::ffff:10.0.0.1", "2111000cc00002070a000001"],
    ["an IPv4 client of an IPv6 listener: both as IPv6, the IPv4 one mapped", "192.0.2.7", "2001:db8::1", `21210024${"00000000000000000000ffffc0000207"}${"20010db8000000000000000000000001"}`],
    ["an IPv6 address with a zone and an embedded IPv4 tail", "fe80::1%eth0", "::ffff:1.2.3.4", `21210024${"fe800000000000000000000000000001"}${"00000000000000000000ffff01020304"}`],
  ])("%s", (_case, src, dst, expected) => {
    expect(hex(proxyV2Header(src, 0x1234, dst, 0x5678)).slice(24)).toBe(`${expected}12345678`);
  });

  test("a non-IP address is an error naming it", () => {
    expect(() => proxyV2Header("localhost", 1, "127.0.0.1", 2)).toThrow('Cannot build a PROXY protocol header: "localhost" is not an IP address');
  });

  test.each(["1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "::1.2.3", "g::"])("parseIpv6 rejects %s", (bad) => {
    expect(parseIpv6(bad)).toBeUndefined();
  });
});
