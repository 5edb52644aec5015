/**
 * The test API server must behave like kube-apiserver on the wire, or the list/watch client tested
 * against it proves nothing. Real sockets, real TLS, fetch and curl as clients.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { type TestApiServer, startApiServer } from "./apiserver.ts";
import { createCertAuthority, issueCert, testCerts } from "./certs.ts";
import { parse as parseYaml } from "yaml";

type Obj = Record<string, any>;
type WatchEvent = { type: string; object: Obj };

const svc = (name: string, ns = "default", labels?: Record<string, string>): Obj => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: ns, ...(labels ? { labels } : {}) },
  spec: { ports: [{ port: 80 }] },
});

function tlsOf(api: TestApiServer) {
  return api.ca ? { tls: { ca: api.ca, cert: api.clientCert, key: api.clientKey } } : {};
}

async function call(api: TestApiServer, path: string, init: RequestInit & { body?: string } = {}): Promise<{ status: number; body: Obj; headers: Headers }> {
  const res = await fetch(`${api.url}${path}`, { ...init, ...tlsOf(api) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : {}, headers: res.headers };
}

/**
 * Reads newline-delimited JSON watch events from a response body in the background, so a test can both
 * await the next event and ask what has arrived so far.
 */
class EventReader {
  private readonly queue: (WatchEvent | "end" | Error)[] = [];
  private waiter: (() => void) | undefined;
  /** Every event received so far. */
  readonly received: WatchEvent[] = [];

  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {
    void this.pump();
  }

