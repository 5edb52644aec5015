/** The controller against the in-memory fake: status written, kept, cleared; classes honoured; pool allocation; write failures. */
import { describe, expect, test } from "bun:test";
import { startLbController, type LbControllerOptions } from "../../src/controller/index.ts";
import { silentLogger } from "../../src/log.ts";
import { FakeKube, fakeTuning } from "../support/fake-kube.ts";
import { waitFor } from "../support/wait.ts";
import { ingressOf, lbService, rawNode } from "../support/controller-objects.ts";

const fastLease = { leaseDurationSeconds: 1, renewDeadlineMs: 700, retryPeriodMs: 150 };
const proxy = (...ips: string[]) => ips.map((ip) => ({ ip, ipMode: "Proxy" }));
const fixture = (name: string) => new FakeKube().load(`${import.meta.dir}/fixtures/${name}.yaml`);

const controller = (kube: FakeKube, options: Partial<LbControllerOptions> = {}) =>
  startLbController({ client: kube.client("node-a"), nodeName: "node-a", lease: fastLease, reflector: fakeTuning, log: silentLogger, ...options });

const svcIngress = (kube: FakeKube, name: string) => ingressOf(kube.get("services", "default", name));
/** Status writes (patches of `/status`) of one Service, or of all. */
const statusWrites = (kube: FakeKube, name?: string) =>
  kube.calls.filter((c) => c.resource === "services" && c.subresource === "status" && c.verb === "patch" && (name === undefined || c.name === name));

async function untilIngress(kube: FakeKube, name: string, want: unknown): Promise<void> {
  await waitFor(() => Bun.deepEquals(svcIngress(kube, name), want), { what: `ingress of "${name}" to be ${JSON.stringify(want)}` }).catch(() => {});
  expect(svcIngress(kube, name)).toEqual(want);
}

describe("node addresses (ServiceLB style)", () => {
  test("written for a LoadBalancer Service with ipMode Proxy, once, and cleared when it becomes ClusterIP", async () => {
    const kube = fixture("node-addresses");
    await using lb = controller(kube);
    await untilIngress(kube, "web", proxy("10.0.0.1", "10.0.0.2"));
    expect(statusWrites(kube, "web").map((c) => [c.verb, c.status])).toEqual([["patch", 200]]);
    // The write carries the resourceVersion it was planned on, so a Service changed meanwhile answers 409.
    expect(statusWrites(kube, "web")[0]?.body).toEqual({
      metadata: { resourceVersion: expect.any(String) },
      status: { loadBalancer: { ingress: proxy("10.0.0.1", "10.0.0.2") } },
    });
    // The write is applied before the controller reads the answer and counts it.
    await waitFor(() => lb.status().writes === 1, { what: "the write counted" });
    expect(lb.status()).toMatchObject({ mode: "node-addresses", leading: true, services: 1, writes: 1, failures: [] });

    // A node appears: the list follows.
    kube.create(rawNode("node-c", ["10.0.0.3"]));
    await untilIngress(kube, "web", proxy("10.0.0.1", "10.0.0.2", "10.0.0.3"));

    kube.patch("services", "default", "web", { spec: { type: "ClusterIP" } });
    await untilIngress(kube, "web", undefined);
    expect(kube.get("services", "default", "web")).toMatchObject({ status: { loadBalancer: {} } });
    await waitFor(() => lb.status().services === 0, { what: "no Service in scope" });
    expect(statusWrites(kube, "web").length).toBe(3);
  });

  test("another loadBalancerClass is never touched; unclassed only when claimed", async () => {
    const kube = fixture("other-class");
    const before = kube.get("services", "default", "other");
    expect(ingressOf(before)).toEqual([{ ip: "198.51.100.9", ipMode: "VIP" }]);
    await using _lb = controller(kube, { claimUnclassed: false });
    kube.create(lbService("mine", { loadBalancerClass: "kubegate.io/lb" }));
    await untilIngress(kube, "mine", proxy("10.0.0.1"));
    // The pass that wrote "mine" saw the two others (created earlier) and left them alone.
    expect(kube.get("services", "default", "other")).toEqual(before);
    expect(svcIngress(kube, "unclassed")).toBeUndefined();
    expect(statusWrites(kube, "other")).toEqual([]);
    expect(statusWrites(kube, "unclassed")).toEqual([]);
  });

  test("externalTrafficPolicy Local lists only nodes with ready endpoints, and follows readiness", async () => {
    const kube = fixture("local-policy");
    await using _lb = controller(kube);
    await untilIngress(kube, "local", proxy("10.0.0.2"));
    kube.patch("endpointslices", "default", "local-1", {
      endpoints: [
        { addresses: ["10.1.0.1"], nodeName: "node-a", conditions: { ready: true } },
        { addresses: ["10.1.0.2"], nodeName: "node-b", conditions: { ready: true } },
      ],
    });
    await untilIngress(kube, "local", proxy("10.0.0.1", "10.0.0.2"));
    kube.remove("endpointslices", "default", "local-1");
    await untilIngress(kube, "local", undefined);
  });
});

