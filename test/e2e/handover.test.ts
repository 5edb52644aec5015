/**
 * Issue 14: the DaemonSet surge hand-over, end to end. Real kubegate processes take over from each other on one
 * node (a network namespace of the test's own, see handover/netns.ts) under constant HTTP, TCP and UDP load and
 * kubelet-like probes: three hand-overs in a row (v1 -> v2 -> v3 -> v4) with zero failed requests and zero resets;
 * the same with two worker processes per gateway; and a SIGKILL of the old gateway after its successor is ready,
 * after which the successor serves alone with nothing failing.
 *
 * The probe rules (scenario.ts `allowed`): /livez and the healthCheckNodePort answer 200 throughout; /readyz answers
 * 200 too except while a successor is starting, when it may answer 503 (the incumbent yields, so that the kubelet
 * cannot mark the new pod ready from the old process's answer). A refused or reset probe is a failure anywhere.
 */
import { describe, expect, test } from "bun:test";
import { runInNamespace } from "./handover/netns.ts";
import type { ScenarioResult } from "./handover/scenario.ts";

/** The parts of a result that must be clean, with the gateways' last log lines when they are not. */
function clean(r: ScenarioResult) {
  return {
    error: r.error,
    httpFailed: r.http?.failed,
    httpFailures: r.http?.failures,
    tcpFailed: r.tcp?.failed,
    tcpFailures: r.tcp?.failures,
    probeViolations: r.probes?.violations,
    ...(r.logs ? { logs: r.logs } : {}),
  };
}

const CLEAN = { error: undefined, httpFailed: 0, httpFailures: [], tcpFailed: 0, tcpFailures: [], probeViolations: [] };

describe("surge hand-over (issue 14)", () => {
  test("three hand-overs in a row under HTTP, TCP and UDP load: nothing fails, probes stay truthful", async () => {
    const r = await runInNamespace({ rounds: 3, lbController: true });
    expect(r.prepareNode).toEqual({ code: 0, output: expect.stringContaining("tcp_migrate_req set to 1") });
    expect(r.migrate).toBe(true);
    expect(clean(r)).toEqual(CLEAN);
    // Traffic really flowed through every phase, on both kinds of HTTP client and both kinds of TCP connection.
    expect(r.http!.ok).toBe(r.http!.requests);
    expect(r.http!.gets).toBeGreaterThan(1_000);
    expect(r.http!.posts).toBeGreaterThan(1_000);
    expect(r.tcp!.longLived).toBeGreaterThan(3);
    // Every old gateway handed over and exited 0; the last one was stopped without a successor.
    expect(r.gateways!.map((g) => [g.name, g.code, g.handedOver])).toEqual([
      ["v1", 0, true],
      ["v2", 0, true],
      ["v3", 0, true],
      ["v4", 0, false],
    ]);
    // UDP flows carry on through each hand-over (a datagram in flight as the old socket closes may be lost).
    expect(r.udp!.deadFlows).toBe(0);
    expect(r.udp!.answered).toBeGreaterThan(r.udp!.sent * 0.99);
    // The probes saw every phase, the yielding /readyz included.
    expect(r.probes!.byPhase["/readyz handing-over"]?.["200"]).toBeGreaterThan(0);
    expect(r.probes!.byPhase["/readyz successor-starting"]?.["503"]).toBeGreaterThan(0);
    // The LB controller's Lease passed from each old gateway to its successor as the old one stopped (released,
    // not expired: well under the 15 s lease duration).
    expect(r.leaseTakeoverMs).toHaveLength(3);
    for (const ms of r.leaseTakeoverMs!) expect(ms).toBeLessThan(5_000);
    // The last gateway holds the node and writes the state file.
    expect(r.finalState).toEqual({ writer: true, writes: expect.any(Number), role: "incumbent" });
    expect(r.finalState!.writes).toBeGreaterThan(0);
  }, 180_000);

  test("with --workers 2 the hand-over is as clean", async () => {
    const r = await runInNamespace({ rounds: 2, workers: 2 });
    expect(clean(r)).toEqual(CLEAN);
    expect(r.http!.ok).toBe(r.http!.requests);
    expect(r.gateways!.map((g) => g.handedOver)).toEqual([true, true, false]);
  }, 180_000);

  test("SIGKILL of the old gateway after its successor is ready: the successor serves on alone", async () => {
    const r = await runInNamespace({ rounds: 1, killLast: true });
    expect(r.error).toBeUndefined();
    expect(r.gateways!.map((g) => [g.name, g.signal])).toEqual([
      ["v1", "SIGKILL"],
      ["v2", "SIGTERM"],
    ]);
    // What v1 held died with it; from a second after the kill nothing fails, and traffic flows.
    expect(r.afterKill).toEqual({ http: 0, tcp: 0, httpOk: expect.any(Number) });
    expect(r.afterKill!.httpOk).toBeGreaterThan(200);
    expect(r.probes!.violations.filter((v) => v.phase !== "killed")).toEqual([]);
    expect(r.finalState).toEqual({ writer: true, writes: expect.any(Number), role: "incumbent" });
  }, 180_000);
});
