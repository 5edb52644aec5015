/**
 * The model's Service problems as Warning Events: which errors become Events on which Service (a fake recorder), and
 * the Event as written (the in-memory fake API), once per problem.
 */
import { describe, expect, test } from "bun:test";
import { EventRecorder, type InvolvedObject } from "../../src/controller/events.ts";
import { modelErrorEvent, modelErrorEvents } from "../../src/controller/model-events.ts";
import { parseObject, type EndpointSlice, type Service } from "../../src/kube/objects.ts";
import { silentLogger } from "../../src/log.ts";
import { buildSnapshot } from "../../src/model/build.ts";
import type { ModelOptions, Snapshot } from "../../src/model/types.ts";
import { FakeKube } from "../support/fake-kube.ts";

const options: ModelOptions = {
  nodeName: "node-a",
  hostAddresses: ["127.0.0.1"],
  nodePortAddresses: [],
  serviceProxyName: "kubegate",
  allServices: true,
  maxEndpointsPerService: 2,
};

/** A raw LoadBalancer Service on `port` (its node port `nodePort`). */
function rawService(name: string, o: { port?: number; nodePort?: number; annotations?: Record<string, string>; uid?: string; created?: string } = {}) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name,
      namespace: "shop",
      ...(o.uid ? { uid: o.uid } : {}),
      ...(o.created ? { creationTimestamp: o.created } : {}),
      ...(o.annotations ? { annotations: o.annotations } : {}),
    },
    spec: {
      type: "LoadBalancer",
      ports: [{ name: "http", port: o.port ?? 80, protocol: "TCP", appProtocol: "http", ...(o.nodePort ? { nodePort: o.nodePort } : {}) }],
    },
  };
}

function service(raw: unknown): Service {
  const r = parseObject("Service", raw);
  if (!r.ok) throw new Error(`Invalid Service fixture: ${r.error}`);
  return r.value as Service;
}

