/**
 * Leader election against the test API server: one writer, takeover after a SIGKILL within
 * leaseDuration + retryPeriod, graceful release, and no write from a deposed leader.
 *
 * Controllers authenticate with different tokens (`token:0`, `token:1`), and an authorizer records who asked
 * for what: that is how the tests tell the writers apart.
 */
import { describe, expect, test } from "bun:test";
import { startLbController, type LbController } from "../../src/controller/index.ts";
import { leaseExpired, LeaderElector, microTime, NotLeaderError } from "../../src/controller/lease.ts";
import type { KubeClient } from "../../src/kube/client.ts";
import { silentLogger } from "../../src/log.ts";
import { startApiServer, type AccessRequest, type TestApiServer } from "../support/apiserver.ts";
import { waitFor } from "../support/wait.ts";
import { BOOKMARK_MS, clientFor, fastTuning } from "../support/kube-sinks.ts";
import { ingressOf, lbService, rawNode } from "../support/controller-objects.ts";
import { jsonLines } from "../support/child-io.ts";

const LEASE = { leaseDurationSeconds: 2, renewDeadlineMs: 1_500, retryPeriodMs: 300 };
const TOKENS = ["token-a", "token-b"];

/** Records every resource request with its user; `deny` refuses some. */
function recordAccess(server: TestApiServer) {
  const log: (AccessRequest & { at: number })[] = [];
  let deny: (a: AccessRequest) => boolean = () => false;
  server.setAuthorizer((a) => {
    log.push({ ...a, at: performance.now() });
    return !deny(a);
  });
  return {
    log,
    setDeny(f: (a: AccessRequest) => boolean) {
      deny = f;
    },
    statusWrites: (from = 0) => log.slice(from).filter((a) => a.resource === "services" && a.subresource === "status" && (a.verb === "patch" || a.verb === "update")),
  };
}

async function startController(server: TestApiServer, token: string, node: string): Promise<{ lb: LbController; client: KubeClient } & AsyncDisposable> {
  const client = await clientFor(server, { token });
  const lb = startLbController({ client, nodeName: node, lease: LEASE, reflector: fastTuning, log: silentLogger });
  return {
    lb,
    client,
    async [Symbol.asyncDispose]() {
      await lb[Symbol.asyncDispose]();
      client.close();
    },
  };
}

const leaseOf = (server: TestApiServer) =>
  server.get("leases", "kube-system", "kubegate-lb-controller") as { spec: Record<string, unknown>; metadata: { resourceVersion: string } } | undefined;


describe("leader election", () => {
  test("after a SIGKILL of the leader, the follower takes over within leaseDuration + retryPeriod", async () => {
    await using server = await startApiServer({ tokens: TOKENS, bookmarkIntervalMs: BOOKMARK_MS });
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
    const killedAt = performance.now();
    expect(await child.exited).not.toBe(0);
    await waitFor(() => follower.lb.status().leading, { timeoutMs: 5_000, intervalMs: 5, what: "the follower to lead" });
    const tookMs = performance.now() - killedAt;
    console.log(`follower took over ${tookMs.toFixed(0)} ms after the SIGKILL (bound ${LEASE.leaseDurationSeconds * 1000 + LEASE.retryPeriodMs} ms)`);
    expect(tookMs).toBeLessThanOrEqual(LEASE.leaseDurationSeconds * 1000 + LEASE.retryPeriodMs);

    expect(leaseOf(server)?.spec).toMatchObject({ holderIdentity: follower.lb.identity, leaseDurationSeconds: 2, leaseTransitions: 1 });
    server.create(lbService("after"));
    await waitFor(() => ingressOf(server.get("services", "default", "after")) !== undefined, { what: "the new leader's write" });
    expect(new Set(access.statusWrites().map((a) => `${a.name}:${a.user}`))).toEqual(new Set(["before:token:0", "after:token:1"]));
  }, 15_000);

  test("a deposed leader makes no write after losing the lease; only the leader ever writes", async () => {
    await using server = await startApiServer({ tokens: TOKENS, bookmarkIntervalMs: BOOKMARK_MS });
    const access = recordAccess(server);
    server.create(rawNode("node-a", ["10.0.0.1"]));
    await using a = await startController(server, TOKENS[0]!, "node-a");
    await waitFor(() => a.lb.status().leading, { what: "A to lead" });
    await using b = await startController(server, TOKENS[1]!, "node-b");
    await waitFor(() => b.lb.status().election.holder === a.lb.identity, { what: "B to observe A's lease" });
    server.create(lbService("one"));
    await waitFor(() => ingressOf(server.get("services", "default", "one")) !== undefined, { what: "A's write" });
    expect(access.statusWrites().map((x) => x.user)).toEqual(["token:0"]);

    // A's renewals are refused from now on: it must stop leading at its next renewal and write nothing more.
    const cut = access.log.length;
    access.setDeny((x) => x.user === "token:0" && x.resource === "leases" && x.verb !== "get");
    await waitFor(() => !a.lb.status().leading, { timeoutMs: 2_000, what: "A to stop leading" });
    // A change that a still-writing A would act on at once.
    server.create(lbService("two"));
    await waitFor(() => b.lb.status().leading, { timeoutMs: 5_000, what: "B to take over" });
    await waitFor(() => ingressOf(server.get("services", "default", "two")) !== undefined, { what: "B's write" });
    expect(access.statusWrites(cut).map((x) => `${x.name}:${x.user}`)).toEqual(["two:token:1"]);
    expect(access.log.slice(cut).some((x) => x.user === "token:0" && x.resource === "leases" && x.verb === "patch")).toBe(true);
    expect(a.lb.status()).toMatchObject({ leading: false, election: { holder: b.lb.identity } });
    expect(a.lb.status().writes).toBe(1);
  }, 15_000);

  test("a graceful stop releases the lease: the follower takes over well before it would expire", async () => {
    await using server = await startApiServer({ tokens: TOKENS, bookmarkIntervalMs: BOOKMARK_MS });
    server.create(rawNode("node-a", ["10.0.0.1"]));
    const a = await startController(server, TOKENS[0]!, "node-a");
    await waitFor(() => a.lb.status().leading, { what: "A to lead" });
    const first = leaseOf(server)!.spec;
    expect(first).toEqual({
      holderIdentity: a.lb.identity,
      leaseDurationSeconds: 2,
      acquireTime: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/),
      renewTime: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/),
      leaseTransitions: 0,
    });
    expect(a.lb.identity).toStartWith("node-a_");
    await using b = await startController(server, TOKENS[1]!, "node-b");
    await waitFor(() => b.lb.status().election.holder === a.lb.identity, { what: "B to observe A" });
    const stoppedAt = performance.now();
    await a[Symbol.asyncDispose]();
    await waitFor(() => b.lb.status().leading, { what: "B to lead" });
    expect(performance.now() - stoppedAt).toBeLessThan(LEASE.leaseDurationSeconds * 1000);
    expect(leaseOf(server)?.spec).toMatchObject({ holderIdentity: b.lb.identity, leaseTransitions: 1 });
  }, 15_000);
});

describe("LeaderElector", () => {
  test("whileLeading refuses a write without a lease and never calls it", async () => {
    await using server = await startApiServer();
    using client = await clientFor(server);
    await using elector = new LeaderElector({ client, identity: "x", ...LEASE, log: silentLogger });
    let called = false;
    await expect(elector.whileLeading(async () => (called = true))).rejects.toThrow(NotLeaderError);
    expect(called).toBe(false);
  });

  test("inconsistent timings are refused", async () => {
    await using server = await startApiServer();
    using client = await clientFor(server);
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
