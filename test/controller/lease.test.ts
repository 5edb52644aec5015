/**
 * Leader election. On the in-memory fake: one writer, no write from a deposed leader, graceful release, a 409 or a
 * failed renewal ends the term at once, and a leader whose requests hang stops at its renew deadline, before a
 * follower takes over. On the wire (the test API server and a child process, which a test can SIGKILL): a killed
 * leader is replaced within leaseDuration + retryPeriod.
 */
import { describe, expect, test } from "bun:test";
import { startLbController, type LbController } from "../../src/controller/index.ts";
import { leaseExpired, LeaderElector, microTime, NotLeaderError } from "../../src/controller/lease.ts";
import type { KubeClient } from "../../src/kube/client.ts";
import { silentLogger } from "../../src/log.ts";
import { startApiServer, type AccessRequest, type TestApiServer } from "../support/apiserver.ts";
import { FakeKube, fakeTuning } from "../support/fake-kube.ts";
import { waitFor } from "../support/wait.ts";
import { BOOKMARK_MS, clientFor, fastTuning } from "../support/kube-sinks.ts";
import { ingressOf, lbService, rawNode } from "../support/controller-objects.ts";
import { jsonLines } from "../support/child-io.ts";

/** Timings on the wire, with a child process to start. */
const LEASE = { leaseDurationSeconds: 2, renewDeadlineMs: 1_500, retryPeriodMs: 300 };
/** Timings on the fake. */
const FAST = { leaseDurationSeconds: 1, renewDeadlineMs: 700, retryPeriodMs: 150 };
/** FAST with a lease 200 retry periods long: a takeover by release and one by expiry are far apart. */
const LONG_LEASE = { ...FAST, leaseDurationSeconds: 30 };
const LEASE_NAME = "kube-system/kubegate-lb-controller";
const TOKENS = ["token-a", "token-b"];

type LeaseObj = { spec: Record<string, unknown>; metadata: { resourceVersion: string } };
const leaseOf = (kube: FakeKube) => kube.get("leases", "kube-system", "kubegate-lb-controller") as LeaseObj | undefined;
const statusWrites = (kube: FakeKube, from = 0) => kube.calls.slice(from).filter((c) => c.resource === "services" && c.subresource === "status" && c.verb === "patch");
const leaseWrites = (kube: FakeKube, user: string) => kube.calls.filter((c) => c.user === user && c.resource === "leases" && c.verb === "patch");

/** A controller on the fake, acting as `user`. */
const startLb = (kube: FakeKube, user: string, node: string, lease = FAST) =>
  startLbController({ client: kube.client(user), nodeName: node, lease, reflector: fakeTuning, log: silentLogger });

/** One Lease request of a candidate: when it was made, and the spec it read (get) or wrote (patch). */
interface LeaseCall {
  readonly verb: string;
  /** Date.now() when the request was made: the candidate reads its clock just before, in the same task. */
  readonly at: number;
  spec?: Record<string, unknown> | undefined;
}

/** `client`, recording its Lease requests into `calls` (a Proxy, so it wraps the fake's and the real client alike). */
function recordLeaseCalls<C extends object>(client: C, calls: LeaseCall[]): C {
  const isLease = (r: unknown) => r === "leases" || (r as { plural?: unknown } | undefined)?.plural === "leases";
  return new Proxy(client, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        const out = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (!isLease(args[0]) || (prop !== "get" && prop !== "patch")) return out;
        const call: LeaseCall = { verb: prop, at: Date.now() };
        calls.push(call);
        const specOf = (o: unknown) => (o as { spec?: Record<string, unknown> } | undefined)?.spec;
        if (prop === "patch") call.spec = specOf(args[3]);
        else void (out as Promise<unknown>).then((o) => void (call.spec = specOf(o)), () => {});
        return out;
      };
    },
  });
}

/**
 * How a follower took the Lease over, from its recorded calls: the holder it took it from, that holder's last
 * renewal and expiry (renewTime + leaseDurationSeconds, as the follower read it in its last get), the follower's
 * clock when it decided (the renewTime it wrote), when it made that last get, and when it made the gets before it.
 */
