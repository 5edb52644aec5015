/** The benchmark's command line, parsed into options (pure: argv in, options or an error out). */
import { parseArgs } from "node:util";
import { type CaseName, caseNames, multiDefaultCases } from "./cases.ts";

/** An extra kubegate process with its own flags, benchmarked as its own row. */
export interface KubegateVariant {
  readonly name: string;
  readonly args: readonly string[];
}

/** Everything a run needs to know. */
export interface BenchOptions {
  readonly quick: boolean;
  readonly cases: readonly CaseName[];
  readonly durationS: number;
  readonly repeat: number;
  readonly warmupS: number;
  readonly iperfS: number;
  /** wrk connections. */
  readonly connections: number;
  /** wrk threads. */
  readonly threads: number;
  readonly rateClients: number;
  /** The pipelined case: connections, messages in flight per connection, bytes per message. */
  readonly pipelineConnections: number;
  readonly pipelineDepth: number;
  readonly pipelineSize: number;
  /**
   * Multi-core mode: every proxy unpinned with this many workers/threads (nginx `worker_processes` + reuseport,
   * haproxy `nbthread`, kubegate `--workers`), plus kubegate `--workers 1` as the row "kubegate-w1"; undefined
   * for the pinned single-core run. (Absent from the JSON of runs made before the mode existed.)
   */
  readonly multi: number | undefined;
  /** A run during which other processes took more than this % of a core is run again. */
  readonly maxNoisePct: number;
  /** How many times a noisy run is repeated at most. */
  readonly noiseRetries: number;
  /** Before each run, wait at most this long (s) for other processes to quiet down. */
  readonly quietWaitS: number;
  /** Extra flags for the default kubegate target (e.g. `--tracing --tracing-sample-ratio 0`). */
  readonly kubegateArgs: readonly string[];
  /** Flags for bun itself before kubegate's script (e.g. `--cpu-prof-md --cpu-prof-dir=/tmp/prof`). */
  readonly bunArgs: readonly string[];
  readonly variants: readonly KubegateVariant[];
  /** Skip kubegate (benchmark the others only). */
  readonly noKubegate: boolean;
  /** Where to write the raw numbers (default: a file in the OS temp dir). */
  readonly jsonPath: string | undefined;
  /** Where to also write the markdown report. */
  readonly mdPath: string | undefined;
  /** Render the report of an earlier run from its JSON instead of running. */
  readonly fromJson: string | undefined;
}

export type ParsedBenchArgs = { kind: "run"; options: BenchOptions } | { kind: "help"; text: string } | { kind: "error"; message: string };

export const benchHelp = `Usage: bun test/bench/run.ts [flags]

Benchmarks kubegate beside nginx (1 worker), haproxy (1 thread) and the direct path, on the same
backends, with the proxy under test pinned to core 1 and load generator + backends to core 0.
With --multi N: every proxy with N workers/threads (nginx worker_processes N + reuseport, haproxy
nbthread N, kubegate --workers N) and kubegate --workers 1 as a row of its own, nothing pinned,
wrk -tN -c128; the report adds ratios to kubegate --workers 1.

Flags:
  --quick                 Short smoke run: 3 s per run, 1 repeat, 1 s warm-up.
  --cases a,b             Cases to run (default all): ${caseNames.join(", ")}.
  --duration 10s          Length of each measured run (wrk, h2load).
  --repeat 3              Measured runs per proxy and case, interleaved across proxies.
  --warmup 2s             Unmeasured load per proxy before each case.
  --iperf-duration 5s     Length of each iperf3 run.
  --connections 50        wrk connections (128 with --multi).
  --threads 1             wrk threads (N with --multi N).
  --multi N               Multi-core mode (see above); default cases ${multiDefaultCases.join(", ")}.
  --pipeline-connections 16  tcp-pipelined: connections of the pipelined client.
  --pipeline-depth 16     tcp-pipelined: messages in flight per connection (each written on its own).
  --pipeline-size 100     tcp-pipelined: bytes per message.
  --rate-clients 64       h2load connections in the fixed-rate case. h2load paces each connection and
                          their timers fire in phase, so requests come in bursts of this size; fewer
                          connections mean smaller bursts but more backlog on one after a stall.
  --max-noise 15          Run again when other processes took more than this % of a core.
  --noise-retries 2       At most this many re-runs of a noisy run (the quietest is kept).
  --quiet-wait 30s        Before each run, wait up to this long for other processes to go below --max-noise (0 to skip).
  --kubegate-args="..."   Extra flags for kubegate (space-separated; use the = form), e.g. tracing flags.
  --bun-args="..."        Flags for bun before kubegate's script, e.g. "--cpu-prof-md --cpu-prof-dir=/tmp/prof".
  --kubegate-variant="N=ARGS"  Also benchmark kubegate with ARGS as row N (repeatable). A row whose ARGS turn
                          tracing on (--tracing) exports to a loopback OTLP sink on the load core.
  --no-kubegate           Benchmark nginx, haproxy and the direct path only.
  --json PATH             Write raw numbers here (default: $TMPDIR/kubegate-bench-<time>.json).
  --md PATH               Also write the markdown report here.
  --from-json PATH        Print the report of an earlier run from its JSON; runs nothing.
  --help                  Print this help.`;

