/**
 * The roles grant nothing the code never uses, per deployment: a representative run of the gateway with
 * --lb-controller (LoadBalancer status from a pool, a port it cannot bind reported as an Event and then
 * counted on a repeat, the Lease acquired and released) against the lb-controller overlay's roles, and of a
 * plain gateway (the same Event) against the edge deployment's, is recorded by the test API server, which
 * enforces those roles. Every request must be granted, every granted permission must be exercised, and
 * removing any one of them must refuse at least one request of the run. And of a `--local` gateway port-forwarding
 * to a pod against deploy/local's role.
 */
import { expect, test } from "bun:test";
import { parseFlags } from "../../src/config/flags.ts";
import { type Gateway, startGateway } from "../../src/gateway.ts";
import { startApiServer, type AccessRequest, type TestApiServer } from "../support/apiserver.ts";
import { forwardedPod, podSlice } from "../support/forwarded-pods.ts";
import { startTestGateway } from "../support/gateway.ts";
import { freePort } from "../support/ports.ts";
import { gatewayPolicy, ruleAllows, type Grant } from "../support/rbac.ts";
import { waitFor } from "../support/wait.ts";

const grantAllows = (g: Grant, a: AccessRequest): boolean =>
  (g.namespace === undefined || g.namespace === a.namespace) &&
  ruleAllows({ apiGroups: [g.group], resources: [g.resource], verbs: [g.verb], resourceNames: g.resourceNames }, a);

const show = (g: Grant) => `${g.verb} ${g.group || "core"}/${g.resource}${g.resourceNames ? ` ${JSON.stringify(g.resourceNames)}` : ""} (${g.role})`;

type Ports = (nodePort: number) => object[];

/**
 * A port somebody else holds makes the gateway write a FailedToBindListener Event (create); another node port clears
 * the failure; the held one again repeats the Event, which is counted (patch).
 */
async function bindEventRoundTrip(api: TestApiServer, gw: Gateway, ports: Ports, taken: number, other: number): Promise<void> {
  type Ev = { reason: string; count?: number };
  const bindEvent = () => (api.items("events") as Ev[]).find((e) => e.reason === "FailedToBindListener");
  await waitFor(() => bindEvent(), { what: "the FailedToBindListener Event" });
  const bindError = () => gw.listeners.status().some((s) => s.listeners.some((l) => l.error?.includes(`:${taken}`)));
  api.patch("services", "e2e", "shop", { spec: { ports: ports(other) } });
  await waitFor(() => !bindError(), { what: "the bind failure to clear" });
  api.patch("services", "e2e", "shop", { spec: { ports: ports(taken) } });
  await waitFor(() => (bindEvent()?.count ?? 0) >= 2, { what: "the repeated Event to be counted" });
}

/** Every request of the run was granted, every grant was used and needed; returns what was used (verb group/resource). */
async function usedGrants(deployment: Parameters<typeof gatewayPolicy>[0], access: readonly AccessRequest[]): Promise<string[]> {
  const policy = await gatewayPolicy(deployment);
  expect(access.filter((a) => !policy.authorize(a))).toEqual([]);
  const grants = policy.grants();
  expect(grants.filter((g) => !access.some((a) => grantAllows(g, a))).map(show)).toEqual([]);
  // Needed, not merely used: without any one grant, some request of the run would be refused.
  expect(grants.filter((g) => access.every((a) => policy.without(g).authorize(a))).map(show)).toEqual([]);
  return [...new Set(access.map((a) => `${a.verb} ${a.group || "core"}/${a.resource}${a.subresource ? `/${a.subresource}` : ""}`))].sort();
}

