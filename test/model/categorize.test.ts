/**
 * kube-proxy's TestCategorizeEndpoints (pkg/proxy/topology_test.go), ported: the cases that apply to external
 * (NodePort/LoadBalancer) traffic. With externalTrafficPolicy Local that traffic goes to kube-proxy's
 * `localEndpoints`, with Cluster to its `clusterEndpoints`; internalTrafficPolicy concerns ClusterIP traffic, which
 * kubegate does not serve. Endpoints are built like kube-proxy's test structs: unset booleans are false (so a
 * not-ready endpoint is not serving unless the case says so); `isLocal` puts the endpoint on this node.
 * Node-hint cases (PreferSameNode) follow topology.go's topologyModeFromHints, which the ported file predates.
 */
import { describe, expect, test } from "bun:test";
import { type CategorizeOptions, categorize, selectEndpoints } from "../../src/model/endpoints.ts";
import type { Endpoint, EndpointSelection } from "../../src/model/types.ts";

const NODE = "node-a";

interface KpEndpoint {
  zoneHints?: string[];
  nodeHints?: string[];
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  isLocal?: boolean;
}

/** A kube-proxy BaseEndpointInfo as a kubegate Endpoint: `"10.1.2.3:80"` plus its fields. */
function kp(endpoint: string, info: KpEndpoint = {}): Endpoint {
  const [address, port] = endpoint.split(":") as [string, string];
  const hints: { forZones?: readonly string[]; forNodes?: readonly string[] } = {};
  if (info.zoneHints) hints.forZones = info.zoneHints;
  if (info.nodeHints) hints.forNodes = info.nodeHints;
  return {
    address,
    port: Number(port),
    ready: info.ready ?? false,
    serving: info.serving ?? false,
    terminating: info.terminating ?? false,
    nodeName: info.isLocal ? NODE : "node-b",
    ...(info.zoneHints || info.nodeHints ? { hints } : {}),
  };
}

interface Case {
  name: string;
  /** This node's zone label; undefined = no label. */
  zone?: string | undefined;
  policy: CategorizeOptions["policy"];
  endpoints: Endpoint[];
  expected: string[];
  selection?: Partial<EndpointSelection>;
}

const zoned = (ready4 = true, ready6 = true) => [
  kp("10.1.2.3:80", { zoneHints: ["zone-a"], ready: true }),
  kp("10.1.2.4:80", { zoneHints: ["zone-b"], ready: true }),
  kp("10.1.2.5:80", { zoneHints: ["zone-c"], ready: ready4 }),
  kp("10.1.2.6:80", { zoneHints: ["zone-a"], ready: ready6 }),
];

