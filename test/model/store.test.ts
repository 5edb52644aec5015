import { describe, expect, test } from "bun:test";
import { type EndpointSlice, type KindName, type Node, parseObject, type Service } from "../../src/kube/objects.ts";
import type { CacheEvent } from "../../src/kube/source.ts";
import { buildSnapshot } from "../../src/model/build.ts";
import { ModelStore, type ModelStoreOptions, type PublishInfo } from "../../src/model/store.ts";
import type { Entrypoint, ModelOptions, Snapshot } from "../../src/model/types.ts";

const options: ModelOptions = {
  nodeName: "node-a",
  hostAddresses: ["127.0.0.1", "::1"],
  nodePortAddresses: [],
  serviceProxyName: "kubegate",
  allServices: true,
};

/** A scheduler and clock the test drives by hand. */
function manualTime() {
  let now = 0;
  const tasks: { fn: () => void; at: number; ms: number }[] = [];
  return {
    schedule: (fn: () => void, ms: number) => void tasks.push({ fn, at: now + ms, ms }),
    now: () => now,
    tasks,
    advance(ms: number) {
      now += ms;
    },
    /** Run due tasks (in order); returns how many ran. */
    runDue(): number {
      let ran = 0;
      for (;;) {
        const i = tasks.findIndex((t) => t.at <= now);
        if (i === -1) return ran;
        const [task] = tasks.splice(i, 1);
        task!.fn();
        ran++;
      }
    },
  };
}

function parsed<K extends KindName>(kind: K, raw: unknown) {
  const result = parseObject(kind, raw);
  if (!result.ok) throw new Error(`Fixture ${kind} is invalid: ${result.error}`);
  return result.value;
}

function service(name: string, extra: { port?: number; nodePort?: number; created?: string; type?: string; ns?: string } = {}): Service {
  return parsed("Service", {
    metadata: { name, namespace: extra.ns ?? "default", creationTimestamp: extra.created ?? "2024-01-01T00:00:00Z" },
    spec: {
      type: extra.type ?? "LoadBalancer",
      clusterIP: "10.96.0.1",
      ports: [{ name: "http", port: extra.port ?? 80, nodePort: extra.nodePort ?? 30080 }],
    },
  }) as Service;
}

function slice(name: string, svc: string, addresses: string[], extra: { ready?: boolean; trigger?: string; ns?: string } = {}): EndpointSlice {
  return parsed("EndpointSlice", {
    metadata: {
      name,
      namespace: extra.ns ?? "default",
      labels: { "kubernetes.io/service-name": svc },
      ...(extra.trigger ? { annotations: { "endpoints.kubernetes.io/last-change-trigger-time": extra.trigger } } : {}),
    },
    addressType: "IPv4",
    ports: [{ name: "http", protocol: "TCP", port: 8080 }],
    endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready: extra.ready ?? true } })),
  }) as EndpointSlice;
}

function node(name: string, zone?: string): Node {
  return parsed("Node", { metadata: { name, ...(zone ? { labels: { "topology.kubernetes.io/zone": zone } } : {}) } }) as Node;
}

const up = <K extends KindName>(kind: K, key: string, object: CacheEvent<K> extends infer E ? (E extends { object: infer O } ? O : never) : never) =>
  ({ type: "upsert", kind, key, object }) as CacheEvent;
const del = (kind: KindName, key: string) => ({ type: "delete", kind, key }) as CacheEvent;

function newStore(extra: Partial<ModelStoreOptions> = {}, model: ModelOptions = options) {
  const time = manualTime();
  const published: { snapshot: Snapshot; info: PublishInfo }[] = [];
  const store = new ModelStore(model, {
    onSnapshot: (snapshot, info) => published.push({ snapshot, info }),
    schedule: time.schedule,
    now: time.now,
    wallClock: () => Date.parse("2025-01-01T00:00:00Z"),
    ...extra,
  });
  const syncAll = () => {
    for (const kind of ["Service", "EndpointSlice", "Node"] as const) store.synced(kind);
  };
  return { store, time, published, syncAll };
}

function byKey(snapshot: Snapshot | undefined, key: string) {
  const entrypoint = snapshot?.entrypoints.find((e) => e.key === key);
  if (!entrypoint) throw new Error(`No entrypoint "${key}"`);
  return entrypoint;
}

