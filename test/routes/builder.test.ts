/** RouteBuilder: which balancer each entrypoint gets, and the state kept across snapshots. */
import { describe, expect, test } from "bun:test";
import { ClientIpAffinity } from "../../src/balancer/affinity.ts";
import { DynamicRoundRobin } from "../../src/balancer/dynamic.ts";
import { LeastRequest } from "../../src/balancer/least-request.ts";
import { Maglev } from "../../src/balancer/maglev.ts";
import { RandomBalancer } from "../../src/balancer/random.ts";
import { RingHash } from "../../src/balancer/ring-hash.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import { type ExternalNameLease, type ExternalNames, RouteBuilder } from "../../src/routes/builder.ts";
import type { Endpoint, Entrypoint, SessionAffinity, TrafficPolicy } from "../../src/model/types.ts";
import { entrypoint } from "../support/entrypoints.ts";
import { ep, manualClock } from "../balancer/conformance.ts";

function withAffinity(base: Entrypoint, sessionAffinity: SessionAffinity | undefined): Entrypoint {
  return { ...base, sessionAffinity };
}

const clientIp: SessionAffinity = { mode: "ClientIP", timeoutSeconds: 10 };

function withPolicy(base: Entrypoint, policy: TrafficPolicy | undefined): Entrypoint {
  return { ...base, policy };
}

/** The first choice for `clientAddress` of a fresh builder (a worker that never saw the client) routing `e`. */
function firstAddress(e: Entrypoint, clientAddress: string): string | undefined {
  return new RouteBuilder({ rng: Math.random }).route(e).balancer.pick({ clientAddress })?.address;
}

/** The first client address 198.18.x.y that satisfies `ok`. */
function clientWhere(ok: (client: string) => boolean): string {
  for (let i = 0; i < 4096; i++) {
    const c = `198.18.${i >> 8}.${i & 255}`;
    if (ok(c)) return c;
  }
  throw new Error("No client address found");
}

/** The LoadBalancer entrypoint of the same Service port as NodePort entrypoint `np`. */
function loadBalancer(np: Entrypoint): Entrypoint {
  return { ...np, type: "LoadBalancer", key: `LoadBalancer/${np.name}` };
}

