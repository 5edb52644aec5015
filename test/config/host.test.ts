import { describe, expect, test } from "bun:test";
import { availableParallelism } from "node:os";
import { availableCpus, cpuQuota } from "../../src/config/host.ts";

describe("--workers auto: the CPUs this process may use", () => {
  test("a cgroup v2 cpu.max line gives the CPUs it allows; max or nothing gives none", () => {
    expect(cpuQuota("200000 100000\n")).toBe(2);
    expect(cpuQuota("150000 100000")).toBe(1.5);
    expect(cpuQuota("max 100000\n")).toBeUndefined();
    expect(cpuQuota(undefined)).toBeUndefined();
    expect(cpuQuota("")).toBeUndefined();
    expect(cpuQuota("0 100000")).toBeUndefined();
    expect(cpuQuota("junk")).toBeUndefined();
  });

  test("the quota bounds the affinity, rounded up, and is at least 1", () => {
    const affinity = Math.max(1, availableParallelism());
    expect(availableCpus(() => undefined)).toBe(affinity);
    expect(availableCpus(() => "max 100000")).toBe(affinity);
    expect(availableCpus(() => "50000 100000")).toBe(1);
    expect(availableCpus(() => "10000 100000")).toBe(1);
    expect(availableCpus(() => `${(affinity + 8) * 100000} 100000`)).toBe(affinity);
    if (affinity >= 2) expect(availableCpus(() => "150000 100000")).toBe(2);
  });
});
