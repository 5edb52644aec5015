/** The benchmark's command line, parsed into options (pure: argv in, options or an error out). */
import { parseArgs } from "node:util";
import { type CaseName, caseNames } from "./cases.ts";

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
  readonly connections: number;
  readonly rateClients: number;
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

Flags:
  --quick                 Short smoke run: 3 s per run, 1 repeat, 1 s warm-up.
  --cases a,b             Cases to run (default all): ${caseNames.join(", ")}.
  --duration 10s          Length of each measured run (wrk, h2load).
  --repeat 3              Measured runs per proxy and case, interleaved across proxies.
  --warmup 2s             Unmeasured load per proxy before each case.
  --iperf-duration 5s     Length of each iperf3 run.
  --connections 50        wrk connections.
  --rate-clients 64       h2load connections in the fixed-rate case. h2load paces each connection and
                          their timers fire in phase, so requests come in bursts of this size; fewer
                          connections mean smaller bursts but more backlog on one after a stall.
  --max-noise 15          Run again when other processes took more than this % of a core.
  --noise-retries 2       At most this many re-runs of a noisy run (the quietest is kept).
  --quiet-wait 30s        Before each run, wait up to this long for other processes to go below --max-noise (0 to skip).
  --kubegate-args="..."   Extra flags for kubegate (space-separated; use the = form), e.g. tracing flags.
  --bun-args="..."        Flags for bun before kubegate's script, e.g. "--cpu-prof-md --cpu-prof-dir=/tmp/prof".
  --kubegate-variant="N=ARGS"  Also benchmark kubegate with ARGS as row N (repeatable).
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

  let selected: CaseName[] = [...caseNames];
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
  const connections = count(str("connections") ?? "50", "--connections", 10_000);
  const rateClients = count(str("rate-clients") ?? "64", "--rate-clients", 10_000);
  const quietWait = str("quiet-wait") ?? (quick ? "0" : "30s");
  const quietWaitS = quietWait === "0" ? 0 : seconds(quietWait, "--quiet-wait");
  if (typeof quietWaitS === "string") return { kind: "error", message: quietWaitS };
  const maxNoisePct = count(str("max-noise") ?? "15", "--max-noise", 200);
  const noiseRetries = Number(str("noise-retries") ?? (quick ? "0" : "2"));
  if (!Number.isInteger(noiseRetries) || noiseRetries < 0 || noiseRetries > 5) return { kind: "error", message: `Invalid --noise-retries "${str("noise-retries")}": expected an integer from 0 to 5` };
  for (const v of [durationS, warmupS, iperfS, repeat, connections, rateClients, maxNoisePct]) if (typeof v === "string") return { kind: "error", message: v };
  if ((durationS as number) > 600 || (iperfS as number) > 600) return { kind: "error", message: "Durations above 600 s are not allowed" };

  const variants: KubegateVariant[] = [];
  for (const spec of (values["kubegate-variant"] as string[] | undefined) ?? []) {
    const i = spec.indexOf("=");
    const name = i > 0 ? spec.slice(0, i).trim() : "";
    if (!/^[A-Za-z0-9][\w.+-]*$/.test(name)) return { kind: "error", message: `Invalid --kubegate-variant "${spec}": expected NAME=ARGS with a NAME of letters, digits, . + - _` };
    if (["kubegate", "nginx", "haproxy", "direct"].includes(name) || variants.some((v) => v.name === name)) {
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
      rateClients: rateClients as number,
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
