/**
 * Issue 17 end to end: a gateway started with `--local --endpoint-access port-forward` against the test API server,
 * whose pods have kind-like addresses (10.244.1.x) that are never dialled: every byte to a pod goes through
 * `pods/{name}/portforward` over WebSocket (the server relays to loopback backends standing for the containers).
 * HTTP keep-alive and new connections balanced over two pods, a large body, a WebSocket, TCP, a LoadBalancer port
 * moved by --lb-port-offset, an endpoint change, a pod whose port refuses (retried on the other pod, then ejected),
 * an endpoint without targetRef, and a cluster role without pods/portforward. The `auto` mode's decisions against a
 * really unroutable pod network are in local-auto.test.ts (a network namespace of its own).
 */
import { describe, expect, test } from "bun:test";
import { parseFlags } from "../../src/config/flags.ts";
import { startGateway } from "../../src/gateway.ts";
import { rt } from "../../src/runtime/index.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { forwardedPod, podSlice, rawPod } from "../support/forwarded-pods.ts";
import { startTestGateway } from "../support/gateway.ts";
import { parsePodReply, randomBytes, sha256, startHttpLoad, startHttpPod, startTcpEchoPod } from "../support/pod-backends.ts";
import { freePort } from "../support/ports.ts";
import { connectClient } from "../support/tcp-peers.ts";
import { waitFor } from "../support/wait.ts";

const NS = "dev";

const service = (name: string, type: "NodePort" | "LoadBalancer", ports: { name: string; port: number; targetPort: number; nodePort: number }[]) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: NS },
  spec: { type, selector: { app: name }, ports: ports.map((p) => ({ ...p, ...(p.name === "http" ? { appProtocol: "http" } : {}) })) },
});

const slice = (name: string, service: string, port: number, endpoints: { ip: string; pod?: string }[]) => podSlice(NS, name, service, { name: "http", port }, endpoints);

/** Two HTTP pods behind Service `web` (NodePort and LoadBalancer port 80), their container port 8080 relayed by the API server. */
async function webCluster(api: TestApiServer) {
  const pods = [startHttpPod({ name: "web-0", hostname: "127.0.0.1" }), startHttpPod({ name: "web-1", hostname: "127.0.0.1" })];
  const nodePort = await freePort();
  const lbPort = await freePort();
  pods.forEach((p, i) => {
    forwardedPod(api, NS, p.name, `10.244.1.${10 + i}`, 8080, { hostname: "127.0.0.1", port: p.port });
  });
  api.create(service("web", "LoadBalancer", [{ name: "http", port: 80, targetPort: 8080, nodePort }]));
  api.create(slice("web-a", "web", 8080, [{ ip: "10.244.1.10", pod: "web-0" }, { ip: "10.244.1.11", pod: "web-1" }]));
  return {
    pods,
    nodePort,
    lbPort,
    /** --lb-port-offset that puts port 80 on `lbPort`. */
    offset: lbPort - 80,
    async [Symbol.asyncDispose]() {
      for (const p of pods) await p[Symbol.asyncDispose]();
    },
  };
}

const statusOf = async (adminPort: number) => (await (await fetch(`http://127.0.0.1:${adminPort}/api/status`)).json()) as {
  endpointAccess?: { mode: string; dials: { direct: { ok: number; failed: number }; portForward: { ok: number; failed: number } } };
};