describe("ModelStore publishing", () => {
  test("publishes nothing before every kind has synced, then one snapshot", () => {
    const { store, time, published } = newStore();
    store.apply(up("Service", "default/web", service("web")));
    store.synced("Service");
    store.synced("EndpointSlice");
    expect(time.tasks).toHaveLength(0);
    expect(store.flush()).toBeUndefined();
    expect(published).toHaveLength(0);
    store.synced("Node");
    expect(time.tasks).toHaveLength(1);
    expect(time.runDue()).toBe(1);
    expect(published).toHaveLength(1);
    expect(published[0]!.snapshot.version).toBe(1);
    expect(published[0]!.snapshot.entrypoints.map((e) => e.key)).toEqual(["LoadBalancer/default/web:http", "NodePort/default/web:http"]);
    expect(store.current()).toBe(published[0]!.snapshot);
  });

  test("an empty cluster still publishes its first snapshot once synced", () => {
    const { time, published, syncAll } = newStore();
    syncAll();
    time.runDue();
    expect(published.map((p) => p.snapshot)).toEqual([{ version: 1, entrypoints: [], errors: [], node: { name: "node-a" }, healthChecks: [] }]);
  });

  test("synced again (relist) is idempotent", () => {
    const { store, time, published, syncAll } = newStore();
    syncAll();
    time.runDue();
    store.synced("Service");
    expect(time.tasks).toHaveLength(0);
    expect(published).toHaveLength(1);
  });

  test("coalesces a burst of events into one pending flush and one publish", () => {
    const { store, time, published, syncAll } = newStore();
    syncAll();
    for (let i = 0; i < 50; i++) {
      store.apply(up("Service", `default/s${i}`, service(`s${i}`, { nodePort: 30000 + i, port: 1000 + i })));
    }
    expect(time.tasks).toHaveLength(1);
    expect(time.tasks[0]!.ms).toBe(0);
    time.runDue();
    expect(published).toHaveLength(1);
    expect(published[0]!.snapshot.entrypoints).toHaveLength(100);
    expect(published[0]!.info.serviceChanges).toBe(50);
  });

  test("keeps the minimum interval between publishes", () => {
    const { store, time, published, syncAll } = newStore({ minIntervalMs: 5 });
    syncAll();
    time.runDue(); // version 1 at t=0
    time.advance(1);
    store.apply(up("Service", "default/a", service("a")));
    store.apply(up("Service", "default/b", service("b", { nodePort: 30081, port: 81 })));
    expect(time.tasks.map((t) => t.ms)).toEqual([4]);
    time.advance(3);
    expect(time.runDue()).toBe(0);
    time.advance(1);
    expect(time.runDue()).toBe(1);
    expect(published.map((p) => p.snapshot.version)).toEqual([1, 2]);
    time.advance(100);
    store.apply(del("Service", "default/a"));
    expect(time.tasks.map((t) => t.ms)).toEqual([0]);
    time.runDue();
    expect(published.map((p) => p.snapshot.version)).toEqual([1, 2, 3]);
  });

  test("does not publish when nothing changed", () => {
    const { store, time, published, syncAll } = newStore();
    syncAll();
    store.apply(up("Service", "default/web", service("web")));
    store.apply(up("EndpointSlice", "default/web-1", slice("web-1", "web", ["10.0.0.1"])));
    time.runDue();
    expect(published).toHaveLength(1);
    // New objects with the same content (a resync), an unrelated Node, a delete of something unknown.
    store.apply(up("Service", "default/web", service("web")));
    store.apply(up("EndpointSlice", "default/web-1", slice("web-1", "web", ["10.0.0.1"])));
    store.apply(up("Node", "node-z", node("node-z", "zone-z")));
    store.apply(del("EndpointSlice", "default/unknown"));
    time.runDue();
    expect(published).toHaveLength(1);
    expect(store.stats.publishes).toBe(1);
  });

  test("a disposed store stops publishing", () => {
    const { store, time, published, syncAll } = newStore();
    syncAll();
    store[Symbol.dispose]();
    time.runDue();
    store.apply(up("Service", "default/web", service("web")));
    time.runDue();
    expect(published).toHaveLength(0);
  });
});

