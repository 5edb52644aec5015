import { describe, expect, test } from "bun:test";
import type { EndpointSlice, ServicePort } from "../../src/kube/objects.ts";
import { categorize, type CategorizeOptions, mergeEndpoints, resolveConditions, sliceInfo, type SliceInfo } from "../../src/model/endpoints.ts";
import type { Endpoint } from "../../src/model/types.ts";

/** A compact endpoint: `addr` + flags; defaults: ready, serving, not terminating, on node-b. */
function ep(address: string, extra: Partial<Endpoint> = {}): Endpoint {
  return { address, port: 8080, ready: true, serving: true, terminating: false, nodeName: "node-b", ...extra };
}
const terminating = { ready: false, serving: true, terminating: true } as const;
const notServing = { ready: false, serving: false, terminating: true } as const;
const notReady = { ready: false, serving: false, terminating: false } as const;

const here: Omit<CategorizeOptions, "policy"> = { nodeName: "node-a", zone: "zone-a" };

describe("categorize", () => {
  const cases: [string, Endpoint[], Partial<CategorizeOptions>, string[]][] = [
    ["no endpoints", [], {}, []],
    ["ready endpoints only", [ep("10.0.0.1"), ep("10.0.0.2", notReady), ep("10.0.0.3", terminating)], {}, ["10.0.0.1"]],
    [
      "no ready endpoint: serving+terminating fallback",
      [ep("10.0.0.1", notReady), ep("10.0.0.2", terminating), ep("10.0.0.3", notServing)],
      {},
      ["10.0.0.2"],
    ],
    ["nothing usable", [ep("10.0.0.1", notReady), ep("10.0.0.3", notServing)], {}, []],
    [
      "zone hints: every ready endpoint hinted, one matches -> only matching",
      [
        ep("10.0.0.1", { hints: { forZones: ["zone-a"] } }),
        ep("10.0.0.2", { hints: { forZones: ["zone-b"] } }),
        ep("10.0.0.3", { hints: { forZones: ["zone-b", "zone-a"] } }),
      ],
      {},
      ["10.0.0.1", "10.0.0.3"],
    ],
    [
      "zone hints ignored when one ready endpoint lacks a hint",
      [ep("10.0.0.1", { hints: { forZones: ["zone-a"] } }), ep("10.0.0.2")],
      {},
      ["10.0.0.1", "10.0.0.2"],
    ],
    [
      "zone hints: an unhinted endpoint that is not ready does not disable them",
      [ep("10.0.0.1", { hints: { forZones: ["zone-a"] } }), ep("10.0.0.2", { hints: { forZones: ["zone-b"] } }), ep("10.0.0.3", notReady)],
      {},
      ["10.0.0.1"],
    ],
    [
      "zone hints ignored when none matches this zone",
      [ep("10.0.0.1", { hints: { forZones: ["zone-b"] } }), ep("10.0.0.2", { hints: { forZones: ["zone-c"] } })],
      {},
      ["10.0.0.1", "10.0.0.2"],
    ],
    [
      "zone hints ignored when this node has no zone",
      [ep("10.0.0.1", { hints: { forZones: ["zone-a"] } }), ep("10.0.0.2", { hints: { forZones: ["zone-b"] } })],
      { zone: undefined },
      ["10.0.0.1", "10.0.0.2"],
    ],
    [
      "trafficDistribution PreferSameNode (node hints) wins over zone hints",
      [
        ep("10.0.0.1", { nodeName: "node-a", hints: { forNodes: ["node-a"], forZones: ["zone-a"] } }),
        ep("10.0.0.2", { hints: { forNodes: ["node-b"], forZones: ["zone-a"] } }),
      ],
      {},
      ["10.0.0.1"],
    ],
    [
      "node hints without a match for this node fall back to zone hints",
      [
        ep("10.0.0.1", { hints: { forNodes: ["node-c"], forZones: ["zone-a"] } }),
        ep("10.0.0.2", { hints: { forNodes: ["node-b"], forZones: ["zone-b"] } }),
      ],
      {},
      ["10.0.0.1"],
    ],
    [
      "trafficDistribution PreferClose (zone hints) ignores endpoints hinted elsewhere",
      [ep("10.0.0.1", { zone: "zone-b", hints: { forZones: ["zone-a"] } }), ep("10.0.0.2", { zone: "zone-a", hints: { forZones: ["zone-b"] } })],
      {},
      ["10.0.0.1"],
    ],
    [
      "hints do not narrow the terminating fallback",
      [ep("10.0.0.1", { ...terminating, hints: { forZones: ["zone-b"] } }), ep("10.0.0.2", { ...terminating, hints: { forZones: ["zone-a"] } })],
      {},
      ["10.0.0.1", "10.0.0.2"],
    ],
    [
      "Local: only this node's ready endpoints",
      [ep("10.0.0.1", { nodeName: "node-a" }), ep("10.0.0.2"), ep("10.0.0.3", { nodeName: "node-a", ...terminating })],
      { policy: "Local" },
      ["10.0.0.1"],
    ],
    [
      "Local: this node's serving+terminating when none is ready here (even if ready elsewhere)",
      [ep("10.0.0.1", { nodeName: "node-a", ...terminating }), ep("10.0.0.2"), ep("10.0.0.3", { nodeName: "node-a", ...notServing })],
      { policy: "Local" },
      ["10.0.0.1"],
    ],
    ["Local: nothing on this node", [ep("10.0.0.1"), ep("10.0.0.2", { nodeName: undefined })], { policy: "Local" }, []],
    [
      "Local: topology hints do not apply",
      [ep("10.0.0.1", { nodeName: "node-a", hints: { forZones: ["zone-b"] } }), ep("10.0.0.2", { nodeName: "node-a", hints: { forZones: ["zone-a"] } })],
      { policy: "Local" },
      ["10.0.0.1", "10.0.0.2"],
    ],
    ["Local with an empty node name matches nothing", [ep("10.0.0.1", { nodeName: "" })], { policy: "Local", nodeName: "" }, []],
  ];
  test.each(cases)("%s", (_name, endpoints, options, expected) => {
    const chosen = categorize(endpoints, { ...here, policy: "Cluster", ...options });
    expect(chosen.map((e) => e.address)).toEqual(expected);
  });

  test("returns the same array when every endpoint is chosen", () => {
    const endpoints = [ep("10.0.0.1"), ep("10.0.0.2")];
    expect(categorize(endpoints, { ...here, policy: "Cluster" })).toBe(endpoints);
  });
});

