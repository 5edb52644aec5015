/**
 * `--trusted-proxies` end to end: the flag parsed as the CLI parses it, a started gateway, a client that
 * sends its own forwarding fields and a backend that reports what arrived. From a peer inside one of the
 * CIDRs the client's X-Forwarded-For is kept and appended to (and its X-Forwarded-Proto and Forwarded
 * kept); from any other peer, or with no CIDRs, they are dropped and replaced. A listener on `::` reached
 * over IPv4 sees the peer IPv4-mapped (`::ffff:127.0.0.1`), which must still match an IPv4 CIDR.
 */
import { describe, expect, test } from "bun:test";
import { startApiServer } from "../support/apiserver.ts";
import { startTestGateway } from "../support/gateway.ts";
import { freePort } from "../support/ports.ts";

/** The forwarding fields the backend received. */
interface Forwarded {
  readonly xff: string | null;
  readonly proto: string | null;
  readonly forwarded: string | null;
}

/**
 * A gateway started with `flags` in front of one HTTP backend, its NodePort on `hostAddress`; `request`
 * sends the client's own forwarding fields to 127.0.0.1 and returns what the backend saw.
 */
async function startForwarding(hostAddress: string, flags: readonly string[]) {
  const api = await startApiServer();
  const backend = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) =>
      Response.json({
        xff: req.headers.get("x-forwarded-for"),
        proto: req.headers.get("x-forwarded-proto"),
        forwarded: req.headers.get("forwarded"),
      } satisfies Forwarded),
  });
  const nodePort = await freePort(hostAddress);
  api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
  api.create({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "web", namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: {
      type: "NodePort",
      // Dual-stack, so a NodePort on the IPv6 host address `::` serves it too.
      ipFamilyPolicy: "PreferDualStack",
      ipFamilies: ["IPv4", "IPv6"],
      selector: { app: "web" },
      ports: [{ name: "http", port: 80, nodePort, appProtocol: "http" }],
    },
  });
  api.create({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "web-1", namespace: "e2e", labels: { "kubernetes.io/service-name": "web" } },
    addressType: "IPv4",
    ports: [{ name: "http", port: backend.port, protocol: "TCP" }],
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
  });
  const stopOthers = async () => {
    backend.stop(true);
    await api[Symbol.asyncDispose]();
  };
  const gw = await startTestGateway(api, ["--host-addresses", hostAddress, ...flags]).catch(async (err: unknown) => {
    await stopOthers();
    throw err;
  });
  return {
    /** GET through the gateway (over IPv4, from 127.0.0.1) with the client's own forwarding fields. */
    async request(): Promise<Forwarded> {
      const res = await fetch(`http://127.0.0.1:${nodePort}/`, {
        headers: { "x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https", forwarded: "for=203.0.113.7;proto=https" },
      });
      expect(res.status).toBe(200);
      return (await res.json()) as Forwarded;
    },
    async [Symbol.asyncDispose]() {
      await gw[Symbol.asyncDispose]();
      await stopOthers();
    },
  };
}

/** What the backend sees when the gateway trusts the peer: the client's fields, with the peer appended. */
const kept = (host: string): Forwarded => ({
  xff: "203.0.113.7, 127.0.0.1",
  proto: "https",
  forwarded: `for=203.0.113.7;proto=https, for=127.0.0.1;host="${host}";proto=http`,
});
/** What the backend sees when it does not: only what the gateway wrote. */
const replaced = (host: string): Forwarded => ({
  xff: "127.0.0.1",
  proto: "http",
  forwarded: `for=127.0.0.1;host="${host}";proto=http`,
});

describe("--trusted-proxies", () => {
  test("Bun reports an IPv4 peer of a listener on :: as IPv4-mapped (what the :: cases below rely on)", async () => {
    const peer = Promise.withResolvers<string>();
    const listener = Bun.listen({ hostname: "::", port: 0, socket: { open: (s) => (peer.resolve(s.remoteAddress), void s.end()), data() {} } });
    await using _listener = { [Symbol.asyncDispose]: async () => listener.stop(true) };
    const client = await Bun.connect({ hostname: "127.0.0.1", port: listener.port, socket: { data() {} } });
    await using _client = { [Symbol.asyncDispose]: async () => client.terminate() };
    expect(await peer.promise).toBe("::ffff:127.0.0.1");
  });

  test.each([
    { listener: "127.0.0.1", flags: ["--trusted-proxies", "127.0.0.0/8"], trusted: true },
    { listener: "127.0.0.1", flags: ["--trusted-proxies", "10.0.0.0/8,127.0.0.1/32"], trusted: true },
    { listener: "127.0.0.1", flags: [], trusted: false },
    { listener: "127.0.0.1", flags: ["--trusted-proxies", "10.0.0.0/8,127.0.0.2/32,::1/128"], trusted: false },
    { listener: "::", flags: ["--trusted-proxies", "127.0.0.1/32"], trusted: true },
    { listener: "::", flags: ["--trusted-proxies", "10.0.0.0/8"], trusted: false },
  ])("listener on $listener, flags $flags: trusted $trusted", async ({ listener, flags, trusted }) => {
    await using gw = await startForwarding(listener, flags);
    const got = await gw.request();
    const host = got.forwarded?.match(/host="([^"]+)"/)?.[1] ?? "";
    expect(host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(got).toEqual(trusted ? kept(host) : replaced(host));
  });
});
