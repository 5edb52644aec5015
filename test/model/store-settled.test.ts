/**
 * A flush that applies changes without changing the snapshot still counts as a sync: the gateway
 * marks health updated from `onSettled`, or a quiet cluster's Node heartbeats would make /healthz 503.
 */
import { expect, test } from "bun:test";
import { HealthState } from "../../src/admin/proxy-health.ts";
import { parseObject } from "../../src/kube/objects.ts";
import { ModelStore } from "../../src/model/store.ts";

test("a no-op change settles without a publish, and keeps health green past the health timeout", () => {
  let now = 0;
  const health = new HealthState(60_000, () => now);
  const published: number[] = [];
  const settled: number[] = [];
  const store = new ModelStore(
    { nodeName: "n1", hostAddresses: ["127.0.0.1"], nodePortAddresses: [], serviceProxyName: "kubegate", allServices: true },
    {
      onSnapshot: (s) => (published.push(s.version), health.updated()),
      onSettled: (ms) => (settled.push(ms), health.updated()),
      schedule: () => undefined, // flushed by hand below
    },
  );
  const node = parseObject("Node", { metadata: { name: "n1", labels: { "topology.kubernetes.io/zone": "z" } } });
  if (!node.ok) throw new Error(node.error);
  for (const kind of ["Service", "EndpointSlice", "Node"] as const) store.synced(kind);
  store.apply({ type: "upsert", kind: "Node", key: "n1", object: node.value });
  store.flush();
  expect(published).toEqual([1]);

  // The same Node again (a heartbeat): pending, applied, nothing to publish.
  now += 1_000;
  health.queued();
  store.apply({ type: "upsert", kind: "Node", key: "n1", object: node.value });
  store.flush();
  expect(published).toEqual([1]);
  expect(settled).toHaveLength(1);
  now += 120_000;
  expect(health.healthy().healthy).toBe(true);
});

test("health is green while starting up, however long the first sync takes (as kube-proxy)", () => {
  let now = 0;
  const health = new HealthState(60_000, () => now);
  health.queued();
  now += 600_000;
  expect(health.healthy().healthy).toBe(true);
  health.updated();
  health.queued();
  now += 60_000;
  expect(health.healthy().healthy).toBe(false);
});