test("every permission the roles grant is used by a representative run, and each one is needed", async () => {
  const access: AccessRequest[] = [];
  await using api = await startApiServer({ rbac: "lb-controller", bookmarkIntervalMs: 500, authorize: (a) => (access.push(a), true) });
  const backend = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok") });
  await using _backend = { [Symbol.asyncDispose]: () => backend.stop(true) };
  // A port somebody else holds: the gateway reports it as an Event.
  const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  await using _taken = { [Symbol.asyncDispose]: async () => taken.stop(true) };
  const [lbPort, otherNodePort] = [await freePort(), await freePort()];
  const ports = (nodePort: number) => [{ name: "http", port: lbPort, targetPort: 8080, nodePort, appProtocol: "http" }];

  api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } });
  api.create({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "shop", namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: { type: "LoadBalancer", selector: { app: "shop" }, ports: ports(taken.port) },
  });
  api.create({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "shop-1", namespace: "e2e", labels: { "kubernetes.io/service-name": "shop" } },
    addressType: "IPv4",
    ports: [{ name: "http", port: backend.port, protocol: "TCP" }],
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
  });

  const parsed = parseFlags(
    [
      "--kubeconfig", await api.writeKubeconfig(),
      "--hostname-override", "node-a",
      "--host-addresses", "127.0.0.1,127.0.0.2",
      "--healthz-bind-address", "127.0.0.1:0",
      "--metrics-bind-address", "127.0.0.1:0",
      "--drain-grace-period", "100ms",
      "--lb-controller",
      "--lb-pool", "127.0.0.2/32",
    ],
    { hostname: "node-a" },
  );
  if (parsed.kind !== "run") throw new Error(JSON.stringify(parsed));
  {
    await using gw = await startGateway(parsed.config);
    await gw.ready();
    const ingress = () => (api.get("services", "e2e", "shop") as { status?: { loadBalancer?: { ingress?: unknown[] } } }).status?.loadBalancer?.ingress;
    await waitFor(() => ingress()?.length, { what: "the LoadBalancer status to be written" });
    await bindEventRoundTrip(api, gw, ports, taken.port, otherNodePort);
  } // dispose: the leader releases its Lease (PATCH)

  const lease = api.get("leases", "kube-system", "kubegate-lb-controller") as { spec: { holderIdentity?: string } } | undefined;
  expect(lease?.spec.holderIdentity ?? "").toBe(""); // released
  expect(api.requests.filter((r) => r.status === 403)).toEqual([]);
  const used = await usedGrants("lb-controller", access);
  expect(used).toEqual([
    "create coordination.k8s.io/leases",
    "create core/events",
    "get coordination.k8s.io/leases",
    "list core/nodes",
    "list core/services",
    "list discovery.k8s.io/endpointslices",
    "patch coordination.k8s.io/leases",
    "patch core/events",
    "patch core/services/status",
    "watch core/nodes",
    "watch core/services",
    "watch discovery.k8s.io/endpointslices",
  ]);
}, 20_000);

test("every permission the edge deployment grants is used by a plain gateway, and each one is needed", async () => {
  const access: AccessRequest[] = [];
  await using api = await startApiServer({ bookmarkIntervalMs: 500, authorize: (a) => (access.push(a), true) });
  const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  await using _taken = { [Symbol.asyncDispose]: async () => taken.stop(true) };
  const [port, otherNodePort] = [await freePort(), await freePort()];
  const ports = (nodePort: number) => [{ name: "http", port, targetPort: 8080, nodePort }];
  api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } });
  api.create({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "shop", namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: { type: "NodePort", selector: { app: "shop" }, ports: ports(taken.port) },
  });
  {
    await using gw = await startTestGateway(api);
    await bindEventRoundTrip(api, gw, ports, taken.port, otherNodePort);
  } // dispose: throws if the edge roles refused anything

  expect(await usedGrants("edge", access)).toEqual([
    "create core/events",
    "list core/nodes",
    "list core/services",
    "list discovery.k8s.io/endpointslices",
    "patch core/events",
    "watch core/nodes",
    "watch core/services",
    "watch discovery.k8s.io/endpointslices",
  ]);
}, 20_000);

test("every permission the local deployment grants is used by a --local gateway port-forwarding to a pod, and each one is needed", async () => {
  const access: AccessRequest[] = [];
  await using api = await startApiServer({ rbac: "local", bookmarkIntervalMs: 500, authorize: (a) => (access.push(a), true) });
  const backend = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok") });
  await using _backend = { [Symbol.asyncDispose]: () => backend.stop(true) };
  const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  await using _taken = { [Symbol.asyncDispose]: async () => taken.stop(true) };
  const [port, otherNodePort] = [await freePort(), await freePort()];
  const ports = (nodePort: number) => [{ name: "http", port, targetPort: 8080, nodePort, appProtocol: "http" }];
  forwardedPod(api, "e2e", "shop-0", "10.244.1.5", 8080, { hostname: "127.0.0.1", port: backend.port! });
  api.create({ apiVersion: "v1", kind: "Service", metadata: { name: "shop", namespace: "e2e" }, spec: { type: "NodePort", selector: { app: "shop" }, ports: ports(taken.port) } });
  api.create(podSlice("e2e", "shop-1", "shop", { name: "http", port: 8080 }, [{ ip: "10.244.1.5", pod: "shop-0" }]));
  {
    await using gw = await startTestGateway(api, ["--local", "--hostname-override", "", "--endpoint-access", "port-forward"]);
    await bindEventRoundTrip(api, gw, ports, taken.port, otherNodePort);
    // A request to the pod: port-forward through the API server.
    api.patch("services", "e2e", "shop", { spec: { ports: ports(otherNodePort) } });
    await waitFor(async () => (await fetch(`http://127.0.0.1:${otherNodePort}/`).then((x) => x.text(), () => "")) === "ok", { what: "the pod to answer through port-forward" });
  } // dispose: throws if the local roles refused anything

  expect(await usedGrants("local", access)).toEqual([
    "create core/events",
    "create core/pods/portforward",
    "get core/pods/portforward",
    "list core/services",
    "list discovery.k8s.io/endpointslices",
    "patch core/events",
    "watch core/services",
    "watch discovery.k8s.io/endpointslices",
  ]);
}, 20_000);
