import { describe, expect, test } from "bun:test";
import type { EndpointSlice, Node, Service } from "../../src/kube/objects.ts";
import { inScope, planLoadBalancers, sameIngress, type LbPlanInput } from "../../src/controller/lb-status.ts";
import { parsePool } from "../../src/controller/pool.ts";
import { lbService, parsed, rawNode, rawSlice } from "../support/controller-objects.ts";

const proxy = (...ips: string[]) => ips.map((ip) => ({ ip, ipMode: "Proxy" as const }));

function input(
  services: Record<string, unknown>[],
  more: { nodes?: Record<string, unknown>[]; slices?: Record<string, unknown>[]; managed?: string[]; allocations?: Record<string, string> } = {},
): LbPlanInput {
  const svcs = new Map<string, Service>();
  for (const raw of services) {
    const s = parsed("Service", raw);
    svcs.set(`${s.metadata.namespace}/${s.metadata.name}`, s);
  }
  const nodes = new Map<string, Node>();
  for (const raw of more.nodes ?? []) {
    const n = parsed("Node", raw);
    nodes.set(n.metadata.name, n);
  }
  const slices = new Map<string, EndpointSlice>();
  for (const raw of more.slices ?? []) {
    const e = parsed("EndpointSlice", raw);
    slices.set(`${e.metadata.namespace}/${e.metadata.name}`, e);
  }
  return { services: svcs, nodes, endpointSlices: slices, managed: new Set(more.managed ?? []), allocations: new Map(Object.entries(more.allocations ?? {})) };
}

const withStatus = (ips: string[], ipMode = "Proxy") => ({ status: { loadBalancer: { ingress: ips.map((ip) => ({ ip, ipMode })) } } });
const created = (t: string) => ({ metadata: { name: "", namespace: "default", creationTimestamp: t } });
function aged(name: string, t: string, spec: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  const s = lbService(name, spec, extra);
  return { ...s, metadata: { ...created(t).metadata, name } };
}

describe("inScope", () => {
  test.each([
    [{ type: "LoadBalancer" }, true, true],
    [{ type: "LoadBalancer" }, false, false],
    [{ type: "LoadBalancer", loadBalancerClass: "kubegate.io/lb" }, false, true],
    [{ type: "LoadBalancer", loadBalancerClass: "other.io/lb" }, true, false],
    [{ type: "NodePort" }, true, false],
    [{ type: "ClusterIP" }, true, false],
  ])("%j claimUnclassed=%p -> %p", (spec, claim, want) => {
    expect(inScope(parsed("Service", lbService("a", spec)), claim)).toBe(want);
  });
});

describe("node addresses (ServiceLB style)", () => {
  const nodes = [rawNode("node-b", ["10.0.0.2", "fd00::2"]), rawNode("node-a", ["10.0.0.1"]), rawNode("node-c", ["10.0.0.3"], { "node.kubernetes.io/exclude-from-external-load-balancers": "" })];

  test("every eligible node's InternalIP, sorted, each with ipMode Proxy", () => {
    const plan = planLoadBalancers(input([lbService("web")], { nodes }), { claimUnclassed: true });
    expect([...plan.decisions.values()]).toEqual([
      { key: "default/web", inScope: true, desired: proxy("10.0.0.1", "10.0.0.2", "fd00::2"), write: true, failure: undefined },
    ]);
    expect(plan.allocations.size).toBe(0);
  });

  test("ExternalIPs win over InternalIPs when any node has one; ipFamilies filter", () => {
    const ext = [rawNode("a", ["10.0.0.1", "ExternalIP:203.0.113.1"]), rawNode("b", ["10.0.0.2", "ExternalIP:2001:db8::2"])];
    const plan = planLoadBalancers(input([lbService("v4", { ipFamilies: ["IPv4"] }), lbService("any")], { nodes: ext }), { claimUnclassed: true });
    expect(plan.decisions.get("default/v4")?.desired).toEqual(proxy("203.0.113.1"));
    expect(plan.decisions.get("default/any")?.desired).toEqual(proxy("203.0.113.1", "2001:db8::2"));
  });

  test("externalTrafficPolicy Local lists only nodes with a ready endpoint (unset ready counts as ready)", () => {
    const slices = [
      rawSlice("web-1", "web", [["10.1.0.1", "node-a", false], ["10.1.0.2", "node-b", undefined]]),
      rawSlice("other-1", "other", [["10.1.0.3", "node-a", true]]),
    ];
    const plan = planLoadBalancers(
      input([lbService("web", { externalTrafficPolicy: "Local" }), lbService("none", { externalTrafficPolicy: "Local" })], { nodes, slices }),
      { claimUnclassed: true },
    );
    expect(plan.decisions.get("default/web")?.desired).toEqual(proxy("10.0.0.2", "fd00::2"));
    expect(plan.decisions.get("default/none")?.desired).toEqual([]);
  });

  test("no write when the status already matches", () => {
    const plan = planLoadBalancers(input([lbService("web", {}, withStatus(["10.0.0.1"]))], { nodes: [rawNode("a", ["10.0.0.1"])] }), { claimUnclassed: true });
    expect(plan.decisions.get("default/web")?.write).toBe(false);
  });

  test("another class is never touched, even with ingress and managed", () => {
    const plan = planLoadBalancers(
      input([lbService("x", { loadBalancerClass: "other.io/lb" }, withStatus(["1.2.3.4"]))], { nodes, managed: [] }),
      { claimUnclassed: true },
    );
    expect(plan.decisions.size).toBe(0);
  });
});