describe("ModelStore incremental updates", () => {
  test("a slice change keeps every other entrypoint, cluster and endpoint object", () => {
    const { store, syncAll } = newStore();
    syncAll();
    store.apply(up("Service", "default/a", service("a")));
    store.apply(up("Service", "default/b", service("b", { port: 81, nodePort: 30081 })));
    store.apply(up("EndpointSlice", "default/a-1", slice("a-1", "a", ["10.0.0.1", "10.0.0.2"])));
    store.apply(up("EndpointSlice", "default/b-1", slice("b-1", "b", ["10.0.1.1"])));
    const first = store.flush()!;
    store.apply(up("EndpointSlice", "default/a-1", slice("a-1", "a", ["10.0.0.1", "10.0.0.3"])));
    const second = store.flush()!;
    expect(second.version).toBe(first.version + 1);
    // Service b: untouched, same objects.
    for (const key of ["LoadBalancer/default/b:http", "NodePort/default/b:http"]) expect(byKey(second, key)).toBe(byKey(first, key));
    // Service a: new entrypoints and cluster, shared between its NodePort and LoadBalancer entrypoints...
    const lbA = byKey(second, "LoadBalancer/default/a:http");
    expect(lbA).not.toBe(byKey(first, "LoadBalancer/default/a:http"));
    expect(lbA.cluster).toBe(byKey(second, "NodePort/default/a:http").cluster);
    expect(lbA.cluster.endpoints.map((e) => e.address)).toEqual(["10.0.0.1", "10.0.0.3"]);
    // ...but the unchanged endpoint keeps its identity, as do the addresses and annotations.
    const oldA = byKey(first, "LoadBalancer/default/a:http");
    expect(lbA.cluster.endpoints[0]).toBe(oldA.cluster.endpoints[0]!);
    expect(lbA.addresses).toBe(oldA.addresses);
    expect(lbA.annotations).toBe(oldA.annotations);
    expect(second.errors).toBe(first.errors);
    expect(second.node).toBe(first.node);
    expect(Object.isFrozen(second) && Object.isFrozen(lbA) && Object.isFrozen(lbA.cluster.endpoints)).toBe(true);
  });

  test("a slice moving to another Service updates both", () => {
    const { store, syncAll } = newStore();
    syncAll();
    store.apply(up("Service", "default/a", service("a")));
    store.apply(up("Service", "default/b", service("b", { port: 81, nodePort: 30081 })));
    store.apply(up("EndpointSlice", "default/x", slice("x", "a", ["10.0.0.1"])));
    store.flush();
    store.apply(up("EndpointSlice", "default/x", slice("x", "b", ["10.0.0.1"])));
    const snapshot = store.flush();
    expect(byKey(snapshot, "NodePort/default/a:http").cluster.endpoints).toEqual([]);
    expect(byKey(snapshot, "NodePort/default/b:http").cluster.endpoints.map((e) => e.address)).toEqual(["10.0.0.1"]);
  });

  test("a conflict loser recovers when the winner goes away, and loses again when it returns", () => {
    const { store, syncAll } = newStore();
    syncAll();
    const old = service("old", { created: "2023-01-01T00:00:00Z", nodePort: 30001 });
    store.apply(up("Service", "default/old", old));
    store.apply(up("Service", "default/new", service("new", { created: "2024-01-01T00:00:00Z", nodePort: 30002 })));
    let snapshot = store.flush();
    expect(byKey(snapshot, "LoadBalancer/default/new:http").error).toBe('Port 80 on 127.0.0.1 is already used by "default/old:http"');
    expect(byKey(snapshot, "LoadBalancer/default/old:http").error).toBeUndefined();
    expect(snapshot!.errors).toEqual([
      {
        kind: "Entrypoint",
        object: "LoadBalancer/default/new:http",
        message: 'Port 80 on 127.0.0.1 is already used by "default/old:http"',
        reason: "PortConflict",
      },
    ]);
    const untouched = byKey(snapshot, "NodePort/default/new:http");

    store.apply(del("Service", "default/old"));
    snapshot = store.flush();
    expect(byKey(snapshot, "LoadBalancer/default/new:http").error).toBeUndefined();
    expect(snapshot!.errors).toEqual([]);
    expect(byKey(snapshot, "NodePort/default/new:http")).toBe(untouched);

    store.apply(up("Service", "default/old", old));
    snapshot = store.flush();
    expect(byKey(snapshot, "LoadBalancer/default/new:http").error).toBe('Port 80 on 127.0.0.1 is already used by "default/old:http"');

    // The winner moves to another port: the loser recovers without any event of its own.
    store.apply(up("Service", "default/old", service("old", { created: "2023-01-01T00:00:00Z", nodePort: 30001, port: 8080 })));
    snapshot = store.flush();
    expect(byKey(snapshot, "LoadBalancer/default/new:http").error).toBeUndefined();
  });

  test("invalid objects are reported and treated as absent until a valid version arrives", () => {
    const { store, syncAll } = newStore();
    syncAll();
    store.apply(up("Service", "default/web", service("web")));
    store.flush();
    store.apply({ type: "invalid", kind: "Service", key: "default/web", message: "Invalid type: Expected number" });
    let snapshot = store.flush();
    expect(snapshot!.entrypoints).toEqual([]);
    expect(snapshot!.errors).toEqual([{ kind: "Service", object: "default/web", message: "Invalid type: Expected number" }]);
    store.apply(up("Service", "default/web", service("web")));
    snapshot = store.flush();
    expect(snapshot!.entrypoints).toHaveLength(2);
    expect(snapshot!.errors).toEqual([]);
  });

  test("this node's zone comes from its Node and changes which endpoints serve", () => {
    const { store, syncAll } = newStore();
    syncAll();
    store.apply(up("Service", "default/web", service("web")));
    const hinted = parsed("EndpointSlice", {
      metadata: { name: "web-1", namespace: "default", labels: { "kubernetes.io/service-name": "web" } },
      addressType: "IPv4",
      ports: [{ name: "http", protocol: "TCP", port: 8080 }],
      endpoints: [
        { addresses: ["10.0.0.1"], hints: { forZones: [{ name: "zone-a" }] } },
        { addresses: ["10.0.0.2"], hints: { forZones: [{ name: "zone-b" }] } },
      ],
    }) as EndpointSlice;
    store.apply(up("EndpointSlice", "default/web-1", hinted));
    let snapshot = store.flush();
    expect(snapshot!.node).toEqual({ name: "node-a" });
    expect(byKey(snapshot, "NodePort/default/web:http").cluster.serving.map((e) => e.address)).toEqual(["10.0.0.1", "10.0.0.2"]);
    store.apply(up("Node", "node-a", node("node-a", "zone-b")));
    snapshot = store.flush();
    expect(snapshot!.node).toEqual({ name: "node-a", zone: "zone-b" });
    expect(byKey(snapshot, "NodePort/default/web:http").cluster.serving.map((e) => e.address)).toEqual(["10.0.0.2"]);
    store.apply(del("Node", "node-a"));
    snapshot = store.flush();
    expect(snapshot!.node).toEqual({ name: "node-a" });
  });

  test("reports change counts and trigger times per publish, and stats", () => {
    const { store, published, syncAll } = newStore();
    syncAll();
    store.apply(up("Service", "default/a", service("a")));
    store.apply(up("Service", "default/b", service("b", { port: 81, nodePort: 30081 })));
    store.flush();
    expect(published.at(-1)!.info).toMatchObject({ serviceChanges: 2, endpointChanges: 0, triggerTimes: [] });
    store.apply(up("EndpointSlice", "default/a-1", slice("a-1", "a", ["10.0.0.1"], { trigger: "2025-01-01T00:00:05Z" })));
    store.apply(up("EndpointSlice", "default/a-2", slice("a-2", "a", ["10.0.0.2"], { trigger: "2025-01-01T00:00:07Z" })));
    store.apply(up("EndpointSlice", "default/b-1", slice("b-1", "b", ["10.0.0.3"], { trigger: "2024-12-31T00:00:00Z" }))); // before the store started
    store.apply(up("EndpointSlice", "default/c-1", slice("c-1", "c", ["10.0.0.4"], { trigger: "2025-01-01T00:00:09Z" }))); // no Service c
    store.flush();
    expect(published.at(-1)!.info).toMatchObject({
      serviceChanges: 0,
      endpointChanges: 2,
      triggerTimes: [Date.parse("2025-01-01T00:00:07Z")],
    });
    expect(store.stats).toMatchObject({ services: 2, slices: 4, endpoints: 4, publishes: 2 });
    expect(store.stats.lastBuildMs).toBeGreaterThanOrEqual(0);
    store.apply(del("EndpointSlice", "default/a-1"));
    store.flush();
    expect(store.stats).toMatchObject({ slices: 3, endpoints: 3, publishes: 3 });
  });

  test("rejects invalid options with a clear error", () => {
    expect(() => newStore({}, { ...options, nodePortAddresses: ["10.0.0.0/33"] })).toThrow(
      'Invalid nodePortAddresses entry "10.0.0.0/33": expected a CIDR such as "10.0.0.0/8"',
    );
  });
});

