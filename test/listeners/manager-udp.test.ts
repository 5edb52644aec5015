/**
 * UDP entrypoints through the listener manager, with real sockets: echo through a NodePort, endpoint
 * changes from snapshots, removal, bind failures, and TCP beside UDP on one port.
 */
import { describe, expect, test } from "bun:test";
import type { Entrypoint } from "../../src/model/types.ts";
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { makeUdpProxyFactory, type UdpProxyOptions } from "../../src/proxy/udp/index.ts";
import { defaultProxyOptions } from "../../src/proxy/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { listenerManager, type TestListenerOptions } from "../support/listeners.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";
import { connectClient, echoServer } from "../support/tcp-peers.ts";
import { freeUdpPort, udpClient, udpEcho } from "../support/udp-peers.ts";
import { waitFor } from "../support/wait.ts";

function manager(options: TestListenerOptions = {}) {
  const udp = makeUdpProxyFactory(rt.bindUdp);
  const proxyOptions: UdpProxyOptions = { ...defaultProxyOptions, udp: { idleTimeoutMs: 5_000 } };
  return listenerManager({ http: createTcpProxy, tcp: createTcpProxy, udp }, { drainGraceMs: 1_000, retryIntervalMs: 0, proxyOptions, ...options });
}

/** A port free for TCP and for UDP on 127.0.0.1 (a UDP-free port may be a TCP client's local port). */
async function freeBothPort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    try {
      (await rt.bindUdp({ hostname: "127.0.0.1", port, onMessage() {} })).close();
      await new Promise((r) => setTimeout(r, 0)); // Deno frees the port a task later
      return port;
    } catch {
      // Taken for UDP: try another.
    }
  }
  throw new Error("No port free for both TCP and UDP after 20 tries");
}

function udp(name: string, port: number, endpoints: readonly number[]): Entrypoint {
  return entrypoint({ name: `test/${name}:dns`, protocol: "udp", port, endpoints });
}

