/**
 * The per-Service metrics match the traffic sent: real HTTP and TCP proxies with the gateway's
 * metrics handle (`ProxyTelemetry.traffic`), real sockets, and the values read back from the
 * Prometheus exposition.
 */
import { describe, expect, test } from "bun:test";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import { makeTcpProxyFactory } from "../../src/proxy/tcp/index.ts";
import { makeUdpProxyFactory } from "../../src/proxy/udp/proxy.ts";
import { defaultProxyOptions, type ProxyTelemetry } from "../../src/proxy/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { GatewayMetrics } from "../../src/telemetry/metrics/index.ts";
import { RawClient, RawUpstream, route, startProxy, waitFor } from "../support/http-harness.ts";
import { entrypoint, route as routeOf } from "../support/entrypoints.ts";
import { udpClient, udpEcho } from "../support/udp-peers.ts";
import { parseScrape, valueOf } from "../support/metrics-parse.ts";

function gatewayMetrics() {
  const metrics = new GatewayMetrics();
  const telemetry: ProxyTelemetry = { traffic: (ep) => metrics.traffic.forEntrypoint(ep) };
  return { metrics, telemetry, scrape: () => parseScrape(metrics.expose()) };
}

const WEB = { namespace: "default", service: "web", port: "http", protocol: "http" };
const ECHO = { namespace: "default", service: "echo", port: "tcp", protocol: "tcp" };

describe("per-Service traffic metrics", () => {
  test("N HTTP requests read back as N, with their bytes, durations, connections and errors", async () => {
    const g = gatewayMetrics();
    await using up = new RawUpstream("a");
    await using proxy = startProxy([up.endpoint], { telemetry: g.telemetry });
    const N = 25;
    let sent = 0;
    let received = 0;
    {
      await using client = await RawClient.connect(proxy.port);
      for (let i = 0; i < N; i++) {
        const req = `GET /n/${i} HTTP/1.1\r\nHost: web\r\n\r\n`;
        client.send(req);
        sent += req.length;
        const res = await client.readResponse();
        expect(res.status).toBe(200);
        received += res.head.length + res.rawBody.length;
      }
      const s = g.scrape();
      expect(valueOf(s, "kubegate_active_connections", WEB)).toBe(1);
    }
    await waitFor(() => proxy.proxy.active() === 0, "the client connection to close");

    const s = g.scrape();
    expect(valueOf(s, "kubegate_requests_total", { ...WEB, code_class: "2xx" })).toBe(N);
    expect(valueOf(s, "kubegate_request_duration_seconds_count", WEB)).toBe(N);
    expect(valueOf(s, "kubegate_connections_total", WEB)).toBe(1);
    expect(valueOf(s, "kubegate_active_connections", WEB)).toBe(0);
    expect(valueOf(s, "kubegate_received_bytes_total", WEB)).toBe(sent);
    expect(valueOf(s, "kubegate_sent_bytes_total", WEB)).toBe(received);
    expect(valueOf(s, "kubegate_upstream_connect_duration_seconds_count", WEB)).toBe(1); // one pooled upstream connection
  });

  test("gateway-made errors count as responses and as errors by reason", async () => {
    const g = gatewayMetrics();
    await using proxy = startProxy([], { telemetry: g.telemetry });
    for (let i = 0; i < 3; i++) expect((await fetch(`${proxy.url}/`)).status).toBe(503);
    await using client = await RawClient.connect(proxy.port);
    client.send("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    expect((await client.readResponse()).status).toBe(400);
    const s = g.scrape();
    expect(valueOf(s, "kubegate_requests_total", { ...WEB, code_class: "5xx" })).toBe(3);
    expect(valueOf(s, "kubegate_requests_total", { ...WEB, code_class: "4xx" })).toBe(1);
    expect(valueOf(s, "kubegate_proxy_errors_total", { ...WEB, reason: "no_endpoints" })).toBe(3);
    expect(valueOf(s, "kubegate_proxy_errors_total", { ...WEB, reason: "bad_request" })).toBe(1);
  });

  test("M TCP connections read back as M, with bytes each way and connect durations", async () => {
    const g = gatewayMetrics();
    const echo = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: { data: (s, c) => void s.write(c), end: (s) => s.end() } });
    await using _echo = { [Symbol.asyncDispose]: async () => echo.stop(true) };
    const r = route([{ address: "127.0.0.1", port: echo.port, ready: true, serving: true, terminating: false }], "default/echo:tcp");
    const ep = { ...r.entrypoint, protocol: "tcp" as const };
    const proxy = makeTcpProxyFactory(rt.connectTcp)(
      { current: { entrypoint: ep, balancer: new RoundRobin(r.balancer.endpoints, () => 0) } },
      { ...defaultProxyOptions, telemetry: g.telemetry },
    );
    const listener = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
    await using _l = { [Symbol.asyncDispose]: async () => (listener.stop(true), proxy.closeAll()) };

    const M = 8;
    let bytes = 0;
    for (let i = 0; i < M; i++) {
      await using c = await RawClient.connect(listener.port);
      const msg = `hello ${i} ${"x".repeat(i * 100)}`;
      c.send(msg);
      bytes += msg.length;
      await waitFor(() => c.data.length === msg.length, "the echo");
      c.end();
      await c.whenClosed;
    }
    await waitFor(() => proxy.active() === 0, "every connection to close");
    const s = g.scrape();
    expect(valueOf(s, "kubegate_connections_total", ECHO)).toBe(M);
    expect(valueOf(s, "kubegate_active_connections", ECHO)).toBe(0);
    expect(valueOf(s, "kubegate_received_bytes_total", ECHO)).toBe(bytes);
    expect(valueOf(s, "kubegate_sent_bytes_total", ECHO)).toBe(bytes);
    expect(valueOf(s, "kubegate_upstream_connect_duration_seconds_count", ECHO)).toBe(M);
  });

  test("UDP flows count as connections, with their bytes; closed flows leave no active ones", async () => {
    const g = gatewayMetrics();
    await using echo = await udpEcho(rt, { tag: "a" });
    const ep = entrypoint({ protocol: "udp", endpoints: [echo.port] });
    const proxy = makeUdpProxyFactory(rt.bindUdp)({ current: routeOf(ep) }, { ...defaultProxyOptions, telemetry: g.telemetry });
    const socket = await rt.bindUdp({ hostname: "127.0.0.1", port: 0, onMessage: proxy.onMessage });
    proxy.attach(socket);
    await using _p = { [Symbol.asyncDispose]: async () => (proxy.closeAll(), socket.close()) };
    const labels = { namespace: ep.namespace, service: ep.service, port: ep.name.slice(ep.name.lastIndexOf(":") + 1), protocol: "udp" };
    await using c1 = await udpClient(rt, socket.port);
    await using c2 = await udpClient(rt, socket.port);
    expect(await c1.exchange("ping")).toBe("a:ping");
    expect(await c1.exchange("pong!")).toBe("a:pong!");
    expect(await c2.exchange("hi")).toBe("a:hi");
    let s = g.scrape();
    expect(valueOf(s, "kubegate_connections_total", labels)).toBe(2);
    expect(valueOf(s, "kubegate_active_connections", labels)).toBe(2);
    proxy.closeAll();
    s = g.scrape();
    expect(valueOf(s, "kubegate_active_connections", labels)).toBe(0);
    expect(valueOf(s, "kubegate_received_bytes_total", labels)).toBe(4 + 5 + 2);
    expect(valueOf(s, "kubegate_sent_bytes_total", labels)).toBe(6 + 7 + 4);
  });
});