describe("ModelStore health checks", () => {
  function localLb(name: string, extra: { hc?: number; port?: number; nodePort?: number; created?: string } = {}): Service {
    return parsed("Service", {
      metadata: { name, namespace: "default", creationTimestamp: extra.created ?? "2024-01-01T00:00:00Z" },
      spec: {
        type: "LoadBalancer",
        clusterIP: "10.96.0.1",
        externalTrafficPolicy: "Local",
        healthCheckNodePort: extra.hc ?? 32000,
        ports: [{ name: "http", port: extra.port ?? 80, nodePort: extra.nodePort ?? 30080 }],
      },
    }) as Service;
  }
  function localSlice(name: string, svc: string, endpoints: { ip: string; node: string; ready?: boolean }[]): EndpointSlice {
    return parsed("EndpointSlice", {
      metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": svc } },
      addressType: "IPv4",
      ports: [{ name: "http", protocol: "TCP", port: 8080 }],
      endpoints: endpoints.map((e) => ({
        addresses: [e.ip],
        nodeName: e.node,
        conditions: e.ready === false ? { ready: false, serving: true, terminating: true } : { ready: true },
      })),
    }) as EndpointSlice;
  }

  test("localEndpoints follows this node's ready endpoints; untouched health checks keep their identity", () => {
    const { store, syncAll } = newStore();
    syncAll();
    store.apply(up("Service", "default/a", localLb("a", { hc: 32001, port: 81, nodePort: 30081 })));
    store.apply(up("Service", "default/b", localLb("b", { hc: 32002, port: 82, nodePort: 30082 })));
    store.apply(up("EndpointSlice", "default/a-1", localSlice("a-1", "a", [{ ip: "10.0.0.1", node: "node-a" }, { ip: "10.0.0.2", node: "node-b" }])));
    let snapshot = store.flush()!;
    expect(snapshot.healthChecks).toEqual([
      { namespace: "default", name: "a", port: 32001, addresses: ["127.0.0.1", "::1"], localEndpoints: 1 },
      { namespace: "default", name: "b", port: 32002, addresses: ["127.0.0.1", "::1"], localEndpoints: 0 },
    ]);
    const [, b] = snapshot.healthChecks!;

    // The only local endpoint starts terminating: it still serves (fallback), but the health check counts 0.
    store.apply(up("EndpointSlice", "default/a-1", localSlice("a-1", "a", [{ ip: "10.0.0.1", node: "node-a", ready: false }, { ip: "10.0.0.2", node: "node-b" }])));
    snapshot = store.flush()!;
    expect(snapshot.healthChecks!.map((h) => h.localEndpoints)).toEqual([0, 0]);
    expect(snapshot.healthChecks![1]).toBe(b!);
    expect(byKey(snapshot, "LoadBalancer/default/a:http").cluster.serving.map((e) => e.address)).toEqual(["10.0.0.1"]);

    // A slice of an unrelated Service changes nothing in the health checks.
    const before = snapshot.healthChecks;
    store.apply(up("Service", "default/c", service("c", { port: 83, nodePort: 30083 })));
    snapshot = store.flush()!;
    expect(snapshot.healthChecks).toBe(before!);
    expect(Object.isFrozen(snapshot.healthChecks) && Object.isFrozen(snapshot.healthChecks![0])).toBe(true);
  });

  test("a health check blocked by a listener recovers when the listener goes away, and moves with its port", () => {
    const { store, syncAll } = newStore();
    syncAll();
    store.apply(up("Service", "default/local", localLb("local", { hc: 32100 })));
    store.apply(up("Service", "default/blocker", service("blocker", { port: 32100, nodePort: 30090 })));
    let snapshot = store.flush()!;
    expect(snapshot.healthChecks).toEqual([]);
    expect(snapshot.errors).toEqual([
      {
        kind: "Service",
        object: "default/local",
        message: 'Health check port 32100 on 127.0.0.1 is already used by LoadBalancer "default/blocker:http": health check not served',
        reason: "PortConflict",
      },
    ]);

    store.apply(del("Service", "default/blocker"));
    snapshot = store.flush()!;
    expect(snapshot.healthChecks!.map((h) => `${h.name}:${h.port}`)).toEqual(["local:32100"]);
    expect(snapshot.errors).toEqual([]);

    store.apply(up("Service", "default/other", localLb("other", { hc: 32050, port: 85, nodePort: 30085, created: "2023-01-01T00:00:00Z" })));
    snapshot = store.flush()!;
    expect(snapshot.healthChecks!.map((h) => `${h.name}:${h.port}`)).toEqual(["other:32050", "local:32100"]);

    // The older Service's health check takes the port: the newer one is skipped until it moves away.
    store.apply(up("Service", "default/other", localLb("other", { hc: 32100, port: 85, nodePort: 30085, created: "2023-01-01T00:00:00Z" })));
    snapshot = store.flush()!;
    expect(snapshot.healthChecks!.map((h) => `${h.name}:${h.port}`)).toEqual(["other:32100"]);
    expect(snapshot.errors.map((e) => e.message)).toEqual([
      'Health check port 32100 on 127.0.0.1 is already used by the health check of Service "default/other": health check not served',
    ]);
    store.apply(up("Service", "default/other", localLb("other", { hc: 32000, port: 85, nodePort: 30085, created: "2023-01-01T00:00:00Z" })));
    snapshot = store.flush()!;
    expect(snapshot.healthChecks!.map((h) => `${h.name}:${h.port}`)).toEqual(["other:32000", "local:32100"]);
    expect(snapshot.errors).toEqual([]);
    expect(strip(snapshot)).toEqual(strip(buildSnapshot(store.objects(), options)));
  });
});

