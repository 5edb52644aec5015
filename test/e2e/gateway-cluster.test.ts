/**
 * The whole gateway against the test API server over mTLS: Services and EndpointSlices written
 * through the server change what is bound and where traffic goes, with real sockets and clients.
 * Each test starts its own API server, backends and gateway, so any one runs alone.
 */
import { describe, expect, test } from "bun:test";
import { connect, type Socket } from "node:net";
import type { Gateway } from "../../src/gateway.ts";
import { startTestGateway } from "../support/gateway.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

/** An HTTP backend that names itself, and a TCP echo backend that prefixes its name. */
function backends(names: string[]) {
  const http = names.map((name) =>
    Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(name, { headers: { "x-backend": name } }) }),
  );
  const tcp = names.map((name) =>
    Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      allowHalfOpen: true,
      socket: { data: (s, d) => void s.write(`${name}:${d.toString()}`), end: (s) => void s.end() },
    }),
  );
  return {
    http,
    tcp,
    [Symbol.dispose]() {
      for (const s of http) s.stop(true);
      for (const s of tcp) s.stop(true);
    },
  };
}

function service(name: string, nodePorts: { http: number; tcp: number }, extra: Record<string, unknown> = {}) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: {
      type: "NodePort",
      selector: { app: name },
      ports: [
        { name: "http", port: 80, targetPort: "http", nodePort: nodePorts.http, appProtocol: "http" },
        { name: "tcp", port: 7, targetPort: "tcp", nodePort: nodePorts.tcp },
      ],
      ...extra,
    },
  };
}

function slice(svc: string, name: string, httpPort: number, tcpPort: number, ready = true) {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: "e2e", labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    ports: [
      { name: "http", port: httpPort, protocol: "TCP" },
      { name: "tcp", port: tcpPort, protocol: "TCP" },
    ],
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready }, nodeName: "node-a" }],
  };
}

/** A TCP client that collects what it receives. */
function tcpClient(port: number) {
  const socket: Socket = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
  let received = "";
  socket.on("data", (d) => (received += d.toString()));
  const opened = new Promise<void>((resolve, reject) => (socket.once("connect", resolve), socket.once("error", reject)));
  return {
    opened,
    socket,
    received: () => received,
    async exchange(text: string): Promise<string> {
      const before = received.length;
      socket.write(text);
      return waitFor(() => received.length > before && received.slice(before), { what: `a reply to ${JSON.stringify(text)}` });
    },
    [Symbol.dispose]: () => socket.destroy(),
  };
}

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });

/**
 * A fresh cluster for one test: the API server with node-a and the NodePort Service "web" (HTTP and TCP)
 * on two endpoints (backends a and b; c is started but not an endpoint), and a gateway synced to it.
 */
