import { describe, expect, test } from "bun:test";
import { ENDPOINTS_PER_ENTRYPOINT, type PageSource, TrafficRates, pageQuery, pageState } from "../../../src/admin/page/state.ts";
import type { Endpoint, Entrypoint, Snapshot } from "../../../src/model/types.ts";
import { hServer, toHtml } from "../../../src/admin/page/html.ts";
import { renderPage } from "../../../src/admin/page/render.ts";
import { entrypoint } from "../../support/entrypoints.ts";

const ep = (address: string, port: number, state: Partial<Endpoint> = {}): Endpoint => ({
  address,
  port,
  ready: true,
  serving: true,
  terminating: false,
  ...state,
});

function snap(entrypoints: Entrypoint[], extra: Partial<Snapshot> = {}): Snapshot {
  return { version: 7, entrypoints, errors: [], node: { name: "node-a", zone: "z1" }, ...extra };
}

const web = (): Entrypoint => {
  const endpoints = [ep("10.0.0.1", 8080, { nodeName: "node-a", targetRef: { kind: "Pod", name: "web-1" } }), ep("10.0.0.2", 8080, { ready: false, terminating: true }), ep("10.0.0.3", 8080, { ready: false, serving: false })];
  const base = entrypoint({ name: "shop/web:http", protocol: "http", addresses: ["127.0.0.1", "::1"], port: 30080, endpoints });
  return {
    ...base,
    cluster: { ...base.cluster, serving: [endpoints[0]!], selection: { policy: "Cluster", topology: "zone", fallback: "none" } },
    externalTrafficPolicy: "Local",
    sessionAffinity: { mode: "ClientIP", timeoutSeconds: 600 },
  };
};

function view(snapshot: Snapshot | undefined, extra: Partial<PageSource> = {}): PageSource {
  return {
    snapshot: () => snapshot,
    listeners: () => [
      {
        key: "NodePort/shop/web:http",
        listeners: [
          { address: "127.0.0.1", port: 30080, bound: true },
          { address: "::1", port: 30080, bound: false, error: 'Cannot bind listener "shop/web:http" on [::1]:30080: address already in use' },
        ],
      },
    ],
    sources: () => [{ kind: "Service", synced: true, phase: "watching", lists: 1, watches: 2, objects: 3 }],
    ...extra,
  };
}

