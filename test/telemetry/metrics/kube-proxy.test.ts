/**
 * kube-proxy's metrics fed by the real model store and health app: sync duration, network
 * programming latency from the EndpointSlice trigger-time annotation, timestamps, change counters and
 * pending gauges, no-local-endpoints per family, healthz/livez codes; plus watch and listener gauges.
 */
import { describe, expect, test } from "bun:test";
import { HealthState, healthApp, type HealthCounts } from "../../../src/admin/proxy-health.ts";
import { type EndpointSlice, type KindName, parseObject, type Service } from "../../../src/kube/objects.ts";
import type { CacheEvent } from "../../../src/kube/source.ts";
import { ModelStore, type PublishInfo } from "../../../src/model/store.ts";
import type { Endpoint, Entrypoint, Snapshot } from "../../../src/model/types.ts";
import { GatewayMetrics, ipFamiliesOf, KubeProxyMetricNames as K, noLocalEndpoints } from "../../../src/telemetry/metrics/index.ts";
import { entrypoint } from "../../support/entrypoints.ts";
import { parseScrape, seriesOf, valueOf } from "../../support/metrics-parse.ts";

function parsed<K extends KindName>(kind: K, raw: unknown) {
  const result = parseObject(kind, raw);
  if (!result.ok) throw new Error(`Fixture ${kind} is invalid: ${result.error}`);
  return result.value;
}

const service = (name: string): Service =>
  parsed("Service", {
    metadata: { name, namespace: "default", creationTimestamp: "2024-01-01T00:00:00Z" },
    spec: { type: "NodePort", clusterIP: "10.96.0.1", ports: [{ name: "http", port: 80, nodePort: 30080 }] },
  }) as Service;

const slice = (name: string, svc: string, trigger: string): EndpointSlice =>
  parsed("EndpointSlice", {
    metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": svc }, annotations: { "endpoints.kubernetes.io/last-change-trigger-time": trigger } },
    addressType: "IPv4",
    ports: [{ name: "http", protocol: "TCP", port: 8080 }],
    endpoints: [{ addresses: ["10.0.0.1"], conditions: { ready: true } }],
  }) as EndpointSlice;

const up = (kind: KindName, key: string, object: unknown) => ({ type: "upsert", kind, key, object }) as CacheEvent;

/** The real store, with a hand-driven scheduler, publishing into GatewayMetrics as the gateway does. */
function wiredStore(metrics: GatewayMetrics, clock: { wall: number }, applySeconds: number) {
  const tasks: (() => void)[] = [];
  const infos: PublishInfo[] = [];
  const store = new ModelStore(
    { nodeName: "node-a", hostAddresses: ["127.0.0.1"], nodePortAddresses: [], serviceProxyName: "kubegate", allServices: true },
    {
      onSnapshot(snapshot, info) {
        infos.push(info);
        metrics.applied(snapshot, info, applySeconds);
      },
      schedule: (fn) => void tasks.push(fn),
      now: () => 0,
      wallClock: () => clock.wall,
    },
  );
  const sink = {
    apply(event: CacheEvent) {
      metrics.queued(event);
      store.apply(event);
    },
  };
  for (const kind of ["Service", "EndpointSlice", "Node"] as const) store.synced(kind);
  return { store, sink, infos, runScheduled: () => tasks.splice(0).forEach((fn) => fn()) };
}

