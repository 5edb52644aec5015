/**
 * Per-Service traffic policy (kubegate.io annotations) and --max-endpoints-per-service through the incremental
 * store: identity of unchanged policies and entrypoints, errors that come and go, and equality with a full build.
 */
import { describe, expect, test } from "bun:test";
import { type EndpointSlice, type KindName, parseObject, type Service } from "../../src/kube/objects.ts";
import type { CacheEvent } from "../../src/kube/source.ts";
import { buildSnapshot } from "../../src/model/build.ts";
import { ModelStore } from "../../src/model/store.ts";
import type { Entrypoint, ModelOptions, Snapshot } from "../../src/model/types.ts";

const base: ModelOptions = {
  nodeName: "node-a",
  hostAddresses: ["127.0.0.1"],
  nodePortAddresses: [],
  serviceProxyName: "kubegate",
  allServices: true,
};

function parsed<K extends KindName>(kind: K, raw: unknown) {
  const result = parseObject(kind, raw);
  if (!result.ok) throw new Error(`Fixture ${kind} is invalid: ${result.error}`);
  return result.value;
}

function service(name: string, annotations: Record<string, string> = {}, extra: { uid?: string; policy?: "Cluster" | "Local"; nodePort?: number } = {}): Service {
  return parsed("Service", {
    metadata: { name, namespace: "default", creationTimestamp: "2024-01-01T00:00:00Z", annotations, ...(extra.uid ? { uid: extra.uid } : {}) },
    spec: {
      type: "NodePort",
      clusterIP: "10.96.0.1",
      externalTrafficPolicy: extra.policy ?? "Cluster",
      ports: [{ name: "http", port: 80, nodePort: extra.nodePort ?? 30080, appProtocol: "http" }],
    },
  }) as Service;
}

/** A slice of `svc` with one ready endpoint per address (`node:` prefix puts it on that node). */
function slice(name: string, svc: string, addresses: string[]): EndpointSlice {
  return parsed("EndpointSlice", {
    metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    ports: [{ name: "http", protocol: "TCP", port: 8080 }],
    endpoints: addresses.map((a) => {
      const [node, address] = a.includes(" ") ? a.split(" ") : [undefined, a];
      return { addresses: [address], conditions: { ready: true }, ...(node ? { nodeName: node } : {}) };
    }),
  }) as EndpointSlice;
}

/** A store whose flushes are driven by the test; every kind synced. */
function syncedStore(options: ModelOptions = base) {
  const store = new ModelStore(options, { onSnapshot: () => {}, schedule: () => {}, now: () => 0 });
  for (const kind of ["Service", "EndpointSlice", "Node"] as const) store.synced(kind);
  const objects = new Map<string, Service | EndpointSlice>();
  const flush = (): Snapshot => {
    store.flush();
    const snapshot = store.current();
    if (!snapshot) throw new Error("No snapshot");
    // The incremental store must say what a full build of the same objects says.
    const all = [...objects.entries()];
    const full = buildSnapshot(
      {
        services: all.filter(([k]) => k.startsWith("Service/")).map(([, o]) => o as Service),
        endpointSlices: all.filter(([k]) => k.startsWith("EndpointSlice/")).map(([, o]) => o as EndpointSlice),
        nodes: [],
      },
      options,
      snapshot.version,
    );
    expect(snapshot).toEqual(full);
    return snapshot;
  };
  const upsert = (kind: "Service" | "EndpointSlice", object: Service | EndpointSlice): Snapshot => {
    const key = `${object.metadata.namespace}/${object.metadata.name}`;
    objects.set(`${kind}/${key}`, object);
    store.apply({ type: "upsert", kind, key, object } as CacheEvent);
    return flush();
  };
  return { store, upsert, flush };
}

function entry(snapshot: Snapshot, key = "NodePort/default/web:http"): Entrypoint {
  const found = snapshot.entrypoints.find((e) => e.key === key);
  if (!found) throw new Error(`No entrypoint "${key}"`);
  return found;
}