/** mulberry32: a small seeded PRNG, so a failing sequence can be replayed from its seed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  return { next, pick, chance: (p: number) => next() < p };
}

type Rng = ReturnType<typeof rng>;
const NAMESPACES = ["a", "b"];
const SERVICE_NAMES = ["s1", "s2", "s3"];

function randomService(r: Rng, ns: string, name: string): unknown {
  const portCount = r.pick([1, 1, 2]);
  const ports = [];
  for (let i = 0; i < portCount; i++) {
    ports.push({
      ...(portCount > 1 || r.chance(0.7) ? { name: ["http", "dns"][i] } : {}),
      port: r.pick([80, 53, 30080]),
      protocol: r.pick(["TCP", "TCP", "UDP", "SCTP"]),
      ...(r.chance(0.8) ? { nodePort: r.pick([30080, 30081]) } : {}),
      targetPort: r.pick([8080, "web"]),
      ...(r.chance(0.3) ? { appProtocol: "http" } : {}),
    });
  }
  const type = r.pick(["NodePort", "LoadBalancer", "LoadBalancer", "ClusterIP", "ExternalName"]);
  const externalName = type === "ExternalName";
  const annotations: Record<string, string> = {
    ...r.pick([{}, {}, { "kubegate.io/protocol": "http" }, { "kubegate.io/protocol": "grpc" }]),
    ...(r.chance(0.2) ? { "kubegate.io/affinity-cookie": r.pick(["kg", "kg", "bad name"]) } : {}),
    ...(r.chance(0.1) ? { "kubegate.io/affinity-cookie-ttl": r.pick(["60", "0"]) } : {}),
    ...(r.chance(0.2) ? { "kubegate.io/proxy-protocol": r.pick(["v2", "v2", "v3"]) } : {}),
    ...(externalName ? { "kubegate.io/expose-external-name": r.pick(["true", "true", "true", "false", "yes"]) } : {}),
    ...(externalName && r.chance(0.9) ? { "kubegate.io/external-name-ports": r.pick(["8080", "http=30080", "http=9000,dns=53", "53=9053", "x=1", "0"]) } : {}),
  };
  return {
    kind: "Service",
    metadata: {
      name,
      namespace: ns,
      ...(r.chance(0.8) ? { creationTimestamp: r.pick(["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]) } : {}),
      labels: r.pick([{}, {}, { "service.kubernetes.io/service-proxy-name": "kubegate" }, { "service.kubernetes.io/service-proxy-name": "other" }]),
      annotations,
    },
    spec: {
      type,
      ...(externalName ? { externalName: r.pick(["localhost", "db.example.com", "Bad_Name"]) } : {}),
      clusterIP: r.chance(0.9) ? "10.96.0.1" : "None",
      ...(r.chance(0.3) ? { externalTrafficPolicy: "Local" } : {}),
      ...(r.chance(0.6) ? { healthCheckNodePort: r.pick([32000, 32000, 30081, 80]) } : {}),
      ...(r.chance(0.3)
        ? { sessionAffinity: "ClientIP", ...(r.chance(0.5) ? { sessionAffinityConfig: { clientIP: { timeoutSeconds: r.pick([60, 0, 100000]) } } } : {}) }
        : {}),
      ...(r.chance(0.3) ? { loadBalancerSourceRanges: r.pick([["10.0.0.0/8"], ["10.0.0.1", " 192.168.0.0/16 "], ["nope"], ["fd00::/8", "nope"]]) } : {}),
      ...(r.chance(0.2) ? { trafficDistribution: "PreferClose" } : {}),
      ...(r.chance(0.2) ? { loadBalancerClass: r.pick(["kubegate.io/lb", "other.io/lb"]) } : {}),
      ...(r.chance(0.3) ? { ipFamilies: r.pick([["IPv4"], ["IPv6"], ["IPv4", "IPv6"]]) } : {}),
      ...(r.chance(0.2) ? { externalIPs: r.pick([["10.0.0.9"], ["nope"], ["192.0.2.1"]]) } : {}),
      ports,
    },
    status: { loadBalancer: { ingress: r.pick([[], [{ ip: "10.0.0.9" }], [{ ip: "127.0.0.1" }, { hostname: "x" }]]) } },
  };
}

function randomSlice(r: Rng, ns: string, name: string): unknown {
  const addressType = r.pick(["IPv4", "IPv4", "IPv6", "FQDN"]);
  const pool = addressType === "IPv6" ? ["fd00::1", "fd00::2", "10.0.0.1"] : ["10.0.0.1", "10.0.0.2", "10.0.0.3", "bad"];
  const endpoints = [];
  const count = r.pick([0, 1, 2, 3]);
  for (let i = 0; i < count; i++) {
    endpoints.push({
      addresses: [r.pick(pool)],
      conditions: { ready: r.pick([undefined, true, false]), serving: r.pick([undefined, true, false]), terminating: r.pick([undefined, false, true]) },
      ...(r.chance(0.6) ? { nodeName: r.pick(["node-a", "node-b"]) } : {}),
      ...(r.chance(0.8)
        ? { hints: r.pick([{ forZones: [{ name: "zone-a" }] }, { forZones: [{ name: "zone-b" }] }, { forZones: [{ name: "zone-b" }], forNodes: [{ name: "node-a" }] }]) }
        : {}),
    });
  }
  return {
    kind: "EndpointSlice",
    metadata: {
      name,
      namespace: ns,
      labels: { "kubernetes.io/service-name": r.pick(SERVICE_NAMES) },
      annotations: { "endpoints.kubernetes.io/last-change-trigger-time": "2099-01-01T00:00:00Z" },
    },
    addressType,
    ports: r.pick([
      [{ name: "http", protocol: "TCP", port: r.pick([8080, 8081]) }],
      [{ name: "http", protocol: "TCP", port: 8080 }, { name: "dns", protocol: "UDP", port: 53 }],
      [{ name: "", protocol: "TCP", port: 9000 }],
      [{ name: "http", protocol: "TCP" }],
    ]),
    endpoints,
  };
}

function randomEvent(r: Rng): CacheEvent {
  const kind = r.pick<KindName>(["Service", "Service", "EndpointSlice", "EndpointSlice", "EndpointSlice", "Node"]);
  const ns = r.pick(NAMESPACES);
  const name =
    kind === "Service" ? r.pick(SERVICE_NAMES) : kind === "EndpointSlice" ? `${r.pick(SERVICE_NAMES)}-${r.pick([0, 1, 2])}` : r.pick(["node-a", "node-b"]);
  const key = kind === "Node" ? name : `${ns}/${name}`;
  const roll = r.next();
  if (roll < 0.2) return { type: "delete", kind, key };
  if (roll < 0.27) return { type: "invalid", kind, key, message: `Broken ${kind} ${r.pick(["x", "y"])}` };
  const raw =
    kind === "Service"
      ? randomService(r, ns, name)
      : kind === "EndpointSlice"
        ? randomSlice(r, ns, name)
        : { kind: "Node", metadata: { name, labels: r.pick([{}, { "topology.kubernetes.io/zone": "zone-a" }, { "topology.kubernetes.io/zone": "zone-b" }]) } };
  const result = parseObject(kind, raw);
  if (!result.ok) throw new Error(`Generated an invalid ${kind}: ${result.error}`);
  return { type: "upsert", kind, key, object: result.value } as CacheEvent;
}

/** The objects a correct store holds after the events: a plain mirror, independent of the store. */
class Mirror {
  readonly objects = { Service: new Map<string, Service>(), EndpointSlice: new Map<string, EndpointSlice>(), Node: new Map<string, Node>() };
  readonly invalid = new Map<string, { kind: KindName; key: string; message: string }>();
  apply(event: CacheEvent) {
    const map = this.objects[event.kind] as Map<string, unknown>;
    const id = `${event.kind}/${event.key}`;
    if (event.type === "upsert") map.set(event.key, event.object);
    else map.delete(event.key);
    if (event.type === "invalid") this.invalid.set(id, { kind: event.kind, key: event.key, message: event.message });
    else this.invalid.delete(id);
  }
  build(model: ModelOptions): Snapshot {
    return buildSnapshot(
      {
        services: this.objects.Service.values(),
        endpointSlices: this.objects.EndpointSlice.values(),
        nodes: this.objects.Node.values(),
        invalid: this.invalid.values(),
      },
      model,
    );
  }
}