function takeover(calls: readonly LeaseCall[]) {
  const acquire = calls.findIndex((c) => c.verb === "patch");
  const gets = calls.slice(0, acquire).filter((c) => c.verb === "get");
  const seen = gets.at(-1)?.spec ?? {};
  const lastRenew = Date.parse(String(seen["renewTime"]));
  return {
    from: seen["holderIdentity"],
    lastRenew,
    expiry: lastRenew + Number(seen["leaseDurationSeconds"]) * 1000,
    decidedAt: Date.parse(String(calls[acquire]?.spec?.["renewTime"])),
    attemptAt: gets.at(-1)?.at ?? Number.NaN,
    earlierAttempts: gets.slice(0, -1).map((c) => c.at),
  };
}

/**
 * Assert that the follower took the Lease by its expiry, at its first attempt after it: never before (its own clock
 * past renewTime + leaseDuration when it wrote), and no attempt after the expiry that left the Lease to the old
 * holder (+1 ms: the request's timestamp may tick past the clock reading it decided on). Timer-independent: a
 * loaded box delays the attempts, not their order relative to the expiry.
 */
function expectTakeoverAtExpiry(t: ReturnType<typeof takeover>, from: string): void {
  expect(t.from).toBe(from);
  expect(t.decidedAt).toBeGreaterThan(t.expiry);
  expect(t.earlierAttempts.filter((at) => at > t.expiry + 1)).toEqual([]);
}

/** An elector on the fake that records when and why its terms start and end, and its Lease requests. */
function elector(kube: FakeKube, identity: string) {
  const terms: { at: number; what: string }[] = [];
  const leaseCalls: LeaseCall[] = [];
  const e = new LeaderElector({
    client: recordLeaseCalls(kube.client(identity), leaseCalls),
    identity,
    ...FAST,
    log: silentLogger,
    onStartedLeading: () => terms.push({ at: Date.now(), what: "started" }),
    onStoppedLeading: (why) => terms.push({ at: Date.now(), what: `stopped: ${why}` }),
  });
  e.start();
  return Object.assign(e, { terms, leaseCalls });
}

