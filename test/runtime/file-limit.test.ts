/**
 * The file descriptor limit behind the runtime port: RLIMIT_NOFILE read and raised through libc (bun:ffi), the
 * `/proc/self/limits` fallback, the open descriptor count, and a bind that fails for want of a descriptor named
 * EMFILE (Bun 1.4 says only "Failed to listen at <host>").
 */
import { describe, expect, test } from "bun:test";
import { dlopen, FFIType } from "bun:ffi";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { atFileLimit, countOpenFiles, libcNames, parseProcLimits, raiseFileLimitWith, RLIMIT_NOFILE, type RlimitCalls } from "../../src/runtime/file-limit.ts";
import { rt } from "../../src/runtime/index.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** A libc whose limit is `limit` ([soft, hard]); `setrlimit` fails when `failSet`. */
function fakeLibc(limit: [bigint, bigint], failSet = false): RlimitCalls & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    getrlimit(resource, r) {
      calls.push(`get ${resource}`);
      r[0] = limit[0];
      r[1] = limit[1];
      return 0;
    },
    setrlimit(resource, r) {
      calls.push(`set ${resource} ${r[0]} ${r[1]}`);
      if (failSet) return -1;
      limit[0] = r[0]!;
      limit[1] = r[1]!;
      return 0;
    },
  };
}

describe("file-limit helpers", () => {
  test("raiseFileLimitWith sets the soft limit to the hard one and reports both", () => {
    const libc = fakeLibc([1024n, 524288n]);
    expect(raiseFileLimitWith(libc)).toEqual({ before: { soft: 1024, hard: 524288 }, after: { soft: 524288, hard: 524288 } });
    expect(libc.calls).toContain(`set ${RLIMIT_NOFILE} 524288 524288`);
  });

  test("nothing to raise when soft equals hard, or hard is infinite; a failed setrlimit is said", () => {
    expect(raiseFileLimitWith(fakeLibc([4096n, 4096n]))).toEqual({ before: { soft: 4096, hard: 4096 }, after: { soft: 4096, hard: 4096 } });
    const infinite = fakeLibc([256n, 0xffff_ffff_ffff_ffffn]);
    expect(raiseFileLimitWith(infinite)).toEqual({ before: { soft: 256, hard: Infinity }, after: { soft: 256, hard: Infinity } });
    expect(infinite.calls.some((c) => c.startsWith("set"))).toBe(false);
    expect(raiseFileLimitWith(fakeLibc([1024n, 2048n], true))).toEqual({
      before: { soft: 1024, hard: 2048 },
      after: { soft: 1024, hard: 2048 },
      error: "setrlimit(RLIMIT_NOFILE) failed",
    });
  });

  test("parseProcLimits reads the Max open files line", () => {
    const text = readFileSync("/proc/self/limits", "utf8");
    expect(parseProcLimits(text)).toEqual(rt.fileLimit());
    expect(parseProcLimits("Max open files            1024                 unlimited            files\n")).toEqual({ soft: 1024, hard: Infinity });
    expect(parseProcLimits("Max processes             1024                 1024                 processes\n")).toBeUndefined();
  });

  test("atFileLimit: at (or within the slack of) the soft limit, never when anything is unknown", () => {
    const limit = { soft: 300, hard: 300 };
    expect(atFileLimit(300, limit)).toBe(true);
    expect(atFileLimit(296, limit)).toBe(true);
    expect(atFileLimit(295, limit)).toBe(false);
    expect(atFileLimit(undefined, limit)).toBe(false);
    expect(atFileLimit(300, undefined)).toBe(false);
  });

  test("countOpenFiles leaves out the listing's own descriptor; a listing refused with EMFILE means all are open", () => {
    expect(countOpenFiles(() => 10, () => undefined)).toBe(9);
    const emfile = () => {
      throw Object.assign(new Error("EMFILE: too many open files, scandir '/proc/self/fd'"), { code: "EMFILE" });
    };
    expect(countOpenFiles(emfile, () => ({ soft: 300, hard: 300 }))).toBe(300);
    const enoent = () => {
      throw Object.assign(new Error("ENOENT"), { code: "ENOENT" });
    };
    expect(countOpenFiles(enoent, () => ({ soft: 300, hard: 300 }))).toBeUndefined();
  });

  test("libcNames tries glibc, then musl for the architecture", () => {
    expect(libcNames("x64").slice(0, 2)).toEqual(["libc.so.6", "libc.musl-x86_64.so.1"]);
    expect(libcNames("arm64")[1]).toBe("libc.musl-aarch64.so.1");
  });
});

describe("the Bun port", () => {
  test("fileLimit is the process's RLIMIT_NOFILE; openFiles counts /proc/self/fd and sees a new listener", () => {
    expect(rt.fileLimit()).toEqual(parseProcLimits(readFileSync("/proc/self/limits", "utf8"))!);
    const before = rt.openFiles()!;
    expect(before).toBe(readdirSync("/proc/self/fd").length - 1);
    const listener = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: { data() {} } });
    try {
      expect(rt.openFiles()).toBe(before + 1);
    } finally {
      listener.stop(true);
    }
  });

  test("raiseFileLimit raises a lowered soft limit back to the hard one", () => {
    const { hard } = rt.fileLimit()!;
    // Lower this test process's soft limit through libc directly, then let the port raise it.
    const { symbols } = dlopen("libc.so.6", { setrlimit: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } });
    const soft = Math.min(hard, 4096) - 1;
    expect(symbols.setrlimit(RLIMIT_NOFILE, new BigUint64Array([BigInt(soft), BigInt(hard)]))).toBe(0);
    expect(rt.fileLimit()).toEqual({ soft, hard });
    expect(rt.raiseFileLimit()).toEqual({ before: { soft, hard }, after: { soft: hard, hard } });
    expect(rt.fileLimit()).toEqual({ soft: hard, hard });
  });

  test("under `ulimit -n 40`, a listener that finds no descriptor fails with code EMFILE, not a bare message", async () => {
    const script = `
      import { rt } from "./src/runtime/index.ts";
      const out = { limit: rt.fileLimit(), bound: 0, error: undefined };
      try {
        for (let i = 0; i < 100; i++) (rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: { data() {} } }), out.bound++);
      } catch (err) {
        out.error = { message: err.message, code: err.code, errno: err.errno };
      }
      console.log(JSON.stringify(out));
      process.exit(0);
    `;
    const child = Bun.spawn(["bash", "-c", `ulimit -n 40; exec "${process.execPath}" -e '${script}'`], { cwd: root, stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    const out = JSON.parse(stdout) as { limit: unknown; bound: number; error: unknown };
    expect(out.limit).toEqual({ soft: 40, hard: 40 });
    expect(out.bound).toBeGreaterThan(0);
    expect(out.bound).toBeLessThan(40);
    expect(out.error).toEqual({ message: "Failed to listen at 127.0.0.1", code: "EMFILE", errno: 24 });
  });
});
