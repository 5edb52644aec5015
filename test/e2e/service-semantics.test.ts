/**
 * Service fields through the whole gateway, against the test API server, with real sockets:
 * ClientIP affinity, externalTrafficPolicy Local with its health port, the terminating fallback
 * during a rolling update, IPv6 (::1), UDP, and ExternalName to a local DNS name.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Gateway } from "../../src/gateway.ts";
import { startTestGateway } from "../support/gateway.ts";
import { rt } from "../../src/runtime/index.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { freePort } from "../support/ports.ts";
import { udpClient, udpEcho } from "../support/udp-peers.ts";
import { waitFor } from "../support/wait.ts";

const label = { "service.kubernetes.io/service-proxy-name": "kubegate" };

function named(name: string, hostname = "127.0.0.1") {
  return Bun.serve({ hostname, port: 0, fetch: () => new Response(name) });
}

function service(name: string, spec: Record<string, unknown>, annotations: Record<string, string> = {}) {
  return { apiVersion: "v1", kind: "Service", metadata: { name, namespace: "sem", labels: label, annotations }, spec };
}

type Ep = { ip: string; ready?: boolean; serving?: boolean; terminating?: boolean; node?: string };
function slice(svc: string, name: string, port: number, eps: Ep[], opts: { protocol?: string; addressType?: string } = {}) {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: "sem", labels: { "kubernetes.io/service-name": svc } },
    addressType: opts.addressType ?? "IPv4",
    ports: [{ name: "p", port, protocol: opts.protocol ?? "TCP" }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.serving ?? e.ready ?? true, terminating: e.terminating ?? false },
      nodeName: e.node ?? "node-a",
    })),
  };
}

const text = async (url: string) => (await fetch(url)).text();

describe("Service semantics through the gateway", () => {
  let api: TestApiServer;
  let gw: Gateway;
  const stops: (() => unknown)[] = [];

  beforeAll(async () => {
    api = await startApiServer({ bookmarkIntervalMs: 500 });
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    gw = await startTestGateway(api, ["--host-addresses", "127.0.0.1,::1"]);
  });

  afterAll(async () => {
    await gw?.[Symbol.asyncDispose]();
    for (const stop of stops) await stop();
    await api?.[Symbol.asyncDispose]();
  });

  /** Two HTTP backends on distinct ports of 127.0.0.1, as one slice each. */
  function backends(names: string[]) {
    const servers = names.map((n) => named(n));
    stops.push(() => servers.forEach((s) => s.stop(true)));
    return servers;
  }

  test("sessionAffinity ClientIP: one client sticks to one endpoint", async () => {
    const servers = backends(["a1", "a2", "a3"]);
    const port = await freePort();
    api.create(service("sticky", {
      type: "NodePort",
      sessionAffinity: "ClientIP",
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
      ports: [{ name: "p", port: 80, nodePort: port, appProtocol: "http" }],
    }));
    servers.forEach((s, i) => api.create(slice("sticky", `sticky-${i}`, s.port!, [{ ip: "127.0.0.1" }])));
    await waitFor(async () => (await text(`http://127.0.0.1:${port}/`).catch(() => "")).startsWith("a"), { what: "sticky to serve" });
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) seen.add(await text(`http://127.0.0.1:${port}/`));
    expect(seen.size).toBe(1);
    // Without affinity the same Service spreads: flip it off and see more than one endpoint.
    const svc = api.get("services", "sem", "sticky") as ReturnType<typeof service>;
    api.update({ ...svc, spec: { ...svc.spec, sessionAffinity: "None" } });
    const spread = await waitFor(async () => {
      const s = new Set<string>();
      for (let i = 0; i < 6; i++) s.add(await text(`http://127.0.0.1:${port}/`));
      return s.size > 1 && s;
    }, { what: "round robin after affinity is turned off" });
    expect(spread.size).toBeGreaterThan(1);
  });

  test("externalTrafficPolicy Local: only local endpoints, and the health port answers kube-proxy's body", async () => {
    const [local, remote] = backends(["local", "remote"]);
    const [lbPort, nodePort, hcPort] = [await freePort(), await freePort(), await freePort()];
    api.create(service("edge", {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      healthCheckNodePort: hcPort,
      ports: [{ name: "p", port: lbPort, nodePort, appProtocol: "http" }],
    }));
    api.create(slice("edge", "edge-local", local!.port!, [{ ip: "127.0.0.1", node: "node-a" }]));
    api.create(slice("edge", "edge-remote", remote!.port!, [{ ip: "127.0.0.1", node: "node-b" }]));
    await waitFor(async () => (await text(`http://127.0.0.1:${nodePort}/`).catch(() => "")) === "local", { what: "edge to serve" });
    for (let i = 0; i < 6; i++) expect(await text(`http://127.0.0.1:${nodePort}/`)).toBe("local");

    const hc = await waitFor(async () => {
      const r = await fetch(`http://127.0.0.1:${hcPort}/`).catch(() => undefined);
      return r?.status === 200 && r;
    }, { what: "the health check port" });
    expect(hc.headers.get("content-type")).toBe("application/json");
    expect(await hc.text()).toBe('{\n\t"service": {\n\t\t"namespace": "sem",\n\t\t"name": "edge"\n\t},\n\t"localEndpoints": 1,\n\t"serviceProxyHealthy": true\n}');

    // The local pod starts terminating: it no longer counts, so the node fails the check (and drains).
    api.update({ ...slice("edge", "edge-local", local!.port!, [{ ip: "127.0.0.1", ready: false, serving: true, terminating: true }]), metadata: { ...(api.get("endpointslices", "sem", "edge-local") as { metadata: object }).metadata } });
    const failing = await waitFor(async () => {
      const r = await fetch(`http://127.0.0.1:${hcPort}/`);
      return r.status === 503 && (await r.text());
    }, { what: "the health check to fail" });
    expect(failing).toContain('"localEndpoints": 0');
    // Meanwhile the terminating local endpoint still serves (per-node fallback), never the remote one.
    expect(await text(`http://127.0.0.1:${nodePort}/`)).toBe("local");
  });

  test("a rolling update under load: zero failed requests while old pods terminate and new ones become ready", async () => {
    const [v1, v2] = backends(["v1", "v2"]);
    const port = await freePort();
    api.create(service("roll", { type: "NodePort", ports: [{ name: "p", port: 80, nodePort: port, appProtocol: "http" }] }));
    const sliceAt = (eps: Ep[], ports: number) => slice("roll", "roll-1", ports, eps);
    api.create(sliceAt([{ ip: "127.0.0.1" }], v1!.port!));
    await waitFor(async () => (await text(`http://127.0.0.1:${port}/`).catch(() => "")) === "v1", { what: "roll to serve" });

    let failures = 0;
    let served = 0;
    let running = true;
    const load = (async () => {
      const deadline = performance.now() + 10_000;
      while (running && performance.now() < deadline) {
        const r = await fetch(`http://127.0.0.1:${port}/`).catch(() => undefined);
        if (!r || r.status !== 200) failures++;
        else served++;
        await r?.text();
      }
    })();
    const set = (eps: Ep[], p: number) => {
      const cur = api.get("endpointslices", "sem", "roll-1") as { metadata: object };
      api.update({ ...sliceAt(eps, p), metadata: cur.metadata });
    };
    // Old pod terminating and not ready (nothing ready yet): the serving+terminating fallback keeps it in use.
    set([{ ip: "127.0.0.1", ready: false, serving: true, terminating: true }], v1!.port!);
    await waitFor(() => gw.snapshot()?.entrypoints.find((e) => e.name === "sem/roll:p")?.cluster.selection?.fallback === "serving-terminating", { what: "the fallback" });
    const before = served;
    await waitFor(() => served > before + 20, { what: "traffic during the fallback" });
    // The new pod is ready: traffic moves to it.
    const v2Slice = slice("roll", "roll-2", v2!.port!, [{ ip: "127.0.0.1" }]);
    api.create(v2Slice);
    await waitFor(async () => (await text(`http://127.0.0.1:${port}/`)) === "v2", { what: "the new pod to take traffic" });
    api.remove("endpointslices", "sem", "roll-1");
    const after = served;
    await waitFor(() => served > after + 20, { what: "traffic after the old pod is gone" });
    running = false;
    await load;
    expect({ failures, servedSome: served > 40 }).toEqual({ failures: 0, servedSome: true });
  });

  test("IPv6: a Service with IPv6 endpoints is served on ::1", async () => {
    const v6 = named("six", "::1");
    stops.push(() => v6.stop(true));
    const port = await freePort("::1");
    api.create(service("six", {
      type: "NodePort",
      ipFamilies: ["IPv6"],
      ports: [{ name: "p", port: 80, nodePort: port, appProtocol: "http" }],
    }));
    api.create(slice("six", "six-1", v6.port!, [{ ip: "::1" }], { addressType: "IPv6" }));
    expect(await waitFor(async () => (await text(`http://[::1]:${port}/`).catch(() => "")) === "six" && "ok", { what: "::1 to serve" })).toBe("ok");
  });

  test("UDP: an echo through a NodePort", async () => {
    await using echo = await udpEcho(rt, { tag: "udp" });
    const port = await freePort();
    api.create(service("dns", { type: "NodePort", ports: [{ name: "p", port: 53, nodePort: port, protocol: "UDP" }] }));
    api.create(slice("dns", "dns-1", echo.port, [{ ip: "127.0.0.1" }], { protocol: "UDP" }));
    // UDP has no handshake: send only once the listener is bound (an early datagram meets ICMP unreachable).
    await waitFor(() => gw.listeners.status().some((e) => e.key === "NodePort/sem/dns:p" && e.listeners.some((l) => l.bound && l.port === port) && gw.snapshot()?.entrypoints.find((x) => x.key === e.key)?.cluster.serving.length), {
      what: "the UDP listener with its endpoint",
    });
    await using client = await udpClient(rt, port);
    expect(await client.exchange("ping")).toBe("udp:ping");
    expect(await client.exchange("again")).toBe("udp:again");
  });

  test("ExternalName exposed by annotation routes to a local DNS name (localhost)", async () => {
    const [target] = backends(["external"]);
    const port = await freePort();
    api.create(service(
      "ext",
      { type: "ExternalName", externalName: "localhost", ports: [{ name: "p", port: target!.port!, protocol: "TCP", appProtocol: "http" }] },
      { "kubegate.io/expose-external-name": "true", "kubegate.io/external-name-ports": String(port) },
    ));
    expect(await waitFor(async () => (await text(`http://127.0.0.1:${port}/`).catch(() => "")) === "external" && "ok", {
      what: "the ExternalName entrypoint",
    })).toBe("ok");
  });
});