describe("leader election", () => {
  test("a deposed leader makes no write after losing the lease; only the leader ever writes", async () => {
    const kube = new FakeKube().load(`${import.meta.dir}/fixtures/lease-handover.yaml`);
    await using a = startLb(kube, "a", "node-a");
    await waitFor(() => a.status().leading, { what: "A to lead" });
    await using b = startLb(kube, "b", "node-b");
    await waitFor(() => b.status().election.holder === a.identity, { what: "B to observe A's lease" });
    kube.create(lbService("one"));
    await waitFor(() => ingressOf(kube.get("services", "default", "one")) !== undefined, { what: "A's write" });
    expect(statusWrites(kube).map((x) => x.user)).toEqual(["a"]);

    // A's renewals are refused from now on: it must stop leading at its next renewal and write nothing more.
    const cut = kube.calls.length;
    using _refused = kube.failNext(Infinity, { match: (x) => x.user === "a" && x.resource === "leases" && x.verb !== "get", status: 403 });
    await waitFor(() => !a.status().leading, { timeoutMs: 2_000, what: "A to stop leading" });
    // A change that a still-writing A would act on at once.
    kube.create(lbService("two"));
    await waitFor(() => b.status().leading, { timeoutMs: 5_000, what: "B to take over" });
    await waitFor(() => ingressOf(kube.get("services", "default", "two")) !== undefined, { what: "B's write" });
    expect(statusWrites(kube, cut).map((x) => `${x.name}:${x.user}`)).toEqual(["two:b"]);
    expect(kube.calls.slice(cut).some((x) => x.user === "a" && x.resource === "leases" && x.verb === "patch" && x.status === 403)).toBe(true);
    expect(a.status()).toMatchObject({ leading: false, election: { holder: b.identity } });
    expect(a.status().writes).toBe(1);
  });

  test("a graceful stop releases the lease: the follower takes over well before it would expire", async () => {
    const kube = new FakeKube().load(`${import.meta.dir}/fixtures/lease-handover.yaml`);
    // A 30 s lease: B taking over by the release (within a retry period, 150 ms) and B taking over by the expiry
    // (30 s) are 200x apart, so the bound below needs no tight timing.
    const a = startLb(kube, "a", "node-a", LONG_LEASE);
    await waitFor(() => a.status().leading, { what: "A to lead" });
    const first = leaseOf(kube)!.spec;
    expect(first).toEqual({
      holderIdentity: a.identity,
      leaseDurationSeconds: LONG_LEASE.leaseDurationSeconds,
      acquireTime: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/),
      renewTime: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/),
      leaseTransitions: 0,
    });
    expect(a.identity).toStartWith("node-a_");
    await using b = startLb(kube, "b", "node-b", LONG_LEASE);
    await waitFor(() => b.status().election.holder === a.identity, { what: "B to observe A" });
    await a[Symbol.asyncDispose]();
    // A's writes of the Lease: created, renewed, released (no holder).
    const writes = kube.calls.filter((x) => x.user === "a" && x.resource === "leases" && (x.verb === "create" || x.verb === "patch"));
    const [lastRenewal, released] = writes.slice(-2);
    expect(released).toMatchObject({ verb: "patch", status: 200, body: { spec: { holderIdentity: null, leaseDurationSeconds: 1 } } });
    expect(lastRenewal).toMatchObject({ body: { spec: { holderIdentity: a.identity } } });
    expect([200, 201]).toContain(lastRenewal!.status!);
    // Unreleased, A's Lease would expire leaseDuration after its last renewal.
    const expiresAt = Date.parse(String((lastRenewal?.body as LeaseObj).spec["renewTime"])) + LONG_LEASE.leaseDurationSeconds * 1000;
    await waitFor(() => b.status().leading, { what: "B to lead" });
    expect(Date.now()).toBeLessThan(expiresAt);
    expect(leaseOf(kube)?.spec).toMatchObject({ holderIdentity: b.identity, leaseTransitions: 1 });
  });

  test("a 409 on renewal (another candidate wrote the Lease) ends the term at once", async () => {
    const kube = new FakeKube();
    await using a = elector(kube, "a");
    await waitFor(() => a.isLeader(), { what: "A to lead" });
    // Another candidate takes the Lease (say, after a pause of A's): A's next renewal carries a stale resourceVersion.
    kube.patch("leases", "kube-system", "kubegate-lb-controller", { spec: { holderIdentity: "b", renewTime: microTime(Date.now()), leaseDurationSeconds: 30, leaseTransitions: 1 } });
    await waitFor(() => a.terms.length === 2, { what: "A's term to end" });
    expect(a.terms.map((t) => t.what)).toEqual(["started", `stopped: failed to renew lease "${LEASE_NAME}": lease "${LEASE_NAME}" was written by another candidate`]);
    expect(leaseWrites(kube, "a").at(-1)?.status).toBe(409);
    await waitFor(() => a.status().holder === "b", { what: "A to observe the new holder" });
    expect(a.isLeader()).toBe(false);
    expect(leaseOf(kube)?.spec).toMatchObject({ holderIdentity: "b", leaseTransitions: 1 });
  });

  test("a renewal that fails ends the term at once; the next attempt takes the Lease back without a transition", async () => {
    const kube = new FakeKube();
    await using a = elector(kube, "a");
    await waitFor(() => a.isLeader(), { what: "A to lead" });
    const { acquireTime } = leaseOf(kube)!.spec;
    using _once = kube.failNext(1, { match: (x) => x.resource === "leases" && x.verb === "patch", status: 500 });
    await waitFor(() => a.terms.length === 3, { what: "A to lose and regain the lease" });
    expect(a.terms.map((t) => t.what)).toEqual(["started", expect.stringMatching(new RegExp(`^stopped: failed to renew lease "${LEASE_NAME}": .*500`)), "started"]);
    expect(leaseWrites(kube, "a").map((x) => x.status)).toContain(500);
    expect(leaseOf(kube)?.spec).toMatchObject({ holderIdentity: "a", leaseTransitions: 0, acquireTime });
  });

  test("a leader whose requests hang stops at its renew deadline, before a follower takes over within leaseDuration + retryPeriod", async () => {
    const kube = new FakeKube();
    await using a = elector(kube, "a");
    await waitFor(() => a.isLeader(), { what: "A to lead" });
    await using b = elector(kube, "b");
    await waitFor(() => b.status().holder === "a", { what: "B to observe A's lease" });
    // A is cut off (a partition, or a process gone): the API server hears nothing more from it.
    using _cut = kube.failNext(Infinity, { match: (x) => x.user === "a", hang: true });
    await waitFor(() => a.terms.length === 2, { timeoutMs: 2_000, what: "A to stop leading" });
    expect(a.terms[1]?.what).toBe(`stopped: no renewal of lease "${LEASE_NAME}" within ${FAST.renewDeadlineMs} ms`);
    const lastRenew = Date.parse(String(leaseOf(kube)?.spec["renewTime"]));
    expect(leaseOf(kube)?.spec["holderIdentity"]).toBe("a");
    await waitFor(() => b.isLeader(), { timeoutMs: 10_000, intervalMs: 5, what: "B to lead" });
    const [stopped, started] = [a.terms[1]!.at, b.terms[0]!.at];
    const t = takeover(b.leaseCalls);
    console.log(`A stopped ${stopped - lastRenew} ms and B took over ${started - lastRenew} ms after A's last renewal (B's attempt at ${t.attemptAt - lastRenew} ms)`);
    expect(stopped).toBeLessThan(started);
    expect(t.lastRenew).toBe(lastRenew);
    // "Within leaseDuration + retryPeriod" by mechanism: B took the Lease at its first attempt after the expiry.
    expectTakeoverAtExpiry(t, "a");
    // And B's attempts were in time: that attempt came within leaseDuration + retryPeriod (1.15 s) of A's last
    // renewal, with a generous 2x allowance for timers running late on a loaded box; a follower that slept a
    // whole lease duration or more past the expiry (>= 2 s) still fails.
    expect(t.attemptAt - lastRenew).toBeLessThan(2 * (FAST.leaseDurationSeconds * 1000 + FAST.retryPeriodMs));
    expect(a.isLeader()).toBe(false);
    expect(leaseOf(kube)?.spec).toMatchObject({ holderIdentity: "b", leaseTransitions: 1 });
  });
});

