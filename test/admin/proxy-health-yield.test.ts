/**
 * `/readyz` yields to a starting successor (`HealthState.yieldWhile`, issue 14): the kubelet's readiness probe for the
 * surge pod reaches the node's shared health port and may land on the old process, so the old one answers 503 until
 * the new one is ready. `/healthz` and `/livez` are unchanged: the node is still served.
 */
import { describe, expect, test } from "bun:test";
import { HealthState, healthApp } from "../../src/admin/proxy-health.ts";
import { Succession } from "../../src/control-plane/succession.ts";
import { rt } from "../../src/runtime/index.ts";
import { waitFor } from "../support/wait.ts";

describe("HealthState.yieldWhile", () => {
  const setup = () => {
    const state = new HealthState();
    state.updated();
    let starting = false;
    state.yieldWhile(() => starting);
    const app = healthApp(state);
    const get = async (path: string) => {
      const res = await app.request(path);
      return { status: res.status, body: await res.text() };
    };
    return { state, get, setStarting: (s: boolean) => (starting = s) };
  };

  test("/readyz answers 503 while a successor is starting and 200 after; /healthz and /livez stay 200", async () => {
    const { state, get, setStarting } = setup();
    expect([state.yielding, state.ready, (await get("/readyz")).status]).toEqual([false, true, 200]);
    setStarting(true);
    expect([state.yielding, state.ready]).toEqual([true, false]);
    expect(await get("/readyz")).toEqual({ status: 503, body: "successor starting: a newer gateway on this node is not ready yet\n" });
    expect([(await get("/healthz")).status, (await get("/livez")).status]).toEqual([200, 200]);
    setStarting(false);
    expect([state.yielding, state.ready]).toEqual([false, true]);
    expect(await get("/readyz")).toEqual({ status: 200, body: "ok\n" });
  });

  test("shutting down still wins: 503 'shutting down' with or without a successor starting", async () => {
    const { state, get, setStarting } = setup();
    state.shutdown();
    setStarting(true);
    expect(await get("/readyz")).toEqual({ status: 503, body: "shutting down\n" });
    setStarting(false);
    expect(await get("/readyz")).toEqual({ status: 503, body: "shutting down\n" });
  });

  test("over real sockets: the health server of the incumbent answers 503 while a real successor starts, 200 once it is ready or gone", async () => {
    const { listenUnix, connectUnix } = rt;
    if (!listenUnix || !connectUnix) throw new Error("This test needs a runtime with Unix sockets (Bun)");
    const path = `\0kubegate-test-${crypto.randomUUID()}`;
    const member = (pid: number) => Succession.start({ path, net: { listenUnix, connectUnix }, pid, version: "v" });
    await using incumbent = await member(101);
    const state = new HealthState();
    state.updated();
    state.yieldWhile(() => incumbent.successorStarting());
    const app = healthApp(state);
    await using server = rt.serveHttp({ hostname: "127.0.0.1", port: 0, fetch: (r) => app.fetch(r) });
    const readyz = async () => (await fetch(`http://127.0.0.1:${server.port}/readyz`)).status;
    const healthz = async () => (await fetch(`http://127.0.0.1:${server.port}/healthz`)).status;
    expect(await readyz()).toBe(200);

    {
      await using successor = await member(102);
      await waitFor(async () => (await readyz()) === 503, { what: "/readyz to yield to the starting successor" });
      expect(await healthz()).toBe(200);
      successor.announceReady();
      await waitFor(async () => (await readyz()) === 200, { what: "/readyz once the successor is ready" });
    }

    {
      // A successor that exits before it is ready (it failed to start) releases the gate too.
      await using failed = await member(103);
      await waitFor(async () => (await readyz()) === 503, { what: "/readyz to yield to the next successor" });
    }
    await waitFor(async () => (await readyz()) === 200, { what: "/readyz once the successor has gone" });
    expect(incumbent.incumbent).toBe(true);
  });
});
