import { describe, expect, test } from "bun:test";
import { goTime, HealthState, healthApp, toBeDeletedTaint } from "../../src/admin/proxy-health.ts";
import type { Node } from "../../src/kube/objects.ts";

const node = (extra: Partial<Node["metadata"]> = {}, taints: { key: string }[] = []): Node => ({
  metadata: { name: "n", ...extra },
  spec: { taints },
  status: { addresses: [] },
});

describe("kube-proxy's health contract", () => {
  const setup = () => {
    let now = Date.UTC(2026, 0, 2, 3, 4, 5, 600);
    const state = new HealthState(60_000, () => now);
    const counts = { healthz: {}, livez: {} } as { healthz: Record<string, number>; livez: Record<string, number> };
    const app = healthApp(state, counts);
    const get = async (path: string) => {
      const res = await app.request(path);
      return { status: res.status, body: await res.text(), type: res.headers.get("content-type"), nosniff: res.headers.get("x-content-type-options") };
    };
    return { state, get, counts, advance: (ms: number) => (now += ms) };
  };

  test("Go's time layout", () => {
    expect(goTime(Date.UTC(2026, 0, 2, 3, 4, 5, 600))).toBe("2026-01-02 03:04:05.6 +0000 UTC");
    expect(goTime(Date.UTC(2026, 10, 25, 13, 0, 0, 0))).toBe("2026-11-25 13:00:00 +0000 UTC");
  });

  test("healthy: 200 with lastUpdated = currentTime, exact bodies and headers", async () => {
    const { state, get } = setup();
    state.updated();
    expect(await get("/healthz")).toEqual({
      status: 200,
      body: '{"lastUpdated": "2026-01-02 03:04:05.6 +0000 UTC","currentTime": "2026-01-02 03:04:05.6 +0000 UTC", "nodeEligible": true}',
      type: "application/json",
      nosniff: "nosniff",
    });
    expect((await get("/livez")).body).toBe(
      '{"lastUpdated": "2026-01-02 03:04:05.6 +0000 UTC","currentTime": "2026-01-02 03:04:05.6 +0000 UTC"}',
    );
  });

  test("a change pending for the health timeout makes /healthz and /livez 503; applying it heals", async () => {
    const { state, get, advance, counts } = setup();
    state.updated();
    advance(1_000);
    state.queued();
    advance(59_999);
    expect((await get("/healthz")).status).toBe(200);
    advance(1);
    const h = await get("/healthz");
    expect(h.status).toBe(503);
    expect(h.body).toBe(
      '{"lastUpdated": "2026-01-02 03:04:05.6 +0000 UTC","currentTime": "2026-01-02 03:05:06.6 +0000 UTC", "nodeEligible": true}',
    );
    expect((await get("/livez")).status).toBe(503);
    state.updated();
    expect((await get("/healthz")).status).toBe(200);
    expect(counts).toEqual({ healthz: { 200: 2, 503: 1 }, livez: { 503: 1 } });
  });

  test("an API-server outage with nothing pending stays healthy", async () => {
    const { state, get, advance } = setup();
    state.updated();
    advance(3_600_000);
    expect((await get("/healthz")).status).toBe(200);
  });

  test("a node being deleted or tainted for deletion fails /healthz but not /livez", async () => {
    const { state, get } = setup();
    state.updated();
    state.syncNode(node({}, [{ key: toBeDeletedTaint }]));
    const h = await get("/healthz");
    expect(h.status).toBe(503);
    expect(h.body).toEndWith('"nodeEligible": false}');
    expect((await get("/livez")).status).toBe(200);
    state.syncNode(node({ deletionTimestamp: "2026-01-01T00:00:00Z" }));
    expect((await get("/healthz")).status).toBe(503);
    state.syncNode(node());
    expect((await get("/healthz")).status).toBe(200);
  });

  test("shutting down: /healthz and /readyz answer 503 at once with the same body shape; /livez is unchanged", async () => {
    const { state, get, advance, counts } = setup();
    state.updated();
    advance(1_000);
    state.shutdown();
    expect(state.shuttingDown).toBe(true);
    expect(await get("/healthz")).toEqual({
      status: 503,
      // As for an unhealthy proxy: lastUpdated is the last sync, not the current time.
      body: '{"lastUpdated": "2026-01-02 03:04:05.6 +0000 UTC","currentTime": "2026-01-02 03:04:06.6 +0000 UTC", "nodeEligible": true}',
      type: "application/json",
      nosniff: "nosniff",
    });
    expect(await get("/readyz")).toMatchObject({ status: 503, body: "shutting down\n" });
    expect((await get("/livez")).status).toBe(200);
    // There is no way back: syncs go on, the answers stay 503.
    state.updated();
    expect((await get("/healthz")).status).toBe(503);
    expect(state.ready).toBe(false);
    expect(counts.healthz).toEqual({ 503: 2 });
  });

  test("no data plane worker serving: /healthz and /readyz answer 503 (kube-proxy's body shape), /livez is unchanged; back to 200 when one serves", async () => {
    const { state, get, advance } = setup();
    let serving = true;
    state.servingWhen(() => serving);
    state.updated();
    expect((await get("/healthz")).status).toBe(200);
    expect((await get("/readyz")).status).toBe(200);
    serving = false;
    advance(1_000);
    expect(await get("/healthz")).toMatchObject({
      status: 503,
      body: '{"lastUpdated": "2026-01-02 03:04:05.6 +0000 UTC","currentTime": "2026-01-02 03:04:06.6 +0000 UTC", "nodeEligible": true}',
    });
    expect(await get("/readyz")).toMatchObject({ status: 503, body: "no data plane worker is serving\n" });
    expect((await get("/livez")).status).toBe(200);
    serving = true;
    expect((await get("/healthz")).status).toBe(200);
    expect((await get("/readyz")).status).toBe(200);
  });

  test("/readyz is 503 until the first snapshot is applied", async () => {
    const { state, get } = setup();
    expect((await get("/readyz")).status).toBe(503);
    state.updated();
    expect((await get("/readyz")).status).toBe(200);
  });
});
