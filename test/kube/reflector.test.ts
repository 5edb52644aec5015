/**
 * The reflector against the real test API server over mTLS: sync, changes, and recovery from every
 * way the connection can break. After each scenario the cache must equal the server's objects exactly.
 */
import { describe, expect, test } from "bun:test";
import { Reflector, type ReflectorTuning } from "../../src/kube/reflector.ts";
import type { KindName } from "../../src/kube/objects.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { waitFor } from "../support/wait.ts";
import { BOOKMARK_MS, RecordingSink, clientFor, expectInSync, fastTuning, service, slice } from "../support/kube-sinks.ts";
import type { KubeClient } from "../../src/kube/client.ts";

function reflect(
  client: KubeClient,
  kind: KindName,
  sink: RecordingSink,
  tuning: ReflectorTuning = {},
): Reflector {
  const r = new Reflector({ client, kind, sink, ...fastTuning, ...tuning });
  r.start();
  return r;
}

async function seed(server: TestApiServer, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    server.create(service(`svc-${i}`, i % 2 ? "team-a" : "team-b"));
    server.create(slice(`svc-${i}-abc`, `svc-${i}`, [`10.0.${i}.1`, `10.0.${i}.2`], i % 2 ? "team-a" : "team-b"));
  }
}

const listRequests = (server: TestApiServer, path: string) =>
  server.requests.filter((r) => r.path === path && !r.watch && r.method === "GET");

