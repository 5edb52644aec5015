/** The controller against the test API server: status written, kept, cleared; classes honoured; pool allocation. */
import { describe, expect, test } from "bun:test";
import { startLbController, type LbControllerOptions } from "../../src/controller/index.ts";
import { silentLogger } from "../../src/log.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { waitFor } from "../support/wait.ts";
import { BOOKMARK_MS, clientFor, fastTuning } from "../support/kube-sinks.ts";
import { ingressOf, lbService, rawNode, rawSlice } from "../support/controller-objects.ts";

const fastLease = { leaseDurationSeconds: 1, renewDeadlineMs: 700, retryPeriodMs: 150 };
const proxy = (...ips: string[]) => ips.map((ip) => ({ ip, ipMode: "Proxy" }));

async function controller(server: TestApiServer, options: Partial<LbControllerOptions> = {}) {
  const client = await clientFor(server);
  let lb;
  try {
    lb = startLbController({ client, nodeName: "node-a", lease: fastLease, reflector: fastTuning, log: silentLogger, ...options });
  } catch (err) {
    client.close();
    throw err;
  }
  return {
    lb,
    async [Symbol.asyncDispose]() {
      await lb[Symbol.asyncDispose]();
      client.close();
    },
  };
}

const svcIngress = (server: TestApiServer, name: string) => ingressOf(server.get("services", "default", name));
const statusWrites = (server: TestApiServer, name: string) =>
  server.requests.filter((r) => r.path === `/api/v1/namespaces/default/services/${name}/status` && r.method !== "GET");

async function untilIngress(server: TestApiServer, name: string, want: unknown): Promise<void> {
  await waitFor(() => Bun.deepEquals(svcIngress(server, name), want), { what: `ingress of "${name}" to be ${JSON.stringify(want)}` }).catch(() => {});
  expect(svcIngress(server, name)).toEqual(want);
}

describe("node addresses (ServiceLB style)", () => {
  test("written for a LoadBalancer Service with ipMode Proxy, once, and cleared when it becomes ClusterIP", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    server.create(rawNode("node-a", ["10.0.0.1"]));
    server.create(rawNode("node-b", ["10.0.0.2"]));
    server.create(lbService("web"));
    await using c = await controller(server);
    await untilIngress(server, "web", proxy("10.0.0.1", "10.0.0.2"));
    expect(statusWrites(server, "web").map((r) => [r.method, r.status])).toEqual([["PATCH", 200]]);
    // The server applies the patch before the controller reads the answer and counts it.
    await waitFor(() => c.lb.status().writes === 1, { what: "the write counted" });
    expect(c.lb.status()).toMatchObject({ mode: "node-addresses", leading: true, services: 1, writes: 1, failures: [] });

    // A node appears: the list follows.
    server.create(rawNode("node-c", ["10.0.0.3"]));
    await untilIngress(server, "web", proxy("10.0.0.1", "10.0.0.2", "10.0.0.3"));

    server.patch("services", "default", "web", { spec: { type: "ClusterIP" } });
    await untilIngress(server, "web", undefined);
    expect(server.get("services", "default", "web")).toMatchObject({ status: { loadBalancer: {} } });
    await waitFor(() => c.lb.status().services === 0, { what: "no Service in scope" });
    expect(statusWrites(server, "web").length).toBe(3);
  });

  test("another loadBalancerClass is never touched; unclassed only when claimed", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    server.create(rawNode("node-a", ["10.0.0.1"]));
    server.create(lbService("other", { loadBalancerClass: "example.com/lb" }));
    server.patch("services", "default", "other", { status: { loadBalancer: { ingress: [{ ip: "198.51.100.9", ipMode: "VIP" }] } } });
    server.create(lbService("unclassed"));
    const before = server.get("services", "default", "other");
    await using _c = await controller(server, { claimUnclassed: false });
    server.create(lbService("mine", { loadBalancerClass: "kubegate.io/lb" }));
    await untilIngress(server, "mine", proxy("10.0.0.1"));
    // The pass that wrote "mine" saw the two others (created earlier) and left them alone.
    expect(server.get("services", "default", "other")).toEqual(before);
    expect(svcIngress(server, "unclassed")).toBeUndefined();
    expect(statusWrites(server, "other")).toEqual([]);
    expect(statusWrites(server, "unclassed")).toEqual([]);
  });

  test("externalTrafficPolicy Local lists only nodes with ready endpoints, and follows readiness", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    for (const [name, ip] of [["node-a", "10.0.0.1"], ["node-b", "10.0.0.2"], ["node-c", "10.0.0.3"]] as const) server.create(rawNode(name, [ip]));
    server.create(lbService("local", { externalTrafficPolicy: "Local" }));
    server.create(rawSlice("local-1", "local", [["10.1.0.1", "node-a", false], ["10.1.0.2", "node-b", true]]));
    await using _c = await controller(server);
    await untilIngress(server, "local", proxy("10.0.0.2"));
    server.patch("endpointslices.discovery.k8s.io", "default", "local-1", {
      endpoints: [
        { addresses: ["10.1.0.1"], nodeName: "node-a", conditions: { ready: true } },
        { addresses: ["10.1.0.2"], nodeName: "node-b", conditions: { ready: true } },
      ],
    });
    await untilIngress(server, "local", proxy("10.0.0.1", "10.0.0.2"));
    server.remove("endpointslices.discovery.k8s.io", "default", "local-1");
    await untilIngress(server, "local", undefined);
  });
});

