/**
 * The gateway with --lb-controller against the test API server: it writes the LoadBalancer status
 * (ipMode: Proxy) from its pool, serves the Service on that address, and reports a port it cannot
 * bind as a Kubernetes Event naming the node.
 */
import { expect, test } from "bun:test";
import { startTestGateway } from "../support/gateway.ts";
import { startApiServer } from "../support/apiserver.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

test("--lb-controller writes status from the pool, the address serves, and bind failures become Events", async () => {
  // The cluster runs the lb-controller overlay: its roles add Leases and services/status to the edge ones.
  await using api = await startApiServer({ rbac: "lb-controller", bookmarkIntervalMs: 500 });
  const backend = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("lb-ok") });
  await using _backend = { [Symbol.asyncDispose]: () => backend.stop(true) };
  // A port somebody else holds: the gateway must report it, not crash.
  const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  await using _taken = { [Symbol.asyncDispose]: async () => taken.stop(true) };
  const lbPort = await freePort();

  api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } });
  api.create({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "shop", namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: {
      type: "LoadBalancer",
      selector: { app: "shop" },
      ports: [{ name: "http", port: lbPort, targetPort: 8080, nodePort: taken.port, appProtocol: "http" }],
    },
  });
  api.create({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "shop-1", namespace: "e2e", labels: { "kubernetes.io/service-name": "shop" } },
    addressType: "IPv4",
    ports: [{ name: "http", port: backend.port, protocol: "TCP" }],
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
  });

  await using gw = await startTestGateway(api, ["--host-addresses", "127.0.0.1,127.0.0.2", "--lb-controller", "--lb-pool", "127.0.0.2/32"]);

  const status = await waitFor(() => {
    const svc = api.get("services", "e2e", "shop") as { status?: { loadBalancer?: { ingress?: unknown[] } } };
    return svc.status?.loadBalancer?.ingress?.length ? svc.status.loadBalancer : undefined;
  }, { what: "the LoadBalancer status to be written" });
  expect(status).toEqual({ ingress: [{ ip: "127.0.0.2", ipMode: "Proxy" }] });

  // The pool address is local, so the LoadBalancer entrypoint listens on it.
  await waitFor(async () => (await fetch(`http://127.0.0.2:${lbPort}/`).then((r) => r.text(), () => "")) === "lb-ok", {
    what: "the pool address to serve",
  });

  // The NodePort could not be bound: reported on the admin API and as an Event from this node.
  const event = await waitFor(() =>
    (api.items("events") as { reason: string; message: string; source?: { host?: string }; involvedObject: { name: string } }[]).find(
      (e) => e.reason === "FailedToBindListener",
    ), { what: "the FailedToBindListener Event" });
  expect(event.involvedObject.name).toBe("shop");
  expect(event.source?.host).toBe("node-a");
  expect(event.message).toContain(`127.0.0.1:${taken.port}`);
  const snap = (await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/snapshot`)).json()) as { errors: { message: string }[] };
  expect(snap.errors.some((e) => e.message.includes(`127.0.0.1:${taken.port}`))).toBe(true);
  const st = (await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/status`)).json()) as { controller?: { leading: boolean } };
  expect(st.controller?.leading).toBe(true);
});