const cases: Case[] = [
  {
    name: "should use topology since all endpoints have hints, node has a zone label and there are endpoints for the node's zone",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: zoned(),
    expected: ["10.1.2.3:80", "10.1.2.6:80"],
    selection: { topology: "zone", fallback: "none" },
  },
  {
    name: "externalTrafficPolicy: Local, topology ignored for Local endpoints",
    zone: "zone-a",
    policy: "Local",
    endpoints: [
      kp("10.1.2.3:80", { zoneHints: ["zone-a"], ready: true, isLocal: true }),
      kp("10.1.2.4:80", { zoneHints: ["zone-b"], ready: true, isLocal: true }),
      kp("10.1.2.5:80", { zoneHints: ["zone-c"], ready: true }),
      kp("10.1.2.6:80", { zoneHints: ["zone-a"], ready: true }),
    ],
    expected: ["10.1.2.3:80", "10.1.2.4:80"],
    selection: { policy: "Local", topology: "none", topologyIgnored: "topology hints do not apply with externalTrafficPolicy Local" },
  },
  {
    name: "externalTrafficPolicy: Cluster on the same endpoints uses topology",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: [
      kp("10.1.2.3:80", { zoneHints: ["zone-a"], ready: true, isLocal: true }),
      kp("10.1.2.4:80", { zoneHints: ["zone-b"], ready: true, isLocal: true }),
      kp("10.1.2.5:80", { zoneHints: ["zone-c"], ready: true }),
      kp("10.1.2.6:80", { zoneHints: ["zone-a"], ready: true }),
    ],
    expected: ["10.1.2.3:80", "10.1.2.6:80"],
  },
  {
    name: "empty node labels",
    zone: undefined,
    policy: "Cluster",
    endpoints: [kp("10.1.2.3:80", { zoneHints: ["zone-a"], ready: true })],
    expected: ["10.1.2.3:80"],
    selection: { topology: "none", topologyIgnored: 'zone hints ignored: this node has no "topology.kubernetes.io/zone" label' },
  },
  {
    name: "empty zone label",
    zone: "",
    policy: "Cluster",
    endpoints: [kp("10.1.2.3:80", { zoneHints: ["zone-a"], ready: true })],
    expected: ["10.1.2.3:80"],
    selection: { topology: "none", topologyIgnored: 'zone hints ignored: this node has no "topology.kubernetes.io/zone" label' },
  },
  {
    name: "node in different zone, no endpoint filtering",
    zone: "zone-b",
    policy: "Cluster",
    endpoints: [kp("10.1.2.3:80", { zoneHints: ["zone-a"], ready: true })],
    expected: ["10.1.2.3:80"],
    selection: { topology: "none", topologyIgnored: 'zone hints ignored: no ready endpoint is hinted for zone "zone-b"' },
  },
  {
    name: "unready endpoint",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: zoned(true, false),
    expected: ["10.1.2.3:80"],
    selection: { topology: "zone" },
  },
  {
    name: "only unready endpoints in same zone (should not filter)",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: [
      kp("10.1.2.3:80", { zoneHints: ["zone-a"], ready: false }),
      kp("10.1.2.4:80", { zoneHints: ["zone-b"], ready: true }),
      kp("10.1.2.5:80", { zoneHints: ["zone-c"], ready: true }),
      kp("10.1.2.6:80", { zoneHints: ["zone-a"], ready: false }),
    ],
    expected: ["10.1.2.4:80", "10.1.2.5:80"],
    selection: { topology: "none", topologyIgnored: 'zone hints ignored: no ready endpoint is hinted for zone "zone-a"' },
  },
  {
    name: "missing hints, no filtering applied",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: [
      kp("10.1.2.3:80", { zoneHints: ["zone-a"], ready: true }),
      kp("10.1.2.4:80", { zoneHints: ["zone-b"], ready: true }),
      kp("10.1.2.5:80", { ready: true }),
      kp("10.1.2.6:80", { zoneHints: ["zone-a"], ready: true }),
    ],
    expected: ["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"],
    selection: { topology: "none", topologyIgnored: "zone hints ignored: 1 ready endpoint has no zone hint" },
  },
  {
    name: "multiple hints per endpoint, filtering includes any endpoint with zone included",
    zone: "zone-c",
    policy: "Cluster",
    endpoints: [
      kp("10.1.2.3:80", { zoneHints: ["zone-a", "zone-b", "zone-c"], ready: true }),
      kp("10.1.2.4:80", { zoneHints: ["zone-b", "zone-c"], ready: true }),
      kp("10.1.2.5:80", { zoneHints: ["zone-b", "zone-d"], ready: true }),
      kp("10.1.2.6:80", { zoneHints: ["zone-c"], ready: true }),
    ],
    expected: ["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"],
  },
  ...(["Cluster", "Local"] as const).map(
    (policy): Case => ({
      name: `conflicting topology and localness (${policy} side)`,
      zone: "zone-a",
      policy,
      endpoints: [
        kp("10.0.0.0:80", { zoneHints: ["zone-a"], ready: true, isLocal: true }),
        kp("10.0.0.1:80", { zoneHints: ["zone-b"], ready: true, isLocal: true }),
        kp("10.0.0.2:80", { zoneHints: ["zone-a"], ready: true, isLocal: false }),
        kp("10.0.0.3:80", { zoneHints: ["zone-b"], ready: true, isLocal: false }),
      ],
      expected: policy === "Cluster" ? ["10.0.0.0:80", "10.0.0.2:80"] : ["10.0.0.0:80", "10.0.0.1:80"],
    }),
  ),
  {
    name: "Cluster traffic policy, endpoints not Ready",
    policy: "Cluster",
    endpoints: [kp("10.0.0.0:80", { ready: false }), kp("10.0.0.1:80", { ready: false })],
    expected: [],
    selection: { topology: "none", fallback: "none" },
  },
  {
    name: "Cluster traffic policy, some endpoints are Ready",
    policy: "Cluster",
    endpoints: [kp("10.0.0.0:80", { ready: false }), kp("10.0.0.1:80", { ready: true })],
    expected: ["10.0.0.1:80"],
  },
  {
    name: "Cluster traffic policy, all endpoints are terminating",
    policy: "Cluster",
    endpoints: [
      kp("10.0.0.0:80", { ready: false, serving: true, terminating: true, isLocal: true }),
      kp("10.0.0.1:80", { ready: false, serving: true, terminating: true, isLocal: false }),
    ],
    expected: ["10.0.0.0:80", "10.0.0.1:80"],
    selection: { fallback: "serving-terminating" },
  },
  {
    name: "eTP: Local, some endpoints local",
    policy: "Local",
    endpoints: [kp("10.0.0.0:80", { ready: true, isLocal: true }), kp("10.0.0.1:80", { ready: true, isLocal: false })],
    expected: ["10.0.0.0:80"],
    selection: { policy: "Local", fallback: "none" },
  },
  {
    name: "eTP: Local, all endpoints remote",
    policy: "Local",
    endpoints: [kp("10.0.0.0:80", { ready: true }), kp("10.0.0.1:80", { ready: true })],
    expected: [],
  },
  {
    name: "eTP: Local, all endpoints remote and terminating",
    policy: "Local",
    endpoints: [
      kp("10.0.0.0:80", { ready: false, serving: true, terminating: true }),
      kp("10.0.0.1:80", { ready: false, serving: true, terminating: true }),
    ],
    expected: [],
    selection: { policy: "Local", fallback: "none" },
  },
  ...(["Cluster", "Local"] as const).map(
    (policy): Case => ({
      name: `eTP: ${policy}, with terminating endpoints (per-policy fallback)`,
      policy,
      endpoints: [
        kp("10.0.0.0:80", { ready: true, isLocal: false }),
        kp("10.0.0.1:80", { ready: false, serving: false, isLocal: true }),
        kp("10.0.0.2:80", { ready: false, serving: true, terminating: true, isLocal: true }),
        kp("10.0.0.3:80", { ready: false, serving: true, terminating: true, isLocal: false }),
      ],
      expected: policy === "Cluster" ? ["10.0.0.0:80"] : ["10.0.0.2:80"],
      selection: { policy, fallback: policy === "Cluster" ? "none" : "serving-terminating" },
    }),
  ),
  /* PreferSameNode (node hints): topology.go's topologyModeFromHints */
  {
    name: "node hints: every ready endpoint has one and one is for this node -> only those",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: [
      kp("10.0.1.1:80", { nodeHints: [NODE], zoneHints: ["zone-a"], ready: true, isLocal: true }),
      kp("10.0.1.2:80", { nodeHints: ["node-b"], zoneHints: ["zone-a"], ready: true }),
      kp("10.0.1.3:80", { ready: false }),
    ],
    expected: ["10.0.1.1:80"],
    selection: { topology: "node" },
  },
  {
    name: "node hints: none for this node -> zone hints decide",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: [
      kp("10.0.1.1:80", { nodeHints: ["node-c"], zoneHints: ["zone-a"], ready: true }),
      kp("10.0.1.2:80", { nodeHints: ["node-b"], zoneHints: ["zone-b"], ready: true }),
    ],
    expected: ["10.0.1.1:80"],
    selection: { topology: "zone", topologyIgnored: 'node hints ignored: no ready endpoint is hinted for node "node-a"' },
  },
  {
    name: "node hints: one ready endpoint lacks one -> zone hints decide",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: [
      kp("10.0.1.1:80", { nodeHints: [NODE], zoneHints: ["zone-b"], ready: true }),
      kp("10.0.1.2:80", { zoneHints: ["zone-a"], ready: true }),
    ],
    expected: ["10.0.1.2:80"],
    selection: { topology: "zone", topologyIgnored: "node hints ignored: 1 ready endpoint has no node hint" },
  },
  {
    name: "node and zone hints both unusable -> every ready endpoint, both reasons",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: [
      kp("10.0.1.1:80", { nodeHints: ["node-c"], ready: true }),
      kp("10.0.1.2:80", { nodeHints: ["node-b"], zoneHints: ["zone-a"], ready: true }),
    ],
    expected: ["10.0.1.1:80", "10.0.1.2:80"],
    selection: {
      topology: "none",
      topologyIgnored: 'node hints ignored: no ready endpoint is hinted for node "node-a"; zone hints ignored: 1 ready endpoint has no zone hint',
    },
  },
  {
    name: "no endpoint ready: hints do not narrow the serving+terminating fallback",
    zone: "zone-a",
    policy: "Cluster",
    endpoints: [
      kp("10.0.1.1:80", { zoneHints: ["zone-b"], ready: false, serving: true, terminating: true }),
      kp("10.0.1.2:80", { zoneHints: ["zone-a"], ready: false, serving: true, terminating: true }),
    ],
    expected: ["10.0.1.1:80", "10.0.1.2:80"],
    selection: { topology: "none", topologyIgnored: "no endpoint is ready, so hints do not apply", fallback: "serving-terminating" },
  },
];