describe("--local --endpoint-access port-forward (issue 17)", () => {
  test("HTTP keep-alive and new connections balance over both pods through port-forward; large bodies; the LB port moved by the offset", async () => {
    await using api = await startApiServer({ rbac: "local" });
    await using web = await webCluster(api);
    await using gw = await startTestGateway(api, ["--local", "--hostname-override", "", "--endpoint-access", "port-forward", "--lb-port-offset", String(web.offset)]);
    await waitFor(() => gw.snapshot()?.entrypoints.filter((e) => e.service === "web" && e.cluster.serving.length === 2).length === 2, { what: "web's NodePort and LB entrypoints" });
    expect(gw.snapshot()!.entrypoints.map((e) => `${e.type}:${e.port}`).sort()).toEqual([`LoadBalancer:${web.lbPort}`, `NodePort:${web.nodePort}`].sort());

    await using load = startHttpLoad({ port: web.nodePort, keepAliveWorkers: 3, newConnectionWorkers: 2, maxRequests: 300, maxMs: 30_000, paceMs: 0 });
    const stats = await load.finished;
    expect({ ok: stats.ok, failed: stats.failed, failures: stats.failures }).toEqual({ ok: stats.requests, failed: 0, failures: [] });
    expect(stats.requests).toBeGreaterThanOrEqual(300);
    expect(stats.byPod["web-0"]).toBeGreaterThan(60);
    expect(stats.byPod["web-1"]).toBeGreaterThan(60);
    // Every upstream connection was a port-forward stream to one of the pods; none was a direct connect.
    expect(new Set(api.portForwards.map((f) => `${f.namespace}/${f.pod}:${f.ports.join(",")}`))).toEqual(new Set([`${NS}/web-0:8080`, `${NS}/web-1:8080`]));
    const s = await statusOf(gw.adminPort);
    expect(s.endpointAccess?.mode).toBe("port-forward");
    expect(s.endpointAccess?.dials.direct).toEqual({ ok: 0, failed: 0 });
    expect(s.endpointAccess?.dials.portForward.ok).toBe(api.portForwardTotal);

    // 4 MiB up, through the LoadBalancer port (80 + offset).
    const body = randomBytes(4 << 20);
    const r = await fetch(`http://127.0.0.1:${web.lbPort}/upload`, { method: "POST", body: body as Uint8Array<ArrayBuffer> });
    expect(r.status).toBe(200);
    expect(parsePodReply(await r.text())).toMatchObject({ method: "POST", target: "/upload", length: body.length, hash: sha256(body) });
  }, 30_000);

  test("with --workers 2 every worker process reaches the pods through port-forward (each loads the kubeconfig)", async () => {
    await using api = await startApiServer({ rbac: "local" });
    await using web = await webCluster(api);
    await using gw = await startTestGateway(api, ["--local", "--hostname-override", "", "--endpoint-access", "port-forward", "--lb-port-offset", String(web.offset), "--workers", "2"]);
    await waitFor(() => gw.snapshot()?.entrypoints.filter((e) => e.service === "web" && e.cluster.serving.length === 2).length === 2, { what: "web's entrypoints" });
    // New connections spread over both workers (SO_REUSEPORT); every upstream is a port-forward stream.
    await using load = startHttpLoad({ port: web.nodePort, keepAliveWorkers: 2, newConnectionWorkers: 4, maxRequests: 200, maxMs: 30_000, postShare: 0.3 });
    const stats = await load.finished;
    expect({ ok: stats.ok, failed: stats.failed, failures: stats.failures }).toEqual({ ok: stats.requests, failed: 0, failures: [] });
    expect(new Set(api.portForwards.map((f) => f.pod))).toEqual(new Set(["web-0", "web-1"]));
    // Both workers served requests (so both opened port-forward streams: no worker reaches a pod any other way).
    const requests = async () => ((await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/status`)).json()) as { workers: { requests: number }[] }).workers.map((w) => w.requests);
    await waitFor(async () => (await requests()).reduce((a, b) => a + b, 0) >= stats.requests, { what: "the workers' request counts" });
    expect((await requests()).every((n) => n > 0)).toBe(true);
  }, 60_000);

  test("a WebSocket and a TCP stream through port-forward; an endpoint change moves the next connections", async () => {
    await using api = await startApiServer({ rbac: "local" });
    // A WebSocket echo pod (Bun's server) and a TCP echo pod.
    await using wsPod = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req, server) => (server.upgrade(req) ? undefined : new Response("upgrade expected", { status: 426 })),
      websocket: { message: (ws, m) => void ws.send(`echo:${m}`) },
    });
    await using tcpPod = startTcpEchoPod({ name: "tcp-0", hostname: "127.0.0.1" });
    await using web = await webCluster(api);
    const wsNodePort = await freePort();
    const tcpNodePort = await freePort();
    forwardedPod(api, NS, "ws-0", "10.244.2.5", 9000, { hostname: "127.0.0.1", port: wsPod.port! });
    api.create({ ...service("ws", "NodePort", [{ name: "http", port: 9000, targetPort: 9000, nodePort: wsNodePort }]) });
    api.create(slice("ws-a", "ws", 9000, [{ ip: "10.244.2.5", pod: "ws-0" }]));
    forwardedPod(api, NS, "tcp-0", "10.244.2.6", 7000, { hostname: "127.0.0.1", port: tcpPod.port });
    const tcpService = service("tcp", "NodePort", [{ name: "echo", port: 7000, targetPort: 7000, nodePort: tcpNodePort }]);
    api.create({ ...tcpService, metadata: { ...tcpService.metadata, annotations: { "kubegate.io/protocol": "tcp" } } });
    api.create(podSlice(NS, "tcp-a", "tcp", { name: "echo", port: 7000 }, [{ ip: "10.244.2.6", pod: "tcp-0" }]));
    await using gw = await startTestGateway(api, ["--local", "--hostname-override", "", "--endpoint-access", "port-forward", "--lb-port-offset", String(web.offset)]);
    await waitFor(() => ["ws", "tcp", "web"].every((n) => gw.snapshot()?.entrypoints.some((e) => e.service === n && e.cluster.serving.length > 0)), { what: "all three Services" });

    const ws = new WebSocket(`ws://127.0.0.1:${wsNodePort}/chat`);
    const replies: string[] = [];
    const opened = Promise.withResolvers<void>();
    ws.onopen = () => opened.resolve();
    ws.onerror = () => opened.reject(new Error("WebSocket through the gateway failed"));
    ws.onmessage = (m) => replies.push(String(m.data));
    await opened.promise;
    for (const m of ["a", "b", "c"]) ws.send(m);
    await waitFor(() => replies.length === 3, { what: "three echoes" });
    expect(replies).toEqual(["echo:a", "echo:b", "echo:c"]);
    ws.close();

    await using c = await connectClient(rt, tcpNodePort);
    expect(await c.exchange("hello through the API server", 28)).toBe("hello through the API server");
    const big = randomBytes(1 << 20);
    await c.send(big);
    await c.receivedAtLeast(28 + big.length);

    // web-1 leaves the slice: the next requests (new connections) all go to web-0.
    api.update({ ...slice("web-a", "web", 8080, [{ ip: "10.244.1.10", pod: "web-0" }]) });
    await waitFor(() => gw.snapshot()?.entrypoints.find((e) => e.type === "NodePort" && e.service === "web")?.cluster.serving.length === 1, { what: "web-1 to leave" });
    await using load = startHttpLoad({ port: web.nodePort, keepAliveWorkers: 0, newConnectionWorkers: 2, maxRequests: 40, postShare: 0 });
    const after = await load.finished;
    expect({ ok: after.ok, byPod: after.byPod }).toEqual({ ok: after.requests, byPod: { "web-0": after.requests } });
  }, 30_000);

  test("the API server drops every stream (a kubelet or API server restart) under GET load: kept-alive pools reconnect, no GET fails", async () => {
    await using api = await startApiServer({ rbac: "local" });
    await using web = await webCluster(api);
    await using gw = await startTestGateway(api, ["--local", "--hostname-override", "", "--endpoint-access", "port-forward", "--lb-port-offset", String(web.offset)]);
    await waitFor(() => gw.snapshot()?.entrypoints.find((e) => e.type === "NodePort" && e.service === "web")?.cluster.serving.length === 2, { what: "web" });
    await using load = startHttpLoad({ port: web.nodePort, keepAliveWorkers: 4, newConnectionWorkers: 1, maxRequests: 100_000, maxMs: 20_000, postShare: 0, paceMs: 1 });
    for (let round = 0; round < 3; round++) {
      const before = load.stats.requests;
      await waitFor(() => load.stats.requests >= before + 100, { what: "traffic before the drop" });
      await api.waitForPortForwards(2);
      expect(api.dropPortForwards()).toBeGreaterThanOrEqual(2);
    }
    const opened = api.portForwardTotal;
    const after = load.stats.requests;
    await waitFor(() => load.stats.requests >= after + 100, { what: "traffic after the last drop" });
    const stats = await load.stop();
    // GETs caught on a dropped stream are retried on a new one (no response byte had come).
    expect({ failed: stats.failed, failures: stats.failures }).toEqual({ failed: 0, failures: [] });
    expect(opened).toBeGreaterThanOrEqual(6);
  }, 40_000);

  test("a pod whose port refuses is retried on the other pod and ejected; an endpoint without targetRef is a connect failure", async () => {
    await using api = await startApiServer({ rbac: "local" });
    await using web = await webCluster(api);
    // web-2 runs, but nothing listens on its port (not registered with the API server: it refuses).
    api.create(rawPod(NS, "web-2", "10.244.1.12", 8080));
    api.update(slice("web-a", "web", 8080, [{ ip: "10.244.1.10", pod: "web-0" }, { ip: "10.244.1.11", pod: "web-1" }, { ip: "10.244.1.12", pod: "web-2" }, { ip: "10.244.1.13" }]));
    await using gw = await startTestGateway(api, ["--local", "--hostname-override", "", "--endpoint-access", "port-forward", "--lb-port-offset", String(web.offset), "--outlier-consecutive-failures", "2"]);
    await waitFor(() => gw.snapshot()?.entrypoints.find((e) => e.type === "NodePort" && e.service === "web")?.cluster.serving.length === 4, { what: "four endpoints" });
    await using load = startHttpLoad({ port: web.nodePort, keepAliveWorkers: 0, newConnectionWorkers: 2, maxRequests: 60, postShare: 0 });
    const stats = await load.finished;
    // GETs are retried on another endpoint when the first got no response byte.
    expect({ ok: stats.ok, failed: stats.failed }).toEqual({ ok: stats.requests, failed: 0 });
    expect(Object.keys(stats.byPod).sort()).toEqual(["web-0", "web-1"]);
    const s = await statusOf(gw.adminPort);
    expect(s.endpointAccess!.dials.portForward.failed).toBeGreaterThanOrEqual(2);
    // Both failing endpoints (the refusing pod, the one port-forward cannot name) are ejected.
    const snapshot = (await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/snapshot`)).json()) as { entrypoints: { key: string; balancing?: { ejected?: { address: string }[] } }[] };
    const ejected = snapshot.entrypoints.find((e) => e.key === `NodePort/${NS}/web:http`)?.balancing?.ejected?.map((e) => e.address).sort();
    expect(ejected).toEqual(["10.244.1.12", "10.244.1.13"]);
  }, 30_000);

  test("without pods/portforward in the cluster role, requests fail with 502 and the log names the verb and resource", async () => {
    await using api = await startApiServer({ rbac: "edge" });
    await using web = await webCluster(api);
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    await using gw = await gatewayWithLog(api, ["--hostname-override", "node-a", "--all-services", "--endpoint-access", "port-forward"]);
    const r = await fetch(`http://127.0.0.1:${web.nodePort}/`);
    expect(r.status).toBe(502);
    await r.body?.cancel();
    expect(api.forbidden.some((a) => a.resource === "pods" && a.subresource === "portforward")).toBe(true);
    const warned = gw.warnings.find((w) => w.msg === "Port-forward to an endpoint failed");
    expect(warned?.code).toBe("EFORBIDDEN");
    expect(String(warned?.error)).toContain("pods/portforward");
  }, 30_000);

  test("an API server (or a proxy in front of it) without WebSocket port-forward: 502 and a log line saying what is missing", async () => {
    await using api = await startApiServer({ rbac: "local", portForwardWebSockets: false });
    await using web = await webCluster(api);
    await using gw = await gatewayWithLog(api, ["--local", "--hostname-override", "", "--endpoint-access", "port-forward", "--lb-port-offset", String(web.offset)]);
    const r = await fetch(`http://127.0.0.1:${web.nodePort}/`);
    expect(r.status).toBe(502);
    await r.body?.cancel();
    const warned = gw.warnings.find((w) => w.msg === "Port-forward to an endpoint failed");
    expect(warned?.code).toBe("EUNSUPPORTED");
    expect(String(warned?.error)).toContain("WebSocket");
  }, 30_000);
});

/** A gateway on `api` (in this process) whose warnings are kept, ready with web's NodePort entrypoint. */
async function gatewayWithLog(api: TestApiServer, args: string[]) {
  const parsed = parseFlags(
    ["--kubeconfig", await api.writeKubeconfig(), "--host-addresses", "127.0.0.1", "--healthz-bind-address", "127.0.0.1:0", "--metrics-bind-address", "127.0.0.1:0", "--no-access-log", "--workers", "1", "--handover-socket", "none", ...args],
    { hostname: "node-a" },
  );
  if (parsed.kind !== "run") throw new Error(JSON.stringify(parsed));
  const warnings: Record<string, unknown>[] = [];
  const log = { debug() {}, info() {}, error() {}, warn: (msg: string, f?: Record<string, unknown>) => void warnings.push({ msg, ...f }) };
  const gw = await startGateway(parsed.config, { log });
  await gw.ready();
  await waitFor(() => gw.snapshot()?.entrypoints.find((e) => e.type === "NodePort" && e.service === "web")?.cluster.serving.length === 2, { what: "web" });
  return Object.assign(gw, { warnings });
}
