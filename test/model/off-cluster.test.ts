/** `--local`'s model: LoadBalancer ports moved up by --lb-port-offset, and externalTrafficPolicy Local served off the cluster. */
import { expect, test } from "bun:test";
import { parseObject, type EndpointSlice, type Service } from "../../src/kube/objects.ts";
import { buildSnapshot } from "../../src/model/build.ts";
import { lbPort } from "../../src/model/port-exposure.ts";
import type { ModelOptions } from "../../src/model/types.ts";

const service = (spec: Record<string, unknown>): Service => {
  const r = parseObject("Service", { metadata: { name: "web", namespace: "ns", creationTimestamp: "2026-01-01T00:00:00Z" }, spec });
  if (!r.ok) throw new Error(r.error);
  return r.value;
};

const slice = (nodeName: string): EndpointSlice => {
  const r = parseObject("EndpointSlice", {
    metadata: { name: "web-abc", namespace: "ns", labels: { "kubernetes.io/service-name": "web" } },
    addressType: "IPv4",
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints: [{ addresses: ["10.244.1.5"], conditions: { ready: true }, nodeName, targetRef: { kind: "Pod", name: "web-1", namespace: "ns" } }],
  });
  if (!r.ok) throw new Error(r.error);
  return r.value;
};

const options = (extra: Partial<ModelOptions> = {}): ModelOptions => ({
  nodeName: "",
  hostAddresses: ["127.0.0.1"],
  nodePortAddresses: [],
  serviceProxyName: "kubegate",
  allServices: true,
  ...extra,
});

const lbService = service({
  type: "LoadBalancer",
  ports: [
    { name: "http", port: 80, targetPort: 8080, nodePort: 30080 },
    { name: "alt", port: 8443, targetPort: 8080, nodePort: 30443 },
  ],
});

const ports = (extra: Partial<ModelOptions>) =>
  buildSnapshot({ services: [lbService], endpointSlices: [], nodes: [] }, options(extra)).entrypoints.map((e) => `${e.type}:${e.port}`).sort();

test("--lb-port-offset moves LoadBalancer ports below 1024 up and leaves the others and every NodePort alone", () => {
  expect(ports({})).toEqual(["LoadBalancer:80", "LoadBalancer:8443", "NodePort:30080", "NodePort:30443"]);
  expect(ports({ lbPortOffset: 8000 })).toEqual(["LoadBalancer:8080", "LoadBalancer:8443", "NodePort:30080", "NodePort:30443"]);
  expect([lbPort(1023, 1), lbPort(1024, 1), lbPort(22, 0)]).toEqual([1024, 1024, 22]);
});

test("externalTrafficPolicy Local has no endpoint on a node that is not in the cluster, unless the gateway runs off the cluster", () => {
  const local = service({ type: "NodePort", externalTrafficPolicy: "Local", ports: [{ name: "http", port: 80, targetPort: 8080, nodePort: 30080 }] });
  const serving = (extra: Partial<ModelOptions>) =>
    buildSnapshot({ services: [local], endpointSlices: [slice("kind-worker")], nodes: [] }, options(extra)).entrypoints[0]!.cluster.serving.map((e) => e.address);
  expect(serving({})).toEqual([]);
  expect(serving({ offCluster: true })).toEqual(["10.244.1.5"]);
});
