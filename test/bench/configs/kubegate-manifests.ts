/**
 * The manifest directory kubegate serves in the benchmark: a Node, five NodePort Services (an HTTP
 * entrypoint and a TCP entrypoint over the same two backends, a TCP entrypoint to the iperf3
 * server, which must have one endpoint because iperf3's control and data connections must meet the
 * same server, a TCP entrypoint to the echo server, and, when given its ports, an HTTP/2 cleartext entrypoint,
 * appProtocol kubernetes.io/h2c, over the h2c origins) and their EndpointSlices; and the gRPC benchmark's Services.
 */
import { stringify } from "yaml";

/** NodePorts of kubegate's entrypoints and the backends behind them. */
export interface KubegateManifestConfig {
  readonly nodeName: string;
  readonly httpNodePort: number;
  readonly tcpNodePort: number;
  readonly iperfNodePort: number;
  readonly backends: readonly number[];
  readonly iperfBackend: number;
  readonly echoNodePort: number;
  readonly echoBackend: number;
  /** The h2c entrypoint and its origins; without them, no h2c Service (e.g. for the idle-memory benchmark). */
  readonly h2c?: { readonly nodePort: number; readonly backends: readonly number[] };
}

export const benchNamespace = "bench";

function service(name: string, nodePort: number, appProtocol?: string): object {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name,
      namespace: benchNamespace,
      creationTimestamp: "2026-01-01T00:00:00Z",
      labels: { "service.kubernetes.io/service-proxy-name": "kubegate" },
    },
    spec: {
      type: "NodePort",
      selector: { app: name },
      ports: [{ name: "port", port: 80, targetPort: "port", nodePort, protocol: "TCP", ...(appProtocol ? { appProtocol } : {}) }],
    },
  };
}

function slice(service: string, index: number, port: number, nodeName: string): object {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: `${service}-${index}`, namespace: benchNamespace, labels: { "kubernetes.io/service-name": service } },
    addressType: "IPv4",
    ports: [{ name: "port", port, protocol: "TCP" }],
    endpoints: [
      {
        addresses: ["127.0.0.1"],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName,
        targetRef: { kind: "Pod", namespace: benchNamespace, name: `${service}-${index}` },
      },
    ],
  };
}

function node(name: string): object {
  return { apiVersion: "v1", kind: "Node", metadata: { name }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } };
}

function yaml(docs: readonly object[]): string {
  return docs.map((d) => stringify(d)).join("---\n");
}

/** The manifests as one multi-document YAML text. */
export function kubegateManifests(c: KubegateManifestConfig): string {
  return yaml([
    node(c.nodeName),
    service("web-http", c.httpNodePort, "http"),
    service("web-tcp", c.tcpNodePort),
    service("iperf", c.iperfNodePort),
    service("echo", c.echoNodePort),
    ...c.backends.flatMap((port, i) => [slice("web-http", i + 1, port, c.nodeName), slice("web-tcp", i + 1, port, c.nodeName)]),
    slice("iperf", 1, c.iperfBackend, c.nodeName),
    slice("echo", 1, c.echoBackend, c.nodeName),
    ...(c.h2c ? [service("web-h2c", c.h2c.nodePort, "kubernetes.io/h2c"), ...c.h2c.backends.map((port, i) => slice("web-h2c", i + 1, port, c.nodeName))] : []),
  ]);
}

/** A NodePort Service with appProtocol grpc over some gRPC servers on 127.0.0.1. */
export interface GrpcServiceConfig {
  readonly name: string;
  readonly nodePort: number;
  readonly backends: readonly number[];
}

/**
 * The gRPC benchmark's manifests: a Node and the `services` (appProtocol grpc), one EndpointSlice per endpoint.
 * @example grpcManifests("bench-node", [{ name: "grpc", nodePort: 31000, backends: [50051, 50052] }])
 */
export function grpcManifests(nodeName: string, services: readonly GrpcServiceConfig[]): string {
  return yaml([node(nodeName), ...services.flatMap((s) => [service(s.name, s.nodePort, "grpc"), ...s.backends.map((port, i) => slice(s.name, i + 1, port, nodeName))])]);
}
