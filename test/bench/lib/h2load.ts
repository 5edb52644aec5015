/**
 * h2load as an open-loop (rate-paced) HTTP/1.1 load generator: `--rps` per client, and per-request
 * latencies from its `--log-file` (one line per request: start time in µs, status, duration in µs); and as a
 * closed-loop HTTP/2 (h2c, prior knowledge) load generator, read from its summary.
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

/** The closed-loop HTTP/2 load of the h2c case: issue 15's `h2load -c16 -m32`. */
export interface H2cLoad {
  /** A URL, or h2load's arguments ending with one (e.g. a gRPC call's `-H` headers and `-d` body first). */
  readonly request: string | readonly string[];
  readonly clients: number;
  /** Streams in flight per connection. */
  readonly streams: number;
  readonly durationS: number;
}

/** Issue 15's h2c load shape: 16 connections, 32 streams in flight on each. */
export const h2cClients = 16;
export const h2cStreams = 32;

/**
 * h2load's argv for a closed-loop HTTP/2 run of `durationS` (one thread). No `--log-file`: writing a line per
 * request costs h2load more CPU than serving it costs a fast origin (the load core would be the limit), so there
 * are no percentiles: the summary gives the mean.
 * @example h2cLoadArgs({ request: "http://127.0.0.1:8080/", clients: 16, streams: 32, durationS: 5 })
 */
export function h2cLoadArgs(load: H2cLoad): string[] {
  const request = typeof load.request === "string" ? [load.request] : load.request;
  return ["h2load", "-t", "1", "-c", String(load.clients), "-m", String(load.streams), "-D", String(load.durationS), ...request];
}

/** What a closed-loop h2load run reports. */
export interface H2loadSummary {
  readonly rps: number;
  /** Requests completed. */
  readonly requests: number;
  readonly meanMs: number;
  /** Failed requests (errors and timeouts included) plus responses with a status outside 2xx/3xx. */
  readonly errors: number;
}

/**
 * The summary h2load prints at the end of a run.
 * @throws {Error} when the output has no "finished in" line (h2load could not connect, or was killed).
 */
export function parseH2loadSummary(stdout: string): H2loadSummary {
  const fin = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(stdout);
  const req = /requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed/.exec(stdout);
  const codes = /status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  const time = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b/.exec(stdout);
  if (!fin || !req) throw new Error(`Unexpected h2load output: "${stdout.trim().slice(-300)}"`);
  const unit = time?.[2] === "us" ? 1e-3 : time?.[2] === "s" ? 1e3 : 1;
  return {
    rps: Number(fin[1]),
    requests: Number(req[1]),
    meanMs: time ? Number(time[1]) * unit : Number.NaN,
    errors: Number(req[2]) + (codes ? Number(codes[1]) + Number(codes[2]) : 0),
  };
}