describe("Reflector", () => {
  test("initial sync over mTLS uses pagination and reports synced", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    await seed(server, 7);
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using services = reflect(client, "Service", sink, { pageSize: 3 });
    await using slices = reflect(client, "EndpointSlice", sink, { pageSize: 3 });
    await waitFor(() => sink.syncs.includes("Service") && sink.syncs.includes("EndpointSlice"), { what: "both kinds synced" });
    await expectInSync(server, sink, services);
    await expectInSync(server, sink, slices);
    expect(sink.state.Service.size).toBe(7);

    const lists = listRequests(server, "/api/v1/services");
    expect(lists.map((r) => [r.query["limit"], r.query["continue"] !== undefined])).toEqual([
      ["3", false],
      ["3", true],
      ["3", true],
    ]);
    // The watch starts right after the last page: await it rather than race it.
    const watch = await waitFor(() => services.status().phase === "watching" && server.requests.find((r) => r.path === "/api/v1/services" && r.watch), {
      what: "the watch request",
    });
    expect(watch.query["allowWatchBookmarks"]).toBe("true");
    expect(Number(watch.query["timeoutSeconds"])).toBeGreaterThanOrEqual(300);
    expect(Number(watch.query["timeoutSeconds"])).toBeLessThanOrEqual(600);
    expect(services.status()).toMatchObject({ kind: "Service", synced: true, phase: "watching", lists: 1, objects: 7 });
  });

  test("adds, updates and deletes arrive as upserts and deletes", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "Service", sink);
    await waitFor(() => sink.syncs.includes("Service"));
    await server.waitForWatches(1, { resource: "services" });

    server.create(service("web"));
    server.create(service("api"));
    await waitFor(() => sink.state.Service.size === 2);
    server.patch("services", "default", "web", { spec: { ports: [{ name: "http", port: 8080, protocol: "TCP" }] } });
    server.remove("services", "default", "api");
    await expectInSync(server, sink, r);
    expect(sink.keys("Service", "upsert")).toEqual(["default/web", "default/api", "default/web"]);
    expect(sink.keys("Service", "delete")).toEqual(["default/api"]);
    const held = sink.state.Service.get("default/web") as { object: { spec: { ports: { port: number }[] } } };
    expect(held.object.spec.ports[0]?.port).toBe(8080);
  });

  test("reconnects after the server drops the watch, without relisting", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    await seed(server, 2);
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "EndpointSlice", sink);
    await server.waitForWatches(1, { resource: "endpointslices" });
    // An event proves the stream is established (a request still waiting for headers is retried by fetch itself).
    server.create(slice("early", "svc-0", ["10.9.9.8"], "team-b"));
    await waitFor(() => sink.state.EndpointSlice.has("team-b/early"));
    server.dropWatches();
    server.create(slice("late-1", "svc-0", ["10.9.9.9"], "team-b"));
    server.remove("endpointslices", "team-a", "svc-1-abc");
    await expectInSync(server, sink, r);
    expect(r.status()).toMatchObject({ lists: 1, synced: true });
    expect(r.status().watches).toBeGreaterThanOrEqual(2);
    await server.waitForWatches(1, { resource: "endpointslices" });
  });

  describe.each(["event", "http"] as const)("410 Expired as %s", (mode) => {
    test("relists and emits deletes for objects removed while the watch was away", async () => {
      await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
      server.setWatchErrorMode(mode);
      await seed(server, 4);
      using client = await clientFor(server);
      const sink = new RecordingSink();
      await using r = reflect(client, "Service", sink);
      await server.waitForWatches(1, { resource: "services" });
      await expectInSync(server, sink, r);

      await server.down();
      server.remove("services", "team-b", "svc-0");
      server.remove("services", "team-a", "svc-3");
      server.patch("services", "team-a", "svc-1", { metadata: { labels: { changed: "yes" } } });
      server.create(service("new-one"));
      server.compact({ notifyWatchers: false });
      await server.up();

      await waitFor(() => r.status().lists === 2, { what: "a relist" });
      await expectInSync(server, sink, r);
      expect(sink.keys("Service", "delete").sort()).toEqual(["team-a/svc-3", "team-b/svc-0"]);
      // The relist delivers only what changed: the new and the patched object.
      expect(sink.keys("Service", "upsert").slice(4).sort()).toEqual(["default/new-one", "team-a/svc-1"]);
      const expiredWatch = server.requests.find((req) => req.watch && req.status === 410);
      if (mode === "http") expect(expiredWatch).toBeDefined();
      else expect(expiredWatch).toBeUndefined();
      expect(r.status().lastError).toContain("410");
    });
  });

  test("an open watch ended by compaction (in-stream 410) relists and stays in sync", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    await seed(server, 3);
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "Service", sink);
    await server.waitForWatches(1, { resource: "services" });
    server.compact();
    await waitFor(() => r.status().lists === 2, { what: "a relist" });
    server.remove("services", "team-a", "svc-1");
    await expectInSync(server, sink, r);
    expect(sink.keys("Service", "delete")).toEqual(["team-a/svc-1"]);
  });

  test("recovers when the server is down at start", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    await server.down();
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "Service", sink);
    await waitFor(() => r.status().phase === "backoff" && r.status().lastError, { what: "a failed first list" });
    expect(r.status()).toMatchObject({ synced: false, lists: 0 });
    expect(r.status().lastError).toContain(`Cannot list services at ${server.url}`);
    await seed(server, 3);
    await server.up();
    await waitFor(() => sink.syncs.includes("Service"), { what: "the first sync" });
    await expectInSync(server, sink, r);
  });

  test("recovers from an outage mid-stream with writes during the outage", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    await seed(server, 3);
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "EndpointSlice", sink);
    await server.waitForWatches(1, { resource: "endpointslices" });
    await server.down();
    server.create(slice("during-outage", "svc-0", ["10.1.1.1"]));
    server.patch("endpointslices", "team-a", "svc-1-abc", { endpoints: [{ addresses: ["10.2.2.2"] }] });
    server.remove("endpointslices", "team-b", "svc-2-abc");
    await waitFor(() => r.status().phase === "backoff", { what: "the reflector to notice the outage" });
    await server.up();
    await expectInSync(server, sink, r);
    expect(sink.keys("EndpointSlice", "delete")).toEqual(["team-b/svc-2-abc"]);
  });

  test("the watchdog restarts a watch that went silent", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    await seed(server, 2);
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "Service", sink, { inactivityTimeoutMs: 500 });
    await server.waitForWatches(1, { resource: "services" });
    const watchesBefore = r.status().watches;
    server.stallWatches(true);
    server.create(service("while-stalled"));
    await waitFor(() => r.status().lastError?.includes("received nothing for 500 ms"), { what: "the watchdog" });
    await waitFor(() => r.status().watches > watchesBefore, { what: "a new watch" });
    server.stallWatches(false);
    await expectInSync(server, sink, r);
    // The stalled stream was abandoned, not left open next to the new one.
    await waitFor(() => server.watchCount("services") === 1, { what: "a single open watch" });
  });

  test("bookmarks keep a quiet watch alive and advance its resourceVersion", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: 100 });
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "Node", sink, { inactivityTimeoutMs: 600 });
    await waitFor(() => sink.syncs.includes("Node"));
    const rvAfterList = r.status().resourceVersion;
    server.create(service("unrelated")); // moves the global resourceVersion; only a bookmark tells the Node watch
    await waitFor(() => r.status().resourceVersion !== rvAfterList, { what: "a bookmark" });
    await Bun.sleep(1300); // > 2 watchdog periods of nothing but bookmarks: asserting that nothing happens
    expect(r.status()).toMatchObject({ watches: 1, lists: 1, lastError: undefined });
  });

  test("a malformed object is reported as invalid; the others are unaffected; a fixed version is upserted", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    // Malformed for kubegate, yet stored by a real cluster: kube-apiserver validates an EndpointSlice port's
    // name, protocol and appProtocol but never its number (ValidateEndpointSlice), while kubegate's schema
    // wants 1-65535. (A bad addressType would be refused by the API server, and it is immutable.)
    const badPort = (name: string, ip: string, port: number) => ({ ...slice(name, "web", [ip]), ports: [{ name: "http", port, protocol: "TCP" }] });
    server.create(slice("good", "web", ["10.0.0.1"]));
    server.create(badPort("bad", "10.0.0.2", 0));
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "EndpointSlice", sink);
    await waitFor(() => sink.syncs.includes("EndpointSlice"));
    await expectInSync(server, sink, r);
    const bad = sink.events.find((e) => e.type === "invalid");
    expect(bad).toMatchObject({ type: "invalid", kind: "EndpointSlice", key: "default/bad" });
    expect(bad && "message" in bad ? bad.message : "").toContain("ports");
    expect(r.status().objects).toBe(1);

    server.create(badPort("bad-2", "10.0.0.3", 65536));
    server.patch("endpointslices", "default", "bad", { ports: [{ name: "http", port: 8080, protocol: "TCP" }] });
    await expectInSync(server, sink, r);
    expect(sink.state.EndpointSlice.get("default/bad")).toHaveProperty("object");
    expect(sink.state.EndpointSlice.get("default/bad-2")).toHaveProperty("invalid");
    expect(r.status().objects).toBe(2);
  });

  test("transient server errors are retried with backoff and recorded", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    await seed(server, 2);
    server.failNext(3, 500, { match: "/services" });
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = reflect(client, "Service", sink);
    await waitFor(() => sink.syncs.includes("Service"));
    await expectInSync(server, sink, r);
    expect(r.status().lastError).toContain('API server answered 500 Internal Server Error for "list services"');
    expect(server.requests.filter((q) => q.path === "/api/v1/services" && q.status === 500)).toHaveLength(3);
    // The server answered: that is the backoff's case, not the probe's.
    expect(server.requests.filter((q) => q.path === "/readyz")).toEqual([]);
  });

  test("stop() aborts the open watch and ends the loop", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    using client = await clientFor(server);
    const sink = new RecordingSink();
    const r = reflect(client, "Service", sink);
    await server.waitForWatches(1, { resource: "services" });
    await r.stop();
    expect(r.status().phase).toBe("stopped");
    await waitFor(() => server.watchCount("services") === 0, { what: "the watch to close" });
    const events = sink.events.length;
    server.create(service("after-stop"));
    await Bun.sleep(100); // asserting that nothing arrives
    expect(sink.events.length).toBe(events);
  });
});