  private async pump(): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await this.reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
          const event = JSON.parse(buffer.slice(0, nl)) as WatchEvent;
          buffer = buffer.slice(nl + 1);
          this.received.push(event);
          this.push(event);
        }
      }
      this.push("end");
    } catch (e) {
      this.push(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private push(item: WatchEvent | "end" | Error): void {
    this.queue.push(item);
    this.waiter?.();
  }

  /** The next event, or "end" when the stream ended cleanly; rejects when the connection breaks. */
  async next(): Promise<WatchEvent | "end"> {
    while (this.queue.length === 0) {
      const { promise, resolve } = Promise.withResolvers<void>();
      this.waiter = resolve;
      await promise;
    }
    const item = this.queue.shift()!;
    if (item instanceof Error) throw item;
    return item;
  }

  async take(n: number): Promise<WatchEvent[]> {
    const out: WatchEvent[] = [];
    while (out.length < n) {
      const e = await this.next();
      if (e === "end") throw new Error(`Watch ended after ${out.length} of ${n} events`);
      out.push(e);
    }
    return out;
  }

  /** Next event that is not a BOOKMARK. */
  async nextEvent(): Promise<WatchEvent | "end"> {
    for (;;) {
      const e = await this.next();
      if (e === "end" || e.type !== "BOOKMARK") return e;
    }
  }

  cancel(): Promise<void> {
    return this.reader.cancel().catch(() => {});
  }
}

async function openWatch(api: TestApiServer, path: string): Promise<{ status: number; events: EventReader; headers: Headers }> {
  const res = await fetch(`${api.url}${path}`, tlsOf(api));
  return { status: res.status, events: new EventReader(res.body!.getReader()), headers: res.headers };
}

const names = (items: Obj[]): string[] => items.map((i) => `${i.metadata.namespace ?? ""}/${i.metadata.name}`);

function runCurl(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn("curl", args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("in-process server", () => {
  let api: TestApiServer;
  beforeAll(async () => {
    api = await startApiServer({ bookmarkIntervalMs: 100, rbac: false }) // this server's own verbs, beyond the gateway's role;
  });
  afterAll(async () => {
    await api[Symbol.asyncDispose]();
  });

  test("discovery documents and /version", async () => {
    expect((await call(api, "/api")).body).toMatchObject({ kind: "APIVersions", versions: ["v1"] });
    const groups = (await call(api, "/apis")).body;
    expect(groups.kind).toBe("APIGroupList");
    expect(groups.groups.map((g: Obj) => g.name).sort()).toEqual(["coordination.k8s.io", "discovery.k8s.io", "events.k8s.io"]);
    const core = (await call(api, "/api/v1")).body;
    expect(core).toMatchObject({ kind: "APIResourceList", groupVersion: "v1" });
    expect(core.resources.map((r: Obj) => r.name)).toEqual(["services", "services/status", "nodes", "nodes/status", "pods", "pods/status", "pods/portforward", "events"]);
    expect(core.resources[0]).toMatchObject({ name: "services", namespaced: true, kind: "Service", verbs: expect.arrayContaining(["list", "watch"]) });
    const discovery = (await call(api, "/apis/discovery.k8s.io/v1")).body;
    expect(discovery.resources).toEqual([expect.objectContaining({ name: "endpointslices", kind: "EndpointSlice", namespaced: true })]);
    expect((await call(api, "/version")).body).toMatchObject({ major: "1", gitVersion: expect.stringMatching(/^v1\./) });
    expect((await call(api, "/api/v1/configmaps")).body).toMatchObject({ kind: "Status", reason: "NotFound", code: 404 });
  });

  test("list pages with limit/continue over a consistent snapshot", async () => {
    for (let i = 0; i < 12; i++) api.create(svc(`page-${String(i).padStart(2, "0")}`, i % 2 ? "ns-b" : "ns-a"));
    const first = await call(api, "/api/v1/services?limit=5&labelSelector=");
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ kind: "ServiceList", apiVersion: "v1", metadata: { remainingItemCount: 7 } });
    expect(names(first.body.items)).toEqual(["ns-a/page-00", "ns-a/page-02", "ns-a/page-04", "ns-a/page-06", "ns-a/page-08"]);
    expect(first.body.items[0].kind).toBeUndefined(); // typed list items carry no kind on the wire
    const snapshotRV = first.body.metadata.resourceVersion;

    // Writes between pages must not show up in later pages of the same list.
    api.remove("services", "ns-b", "page-01");
    api.create(svc("page-99", "ns-b"));
    api.patch("services", "ns-b", "page-03", { metadata: { labels: { changed: "yes" } } });

    const second = await call(api, `/api/v1/services?limit=5&continue=${encodeURIComponent(first.body.metadata.continue)}`);
    expect(second.body.metadata).toMatchObject({ resourceVersion: snapshotRV, remainingItemCount: 2 });
    expect(names(second.body.items)).toEqual(["ns-a/page-10", "ns-b/page-01", "ns-b/page-03", "ns-b/page-05", "ns-b/page-07"]);
    expect(second.body.items[2].metadata.labels).toBeUndefined();
    const third = await call(api, `/api/v1/services?limit=5&continue=${encodeURIComponent(second.body.metadata.continue)}`);
    expect(names(third.body.items)).toEqual(["ns-b/page-09", "ns-b/page-11"]);
    expect(third.body.metadata.continue).toBeUndefined();
    expect(third.body.metadata.remainingItemCount).toBeUndefined();

    // A fresh list sees the writes.
    const now = await call(api, "/api/v1/namespaces/ns-b/services");
    expect(names(now.body.items)).toEqual(["ns-b/page-03", "ns-b/page-05", "ns-b/page-07", "ns-b/page-09", "ns-b/page-11", "ns-b/page-99"]);
    expect(Number(now.body.metadata.resourceVersion)).toBeGreaterThan(Number(snapshotRV));
    expect(api.requests.filter((r) => r.query["continue"]).length).toBe(2);
  });

  test("label and field selectors filter lists", async () => {
    api.create(svc("sel-a", "sel", { app: "web", tier: "front" }));
    api.create(svc("sel-b", "sel", { app: "db" }));
    api.create(svc("sel-c", "sel", { app: "web" }));
    const list = async (q: string) => names((await call(api, `/api/v1/namespaces/sel/services?${q}`)).body.items);
    expect(await list("labelSelector=app%3Dweb")).toEqual(["sel/sel-a", "sel/sel-c"]);
    expect(await list("labelSelector=app!%3Dweb")).toEqual(["sel/sel-b"]);
    expect(await list("labelSelector=app%20in%20(db,cache)")).toEqual(["sel/sel-b"]);
    expect(await list("labelSelector=app,!tier")).toEqual(["sel/sel-b", "sel/sel-c"]);
    expect(await list("fieldSelector=metadata.name%3Dsel-c")).toEqual(["sel/sel-c"]);
    expect(await list("labelSelector=app%3Dweb&limit=1")).toEqual(["sel/sel-a"]);
    const bad = await call(api, "/api/v1/services?fieldSelector=spec.nope%3Dx");
    expect(bad.body).toMatchObject({ kind: "Status", code: 400, reason: "BadRequest", message: "field label not supported: spec.nope" });
  });

  test("a continue token older than the compaction point answers 410 Expired", async () => {
    for (let i = 0; i < 3; i++) api.create(svc(`cmp-${i}`, "cmp"));
    const first = await call(api, "/api/v1/namespaces/cmp/services?limit=1");
    api.create(svc("cmp-later", "cmp"));
    api.compact({ notifyWatchers: false });
    const res = await call(api, `/api/v1/namespaces/cmp/services?limit=1&continue=${encodeURIComponent(first.body.metadata.continue)}`);
    expect(res.status).toBe(410);
    expect(res.body).toMatchObject({ kind: "Status", apiVersion: "v1", status: "Failure", reason: "Expired", code: 410 });
  });

  test("create, get, update with optimistic concurrency, patch, status, delete", async () => {
    const body = JSON.stringify(svc("crud", "crud"));
    const created = await call(api, "/api/v1/namespaces/crud/services", { method: "POST", body, headers: { "content-type": "application/json" } });
    expect(created.status).toBe(201);
    // (clones: bun's toMatchObject writes asymmetric matchers into the received object)
    expect(structuredClone(created.body.metadata)).toMatchObject({ name: "crud", namespace: "crud", uid: expect.any(String), creationTimestamp: expect.any(String), resourceVersion: api.resourceVersion });
    expect(structuredClone(created.body.spec)).toMatchObject({ type: "ClusterIP", clusterIP: expect.stringMatching(/^10\.96\./), ports: [{ port: 80, protocol: "TCP", targetPort: 80 }] });
    const again = await call(api, "/api/v1/namespaces/crud/services", { method: "POST", body });
    expect(again.body).toMatchObject({ reason: "AlreadyExists", code: 409, message: 'services "crud" already exists', details: { name: "crud", kind: "services" } });

    const stale = { ...created.body, metadata: { ...created.body.metadata, resourceVersion: "1" }, spec: { ...created.body.spec, selector: { app: "x" } } };
    const conflict = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PUT", body: JSON.stringify(stale) });
    expect(conflict.body).toMatchObject({ reason: "Conflict", code: 409 });
    const fresh = { ...stale, metadata: created.body.metadata };
    const updated = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PUT", body: JSON.stringify(fresh) });
    expect(updated.body.message).toBeUndefined();
    expect(updated.status).toBe(200);
    expect(updated.body.spec.selector).toEqual({ app: "x" });
    expect(Number(updated.body.metadata.resourceVersion)).toBeGreaterThan(Number(created.body.metadata.resourceVersion));

    // A no-op update keeps the resourceVersion (and emits no event).
    const noop = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PUT", body: JSON.stringify(updated.body) });
    expect(noop.body.metadata.resourceVersion).toBe(updated.body.metadata.resourceVersion);

    // The main resource ignores status; /status takes only status.
    const withStatus = { ...updated.body, status: { loadBalancer: { ingress: [{ ip: "192.0.2.1" }] } }, spec: { ...updated.body.spec, selector: { app: "y" } } };
    const put = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PUT", body: JSON.stringify(withStatus) });
    expect(put.body.status).toEqual({ loadBalancer: {} });
    expect(put.body.spec.selector).toEqual({ app: "y" });
    const statusOf = (metadata: Obj) => JSON.stringify({ ...withStatus, metadata, spec: { ...withStatus.spec, selector: { app: "z" } } });
    // A ClusterIP Service may not carry load balancer ingress (ValidateLoadBalancerStatus).
    const notLb = await call(api, "/api/v1/namespaces/crud/services/crud/status", { method: "PUT", body: statusOf(put.body.metadata) });
    expect(notLb.status).toBe(422);
    expect(notLb.body.details.causes).toEqual([{ reason: "FieldValueForbidden", message: "Forbidden: may only be used when `spec.type` is 'LoadBalancer'", field: "status.loadBalancer.ingress" }]);
    const lb = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PATCH", body: JSON.stringify({ spec: { type: "LoadBalancer" } }), headers: { "content-type": "application/merge-patch+json" } });
    const statusPut = await call(api, "/api/v1/namespaces/crud/services/crud/status", { method: "PUT", body: statusOf(lb.body.metadata) });
    expect(statusPut.body.status.loadBalancer.ingress).toEqual([{ ip: "192.0.2.1", ipMode: "VIP" }]); // defaulted
    expect(statusPut.body.spec.selector).toEqual({ app: "y" });

    const merge = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PATCH", body: JSON.stringify({ metadata: { labels: { a: "1" } }, spec: { selector: null } }), headers: { "content-type": "application/merge-patch+json" } });
    expect(merge.body.metadata.labels).toEqual({ a: "1" });
    expect(merge.body.spec.selector).toBeUndefined();
    const json = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PATCH", body: JSON.stringify([{ op: "add", path: "/metadata/labels/b", value: "2" }]), headers: { "content-type": "application/json-patch+json" } });
    expect(json.body.metadata.labels).toEqual({ a: "1", b: "2" });
    const stalePatch = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PATCH", body: JSON.stringify({ metadata: { resourceVersion: "2", labels: { c: "3" } } }), headers: { "content-type": "application/strategic-merge-patch+json" } });
    expect(stalePatch.body.reason).toBe("Conflict");
    const badType = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "PATCH", body: "{}", headers: { "content-type": "text/plain" } });
    expect(badType.body).toMatchObject({ reason: "UnsupportedMediaType", code: 415 });

    const del = await call(api, "/api/v1/namespaces/crud/services/crud", { method: "DELETE" });
    expect(del.status).toBe(200);
    expect(del.body.metadata.name).toBe("crud");
    const gone = await call(api, "/api/v1/namespaces/crud/services/crud");
    expect(gone.body).toMatchObject({ kind: "Status", reason: "NotFound", code: 404, message: 'services "crud" not found' });
    const slice = await call(api, "/apis/discovery.k8s.io/v1/namespaces/crud/endpointslices/nope");
    expect(slice.body).toMatchObject({ message: 'endpointslices.discovery.k8s.io "nope" not found', details: { group: "discovery.k8s.io", kind: "endpointslices" } });
  });

  test("NodePort services get node ports allocated; a taken node port is refused", () => {
    const a = api.create({ ...svc("np-a", "np"), spec: { type: "NodePort", ports: [{ port: 80 }] } }) as Obj;
    const nodePort = a.spec.ports[0].nodePort;
    expect(nodePort).toBeGreaterThanOrEqual(30000);
    expect(() => api.create({ ...svc("np-b", "np"), spec: { type: "NodePort", ports: [{ port: 80, nodePort }] } })).toThrow(/already allocated/);
    api.remove("services", "np", "np-a");
    expect((api.create({ ...svc("np-b", "np"), spec: { type: "NodePort", ports: [{ port: 80, nodePort }] } }) as Obj).spec.ports[0].nodePort).toBe(nodePort);
    // Tests bind NodePorts on free ephemeral ports: accepted unless a range is enforced.
    expect((api.create({ ...svc("np-c", "np"), spec: { type: "NodePort", ports: [{ port: 80, nodePort: 45000 }] } }) as Obj).spec.ports[0].nodePort).toBe(45000);
  });

  test("an enforced nodePortRange refuses explicit ports outside it", async () => {
    await using strict = await startApiServer({ tls: false, nodePortRange: [30000, 30001], rbac: false });
    const res = await fetch(`${strict.url}/api/v1/namespaces/np/services`, {
      method: "POST",
      body: JSON.stringify({ ...svc("np-d", "np"), spec: { type: "NodePort", ports: [{ port: 80, nodePort: 45000 }] } }),
    });
    expect(res.status).toBe(422);
    expect(await res.json()).toMatchObject({ reason: "Invalid", details: { causes: [{ field: "spec.ports[0].nodePort" }] } });
    for (const name of ["a", "b"]) strict.create({ ...svc(name, "np"), spec: { type: "NodePort", ports: [{ port: 80 }] } });
    expect(() => strict.create({ ...svc("c", "np"), spec: { type: "NodePort", ports: [{ port: 80 }] } })).toThrow(/range is full/);
  });

  test("uniqueNodePorts: false lets two Services share a node port (to stage a conflict)", async () => {
    await using lax = await startApiServer({ tls: false, uniqueNodePorts: false });
    for (const name of ["a", "b"]) lax.create({ ...svc(name, "np"), spec: { type: "NodePort", ports: [{ port: 80, nodePort: 31000 }] } });
    expect(lax.items("services").map((o: Obj) => o.spec.ports[0].nodePort)).toEqual([31000, 31000]);
  });

  test("watch from a resourceVersion delivers later events in order, each flushed promptly", async () => {
    const from = api.resourceVersion;
    api.create(svc("w-1", "watch"));
    const { status, events, headers } = await openWatch(api, `/api/v1/namespaces/watch/services?watch=1&resourceVersion=${from}`);
    expect(status).toBe(200);
    expect(headers.get("content-type")).toBe("application/json");
    expect(headers.get("transfer-encoding")).toBe("chunked");
    const [added] = await events.take(1);
    expect(added).toMatchObject({ type: "ADDED", object: { kind: "Service", apiVersion: "v1", metadata: { name: "w-1" } } });
    // Each later write arrives on the open stream before the next one is made.
    api.patch("services", "watch", "w-1", { metadata: { labels: { v: "2" } } });
    const modified = await events.next();
    expect(modified).toMatchObject({ type: "MODIFIED", object: { metadata: { name: "w-1", labels: { v: "2" }, resourceVersion: api.resourceVersion } } });
    api.create(svc("other", "elsewhere")); // another namespace: not on this watch
    api.remove("services", "watch", "w-1");
    const deleted = await events.next();
    expect(deleted).toMatchObject({ type: "DELETED", object: { metadata: { name: "w-1", resourceVersion: api.resourceVersion } } });
    await events.cancel();
  });

  test("watch without resourceVersion starts with synthetic ADDED events, then follows", async () => {
    api.create(svc("s-1", "synth"));
    api.create(svc("s-2", "synth"));
    const { events } = await openWatch(api, "/api/v1/namespaces/synth/services?watch=true");
    expect((await events.take(2)).map((e) => [e.type, e.object.metadata.name])).toEqual([["ADDED", "s-1"], ["ADDED", "s-2"]]);
    api.create(svc("s-3", "synth"));
    expect(await events.next()).toMatchObject({ type: "ADDED", object: { metadata: { name: "s-3" } } });
    await events.cancel();
  });

  test("a label-selector watch sees objects entering and leaving the selection", async () => {
    api.create(svc("ls-1", "ls", { app: "web" }));
    const from = api.resourceVersion;
    const { events } = await openWatch(api, `/api/v1/namespaces/ls/services?watch=1&resourceVersion=${from}&labelSelector=app%3Dweb`);
    api.patch("services", "ls", "ls-1", { metadata: { labels: { app: "db" } } });
    expect(await events.next()).toMatchObject({ type: "DELETED", object: { metadata: { name: "ls-1", labels: { app: "db" } } } });
    api.create(svc("ls-2", "ls", { app: "db" }));
    api.patch("services", "ls", "ls-2", { metadata: { labels: { app: "web" } } });
    expect(await events.next()).toMatchObject({ type: "ADDED", object: { metadata: { name: "ls-2" } } });
    await events.cancel();
  });

  test("bookmarks arrive at the bookmark interval with the current resourceVersion", async () => {
    const { events } = await openWatch(api, `/apis/discovery.k8s.io/v1/endpointslices?watch=1&allowWatchBookmarks=true&resourceVersion=${api.resourceVersion}`);
    const e = await events.next();
    expect(e).toEqual({ type: "BOOKMARK", object: { kind: "EndpointSlice", apiVersion: "discovery.k8s.io/v1", metadata: { resourceVersion: api.resourceVersion } } });
    await events.cancel();
  });

  test("sendInitialEvents ends the initial events with an annotated bookmark", async () => {
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    const { events } = await openWatch(api, "/api/v1/nodes?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true");
    const [added, bookmark] = await events.take(2);
    expect(added).toMatchObject({ type: "ADDED", object: { metadata: { name: "node-a" } } });
    expect(bookmark).toMatchObject({ type: "BOOKMARK", object: { metadata: { annotations: { "k8s.io/initial-events-end": "true" } } } });
    await events.cancel();
  });

  test("a watch on one object's path sees only that object", async () => {
    const { events } = await openWatch(api, `/api/v1/namespaces/one/services/target?watch=1&resourceVersion=${api.resourceVersion}`);
    api.create(svc("other", "one"));
    api.create(svc("target", "one"));
    expect(await events.next()).toMatchObject({ type: "ADDED", object: { metadata: { name: "target" } } });
    await events.cancel();
  });

  test("a resourceVersion newer than the server's answers 504 Too large resource version", async () => {
    const future = Number(api.resourceVersion) + 100;
    for (const q of [`watch=1&resourceVersion=${future}`, `resourceVersion=${future}`]) {
      const res = await call(api, `/api/v1/services?${q}`);
      expect(res.status).toBe(504);
      expect(res.body).toMatchObject({ reason: "Timeout", details: { causes: [{ reason: "ResourceVersionTooLarge" }] } });
    }
  });

  test("leases and both Event APIs are served from the same table", async () => {
    const lease = await call(api, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/gate", {
      method: "PUT",
      body: JSON.stringify({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: "gate", namespace: "kube-system" }, spec: { holderIdentity: "a" } }),
    });
    expect(lease.status).toBe(201); // leases allow create on update
    const ev = await call(api, "/apis/events.k8s.io/v1/namespaces/default/events", {
      method: "POST",
      body: JSON.stringify({
        apiVersion: "events.k8s.io/v1",
        kind: "Event",
        metadata: { generateName: "gate." },
        eventTime: "2025-01-01T00:00:00.000000Z",
        type: "Normal",
        reason: "Synced",
        action: "Sync",
        reportingController: "kubegate.io/gateway",
        reportingInstance: "node-a",
        regarding: { kind: "Service", name: "web", namespace: "default" },
      }),
    });
    expect(ev.status).toBe(201);
    expect(ev.body.metadata.name).toMatch(/^gate\.[a-z0-9]{5}$/);
    const core = api.create({ apiVersion: "v1", kind: "Event", metadata: { name: "core-ev", namespace: "default" }, reason: "Old", involvedObject: { kind: "Node", name: "n1" } });
    expect(core).toMatchObject({ kind: "Event", apiVersion: "v1" });
    expect(names((await call(api, "/apis/events.k8s.io/v1/events?fieldSelector=regarding.name%3Dweb")).body.items)).toEqual([`default/${ev.body.metadata.name}`]);
    expect(names((await call(api, "/api/v1/namespaces/default/events?fieldSelector=involvedObject.kind%3DNode")).body.items)).toEqual(["default/core-ev"]);
  });

  test("deletecollection removes the selected objects and emits DELETED events", async () => {
    api.create(svc("dc-1", "dc", { drop: "yes" }));
    api.create(svc("dc-2", "dc", { drop: "yes" }));
    api.create(svc("dc-3", "dc"));
    const { events } = await openWatch(api, `/api/v1/namespaces/dc/services?watch=1&resourceVersion=${api.resourceVersion}`);
    const res = await call(api, "/api/v1/namespaces/dc/services?labelSelector=drop%3Dyes", { method: "DELETE" });
    expect(names(res.body.items)).toEqual(["dc/dc-1", "dc/dc-2"]);
    expect((await events.take(2)).map((e) => [e.type, e.object.metadata.name])).toEqual([["DELETED", "dc-1"], ["DELETED", "dc-2"]]);
    expect(names(api.items("services").filter((o: Obj) => o.metadata.namespace === "dc"))).toEqual(["dc/dc-3"]);
    await events.cancel();
  });

  test("kubeconfig carries the CA and client cert, or a token, tokenFile or exec plugin", () => {
    const full = parseYaml(api.kubeconfig()) as Obj;
    expect(full["current-context"]).toBe("kubegate-test");
    expect(full.clusters[0].cluster).toEqual({ server: api.url, "certificate-authority-data": Buffer.from(api.ca).toString("base64") });
    expect(Buffer.from(full.users[0].user["client-key-data"], "base64").toString()).toBe(api.clientKey);
    const token = parseYaml(api.kubeconfig({ token: "abc", skipClientCert: true })) as Obj;
    expect(token.users[0].user).toEqual({ token: "abc" });
    const exec = parseYaml(api.kubeconfig({ exec: { command: "get-token", args: ["--x"] }, tokenFile: "/t", skipClientCert: true })) as Obj;
    expect(exec.users[0].user).toEqual({
      tokenFile: "/t",
      exec: { apiVersion: "client.authentication.k8s.io/v1", command: "get-token", args: ["--x"], interactiveMode: "Never", provideClusterInfo: false },
    });
  });

  test("timeoutSeconds ends the watch cleanly", async () => {
    const { events } = await openWatch(api, `/api/v1/nodes?watch=1&resourceVersion=${api.resourceVersion}&timeoutSeconds=1`);
    expect(await events.next()).toBe("end");
  });
});