const TUNED = { "kubegate.io/balancer": "maglev", "kubegate.io/hash-on": "cookie:sid", "kubegate.io/idle-timeout": "90s" };

describe("traffic policy identity", () => {
  test("an unchanged Service keeps its policy object, and its entrypoint when nothing else changed", () => {
    const { upsert } = syncedStore();
    const first = upsert("Service", service("web", TUNED));
    const policy = entry(first).policy;
    expect(policy).toEqual({ balancer: "maglev", hashOn: { source: "cookie", name: "sid" }, idleTimeoutMs: 90_000 });
    expect(Object.isFrozen(policy)).toBe(true);

    // The same Service again (a resync, a status update): the very same entrypoint.
    const again = upsert("Service", service("web", { ...TUNED }));
    expect(entry(again)).toBe(entry(first));

    // New endpoints: a new entrypoint (new cluster), the same policy object.
    const withEndpoints = upsert("EndpointSlice", slice("web-a", "web", ["10.0.0.1"]));
    expect(entry(withEndpoints)).not.toBe(entry(first));
    expect(entry(withEndpoints).policy).toBe(policy!);

    // Another, unrelated annotation: a new entrypoint (annotations differ), still the same policy object.
    const relabelled = upsert("Service", service("web", { ...TUNED, "example.com/owner": "team-a" }));
    expect(entry(relabelled).policy).toBe(policy!);

    // A changed policy annotation: a new policy object.
    const changed = upsert("Service", service("web", { ...TUNED, "kubegate.io/idle-timeout": "2m" }));
    expect(entry(changed).policy).not.toBe(policy!);
    expect(entry(changed).policy).toEqual({ balancer: "maglev", hashOn: { source: "cookie", name: "sid" }, idleTimeoutMs: 120_000 });
  });

  test("no policy annotation: no policy field at all; removing the annotations removes the policy", () => {
    const { upsert } = syncedStore();
    const plain = entry(upsert("Service", service("web", { "kubegate.io/protocol": "http" })));
    expect("policy" in plain).toBe(false);
    expect(entry(upsert("Service", service("web", { "kubegate.io/balancer": "random" }))).policy).toEqual({ balancer: "random" });
    expect("policy" in entry(upsert("Service", service("web")))).toBe(false);
  });

  test("an invalid value keeps the Service served with the defaults, and its error goes when it is fixed", () => {
    const { upsert } = syncedStore();
    upsert("Service", service("other", {}, { nodePort: 30081 }));
    const bad = upsert("Service", service("web", { "kubegate.io/connect-timeout": "soon", "kubegate.io/balancer": "random" }));
    expect(entry(bad).policy).toEqual({ balancer: "random" });
    expect(entry(bad).error).toBeUndefined();
    expect(bad.errors).toEqual([
      {
        kind: "Service",
        object: "default/web",
        message:
          'Annotation "kubegate.io/connect-timeout" on Service "default/web" is invalid: expected a duration from 1ms to 24h, such as "500ms", "30s" or "1m30s", got "soon"; ignored',
        reason: "InvalidAnnotation",
      },
    ]);
    const fixed = upsert("Service", service("web", { "kubegate.io/connect-timeout": "3s", "kubegate.io/balancer": "random" }));
    expect(fixed.errors).toEqual([]);
    expect(entry(fixed).policy).toEqual({ balancer: "random", connectTimeoutMs: 3000 });
    // The other Service was never touched.
    expect(entry(fixed, "NodePort/default/other:http")).toBe(entry(bad, "NodePort/default/other:http"));
  });

  test("the Service uid rides on its entrypoints; a recreated Service (new uid) gets new entrypoints", () => {
    const { upsert } = syncedStore();
    const first = entry(upsert("Service", service("web", TUNED, { uid: "uid-1" })));
    expect(first.serviceUid).toBe("uid-1");
    const recreated = entry(upsert("Service", service("web", TUNED, { uid: "uid-2" })));
    expect(recreated.serviceUid).toBe("uid-2");
    expect(recreated).not.toBe(first);
    expect(recreated.policy).toBe(first.policy!);
  });
});