function slice(svc: string, ips: string[]): EndpointSlice {
  const r = parseObject("EndpointSlice", {
    metadata: { name: `${svc}-a`, namespace: "shop", labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    ports: [{ name: "http", protocol: "TCP", port: 8080 }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
  });
  if (!r.ok) throw new Error(`Invalid EndpointSlice fixture: ${r.error}`);
  return r.value as EndpointSlice;
}

let version = 0;
function snapshotOf(services: Service[], slices: EndpointSlice[] = []): Snapshot {
  return buildSnapshot({ services, endpointSlices: slices, nodes: [] }, options, ++version);
}

/** A recorder that remembers every warning. */
function fakeRecorder() {
  const calls: { object: InvolvedObject; reason: string; message: string }[] = [];
  return {
    calls,
    warning(object: InvolvedObject, reason: string, message: string) {
      calls.push({ object, reason, message });
      return Promise.resolve("created" as const);
    },
  };
}

const BAD_BALANCER = 'Annotation "kubegate.io/balancer" on Service "shop/web" is invalid: expected "round-robin", "least-request", "random", "ring-hash" or "maglev", got "fastest"; ignored';
const web = (annotations: Record<string, string>, uid = "uid-web") =>
  service(rawService("web", { uid, nodePort: 30080, annotations, created: "2024-01-01T00:00:00Z" }));

describe("modelErrorEvents (fake recorder)", () => {
  test("one Warning per new problem on its Service, with the Service uid; not repeated while it lasts; again when it returns", () => {
    const recorder = fakeRecorder();
    const report = modelErrorEvents(recorder);
    const bad = web({ "kubegate.io/balancer": "fastest" });
    report(snapshotOf([bad]));
    expect(recorder.calls).toEqual([
      { object: { kind: "Service", apiVersion: "v1", namespace: "shop", name: "web", uid: "uid-web" }, reason: "InvalidAnnotation", message: BAD_BALANCER },
    ]);

    // Later snapshots (new arrays, same problem) say nothing new.
    report(snapshotOf([bad, service(rawService("other", { nodePort: 30081, port: 81 }))]));
    report(snapshotOf([bad]));
    expect(recorder.calls).toHaveLength(1);

    // Fixed, then broken again: a new Event.
    report(snapshotOf([web({ "kubegate.io/balancer": "maglev" })]));
    expect(recorder.calls).toHaveLength(1);
    report(snapshotOf([bad]));
    expect(recorder.calls.map((c) => c.message)).toEqual([BAD_BALANCER, BAD_BALANCER]);

    // The same problem on a recreated Service (new uid) is news for the new object.
    report(snapshotOf([web({ "kubegate.io/balancer": "fastest" }, "uid-web-2")]));
    expect(recorder.calls.map((c) => c.object.uid)).toEqual(["uid-web", "uid-web", "uid-web-2"]);
  });

  test("a port conflict is reported on the losing entrypoint's Service, naming the entrypoint", () => {
    const recorder = fakeRecorder();
    const report = modelErrorEvents(recorder);
    const old = service(rawService("old", { uid: "uid-old", nodePort: 30080, created: "2023-01-01T00:00:00Z" }));
    const newer = service(rawService("new", { uid: "uid-new", nodePort: 30081, created: "2024-01-01T00:00:00Z" }));
    report(snapshotOf([old, newer]));
    expect(recorder.calls).toEqual([
      {
        object: { kind: "Service", apiVersion: "v1", namespace: "shop", name: "new", uid: "uid-new" },
        reason: "PortConflict",
        message: 'LoadBalancer "shop/new:http" is not served: Port 80 on 127.0.0.1 is already used by "shop/old:http"',
      },
    ]);
  });

  test("too many endpoints, generic Service problems; other kinds are not Service Events", () => {
    const recorder = fakeRecorder();
    const report = modelErrorEvents(recorder);
    const big = service(rawService("big", { uid: "uid-big", nodePort: 30082, port: 82 }));
    const snapshot = snapshotOf([big], [slice("big", ["10.0.0.1", "10.0.0.2", "10.0.0.3"])]);
    report({
      ...snapshot,
      errors: [
        ...snapshot.errors,
        { kind: "Service", object: "shop/broken", message: "Invalid type: Expected number" },
        { kind: "EndpointSlice", object: "shop/big-a", message: 'Endpoint address "x" is not an IP address: skipped' },
        { kind: "Node", object: "node-a", message: "bad node" },
        { kind: "Source", object: "services", message: "list failed" },
      ],
    });
    expect(recorder.calls).toEqual([
      {
        object: { kind: "Service", apiVersion: "v1", namespace: "shop", name: "big", uid: "uid-big" },
        reason: "TooManyEndpoints",
        message:
          'Port "http" has 3 endpoints, more than the limit of 2 (--max-endpoints-per-service): only the first 2 serving endpoints (by address) receive traffic',
      },
      // Not in the snapshot (e.g. an object the source could not parse): no uid, the generic reason.
      { object: { kind: "Service", apiVersion: "v1", namespace: "shop", name: "broken" }, reason: "InvalidService", message: "Invalid type: Expected number" },
    ]);
  });

  test("modelErrorEvent: an Entrypoint error missing from the snapshot still names its Service from the key", () => {
    const empty: Snapshot = { version: 1, entrypoints: [], errors: [], node: { name: "node-a" } };
    expect(modelErrorEvent({ kind: "Entrypoint", object: "NodePort/shop/web:http", message: "m", reason: "PortConflict" }, empty)).toEqual({
      object: { kind: "Service", apiVersion: "v1", namespace: "shop", name: "web" },
      reason: "PortConflict",
      message: 'NodePort "shop/web:http" is not served: m',
    });
    expect(modelErrorEvent({ kind: "Entrypoint", object: "garbage", message: "m" }, empty)).toBeUndefined();
    expect(modelErrorEvent({ kind: "Service", object: "no-namespace", message: "m" }, empty)).toBeUndefined();
  });
});

test("the Event is written where `kubectl describe service` looks for it, once", async () => {
  const kube = new FakeKube().load(`${import.meta.dir}/fixtures/kubectl-describe.yaml`);
  const client = kube.client();
  await using recorder = new EventRecorder({ client, nodeName: "node-a", log: silentLogger });
  const report = modelErrorEvents(recorder);

  // The Services as the cluster stores them (with uids), through the model.
  const services = (await client.list("Service", { namespace: "shop" })).items.map(service);
  const uid = services.find((s) => s.metadata.name === "web")?.metadata.uid;
  expect(uid).toBeString();
  report(snapshotOf(services));
  await recorder.flush();

  // What `kubectl describe service web` selects: involvedObject kind, name, namespace and uid.
  type EventObj = { involvedObject?: { kind?: string; name?: string; namespace?: string; uid?: string } };
  const describe = () =>
    (kube.items("events") as EventObj[]).filter(
      ({ involvedObject: o }) => o?.kind === "Service" && o.name === "web" && o.namespace === "shop" && o.uid === uid,
    );
  const events = describe();
  expect(events).toHaveLength(1);
  expect(events[0]).toMatchObject({
    type: "Warning",
    reason: "InvalidAnnotation",
    message: BAD_BALANCER,
    count: 1,
    involvedObject: { kind: "Service", name: "web", namespace: "shop", uid },
    source: { component: "kubegate", host: "node-a" },
  });
  expect(kube.items("events")).toHaveLength(1);

  // The next snapshot with the same problem writes nothing.
  const writes = kube.calls.filter((c) => c.resource === "events").length;
  report(snapshotOf(services));
  await recorder.flush();
  expect(kube.calls.filter((c) => c.resource === "events").length).toBe(writes);
  expect(recorder.status()).toMatchObject({ created: 1, counted: 0, failed: 0 });
});