const outlier = { consecutiveFailures: 2, baseEjectionMs: 10_000, maxEjectionPercent: 50 };

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
    const np2 = withAffinity(entrypoint({ endpoints: [ep(3), ep(1), ep(4)] }), clientIp);
    // A client whose first choice is 10.0.0.1 among the three, and the newcomer 10.0.0.4 among [3, 1, 4].
    const client = clientWhere((c) => firstAddress(np, c) === "10.0.0.1" && firstAddress(np2, c) === "10.0.0.4");
    const lb: Entrypoint = { ...np, type: "LoadBalancer", key: `LoadBalancer/${np.name}` };
    const r1 = routes.route(np);
    const rlb = routes.route(lb);
    routes.retain([np, lb]);
    expect(r1.balancer.pick({ clientAddress: client })!.address).toBe("10.0.0.1");
    // The LoadBalancer entrypoint of the same Service port sees the same affinity.
    expect(rlb.balancer.pick({ clientAddress: client })!.address).toBe("10.0.0.1");
    // New endpoints (10.0.0.1 kept, order changed, 10.0.0.2 gone, 10.0.0.4 new): the client stays, though a new
    // client from its address would go to 10.0.0.4.
    const r2 = routes.route(np2, r1);
    routes.retain([np2, lb]);
    expect(r2.balancer).not.toBe(r1.balancer);
    expect(r2.balancer.pick({ clientAddress: client })!.address).toBe("10.0.0.1");
    expect(routes.describe(np2.key)).toEqual({ algorithm: "round-robin", affinity: { mode: "ClientIP", timeoutSeconds: 10, clients: 1 } });
    // Both entrypoints gone, then back: the affinity is forgotten.
    routes.retain([]);
    expect(routes.describe(np2.key)).toBeUndefined();
    const r3 = routes.route(np2);
    expect(r3.balancer.pick({ clientAddress: client })!.address).toBe("10.0.0.4");
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

  test("the algorithm is the Service's (policy.balancer), else the gateway default, else round-robin", () => {
    const e = entrypoint({ endpoints: [ep(1), ep(2)] });
    expect(new RouteBuilder().route(e).balancer).toBeInstanceOf(RoundRobin);
    const routes = new RouteBuilder({ defaultBalancer: "maglev" });
    expect(routes.route(e).balancer).toBeInstanceOf(Maglev);
    const cases = [
      ["round-robin", RoundRobin],
      ["least-request", LeastRequest],
      ["random", RandomBalancer],
      ["ring-hash", RingHash],
      ["maglev", Maglev],
    ] as const;
    for (const [balancer, type] of cases) expect(routes.route(withPolicy(e, { balancer })).balancer).toBeInstanceOf(type);
    // With ClientIP affinity the algorithm is the inner balancer.
    const affine = routes.route(withPolicy(withAffinity(e, clientIp), { balancer: "least-request" })).balancer;
    expect(affine).toBeInstanceOf(ClientIpAffinity);
    expect((affine as ClientIpAffinity).inner).toBeInstanceOf(LeastRequest);
  });

  test("describe() shows the algorithm in use, what a consistent hash keys on, and the slow-start window", () => {
    const routes = new RouteBuilder();
    const base = entrypoint({ endpoints: [8080] });
    const hashed = withPolicy(base, { balancer: "ring-hash", hashOn: { source: "header", name: "x-user" }, slowStartMs: 30_000 });
    routes.route(hashed);
    expect(routes.describe(hashed.key)).toEqual({ algorithm: "ring-hash", hashOn: { source: "header", name: "x-user" } });
    const maglev = withPolicy(base, { balancer: "maglev" });
    routes.route(maglev);
    expect(routes.describe(maglev.key)).toEqual({ algorithm: "maglev", hashOn: { source: "client-ip" } });
    const slow = withPolicy(base, { balancer: "least-request", slowStartMs: 30_000 });
    routes.route(slow);
    expect(routes.describe(slow.key)).toEqual({ algorithm: "least-request", slowStartMs: 30_000 });
  });

  test("a changed balancer, hash-on or slow-start window builds a new balancer; an equal policy keeps it", () => {
    const routes = new RouteBuilder();
    const e = withPolicy(entrypoint({ endpoints: [8080] }), { balancer: "ring-hash", hashOn: { source: "cookie", name: "sid" }, slowStartMs: 1_000 });
    const r = routes.route(e);
    const same = withPolicy(e, { balancer: "ring-hash", hashOn: { source: "cookie", name: "sid" }, slowStartMs: 1_000 });
    expect(routes.route(same, r).balancer).toBe(r.balancer);
    const changes: TrafficPolicy[] = [
      { balancer: "maglev", hashOn: { source: "cookie", name: "sid" }, slowStartMs: 1_000 },
      { balancer: "ring-hash", hashOn: { source: "cookie", name: "other" }, slowStartMs: 1_000 },
      { balancer: "ring-hash", hashOn: { source: "header", name: "sid" }, slowStartMs: 1_000 },
      { balancer: "ring-hash", slowStartMs: 1_000 },
      { balancer: "ring-hash", hashOn: { source: "cookie", name: "sid" }, slowStartMs: 2_000 },
    ];
    for (const policy of changes) expect(routes.route(withPolicy(e, policy), r).balancer).not.toBe(r.balancer);
    // Absent policy and an empty one balance the same way.
    const plain = entrypoint({ endpoints: [8080] });
    const rp = routes.route(plain);
    expect(routes.route(withPolicy(plain, {}), rp).balancer).toBe(rp.balancer);
    expect(routes.route(withPolicy(plain, { slowStartMs: 0 }), rp).balancer).toBe(rp.balancer);
  });

  test("outlier state is shared by a Service port's NodePort and LoadBalancer routes and survives rebuilds", () => {
    const clock = manualClock();
    const routes = new RouteBuilder({ now: clock.now, rng: () => 0, outlier });
    const np = entrypoint({ endpoints: [ep(1), ep(2), ep(3)] });
    const lb = loadBalancer(np);
    const rnp = routes.route(np);
    const rlb = routes.route(lb);
    routes.retain([np, lb]);
    expect(routes.describe(np.key)).toEqual({ algorithm: "round-robin", ejected: [] });
    const bad = np.cluster.serving[1]!;
    for (let i = 0; i < 2; i++) {
      rnp.balancer.begin(bad);
      rnp.balancer.end(bad, "connect-failure");
    }
    // The other route of the Service port skips it too.
    for (let i = 0; i < 10; i++) expect(rlb.balancer.pick({ clientAddress: "x" })!.address).not.toBe("10.0.0.2");
    const ejected = [{ address: "10.0.0.2", port: 8080, until: clock.now() + 10_000, ejections: 1 }];
    expect(routes.describe(lb.key)?.ejected).toEqual(ejected);
    expect(routes.outlierStats()).toEqual([{ cluster: np.name, ejected: 1, ejectionsTotal: 1 }]);
    // A new snapshot (new objects, one more endpoint): still ejected.
    const np2 = entrypoint({ endpoints: [ep(1), ep(2), ep(3), ep(4)] });
    const r2 = routes.route(np2, rnp);
    routes.retain([np2, lb]);
    expect(r2.balancer).not.toBe(rnp.balancer);
    for (let i = 0; i < 12; i++) expect(r2.balancer.pick({ clientAddress: "x" })!.address).not.toBe("10.0.0.2");
    expect(routes.describe(np2.key)?.ejected).toEqual(ejected);
    clock.advance(10_000);
    expect(routes.outlierStats()).toEqual([{ cluster: np.name, ejected: 0, ejectionsTotal: 1 }]);
    expect(routes.describe(np2.key)?.ejected).toEqual([]);
    // The Service goes away: its state too.
    routes.retain([]);
    expect(routes.outlierStats()).toEqual([]);
    expect(routes.cluster(np.name)).toBeUndefined();
  });

  test("outlier detection off: no ejections, no stats, no ejected list", () => {
    const routes = new RouteBuilder({ outlier: { ...outlier, consecutiveFailures: 0 } });
    const e = entrypoint({ endpoints: [ep(1), ep(2)] });
    const r = routes.route(e);
    routes.retain([e]);
    for (let i = 0; i < 10; i++) r.balancer.end(e.cluster.serving[0]!, "server-error");
    expect(routes.describe(e.key)).toEqual({ algorithm: "round-robin" });
    expect(routes.outlierStats()).toEqual([]);
  });

  test("slow start: an endpoint's first-seen time survives route rebuilds; a brand-new Service is not slowed", () => {
    const clock = manualClock();
    const routes = new RouteBuilder({ now: clock.now, rng: () => 0 });
    const policy: TrafficPolicy = { slowStartMs: 10_000 };
    const share3 = (b: { pick(c: { clientAddress: string }): Endpoint | undefined }) => {
      let n = 0;
      for (let i = 0; i < 2_550; i++) if (b.pick({ clientAddress: "x" })!.address === "10.0.0.3") n++;
      return n / 2_550;
    };
    const e1 = withPolicy(entrypoint({ endpoints: [ep(1), ep(2)] }), policy);
    const r1 = routes.route(e1);
    routes.retain([e1]);
    let n1 = 0;
    for (let i = 0; i < 100; i++) if (r1.balancer.pick({ clientAddress: "x" })!.address === "10.0.0.1") n1++;
    expect(n1).toBe(50); // the first endpoints: full weight at once
    const e2 = withPolicy(entrypoint({ endpoints: [ep(1), ep(2), ep(3)] }), policy);
    const r2 = routes.route(e2, r1);
    routes.retain([e2]);
    expect(share3(r2.balancer)).toBeCloseTo(0.1 / 2.1, 2);
    clock.advance(5_000);
    // Another snapshot (new objects, same endpoints): a new balancer, but 10.0.0.3 is half way, not restarted.
    const e3 = withPolicy(entrypoint({ endpoints: [ep(1), ep(2), ep(3)] }), policy);
    const r3 = routes.route(e3, r2);
    routes.retain([e3]);
    expect(r3.balancer).not.toBe(r2.balancer);
    expect(share3(r3.balancer)).toBeCloseTo(0.55 / 2.55, 2);
  });

  test("begin/end flow through the affinity wrapper to the algorithm's shared in-flight counts", () => {
    const routes = new RouteBuilder({ rng: () => 0 });
    const e = withPolicy(withAffinity(entrypoint({ endpoints: [ep(1), ep(2)] }), clientIp), { balancer: "least-request" });
    const r = routes.route(e);
    const got = r.balancer.pick({ clientAddress: "192.0.2.1" })!;
    r.balancer.begin(got);
    r.balancer.begin(got);
    expect(routes.cluster(e.name)!.host(got)!.inflight).toBe(2);
    // The first choice of an affine client is its rendezvous hash, the same in every worker, not the less loaded
    // endpoint (least-request's in-flight counts are per worker).
    const same = clientWhere((c) => c !== "192.0.2.1" && firstAddress(e, c) === got.address);
    expect(r.balancer.pick({ clientAddress: same })).toBe(got);
    r.balancer.end(got, "success");
    r.balancer.end(got, "success");
    expect(routes.cluster(e.name)!.host(got)!.inflight).toBe(0);
  });

  test("a ClientIP-affine client and a cookie move off an ejected endpoint", () => {
    const routes = new RouteBuilder({ rng: () => 0, outlier: { ...outlier, consecutiveFailures: 1 } });
    const aff: SessionAffinity = { mode: "ClientIP", timeoutSeconds: 60, cookie: { name: "kg", ttlSeconds: 60 } };
    const e = withAffinity(entrypoint({ protocol: "http", endpoints: [ep(1), ep(2)] }), aff);
    const r = routes.route(e);
    const pinned = r.balancer.pick({ clientAddress: "192.0.2.1" })!;
    const token = r.cookie!.tokenFor(pinned);
    expect(r.cookie!.endpointFor(token)).toBe(pinned);
    r.balancer.end(pinned, "server-error");
    const moved = r.balancer.pick({ clientAddress: "192.0.2.1" })!;
    expect(moved).not.toBe(pinned);
    expect(r.balancer.pick({ clientAddress: "192.0.2.1" })).toBe(moved); // and pinned there
    expect(r.cookie!.endpointFor(token)).toBeUndefined();
  });

  test("ExternalName targets get outlier detection too", () => {
    const { names, addresses } = fakeNames();
    const routes = new RouteBuilder({ externalNames: names, rng: () => 0, outlier: { ...outlier, consecutiveFailures: 1 } });
    const ext: Entrypoint = { ...entrypoint({ protocol: "tcp" }), externalName: { hostname: "db.example.com", port: 5432 }, policy: { balancer: "maglev" } };
    addresses.set("db.example.com", ["192.0.2.10", "192.0.2.11"]);
    const r = routes.route(ext);
    routes.retain([ext]);
    const first = r.balancer.pick({ clientAddress: "x" })!;
    r.balancer.end(first, "connect-failure");
    for (let i = 0; i < 5; i++) expect(r.balancer.pick({ clientAddress: "x" })).not.toBe(first);
    expect(routes.describe(ext.key)).toMatchObject({ algorithm: "round-robin", ejected: [{ address: first.address, port: 5432, ejections: 1 }] });
  });
});
