/**
 * `--endpoint-access`: which way each connection to an endpoint goes, and what `auto` decides from the first real
 * connection to an endpoint network. Direct connects are real loopback connects; an unroutable network is a connect
 * that fails the way the kernel fails it (the real thing, with no route, is in test/e2e/local.test.ts's network
 * namespace); the port-forwarder here connects to a loopback echo server in the API server's stead (the real one
 * is tested in test/kube/portforward.test.ts and end to end in test/e2e/local.test.ts).
 */
import { expect, test } from "bun:test";
import type { Endpoint } from "../../src/model/types.ts";
import {
  type ConnectTcp,
  EndpointAccess,
  EndpointAccessError,
  endpointNetwork,
  type PortForwarder,
  type PortForwardTarget,
  portForwardTarget,
} from "../../src/proxy/endpoint-access.ts";
import { rt } from "../../src/runtime/index.ts";
import type { TcpSocket } from "../../src/runtime/types.ts";
import { echoServer } from "../support/tcp-peers.ts";

const ep = (address: string, port: number, pod?: string): Endpoint => ({
  address,
  port,
  ready: true,
  serving: true,
  terminating: false,
  ...(pod ? { targetRef: { kind: "Pod", name: pod, namespace: "ns" } } : {}),
});

/** A kernel-like connect: `unroutable` networks fail with `code`, loopback connects for real. */
function kernel(unroutable: Record<string, string>, seen: string[]): ConnectTcp {
  return (o) => {
    seen.push(`${o.hostname}:${o.port}`);
    const prefix = Object.keys(unroutable).find((p) => o.hostname.startsWith(p));
    if (prefix !== undefined) return Promise.reject(Object.assign(new Error(`connect ${unroutable[prefix]} ${o.hostname}:${o.port}`), { code: unroutable[prefix] }));
    return rt.connectTcp({ ...o, hostname: "127.0.0.1" });
  };
}

/** A port-forwarder that reaches every pod at one loopback port, recording the targets asked for. */
function forwarder(port: number, targets: PortForwardTarget[]): PortForwarder {
  return {
    connect(target, o) {
      targets.push(target);
      return rt.connectTcp({ hostname: "127.0.0.1", port, handlers: o.handlers, data: o.data, timeoutMs: o.timeoutMs });
    },
  };
}

const handlers = { data() {} };
const close = (s: TcpSocket<unknown>) => s.terminate();

test("endpoint networks are the /24 of IPv4 and the /64 of IPv6 addresses", () => {
  expect(endpointNetwork("10.244.1.5")).toBe("10.244.1.0/24");
  expect(endpointNetwork("fd00:10:244:1::5")).toBe("fd00:10:244:1::/64");
  expect(endpointNetwork("fd00::1")).toBe("fd00::/64");
  expect(endpointNetwork("2001:db8:0:0:0:0:0:1")).toBe("2001:db8::/64");
  expect(endpointNetwork("::ffff:10.244.1.5")).toBe("10.244.1.0/24");
});

test("port-forward needs a Pod targetRef with a namespace: without it the error says why and what to do", () => {
  expect(portForwardTarget(ep("10.0.0.1", 80, "web-1"))).toEqual({ namespace: "ns", pod: "web-1", port: 80 });
  const missing = portForwardTarget(ep("10.0.0.1", 80));
  expect(missing).toBeInstanceOf(EndpointAccessError);
  expect((missing as EndpointAccessError).code).toBe("ENOTARGET");
  expect((missing as Error).message).toStartWith("Endpoint 10.0.0.1:80 has no targetRef: port-forward reaches pods by name");
  const node = portForwardTarget({ ...ep("10.0.0.1", 80), targetRef: { kind: "Node", name: "n1" } });
  expect((node as Error).message).toContain('has targetRef {"kind":"Node","name":"n1"}, not a Pod');
});