describe("leader election on the wire", () => {
  /** Records every resource request with its user. */
  function recordAccess(server: TestApiServer) {
    const log: AccessRequest[] = [];
    server.setAuthorizer((a) => (log.push(a), true));
    return {
      statusWrites: () => log.filter((a) => a.resource === "services" && a.subresource === "status" && (a.verb === "patch" || a.verb === "update")),
    };
  }

  async function startController(
    server: TestApiServer,
    token: string,
    node: string,
  ): Promise<{ lb: LbController; client: KubeClient; leaseCalls: LeaseCall[] } & AsyncDisposable> {
    const client = await clientFor(server, { token });
    const leaseCalls: LeaseCall[] = [];
    const lb = startLbController({ client: recordLeaseCalls(client, leaseCalls), nodeName: node, lease: LEASE, reflector: fastTuning, log: silentLogger });
    return {
      lb,
      client,
      leaseCalls,
      async [Symbol.asyncDispose]() {
        await lb[Symbol.asyncDispose]();
        client.close();
      },
    };
  }

  test("after a SIGKILL of the leader, the follower takes over within leaseDuration + retryPeriod", async () => {
    await using server = await startApiServer({ tokens: TOKENS, bookmarkIntervalMs: BOOKMARK_MS, rbac: "lb-controller" });
    const access = recordAccess(server);
    server.create(rawNode("node-a", ["10.0.0.1"]));
    server.create(rawNode("node-b", ["10.0.0.2"]));
    server.create(lbService("before"));
    const kubeconfig = await server.writeKubeconfig({ token: TOKENS[0]! });
    await using child = Bun.spawn([process.execPath, `${import.meta.dir}/fixtures/controller-main.ts`, kubeconfig, "node-a", JSON.stringify({ lease: LEASE })], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "inherit",
    });
    const lines = jsonLines(child.stdout);
    const { identity: childId } = (await lines.next()).value!;
    expect((await lines.next()).value).toMatchObject({ leading: true });
    await waitFor(() => ingressOf(server.get("services", "default", "before")) !== undefined, { what: "the child's first write" });

    await using follower = await startController(server, TOKENS[1]!, "node-b");
    await waitFor(() => follower.lb.status().election.holder === childId, { what: "the follower to observe the child's lease" });
    expect(follower.lb.status().leading).toBe(false);

    child.kill("SIGKILL");
    const killedAt = Date.now();
    expect(await child.exited).not.toBe(0);
    await waitFor(() => follower.lb.status().leading, { timeoutMs: 10_000, intervalMs: 5, what: "the follower to lead" });
    const t = takeover(follower.leaseCalls);
    const bound = LEASE.leaseDurationSeconds * 1000 + LEASE.retryPeriodMs;
    console.log(`follower took over ${Date.now() - killedAt} ms after the SIGKILL, its attempt ${t.attemptAt - t.lastRenew} ms after the child's last renewal (bound ${bound} ms)`);
    // The child's last renewal came before the kill; the follower took its Lease at its first attempt after the expiry.
    expect(t.lastRenew).toBeLessThanOrEqual(killedAt);
    expectTakeoverAtExpiry(t, childId);
    // That attempt came within leaseDuration + retryPeriod of the child's last renewal, with a generous 2x
    // allowance for a loaded box (two processes and an API server on two cores).
    expect(t.attemptAt - t.lastRenew).toBeLessThan(2 * bound);

    const lease = server.get("leases", "kube-system", "kubegate-lb-controller") as LeaseObj | undefined;
    expect(lease?.spec).toMatchObject({ holderIdentity: follower.lb.identity, leaseDurationSeconds: 2, leaseTransitions: 1 });
    server.create(lbService("after"));
    await waitFor(() => ingressOf(server.get("services", "default", "after")) !== undefined, { what: "the new leader's write" });
    expect(new Set(access.statusWrites().map((a) => `${a.name}:${a.user}`))).toEqual(new Set(["before:token:0", "after:token:1"]));
  }, 15_000);
});

