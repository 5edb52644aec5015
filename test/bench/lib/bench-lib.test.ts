/**
 * The benchmark harness's pure parts (parsers, statistics, report, generated configs) and its
 * process handling. The benchmark itself is not a test: `bun test/bench/run.ts`.
 */
import { describe, expect, test } from "bun:test";
import { parseManifests } from "../../../src/kube/manifests.ts";
import { nginxBackendConf } from "../backends/nginx-backend.ts";
import { echoServerScript, h2cBackendScript } from "../backends/start.ts";
import { haproxyConf } from "../configs/haproxy.ts";
import { grpcManifests, kubegateManifests } from "../configs/kubegate-manifests.ts";
import { nginxProxyConf } from "../configs/nginx-proxy.ts";
import { parseBenchArgs, runFlags } from "./args.ts";
import { type CoreTicks, cpuUsage, cpuUsageUnpinned, parseCoreTicks, procStatTicks, procStatTicksWithChildren } from "./cpu.ts";
import { h2cLoadArgs, h2loadArgs, h2loadFailed, parseH2loadLog, parseH2loadSummary } from "./h2load.ts";
import { parseIperfJson } from "./iperf.ts";
import { LatencyHistogram, parsePipelineArgs, parsePipelineOutput, pipelineArgs } from "./pipeline.ts";
import { startOtlpSink, tracingOn } from "./otlp-sink.ts";
import { PortAllocator } from "./ports.ts";
import { h2Answers, waitForH2, waitForLog } from "./probe.ts";
import { pinned, ProcessGroup } from "./procs.ts";
import { QuietRunner, quietOrAll } from "./quiet.ts";
import { multiBaseline, type RawRun, renderReport, reviveRawRun } from "./render.ts";
import { aggregate, checkMultiTargets, checkTargets, pairedRatio, renderTable, type Sample } from "./report.ts";
import { median, percentileSorted, ratio } from "./stats.ts";
import { memoryRows, renderMemoryTable, type TreeMemory } from "./memory.ts";
import { hasCommand, missingTools } from "./tools.ts";
import { parseWrkOutput, wrkArgs } from "./wrk.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

describe("stats", () => {
  test("median of odd and even counts, NaN when empty", () => {
    expect([median([3, 1, 2]), median([4, 1, 3, 2]), median([])]).toEqual([2, 2.5, Number.NaN]);
  });
  test("nearest-rank percentiles", () => {
    const s = Array.from({ length: 100 }, (_, i) => i + 1);
    expect([percentileSorted(s, 50), percentileSorted(s, 99), percentileSorted(s, 100), percentileSorted([7], 99)]).toEqual([50, 99, 100, 7]);
  });
  test("ratio is NaN without a usable denominator", () => {
    expect([ratio(3, 2), ratio(1, 0), ratio(1, undefined), ratio(Number.NaN, 2)]).toEqual([1.5, Number.NaN, Number.NaN, Number.NaN]);
  });
});

describe("cpu", () => {
  const stat = (comm: string) => `1234 (${comm}) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 7 3 20 0 4 0 1000 0 0`;
  test("utime + stime come after the last parenthesis, whatever the command name holds", () => {
    expect([procStatTicks(stat("bun")), procStatTicks(stat("we) ird (name"))]).toEqual([325, 325]);
    expect(procStatTicksWithChildren(stat("bun"))).toBe(335);
  });
  test("a malformed stat line is an error", () => {
    expect(() => procStatTicks("garbage")).toThrow(/Unexpected/);
  });
  test("per-core counters from /proc/stat", () => {
    const text = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 20 300 0 0 5 0 0 0\ncpu1 11 1 21 301 2 3 9 4 0 0\n";
    expect(parseCoreTicks(text, 1)).toEqual({ user: 11, nice: 1, system: 21, idle: 301, iowait: 2, irq: 3, softirq: 9, steal: 4 });
    expect(() => parseCoreTicks(text, 2)).toThrow('No "cpu2" line');
    expect(parseCoreTicks(text, "all")).toEqual({ user: 1, nice: 2, system: 3, idle: 4, iowait: 5, irq: 6, softirq: 7, steal: 8 });
  });
  test("unpinned: the proxy is its process tree; noise is every core's busy time neither it nor the load side took", () => {
    const all = (busy: number, softirq: number): CoreTicks => ({ user: busy, nice: 0, system: 0, idle: 0, iowait: 0, irq: 0, softirq, steal: 0 });
    const before = { procTicks: 100, ownLoadTicks: 0, core: all(0, 0), loadCore: all(0, 0) };
    const after = { procTicks: 250, ownLoadTicks: 120, core: all(280, 20), loadCore: all(280, 20) };
    const tick = cpuUsageUnpinned(before, after, 100, false);
    expect([tick.totalS, tick.procS, tick.loadCoreBusyS, tick.foreignLoadS]).toEqual([1.5, 1.5, 1.2, 0]);
    expect(tick.foreignS).toBeCloseTo(0.3, 10);
    expect(cpuUsageUnpinned(before, after, 100, true).foreignS).toBeCloseTo(0.1, 10);
  });
  test("softirq is added to the process time only when the kernel accounts it apart", () => {
    const core = (busy: number, softirq: number): CoreTicks => ({ user: busy, nice: 0, system: 0, idle: 0, iowait: 0, irq: 0, softirq, steal: 0 });
    const before = { procTicks: 100, ownLoadTicks: 0, core: core(0, 0), loadCore: core(0, 0) };
    const after = { procTicks: 180, ownLoadTicks: 50, core: core(90, 20), loadCore: core(90, 0) };
    const separate = cpuUsage(before, after, 100, true);
    const tick = cpuUsage(before, after, 100, false);
    expect([separate.totalS, separate.coreBusyS, separate.foreignLoadS]).toEqual([1.0, 1.1, 0.4]);
    expect(separate.foreignS).toBeCloseTo(0.1, 10);
    expect([tick.totalS, tick.foreignS]).toEqual([0.8, 0.30000000000000004]);
  });
});