describe("categorize (kube-proxy's TestCategorizeEndpoints, external traffic)", () => {
  test.each(cases.map((c) => [c.name, c] as const))("%s", (_name, c) => {
    const options: CategorizeOptions = { nodeName: NODE, zone: c.zone, policy: c.policy };
    const { serving, selection } = selectEndpoints(c.endpoints, options);
    expect(serving.map((e) => `${e.address}:${e.port}`).sort()).toEqual([...c.expected].sort());
    expect(categorize(c.endpoints, options)).toEqual(serving);
    expect(selection).toMatchObject({ policy: c.policy, ...c.selection });
    if (c.selection && !("topologyIgnored" in c.selection)) expect(selection.topologyIgnored).toBeUndefined();
    expect(Object.isFrozen(selection)).toBe(true);
    // `serving` is the input itself when every endpoint is chosen, else a new frozen array.
    expect(serving === c.endpoints || Object.isFrozen(serving)).toBe(true);
  });

  test("trafficDistribution set but no hints: no effect, and the selection says so", () => {
    const endpoints = [kp("10.0.0.1:80", { ready: true }), kp("10.0.0.2:80", { ready: true })];
    const { serving, selection } = selectEndpoints(endpoints, { nodeName: NODE, zone: "zone-a", policy: "Cluster", trafficDistribution: "PreferClose" });
    expect(serving).toBe(endpoints);
    expect(selection).toEqual({
      policy: "Cluster",
      topology: "none",
      topologyIgnored: 'trafficDistribution "PreferClose" is set but no ready endpoint has a hint',
      fallback: "none",
    });
  });

  test("selections without a reason are shared objects", () => {
    const a = selectEndpoints([kp("10.0.0.1:80", { ready: true })], { nodeName: NODE, policy: "Cluster" }).selection;
    const b = selectEndpoints([kp("10.0.0.2:80", { ready: true })], { nodeName: NODE, policy: "Cluster" }).selection;
    expect(a).toBe(b);
  });
});
