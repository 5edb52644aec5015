import { describe, expect, test } from "bun:test";
import { ApiServerSource } from "../../src/kube/apiserver-source.ts";
import { startApiServer } from "../support/apiserver.ts";
import { waitFor } from "../support/wait.ts";
import { RequestLog, TimedSink, loggedClientFor, outage } from "../support/apiserver-outage.ts";
import { BOOKMARK_MS, RecordingSink, clientFor, fastTuning, service, slice } from "../support/kube-sinks.ts";

const node = (name: string, zone: string) => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: { name, labels: { "topology.kubernetes.io/zone": zone } },
  status: { addresses: [{ type: "InternalIP", address: `192.168.0.${name.length}` }] },
});

describe("ApiServerSource", () => {
  test("syncs Services, EndpointSlices and only this node's Node", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    server.create(node("node-a", "z1"));
    server.create(node("node-bb", "z2"));
    server.create(service("web"));
    server.create(slice("web-1", "web", ["10.0.0.1"]));
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using source = new ApiServerSource({ client, nodeName: "node-a", ...fastTuning });
    source.start(sink);
    await waitFor(() => source.status().every((s) => s.synced), { what: "all kinds synced" });
    expect(source.status().map((s) => [s.kind, s.objects, s.phase])).toEqual([
      ["Service", 1, "watching"],
      ["EndpointSlice", 1, "watching"],
      ["Node", 1, "watching"],
    ]);
    expect([...sink.state.Node.keys()]).toEqual(["node-a"]);
    const nodeList = server.requests.find((r) => r.path === "/api/v1/nodes" && !r.watch);
    expect(nodeList?.query["fieldSelector"]).toBe("metadata.name=node-a");

    server.patch("nodes", undefined, "node-bb", { metadata: { labels: { changed: "1" } } });
    server.patch("nodes", undefined, "node-a", { metadata: { labels: { "topology.kubernetes.io/zone": "z9" } } });
    await waitFor(() => sink.keys("Node", "upsert").length === 2, { what: "the node change" });
    expect(sink.keys("Node", "upsert")).toEqual(["node-a", "node-a"]);
  });

  test("without a node name no Node is watched; dispose stops every reflector", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    using client = await clientFor(server);
    const sink = new RecordingSink();
    const source = new ApiServerSource({ client, ...fastTuning });
    source.start(sink);
    await server.waitForWatches(2);
    expect(source.status().map((s) => s.kind)).toEqual(["Service", "EndpointSlice"]);
    await source[Symbol.asyncDispose]();
    expect(source.status().map((s) => s.phase)).toEqual(["stopped", "stopped"]);
    await waitFor(() => server.watchCount() === 0, { what: "all watches closed" });
  });

  test("after a 3 s outage it is back on live data within 3 s of the server's return, sending ~1 request/s meanwhile", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    server.create(node("node-a", "z1"));
    server.create(service("web"));
    server.create(slice("web-1", "web", ["10.0.0.1"]));
    const log = new RequestLog();
    using client = await loggedClientFor(server, log);
    const sink = new TimedSink();
    await using source = new ApiServerSource({ client, nodeName: "node-a", ...fastTuning });
    source.start(sink);
    await server.waitForWatches(3);

    const o = await outage(server, { ms: 3000, sink, change: slice("web-2", "web", ["10.0.0.2"]) });
    expect(o.recoveredAt - o.upAt).toBeLessThan(3000);
    // The watches resumed from their resourceVersions: no relist.
    await waitFor(() => source.status().every((s) => s.phase === "watching"), { what: "every kind watching" });
    expect(source.status().map((s) => s.lists)).toEqual([1, 1, 1]);
    server.create(service("after"));
    await waitFor(() => sink.changedAt.has("default/after"), { what: "a change after the outage" });

    // While away the node sent one probe at a time, 500-1500 ms apart, plus at most the one request per kind that
    // found the server gone (a watch the server closed cleanly is restarted before it is known to be down).
    const during = log.between(o.downAt, o.upAt);
    const probes = during.filter((r) => r.path === "/readyz");
    expect(probes.length).toBeGreaterThanOrEqual(2);
    expect(probes.length).toBeLessThanOrEqual(1 + 3000 / 500);
    for (let i = 1; i < probes.length; i++) expect(probes[i]!.at - probes[i - 1]!.at).toBeGreaterThanOrEqual(499);
    expect(during.length - probes.length).toBeLessThanOrEqual(3);
  });
});