describe("pool (MetalLB style)", () => {
  test("stable allocation, loadBalancerIP honoured, exhaustion reported as an Event, release on delete", async () => {
    const kube = new FakeKube();
    const pool = ["192.0.2.0/30"]; // .1 and .2
    {
      await using lb = controller(kube, { pool });
      kube.create(lbService("a"));
      await untilIngress(kube, "a", proxy("192.0.2.1"));
      kube.create(lbService("b", { loadBalancerIP: "192.0.2.2" }));
      await untilIngress(kube, "b", proxy("192.0.2.2"));
      kube.create(lbService("c"));
      const event = await waitFor(() => kube.items("events").find((e) => (e as { reason?: string }).reason === "AllocationFailed"), {
        what: "an AllocationFailed Event",
      });
      expect(event).toMatchObject({
        type: "Warning",
        message: 'Cannot allocate a load balancer IP: every address of pool "192.0.2.0/30" is in use',
        involvedObject: { kind: "Service", namespace: "default", name: "c", uid: (kube.get("services", "default", "c") as { metadata: { uid: string } }).metadata.uid },
        source: { component: "kubegate", host: "node-a" },
        reportingComponent: "kubegate",
        reportingInstance: "node-a",
        count: 1,
      });
      expect(svcIngress(kube, "c")).toBeUndefined();
      expect(lb.status()).toMatchObject({
        mode: "pool",
        services: 3,
        pool: { cidrs: ["192.0.2.0/30"], size: 2, used: 2 },
        failures: [{ service: "default/c", reason: "AllocationFailed" }],
      });
    }
    // A new controller (a new leader) keeps every address: no status is rewritten.
    const writes = statusWrites(kube).length;
    {
      await using lb = controller(kube, { pool });
      await waitFor(() => lb.status().services === 3, { what: "the new leader's first pass" });
      expect(statusWrites(kube).length).toBe(writes);
      // Deleting "a" frees .1 for "c".
      kube.remove("services", "default", "a");
      await untilIngress(kube, "c", proxy("192.0.2.1"));
      expect(svcIngress(kube, "b")).toEqual(proxy("192.0.2.2"));
      // Changing "c" to ClusterIP clears its status and releases the address.
      kube.patch("services", "default", "c", { spec: { type: "ClusterIP" } });
      await untilIngress(kube, "c", undefined);
      await waitFor(() => lb.status().pool?.used === 1, { what: "the address released" });
    }
  });

  test("a bad pool is refused at start with the entry named", () => {
    expect(() => controller(new FakeKube(), { pool: ["192.0.2.0/33"] })).toThrow('Invalid load balancer pool entry "192.0.2.0/33"');
  });
});

describe("failed status writes", () => {
  test("a write that fails is retried with backoff and then made; the error is reported", async () => {
    const kube = fixture("node-addresses");
    using _once = kube.failNext(1, { match: (c) => c.subresource === "status", status: 500 });
    await using lb = controller(kube);
    await untilIngress(kube, "web", proxy("10.0.0.1", "10.0.0.2"));
    expect(statusWrites(kube, "web").map((c) => [c.verb, c.status])).toEqual([["patch", 500], ["patch", 200]]);
    await waitFor(() => lb.status().writes === 1, { what: "the write counted" });
    expect(lb.status().lastError).toContain("500");
    expect(lb.status().failures).toEqual([]);
  });

  test("a 409 (the Service changed meanwhile) is not retried on the stale version: the next write is planned on the new one", async () => {
    const kube = fixture("node-addresses");
    using _once = kube.failNext(1, { match: (c) => c.subresource === "status", status: 409 });
    await using lb = controller(kube);
    await waitFor(() => statusWrites(kube, "web").length === 1 && statusWrites(kube, "web")[0]?.status === 409, { what: "the refused write" });
    expect(svcIngress(kube, "web")).toBeUndefined();
    // The newer version the 409 stood for arrives through the watch.
    const changed = kube.patch("services", "default", "web", { metadata: { labels: { tier: "front" } } }) as { metadata: { resourceVersion: string } };
    await untilIngress(kube, "web", proxy("10.0.0.1", "10.0.0.2"));
    const [refused, written, ...more] = statusWrites(kube, "web");
    expect(more).toEqual([]);
    expect(written).toMatchObject({ status: 200, body: { metadata: { resourceVersion: changed.metadata.resourceVersion } } });
    expect(refused?.body).toMatchObject({ metadata: { resourceVersion: expect.not.stringMatching(`^${changed.metadata.resourceVersion}$`) } });
    // A conflict is the normal course of optimistic concurrency, not an error.
    await waitFor(() => lb.status().writes === 1, { what: "the write counted" });
    expect(lb.status().lastError).toBeUndefined();
  });
});