describe("410 Expired after compaction", () => {
  test("watch from a compacted resourceVersion: in-stream ERROR event (default), then HTTP 410", async () => {
    await using api = await startApiServer();
    api.create(svc("a"));
    const old = api.resourceVersion;
    api.create(svc("b"));
    api.compact();
    const { status, events } = await openWatch(api, `/api/v1/services?watch=1&resourceVersion=${old}`);
    expect(status).toBe(200);
    expect(await events.next()).toEqual({
      type: "ERROR",
      object: { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: `too old resource version: ${old} (${api.resourceVersion})`, reason: "Expired", code: 410 },
    });
    expect(await events.next()).toBe("end");

    api.setWatchErrorMode("http");
    const res = await call(api, `/api/v1/services?watch=1&resourceVersion=${old}`);
    expect(res.status).toBe(410);
    expect(res.body).toMatchObject({ kind: "Status", reason: "Expired", code: 410 });
    // From the compaction point itself the watch is fine.
    const ok = await openWatch(api, `/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}`);
    expect(ok.status).toBe(200);
    api.create(svc("c"));
    expect(await ok.events.next()).toMatchObject({ type: "ADDED", object: { metadata: { name: "c" } } });
    await ok.events.cancel();
  });

  test("compact() ends open watches with an in-stream 410", async () => {
    await using api = await startApiServer();
    const { events } = await openWatch(api, `/api/v1/services?watch=1&resourceVersion=${api.resourceVersion}`);
    await api.waitForWatches(1);
    api.compact();
    expect(await events.next()).toMatchObject({ type: "ERROR", object: { reason: "Expired", code: 410 } });
    expect(await events.next()).toBe("end");
    expect(api.watchCount()).toBe(0);
  });

  test("history is bounded: a watch from before the oldest kept event gets 410", async () => {
    await using api = await startApiServer({ historyLimit: 3 });
    const from = api.resourceVersion;
    for (let i = 0; i < 5; i++) api.create(svc(`h-${i}`));
    const { events } = await openWatch(api, `/api/v1/services?watch=1&resourceVersion=${from}`);
    expect(await events.next()).toMatchObject({ type: "ERROR", object: { code: 410 } });
    const recent = await openWatch(api, `/api/v1/services?watch=1&resourceVersion=${Number(api.resourceVersion) - 2}`);
    expect((await recent.events.take(2)).map((e) => e.object.metadata.name)).toEqual(["h-3", "h-4"]);
    await recent.events.cancel();
  });
});

