/**
 * Binding many listeners at once: beyond `syncBinds` they are queued and bound in slices with the
 * event loop running between them; queued listeners take the latest route, and are never bound when
 * a later snapshot removes them or the manager closes first.
 */
import { describe, expect, test } from "bun:test";
import type { Entrypoint } from "../../src/model/types.ts";
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { rt } from "../../src/runtime/index.ts";
import type { Runtime } from "../../src/runtime/types.ts";
import { listenerManager, type TestListenerOptions } from "../support/listeners.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";
import { canConnect, connectClient, echoServer, echoTag as tagOf } from "../support/tcp-peers.ts";

function manager(options: TestListenerOptions = {}) {
  return listenerManager({ http: createTcpProxy, tcp: createTcpProxy }, { drainGraceMs: 1_000, retryIntervalMs: 0, ...options });
}

function tcp(name: string, port: number, endpoints: readonly number[]): Entrypoint {
  return entrypoint({ name: `test/${name}:tcp`, port, endpoints });
}

/**
 * A `listenTcp` that records each bind's port and the task it ran in. Tasks are told apart by a microtask: it
 * runs as soon as the running task returns to the event loop, so binds in one synchronous run share a number.
 * `mark()` numbers the caller's own task the same way.
 */
function recordingBinds() {
  const binds: { port: number; task: number }[] = [];
  let task = 0;
  let current = false;
  const taskNow = () => {
    if (!current) {
      current = true;
      task++;
      queueMicrotask(() => void (current = false));
    }
    return task;
  };
  const listenTcp: Runtime["listenTcp"] = (o) => {
    binds.push({ port: o.port, task: taskNow() });
    return rt.listenTcp(o);
  };
  return { binds, listenTcp, mark: taskNow };
}
async function ports(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await freePort());
  return out;
}

describe("ListenerManager bind queue", () => {
  test("binds syncBinds listeners in apply and the rest later; settled() resolves once all are bound", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const ps = await ports(6);
    await using m = manager({ syncBinds: 2 });
    m.apply(snapshot(...ps.map((p, i) => tcp(`s${i}`, p, [echo.port]))));
    // Queued ones are neither bound nor failed (no error, no retry).
    expect(m.counts()).toMatchObject({ bound: 2, failed: 0 });
    expect(m.status().flatMap((e) => e.listeners).filter((l) => !l.bound)).toEqual(
      ps.slice(2).map((port) => ({ address: "127.0.0.1", port, bound: false, error: undefined })),
    );
    await m.settled();
    expect(m.counts()).toMatchObject({ bound: 6, failed: 0 });
    for (const p of ps) expect(await tagOf(p)).toBe("e");
  });

  test("the event loop runs between slices", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const ps = await ports(5);
    const rec = recordingBinds();
    await using m = manager({ syncBinds: 0, bindSliceMs: 0, listenTcp: rec.listenTcp });
    const applyTask = rec.mark();
    m.apply(snapshot(...ps.map((p, i) => tcp(`s${i}`, p, [echo.port]))));
    expect(m.counts().bound).toBe(0);
    await m.settled();
    expect(m.counts().bound).toBe(5);
    // Observed, not raced against a timer: a slice of 0 ms binds one listener and yields, so each of the five
    // binds ran in a task of its own, none of them in apply's.
    expect(rec.binds.map((b) => b.port)).toEqual(ps);
    const tasks = rec.binds.map((b) => b.task);
    expect(new Set(tasks).size).toBe(5);
    expect(tasks).not.toContain(applyTask);
  });

  test("a queued listener binds with the route of the latest snapshot", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    const [p0, p1] = await ports(2);
    await using m = manager({ syncBinds: 1 });
    m.apply(snapshot(tcp("one", p0!, [a.port]), tcp("two", p1!, [a.port])));
    // Endpoint change only (the fast path) while "two" waits in the queue.
    m.apply(snapshot(tcp("one", p0!, [a.port]), tcp("two", p1!, [b.port])));
    await m.settled();
    expect(await tagOf(p1!)).toBe("b");
    expect(await tagOf(p0!)).toBe("a");
  });

  test("a queued listener removed by a later snapshot is never bound", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const [p0, p1, p2] = await ports(3);
    const rec = recordingBinds();
    await using m = manager({ syncBinds: 1, listenTcp: rec.listenTcp });
    m.apply(snapshot(tcp("one", p0!, [echo.port]), tcp("two", p1!, [echo.port]), tcp("three", p2!, [echo.port])));
    m.apply(snapshot(tcp("one", p0!, [echo.port]), tcp("three", p2!, [echo.port])));
    await m.settled();
    expect(rec.binds.map((b) => b.port)).toEqual([p0!, p2!]);
    expect(await canConnect(p1!)).toBe(false);
    expect(await tagOf(p2!)).toBe("e");
    expect(m.counts()).toMatchObject({ bound: 2, failed: 0 });
  });

  test("close drops the queue: nothing is bound afterwards", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const ps = await ports(4);
    const rec = recordingBinds();
    const m = manager({ syncBinds: 1, listenTcp: rec.listenTcp });
    m.apply(snapshot(...ps.map((p, i) => tcp(`s${i}`, p, [echo.port]))));
    await m.close(0);
    await m.settled();
    await new Promise((resolve) => setTimeout(resolve, 0)); // a slice already scheduled runs now, and must bind nothing
    expect(rec.binds.map((b) => b.port)).toEqual(ps.slice(0, 1));
    for (const p of ps) expect(await canConnect(p)).toBe(false);
    expect(m.counts()).toMatchObject({ bound: 0 });
  });

  test("counts() follows every change of bind state, and counts connections when read", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const [free, taken] = await ports(2);
    const blocker = rt.listenTcp({ hostname: "127.0.0.1", port: taken!, handlers: { data() {} } });
    await using m = manager();
    m.apply(snapshot(tcp("one", free!, [echo.port]), tcp("two", taken!, [echo.port])));
    expect(m.counts()).toMatchObject({ bound: 1, failed: 1, draining: 0 });
    const counts = m.counts();
    await using c = await connectClient(rt, free!);
    expect(await c.exchange("x", 3)).toBe("e:x");
    expect(counts.connections).toBe(1);
    blocker.stop(true);
    m.retryFailed();
    expect(m.counts()).toMatchObject({ bound: 2, failed: 0 });
    m.apply(snapshot(tcp("two", taken!, [echo.port])));
    expect(m.counts()).toMatchObject({ bound: 1, failed: 0, draining: 1, connections: 1 });
  });
});
