/**
 * The file descriptor limit on Bun: libc's getrlimit/setrlimit through `bun:ffi` (libc opened on first use), the
 * `/proc/self/limits` line where libc cannot be opened, and the open descriptors counted in `/proc/self/fd`.
 * Measured on Bun 1.4: Bun already raises the soft limit to the hard one as it starts, so
 * {@link raiseFileLimit} usually finds nothing to do; it still does it where Bun did not (and says so).
 */
import { dlopen, FFIType } from "bun:ffi";
import { readdirSync, readFileSync } from "node:fs";
import { countOpenFiles, fileLimitCalls, libcNames, parseProcLimits, type RlimitCalls } from "../file-limit.ts";
import type { FileLimit } from "../types.ts";

/** libc, once opened (null: it could not be). */
let libc: RlimitCalls | null | undefined;

function openLibc(): RlimitCalls | null {
  if (libc !== undefined) return libc;
  libc = null;
  const signature = { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } as const;
  for (const name of libcNames(process.arch)) {
    try {
      const { symbols } = dlopen(name, { getrlimit: signature, setrlimit: signature });
      return (libc = {
        getrlimit: (resource, r) => symbols.getrlimit(resource, r),
        setrlimit: (resource, r) => symbols.setrlimit(resource, r),
      });
    } catch {
      // Not under this name: try the next.
    }
  }
  return libc;
}

function procLimit(): FileLimit | undefined {
  try {
    return parseProcLimits(readFileSync("/proc/self/limits", "utf8"));
  } catch {
    return undefined;
  }
}

export const { fileLimit, raiseFileLimit } = fileLimitCalls(openLibc, procLimit, "libc could not be loaded (bun:ffi)");

/** Open descriptors of this process, from `/proc/self/fd` (the soft limit when even listing it fails with EMFILE). */
export const openFiles = (): number | undefined => countOpenFiles(() => readdirSync("/proc/self/fd").length, fileLimit);