describe("sync metrics", () => {
  test("one publish: duration, timestamps, change counters, pending gauges and network programming latency", () => {
    const T0 = Date.parse("2025-03-01T10:00:00Z");
    const clock = { wall: T0 };
    const metrics = new GatewayMetrics({ ipFamilies: ["IPv4", "IPv6"], now: () => clock.wall });
    const { sink, infos, runScheduled } = wiredStore(metrics, clock, 0.003);
    runScheduled(); // the empty first snapshot

    clock.wall = T0 + 10_000;
    sink.apply(up("Service", "default/web", service("web")));
    sink.apply(up("EndpointSlice", "default/web-1", slice("web-1", "web", new Date(T0 + 8_000).toISOString())));
    let s = parseScrape(metrics.expose());
    expect(valueOf(s, K.serviceChangesPending)).toBe(1);
    expect(valueOf(s, K.endpointChangesPending)).toBe(1);
    expect(valueOf(s, K.lastQueuedTimestamp, { ip_family: "IPv4" })).toBe((T0 + 10_000) / 1000);
    expect(valueOf(s, K.lastQueuedTimestamp, { ip_family: "IPv6" })).toBe((T0 + 10_000) / 1000);

    clock.wall = T0 + 12_500;
    runScheduled();
    expect(infos).toHaveLength(2);
    const info = infos[1]!;
    expect(info).toMatchObject({ serviceChanges: 1, endpointChanges: 1, triggerTimes: [T0 + 8_000] });

    s = parseScrape(metrics.expose());
    expect(valueOf(s, K.serviceChangesPending)).toBe(0);
    expect(valueOf(s, K.endpointChangesPending)).toBe(0);
    expect(valueOf(s, K.serviceChangesTotal)).toBe(1);
    expect(valueOf(s, K.endpointChangesTotal)).toBe(1);
    expect(valueOf(s, K.lastTimestamp, { ip_family: "IPv4" })).toBe((T0 + 12_500) / 1000);
    expect(valueOf(s, K.lastTimestamp, { ip_family: "IPv6" })).toBe((T0 + 12_500) / 1000);
    // Two syncs (the empty first snapshot and this one), each 0 ms build + 3 ms apply, in both families.
    for (const ip_family of ["IPv4", "IPv6"]) {
      expect(valueOf(s, `${K.syncDuration}_count`, { ip_family })).toBe(2);
      expect(valueOf(s, `${K.syncDuration}_bucket`, { ip_family, le: "0.002" })).toBe(0);
      expect(valueOf(s, `${K.syncDuration}_bucket`, { ip_family, le: "0.004" })).toBe(2);
    }
    // Trigger at T0+8 s, applied at T0+12.5 s: 4.5 s, in the (4, 5] bucket of the first family.
    expect(valueOf(s, `${K.networkProgramming}_count`, { ip_family: "IPv4" })).toBe(1);
    expect(valueOf(s, `${K.networkProgramming}_sum`, { ip_family: "IPv4" })).toBe(4.5);
    expect(valueOf(s, `${K.networkProgramming}_bucket`, { ip_family: "IPv4", le: "4" })).toBe(0);
    expect(valueOf(s, `${K.networkProgramming}_bucket`, { ip_family: "IPv4", le: "5" })).toBe(1);
    expect(seriesOf(s, `${K.networkProgramming}_count`)).toHaveLength(1);
    expect(s.types.get(K.syncDuration)).toBe("histogram");
    expect(s.types.get(K.lastTimestamp)).toBe("gauge");
    expect(s.types.get(K.serviceChangesTotal)).toBe("counter");
    expect(s.types.get(K.noLocalEndpoints)).toBe("gauge");
  });

  test("settled() clears pending changes after a flush that published nothing", () => {
    const clock = { wall: 1_000_000 };
    const metrics = new GatewayMetrics({ now: () => clock.wall });
    metrics.queued(up("EndpointSlice", "default/a", {}));
    metrics.queued(up("EndpointSlice", "default/a", {}));
    metrics.queued(up("EndpointSlice", "default/b", {}));
    metrics.queued(up("Node", "node-b", {}));
    expect(metrics.kubeProxy.pending).toEqual({ services: 0, endpoints: 2 });
    clock.wall = 2_000_000;
    metrics.settled(1);
    expect(metrics.kubeProxy.pending).toEqual({ services: 0, endpoints: 0 });
    expect(valueOf(parseScrape(metrics.expose()), K.lastTimestamp, { ip_family: "IPv4" })).toBe(2_000);
  });

  test("ipFamiliesOf: the families of the node's addresses, IPv4 first", () => {
    expect(ipFamiliesOf(["::1", "127.0.0.1"])).toEqual(["IPv4", "IPv6"]);
    expect(ipFamiliesOf(["fd00::1"])).toEqual(["IPv6"]);
    expect(ipFamiliesOf([])).toEqual(["IPv4"]);
  });
});