async function startCluster() {
  const api = await startApiServer({ bookmarkIntervalMs: 500 });
  const be = backends(["a", "b", "c"]);
  const ports = { http: await freePort(), tcp: await freePort() };
  api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a", labels: { "topology.kubernetes.io/zone": "z1" } } });
  api.create(service("web", ports));
  api.create(slice("web", "web-a", be.http[0]!.port!, be.tcp[0]!.port));
  api.create(slice("web", "web-b", be.http[1]!.port!, be.tcp[1]!.port));
  let gw: Gateway;
  try {
    gw = await startTestGateway(api, ["--drain-grace-period", "200ms"]);
  } catch (err) {
    be[Symbol.dispose]();
    await api[Symbol.asyncDispose]();
    throw err;
  }
  return {
    api,
    be,
    gw,
    ports,
    /** The admin API's snapshot view. */
    admin: async () =>
      (await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/snapshot`)).json()) as {
        entrypoints: { name: string; type: string; protocol: string; port: number; endpoints: { port: number; ready: boolean }[] }[];
        errors: { object: string; message: string }[];
      },
    async [Symbol.asyncDispose]() {
      await gw[Symbol.asyncDispose]();
      be[Symbol.dispose]();
      await api[Symbol.asyncDispose]();
    },
  };
}

describe("gateway against the test API server", () => {
  test("health: /healthz, /livez with kube-proxy's bodies and /readyz once synced", async () => {
    await using cluster = await startCluster();
    const { gw } = cluster;
    const h = await fetch(`http://127.0.0.1:${gw.healthPort}/healthz`);
    expect(h.status).toBe(200);
    expect(h.headers.get("content-type")).toBe("application/json");
    expect(h.headers.get("x-content-type-options")).toBe("nosniff");
    expect(await h.text()).toMatch(/^\{"lastUpdated": "[^"]+","currentTime": "[^"]+", "nodeEligible": true\}$/);
    const l = await fetch(`http://127.0.0.1:${gw.healthPort}/livez`);
    expect(l.status).toBe(200);
    expect(await l.text()).toMatch(/^\{"lastUpdated": "[^"]+","currentTime": "[^"]+"\}$/);
    expect((await fetch(`http://127.0.0.1:${gw.healthPort}/readyz`)).status).toBe(200);
  });

  test("/metrics on the admin address speaks Prometheus text with kube-proxy's names", async () => {
    await using cluster = await startCluster();
    const { gw } = cluster;
    // One probe for kubeproxy_proxy_healthz_total to count (this test does not rely on another's).
    expect((await fetch(`http://127.0.0.1:${gw.healthPort}/healthz`)).status).toBe(200);
    const res = await fetch(`http://127.0.0.1:${gw.adminPort}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    expect(text).toMatch(/^kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\} \d/m);
    expect(text).toMatch(/^kubeproxy_proxy_healthz_total\{code="200"\} 1$/m);
    expect(text).toMatch(/^kubegate_endpoints\{namespace="e2e",service="web",port="http",protocol="http",state="ready"\} 2$/m);
  });

  test("HTTP and TCP NodePorts round-robin over the endpoints", async () => {
    await using cluster = await startCluster();
    const { be, ports, admin } = cluster;
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(await (await fetch(`http://127.0.0.1:${ports.http}/`)).text());
    expect([...seen].sort()).toEqual(["a", "b"]);
    const tcpSeen = new Set<string>();
    for (let i = 0; i < 4; i++) {
      using c = tcpClient(ports.tcp);
      await c.opened;
      tcpSeen.add((await c.exchange("x")).split(":")[0]!);
    }
    expect([...tcpSeen].sort()).toEqual(["a", "b"]);
    const snap = await admin();
    const http = snap.entrypoints.find((e) => e.name === "e2e/web:http")!;
    expect(http).toMatchObject({ type: "NodePort", protocol: "http", port: ports.http });
    expect(http.endpoints.map((e) => e.port).sort()).toEqual([be.http[0]!.port!, be.http[1]!.port!].sort());
  });

  test("an endpoint change reaches an open keep-alive connection and spares established TCP connections", async () => {
    await using cluster = await startCluster();
    const { api, be, gw, ports } = cluster;
    // An established TCP connection, on whichever endpoint it got.
    using established = tcpClient(ports.tcp);
    await established.opened;
    const owner = (await established.exchange("hi")).split(":")[0]!;
    // Replace both slices by one pointing at backend c.
    const version = gw.snapshot()!.version;
    api.remove("endpointslices", "e2e", "web-a");
    api.remove("endpointslices", "e2e", "web-b");
    api.create(slice("web", "web-c", be.http[2]!.port!, be.tcp[2]!.port));
    // The same keep-alive client (fetch pools connections) sees c. How fast is a benchmark's question
    // (`npm run bench:scale` measures propagation to a real request), not a bound to assert on a loaded box.
    await waitFor(async () => (await (await fetch(`http://127.0.0.1:${ports.http}/`)).text()) === "c", {
      what: "the HTTP entrypoint to route to the new endpoint",
    });
    expect(gw.snapshot()!.version).toBeGreaterThan(version);
    // New TCP connections go to c; the established one still talks to its old endpoint.
    using fresh = tcpClient(ports.tcp);
    await fresh.opened;
    expect(await fresh.exchange("x")).toBe("c:x");
    expect(await established.exchange("still")).toBe(`${owner}:still`);
  });

  test("a nodePort change rebinds, and NodePort -> ClusterIP stops listening", async () => {
    await using cluster = await startCluster();
    const { api, ports, admin } = cluster;
    const moved = { http: await freePort(), tcp: await freePort() };
    const svc = api.get("services", "e2e", "web") as ReturnType<typeof service>;
    api.update({ ...svc, spec: { ...svc.spec, ports: service("web", moved).spec.ports } });
    await waitFor(async () => (await canConnect(moved.http)) && !(await canConnect(ports.http)), { what: "the rebind" });
    expect(["a", "b"]).toContain(await (await fetch(`http://127.0.0.1:${moved.http}/`)).text());
    const current = api.get("services", "e2e", "web") as ReturnType<typeof service>;
    api.update({ ...current, spec: { ...current.spec, type: "ClusterIP", ports: current.spec.ports.map(({ nodePort, ...p }) => p) } });
    await waitFor(async () => !(await canConnect(moved.http)) && !(await canConnect(moved.tcp)), { what: "the listeners to close" });
    expect((await admin()).entrypoints.filter((e) => e.name.startsWith("e2e/web:"))).toEqual([]);
  });

  test("a port conflict between two LoadBalancer Services is reported; the older wins and the rest serve", async () => {
    await using cluster = await startCluster();
    const { api, be, admin } = cluster;
    // ServiceLB style: both want the same Service port on the node's addresses (nodePorts differ, as a real
    // API server enforces).
    const lbPort = await freePort();
    const lb = (name: string, np: { http: number; tcp: number }) => {
      const s = service(name, np, { type: "LoadBalancer" });
      s.spec.ports[0]!.port = lbPort;
      return s;
    };
    api.create(lb("alpha", { http: await freePort(), tcp: await freePort() }));
    api.create(slice("alpha", "alpha-a", be.http[0]!.port!, be.tcp[0]!.port));
    await waitFor(async () => (await canConnect(lbPort)) && true, { what: "the older Service (alpha) to bind" });
    const betaPorts = { http: await freePort(), tcp: await freePort() };
    api.create(lb("beta", betaPorts));
    api.create(slice("beta", "beta-b", be.http[1]!.port!, be.tcp[1]!.port));
    const snap = await waitFor(async () => {
      const s = await admin();
      return s.errors.some((e) => e.object.includes("e2e/beta:http")) && s;
    }, { what: "the conflict to be reported" });
    const conflict = snap.errors.find((e) => e.object.includes("e2e/beta:http"))!;
    expect(conflict.object).toContain("LoadBalancer");
    expect(conflict.message).toContain("e2e/alpha:http");
    // The winner serves the shared port; the loser's NodePort entrypoints serve.
    expect(await (await fetch(`http://127.0.0.1:${lbPort}/`)).text()).toBe("a");
    expect(await (await fetch(`http://127.0.0.1:${betaPorts.http}/`)).text()).toBe("b");
    using c = tcpClient(betaPorts.tcp);
    await c.opened;
    expect(await c.exchange("y")).toBe("b:y");
  });
});
