/**
 * The file descriptor limit on Deno: libc's getrlimit/setrlimit through `Deno.dlopen` (needs `--allow-ffi`, which
 * `-A` gives; libc opened on first use), else the `/proc/self/limits` line (`--allow-read`), and the open
 * descriptors counted in `/proc/self/fd`. Measured on Deno 2.9: Deno already raises the soft limit to the hard
 * one as it starts, so without FFI permission the limit is still read and nothing is lost.
 */
import { countOpenFiles, fileLimitCalls, libcNames, parseProcLimits, type RlimitCalls } from "../file-limit.ts";
import type { FileLimit } from "../types.ts";

interface DenoFfi {
  dlopen(
    path: string,
    symbols: Record<"getrlimit" | "setrlimit", { parameters: ["i32", "buffer"]; result: "i32" }>,
  ): { symbols: Record<"getrlimit" | "setrlimit", (resource: number, rlimit: BigUint64Array) => number> };
  readTextFileSync(path: string): string;
  readDirSync(path: string): Iterable<unknown>;
  build: { arch: string };
  permissions: { querySync(descriptor: { name: "ffi" } | { name: "read"; path: string }): { state: string } };
}
const Deno = (globalThis as unknown as { Deno: DenoFfi }).Deno;

/** Whether a permission is granted: asking without it would prompt on a terminal (and block startup). */
function granted(descriptor: { name: "ffi" } | { name: "read"; path: string }): boolean {
  try {
    return Deno.permissions.querySync(descriptor).state === "granted";
  } catch {
    return false;
  }
}

/** libc, once opened (null: it could not be, e.g. no `--allow-ffi`). */
let libc: RlimitCalls | null | undefined;

function openLibc(): RlimitCalls | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (!granted({ name: "ffi" })) return libc;
  const signature = { parameters: ["i32", "buffer"], result: "i32" } as { parameters: ["i32", "buffer"]; result: "i32" };
  for (const name of libcNames(Deno.build.arch)) {
    try {
      const { symbols } = Deno.dlopen(name, { getrlimit: signature, setrlimit: signature });
      return (libc = { getrlimit: symbols.getrlimit, setrlimit: symbols.setrlimit });
    } catch {
      // Not under this name, or no permission: try the next.
    }
  }
  return libc;
}

function procLimit(): FileLimit | undefined {
  if (!granted({ name: "read", path: "/proc/self/limits" })) return undefined;
  try {
    return parseProcLimits(Deno.readTextFileSync("/proc/self/limits"));
  } catch {
    return undefined;
  }
}

export const { fileLimit, raiseFileLimit } = fileLimitCalls(openLibc, procLimit, "libc could not be loaded (Deno.dlopen needs --allow-ffi)");

/** Open descriptors of this process, from `/proc/self/fd` (the soft limit when even listing it fails with EMFILE). */
export const openFiles = (): number | undefined =>
  granted({ name: "read", path: "/proc/self/fd" }) ? countFds() : undefined;

const countFds = (): number | undefined =>
  countOpenFiles(() => {
    let n = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
    return n;
  }, fileLimit);