function seconds(text: string, flag: string): number | string {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text.trim());
  if (!m) return `Invalid ${flag} "${text}": expected a duration like 10s or 500ms`;
  const v = Number(m[1]) / (m[2] === "ms" ? 1000 : 1);
  return v > 0 ? v : `Invalid ${flag} "${text}": must be positive`;
}

function count(text: string, flag: string, max: number): number | string {
  const v = Number(text);
  return Number.isInteger(v) && v >= 1 && v <= max ? v : `Invalid ${flag} "${text}": expected an integer from 1 to ${max}`;
}

/**
 * Parse the benchmark's argv (without runtime and script).
 * @example parseBenchArgs(["--quick", "--cases", "http-keepalive"])
 */
export function parseBenchArgs(argv: readonly string[]): ParsedBenchArgs {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    values = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: "boolean" },
        cases: { type: "string" },
        duration: { type: "string" },
        repeat: { type: "string" },
        warmup: { type: "string" },
        "iperf-duration": { type: "string" },
        connections: { type: "string" },
        threads: { type: "string" },
        multi: { type: "string" },
        "pipeline-connections": { type: "string" },
        "pipeline-depth": { type: "string" },
        "pipeline-size": { type: "string" },
        "rate-clients": { type: "string" },
        "max-noise": { type: "string" },
        "noise-retries": { type: "string" },
        "quiet-wait": { type: "string" },
        "kubegate-args": { type: "string" },
        "bun-args": { type: "string" },
        "kubegate-variant": { type: "string", multiple: true },
        "no-kubegate": { type: "boolean" },
        json: { type: "string" },
        md: { type: "string" },
        "from-json": { type: "string" },
        help: { type: "boolean" },
      },
    }).values;
  } catch (err) {
    return { kind: "error", message: `${(err as Error).message}\nRun with --help for the list of flags.` };
  }
  if (values.help) return { kind: "help", text: benchHelp };
  const quick = values.quick === true;
  const str = (k: string) => values[k] as string | undefined;

  let multi: number | undefined;
  if (str("multi") !== undefined) {
    const m = count(str("multi")!, "--multi", 64);
    if (typeof m === "string") return { kind: "error", message: m };
    if (m < 2) return { kind: "error", message: `Invalid --multi "${str("multi")}": expected at least 2 (1 is the default pinned run)` };
    multi = m;
  }

  let selected: CaseName[] = multi === undefined ? [...caseNames] : [...multiDefaultCases];
  if (str("cases") !== undefined) {
    const names = str("cases")!.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = names.filter((n) => !(caseNames as readonly string[]).includes(n));
    if (unknown.length) return { kind: "error", message: `Unknown case ${unknown.map((u) => `"${u}"`).join(", ")}: expected some of ${caseNames.join(", ")}` };
    if (names.length === 0) return { kind: "error", message: "Empty --cases: expected some of " + caseNames.join(", ") };
    selected = caseNames.filter((n) => names.includes(n));
  }

  const durationS = seconds(str("duration") ?? (quick ? "3s" : "10s"), "--duration");
  const warmupS = seconds(str("warmup") ?? (quick ? "1s" : "2s"), "--warmup");
  const iperfS = seconds(str("iperf-duration") ?? (quick ? "2s" : "5s"), "--iperf-duration");
  const repeat = count(str("repeat") ?? (quick ? "1" : "3"), "--repeat", 20);
  const connections = count(str("connections") ?? (multi === undefined ? "50" : "128"), "--connections", 10_000);
  const threads = count(str("threads") ?? String(multi ?? 1), "--threads", 256);
  const pipelineConnections = count(str("pipeline-connections") ?? "16", "--pipeline-connections", 4_096);
  const pipelineDepth = count(str("pipeline-depth") ?? "16", "--pipeline-depth", 4_096);
  const pipelineSize = count(str("pipeline-size") ?? "100", "--pipeline-size", 65_536);
  const rateClients = count(str("rate-clients") ?? "64", "--rate-clients", 10_000);
  const quietWait = str("quiet-wait") ?? (quick ? "0" : "30s");
  const quietWaitS = quietWait === "0" ? 0 : seconds(quietWait, "--quiet-wait");
  if (typeof quietWaitS === "string") return { kind: "error", message: quietWaitS };
  const maxNoisePct = count(str("max-noise") ?? "15", "--max-noise", 200);
  const noiseRetries = Number(str("noise-retries") ?? (quick ? "0" : "2"));
  if (!Number.isInteger(noiseRetries) || noiseRetries < 0 || noiseRetries > 5) return { kind: "error", message: `Invalid --noise-retries "${str("noise-retries")}": expected an integer from 0 to 5` };
  for (const v of [durationS, warmupS, iperfS, repeat, connections, threads, rateClients, pipelineConnections, pipelineDepth, pipelineSize, maxNoisePct]) if (typeof v === "string") return { kind: "error", message: v };
  if ((durationS as number) > 600 || (iperfS as number) > 600) return { kind: "error", message: "Durations above 600 s are not allowed" };

  const variants: KubegateVariant[] = [];
  for (const spec of (values["kubegate-variant"] as string[] | undefined) ?? []) {
    const i = spec.indexOf("=");
    const name = i > 0 ? spec.slice(0, i).trim() : "";
    if (!/^[A-Za-z0-9][\w.+-]*$/.test(name)) return { kind: "error", message: `Invalid --kubegate-variant "${spec}": expected NAME=ARGS with a NAME of letters, digits, . + - _` };
    if (["kubegate", "kubegate-w1", "nginx", "haproxy", "direct"].includes(name) || variants.some((v) => v.name === name)) {
      return { kind: "error", message: `Invalid --kubegate-variant "${spec}": name "${name}" is taken` };
    }
    variants.push({ name, args: spec.slice(i + 1).split(/\s+/).filter(Boolean) });
  }

  return {
    kind: "run",
    options: {
      quick,
      cases: selected,
      durationS: durationS as number,
      repeat: repeat as number,
      warmupS: warmupS as number,
      iperfS: iperfS as number,
      connections: connections as number,
      threads: threads as number,
      rateClients: rateClients as number,
      pipelineConnections: pipelineConnections as number,
      pipelineDepth: pipelineDepth as number,
      pipelineSize: pipelineSize as number,
      multi,
      maxNoisePct: maxNoisePct as number,
      noiseRetries,
      quietWaitS,
      kubegateArgs: (str("kubegate-args") ?? "").split(/\s+/).filter(Boolean),
      bunArgs: (str("bun-args") ?? "").split(/\s+/).filter(Boolean),
      variants,
      noKubegate: values["no-kubegate"] === true,
      jsonPath: str("json"),
      mdPath: str("md"),
      fromJson: str("from-json"),
    },
  };
}