describe("ListenerManager with UDP entrypoints", () => {
  test("a datagram is echoed through a NodePort entrypoint; the status shows the flow", async () => {
    await using echo = await udpEcho(rt, { tag: "a" });
    const port = await freeUdpPort(rt);
    await using m = manager();
    m.apply(snapshot(udp("dns", port, [echo.port])));
    await m.settled();
    await using client = await udpClient(rt, port);
    expect(await client.exchange("query")).toBe("a:query");
    expect(client.lastFrom).toBe(`127.0.0.1:${port}`);
    expect(m.status()).toEqual([{ key: "NodePort/test/dns:dns", listeners: [{ address: "127.0.0.1", port, bound: true, flows: 1 }] }]);
    expect(m.counts()).toEqual({ bound: 1, failed: 0, draining: 0, connections: 0, flows: 1, refused: 0 });
  });

  test("snapshots change endpoints: new flows go to the new endpoint; a removed endpoint's flow moves", async () => {
    await using a = await udpEcho(rt, { tag: "a" });
    await using b = await udpEcho(rt, { tag: "b" });
    const port = await freeUdpPort(rt);
    await using m = manager();
    m.apply(snapshot(udp("dns", port, [a.port])));
    await m.settled();
    await using old = await udpClient(rt, port);
    expect(await old.exchange("1")).toBe("a:1");

    m.apply(snapshot(udp("dns", port, [b.port])));
    await using fresh = await udpClient(rt, port);
    expect(await fresh.exchange("2")).toBe("b:2");
    expect(await old.exchange("3")).toBe("b:3");
    expect(m.counts().flows).toBe(2);
  });

  test("a snapshot applied while the socket is binding is the route it serves", async () => {
    await using a = await udpEcho(rt, { tag: "a" });
    await using b = await udpEcho(rt, { tag: "b" });
    const port = await freeUdpPort(rt);
    await using m = manager();
    m.apply(snapshot(udp("dns", port, [a.port])));
    m.apply(snapshot(udp("dns", port, [b.port])));
    await m.settled();
    await using client = await udpClient(rt, port);
    expect(await client.exchange("x")).toBe("b:x");
  });

  test("a removed UDP entrypoint closes its socket at once", async () => {
    await using echo = await udpEcho(rt);
    const port = await freeUdpPort(rt);
    await using m = manager();
    m.apply(snapshot(udp("dns", port, [echo.port])));
    await m.settled();
    await using client = await udpClient(rt, port);
    await client.exchange("1");
    m.apply(snapshot());
    expect(m.status()).toEqual([]);
    expect(m.counts()).toEqual({ bound: 0, failed: 0, draining: 0, connections: 0, flows: 0, refused: 0 });
    const again = await rt.bindUdp({ hostname: "127.0.0.1", port, onMessage() {} });
    again.close();
  });

  test("a UDP port in use is an error on that entrypoint, bound once free", async () => {
    await using echo = await udpEcho(rt, { tag: "e" });
    const squatter = await rt.bindUdp({ hostname: "127.0.0.1", port: 0, onMessage() {} });
    const port = squatter.port;
    await using m = manager();
    const snap = snapshot(udp("dns", port, [echo.port]));
    m.apply(snap);
    await m.settled();
    expect(m.status()).toEqual([
      {
        key: "NodePort/test/dns:dns",
        listeners: [{ address: "127.0.0.1", port, bound: false, error: `Cannot bind listener "test/dns:dns" on 127.0.0.1:${port}: address already in use` }],
      },
    ]);
    expect(m.counts().failed).toBe(1);
    squatter.close();
    m.retryFailed();
    await m.settled();
    expect(m.counts()).toMatchObject({ bound: 1, failed: 0 });
    await using client = await udpClient(rt, port);
    expect(await client.exchange("ok")).toBe("e:ok");
  });

  test("a failed UDP bind is retried on a timer", async () => {
    await using echo = await udpEcho(rt, { tag: "e" });
    const squatter = await rt.bindUdp({ hostname: "127.0.0.1", port: 0, onMessage() {} });
    const port = squatter.port;
    await using m = manager({ retryIntervalMs: 20 });
    m.apply(snapshot(udp("dns", port, [echo.port])));
    await m.settled();
    expect(m.counts().failed).toBe(1);
    squatter.close();
    await waitFor(() => m.counts().bound === 1, { what: "the retry to bind" });
    await using client = await udpClient(rt, port);
    expect(await client.exchange("ok")).toBe("e:ok");
  });

  test("TCP and UDP entrypoints on the same port are both served", async () => {
    await using uecho = await udpEcho(rt, { tag: "u" });
    await using techo = echoServer(rt, { tag: "t" });
    const port = await freeBothPort();
    await using m = manager();
    m.apply(snapshot(udp("dns", port, [uecho.port]), entrypoint({ name: "test/dns:dns-tcp", port, endpoints: [techo.port] })));
    await m.settled();
    expect(m.counts()).toMatchObject({ bound: 2, failed: 0 });
    await using uc = await udpClient(rt, port);
    expect(await uc.exchange("q")).toBe("u:q");
    await using tc = await connectClient(rt, port);
    expect(await tc.exchange("q", 3)).toBe("t:q");
  });

  test("an entrypoint on 127.0.0.1 and ::1 answers UDP on both, each from its own address", async () => {
    await using echo = await udpEcho(rt, { tag: "e" });
    const port = await freeUdpPort(rt);
    await using m = manager();
    m.apply(snapshot(entrypoint({ name: "test/dns:dns", protocol: "udp", port, endpoints: [echo.port], addresses: ["127.0.0.1", "::1"] })));
    await m.settled();
    expect(m.counts()).toMatchObject({ bound: 2, failed: 0 });
    await using v4 = await udpClient(rt, port);
    await using v6 = await udpClient(rt, port, { hostname: "::1" });
    expect([await v4.exchange("4"), await v6.exchange("6")]).toEqual(["e:4", "e:6"]);
    expect([v4.lastFrom, v6.lastFrom]).toEqual([`127.0.0.1:${port}`, `::1:${port}`]);
  });

  test("close closes UDP sockets, also one still binding", async () => {
    const [p1, p2] = [await freeUdpPort(rt), await freeUdpPort(rt)];
    const m = manager();
    m.apply(snapshot(udp("one", p1, [1])));
    await m.settled();
    m.apply(snapshot(udp("one", p1, [1]), udp("two", p2, [1])));
    await m.close(100); // "two" is still binding here
    for (const port of [p1, p2]) (await rt.bindUdp({ hostname: "127.0.0.1", port, onMessage() {} })).close();
    expect(m.counts()).toEqual({ bound: 0, failed: 0, draining: 0, connections: 0, flows: 0, refused: 0 });
  });
});
