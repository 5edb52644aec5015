/** RouteBuilder: which balancer each entrypoint gets, and the state kept across snapshots. */
import { describe, expect, test } from "bun:test";
import { ClientIpAffinity } from "../../src/balancer/affinity.ts";
import { DynamicRoundRobin } from "../../src/balancer/dynamic.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import { type ExternalNameLease, type ExternalNames, RouteBuilder } from "../../src/balancer/routes.ts";
import type { Endpoint, Entrypoint, SessionAffinity } from "../../src/model/types.ts";
import { entrypoint } from "../support/entrypoints.ts";
import { ep, manualClock } from "./conformance.ts";

function withAffinity(base: Entrypoint, sessionAffinity: SessionAffinity | undefined): Entrypoint {
  return { ...base, sessionAffinity };
}

const clientIp: SessionAffinity = { mode: "ClientIP", timeoutSeconds: 10 };

/** ExternalNames whose addresses the test sets. */
function fakeNames() {
  const addresses = new Map<string, string[]>();
  const held: string[] = [];
  const names: ExternalNames = {
    acquire(hostname): ExternalNameLease {
      held.push(hostname);
      let cached: { key: string; eps: readonly Endpoint[] } | undefined;
      return {
        hostname,
        endpoints(port) {
          const list = addresses.get(hostname) ?? [];
          const key = `${list.join(",")}|${port}`;
          if (cached?.key !== key) cached = { key, eps: list.map((address) => ({ address, port, ready: true, serving: true, terminating: false })) };
          return cached.eps;
        },
        ready: () => Promise.resolve(),
        status: () => ({ hostname, addresses: addresses.get(hostname) ?? [] }),
        release: () => void held.splice(held.indexOf(hostname), 1),
      };
    },
  };
  return { names, addresses, held };
}

describe("RouteBuilder", () => {
  test("a plain entrypoint gets a round robin; the same entrypoint object gets the same route", () => {
    const routes = new RouteBuilder();
    const e = entrypoint({ endpoints: [8080, 8081] });
    const r = routes.route(e);
    expect(r.balancer).toBeInstanceOf(RoundRobin);
    expect(r.cookie).toBeUndefined();
    expect(routes.route(e, r)).toBe(r);
  });

  test("a changed entrypoint with the same cluster and affinity keeps the balancer; a new cluster gets a new one", () => {
    const routes = new RouteBuilder();
    const e = entrypoint({ endpoints: [8080] });
    const r = routes.route(e);
    const renamed = { ...e, annotations: { a: "b" } };
    expect(routes.route(renamed, r).balancer).toBe(r.balancer);
    const moved = entrypoint({ endpoints: [9090] });
    expect(routes.route(moved, r).balancer).not.toBe(r.balancer);
    expect(routes.route(withAffinity(e, clientIp), r).balancer).toBeInstanceOf(ClientIpAffinity);
  });

  test("ClientIP affinity survives endpoint changes, is shared by a Service port's entrypoints, and is dropped with them", () => {
    const clock = manualClock();
    const routes = new RouteBuilder({ now: clock.now, rng: () => 0 });
    const np = withAffinity(entrypoint({ endpoints: [ep(1), ep(2), ep(3)] }), clientIp);
    const lb: Entrypoint = { ...np, type: "LoadBalancer", key: `LoadBalancer/${np.name}` };
    const r1 = routes.route(np);
    const rlb = routes.route(lb);
    routes.retain([np, lb]);
    expect(r1.balancer.pick({ clientAddress: "192.0.2.1" })!.address).toBe("10.0.0.1");
    // The LoadBalancer entrypoint of the same Service port sees the same affinity.
    expect(rlb.balancer.pick({ clientAddress: "192.0.2.1" })!.address).toBe("10.0.0.1");
    // New endpoints (10.0.0.1 kept, order changed): the client stays.
    const np2 = withAffinity(entrypoint({ endpoints: [ep(3), ep(1)] }), clientIp);
    const r2 = routes.route(np2, r1);
    routes.retain([np2, lb]);
    expect(r2.balancer).not.toBe(r1.balancer);
    expect(r2.balancer.pick({ clientAddress: "192.0.2.1" })!.address).toBe("10.0.0.1");
    expect(routes.describe(np2.key)).toEqual({ algorithm: "round-robin", affinity: { mode: "ClientIP", timeoutSeconds: 10, clients: 1 } });
    // Both entrypoints gone, then back: the affinity is forgotten.
    routes.retain([]);
    expect(routes.describe(np2.key)).toBeUndefined();
    const r3 = routes.route(np2);
    expect(r3.balancer.pick({ clientAddress: "192.0.2.1" })!.address).toBe("10.0.0.3");
  });

  test("cookie affinity only for HTTP entrypoints", () => {
    const routes = new RouteBuilder();
    const cookie: SessionAffinity = { mode: "None", timeoutSeconds: 10_800, cookie: { name: "kg", ttlSeconds: 60 } };
    const http = withAffinity(entrypoint({ protocol: "http", endpoints: [8080] }), cookie);
    const tcp = withAffinity(entrypoint({ protocol: "tcp", endpoints: [8080] }), cookie);
    const r = routes.route(http);
    expect(r.cookie?.settings).toEqual({ name: "kg", ttlSeconds: 60 });
    expect(r.balancer).toBeInstanceOf(RoundRobin);
    expect(routes.route(tcp).cookie).toBeUndefined();
  });

  test("ExternalName: a dynamic balancer over the lease's addresses; the lease follows the hostname and is released", () => {
    const { names, addresses, held } = fakeNames();
    const routes = new RouteBuilder({ externalNames: names, rng: () => 0 });
    const ext: Entrypoint = { ...entrypoint({ protocol: "tcp" }), externalName: { hostname: "db.example.com", port: 5432 } };
    const r = routes.route(ext);
    routes.retain([ext]);
    expect(r.balancer).toBeInstanceOf(DynamicRoundRobin);
    expect(r.balancer.pick({ clientAddress: "192.0.2.1" })).toBeUndefined();
    addresses.set("db.example.com", ["192.0.2.10", "192.0.2.11"]);
    expect([1, 2, 3].map(() => r.balancer.pick({ clientAddress: "192.0.2.1" })!.address)).toEqual(["192.0.2.10", "192.0.2.11", "192.0.2.10"]);
    expect(r.balancer.pick({ clientAddress: "x" })!.port).toBe(5432);
    expect(routes.describe(ext.key)).toEqual({
      algorithm: "round-robin",
      externalName: { hostname: "db.example.com", addresses: ["192.0.2.10", "192.0.2.11"], port: 5432 },
    });
    // Another name: the old lease is released.
    const moved: Entrypoint = { ...ext, externalName: { hostname: "db2.example.com", port: 5432 } };
    routes.route(moved, r);
    routes.retain([moved]);
    expect(held).toEqual(["db2.example.com"]);
    routes.retain([]);
    expect(held).toEqual([]);
  });
});
