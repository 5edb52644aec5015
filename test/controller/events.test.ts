/** The Event recorder against the in-memory fake: correlation of repeats, the spam filter, failures never thrown. */
import { expect, test } from "bun:test";
import { EventRecorder, serviceRef } from "../../src/controller/events.ts";
import { silentLogger } from "../../src/log.ts";
import { FakeKube } from "../support/fake-kube.ts";
import { parsed } from "../support/controller-objects.ts";

type EventObj = { metadata: { name: string }; count: number; message: string; firstTimestamp: string; lastTimestamp: string; involvedObject: object };
const eventWrites = (kube: FakeKube) => kube.calls.filter((c) => c.resource === "events").map((c) => [c.verb, c.status]);

test("a repeated Event is counted on the existing object; a new message makes a new one; a vanished one is created again", async () => {
  const kube = new FakeKube().load(`${import.meta.dir}/fixtures/repeated-event.yaml`);
  let now = Date.parse("2025-05-01T10:00:00Z");
  await using events = new EventRecorder({ client: kube.client(), nodeName: "node-a", now: () => now, log: silentLogger });
  const ref = serviceRef(parsed("Service", kube.get("services", "default", "web")));
  expect(ref.uid).toBeString();
  const msg = 'Cannot bind listener "0.0.0.0:80": port 80 is in use';

  expect(await events.warning(ref, "FailedToBindListener", msg)).toBe("created");
  now += 5_000;
  expect(await events.warning(ref, "FailedToBindListener", msg)).toBe("counted");
  const [only, ...rest] = kube.items("events") as EventObj[];
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
  expect(eventWrites(kube)).toEqual([["create", 201], ["patch", 200]]);

  expect(await events.warning(ref, "FailedToBindListener", "another message")).toBe("created");
  expect(kube.items("events").length).toBe(2);

  // The counted Event expired (deleted): the next repeat's patch answers 404 and it is created again, keeping the count.
  kube.remove("events", "default", only!.metadata.name);
  now += 5_000;
  expect(await events.warning(ref, "FailedToBindListener", msg)).toBe("created");
  const again = (kube.items("events") as EventObj[]).find((e) => e.message === msg);
  expect(again).toMatchObject({ count: 3, firstTimestamp: "2025-05-01T10:00:00Z", lastTimestamp: "2025-05-01T10:00:10Z" });
  expect(eventWrites(kube).slice(3)).toEqual([["patch", 404], ["create", 201]]);
  expect(events.status()).toEqual({ created: 3, counted: 1, dropped: 0, failed: 0, lastError: undefined });
});

test("events are rate-limited per object and reason, and refill over time", async () => {
  const kube = new FakeKube();
  let now = 1_000_000;
  await using events = new EventRecorder({ client: kube.client(), nodeName: "node-a", burst: 2, refillMs: 60_000, now: () => now, log: silentLogger });
  const ref = { kind: "Service", name: "web", namespace: "default" };
  const outcomes = [];
  for (let i = 0; i < 4; i++) outcomes.push(await events.warning(ref, "AllocationFailed", `attempt ${i}`));
  expect(outcomes).toEqual(["created", "created", "dropped", "dropped"]);
  // Another reason has its own bucket.
  expect(await events.warning(ref, "FailedToStartServiceHealthcheck", "x")).toBe("created");
  now += 60_000;
  expect(await events.warning(ref, "AllocationFailed", "later")).toBe("created");
  expect(kube.items("events").length).toBe(4);
  expect(events.status()).toMatchObject({ created: 4, dropped: 2 });
});

test("a refused write is counted and logged, never thrown", async () => {
  const kube = new FakeKube();
  using _refused = kube.failNext(Infinity, { match: (c) => c.resource === "events", status: 403 });
  await using events = new EventRecorder({ client: kube.client(), nodeName: "node-a", log: silentLogger });
  expect(await events.warning({ kind: "Service", name: "web", namespace: "default" }, "FailedToBindListener", "m")).toBe("failed");
  expect(events.status()).toMatchObject({ failed: 1, created: 0 });
  expect(events.status().lastError).toContain("403");
  expect(kube.items("events")).toEqual([]);
});

test("a failed create is not remembered: the next occurrence creates the Event", async () => {
  const kube = new FakeKube();
  await using events = new EventRecorder({ client: kube.client(), nodeName: "node-a", log: silentLogger });
  const ref = { kind: "Service", name: "web", namespace: "default" };
  {
    using _once = kube.failNext(1, { status: 500 });
    expect(await events.warning(ref, "FailedToBindListener", "m")).toBe("failed");
  }
  expect(await events.warning(ref, "FailedToBindListener", "m")).toBe("created");
  expect(kube.items("events")).toMatchObject([{ count: 1, message: "m" }]);
  expect(eventWrites(kube)).toEqual([["create", 500], ["create", 201]]);
  expect(events.status()).toMatchObject({ created: 1, failed: 1, counted: 0 });
});

test("a repeat whose patch fails (not 404) is failed, not created again; the next repeat is counted on the same Event", async () => {
  const kube = new FakeKube();
  await using events = new EventRecorder({ client: kube.client(), nodeName: "node-a", log: silentLogger });
  const ref = { kind: "Service", name: "web", namespace: "default" };
  expect(await events.warning(ref, "FailedToBindListener", "m")).toBe("created");
  {
    using _once = kube.failNext(1, { match: (c) => c.verb === "patch", status: 500 });
    expect(await events.warning(ref, "FailedToBindListener", "m")).toBe("failed");
  }
  expect(await events.warning(ref, "FailedToBindListener", "m")).toBe("counted");
  expect(eventWrites(kube)).toEqual([["create", 201], ["patch", 500], ["patch", 200]]);
  expect(kube.items("events")).toMatchObject([{ count: 2 }]);
  expect(events.status()).toMatchObject({ created: 1, counted: 1, failed: 1 });
});