describe("cleanup", () => {
  const clusterIP = (name: string, status: object) => ({ ...lbService(name, { type: "ClusterIP" }), ...status });

  test("a managed Service that left the scope is cleared; once clear it is released", () => {
    const plan = planLoadBalancers(input([clusterIP("a", withStatus(["10.0.0.1"])), clusterIP("b", {})], { managed: ["default/a", "default/b", "default/gone"] }), {
      claimUnclassed: true,
    });
    expect([...plan.decisions.values()]).toEqual([{ key: "default/a", inScope: false, desired: [], write: true }]);
    expect(plan.release).toEqual(["default/b", "default/gone"]);
  });

  test("a stale ipMode Proxy ingress on a non-LoadBalancer Service is cleared only when claiming unclassed", () => {
    const services = [clusterIP("proxy", withStatus(["10.0.0.1"])), clusterIP("vip", withStatus(["10.0.0.1"], "VIP"))];
    expect([...planLoadBalancers(input(services), { claimUnclassed: true }).decisions.keys()]).toEqual(["default/proxy"]);
    expect(planLoadBalancers(input(services), { claimUnclassed: false }).decisions.size).toBe(0);
  });
});

describe("pool (MetalLB style)", () => {
  const pool = parsePool(["192.0.2.0/30"]); // .1 and .2 are usable

  test("one address per Service, lowest free, oldest first; exhaustion fails with an event reason", () => {
    const plan = planLoadBalancers(input([aged("c", "2024-01-03T00:00:00Z"), aged("a", "2024-01-01T00:00:00Z"), aged("b", "2024-01-02T00:00:00Z")]), {
      claimUnclassed: true,
      pool,
    });
    expect(Object.fromEntries(plan.allocations)).toEqual({ "default/a": "192.0.2.1", "default/b": "192.0.2.2" });
    expect(plan.decisions.get("default/a")?.desired).toEqual(proxy("192.0.2.1"));
    expect(plan.decisions.get("default/c")).toEqual({
      key: "default/c",
      inScope: true,
      desired: [],
      write: false,
      failure: { reason: "AllocationFailed", message: 'Cannot allocate a load balancer IP: every address of pool "192.0.2.0/30" is in use' },
    });
  });

  test("a held address is kept even against an older newcomer; loadBalancerIP is honoured when free", () => {
    const plan = planLoadBalancers(
      input([aged("old", "2024-01-01T00:00:00Z"), aged("held", "2024-01-05T00:00:00Z", {}, withStatus(["192.0.2.1"])), aged("want", "2024-01-06T00:00:00Z", { loadBalancerIP: "192.0.2.2" })]),
      { claimUnclassed: true, pool },
    );
    expect(Object.fromEntries(plan.allocations)).toEqual({ "default/held": "192.0.2.1", "default/want": "192.0.2.2" });
    expect(plan.decisions.get("default/held")?.write).toBe(false);
    expect(plan.decisions.get("default/old")?.failure?.reason).toBe("AllocationFailed");
  });

  test("loadBalancerIP outside the pool or in use fails; an earlier pass's allocation is kept", () => {
    const plan = planLoadBalancers(
      input([aged("out", "2024-01-01T00:00:00Z", { loadBalancerIP: "198.51.100.7" }), aged("mine", "2024-01-02T00:00:00Z"), aged("dup", "2024-01-03T00:00:00Z", { loadBalancerIP: "192.0.2.2" })], {
        allocations: { "default/mine": "192.0.2.2" },
      }),
      { claimUnclassed: true, pool },
    );
    expect(Object.fromEntries(plan.allocations)).toEqual({ "default/mine": "192.0.2.2" });
    expect(plan.decisions.get("default/out")?.failure?.message).toBe('Cannot allocate load balancer IP "198.51.100.7": it is not a usable address of pool "192.0.2.0/30"');
    expect(plan.decisions.get("default/dup")?.failure?.message).toBe('Cannot allocate load balancer IP "192.0.2.2": it is in use by Service "default/mine"');
  });

  test("a Service whose loadBalancerIP changed moves to the requested address", () => {
    const plan = planLoadBalancers(input([aged("a", "2024-01-01T00:00:00Z", { loadBalancerIP: "192.0.2.2" }, withStatus(["192.0.2.1"]))]), { claimUnclassed: true, pool });
    expect(plan.decisions.get("default/a")).toMatchObject({ desired: proxy("192.0.2.2"), write: true });
  });

  test("the primary family picks the range", () => {
    const dual = parsePool(["192.0.2.0/30", "2001:db8::/126"]);
    const plan = planLoadBalancers(input([aged("v6", "2024-01-01T00:00:00Z", { ipFamilies: ["IPv6"] })]), { claimUnclassed: true, pool: dual });
    expect(plan.decisions.get("default/v6")?.desired).toEqual(proxy("2001:db8::"));
  });
});

test("sameIngress compares ip, hostname and ipMode in order", () => {
  expect(sameIngress(proxy("1.1.1.1"), [{ ip: "1.1.1.1", ipMode: "Proxy" }])).toBe(true);
  expect(sameIngress(proxy("1.1.1.1"), [{ ip: "1.1.1.1", ipMode: "VIP" }])).toBe(false);
  expect(sameIngress(proxy("1.1.1.1", "2.2.2.2"), proxy("2.2.2.2", "1.1.1.1"))).toBe(false);
});