describe("controls", () => {
  test("dropWatches breaks open streams mid-response", async () => {
    await using api = await startApiServer();
    const { events } = await openWatch(api, "/api/v1/services?watch=1");
    await api.waitForWatches(1);
    api.dropWatches();
    await expect(events.next()).rejects.toThrow();
    expect(api.watchCount()).toBe(0);
  });

  test("a client that goes away is removed from the open watches", async () => {
    await using api = await startApiServer();
    const a = await openWatch(api, "/api/v1/services?watch=1");
    const b = await openWatch(api, "/api/v1/nodes?watch=1");
    expect([api.watchCount(), api.watchCount("services"), api.watchCount("nodes")]).toEqual([2, 1, 1]);
    await a.events.cancel();
    await api.waitForWatches(1, { exact: true });
    await b.events.cancel();
    await api.waitForWatches(0, { exact: true });
  });

  test("stallWatches holds events while the connection stays open, then delivers them in order", async () => {
    await using api = await startApiServer({ bookmarkIntervalMs: 50 });
    const { events } = await openWatch(api, `/api/v1/services?watch=1&allowWatchBookmarks=true&resourceVersion=${api.resourceVersion}`);
    await api.waitForWatches(1);
    api.stallWatches(true);
    const stalledFrom = Number(api.resourceVersion);
    api.create(svc("st-1"));
    api.create(svc("st-2"));
    const seen = events.received.length;
    // Absence can only be shown by waiting: let several bookmark intervals pass.
    await Bun.sleep(300);
    // Only bookmarks already in flight before the stall may have arrived.
    for (const e of events.received.slice(seen)) expect(e).toMatchObject({ type: "BOOKMARK" });
    for (const e of events.received) expect(Number(e.object.metadata.resourceVersion)).toBeLessThanOrEqual(stalledFrom);
    expect(api.watchCount()).toBe(1);
    api.stallWatches(false);
    expect(await events.nextEvent()).toMatchObject({ type: "ADDED", object: { metadata: { name: "st-1" } } });
    expect(await events.nextEvent()).toMatchObject({ type: "ADDED", object: { metadata: { name: "st-2" } } });
    await events.cancel();
  });

  test("down refuses connections and breaks watches; up serves again on the same port", async () => {
    await using api = await startApiServer();
    const port = api.port;
    const { events } = await openWatch(api, "/api/v1/services?watch=1");
    await api.waitForWatches(1);
    await api.down();
    expect(api.isUp).toBe(false);
    await expect(events.next()).rejects.toThrow();
    await expect(fetch(`${api.url}/version`, tlsOf(api))).rejects.toThrow(/Unable to connect|ECONNREFUSED|refused/i);
    await api.up();
    expect(api.port).toBe(port);
    expect((await call(api, "/version")).status).toBe(200);
  });

  test("failNext answers the next requests with the given status, then recovers", async () => {
    await using api = await startApiServer();
    api.failNext(2, 429, { retryAfterSeconds: 2 });
    const a = await call(api, "/api/v1/services");
    expect(a.status).toBe(429);
    expect(a.headers.get("retry-after")).toBe("2");
    expect(a.body).toMatchObject({ kind: "Status", reason: "TooManyRequests", code: 429, details: { retryAfterSeconds: 2 } });
    expect((await call(api, "/api/v1/services")).status).toBe(429);
    expect((await call(api, "/api/v1/services")).status).toBe(200);
    api.failNext(1, 500, { watch: true });
    expect((await call(api, "/api/v1/nodes")).status).toBe(200);
    expect((await call(api, "/api/v1/nodes?watch=1&timeoutSeconds=0")).body).toMatchObject({ reason: "InternalError", code: 500 });
    expect(api.requests.map((r) => [r.path, r.status, r.watch])).toEqual([
      ["/api/v1/services", 429, false],
      ["/api/v1/services", 429, false],
      ["/api/v1/services", 200, false],
      ["/api/v1/nodes", 200, false],
      ["/api/v1/nodes", 500, true],
    ]);
  });

  test("the controls answer over HTTP too", async () => {
    await using api = await startApiServer({ tls: false });
    const post = (name: string, body: unknown = {}) => fetch(`${api.url}/_control/${name}`, { method: "POST", body: JSON.stringify(body) });
    expect((await post("create", svc("ctl"))).status).toBe(201);
    expect(api.get("services", "default", "ctl")).toMatchObject({ metadata: { name: "ctl" } });
    await post("failNext", { n: 1, status: 503 });
    expect((await fetch(`${api.url}/api/v1/services`)).status).toBe(503);
    expect(await (await post("state")).json()).toMatchObject({ up: true, resourceVersion: api.resourceVersion, watchCount: 0 });
    const bad = await post("setWatchErrorMode", { mode: "carrier-pigeon" });
    expect(bad.status).toBe(400);
  });
});