/** Every key whose entrypoint object differs between `a` and `b` (sorted), and how: by a full comparison. */
function identityDiff(a: readonly Entrypoint[], b: readonly Entrypoint[]): { keys: string[]; kinds: Set<string> } {
  const before = new Map(a.map((e) => [e.key, e]));
  const after = new Map(b.map((e) => [e.key, e]));
  const keys: string[] = [];
  const kinds = new Set<string>();
  for (const key of new Set([...before.keys(), ...after.keys()])) {
    const x = before.get(key);
    const y = after.get(key);
    if (x === y) continue;
    keys.push(key);
    kinds.add(x === undefined ? "added" : y === undefined ? "removed" : "replaced");
  }
  return { keys: keys.sort(), kinds };
}

const strip = (s: Snapshot | undefined) => s && { entrypoints: s.entrypoints, errors: s.errors, node: s.node, healthChecks: s.healthChecks };

describe("ModelStore equals a full rebuild (randomized, seeded)", () => {
  const modelVariants: [string, ModelOptions][] = [
    ["all services", { ...options, hostAddresses: ["127.0.0.1", "10.0.0.9", "::1"] }],
    ["labelled only, nodeport-addresses", { ...options, hostAddresses: ["127.0.0.1", "10.0.0.9", "::1"], nodePortAddresses: ["127.0.0.0/8", "::1/128"], allServices: false }],
  ];
  test.each(modelVariants)("%s", (_name, model) => {
    let publishes = 0;
    let checks = 0;
    const seen = new Set<string>();
    for (let seed = 1; seed <= 60; seed++) {
      const r = rng(seed);
      const mirror = new Mirror();
      const { store, syncAll } = newStore({}, model);
      syncAll();
      let previous: Snapshot | undefined;
      for (let step = 0; step < 40; step++) {
        const burst = r.pick([1, 1, 2, 5]);
        for (let i = 0; i < burst; i++) {
          const event = randomEvent(r);
          mirror.apply(event);
          store.apply(event);
        }
        const snapshot = store.flush();
        const expected = mirror.build(model);
        const context = `seed ${seed}, step ${step}`;
        expect({ context, ...strip(snapshot) }).toEqual({ context, ...strip(expected) });
        if (snapshot !== previous) {
          publishes++;
          // Published only on change, with consecutive versions.
          expect({ context, changed: previous === undefined || !Bun.deepEquals(strip(previous), strip(snapshot)) }).toEqual({ context, changed: true });
          expect(snapshot!.version).toBe((previous?.version ?? 0) + 1);
          // The delta names exactly the keys whose entrypoint object differs from the previous snapshot's.
          if (previous === undefined) expect(snapshot!.delta).toBeUndefined();
          else {
            const delta = snapshot!.delta!;
            expect(delta.base).toBe(previous.entrypoints);
            const exact = identityDiff(previous.entrypoints, snapshot!.entrypoints);
            expect({ context, changed: [...delta.changed].sort() }).toEqual({ context, changed: exact.keys });
            for (const kind of exact.kinds) seen.add(`delta ${kind}`);
            if (exact.keys.length === 0) seen.add("delta empty");
          }
          // Entrypoints equal to the previous snapshot's keep their identity.
          for (const entrypoint of snapshot!.entrypoints) {
            const before = previous?.entrypoints.find((e) => e.key === entrypoint.key);
            if (before && Bun.deepEquals(before, entrypoint)) expect({ context, key: entrypoint.key, same: before === entrypoint }).toEqual({ context, key: entrypoint.key, same: true });
          }
        }
        previous = snapshot;
        checks++;
        for (const e of snapshot!.errors) seen.add(`error:${e.kind}`);
        if (snapshot!.node.zone) seen.add("zone");
        if (snapshot!.entrypoints.some((e) => e.cluster.serving.length > 0 && e.cluster.serving.length < e.cluster.endpoints.length)) seen.add("partial serving");
        for (const e of snapshot!.entrypoints) {
          seen.add(`${e.type}/${e.protocol}`);
          if (e.sessionAffinity) seen.add(e.sessionAffinity.cookie ? "affinity cookie" : "affinity ClientIP");
          if (e.sourceRanges) seen.add("sourceRanges");
          if (e.proxyProtocol) seen.add("proxyProtocol");
          if (e.externalName) seen.add("externalName");
          if (e.cluster.selection?.topologyIgnored) seen.add("topologyIgnored");
          if (e.cluster.selection?.fallback === "serving-terminating") seen.add("fallback");
        }
        if (snapshot!.healthChecks!.some((h) => h.localEndpoints > 0)) seen.add("healthCheck with local endpoints");
        if (snapshot!.errors.some((e) => e.message.startsWith("Health check port"))) seen.add("error:health check conflict");
      }
    }
    expect(checks).toBe(60 * 40);
    expect(publishes).toBeGreaterThan(checks / 3);
    // The generator reaches every feature the store must keep consistent.
    expect([...seen].sort()).toEqual([
      "LoadBalancer/http",
      "LoadBalancer/tcp",
      "LoadBalancer/udp",
      "NodePort/http",
      "NodePort/tcp",
      "NodePort/udp",
      "affinity ClientIP",
      "affinity cookie",
      "delta added",
      "delta empty",
      "delta removed",
      "delta replaced",
      "error:EndpointSlice",
      "error:Entrypoint",
      "error:Node",
      "error:Service",
      "error:health check conflict",
      "externalName",
      "fallback",
      "healthCheck with local endpoints",
      "partial serving",
      "proxyProtocol",
      "sourceRanges",
      "topologyIgnored",
      "zone",
    ]);
  });
});
