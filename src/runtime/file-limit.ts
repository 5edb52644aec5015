/**
 * The file descriptor limit, shared by the Bun and Deno ports: RLIMIT_NOFILE through libc's
 * getrlimit/setrlimit (each runtime's FFI, given here as {@link RlimitCalls}), with `/proc/self/limits`
 * as the fallback for reading it, and the EMFILE error a bind gets when the limit is reached.
 */
import type { FileLimit, FileLimitRaise } from "./types.ts";

/** RLIMIT_NOFILE's resource number: 7 on Linux (x86_64, arm64 and the rest but alpha/mips/sparc), 8 on macOS and the BSDs. */
export const RLIMIT_NOFILE = (globalThis as { process?: { platform?: string } }).process?.platform === "darwin" ? 8 : 7;

/** RLIM_INFINITY as the u64 the kernel reports. */
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/** libc's getrlimit/setrlimit on a `struct rlimit` of two u64 (`rlim_cur`, `rlim_max`); each returns 0 or -1. */
export interface RlimitCalls {
  getrlimit(resource: number, rlimit: BigUint64Array): number;
  setrlimit(resource: number, rlimit: BigUint64Array): number;
}

/** The shared objects libc may be found as, first match wins: glibc, musl (alpine), macOS. */
export function libcNames(arch: string): string[] {
  const musl = arch === "x64" || arch === "x86_64" ? "x86_64" : arch === "arm64" ? "aarch64" : arch;
  return ["libc.so.6", `libc.musl-${musl}.so.1`, "libc.so", "libSystem.B.dylib"];
}

const toNumber = (v: bigint): number => (v === RLIM_INFINITY ? Number.POSITIVE_INFINITY : Number(v));

/** The limit through getrlimit; undefined when it fails. */
export function getFileLimit(libc: RlimitCalls): FileLimit | undefined {
  const r = new BigUint64Array(2);
  if (libc.getrlimit(RLIMIT_NOFILE, r) !== 0) return undefined;
  return { soft: toNumber(r[0]!), hard: toNumber(r[1]!) };
}

/**
 * Raise the soft limit to the hard one through setrlimit. An infinite hard limit (macOS) is not a valid soft
 * limit for files there, so the soft limit is left alone in that case.
 */
export function raiseFileLimitWith(libc: RlimitCalls): FileLimitRaise | undefined {
  const r = new BigUint64Array(2);
  if (libc.getrlimit(RLIMIT_NOFILE, r) !== 0) return undefined;
  const before = { soft: toNumber(r[0]!), hard: toNumber(r[1]!) };
  if (r[0] === r[1] || r[1] === RLIM_INFINITY) return { before, after: before };
  r[0] = r[1]!;
  if (libc.setrlimit(RLIMIT_NOFILE, r) !== 0) return { before, after: before, error: "setrlimit(RLIMIT_NOFILE) failed" };
  return { before, after: getFileLimit(libc) ?? before };
}

/**
 * The "Max open files" line of `/proc/<pid>/limits`; undefined when absent.
 *
 * @example parseProcLimits("Max open files            1024                 524288               files") // { soft: 1024, hard: 524288 }
 */
export function parseProcLimits(text: string): FileLimit | undefined {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (m === null) return undefined;
  const value = (s: string) => (s === "unlimited" ? Number.POSITIVE_INFINITY : Number(s));
  const soft = value(m[1]!);
  const hard = value(m[2]!);
  return Number.isNaN(soft) || Number.isNaN(hard) ? undefined : { soft, hard };
}

/**
 * Whether a bind error with no errno (Bun's bare "Failed to listen at ...") came from the file descriptor limit:
 * the process holds (nearly) as many descriptors as it may. `slack` allows for descriptors a runtime closes
 * again while failing (a socket made, then given up).
 *
 * @example atFileLimit(298, { soft: 300, hard: 300 }) // true
 */
export function atFileLimit(open: number | undefined, limit: FileLimit | undefined, slack = 4): boolean {
  return open !== undefined && limit !== undefined && Number.isFinite(limit.soft) && open >= limit.soft - slack;
}

/**
 * Count the entries of `/proc/self/fd` with `list` (a readdir that also holds one descriptor while it runs, not
 * counted). When the listing itself fails with EMFILE the process holds every descriptor it may: the soft limit.
 */
export function countOpenFiles(list: () => number, limit: () => FileLimit | undefined): number | undefined {
  try {
    return Math.max(0, list() - 1);
  } catch (err) {
    if ((err as { code?: unknown }).code === "EMFILE" || /os error 24\b/.test(String(err))) return limit()?.soft;
    return undefined;
  }
}

/** Give `err` the code and errno of EMFILE ("too many open files"), as the runtime's other bind errors carry theirs. */
export function asEmfile(err: unknown): unknown {
  if (err instanceof Error) return Object.assign(err, { code: "EMFILE", errno: 24 });
  return err;
}

/**
 * `fileLimit` and `raiseFileLimit` of a runtime from its two ways of reading the limit: libc (`openLibc`, null when
 * it cannot be loaded) and `/proc/self/limits` (`procLimit`). `noLibc` says why the limit could not be raised.
 */
export function fileLimitCalls(
  openLibc: () => RlimitCalls | null,
  procLimit: () => FileLimit | undefined,
  noLibc: string,
): { fileLimit(): FileLimit | undefined; raiseFileLimit(): FileLimitRaise | undefined } {
  return {
    /** RLIMIT_NOFILE through libc, else from `/proc/self/limits`; undefined when neither can be read. */
    fileLimit() {
      const c = openLibc();
      return (c === null ? undefined : getFileLimit(c)) ?? procLimit();
    },
    /** Raise the soft limit to the hard one through libc (without libc: the limit as it is, and why not). */
    raiseFileLimit() {
      const c = openLibc();
      if (c !== null) return raiseFileLimitWith(c);
      const limit = procLimit();
      return limit && (limit.soft === limit.hard ? { before: limit, after: limit } : { before: limit, after: limit, error: noLibc });
    },
  };
}
