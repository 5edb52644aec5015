import { describe, expect, test } from "bun:test";
import { claimPort, compareRank, tcpPortOfClaim } from "../../src/model/claims.ts";

describe("claims", () => {
  test("http and tcp claim the same TCP port, udp another; the TCP port reads back", () => {
    expect(claimPort(80, "http")).toBe(claimPort(80, "tcp"));
    expect(claimPort(80, "udp")).not.toBe(claimPort(80, "tcp"));
    expect(tcpPortOfClaim(claimPort(30080, "tcp"))).toBe(30080);
    expect(tcpPortOfClaim(claimPort(53, "udp"))).toBeUndefined();
  });

  test("the older Service wins, then the name, NodePort before LoadBalancer, then the port order", () => {
    const base = { created: 1, service: "ns/b", type: 0, index: 1 } as const;
    expect(compareRank(base, { ...base, created: 2 })).toBeLessThan(0);
    expect(compareRank(base, { ...base, service: "ns/a" })).toBeGreaterThan(0);
    expect(compareRank(base, { ...base, type: 1 })).toBeLessThan(0);
    expect(compareRank(base, { ...base, index: 0 })).toBeGreaterThan(0);
    expect(compareRank(base, { ...base })).toBe(0);
  });
});