describe("wrk", () => {
  test("reads the JSON line of wrk-report.lua", () => {
    const out = `Running 3s test\nWRK_JSON {"requests":3000,"duration_us":3000000,"bytes":9000,"connect":1,"read":0,"write":0,"status":2,"timeout":0,"p50_us":400,"p90_us":800,"p99_us":1500,"max_us":9000,"mean_us":450.5}\n`;
    expect(parseWrkOutput(out)).toEqual({
      requests: 3000,
      durationS: 3,
      rps: 1000,
      bytes: 9000,
      p50Ms: 0.4,
      p90Ms: 0.8,
      p99Ms: 1.5,
      maxMs: 9,
      errors: 3,
      errorDetail: { connect: 1, read: 0, write: 0, status: 2, timeout: 0 },
    });
  });
  test("fails clearly without the JSON line", () => {
    expect(() => parseWrkOutput("unable to connect")).toThrow(/No WRK_JSON line/);
  });
  test("passes headers and the report script", () => {
    const args = wrkArgs({ url: "http://127.0.0.1:1/", connections: 50, threads: 1, durationS: 3, headers: ["Connection: close"] });
    expect(args.slice(0, 7)).toEqual(["wrk", "-t", "1", "-c", "50", "-d", "3s"]);
    expect(args).toContain("Connection: close");
    expect(args[args.indexOf("-s") + 1]).toEndWith("wrk-report.lua");
  });
});

