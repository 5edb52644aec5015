/**
 * Issue 7's upstream-failure acceptance tests, through the whole gateway on the test API server:
 *
 * - connect refused on one endpoint (a pod that crashed while its endpoint is still listed ready): no client
 *   sees an error, over HTTP (keep-alive and new connections, GETs and POSTs) and TCP;
 * - passive outlier detection: an endpoint answering 500 is ejected after K consecutive 5xx, gets no request
 *   for the ejection time, then is readmitted and gets its share again.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Gateway } from "../../src/gateway.ts";
import type { Cluster } from "../../src/model/types.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { startTestGateway } from "../support/gateway.ts";
import {
  connectRefused,
  HttpClientConn,
  type HttpPod,
  PodNetwork,
  parsePodReply,
  startHttpLoad,
  startHttpPod,
  startTcpEchoPod,
  startTcpLoad,
  type TcpPod,
} from "../support/pod-backends.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

const NS = "failures";
const label = { "service.kubernetes.io/service-proxy-name": "kubegate" };
const enc = new TextEncoder();
const dec = new TextDecoder();

function service(name: string, portName: string, nodePort: number, targetPort: number, appProtocol?: string) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: NS, labels: label },
    spec: { type: "NodePort", ports: [{ name: portName, port: 80, targetPort, nodePort, protocol: "TCP", ...(appProtocol ? { appProtocol } : {}) }] },
  };
}

/** One EndpointSlice listing `pods` as ready. */
function readySlice(svc: string, portName: string, targetPort: number, pods: readonly (HttpPod | TcpPod)[]) {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: `${svc}-abcde`, namespace: NS, labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    ports: [{ name: portName, port: targetPort, protocol: "TCP" }],
    endpoints: pods.map((p) => ({
      addresses: [p.hostname],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: "node-a",
      targetRef: { kind: "Pod", namespace: NS, name: p.name },
    })),
  };
}

/** An API server with node-a and a gateway on it (with `flags`), for one describe block. */
function gatewayFixture(flags: readonly string[]) {
  const fx = { api: undefined as unknown as TestApiServer, gw: undefined as unknown as Gateway };
  beforeAll(async () => {
    fx.api = await startApiServer({ bookmarkIntervalMs: 500 });
    fx.api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    fx.gw = await startTestGateway(fx.api, flags);
  });
  afterAll(async () => {
    await fx.gw?.[Symbol.asyncDispose]();
    await fx.api?.[Symbol.asyncDispose]();
  });
  return fx;
}

const clusterOf = (gw: Gateway, key: string): Cluster | undefined => gw.snapshot()?.entrypoints.find((e) => e.key === key)?.cluster;
const bound = (gw: Gateway, key: string) => gw.listeners.status().some((l) => l.key === key && l.listeners.length > 0 && l.listeners.every((x) => x.bound));

describe("connect refused on one endpoint (outlier detection off, so it stays in rotation)", () => {
  const fx = gatewayFixture(["--outlier-consecutive-failures", "0"]);

  test("HTTP: keep-alive and new connections, GETs and POSTs: no client sees an error", async () => {
    const net = new PodNetwork();
    await using a = startHttpPod({ name: "a", hostname: net.nextAddress() });
    await using b = startHttpPod({ name: "b", hostname: net.nextAddress(), port: a.port });
    await using crashed = startHttpPod({ name: "crashed", hostname: net.nextAddress(), port: a.port });
    const nodePort = await freePort();
    const key = `NodePort/${NS}/refuse-http:http`;
    fx.api.create(service("refuse-http", "http", nodePort, a.port, "http"));
    fx.api.create(readySlice("refuse-http", "http", a.port, [a, b, crashed]));
    await waitFor(() => clusterOf(fx.gw, key)?.serving.length === 3 && bound(fx.gw, key), { what: "three serving endpoints" });

    // While it is up, the third pod takes its share: it is in the rotation.
    const warm = await startHttpLoad({ port: nodePort, keepAliveWorkers: 2, newConnectionWorkers: 1, maxRequests: 60, maxMs: 10_000 }).finished;
    expect({ failed: warm.failed, crashedServed: (warm.byPod["crashed"] ?? 0) > 5 }).toEqual({ failed: 0, crashedServed: true });

    // It crashes: its port refuses connections, and its endpoint stays listed as ready (the kubelet has not noticed).
    await crashed.stop();
    expect(await connectRefused(crashed.hostname, crashed.port)).toBe(true);
    const done = await startHttpLoad({ port: nodePort, keepAliveWorkers: 3, newConnectionWorkers: 2, paceMs: 1, maxRequests: 600, maxMs: 20_000 }).finished;
    expect({ failed: done.failed, resets: done.resets, failures: done.failures, crashedServed: done.byPod["crashed"] ?? 0 }).toEqual({
      failed: 0,
      resets: 0,
      failures: [],
      crashedServed: 0,
    });
    expect(done.ok).toBe(done.requests);
    expect(done.requests).toBeGreaterThanOrEqual(600);
    expect(done.posts).toBeGreaterThan(100);
    // The crashed endpoint was listed as serving all along: every third pick met a refused connect.
    expect(clusterOf(fx.gw, key)?.serving.map((e) => e.address)).toContain(crashed.hostname);
  }, 40_000);

  test("TCP: long-lived and short connections: no client sees an error", async () => {
    const net = new PodNetwork();
    await using a = startTcpEchoPod({ name: "a", hostname: net.nextAddress() });
    await using b = startTcpEchoPod({ name: "b", hostname: net.nextAddress(), port: a.port });
    await using crashed = startTcpEchoPod({ name: "crashed", hostname: net.nextAddress(), port: a.port });
    const nodePort = await freePort();
    const key = `NodePort/${NS}/refuse-tcp:tcp`;
    fx.api.create(service("refuse-tcp", "tcp", nodePort, a.port));
    fx.api.create(readySlice("refuse-tcp", "tcp", a.port, [a, b, crashed]));
    await waitFor(() => clusterOf(fx.gw, key)?.serving.length === 3 && bound(fx.gw, key), { what: "three serving endpoints" });
    const warm = await startTcpLoad({ port: nodePort, longLivedWorkers: 0, shortWorkers: 2, maxConnections: 30, maxMs: 10_000 }).finished;
    expect({ failed: warm.failed, crashedConnected: crashed.stats.connections > 3 }).toEqual({ failed: 0, crashedConnected: true });

    await crashed.stop();
    expect(await connectRefused(crashed.hostname, crashed.port)).toBe(true);
    const before = { a: a.stats.connections, b: b.stats.connections };
    const done = await startTcpLoad({ port: nodePort, longLivedWorkers: 2, exchanges: 10, exchangePaceMs: 2, shortWorkers: 3, paceMs: 1, maxConnections: 300, maxMs: 20_000 }).finished;
    expect({ failed: done.failed, resets: done.resets, failures: done.failures }).toEqual({ failed: 0, resets: 0, failures: [] });
    expect(done.ok).toBe(done.connections);
    expect(done.connections).toBeGreaterThanOrEqual(300);
    expect(a.stats.connections - before.a + (b.stats.connections - before.b)).toBe(done.connections);
    expect(clusterOf(fx.gw, key)?.serving.map((e) => e.address)).toContain(crashed.hostname);
  }, 40_000);
});

