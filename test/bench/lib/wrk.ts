/** wrk (closed-loop HTTP load): its command line and its report, read from wrk-report.lua's JSON line. */
import { fileURLToPath } from "node:url";

/** The Lua script that makes wrk print its summary as JSON. */
export const wrkReportScript = fileURLToPath(new URL("./wrk-report.lua", import.meta.url));

/** What one wrk run measured. */
export interface WrkResult {
  /** Responses received (any status). */
  readonly requests: number;
  readonly durationS: number;
  readonly rps: number;
  readonly bytes: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Socket errors plus non-2xx/3xx responses. */
  readonly errors: number;
  readonly errorDetail: { readonly connect: number; readonly read: number; readonly write: number; readonly status: number; readonly timeout: number };
}

/** The load a wrk run applies. */
export interface WrkLoad {
  readonly url: string;
  readonly connections: number;
  readonly threads: number;
  readonly durationS: number;
  readonly headers?: readonly string[];
}

/**
 * wrk's argv for `load`.
 * @example wrkArgs({ url: "http://127.0.0.1:8080/", connections: 50, threads: 1, durationS: 10 })
 */
export function wrkArgs(load: WrkLoad): string[] {
  const args = ["wrk", "-t", String(load.threads), "-c", String(load.connections), "-d", `${load.durationS}s`, "--timeout", "5s", "-s", wrkReportScript];
  for (const h of load.headers ?? []) args.push("-H", h);
  args.push(load.url);
  return args;
}

/**
 * Parse wrk's stdout (with wrk-report.lua loaded).
 * @throws {Error} when the JSON line is missing.
 */
export function parseWrkOutput(stdout: string): WrkResult {
  const line = stdout.split("\n").find((l) => l.startsWith("WRK_JSON "));
  if (!line) throw new Error(`No WRK_JSON line in wrk output: "${stdout.trim().slice(-300)}"`);
  const j = JSON.parse(line.slice("WRK_JSON ".length)) as Record<string, number>;
  const n = (k: string) => j[k] ?? 0;
  const durationS = n("duration_us") / 1e6;
  const errorDetail = { connect: n("connect"), read: n("read"), write: n("write"), status: n("status"), timeout: n("timeout") };
  return {
    requests: n("requests"),
    durationS,
    rps: durationS > 0 ? n("requests") / durationS : 0,
    bytes: n("bytes"),
    p50Ms: n("p50_us") / 1000,
    p90Ms: n("p90_us") / 1000,
    p99Ms: n("p99_us") / 1000,
    maxMs: n("max_us") / 1000,
    errors: Object.values(errorDetail).reduce((a, b) => a + b, 0),
    errorDetail,
  };
}
