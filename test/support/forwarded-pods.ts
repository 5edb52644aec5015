/**
 * Pods as a local cluster (kind, k3d) has them, for the `--endpoint-access port-forward|auto` suites: Running on node
 * `kind-worker` at an address the test machine need not reach, behind EndpointSlices whose endpoints name them
 * (`targetRef`), their container ports relayed by the test API server's pods/portforward to local backends.
 */
import type { TestApiServer } from "./apiserver.ts";

/** A Running pod `namespace/name` at `ip` (label `app`: the name without its `-N` suffix), with one container port. */
export function rawPod(namespace: string, name: string, ip: string, containerPort?: number): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, labels: { app: name.replace(/-\d+$/, "") } },
    spec: { nodeName: "kind-worker", containers: [{ name: "c", image: "app", ...(containerPort !== undefined ? { ports: [{ containerPort }] } : {}) }] },
    status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
  };
}

/** An EndpointSlice of Service `service` with ready endpoints naming their pods (`pod` absent: no targetRef). */
export function podSlice(namespace: string, name: string, service: string, port: { readonly name: string; readonly port: number }, endpoints: readonly { readonly ip: string; readonly pod?: string }[]): Record<string, unknown> {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace, labels: { "kubernetes.io/service-name": service } },
    addressType: "IPv4",
    ports: [{ name: port.name, port: port.port, protocol: "TCP" }],
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: true },
      nodeName: "kind-worker",
      ...(e.pod ? { targetRef: { kind: "Pod", namespace, name: e.pod } } : {}),
    })),
  };
}

/**
 * Create pod `namespace/name` at `ip` (never dialled through port-forward) and have the API server relay its
 * `containerPort` to `target` (a backend on loopback).
 * @example forwardedPod(api, "dev", "web-0", "10.244.1.10", 8080, { hostname: "127.0.0.1", port: backend.port });
 */
export function forwardedPod(api: TestApiServer, namespace: string, name: string, ip: string, containerPort: number, target: { readonly hostname: string; readonly port: number }): void {
  api.create(rawPod(namespace, name, ip, containerPort));
  api.forwardPod(namespace, name, containerPort, target);
}