describe("--max-endpoints-per-service", () => {
  const ips = (n: number, from = 1) => Array.from({ length: n }, (_, i) => `10.0.0.${from + i}`);

  test("a port over the limit is reported and served by its first serving endpoints; others are untouched", () => {
    const { upsert } = syncedStore({ ...base, maxEndpointsPerService: 3 });
    upsert("Service", service("web"));
    upsert("Service", service("other", {}, { nodePort: 30081 }));
    upsert("EndpointSlice", slice("other-a", "other", ips(3, 100)));
    // Out of order across two slices: the first three by address serve.
    const over = upsert("EndpointSlice", slice("web-b", "web", ["10.0.0.5", "10.0.0.3"]));
    expect(over.errors).toEqual([]);
    const snapshot = upsert("EndpointSlice", slice("web-a", "web", ["10.0.0.4", "10.0.0.1", "10.0.0.2"]));
    const web = entry(snapshot);
    expect(web.cluster.endpoints.map((e) => e.address)).toEqual(ips(5));
    expect(web.cluster.serving.map((e) => e.address)).toEqual(ips(3));
    expect(web.error).toBeUndefined();
    expect(snapshot.errors).toEqual([
      {
        kind: "Service",
        object: "default/web",
        message:
          'Port "http" has 5 endpoints, more than the limit of 3 (--max-endpoints-per-service): only the first 3 serving endpoints (by address) receive traffic',
        reason: "TooManyEndpoints",
      },
    ]);
    expect(entry(snapshot, "NodePort/default/other:http").cluster.serving).toHaveLength(3);

    // Back under the limit: the error goes and every serving endpoint serves.
    const under = upsert("EndpointSlice", slice("web-b", "web", []));
    expect(under.errors).toEqual([]);
    expect(entry(under).cluster.serving.map((e) => e.address)).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.4"]);
  });

  test("endpoints are selected first (Local policy), then capped", () => {
    const { upsert } = syncedStore({ ...base, maxEndpointsPerService: 2 });
    upsert("Service", service("web", {}, { policy: "Local" }));
    const snapshot = upsert("EndpointSlice", slice("web-a", "web", ["node-b 10.0.0.1", "node-b 10.0.0.2", "node-a 10.0.0.3", "node-a 10.0.0.4", "node-a 10.0.0.5"]));
    expect(entry(snapshot).cluster.serving.map((e) => e.address)).toEqual(["10.0.0.3", "10.0.0.4"]);
    expect(snapshot.errors.map((e) => e.reason)).toEqual(["TooManyEndpoints"]);
  });

  test.each([0, undefined])("%p means no limit", (limit) => {
    const { upsert } = syncedStore(limit === undefined ? base : { ...base, maxEndpointsPerService: limit });
    upsert("Service", service("web"));
    const snapshot = upsert("EndpointSlice", slice("web-a", "web", ips(50)));
    expect(snapshot.errors).toEqual([]);
    expect(entry(snapshot).cluster.serving).toHaveLength(50);
  });

  test("a capped cluster keeps its identity while nothing changes", () => {
    const { upsert, store } = syncedStore({ ...base, maxEndpointsPerService: 2 });
    upsert("EndpointSlice", slice("web-a", "web", ips(4)));
    const first = entry(upsert("Service", service("web", { "kubegate.io/balancer": "least-request" })));
    const again = entry(upsert("Service", service("web", { "kubegate.io/balancer": "least-request", note: "x" })));
    expect(again.cluster).toBe(first.cluster);
    expect(again.cluster.serving).toHaveLength(2);
    expect(store.current()?.errors).toHaveLength(1);
  });
});
