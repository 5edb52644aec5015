/** Which LoadBalancer Services get LoadBalancer entrypoints, by spec.loadBalancerClass and --[no-]lb-claim-unclassed. */
import { expect, test } from "bun:test";
import { parseObject, type Service } from "../../src/kube/objects.ts";
import { buildSnapshot, LOAD_BALANCER_CLASS } from "../../src/model/build.ts";
import type { ModelOptions } from "../../src/model/types.ts";

const lb = (name: string, loadBalancerClass?: string): Service => {
  const r = parseObject("Service", {
    metadata: { name, namespace: "ns", creationTimestamp: "2026-01-01T00:00:00Z" },
    spec: { type: "LoadBalancer", ports: [{ name: "p", port: 8000 + name.length, nodePort: 30000 + name.length }], ...(loadBalancerClass ? { loadBalancerClass } : {}) },
  });
  if (!r.ok) throw new Error(r.error);
  return r.value;
};

const options = (claim?: boolean): ModelOptions => ({
  nodeName: "n",
  hostAddresses: ["127.0.0.1"],
  nodePortAddresses: [],
  serviceProxyName: "kubegate",
  allServices: true,
  ...(claim === undefined ? {} : { claimUnclassedLoadBalancers: claim }),
});

const keys = (claim?: boolean) =>
  buildSnapshot(
    { services: [lb("a"), lb("bb", LOAD_BALANCER_CLASS), lb("ccc", "example.com/other")], endpointSlices: [], nodes: [] },
    options(claim),
  ).entrypoints.map((e) => e.key);

test("unclassed LoadBalancer Services are ours unless --no-lb-claim-unclassed; other classes never are (NodePorts always)", () => {
  const both = ["LoadBalancer/ns/a:p", "LoadBalancer/ns/bb:p", "NodePort/ns/a:p", "NodePort/ns/bb:p", "NodePort/ns/ccc:p"];
  expect(keys()).toEqual(both);
  expect(keys(true)).toEqual(both);
  expect(keys(false)).toEqual(["LoadBalancer/ns/bb:p", "NodePort/ns/a:p", "NodePort/ns/bb:p", "NodePort/ns/ccc:p"]);
});
