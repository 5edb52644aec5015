/**
 * Endpoint churn with the snapshot's delta: the listener manager swaps the routes of the entrypoints
 * the delta names, falls back to comparing the lists when the delta is not relative to the last
 * snapshot it applied, and reconciles in full when the delta adds or removes entrypoints.
 */
import { describe, expect, test } from "bun:test";
import type { Entrypoint, Snapshot } from "../../src/model/types.ts";
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { rt } from "../../src/runtime/index.ts";
import { listenerManager } from "../support/listeners.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";
import { canConnect, connectClient, echoServer, echoTag as tagOf } from "../support/tcp-peers.ts";

function manager() {
  return listenerManager({ http: createTcpProxy, tcp: createTcpProxy }, { drainGraceMs: 1_000, retryIntervalMs: 0 });
}

function tcp(name: string, port: number, endpoints: readonly number[]): Entrypoint {
  return entrypoint({ name: `test/${name}:tcp`, port, endpoints });
}

/** A snapshot of `entrypoints` with a delta relative to `base` naming `changed` (as the model store sets it). */
function withDelta(base: Snapshot, changed: readonly string[], ...entrypoints: Entrypoint[]): Snapshot {
  const next = snapshot(...entrypoints);
  Object.defineProperty(next, "delta", { value: { base: base.entrypoints, changed: new Set(changed) }, enumerable: false });
  return next;
}



describe("ListenerManager with snapshot deltas", () => {
  test("only the entrypoints the delta names get a new route", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    const [p1, p2] = [await freePort(), await freePort()];
    await using m = manager();
    const s1 = snapshot(tcp("one", p1, [a.port]), tcp("two", p2, [a.port]));
    m.apply(s1);
    // Both entrypoints are new objects, but the delta names only "one": the manager trusts the delta.
    m.apply(withDelta(s1, ["NodePort/test/one:tcp"], tcp("one", p1, [b.port]), tcp("two", p2, [b.port])));
    expect(await tagOf(p1)).toBe("b");
    expect(await tagOf(p2)).toBe("a");
  });

  test("a delta relative to a snapshot the manager did not apply is ignored (the lists are compared)", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    await using c = echoServer(rt, { tag: "c" });
    const [p1, p2] = [await freePort(), await freePort()];
    await using m = manager();
    const s1 = snapshot(tcp("one", p1, [a.port]), tcp("two", p2, [a.port]));
    m.apply(s1);
    // s2 (one -> b) is never applied; s3's delta is relative to s2 and names only "two".
    const s2 = withDelta(s1, ["NodePort/test/one:tcp"], tcp("one", p1, [b.port]), s1.entrypoints[1]!);
    m.apply(withDelta(s2, ["NodePort/test/two:tcp"], s2.entrypoints[0]!, tcp("two", p2, [c.port])));
    expect(await tagOf(p1)).toBe("b");
    expect(await tagOf(p2)).toBe("c");
  });

  test("a delta that adds and removes entrypoints (same count) rebinds", async () => {
    await using a = echoServer(rt, { tag: "a" });
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    await using m = manager();
    const s1 = snapshot(tcp("one", p1, [a.port]), tcp("two", p2, [a.port]));
    m.apply(s1);
    m.apply(withDelta(s1, ["NodePort/test/two:tcp", "NodePort/test/three:tcp"], s1.entrypoints[0]!, tcp("three", p3, [a.port])));
    expect(await tagOf(p3)).toBe("a");
    expect(await canConnect(p2)).toBe(false);
    expect(m.status().map((e) => e.key)).toEqual(["NodePort/test/one:tcp", "NodePort/test/three:tcp"]);
  });

  test("a delta that changes a listen side (port) rebinds", async () => {
    await using a = echoServer(rt, { tag: "a" });
    const [p1, p2] = [await freePort(), await freePort()];
    await using m = manager();
    const s1 = snapshot(tcp("one", p1, [a.port]));
    m.apply(s1);
    m.apply(withDelta(s1, ["NodePort/test/one:tcp"], tcp("one", p2, [a.port])));
    expect(await tagOf(p2)).toBe("a");
    expect(await canConnect(p1)).toBe(false);
  });
});
