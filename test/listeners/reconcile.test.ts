/**
 * The deciding half of reconciliation, without sockets: when a snapshot is endpoint churn only (and
 * which entrypoints changed), and how slots are planned (kept, new, removed, protocol changed).
 */
import { describe, expect, test } from "bun:test";
import { desiredListeners } from "../../src/listeners/desired.ts";
import { endpointsOnlyChanges, planSlots } from "../../src/listeners/reconcile.ts";
import type { Slot } from "../../src/listeners/slot.ts";
import type { Entrypoint, Snapshot } from "../../src/model/types.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";

const one = entrypoint({ name: "test/one:tcp", port: 30001, endpoints: [1] });
const two = entrypoint({ name: "test/two:tcp", port: 30002, endpoints: [1] });

/** `ep` with other endpoints (a new object, as the model makes it). */
const churned = (ep: Entrypoint, port: number): Entrypoint => ({ ...ep, cluster: { ...ep.cluster, endpoints: [], serving: [] }, annotations: { p: String(port) } });

function withDelta(base: Snapshot, changed: readonly string[], ...entrypoints: Entrypoint[]): Snapshot {
  return { ...snapshot(...entrypoints), delta: { base: base.entrypoints, changed: new Set(changed) } };
}

describe("endpointsOnlyChanges", () => {
  const s1 = snapshot(one, two);

  test("the same objects: nothing changed", () => {
    expect(endpointsOnlyChanges(s1, snapshot(one, two))).toEqual([]);
  });

  test("without a usable delta, the lists are compared", () => {
    const next = churned(two, 2);
    expect(endpointsOnlyChanges(s1, snapshot(one, next))).toEqual([next]);
  });

  test("a delta relative to the previous snapshot is trusted", () => {
    const a = churned(one, 2);
    const b = churned(two, 2);
    expect(endpointsOnlyChanges(s1, withDelta(s1, [one.key], a, b))).toEqual([a]);
  });

  test.each([
    ["an entrypoint added", () => snapshot(one, two, entrypoint({ name: "test/three:tcp", port: 30003 }))],
    ["a port changed", () => snapshot(one, { ...two, port: 30009 })],
    ["a protocol changed", () => snapshot(one, { ...two, protocol: "http" as const })],
    ["addresses changed", () => snapshot(one, { ...two, addresses: ["127.0.0.1", "::1"] })],
    ["source ranges changed", () => snapshot(one, { ...two, sourceRanges: ["10.0.0.0/8"] })],
    ["an error appeared", () => snapshot(one, { ...two, error: "conflict" })],
    ["a delta naming an added key", () => withDelta(s1, ["NodePort/test/zzz:tcp"], one, two)],
  ])("%s: full reconcile", (_, next) => {
    expect(endpointsOnlyChanges(s1, next())).toBeUndefined();
  });
});

describe("planSlots", () => {
  test("new listeners get new slots, by listener key and by entrypoint", () => {
    const plan = planSlots(new Map(), desiredListeners(snapshot(one, { ...two, addresses: ["127.0.0.1", "::1"] })).listeners);
    expect([...plan.slots.keys()]).toEqual(["127.0.0.1|30001|tcp", "127.0.0.1|30002|tcp", "::1|30002|tcp"]);
    expect([...plan.byEntrypoint].map(([key, slots]) => [key, slots.length])).toEqual([
      [one.key, 1],
      [two.key, 2],
    ]);
    expect(plan.removed).toEqual([]);
    expect(plan.slots.get("127.0.0.1|30001|tcp")).toMatchObject({ entrypoint: one, listener: undefined, binding: false, error: undefined });
  });

  test("a kept listener keeps its slot with the entrypoint's new version; removed and protocol-changed ones are removed", () => {
    const first = planSlots(new Map(), desiredListeners(snapshot(one, two)).listeners).slots;
    const oneAgain = churned(one, 3);
    const twoHttp = { ...two, protocol: "http" as const };
    const plan = planSlots(first, desiredListeners(snapshot(oneAgain, twoHttp)).listeners);
    const kept: Slot = plan.slots.get("127.0.0.1|30001|tcp")!;
    expect(kept).toBe(first.get("127.0.0.1|30001|tcp")!);
    expect(kept.entrypoint).toBe(oneAgain);
    const rebound = plan.slots.get("127.0.0.1|30002|tcp")!;
    expect(rebound).not.toBe(first.get("127.0.0.1|30002|tcp")!);
    expect(rebound.protocol).toBe("http");
    expect(plan.removed).toEqual([{ slot: first.get("127.0.0.1|30002|tcp")!, reason: "protocol changed to http" }]);

    const gone = planSlots(plan.slots, desiredListeners(snapshot(oneAgain)).listeners);
    expect(gone.removed).toEqual([{ slot: rebound, reason: "removed" }]);
    expect([...gone.slots.keys()]).toEqual(["127.0.0.1|30001|tcp"]);
  });
});