describe("passive outlier detection: an endpoint answering 500 is ejected, then readmitted", () => {
  const K = 3;
  const EJECTION_MS = 1_000;
  const fx = gatewayFixture([
    "--outlier-consecutive-failures", String(K),
    "--outlier-ejection-time", `${EJECTION_MS}ms`,
    "--outlier-max-ejection-percent", "50",
  ]);

  test(`after ${K} consecutive 5xx it gets no request for the ejection time, then its share again`, async () => {
    const net = new PodNetwork();
    await using a = startHttpPod({ name: "a", hostname: net.nextAddress() });
    await using b = startHttpPod({ name: "b", hostname: net.nextAddress(), port: a.port });
    await using bad = startHttpPod({ name: "bad", hostname: net.nextAddress(), port: a.port });
    bad.status = 500;
    const nodePort = await freePort();
    const key = `NodePort/${NS}/outlier:http`;
    fx.api.create(service("outlier", "http", nodePort, a.port, "http"));
    fx.api.create(readySlice("outlier", "http", a.port, [a, b, bad]));
    await waitFor(() => clusterOf(fx.gw, key)?.serving.length === 3 && bound(fx.gw, key), { what: "three serving endpoints" });

    let conn = await HttpClientConn.open("127.0.0.1", nodePort);
    let n = 0;
    /** One GET on a kept-alive connection: its send time, status and the pod that answered. */
    const get = async () => {
      if (!conn.usable) conn = await HttpClientConn.open("127.0.0.1", nodePort);
      const sentAt = performance.now();
      const res = await conn.request(enc.encode(`GET /o/${n++} HTTP/1.1\r\nhost: outlier\r\n\r\n`));
      return { sentAt, status: res.status, pod: parsePodReply(dec.decode(res.body))?.pod };
    };

    // Round robin sends every third request to "bad" until its K-th consecutive 500 ejects it.
    let ejectedAfter = 0;
    for (let i = 0; i < 10 * K && bad.stats.requests < K; i++) {
      const r = await get();
      expect(r.status).toBe(r.pod === "bad" ? 500 : 200);
      if (bad.stats.requests === K) ejectedAfter = r.sentAt;
    }
    expect(bad.stats.requests).toBe(K);
    // The pod recovers at once; it must still get nothing until its ejection time is over.
    bad.status = 200;

    let during = 0;
    for (let i = 0; i < 400 && performance.now() < ejectedAfter + EJECTION_MS * 0.7; i++) {
      const r = await get();
      const pod = r.pod === "bad" ? "bad: ejected, it must get nothing" : r.pod;
      expect({ status: r.status, pod: pod === "a" || pod === "b" ? "a or b" : pod }).toEqual({ status: 200, pod: "a or b" });
      during++;
      await new Promise((r) => setTimeout(r, 2));
    }
    // How many fit in the window depends on the box's load; 6 is two round-robin cycles over the three
    // endpoints: enough that "bad" would have been picked twice had it not been ejected.
    expect({ requestsDuringEjection: during >= 6, badGotNone: bad.stats.requests === K }).toEqual({ requestsDuringEjection: true, badGotNone: true });

    // Readmitted once the ejection time is over: find the first request that reaches it again.
    let readmittedAt = 0;
    for (let i = 0; i < 2_000 && performance.now() < ejectedAfter + EJECTION_MS + 5_000; i++) {
      const r = await get();
      expect(r.status).toBe(200);
      if (r.pod === "bad") {
        readmittedAt = r.sentAt;
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(readmittedAt).toBeGreaterThan(0);
    // Not before the ejection time (the gateway ejected it after the K-th request was sent; 20 ms for clock grain).
    expect(readmittedAt - ejectedAfter).toBeGreaterThanOrEqual(EJECTION_MS - 20);

    // Healthy again, it takes its round-robin share.
    const seen: Record<string, number> = {};
    for (let i = 0; i < 30; i++) {
      const r = await get();
      expect(r.status).toBe(200);
      seen[r.pod ?? "?"] = (seen[r.pod ?? "?"] ?? 0) + 1;
    }
    expect(seen["bad"] ?? 0).toBeGreaterThanOrEqual(5);
    conn.end();
  }, 30_000);
});