describe("pool (MetalLB style)", () => {
  test("stable allocation, loadBalancerIP honoured, exhaustion reported as an Event, release on delete", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    const pool = ["192.0.2.0/30"]; // .1 and .2
    {
      await using c = await controller(server, { pool });
      server.create(lbService("a"));
      await untilIngress(server, "a", proxy("192.0.2.1"));
      server.create(lbService("b", { loadBalancerIP: "192.0.2.2" }));
      await untilIngress(server, "b", proxy("192.0.2.2"));
      server.create(lbService("c"));
      const event = await waitFor(() => server.items("events").find((e) => (e as { reason?: string }).reason === "AllocationFailed"), {
        what: "an AllocationFailed Event",
      });
      expect(event).toMatchObject({
        type: "Warning",
        message: 'Cannot allocate a load balancer IP: every address of pool "192.0.2.0/30" is in use',
        involvedObject: { kind: "Service", namespace: "default", name: "c", uid: (server.get("services", "default", "c") as { metadata: { uid: string } }).metadata.uid },
        source: { component: "kubegate", host: "node-a" },
        reportingComponent: "kubegate",
        reportingInstance: "node-a",
        count: 1,
      });
      expect(svcIngress(server, "c")).toBeUndefined();
      expect(c.lb.status()).toMatchObject({
        mode: "pool",
        services: 3,
        pool: { cidrs: ["192.0.2.0/30"], size: 2, used: 2 },
        failures: [{ service: "default/c", reason: "AllocationFailed" }],
      });
    }
    // A new controller (a new leader) keeps every address: no status is rewritten.
    const writes = server.requests.filter((r) => r.path.endsWith("/status") && r.method === "PATCH").length;
    {
      await using c = await controller(server, { pool });
      await waitFor(() => c.lb.status().services === 3, { what: "the new leader's first pass" });
      expect(server.requests.filter((r) => r.path.endsWith("/status") && r.method === "PATCH").length).toBe(writes);
      // Deleting "a" frees .1 for "c".
      server.remove("services", "default", "a");
      await untilIngress(server, "c", proxy("192.0.2.1"));
      expect(svcIngress(server, "b")).toEqual(proxy("192.0.2.2"));
      // Changing "c" to ClusterIP clears its status and releases the address.
      server.patch("services", "default", "c", { spec: { type: "ClusterIP" } });
      await untilIngress(server, "c", undefined);
      await waitFor(() => c.lb.status().pool?.used === 1, { what: "the address released" });
    }
  });

  test("a bad pool is refused at start with the entry named", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    await expect(controller(server, { pool: ["192.0.2.0/33"] })).rejects.toThrow('Invalid load balancer pool entry "192.0.2.0/33"');
  });
});