describe("authentication and authorization", () => {
  test("mTLS: curl without a client cert is refused in the handshake; with one it is served", async () => {
    await using api = await startApiServer();
    const certs = await testCerts();
    const ca = join(certs.dir, "ca.crt");
    const without = await runCurl(["-sS", "--max-time", "5", "--cacert", ca, `${api.url}/api/v1/services`]);
    expect(without.code).not.toBe(0);
    expect(without.stdout).toBe("");
    const withCert = await runCurl(["-sS", "--max-time", "5", "--cacert", ca, "--cert", join(certs.dir, "client.crt"), "--key", join(certs.dir, "client.key"), `${api.url}/api/v1/services`]);
    expect(withCert.code).toBe(0);
    expect(JSON.parse(withCert.stdout)).toMatchObject({ kind: "ServiceList" });
  });

  test("mTLS: a client cert from another CA is refused", async () => {
    await using api = await startApiServer();
    const rogueCa = await createCertAuthority("rogue-ca", "rogue");
    const rogue = await issueCert(rogueCa, { cn: "mallory", usage: "client", name: "rogue-client" });
    await expect(fetch(`${api.url}/version`, { tls: { ca: api.ca, cert: rogue.cert, key: rogue.key } })).rejects.toThrow();
  });

  test("bearer tokens: 401 without or with a wrong token, rotation with setTokens", async () => {
    await using api = await startApiServer({ requireClientCert: false, tokens: ["t1"] });
    const get = (token?: string) =>
      fetch(`${api.url}/api/v1/services`, { tls: { ca: api.ca }, ...(token ? { headers: { Authorization: `Bearer ${token}` } } : {}) });
    const none = await get();
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: "Unauthorized", reason: "Unauthorized", code: 401 });
    expect((await get("wrong")).status).toBe(401);
    expect((await get("t1")).status).toBe(200);
    api.setTokens(["t2"]);
    expect((await get("t1")).status).toBe(401);
    expect((await get("t2")).status).toBe(200);
  });

  test("the authorizer refuses with 403 Forbidden and sees the request attributes", async () => {
    const asked: unknown[] = [];
    await using api = await startApiServer({
      authorize: (a) => {
        asked.push(a);
        return a.verb !== "watch";
      },
    });
    expect((await call(api, "/api/v1/namespaces/x/services")).status).toBe(200);
    const denied = await call(api, "/api/v1/namespaces/x/services?watch=1");
    expect(denied.body).toMatchObject({
      kind: "Status",
      reason: "Forbidden",
      code: 403,
      message: 'services is forbidden: User "kubegate-test" cannot watch resource "services" in API group "" in the namespace "x"',
    });
    expect(asked).toEqual([
      { verb: "list", resource: "services", group: "", namespace: "x", user: "kubegate-test" },
      { verb: "watch", resource: "services", group: "", namespace: "x", user: "kubegate-test" },
    ]);
  });
});

