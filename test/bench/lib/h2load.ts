/**
 * h2load as an open-loop (rate-paced) HTTP/1.1 load generator: `--rps` per client, and per-request
 * latencies from its `--log-file` (one line per request: start time in µs, status, duration in µs).
 */
import { percentileSorted } from "./stats.ts";

/** The load of a fixed-rate run. */
export interface RateLoad {
  readonly url: string;
  /** Total requests per second, spread evenly over `clients` connections. */
  readonly rate: number;
  readonly clients: number;
  readonly durationS: number;
  readonly logFile: string;
}

/** What one fixed-rate run measured (after the warm-up window). */
export interface RateResult {
  /** Requests in the log, warm-up included (for CPU per request over the whole run). */
  readonly totalRequests: number;
  /** Requests after the warm-up window. */
  readonly requests: number;
  readonly achievedRps: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Responses with a status outside 2xx/3xx, plus requests h2load counted as failed. */
  readonly errors: number;
}

/**
 * h2load's argv for `load`.
 * @example h2loadArgs({ url: "http://127.0.0.1:8080/", rate: 10000, clients: 50, durationS: 10, logFile: "/tmp/x.log" })
 */
export function h2loadArgs(load: RateLoad): string[] {
  const perClient = Math.max(0.1, load.rate / load.clients);
  return ["h2load", "--h1", "-t", "1", "-c", String(load.clients), "--rps", perClient.toFixed(2), "-D", String(load.durationS), "--log-file", load.logFile, load.url];
}

/** The `failed` count from h2load's "requests:" summary line (0 when absent). */
export function h2loadFailed(stdout: string): number {
  const m = /requests: .*?(\d+) failed/.exec(stdout);
  return m ? Number(m[1]) : 0;
}

/**
 * Latencies from h2load's log, skipping requests that started within `warmupS` of the first one.
 * `windowS` is the measured window used for the achieved rate.
 */
export function parseH2loadLog(text: string, warmupS: number, windowS: number, failed = 0): RateResult {
  const rows: { start: number; status: number; dur: number }[] = [];
  for (const line of text.split("\n")) {
    const [start, status, dur] = line.split("\t").map(Number);
    if (start === undefined || status === undefined || dur === undefined || !Number.isFinite(dur)) continue;
    rows.push({ start, status, dur });
  }
  const first = rows.reduce((m, r) => Math.min(m, r.start), Number.POSITIVE_INFINITY);
  const kept = rows.filter((r) => r.start >= first + warmupS * 1e6);
  const durs = kept.map((r) => r.dur / 1000).sort((a, b) => a - b);
  const bad = kept.filter((r) => r.status < 200 || r.status >= 400).length;
  return {
    totalRequests: rows.length,
    requests: kept.length,
    achievedRps: windowS > 0 ? kept.length / windowS : 0,
    p50Ms: percentileSorted(durs, 50),
    p90Ms: percentileSorted(durs, 90),
    p99Ms: percentileSorted(durs, 99),
    maxMs: durs.length ? durs[durs.length - 1]! : Number.NaN,
    errors: bad + failed,
  };
}