describe("page state", () => {
  test("the data plane's workers, each and in total, when there are several", () => {
    const workers = [
      { worker: 0, pid: 101, ready: true, restarts: 0, connections: 3, requests: 40 },
      { worker: 1, pid: 102, ready: false, restarts: 2, connections: 0, requests: 7 },
    ];
    const s = pageState(view(snap([web()]), { workers: () => workers }), pageQuery(new URLSearchParams()));
    expect(s.workers).toEqual(workers);
    const html = toHtml(renderPage(hServer, s));
    expect(html).toContain("Data plane workers");
    expect(html).toContain("1 of 2 serving");
    expect(html).toMatch(/>total<.*>2<.*>3<.*>47</s);
    // One process: no workers section.
    const single = pageState(view(snap([web()])), pageQuery(new URLSearchParams()));
    expect(single.workers).toBeUndefined();
    expect(toHtml(renderPage(hServer, single))).not.toContain("Data plane workers");
  });

  test("how endpoints are reached (--endpoint-access auto): the decisions per pod network and the dial counts", () => {
    const access = {
      mode: "auto",
      decisions: [
        { network: "10.244.1.0/24", via: "port-forward", reason: "connect to 10.244.1.5:8080 failed: ENETUNREACH", at: 1 },
        { network: "127.0.0.0/24", via: "direct", reason: "connected to 127.0.0.1:8080 in 0 ms", at: 2 },
      ],
      dials: { direct: { ok: 4, failed: 0 }, portForward: { ok: 12, failed: 1 } },
    };
    const s = pageState(view(snap([web()]), { endpointAccess: () => access }), pageQuery(new URLSearchParams()));
    expect(s.endpointAccess).toEqual({
      mode: "auto",
      decisions: access.decisions.map(({ at: _, ...d }) => d),
      direct: { ok: 4, failed: 0 },
      portForward: { ok: 12, failed: 1 },
    });
    const html = toHtml(renderPage(hServer, s));
    expect(html).toContain("Endpoint access: auto");
    expect(html).toContain("port-forward streams: 12 opened, 1 failed");
    expect(html).toMatch(/10\.244\.1\.0\/24<.*port-forward<.*ENETUNREACH/s);
    // Direct (the default): no section.
    expect(toHtml(renderPage(hServer, pageState(view(snap([web()])), pageQuery(new URLSearchParams()))))).not.toContain("Endpoint access");
  });

  test("the balancing algorithm and endpoints ejected by outlier detection, from the balancer's description", () => {
    const until = Date.UTC(2026, 10, 25, 12, 30, 5);
    const balancing = (key: string) =>
      key === "NodePort/shop/web:http" ? { algorithm: "maglev", ejected: [{ address: "10.0.0.1", port: 8080, until, ejections: 2 }] } : { algorithm: "round-robin" };
    const state = pageState(view(snap([entrypoint({ name: "shop/db:tcp", port: 30081, endpoints: [5432] }), web()]), { balancing }), pageQuery(new URLSearchParams()));
    const [db, shop] = [state.entrypoints.find((e) => e.service === "db")!, state.entrypoints.find((e) => e.service === "web")!];
    expect(db.balancer).toBeUndefined();
    expect(shop.balancer).toBe("maglev");
    expect(shop.endpoints.map((e) => e.ejectedUntil)).toEqual(["2026-11-25T12:30:05.000Z", undefined, undefined]);
    const html = toHtml(renderPage(hServer, state));
    expect(html).toContain("maglev");
    expect(html).toContain("ejected until 12:30:05");
  });

  test("an entrypoint with its listeners, endpoint states, policy and selection; summary over everything", () => {
    const state = pageState(view(snap([entrypoint({ name: "shop/db:tcp", port: 30081, endpoints: [5432] }), web()])), pageQuery(new URLSearchParams()), { now: 1_000 });
    expect(state.version).toBe(7);
    expect(state.at).toBe(1_000);
    expect(state.node).toBe("node-a");
    expect(state.zone).toBe("z1");
    expect(state.summary).toEqual({
      entrypoints: 2,
      failing: 1,
      listeners: { bound: 1, unbound: 1 },
      endpoints: { total: 4, ready: 2, terminating: 1, notServing: 1 },
      errors: 1,
    });
    expect(state.entrypoints[1]).toEqual({
      key: "NodePort/shop/web:http",
      name: "shop/web:http",
      type: "NodePort",
      protocol: "http",
      namespace: "shop",
      service: "web",
      addresses: ["127.0.0.1", "::1"],
      port: 30080,
      policy: "Local",
      affinity: { mode: "ClientIP", timeoutSeconds: 600 },
      selection: "topology zone",
      listeners: [
        { address: "127.0.0.1", port: 30080, bound: true },
        { address: "::1", port: 30080, bound: false, error: 'Cannot bind listener "shop/web:http" on [::1]:30080: address already in use' },
      ],
      endpoints: [
        { address: "10.0.0.1", port: 8080, ready: true, serving: true, terminating: false, used: true, node: "node-a", target: "Pod/web-1" },
        { address: "10.0.0.2", port: 8080, ready: false, serving: true, terminating: true, used: false },
        { address: "10.0.0.3", port: 8080, ready: false, serving: false, terminating: false, used: false },
      ],
      endpointCount: 3,
      serving: 1,
    });
    expect(state.errors).toEqual([
      { kind: "Entrypoint", object: "NodePort/shop/web:http", message: 'Cannot bind listener "shop/web:http" on [::1]:30080: address already in use' },
    ]);
    expect(state.traffic).toBeUndefined();
    expect(state.health).toBeUndefined();
  });

  test("before the first snapshot: not synced, nothing to show", () => {
    const state = pageState(view(undefined, { listeners: () => [] }), pageQuery(new URLSearchParams()), { now: 5 });
    expect(state).toMatchObject({ version: 0, synced: false, entrypoints: [], errors: [], summary: { entrypoints: 0, errors: 0 } });
    expect(state.node).toBeUndefined();
  });

  test("filter and limit bound what is shown; counts stay global", () => {
    const many = Array.from({ length: 30 }, (_, i) => entrypoint({ name: `ns/svc-${String(i).padStart(2, "0")}:http`, port: 31000 + i }));
    const all = pageState(view(snap(many)), pageQuery(new URLSearchParams("limit=5")));
    expect(all.entrypoints.map((e) => e.service)).toEqual(["svc-00", "svc-01", "svc-02", "svc-03", "svc-04"]);
    expect(all.filter).toEqual({ q: "", limit: 5, matched: 30 });
    expect(all.summary.entrypoints).toBe(30);
    const filtered = pageState(view(snap(many)), pageQuery(new URLSearchParams("q=SVC-1")));
    expect(filtered.entrypoints.map((e) => e.service)).toEqual(Array.from({ length: 10 }, (_, i) => `svc-1${i}`));
    expect(pageState(view(snap(many)), pageQuery(new URLSearchParams("q=31029"))).entrypoints.map((e) => e.service)).toEqual(["svc-29"]);
  });

  test("query parameters are clamped; bad ones fall back to the defaults", () => {
    expect(pageQuery(new URLSearchParams("limit=abc"))).toEqual({ q: "", limit: 200 });
    expect(pageQuery(new URLSearchParams("limit=-3"))).toEqual({ q: "", limit: 200 });
    expect(pageQuery(new URLSearchParams("limit=99999&q=%20web%20"))).toEqual({ q: "web", limit: 2000 });
    expect(pageQuery(new URLSearchParams(`q=${"x".repeat(500)}`)).q.length).toBe(200);
  });

  test(`endpoints are capped at ${ENDPOINTS_PER_ENTRYPOINT} per entrypoint, with the full count`, () => {
    const big = entrypoint({ name: "ns/big:http", endpoints: Array.from({ length: 120 }, (_, i) => 20_000 + i) });
    const [e] = pageState(view(snap([big])), pageQuery(new URLSearchParams())).entrypoints;
    expect(e!.endpoints.length).toBe(ENDPOINTS_PER_ENTRYPOINT);
    expect(e!.endpointCount).toBe(120);
    expect(e!.serving).toBe(120);
  });

  test("health, controller and healthCheckNodePort servers are passed through when the view has them", () => {
    const state = pageState(
      view(snap([]), {
        health: () => ({ healthy: true, nodeEligible: false, ready: true, lastUpdated: 900 }),
        controller: () => ({ mode: "pool", leading: true, synced: true, services: 2, lastError: undefined }),
        healthChecks: () => [{ namespace: "shop", name: "web", port: 32000, addresses: ["127.0.0.1"], localEndpoints: 1, bound: false, error: "in use" }],
      }),
      pageQuery(new URLSearchParams()),
    );
    expect(state.health).toEqual({ healthy: true, nodeEligible: false, ready: true, lastUpdated: 900 });
    expect(state.controller).toEqual({ mode: "pool", leading: true, synced: true, services: 2 });
    expect(state.healthChecks).toEqual([{ service: "shop/web", port: 32000, localEndpoints: 1, bound: false, error: "in use" }]);
  });

  test("traffic of the shown Service ports, with rates over the last window once two samples exist", () => {
    let requests = 100;
    const traffic = () => [
      { key: "shop/web:http", requests, errors: 2, active: 3, bytesIn: 10, bytesOut: 20 },
      { key: "other/hidden:http", requests: 5, errors: 0, active: 0, bytesIn: 0, bytesOut: 0 },
    ];
    const v = view(snap([web()]), { traffic });
    const rates = new TrafficRates(1_000);
    const q = pageQuery(new URLSearchParams());
    expect(pageState(v, q, { now: 10_000, rates }).traffic).toEqual([{ key: "shop/web:http", requests: 100, errors: 2, active: 3, bytesIn: 10, bytesOut: 20 }]);
    requests = 150;
    // Within the window: no new rate yet.
    expect(pageState(v, q, { now: 10_500, rates }).traffic![0]!.requestRate).toBeUndefined();
    requests = 300;
    expect(pageState(v, q, { now: 12_000, rates }).traffic).toEqual([
      { key: "shop/web:http", requests: 300, errors: 2, active: 3, bytesIn: 10, bytesOut: 20, requestRate: 100, errorRate: 0 },
    ]);
    // A counter reset counts as 0, not a negative rate.
    requests = 10;
    expect(pageState(v, q, { now: 13_000, rates }).traffic![0]).toMatchObject({ requestRate: 0, errorRate: 0 });
  });
});