test("direct connects to the address; port-forward asks for the endpoint's pod and port", async () => {
  await using server = echoServer(rt);
  const seen: string[] = [];
  const targets: PortForwardTarget[] = [];
  const direct = new EndpointAccess({ mode: "direct", connectTcp: kernel({}, seen) });
  close(await direct.dial(ep("127.0.0.1", server.port, "web-1"), { handlers, data: undefined }));
  expect(seen).toEqual([`127.0.0.1:${server.port}`]);
  const pf = new EndpointAccess({ mode: "port-forward", connectTcp: kernel({}, seen), portForward: forwarder(server.port, targets) });
  close(await pf.dial(ep("10.244.1.5", 8080, "web-1"), { handlers, data: undefined }));
  expect(targets).toEqual([{ namespace: "ns", pod: "web-1", port: 8080 }]);
  expect(seen).toHaveLength(1);
  expect(pf.via(ep("10.244.1.5", 8080))).toBe("port-forward");
  await expect(pf.dial(ep("10.244.1.6", 8080), { handlers, data: undefined })).rejects.toThrow("has no targetRef");
  expect(pf.counts).toEqual({ direct: { ok: 0, failed: 0 }, portForward: { ok: 1, failed: 1 } });
  expect(() => new EndpointAccess({ mode: "auto", connectTcp: kernel({}, seen) })).toThrow("needs a port-forwarder");
});

test("auto: an unroutable network switches to port-forward for that connection and the network's next ones", async () => {
  await using server = echoServer(rt);
  const seen: string[] = [];
  const targets: PortForwardTarget[] = [];
  const logs: unknown[] = [];
  const log = { debug() {}, info: (msg: string, f?: unknown) => logs.push({ msg, ...(f as object) }), warn() {}, error() {} };
  const access = new EndpointAccess({ mode: "auto", connectTcp: kernel({ "10.244.1.": "ENETUNREACH", "10.244.2.": "ETIMEDOUT" }, seen), portForward: forwarder(server.port, targets), log, now: () => 7 });
  // The pods of one network are dialled at once: one probe, the others wait for its decision.
  const first = await Promise.all([access.dial(ep("10.244.1.5", 8080, "a"), { handlers, data: undefined }), access.dial(ep("10.244.1.6", 8080, "b"), { handlers, data: undefined })]);
  first.forEach(close);
  expect(seen).toEqual(["10.244.1.5:8080"]);
  expect(targets.map((t) => t.pod)).toEqual(["a", "b"]);
  close(await access.dial(ep("10.244.2.9", 80, "c"), { handlers, data: undefined, timeoutMs: 2_000 }));
  expect(access.decisions()).toEqual([
    { network: "10.244.1.0/24", via: "port-forward", reason: "connect to 10.244.1.5:8080 failed: ENETUNREACH", at: 7 },
    { network: "10.244.2.0/24", via: "port-forward", reason: "connect to 10.244.2.9:80 failed: no answer within 1000 ms", at: 7 },
  ]);
  expect(logs).toEqual([
    { msg: "Endpoint network not routable: reaching its pods through the API server (port-forward)", network: "10.244.1.0/24", via: "port-forward", reason: "connect to 10.244.1.5:8080 failed: ENETUNREACH" },
    { msg: "Endpoint network not routable: reaching its pods through the API server (port-forward)", network: "10.244.2.0/24", via: "port-forward", reason: "connect to 10.244.2.9:80 failed: no answer within 1000 ms" },
  ]);
  expect([access.via(ep("10.244.1.200", 1)), access.via(ep("10.244.3.1", 1))]).toEqual(["port-forward", "direct"]);
});

test("auto: a network that connects, or whose host refuses, is routable: direct from then on, and the refusal is the endpoint's", async () => {
  await using server = echoServer(rt);
  const seen: string[] = [];
  const targets: PortForwardTarget[] = [];
  const access = new EndpointAccess({ mode: "auto", connectTcp: kernel({}, seen), portForward: forwarder(server.port, targets) });
  close(await access.dial(ep("127.0.0.1", server.port, "a"), { handlers, data: undefined }));
  const closed = echoServer(rt);
  const refusedPort = closed.port;
  closed.stop();
  await expect(access.dial(ep("127.0.1.1", refusedPort, "b"), { handlers, data: undefined })).rejects.toMatchObject({ code: "ECONNREFUSED" });
  expect(access.decisions().map((d) => [d.network, d.via])).toEqual([
    ["127.0.0.0/24", "direct"],
    ["127.0.1.0/24", "direct"],
  ]);
  expect(access.decisions()[1]!.reason).toBe(`127.0.1.1:${refusedPort} answered the connect (ECONNREFUSED)`);
  close(await access.dial(ep("127.0.0.1", server.port, "c"), { handlers, data: undefined }));
  expect(targets).toEqual([]);
  expect(access.counts.direct).toEqual({ ok: 2, failed: 1 });
});