describe("LeaderElector", () => {
  test("whileLeading refuses a write without a lease and never calls it", async () => {
    await using elector = new LeaderElector({ client: new FakeKube().client(), identity: "x", ...LEASE, log: silentLogger });
    let called = false;
    await expect(elector.whileLeading(async () => (called = true))).rejects.toThrow(NotLeaderError);
    expect(called).toBe(false);
  });

  test("inconsistent timings are refused", () => {
    const client = new FakeKube().client();
    expect(() => new LeaderElector({ client, identity: "x", leaseDurationSeconds: 1, renewDeadlineMs: 1_000 })).toThrow(
      'Invalid renew deadline "1000 ms": it must be shorter than the lease duration (1 s)',
    );
    expect(() => new LeaderElector({ client, identity: "x", leaseDurationSeconds: 2, renewDeadlineMs: 1_000, retryPeriodMs: 1_000 })).toThrow(
      'Invalid retry period "1000 ms": it must be positive and shorter than the renew deadline (1000 ms)',
    );
  });

  test("leaseExpired uses renewTime + leaseDurationSeconds; microTime has microseconds", () => {
    const at = Date.parse("2025-01-01T00:00:00Z");
    const rec = { holderIdentity: "x", renewTime: microTime(at), leaseDurationSeconds: 2 };
    expect(rec.renewTime).toBe("2025-01-01T00:00:00.000000Z");
    expect(leaseExpired(rec, at + 2_000, 15)).toBe(false);
    expect(leaseExpired(rec, at + 2_001, 15)).toBe(true);
    expect(leaseExpired({ holderIdentity: "x" }, at, 15)).toBe(true);
  });
});
