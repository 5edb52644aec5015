/** Objects and clients shared by the controller suites. */
import { parseObject, type EndpointSlice, type Node, type Service } from "../../src/kube/objects.ts";

/** A raw LoadBalancer Service (merge `spec` and `status` over the defaults). */
export function lbService(name: string, spec: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "default" },
    spec: { type: "LoadBalancer", selector: { app: name }, ports: [{ name: "http", port: 80, protocol: "TCP" }], ...spec },
    ...extra,
  };
}

/** A raw Node with addresses (`InternalIP` unless typed `ExternalIP:1.2.3.4`). */
export function rawNode(name: string, addresses: string[], labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name, labels },
    status: {
      addresses: addresses.map((a) => (a.includes("IP:") ? { type: a.slice(0, a.indexOf(":")), address: a.slice(a.indexOf(":") + 1) } : { type: "InternalIP", address: a })),
    },
  };
}

/** A raw EndpointSlice of `svc` with one endpoint per `[ip, node, ready]`. */
export function rawSlice(name: string, svc: string, endpoints: [ip: string, node: string, ready: boolean | undefined][]): Record<string, unknown> {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    endpoints: endpoints.map(([ip, nodeName, ready]) => ({ addresses: [ip], nodeName, conditions: ready === undefined ? {} : { ready } })),
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  };
}

/** Parse raw objects as the reflector would (throws on invalid input: fixtures must be valid). */
export function parsed<K extends "Service" | "Node" | "EndpointSlice">(kind: K, raw: unknown): K extends "Service" ? Service : K extends "Node" ? Node : EndpointSlice {
  const r = parseObject(kind, raw);
  if (!r.ok) throw new Error(`Invalid ${kind} fixture: ${r.error}`);
  return r.value as never;
}

/** `status.loadBalancer.ingress` of a raw Service from the server. */
export function ingressOf(obj: object | undefined): unknown {
  return (obj as { status?: { loadBalancer?: { ingress?: unknown } } } | undefined)?.status?.loadBalancer?.ingress;
}