test("auto: a refusal that the route check says had no route is unroutable (Bun reports ENETUNREACH as ECONNREFUSED)", async () => {
  await using server = echoServer(rt);
  const targets: PortForwardTarget[] = [];
  const asked: string[] = [];
  const routeError = async (address: string) => (asked.push(address), address.startsWith("10.") ? "ENETUNREACH" : undefined);
  const access = new EndpointAccess({ mode: "auto", connectTcp: kernel({ "10.244.": "ECONNREFUSED", "10.96.": "ECONNREFUSED" }, []), portForward: forwarder(server.port, targets), routeError });
  close(await access.dial(ep("10.244.1.5", 8080, "a"), { handlers, data: undefined }));
  expect(access.decisions()[0]).toMatchObject({ network: "10.244.1.0/24", via: "port-forward", reason: "connect to 10.244.1.5:8080 failed: ENETUNREACH" });
  expect(targets.map((t) => t.pod)).toEqual(["a"]);
  expect(asked).toEqual(["10.244.1.5"]);
});

test("the process's dialer: direct until an access is installed, then through it (and spans say which way)", async () => {
  const { dialEndpoint, useEndpointAccess, viaOf, endpointAccess } = await import("../../src/proxy/dial.ts");
  await using server = echoServer(rt);
  const target = ep("127.0.0.1", server.port, "web-1");
  close(await dialEndpoint(target, { handlers, data: undefined }));
  expect([viaOf(target), endpointAccess()]).toEqual(["direct", undefined]);
  const targets: PortForwardTarget[] = [];
  const access = new EndpointAccess({ mode: "port-forward", connectTcp: kernel({}, []), portForward: forwarder(server.port, targets) });
  useEndpointAccess(access);
  try {
    close(await dialEndpoint(ep("10.244.1.5", 8080, "web-1"), { handlers, data: undefined }));
    expect(targets).toEqual([{ namespace: "ns", pod: "web-1", port: 8080 }]);
    expect(viaOf(target)).toBe("port-forward");
  } finally {
    useEndpointAccess(undefined);
  }
});

test("auto: a direct connect that completes after the probe gave up never reaches the connection's handlers", async () => {
  await using server = echoServer(rt);
  const targets: PortForwardTarget[] = [];
  const events: string[] = [];
  let lateDone = Promise.resolve();
  // The kernel answers late: the probe times out first; then the runtime opens the late socket and discards it
  // (withConnectTimeout), with the handlers the probe gave it.
  const late: ConnectTcp = (o) => {
    lateDone = (async () => {
      await Bun.sleep(20);
      const socket = await rt.connectTcp({ ...o, hostname: "127.0.0.1", port: server.port, timeoutMs: undefined });
      socket.terminate();
      await Bun.sleep(20);
    })();
    return Promise.reject(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" }));
  };
  const access = new EndpointAccess({ mode: "auto", connectTcp: late, portForward: forwarder(server.port, targets), probeTimeoutMs: 50 });
  const tracked = { open: (s: TcpSocket<string>) => void events.push(`open ${s.data}`), data() {}, close: (s: TcpSocket<string>) => void events.push(`close ${s.data}`) };
  const socket = await access.dial(ep("10.244.1.5", 8080, "a"), { handlers: tracked, data: "conn-1" });
  await lateDone;
  // One open: the port-forward connection's; the late direct socket opened and closed unseen.
  expect(events).toEqual(["open conn-1"]);
  expect(targets.map((t) => t.pod)).toEqual(["a"]);
  socket.terminate();
});