/** The flags the smaller benchmark scripts share with this one: run length, repeats and noise handling. */
export interface RunFlags {
  readonly durationS: number;
  readonly warmupS: number;
  readonly repeat: number;
  readonly maxNoisePct: number;
  readonly noiseRetries: number;
  readonly quietWaitS: number;
}

/** `parseArgs` options for {@link RunFlags}. */
export const runFlagOptions = {
  duration: { type: "string" },
  warmup: { type: "string" },
  repeat: { type: "string" },
  "max-noise": { type: "string" },
  "noise-retries": { type: "string" },
  "quiet-wait": { type: "string" },
} as const;

/** Help lines for {@link RunFlags}. */
export const runFlagsHelp = `  --duration 5s           Length of each measured run.
  --warmup 2s             Unmeasured load per target before its first run.
  --repeat 3              Measured runs per target, interleaved across targets.
  --max-noise 15          Run again when other processes took more than this % of a core.
  --noise-retries 1       At most this many re-runs of a noisy run (the quietest is kept).
  --quiet-wait 10s        Before each run, wait up to this long for other processes to go below --max-noise (0 to skip).`;

/**
 * {@link RunFlags} from parsed flag values (the defaults are those of {@link runFlagsHelp}), or an error message.
 * @example runFlags({ duration: "3s" }) // { durationS: 3, warmupS: 2, repeat: 3, ... }
 */
export function runFlags(values: Readonly<Record<string, unknown>>): RunFlags | string {
  const str = (k: string, d: string) => (typeof values[k] === "string" ? (values[k] as string) : d);
  const durationS = seconds(str("duration", "5s"), "--duration");
  const warmupS = seconds(str("warmup", "2s"), "--warmup");
  const repeat = count(str("repeat", "3"), "--repeat", 20);
  const maxNoisePct = count(str("max-noise", "15"), "--max-noise", 200);
  const noiseRetries = Number(str("noise-retries", "1"));
  if (!Number.isInteger(noiseRetries) || noiseRetries < 0 || noiseRetries > 5) return `Invalid --noise-retries "${str("noise-retries", "")}": expected an integer from 0 to 5`;
  const quietWait = str("quiet-wait", "10s");
  const quietWaitS = quietWait === "0" ? 0 : seconds(quietWait, "--quiet-wait");
  for (const v of [durationS, warmupS, repeat, maxNoisePct, quietWaitS]) if (typeof v === "string") return v;
  if ((durationS as number) > 600) return "Durations above 600 s are not allowed";
  return { durationS: durationS as number, warmupS: warmupS as number, repeat: repeat as number, maxNoisePct: maxNoisePct as number, noiseRetries, quietWaitS: quietWaitS as number };
}