describe("pipeline", () => {
  const load = { host: "127.0.0.1", port: 8080, connections: 16, depth: 8, size: 100, durationS: 2.5 };
  test("the client's argv round-trips through its parser", () => {
    const argv = pipelineArgs("bun", load);
    expect(argv[0]).toBe("bun");
    expect(argv[1]).toEndWith("load/pipeline-client.ts");
    expect(parsePipelineArgs(argv.slice(2))).toEqual(load);
  });
  test("bad flags are named", () => {
    expect(() => parsePipelineArgs(["--port", "0"])).toThrow('Invalid --port "0"');
    expect(() => parsePipelineArgs(["--port", "1", "--duration", "0"])).toThrow('Invalid --duration "0"');
    expect(() => parsePipelineArgs(["--port", "1", "--bogus"])).toThrow();
  });
  test("the histogram's percentiles are within one 10 µs bucket of the exact ones", () => {
    const h = new LatencyHistogram();
    const xs = Array.from({ length: 1000 }, (_, i) => 100 + ((i * 7919) % 1000) * 3.3);
    for (const x of xs) h.record(x);
    const sorted = [...xs].sort((a, b) => a - b);
    for (const p of [50, 99]) {
      const exact = percentileSorted(sorted, p);
      expect(h.percentileUs(p)).toBeGreaterThan(exact);
      expect(h.percentileUs(p) - exact).toBeLessThanOrEqual(LatencyHistogram.bucketUs);
    }
    expect([h.count, h.maxUs]).toEqual([1000, Math.max(...xs)]);
    h.record(5e6); // past the last bucket: reported as the maximum
    expect(h.percentileUs(100)).toBe(5e6);
    expect(new LatencyHistogram().percentileUs(50)).toBeNaN();
  });
  test("reads the client's JSON line", () => {
    const out = `PIPE_JSON {"messages":200000,"durationS":2,"bytes":20000000,"writes":200256,"reads":9000,"p50Us":1500,"p99Us":4000,"maxUs":9000,"errors":1}\n`;
    expect(parsePipelineOutput(out)).toEqual({ messages: 200_000, durationS: 2, mps: 100_000, bytes: 20_000_000, writes: 200_256, reads: 9_000, p50Ms: 1.5, p99Ms: 4, maxMs: 9, errors: 1 });
    expect(() => parsePipelineOutput("Cannot connect")).toThrow(/No PIPE_JSON line/);
  });
  test("the client against the echo server: every message comes back whole, in order", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-pipe-"));
    await using group = new ProcessGroup(dir);
    try {
      const port = await new PortAllocator().next();
      const echo = group.start("echo", [process.execPath, echoServerScript, String(port)]);
      await waitForLog(echo, /echo server listening/);
      const r = await group.runOk("pipeline", pipelineArgs(process.execPath, { ...load, port, connections: 4, durationS: 0.5 }), { timeoutMs: 20_000 });
      const res = parsePipelineOutput(r.stdout);
      expect(res.errors).toBe(0);
      expect(res.messages).toBeGreaterThan(100);
      expect([res.bytes, res.writes >= res.messages]).toEqual([res.messages * load.size, true]);
      expect(res.p99Ms).toBeGreaterThanOrEqual(res.p50Ms);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("otlp sink", () => {
  test("tracingOn reads kubegate's flags, the last one winning", () => {
    expect(tracingOn(["--tracing", "--tracing-sample-ratio", "1"])).toBe(true);
    expect(tracingOn(["--tracing=true"])).toBe(true);
    expect(tracingOn(["--tracing", "--tracing=false"])).toBe(false);
    expect(tracingOn(["--access-log", "--tracing-sample-ratio", "1"])).toBe(false);
    expect(tracingOn([])).toBe(false);
  });
  test("the sink answers 200 to OTLP/HTTP trace exports and counts their spans; a child gets the env asked for", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-otlp-"));
    await using group = new ProcessGroup(dir);
    try {
      const sink = await startOtlpSink(group, new PortAllocator(), undefined);
      const span = (id: string) => ({ traceId: "0af7651916cd43dd8448eb211c80319c", spanId: id, parentSpanId: "b7ad6b7169203331", name: "GET" });
      const body = JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [span("00f067aa0ba902b7"), span("00f067aa0ba902b8")] }] }] });
      const res = await fetch(`${sink.endpoint}/v1/traces`, { method: "POST", headers: { "content-type": "application/json" }, body });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({});
      expect(await sink.stats()).toEqual({ requests: 1, bytes: body.length, spans: 2, other: 0 } as never);
      // What the harness does for a tracing row: the sink's endpoint in the child's environment only.
      const child = group.start("env", ["sh", "-c", 'echo "endpoint=$OTEL_EXPORTER_OTLP_ENDPOINT"; exec sleep 30'], { env: { OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint } });
      await waitForLog(child, new RegExp(`endpoint=${sink.endpoint.replace(/[.]/g, "\\.")}$`, "m"));
      expect(process.env.OTEL_EXPORTER_OTLP_ENDPOINT).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("h2load", () => {
  test("spreads the rate over the clients", () => {
    const args = h2loadArgs({ url: "http://127.0.0.1:1/", rate: 10_000, clients: 64, durationS: 12, logFile: "/tmp/l" });
    expect(args[args.indexOf("--rps") + 1]).toBe("156.25");
    expect(args).toContain("--h1");
  });
  test("skips the warm-up window and counts bad statuses and failures", () => {
    const start = 1_700_000_000_000_000;
    const lines = [
      `${start}\t200\t90000`, // in the warm-up second: ignored
      ...Array.from({ length: 99 }, (_, i) => `${start + 1_000_000 + i}\t200\t${(i + 1) * 10}`),
      `${start + 1_500_000}\t502\t5000`,
    ];
    const r = parseH2loadLog(lines.join("\n"), 1, 2, 3);
    expect(r).toEqual({ totalRequests: 101, requests: 100, achievedRps: 50, p50Ms: 0.5, p90Ms: 0.9, p99Ms: 0.99, maxMs: 5, errors: 4 });
  });
  test("reads the failed count of the summary", () => {
    expect(h2loadFailed("requests: 600 total, 600 started, 600 done, 590 succeeded, 10 failed, 0 errored, 0 timeout")).toBe(10);
  });
  test("closed-loop HTTP/2: -c and -m, no --h1, no log", () => {
    expect(h2cLoadArgs({ request: "http://127.0.0.1:1/", clients: 16, streams: 32, durationS: 5 })).toEqual(["h2load", "-t", "1", "-c", "16", "-m", "32", "-D", "5", "http://127.0.0.1:1/"]);
    expect(h2cLoadArgs({ request: ["-d", "/b", "http://127.0.0.1:1/m"], clients: 1, streams: 2, durationS: 3 }).slice(-3)).toEqual(["-d", "/b", "http://127.0.0.1:1/m"]);
  });
  test("reads the closed-loop summary: rate, requests done, mean latency, failures and 4xx/5xx", () => {
    const out = [
      "finished in 5.00s, 61234.40 req/s, 1.52MB/s",
      "requests: 306684 total, 307196 started, 306672 done, 306660 succeeded, 12 failed, 2 errored, 0 timeout",
      "status codes: 306660 2xx, 0 3xx, 3 4xx, 4 5xx",
      "                     min         max         mean         sd        +/- sd",
      "time for request:      310us     40.21ms      8.35ms      1.20ms    90.00%",
    ].join("\n");
    expect(parseH2loadSummary(out)).toEqual({ rps: 61234.4, requests: 306672, meanMs: 8.35, errors: 19 });
    expect(parseH2loadSummary(out.replace("8.35ms", "867us")).meanMs).toBeCloseTo(0.867, 10);
    expect(() => parseH2loadSummary("connect: Connection refused")).toThrow(/Unexpected h2load output/);
  });
});

describe("quiet", () => {
  const noise = { maxNoisePct: 15, noiseRetries: 2, quietWaitS: 0 };
  test("a noisy run is run again, at most noiseRetries times; the quietest is kept", async () => {
    const lines: string[] = [];
    const quiet = new QuietRunner(noise, () => [], [0], (l) => lines.push(l));
    const levels = [40, 20, 30];
    const s = await quiet.measure(async () => ({ noisePct: levels.shift()!, attempts: 1 }), () => "run");
    expect([s, levels, lines.length]).toEqual([{ noisePct: 20, attempts: 2 }, [], 2]);
    expect(await quiet.measure(async () => ({ noisePct: 5, attempts: 1 }), () => "run")).toEqual({ noisePct: 5, attempts: 1 });
  });
  test("medians come from the quiet runs when there are any", () => {
    const runs = [{ noisePct: 40, attempts: 1 }, { noisePct: 10, attempts: 1 }];
    expect([quietOrAll(runs, 15), quietOrAll(runs, 5)]).toEqual([[runs[1]!], runs]);
  });
  test("the smaller scripts' flags: defaults and errors", () => {
    expect(runFlags({})).toEqual({ durationS: 5, warmupS: 2, repeat: 3, maxNoisePct: 15, noiseRetries: 1, quietWaitS: 10 });
    expect(runFlags({ duration: "500ms", "quiet-wait": "0" })).toMatchObject({ durationS: 0.5, quietWaitS: 0 });
    expect([runFlags({ repeat: "0" }), runFlags({ "noise-retries": "9" })]).toEqual(['Invalid --repeat "0": expected an integer from 1 to 20', 'Invalid --noise-retries "9": expected an integer from 0 to 5']);
  });
});

describe("iperf3", () => {
  test("reads the receiver's throughput", () => {
    expect(parseIperfJson(JSON.stringify({ end: { sum_received: { bits_per_second: 12.5e9, bytes: 7e9, seconds: 4 } } }))).toEqual({ gbitPerS: 12.5, bytes: 7e9, durationS: 4 });
  });
  test("surfaces iperf3's own error", () => {
    expect(() => parseIperfJson(JSON.stringify({ error: "the server is busy running a test. try again later" }))).toThrow(/server is busy/);
  });
});

describe("args", () => {
  test("defaults and --quick", () => {
    const full = parseBenchArgs([]);
    const quick = parseBenchArgs(["--quick"]);
    if (full.kind !== "run" || quick.kind !== "run") throw new Error("expected run");
    expect([full.options.durationS, full.options.repeat, full.options.cases.length]).toEqual([10, 3, 9]);
    expect([quick.options.durationS, quick.options.repeat, quick.options.noiseRetries]).toEqual([3, 1, 0]);
    expect([full.options.multi, full.options.threads, full.options.connections]).toEqual([undefined, 1, 50]);
    expect([full.options.pipelineConnections, full.options.pipelineDepth, full.options.pipelineSize]).toEqual([16, 16, 100]);
  });
  test("--multi: HTTP and TCP cases, wrk -tN -c128 unless told otherwise", () => {
    const multi = parseBenchArgs(["--multi", "2"]);
    if (multi.kind !== "run") throw new Error("expected run");
    expect([multi.options.multi, multi.options.threads, multi.options.connections, multi.options.cases]).toEqual([2, 2, 128, ["http-keepalive", "tcp-wrk"]]);
    const chosen = parseBenchArgs(["--multi", "4", "--threads", "2", "--connections", "64", "--cases", "tcp-pipelined"]);
    if (chosen.kind !== "run") throw new Error("expected run");
    expect([chosen.options.multi, chosen.options.threads, chosen.options.connections, chosen.options.cases]).toEqual([4, 2, 64, ["tcp-pipelined"]]);
    expect(parseBenchArgs(["--multi", "1"])).toEqual({ kind: "error", message: 'Invalid --multi "1": expected at least 2 (1 is the default pinned run)' });
    expect(parseBenchArgs(["--kubegate-variant", `${multiBaseline}=--foo`]).kind).toBe("error");
  });
  test("cases, durations, passthrough flags and variants", () => {
    const r = parseBenchArgs(["--cases", "tcp-wrk,http-keepalive", "--duration", "500ms", "--kubegate-args=--a 1  --b", "--kubegate-variant=trace0=--sampling 0"]);
    if (r.kind !== "run") throw new Error(JSON.stringify(r));
    expect(r.options.cases).toEqual(["http-keepalive", "tcp-wrk"]);
    expect(r.options.durationS).toBe(0.5);
    expect(r.options.kubegateArgs).toEqual(["--a", "1", "--b"]);
    expect(r.options.variants).toEqual([{ name: "trace0", args: ["--sampling", "0"] }]);
  });
  test.each([
    [["--cases", "http-keepalive,nope"], 'Unknown case "nope"'],
    [["--duration", "ten"], 'Invalid --duration "ten"'],
    [["--repeat", "0"], 'Invalid --repeat "0"'],
    [["--kubegate-variant", "nginx=--x"], 'name "nginx" is taken'],
    [["--bogus"], "Unknown option"],
  ])("%j is rejected", (argv, message) => {
    const r = parseBenchArgs(argv);
    expect(r.kind).toBe("error");
    expect(r.kind === "error" ? r.message : "").toContain(message);
  });
});

describe("report", () => {
  const sample = (c: Sample["case"], target: string, kind: Sample["kind"], throughput: number, p99Ms: number, cpuPerOp: number): Sample => ({
    case: c,
    target,
    kind,
    repeat: 1,
    throughput,
    offeredRps: Number.NaN,
    p50Ms: p99Ms / 2,
    p99Ms,
    ops: throughput,
    errors: 0,
    cpu: undefined,
    cpuPerOp,
    busyPct: 50,
    loadCorePct: 90,
    noisePct: 0,
    attempts: 1,
  });
  const samples = [
    sample("http-keepalive", "kubegate", "kubegate", 24_000, 2, 30),
    sample("http-keepalive", "kubegate", "kubegate", 20_000, 4, 40),
    sample("http-keepalive", "kubegate", "kubegate", 22_000, 3, 35),
    sample("http-keepalive", "nginx", "nginx", 20_000, 3, 35),
    sample("http-keepalive", "direct", "direct", 40_000, 1, Number.NaN),
    sample("tcp-wrk", "kubegate", "kubegate", 30_000, 2, 20),
    sample("tcp-wrk", "haproxy", "haproxy", 31_000, 2, 21),
  ];
  test("medians and ratios per case", () => {
    const rows = aggregate(samples);
    const kg = rows.find((r) => r.case === "http-keepalive" && r.target === "kubegate")!;
    expect([kg.runs, kg.throughput, kg.throughputMin, kg.throughputMax, kg.p99Ms, kg.vsNginx, kg.vsDirect, kg.cpuVsNginx]).toEqual([3, 22_000, 20_000, 24_000, 3, 1.1, 0.55, 1]);
    expect(Number.isNaN(kg.vsHaproxy)).toBe(true);
    expect(rows.find((r) => r.case === "tcp-wrk" && r.target === "kubegate")!.label).toBe("kubegate (tcp)");
  });
  test("with a noise limit, a row uses its quiet runs when it has any", () => {
    const noisy = (throughput: number, noisePct: number): Sample => ({ ...sample("http-keepalive", "nginx", "nginx", throughput, 3, 35), noisePct });
    const [row] = aggregate([noisy(10_000, 90), noisy(30_000, 5), noisy(28_000, 10)], 15);
    expect([row!.throughput, row!.runs, row!.totalRuns, row!.noisePct]).toEqual([29_000, 2, 3, 7.5]);
    const [all] = aggregate([noisy(10_000, 90), noisy(12_000, 80)], 15);
    expect([all!.throughput, all!.runs, all!.totalRuns]).toEqual([11_000, 2, 2]);
  });
  test("ratios pair the runs of one repeat, cancelling drift between repeats", () => {
    const at = (target: string, kind: Sample["kind"], repeat: number, throughput: number): Sample => ({ ...sample("http-keepalive", target, kind, throughput, 3, 35), repeat });
    // The machine slows down over the run; kubegate is 0.9x nginx within every repeat.
    const a = [at("kubegate", "kubegate", 1, 27_000), at("kubegate", "kubegate", 2, 18_000), at("kubegate", "kubegate", 3, 9_000)];
    const b = [at("nginx", "nginx", 1, 30_000), at("nginx", "nginx", 2, 20_000), at("nginx", "nginx", 3, 10_000)];
    expect(pairedRatio(a, b, "throughput")).toBeCloseTo(0.9, 10);
    expect(pairedRatio(a, [at("nginx", "nginx", 9, 20_000)], "throughput")).toBe(0.9); // no common repeat: ratio of medians
    expect(pairedRatio(a, undefined, "throughput")).toBeNaN();
  });
  test("the table has one row per case and proxy", () => {
    const table = renderTable(aggregate(samples));
    expect(table.split("\n")).toHaveLength(2 + 5);
    expect(table).toContain("| http-keepalive | kubegate | 22,000 req/s | 1.10× | — | 0.55× |");
    expect(table).toContain("| tcp-wrk | haproxy (tcp mode) | 31,000 req/s |");
  });
  test("targets are met, missed, or not measured", () => {
    expect(checkTargets(aggregate(samples)).map((c) => c.met)).toEqual([true, undefined, false, undefined, undefined, undefined, undefined, undefined, undefined, undefined]);
  });
  test("the 64 KiB and pipelined cases are checked against haproxy; msg/s and µs/msg in the table", () => {
    const rows = aggregate([
      sample("http-64k", "kubegate", "kubegate", 9_000, 5, 80),
      sample("http-64k", "haproxy", "haproxy", 10_000, 4, 70),
      sample("tcp-64k", "kubegate", "kubegate", 10_000, 4, 60),
      sample("tcp-64k", "haproxy", "haproxy", 10_000, 4, 60),
      sample("tcp-pipelined", "kubegate", "kubegate", 150_000, 2, 4),
      sample("tcp-pipelined", "haproxy", "haproxy", 100_000, 3, 6),
    ].map((x) => ({ ...x, busyPct: 95 })));
    expect(checkTargets(rows).slice(4, 8).map((c) => [c.measured, c.met])).toEqual([["0.90×", false], ["1.00×", true], ["1.50×", true], ["0.67×", true]]);
    const limited = aggregate([{ ...sample("tcp-pipelined", "kubegate", "kubegate", 50_000, 2, 7), busyPct: 35 }, sample("tcp-pipelined", "haproxy", "haproxy", 50_000, 2, 6)]);
    expect(checkTargets(limited)[6]!.measured).toBe("1.00× (proxy CPU 35%: the load side was the limit; compare CPU/msg)");
    const table = renderTable(rows);
    expect(table).toContain("| tcp-pipelined | kubegate (tcp) | 150,000 msg/s | — | 1.50× |");
    expect(table).toContain("| 4.0 µs/msg |");
  });
  test("h2c rows carry the plain proxy name and are checked against haproxy for req/s and CPU per request", () => {
    const h2 = (target: string, kind: Sample["kind"], throughput: number, cpuPerOp: number): Sample => ({ ...sample("h2c", target, kind, throughput, 1, cpuPerOp), p50Ms: Number.NaN, p99Ms: Number.NaN });
    const rows = aggregate([h2("kubegate", "kubegate", 110_000, 9), h2("haproxy", "haproxy", 100_000, 10), h2("direct", "direct", 300_000, Number.NaN)]);
    expect(checkTargets(rows).slice(8).map((c) => [c.measured, c.met])).toEqual([["1.10×", true], ["0.90×", true]]);
    expect(renderTable(rows)).toContain("| h2c | kubegate | 110,000 req/s | — | 1.10× | 0.37× | — | — | — | 9.0 µs/req | — | 0.90× |");
    expect(renderTable(rows)).toContain("| h2c | haproxy | 100,000 req/s |");
  });
  test("multi-core: ratios to the --workers 1 row, and the issue's scaling targets", () => {
    const at = (c: Sample["case"], target: string, kind: Sample["kind"], throughput: number, cpuPerOp: number) => sample(c, target, kind, throughput, 3, cpuPerOp);
    const rows = aggregate(
      [
        at("http-keepalive", "kubegate", "kubegate", 36_000, 31),
        at("http-keepalive", multiBaseline, "kubegate", 30_000, 30),
        at("http-keepalive", "nginx", "nginx", 35_000, 40),
        at("http-keepalive", "haproxy", "haproxy", 37_000, 40),
        at("tcp-wrk", "kubegate", "kubegate", 40_000, 33),
        at("tcp-wrk", multiBaseline, "kubegate", 36_000, 30),
        at("tcp-wrk", "haproxy", "haproxy", 39_000, 25),
      ],
      Number.POSITIVE_INFINITY,
      multiBaseline,
    );
    const kg = rows.find((r) => r.case === "http-keepalive" && r.target === "kubegate")!;
    expect([kg.vsBaseline, kg.cpuVsBaseline]).toEqual([1.2, 31 / 30]);
    expect(checkMultiTargets(rows).map((c) => c.met)).toEqual([true, false, true, true, false, true, false]);
    const table = renderTable(rows, "kubegate --workers 1");
    expect(table.split("\n")[0]).toContain("| × direct | × kubegate --workers 1 | p50 ms |");
    expect(table).toContain("| http-keepalive | kubegate | 36,000 req/s | 1.03× | 0.97× | — | 1.20× |");
    expect(renderTable(rows)).not.toContain("--workers 1");
  });
  test("the fixed-rate target needs a p99 no worse than nginx's and the offered rate sustained", () => {
    const rate = (target: string, kind: Sample["kind"], achieved: number, p99Ms: number): Sample => ({ ...sample("http-fixed-rate", target, kind, achieved, p99Ms, 30), offeredRps: 10_000 });
    const verdict = (kgAchieved: number, kgP99: number) => checkTargets(aggregate([rate("kubegate", "kubegate", kgAchieved, kgP99), rate("nginx", "nginx", 10_000, 5)]))[1]!;
    expect([verdict(9_990, 4).met, verdict(9_990, 6).met, verdict(8_000, 4).met]).toEqual([true, false, false]);
    expect(verdict(8_000, 4).measured).toBe("4.00 ms vs 5.00 ms (0.80×); 8000 of 10000 req/s");
    expect(renderTable(aggregate([rate("kubegate", "kubegate", 8_000, 4)]))).toContain("| 8,000 of 10,000 req/s |");
  });
});

describe("render", () => {
  test("a run read back from JSON renders the same report (null from NaN becomes NaN again)", () => {
    const args = parseBenchArgs(["--quick"]);
    if (args.kind !== "run") throw new Error("expected run");
    const s: Sample = {
      case: "http-keepalive", target: "direct", kind: "direct", repeat: 1, throughput: 40_000, offeredRps: Number.NaN, p50Ms: 0.5, p99Ms: 1, ops: 120_000,
      errors: 0, cpu: undefined, cpuPerOp: Number.NaN, busyPct: Number.NaN, loadCorePct: 99, noisePct: 2, attempts: 1,
    };
    const raw: RawRun = {
      startedAt: "2026-01-01T00:00:00.000Z", options: args.options, cores: { proxy: 1, load: 0 }, nice: -10, irqTimeAccounting: false,
      machine: { nproc: 2, cpuModel: "cpu", kernel: "6", os: "os", memGiB: 1, loadavg: [0, 0, 0] }, loadBefore: [0, 0, 0],
      versions: { bun: "1", nginx: "nginx/1", haproxy: "2", wrk: "wrk 4", h2load: "nghttp2/1", iperf3: "iperf 3" }, kubegates: [], quietWaitedS: 0, samples: [s], failures: [],
    };
    const direct = renderReport(raw).md;
    const revived = renderReport(reviveRawRun(JSON.parse(JSON.stringify(raw)))).md;
    expect(revived).toBe(direct);
    expect(direct).toContain("| http-keepalive | direct | 40,000 req/s | — | — | 1.00× | 0.50 | 1.00 | — | — | — | — | — | 2% | 1/1 | 0 |");
    expect(direct).toContain("All benchmark processes run at nice -10.");
  });
  test("a multi-core run: nothing pinned, ratios to --workers 1, the scaling targets for the N-worker row only", () => {
    const args = parseBenchArgs(["--multi", "2", "--quick"]);
    if (args.kind !== "run") throw new Error("expected run");
    const s = (target: string, throughput: number): Sample => ({
      case: "http-keepalive", target, kind: "kubegate", repeat: 1, throughput, offeredRps: Number.NaN, p50Ms: 0.5, p99Ms: 1, ops: throughput * 3,
      errors: 0, cpu: undefined, cpuPerOp: 30, busyPct: 150, loadCorePct: 99, noisePct: 2, attempts: 1,
    });
    const raw: RawRun = {
      startedAt: "2026-01-01T00:00:00.000Z", options: args.options, cores: null, nice: null, irqTimeAccounting: false,
      machine: { nproc: 2, cpuModel: "cpu", kernel: "6", os: "os", memGiB: 1, loadavg: [0, 0, 0] }, loadBefore: [0, 0, 0],
      versions: { bun: "1", nginx: "nginx/1", haproxy: "2", wrk: "wrk 4", h2load: "nghttp2/1", iperf3: "iperf 3" },
      kubegates: ["kubegate", multiBaseline], quietWaitedS: 0, samples: [s("kubegate", 36_000), s(multiBaseline, 30_000)], failures: [],
    };
    const md = renderReport(raw).md;
    expect(md).toContain("Multi-core mode (--multi 2), nothing pinned: nginx worker_processes 2 with reuseport");
    expect(md).toContain("wrk -t2 -c128");
    expect(md).toContain("| http-keepalive | kubegate | 36,000 req/s | — | — | — | 1.20× |");
    expect(md).toContain("Targets for kubegate (--workers 2):");
    expect(md).not.toContain(`Targets for ${multiBaseline}`);
    expect(renderReport(reviveRawRun(JSON.parse(JSON.stringify(raw)))).md).toBe(md);
  });
});

describe("configs", () => {
  test("kubegate's manifests load without errors: 5 Services, 8 EndpointSlices, 1 Node", () => {
    const base = { nodeName: "n", httpNodePort: 31001, tcpNodePort: 31002, iperfNodePort: 31003, echoNodePort: 31004, backends: [18081, 18082], iperfBackend: 5201, echoBackend: 7007 };
    const text = kubegateManifests({ ...base, h2c: { nodePort: 31005, backends: [18091, 18092] } });
    expect(kubegateManifests(base)).not.toContain("h2c");
    const { objects, errors } = parseManifests(text, "bench.yaml");
    expect(errors).toEqual([]);
    const kinds = objects.map((o) => o.kind).sort();
    expect(kinds).toEqual([...Array(8).fill("EndpointSlice"), "Node", ...Array(5).fill("Service")]);
    expect(objects.every((o) => o.event.type !== "invalid")).toBe(true);
    expect(text).toContain("appProtocol: http\n");
    expect(text).toContain("appProtocol: kubernetes.io/h2c\n");
  });
  test("gRPC manifests: one Service per entry, appProtocol grpc, a slice per endpoint", () => {
    const text = grpcManifests("n", [{ name: "grpc-one", nodePort: 31001, backends: [50051] }, { name: "grpc-all", nodePort: 31002, backends: [50051, 50052] }]);
    const { objects, errors } = parseManifests(text, "grpc.yaml");
    expect(errors).toEqual([]);
    expect(objects.map((o) => o.kind).sort()).toEqual([...Array(3).fill("EndpointSlice"), "Node", "Service", "Service"]);
    expect(text.match(/appProtocol: grpc\n/g)).toHaveLength(2);
  });
  test("nginx proxy: 1 worker, upstream keepalive, HTTP/1.1 with Connection cleared", () => {
    const conf = nginxProxyConf({ port: 1, backends: [2, 3], dir: "/d", runAsRoot: false });
    for (const s of ["worker_processes 1;", "keepalive 64;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";', "server 127.0.0.1:3;"]) expect(conf).toContain(s);
    expect(conf).not.toContain("user root");
    expect(conf).not.toContain("reuseport");
    const two = nginxProxyConf({ port: 1, backends: [2, 3], dir: "/d", runAsRoot: false, workers: 2 });
    for (const s of ["worker_processes 2;", "listen 127.0.0.1:1 backlog=4096 reuseport;", "keepalive 64;"]) expect(two).toContain(s);
  });
  test("haproxy: 1 thread (or N), an http frontend, three tcp ones and an h2c one (proto h2 both sides)", () => {
    const ports = { httpPort: 1, tcpPort: 2, iperfPort: 3, backends: [4, 5], iperfBackend: 6, echoPort: 7, echoBackend: 8, h2cPort: 9, h2cBackends: [10, 11] };
    const conf = haproxyConf(ports);
    expect(conf).toContain("nbthread 1\n");
    expect(conf.match(/mode tcp/g)).toHaveLength(6);
    expect(conf.match(/mode http/g)).toHaveLength(4);
    expect(conf).toContain("server iperf 127.0.0.1:6");
    expect(conf).toContain("bind 127.0.0.1:7\n  default_backend echo_be");
    expect(conf).toContain("server echo 127.0.0.1:8");
    expect(conf).toContain("bind 127.0.0.1:9 proto h2\n  default_backend h2c_be");
    expect(conf).toContain("  server h1 127.0.0.1:10 proto h2\n  server h2 127.0.0.1:11 proto h2\n");
    expect(haproxyConf({ ...ports, threads: 2 })).toContain("nbthread 2\n");
  });
  test("nginx backend serves / and /64k, over HTTP/2 cleartext when asked", () => {
    const conf = nginxBackendConf({ port: 9, dir: "/d", wwwDir: "/w", runAsRoot: true });
    expect(conf).toContain('return 200 "ok"');
    expect(conf).toContain("listen 127.0.0.1:9 backlog=4096;");
    expect(nginxBackendConf({ port: 9, dir: "/d", wwwDir: "/w", runAsRoot: true, http2: true })).toContain("listen 127.0.0.1:9 http2 backlog=4096;");
    expect(conf).toContain("location = /64k { root /w; }");
    expect(conf).toStartWith("# kubegate benchmark backend on 127.0.0.1:9\nuser root;");
  });
});

describe("memory", () => {
  const tree = (rssKiB: readonly number[]): TreeMemory => ({ root: 1, procs: rssKiB.map((k, i) => ({ pid: i + 1, rssKiB: k * 1024, pssKiB: (k / 2) * 1024 })) });
  test("per added worker against --workers 1, and per worker between counts", () => {
    const rows = memoryRows(new Map([[4, [tree([60, 40, 40, 40, 40])]], [1, [tree([60])]], [2, [tree([60, 40, 40])]]]), median);
    expect(rows.map((r) => [r.workers, r.processes, r.rssMiB, r.rootRssMiB, r.childRssMiB, r.rssPerAddedMiB, r.rssStepMiB])).toEqual([
      [1, 1, 60, 60, Number.NaN, Number.NaN, Number.NaN],
      [2, 3, 140, 60, 40, 80, 80],
      [4, 5, 220, 60, 40, 160 / 3, 40],
    ]);
    expect([rows[2]!.pssMiB, rows[2]!.pssStepMiB]).toEqual([110, 20]);
    expect(renderMemoryTable(rows)).toContain("| 4 | 5 | 220.0 | 110.0 | 60.0 | 40.0 | 53.3 | 26.7 | 40.0 | 20.0 |");
    expect(() => memoryRows(new Map([[2, [tree([1])]]]), median)).toThrow("No --workers 1 measurement");
  });
});

describe("ports", () => {
  test("never hands out the same port twice, though the OS may report it free again", async () => {
    const ports = new PortAllocator();
    const got: number[] = [];
    for (let i = 0; i < 20; i++) got.push(await ports.next());
    expect(new Set(got).size).toBe(20);
  });
});

describe("processes", () => {
  test("pinned adds nice and taskset in front", () => {
    expect(pinned(1, ["wrk"], -10)).toEqual(["nice", "-n", "-10", "taskset", "-c", "1", "wrk"]);
    expect(pinned(undefined, ["wrk"])).toEqual(["wrk"]);
  });
  test("tools are found on PATH, and a missing one is reported", () => {
    expect(hasCommand("sh")).toBe(true);
    expect(missingTools([{ command: "sh", pkg: "dash" }, { command: "no-such-tool-kubegate", pkg: "x" }])).toEqual([{ command: "no-such-tool-kubegate", pkg: "x" }]);
  });
  test("a run past its timeout is killed; a daemon is stopped by PID with its children", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-lib-"));
    await using group = new ProcessGroup(dir);
    try {
      const slow = await group.run("slow", ["sleep", "30"], { timeoutMs: 200 });
      expect([slow.timedOut, slow.code === 0]).toEqual([true, false]);
      const ok = await group.run("echo", ["sh", "-c", "echo hi; echo err >&2"], { timeoutMs: 5_000 });
      expect([ok.code, ok.stdout, ok.stderr, ok.timedOut]).toEqual([0, "hi\n", "err\n", false]);

      const d = group.start("tree", ["sh", "-c", "sleep 30 & echo started; wait"]);
      const deadline = performance.now() + 5_000;
      while (!d.logTail().includes("started") && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(group.pids()).toEqual([d.pid]);
      await group.stop(d, 2_000);
      expect(d.hasExited()).toBe(true);
      expect(group.pids()).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test("the h2c origin answers 200 ok over HTTP/2 (GET and a request with a body); h2Answers says no to a closed port", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-lib-"));
    await using group = new ProcessGroup(dir);
    try {
      const ports = new PortAllocator();
      const [port, closed] = [await ports.next(), await ports.next()];
      const d = group.start("h2c", [process.execPath, h2cBackendScript, String(port)]);
      await waitForH2(`http://127.0.0.1:${port}/`, d);
      const post = await group.runOk("h2load", ["h2load", "-n", "20", "-c", "2", "-m", "4", "-d", h2cBackendScript, `http://127.0.0.1:${port}/upload`], { timeoutMs: 10_000 });
      expect(parseH2loadSummary(post.stdout)).toMatchObject({ requests: 20, errors: 0 });
      expect(await h2Answers(`http://127.0.0.1:${closed}/`)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