describe("resolveConditions", () => {
  test.each([
    ["all nil", {}, { ready: true, serving: true, terminating: false }],
    ["all null", { ready: null, serving: null, terminating: null }, { ready: true, serving: true, terminating: false }],
    ["serving nil defers to ready", { ready: false }, { ready: false, serving: false, terminating: false }],
    ["terminating and serving", { ready: false, serving: true, terminating: true }, { ready: false, serving: true, terminating: true }],
    ["ready but not serving", { ready: true, serving: false }, { ready: true, serving: false, terminating: false }],
  ])("%s", (_name, input, expected) => {
    expect(resolveConditions(input)).toEqual(expected);
  });
});

function slice(name: string, body: Partial<EndpointSlice>): SliceInfo {
  const info = sliceInfo({
    metadata: { name, namespace: "ns", labels: { "kubernetes.io/service-name": "web" } },
    addressType: "IPv4",
    endpoints: [],
    ports: [],
    ...body,
  });
  if (!info) throw new Error(`slice "${name}" was ignored`);
  return info;
}
const http: ServicePort = { name: "http", protocol: "TCP", port: 80, targetPort: "web" };

describe("mergeEndpoints", () => {
  test("resolves a named target port per slice through the slice port with the Service port's name", () => {
    const a = slice("web-a", { ports: [{ name: "http", protocol: "TCP", port: 8080 }], endpoints: [{ addresses: ["10.0.0.2"], conditions: {} }] });
    const b = slice("web-b", { ports: [{ name: "http", protocol: "TCP", port: 9090 }], endpoints: [{ addresses: ["10.0.0.1"], conditions: {} }] });
    const other = slice("web-c", { ports: [{ name: "metrics", protocol: "TCP", port: 9100 }], endpoints: [{ addresses: ["10.0.0.9"], conditions: {} }] });
    expect(mergeEndpoints(http, [a, b, other], "node-a").map((e) => `${e.address}:${e.port}`)).toEqual(["10.0.0.1:9090", "10.0.0.2:8080"]);
  });

  test("matches the protocol too", () => {
    const s = slice("web-a", { ports: [{ name: "http", protocol: "UDP", port: 8080 }], endpoints: [{ addresses: ["10.0.0.1"], conditions: {} }] });
    expect(mergeEndpoints(http, [s], "node-a")).toEqual([]);
  });

  test("a slice port without a number dials the numeric targetPort", () => {
    const s = slice("web-a", { ports: [{ name: "http", protocol: "TCP" }], endpoints: [{ addresses: ["10.0.0.1"], conditions: {} }] });
    expect(mergeEndpoints({ ...http, targetPort: 8443 }, [s], "node-a").map((e) => e.port)).toEqual([8443]);
    expect(mergeEndpoints({ ...http, targetPort: undefined }, [s], "node-a").map((e) => e.port)).toEqual([80]);
    expect(mergeEndpoints(http, [s], "node-a")).toEqual([]);
  });

  test("dedupes by address and port, first slice by name wins, a copy on this node is preferred", () => {
    const ports = [{ name: "http", protocol: "TCP" as const, port: 8080 }];
    const a = slice("web-a", { ports, endpoints: [{ addresses: ["10.0.0.1"], nodeName: "node-b", conditions: { ready: false } }, { addresses: ["10.0.0.2"], zone: "z1", conditions: {} }] });
    const b = slice("web-b", { ports, endpoints: [{ addresses: ["10.0.0.1"], nodeName: "node-a", conditions: {} }, { addresses: ["10.0.0.2"], zone: "z2", conditions: {} }] });
    const merged = mergeEndpoints(http, [a, b], "node-a");
    expect(merged).toEqual([
      { address: "10.0.0.1", port: 8080, ready: true, serving: true, terminating: false, nodeName: "node-a" },
      { address: "10.0.0.2", port: 8080, ready: true, serving: true, terminating: false, zone: "z1" },
    ]);
  });

  test("sorts numerically and carries hints and targetRef", () => {
    const s = sliceInfo({
      metadata: { name: "web-v6", namespace: "ns" },
      addressType: "IPv6",
      ports: [{ name: "http", protocol: "TCP", port: 8080 }],
      endpoints: [
        { addresses: ["fd00::10"], conditions: {}, targetRef: { kind: "Pod", name: "web-1", namespace: "ns", uid: "u1" } },
        { addresses: ["FD00::9"], conditions: {}, hints: { forZones: [{ name: "z1" }], forNodes: [{ name: "node-a" }] } },
      ],
    })!;
    expect(mergeEndpoints(http, [s], "node-a")).toEqual([
      { address: "fd00::9", port: 8080, ready: true, serving: true, terminating: false, hints: { forZones: ["z1"], forNodes: ["node-a"] } },
      { address: "fd00::10", port: 8080, ready: true, serving: true, terminating: false, targetRef: { kind: "Pod", name: "web-1", namespace: "ns" } },
    ]);
  });

  test("reuses equal endpoint objects and the previous list", () => {
    const ports = [{ name: "http", protocol: "TCP" as const, port: 8080 }];
    const first = mergeEndpoints(http, [slice("s", { ports, endpoints: [{ addresses: ["10.0.0.1"], conditions: {} }, { addresses: ["10.0.0.2"], conditions: {} }] })], "n");
    const same = mergeEndpoints(http, [slice("s", { ports, endpoints: [{ addresses: ["10.0.0.2"], conditions: {} }, { addresses: ["10.0.0.1"], conditions: {} }] })], "n", first);
    expect(same).toBe(first);
    const changed = mergeEndpoints(http, [slice("s", { ports, endpoints: [{ addresses: ["10.0.0.1"], conditions: {} }, { addresses: ["10.0.0.2"], conditions: { ready: false } }] })], "n", first);
    expect(changed).not.toBe(first);
    expect(changed[0]).toBe(first[0]!);
    expect(changed[1]).not.toBe(first[1]!);
    expect(Object.isFrozen(changed) && Object.isFrozen(changed[1])).toBe(true);
  });
});

describe("sliceInfo", () => {
  test("ignores FQDN slices", () => {
    expect(sliceInfo({ metadata: { name: "f", namespace: "ns" }, addressType: "FQDN", endpoints: [{ addresses: ["example.com"], conditions: {} }], ports: [] })).toBeUndefined();
  });

  test("reports and skips addresses that are not IPs of the slice's family", () => {
    const info = slice("bad", { endpoints: [{ addresses: ["fd00::1"], conditions: {} }, { addresses: ["nope"], conditions: {} }, { addresses: ["10.0.0.1"], conditions: {} }] });
    expect(info.endpoints.map((e) => e.address)).toEqual(["10.0.0.1"]);
    expect(info.errors).toEqual([
      { kind: "EndpointSlice", object: "ns/bad", message: 'Endpoint address "fd00::1" is not an IPv4 address: skipped' },
      { kind: "EndpointSlice", object: "ns/bad", message: 'Endpoint address "nope" is not an IP address: skipped' },
    ]);
  });
});