describe("writes are validated like kube-apiserver", () => {
  let api: TestApiServer;
  beforeAll(async () => {
    api = await startApiServer({ rbac: false }); // this server's own verbs, beyond the gateway's role
  });
  afterAll(async () => {
    await api[Symbol.asyncDispose]();
  });
  const send = (path: string, method: string, body: unknown, type = "application/json") =>
    call(api, path, { method, body: JSON.stringify(body), headers: { "content-type": type } });
  const merge = (path: string, body: unknown) => send(path, "PATCH", body, "application/merge-patch+json");
  const slice = (name: string, extra: Obj = {}): Obj => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: "v", labels: { "kubernetes.io/service-name": "web" } },
    addressType: "IPv4",
    endpoints: [{ addresses: ["10.0.0.1"] }],
    ports: [{ name: "http", port: 8080 }],
    ...extra,
  });
  const SLICES = "/apis/discovery.k8s.io/v1/namespaces/v/endpointslices";

  test("an unknown addressType is 422 Invalid with kube-apiserver's whole Status body", async () => {
    const res = await send(SLICES, "POST", slice("bogus", { addressType: "Bogus" }));
    expect(res.status).toBe(422);
    expect(res.body).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'EndpointSlice.discovery.k8s.io "bogus" is invalid: addressType: Unsupported value: "Bogus": supported values: "FQDN", "IPv4", "IPv6"',
      reason: "Invalid",
      details: {
        name: "bogus",
        group: "discovery.k8s.io",
        kind: "EndpointSlice",
        causes: [{ reason: "FieldValueNotSupported", message: 'Unsupported value: "Bogus": supported values: "FQDN", "IPv4", "IPv6"', field: "addressType" }],
      },
      code: 422,
    });
    // The in-process methods refuse it too: a test cannot stage what a real cluster refuses.
    expect(() => api.create(slice("bogus", { addressType: "Bogus" }))).toThrow("addressType: Unsupported value");
    expect(api.get("endpointslices", "v", "bogus")).toBeUndefined();
  });

  test("addressType is immutable; several errors are listed in one message", async () => {
    const created = await send(SLICES, "POST", slice("imm"));
    expect(created.status).toBe(201);
    expect(created.body.ports).toEqual([{ name: "http", port: 8080, protocol: "TCP" }]); // SetDefaults_EndpointPort
    const changed = await merge(`${SLICES}/imm`, { addressType: "IPv6", endpoints: [{ addresses: ["fd00::1"] }] });
    expect(changed.status).toBe(422);
    expect(changed.body.message).toBe('EndpointSlice.discovery.k8s.io "imm" is invalid: addressType: Invalid value: "IPv6": field is immutable');
    expect(() => api.patch("endpointslices", "v", "imm", { addressType: "FQDN" })).toThrow("field is immutable");
    const several = await merge(`${SLICES}/imm`, { endpoints: [{ addresses: [] }, { addresses: ["0.0.0.0", "fd00::1"] }], ports: [{ name: "Http", protocol: "QUIC" }] });
    expect(several.body.details.causes.map((c: Obj) => `${c.field}: ${c.reason}`)).toEqual([
      "endpoints[0].addresses: FieldValueRequired",
      "endpoints[1].addresses[0]: FieldValueInvalid",
      "endpoints[1].addresses[1]: FieldValueInvalid",
      "ports[0].name: FieldValueInvalid",
      "ports[0].protocol: FieldValueNotSupported",
    ]);
    expect(several.body.message).toStartWith('EndpointSlice.discovery.k8s.io "imm" is invalid: [endpoints[0].addresses: Required value: must contain at least 1 address, endpoints[1].addresses[0]: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0), ');
  });

  test("what kube-apiserver accepts is stored: a port number out of range, a loopback address (a documented difference)", async () => {
    const res = await send(SLICES, "POST", slice("odd", { endpoints: [{ addresses: ["127.0.0.1"] }], ports: [{ name: "http", port: 0, protocol: "TCP" }] }));
    expect(res.status).toBe(201);
  });

  test("Leases: spec rules (422), MicroTime and int32 decoding (400 on create, 422 on patch)", async () => {
    const LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    const lease = (spec: Obj): Obj => ({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: "l" }, spec });
    const zero = await send(LEASES, "POST", lease({ holderIdentity: "a", leaseDurationSeconds: 0, leaseTransitions: -1 }));
    expect(zero.body).toMatchObject({
      code: 422,
      message: 'Lease.coordination.k8s.io "l" is invalid: [spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0, spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0]',
    });
    const seconds = await send(LEASES, "POST", lease({ holderIdentity: "a", renewTime: "2025-01-01T00:00:00Z" }));
    expect(seconds.body).toMatchObject({ code: 400, reason: "BadRequest" });
    expect(seconds.body.message).toStartWith('Lease in version "v1" cannot be handled as a Lease: parsing time "2025-01-01T00:00:00Z"');
    const ok = await send(LEASES, "POST", lease({ holderIdentity: "a", leaseDurationSeconds: 15, renewTime: "2025-01-01T00:00:00.123000Z" }));
    expect(ok.status).toBe(201);
    const text = await merge(`${LEASES}/l`, { spec: { leaseDurationSeconds: "15" } });
    expect(text.body).toMatchObject({ code: 422, reason: "Invalid", details: { causes: [{ reason: "FieldValueInvalid", field: "patch" }] } });
    expect(text.body.message).toContain("json: cannot unmarshal string into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32");
  });

  test("core/v1 Events: the involved object's namespace must be the Event's; a repeat is a patch of count", async () => {
    const EVENTS = "/api/v1/namespaces/shop/events";
    const event = (ns: string): Obj => ({
      apiVersion: "v1",
      kind: "Event",
      metadata: { name: "web.1", namespace: "shop" },
      involvedObject: { kind: "Service", name: "web", namespace: ns },
      reason: "FailedToBindListener",
      message: "port in use",
      type: "Warning",
      source: { component: "kubegate", host: "node-a" },
      firstTimestamp: "2025-01-01T00:00:00Z",
      lastTimestamp: "2025-01-01T00:00:00Z",
      count: 1,
    });
    const other = await send(EVENTS, "POST", event("default"));
    expect(other.body).toMatchObject({ code: 422, message: 'Event "web.1" is invalid: involvedObject.namespace: Invalid value: "default": does not match event.namespace' });
    expect((await send(EVENTS, "POST", event("shop"))).status).toBe(201);
    expect((await merge(`${EVENTS}/web.1`, { count: 2, lastTimestamp: "2025-01-01T00:00:05Z" })).body.count).toBe(2);
    expect((await merge(`${EVENTS}/web.1`, { count: "3" })).body).toMatchObject({ code: 422, details: { causes: [{ field: "patch" }] } });
  });

  test("events.k8s.io/v1 Events: the new API's required fields on create, immutable fields on update", async () => {
    const EVENTS = "/apis/events.k8s.io/v1/namespaces/default/events";
    const bare = await send(EVENTS, "POST", { apiVersion: "events.k8s.io/v1", kind: "Event", metadata: { name: "e" }, reason: "Synced", regarding: { kind: "Service", name: "web" } });
    expect(bare.body.details.causes.map((c: Obj) => c.field)).toEqual(["eventTime", "type"]);
    const good = { apiVersion: "events.k8s.io/v1", kind: "Event", metadata: { name: "e" }, eventTime: "2025-01-01T00:00:00.000000Z", type: "Normal", reason: "Synced", action: "Sync", reportingController: "kubegate.io/gateway", reportingInstance: "node-a", regarding: { kind: "Service", name: "web", namespace: "default" } };
    expect((await send(EVENTS, "POST", good)).status).toBe(201);
    const changed = await merge(`${EVENTS}/e`, { reason: "Other" });
    expect(changed.body.message).toBe('Event.events.k8s.io "e" is invalid: reason: Invalid value: "Other": field is immutable');
  });

  test("Service status: only status changes through /status; ingress ip, hostname and ipMode rules; a type change clears it", async () => {
    api.create({ apiVersion: "v1", kind: "Service", metadata: { name: "lb", namespace: "v" }, spec: { type: "LoadBalancer", ports: [{ port: 80 }] } });
    const STATUS = "/api/v1/namespaces/v/services/lb/status";
    const ingress = (...entries: Obj[]) => ({ spec: { type: "ClusterIP" }, status: { loadBalancer: { ingress: entries } } });
    const bad = await merge(STATUS, ingress({ ip: "300.1.1.1", ipMode: "Proxy" }, { ip: "192.0.2.1", ipMode: "Bogus" }, { hostname: "192.0.2.2", ipMode: "Proxy" }));
    expect(bad.body.details.causes.map((c: Obj) => `${c.field}: ${c.message}`)).toEqual([
      'status.loadBalancer.ingress[0].ip: Invalid value: "300.1.1.1": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
      'status.loadBalancer.ingress[1].ipMode: Unsupported value: "Bogus": supported values: "Proxy", "VIP"',
      "status.loadBalancer.ingress[2].ipMode: Forbidden: may not be specified when `ip` is not set",
      'status.loadBalancer.ingress[2].hostname: Invalid value: "192.0.2.2": must be a DNS name, not an IP address',
    ]);
    const good = await merge(STATUS, ingress({ ip: "192.0.2.1", ipMode: "Proxy" }, { hostname: "lb.example.com" }));
    expect(good.status).toBe(200);
    expect(good.body.spec.type).toBe("LoadBalancer"); // the spec change was ignored
    expect(good.body.status.loadBalancer.ingress).toEqual([{ ip: "192.0.2.1", ipMode: "Proxy" }, { hostname: "lb.example.com" }]);
    const cluster = api.patch("services", "v", "lb", { spec: { type: "ClusterIP" } }) as Obj;
    expect(cluster.status).toEqual({ loadBalancer: {} });
    expect(() => api.updateStatus({ ...cluster, status: { loadBalancer: { ingress: [{ ip: "192.0.2.1", ipMode: "Proxy" }] } } })).toThrow("may only be used when `spec.type` is 'LoadBalancer'");
  });
});

