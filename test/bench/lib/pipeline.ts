/**
 * The pipelined small-message load (wrk cannot make it): its client's command line and flags, the
 * latency histogram it keeps, and its report, one JSON line like wrk-report.lua's. The client itself
 * is `test/bench/load/pipeline-client.ts`; the backend that echoes is `test/bench/backends/echo-server.ts`.
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** The client script. */
export const pipelineClientScript = fileURLToPath(new URL("../load/pipeline-client.ts", import.meta.url));

/** The load one client run applies. */
export interface PipelineLoad {
  readonly host: string;
  readonly port: number;
  /** TCP connections, each to the echo service behind the proxy. */
  readonly connections: number;
  /** Messages in flight per connection: a new one is written (on its own) as each one comes back. */
  readonly depth: number;
  /** Bytes per message. */
  readonly size: number;
  readonly durationS: number;
}

/** What one client run measured. */
export interface PipelineResult {
  /** Messages sent and echoed back in full during the run. */
  readonly messages: number;
  readonly durationS: number;
  /** messages / durationS. */
  readonly mps: number;
  /** Bytes received (the echoes). */
  readonly bytes: number;
  /** Separate writes the client made (one per message). */
  readonly writes: number;
  /** Reads the client got (the proxy's writes towards it, as coalesced by the kernel). */
  readonly reads: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Connections that failed or closed early, plus echoes that did not match what was sent. */
  readonly errors: number;
}

/**
 * The client's argv (`runtime` runs the script).
 * @example pipelineArgs("bun", { host: "127.0.0.1", port: 8080, connections: 16, depth: 16, size: 100, durationS: 10 })
 */
export function pipelineArgs(runtime: string, load: PipelineLoad): string[] {
  return [
    runtime, pipelineClientScript,
    "--host", load.host, "--port", String(load.port),
    "--connections", String(load.connections), "--depth", String(load.depth), "--size", String(load.size),
    "--duration", String(load.durationS),
  ];
}

/**
 * The client's flags back into a load (the inverse of {@link pipelineArgs} without the first two words).
 * @throws {Error} naming the bad flag.
 */
export function parsePipelineArgs(argv: readonly string[]): PipelineLoad {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      connections: { type: "string", default: "16" },
      depth: { type: "string", default: "16" },
      size: { type: "string", default: "100" },
      duration: { type: "string", default: "10" },
    },
  });
  const int = (name: string, text: string | undefined, min: number, max: number): number => {
    const v = Number(text);
    if (!Number.isInteger(v) || v < min || v > max) throw new Error(`Invalid --${name} "${text}": expected an integer from ${min} to ${max}`);
    return v;
  };
  const durationS = Number(values.duration);
  if (!(durationS > 0 && durationS <= 600)) throw new Error(`Invalid --duration "${values.duration}": expected seconds from 0 to 600`);
  return {
    host: values.host,
    port: int("port", values.port, 1, 65_535),
    connections: int("connections", values.connections, 1, 4_096),
    depth: int("depth", values.depth, 1, 4_096),
    size: int("size", values.size, 1, 65_536),
    durationS,
  };
}

/**
 * Message latencies in 10 µs buckets up to 1 s (one overflow bucket above): constant memory however many
 * messages a run moves, exact enough for p50/p99 on loopback.
 */
export class LatencyHistogram {
  static readonly bucketUs = 10;
  static readonly buckets = 100_000;
  readonly #counts = new Uint32Array(LatencyHistogram.buckets + 1);
  #n = 0;
  #maxUs = 0;

  /** Count one latency, in µs. */
  record(us: number): void {
    const i = Math.min(LatencyHistogram.buckets, Math.max(0, Math.floor(us / LatencyHistogram.bucketUs)));
    this.#counts[i]!++;
    this.#n++;
    if (us > this.#maxUs) this.#maxUs = us;
  }

  get count(): number {
    return this.#n;
  }

  get maxUs(): number {
    return this.#maxUs;
  }

  /** The upper edge (µs) of the bucket holding the nearest-rank percentile `p` (0..100); NaN when empty. */
  percentileUs(p: number): number {
    if (this.#n === 0) return Number.NaN;
    const rank = Math.min(this.#n, Math.max(1, Math.ceil((p / 100) * this.#n)));
    let seen = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) return i === LatencyHistogram.buckets ? this.#maxUs : (i + 1) * LatencyHistogram.bucketUs;
    }
    return this.#maxUs;
  }
}

/** The report line's prefix. */
export const pipelineJsonPrefix = "PIPE_JSON ";

/**
 * Parse the client's stdout.
 * @throws {Error} when the JSON line is missing.
 */
export function parsePipelineOutput(stdout: string): PipelineResult {
  const line = stdout.split("\n").find((l) => l.startsWith(pipelineJsonPrefix));
  if (!line) throw new Error(`No PIPE_JSON line in the pipeline client's output: "${stdout.trim().slice(-300)}"`);
  const j = JSON.parse(line.slice(pipelineJsonPrefix.length)) as Record<string, number | null>;
  const n = (k: string) => j[k] ?? Number.NaN;
  const durationS = n("durationS");
  return {
    messages: n("messages"),
    durationS,
    mps: durationS > 0 ? n("messages") / durationS : 0,
    bytes: n("bytes"),
    writes: n("writes"),
    reads: n("reads"),
    p50Ms: n("p50Us") / 1000,
    p99Ms: n("p99Us") / 1000,
    maxMs: n("maxUs") / 1000,
    errors: n("errors"),
  };
}

