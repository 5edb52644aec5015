/**
 * The manifest directory kubegate serves in the benchmark: a Node, four NodePort Services (an HTTP
 * entrypoint and a TCP entrypoint over the same two backends, a TCP entrypoint to the iperf3
 * server, which must have one endpoint because iperf3's control and data connections must meet the
 * same server, and a TCP entrypoint to the echo server) and their EndpointSlices.
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

/** The manifests as one multi-document YAML text. */
export function kubegateManifests(c: KubegateManifestConfig): string {
  const docs: object[] = [
    {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: c.nodeName },
      status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] },
    },
    service("web-http", c.httpNodePort, "http"),
    service("web-tcp", c.tcpNodePort),
    service("iperf", c.iperfNodePort),
    service("echo", c.echoNodePort),
    ...c.backends.flatMap((port, i) => [slice("web-http", i + 1, port, c.nodeName), slice("web-tcp", i + 1, port, c.nodeName)]),
    slice("iperf", 1, c.iperfBackend, c.nodeName),
    slice("echo", 1, c.echoBackend, c.nodeName),
  ];
  return docs.map((d) => stringify(d)).join("---\n");
}