describe("no local endpoints (a gauge despite its _total name)", () => {
  const ep = (address: string, nodeName: string, conditions: Partial<Endpoint> = {}): Endpoint => ({ address, port: 80, ready: true, serving: true, terminating: false, nodeName, ...conditions });
  const local = (name: string, endpoints: Endpoint[], serving: Endpoint[], policy: "Local" | "Cluster" = "Local"): Entrypoint => {
    const base = entrypoint({ name });
    return { ...base, externalTrafficPolicy: policy, cluster: { name, endpoints, serving } };
  };

  test("counts Service ports with a Local policy and endpoints elsewhere but none here, per family, once per Service port", () => {
    const elsewhere = local("a/only-remote:http", [ep("10.0.0.1", "node-b")], []);
    const elsewhereLb: Entrypoint = { ...elsewhere, type: "LoadBalancer", key: `LoadBalancer/${elsewhere.name}` };
    const v4Here = ep("10.0.0.2", "node-a");
    const split = local("a/v4-here-v6-remote:http", [v4Here, ep("fd00::2", "node-b")], [v4Here]);
    const none = local("a/no-endpoints:http", [], []);
    const terminatingOnly = local("a/draining-remote:http", [ep("10.0.0.3", "node-b", { ready: false, serving: true, terminating: true })], []);
    const notServing = local("a/not-serving:http", [ep("10.0.0.4", "node-b", { ready: false, serving: false })], []);
    const cluster = local("a/cluster-policy:http", [ep("10.0.0.5", "node-b")], [], "Cluster");
    const snapshot: Snapshot = {
      version: 1,
      entrypoints: [elsewhere, elsewhereLb, split, none, terminatingOnly, notServing, cluster].sort((x, y) => (x.key < y.key ? -1 : 1)),
      errors: [],
      node: { name: "node-a" },
    };
    expect(noLocalEndpoints(snapshot)).toEqual({ IPv4: 2, IPv6: 1 });

    const metrics = new GatewayMetrics({ ipFamilies: ["IPv4", "IPv6"] });
    metrics.applied(snapshot, { serviceChanges: 0, endpointChanges: 0, triggerTimes: [], buildMs: 0 }, 0);
    const s = parseScrape(metrics.expose());
    expect(valueOf(s, K.noLocalEndpoints, { ip_family: "IPv4", traffic_policy: "external" })).toBe(2);
    expect(valueOf(s, K.noLocalEndpoints, { ip_family: "IPv6", traffic_policy: "external" })).toBe(1);
  });
});

describe("health, watch and listener metrics", () => {
  test("kubeproxy_proxy_healthz_total / livez_total count the health app's answers by code", async () => {
    let now = 1_000_000;
    const state = new HealthState(60_000, () => now);
    const counts: HealthCounts = { healthz: {}, livez: {} };
    const app = healthApp(state, counts);
    const metrics = new GatewayMetrics({ healthCounts: counts });
    state.updated();
    for (let i = 0; i < 3; i++) expect((await app.request("/healthz")).status).toBe(200);
    expect((await app.request("/livez")).status).toBe(200);
    state.queued();
    now += 60_000;
    expect((await app.request("/healthz")).status).toBe(503);
    expect((await app.request("/livez")).status).toBe(503);
    const s = parseScrape(metrics.expose());
    expect(valueOf(s, K.healthz, { code: "200" })).toBe(3);
    expect(valueOf(s, K.healthz, { code: "503" })).toBe(1);
    expect(valueOf(s, K.livez, { code: "200" })).toBe(1);
    expect(valueOf(s, K.livez, { code: "503" })).toBe(1);
    expect(s.types.get(K.healthz)).toBe("counter");
  });

  test("watch lists and restarts per resource, listeners by state, read at scrape time", () => {
    let lists = 1;
    let watches = 1;
    const metrics = new GatewayMetrics({
      sources: () => [
        { kind: "Service", synced: true, phase: "watching", lists, watches, objects: 3 },
        { kind: "EndpointSlice", synced: true, phase: "watching", lists: 1, watches: 0, objects: 3 },
      ],
      listeners: () => ({ bound: 4, failed: 1, draining: 2 }),
    });
    let s = parseScrape(metrics.expose());
    expect(valueOf(s, "kubegate_watch_lists_total", { resource: "services" })).toBe(1);
    expect(valueOf(s, "kubegate_watch_restarts_total", { resource: "services" })).toBe(0);
    expect(valueOf(s, "kubegate_watch_restarts_total", { resource: "endpointslices" })).toBe(0);
    lists = 3;
    watches = 5;
    s = parseScrape(metrics.expose());
    expect(valueOf(s, "kubegate_watch_lists_total", { resource: "services" })).toBe(3);
    expect(valueOf(s, "kubegate_watch_restarts_total", { resource: "services" })).toBe(4);
    expect(["bound", "failed", "draining"].map((state) => valueOf(s, "kubegate_listeners", { state }))).toEqual([4, 1, 2]);
  });

  test("a view that throws loses only its own family", () => {
    const failures: string[] = [];
    const metrics = new GatewayMetrics({
      sources: () => {
        throw new Error("source is closed");
      },
      onCollectError: (metric) => failures.push(metric),
    });
    const s = parseScrape(metrics.expose());
    expect(s.types.has("kubegate_watch_lists_total")).toBe(false);
    expect(s.types.has(K.syncDuration)).toBe(true);
    expect(s.types.has("kubegate_listeners")).toBe(true);
    expect(failures).toEqual(["kubegate_watch_lists_total", "kubegate_watch_restarts_total"]);
  });
});