describe("process mode", () => {
  /** The server as a child process, killed by PID on dispose. */
  async function spawnServer(args: string[]) {
    const bun = process.execPath;
    const child = spawn(bun, [join(import.meta.dir, "apiserver-main.ts"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    const line = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d) => {
        out += d;
        const nl = out.indexOf("\n");
        if (nl >= 0) resolve(out.slice(0, nl));
      });
      void exited.then((code) => reject(new Error(`apiserver-main exited with ${code} before printing: ${stderr}`)));
    });
    const info = JSON.parse(line) as { url: string; port: number; kubeconfig: string; controlUrl: string; ca: string; clientCert: string; clientKey: string; certDir: string };
    return {
      info,
      exited,
      pid: child.pid!,
      async [Symbol.asyncDispose]() {
        if (child.exitCode === null) process.kill(child.pid!, "SIGTERM");
        await exited;
      },
    };
  }

  test("prints its JSON line, serves with the client cert, obeys controls, exits on SIGTERM", async () => {
    await using server = await spawnServer(["--port", "0", "--bookmark-ms", "200"]);
    const { info } = server;
    expect(info.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(await Bun.file(info.kubeconfig).text()).toContain(`server: ${info.url}`);
    const tls = { ca: info.ca, cert: info.clientCert, key: info.clientKey };
    const control = (name: string, body: unknown = {}) => fetch(`${info.controlUrl}/_control/${name}`, { method: "POST", body: JSON.stringify(body) });
    expect((await control("create", svc("proc"))).status).toBe(201);
    const list = (await (await fetch(`${info.url}/api/v1/services`, { tls })).json()) as Obj;
    expect(names(list.items)).toEqual(["default/proc"]);

    // Watch through curl -N: the event written after the stream opened must arrive while it stays open.
    const dir = info.certDir;
    const curl = spawn("curl", ["-sSN", "--cacert", join(dir, "ca.crt"), "--cert", join(dir, "client.crt"), "--key", join(dir, "client.key"), `${info.url}/api/v1/services?watch=1&resourceVersion=${list.metadata.resourceVersion}`], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      expect((await control("waitForWatches", { count: 1, timeoutMs: 3000 })).status).toBe(200);
      const line = new Promise<string>((resolve, reject) => {
        let out = "";
        curl.stdout.on("data", (d) => {
          out += d;
          if (out.includes("\n")) resolve(out.slice(0, out.indexOf("\n")));
        });
        curl.on("exit", (code) => reject(new Error(`curl exited with ${code} before a watch event`)));
      });
      await control("create", svc("proc-2"));
      expect(JSON.parse(await line)).toMatchObject({ type: "ADDED", object: { metadata: { name: "proc-2" } } });
    } finally {
      curl.kill();
    }

    expect((await control("down")).status).toBe(200);
    await expect(
      (async () => {
        // down answers first and stops right after: poll until the port refuses.
        for (const deadline = Date.now() + 5000; Date.now() < deadline; ) await fetch(`${info.url}/version`, { tls });
      })(),
    ).rejects.toThrow();
    expect(await (await control("up")).json()).toMatchObject({ ok: true, url: info.url });
    expect((await fetch(`${info.url}/version`, { tls })).status).toBe(200);

    process.kill(server.pid, "SIGTERM");
    expect(await server.exited).toBe(0);
  });
});
