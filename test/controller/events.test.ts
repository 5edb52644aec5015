import { expect, test } from "bun:test";
import { EventRecorder, serviceRef } from "../../src/controller/events.ts";
import { silentLogger } from "../../src/log.ts";
import { startApiServer } from "../support/apiserver.ts";
import { clientFor } from "../support/kube-sinks.ts";
import { lbService, parsed } from "../support/controller-objects.ts";

type EventObj = { metadata: { name: string }; count: number; message: string; firstTimestamp: string; lastTimestamp: string; involvedObject: object };

test("a repeated Event is counted on the existing object; a new message makes a new one; a vanished one is created again", async () => {
  await using server = await startApiServer();
  server.create(lbService("web"));
  using client = await clientFor(server);
  let now = Date.parse("2025-05-01T10:00:00Z");
  await using events = new EventRecorder({ client, nodeName: "node-a", now: () => now, log: silentLogger });
  const ref = serviceRef(parsed("Service", server.get("services", "default", "web")));
  const msg = 'Cannot bind listener "0.0.0.0:80": port 80 is in use';

  expect(await events.warning(ref, "FailedToBindListener", msg)).toBe("created");
  now += 5_000;
  expect(await events.warning(ref, "FailedToBindListener", msg)).toBe("counted");
  const [only, ...rest] = server.items("events") as EventObj[];
  expect(rest).toEqual([]);
  expect(only).toMatchObject({
    count: 2,
    firstTimestamp: "2025-05-01T10:00:00Z",
    lastTimestamp: "2025-05-01T10:00:05Z",
    reason: "FailedToBindListener",
    type: "Warning",
    source: { component: "kubegate", host: "node-a" },
    involvedObject: { kind: "Service", name: "web", namespace: "default", uid: ref.uid },
  });
  const writes = server.requests.filter((r) => r.path.startsWith("/api/v1/namespaces/default/events")).map((r) => [r.method, r.status]);
  expect(writes).toEqual([["POST", 201], ["PATCH", 200]]);

  expect(await events.warning(ref, "FailedToBindListener", "another message")).toBe("created");
  expect(server.items("events").length).toBe(2);

  // The counted Event expired (deleted): the next repeat creates it again, keeping the count.
  server.remove("events", "default", only!.metadata.name);
  now += 5_000;
  expect(await events.warning(ref, "FailedToBindListener", msg)).toBe("created");
  const again = (server.items("events") as EventObj[]).find((e) => e.message === msg);
  expect(again).toMatchObject({ count: 3, firstTimestamp: "2025-05-01T10:00:00Z", lastTimestamp: "2025-05-01T10:00:10Z" });
  expect(events.status()).toEqual({ created: 3, counted: 1, dropped: 0, failed: 0, lastError: undefined });
});

test("events are rate-limited per object and reason, and refill over time", async () => {
  await using server = await startApiServer();
  using client = await clientFor(server);
  let now = 1_000_000;
  await using events = new EventRecorder({ client, nodeName: "node-a", burst: 2, refillMs: 60_000, now: () => now, log: silentLogger });
  const ref = { kind: "Service", name: "web", namespace: "default" };
  const outcomes = [];
  for (let i = 0; i < 4; i++) outcomes.push(await events.warning(ref, "AllocationFailed", `attempt ${i}`));
  expect(outcomes).toEqual(["created", "created", "dropped", "dropped"]);
  // Another reason has its own bucket.
  expect(await events.warning(ref, "FailedToStartServiceHealthcheck", "x")).toBe("created");
  now += 60_000;
  expect(await events.warning(ref, "AllocationFailed", "later")).toBe("created");
  expect(server.items("events").length).toBe(4);
  expect(events.status()).toMatchObject({ created: 4, dropped: 2 });
});

test("a refused write is counted and logged, never thrown", async () => {
  await using server = await startApiServer();
  server.setAuthorizer((a) => a.resource !== "events");
  using client = await clientFor(server);
  await using events = new EventRecorder({ client, nodeName: "node-a", log: silentLogger });
  expect(await events.warning({ kind: "Service", name: "web", namespace: "default" }, "FailedToBindListener", "m")).toBe("failed");
  expect(events.status()).toMatchObject({ failed: 1, created: 0 });
  expect(events.status().lastError).toContain("403");
});
