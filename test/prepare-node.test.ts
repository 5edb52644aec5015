/**
 * `kubegate prepare-node` (`src/prepare-node.ts`) and `tcpMigrateReq` (`src/config/host.ts`) on temp files standing
 * in for `/proc/sys/net/ipv4/tcp_migrate_req`, and on a sysctl no one may write (even root). The real setting is
 * only read, never written.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TCP_MIGRATE_REQ, tcpMigrateReq } from "../src/config/host.ts";
import { prepareNode } from "../src/prepare-node.ts";

let dir: string;
let path: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kubegate-prepare-node-"));
  path = join(dir, "tcp_migrate_req");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** prepareNode on `at`: its exit code and what it printed. */
function run(at: string): { code: number; printed: string[] } {
  const printed: string[] = [];
  const code = prepareNode(at, (line) => void printed.push(line));
  return { code, printed };
}

describe("tcpMigrateReq", () => {
  test.each([
    ["1\n", true],
    ["1", true],
    ["0\n", false],
    ["2\n", false],
  ])("%p reads as %p", (content, expected) => {
    writeFileSync(path, content);
    expect(tcpMigrateReq(path)).toBe(expected);
  });

  test("a missing file (not Linux, a kernel before 5.14) is undefined", () => {
    expect(tcpMigrateReq(join(dir, "absent"))).toBeUndefined();
  });

  test("by default it reads this network namespace's setting", () => {
    expect(TCP_MIGRATE_REQ).toBe("/proc/sys/net/ipv4/tcp_migrate_req");
    const expected = existsSync(TCP_MIGRATE_REQ) ? readFileSync(TCP_MIGRATE_REQ, "utf8").trim() === "1" : undefined;
    expect(tcpMigrateReq()).toBe(expected);
  });
});

describe("prepareNode", () => {
  test("0: writes 1, exit 0", () => {
    writeFileSync(path, "0\n");
    expect(run(path)).toEqual({
      code: 0,
      printed: ["prepare-node: net.ipv4.tcp_migrate_req set to 1 (connections queued on a closing listener move to the other gateway's)"],
    });
    expect(readFileSync(path, "utf8")).toBe("1\n");
  });

  test("already 1: exit 0, the file untouched", () => {
    writeFileSync(path, "1"); // a write would leave "1\n"
    expect(run(path)).toEqual({ code: 0, printed: ["prepare-node: net.ipv4.tcp_migrate_req is already 1"] });
    expect(readFileSync(path, "utf8")).toBe("1");
  });

  test("missing (a kernel before 5.14): exit 1, says which kernel has it; nothing is created", () => {
    const absent = join(dir, "absent");
    expect(run(absent)).toEqual({
      code: 1,
      printed: [`prepare-node: ${absent} cannot be read (Linux 5.14 or later has it): connections queued on a closing listener are reset at a hand-over`],
    });
    expect(existsSync(absent)).toBe(false);
  });

  test("a path inside a file cannot be read: exit 1 as missing", () => {
    writeFileSync(path, "0\n");
    const inside = join(path, "x");
    expect(run(inside)).toMatchObject({ code: 1, printed: [expect.stringContaining(`${inside} cannot be read`)] });
  });

  test("readable but not writable (a read-only sysctl, refused even to root): exit 1 with the reason", () => {
    const readOnly = "/proc/sys/kernel/ngroups_max"; // mode 0444: sysctl refuses writers whatever their privilege
    const before = readFileSync(readOnly, "utf8");
    expect(tcpMigrateReq(readOnly)).toBe(false);
    const { code, printed } = run(readOnly);
    expect(code).toBe(1);
    expect(printed).toHaveLength(1);
    expect(printed[0]).toMatch(/^prepare-node: cannot set net\.ipv4\.tcp_migrate_req=1 \((EACCES|EROFS)[^)]*\): run privileged, or set it on the node$/);
    expect(readFileSync(readOnly, "utf8")).toBe(before);
  });
});
