/**
 * The benchmark harness's pure parts (parsers, statistics, report, generated configs) and its
 * process handling. The benchmark itself is not a test: `bun test/bench/run.ts`.
 */
import { describe, expect, test } from "bun:test";
import { parseManifests } from "../../../src/kube/manifests.ts";
import { nginxBackendConf } from "../backends/nginx-backend.ts";
import { haproxyConf } from "../configs/haproxy.ts";
import { kubegateManifests } from "../configs/kubegate-manifests.ts";
import { nginxProxyConf } from "../configs/nginx-proxy.ts";
import { parseBenchArgs } from "./args.ts";
import { type CoreTicks, cpuUsage, parseCoreTicks, procStatTicks, procStatTicksWithChildren } from "./cpu.ts";
import { h2loadArgs, h2loadFailed, parseH2loadLog } from "./h2load.ts";
import { parseIperfJson } from "./iperf.ts";
import { PortAllocator } from "./ports.ts";
import { pinned, ProcessGroup } from "./procs.ts";
import { type RawRun, renderReport, reviveRawRun } from "./render.ts";
import { aggregate, checkTargets, pairedRatio, renderTable, type Sample } from "./report.ts";
import { median, percentileSorted, ratio } from "./stats.ts";
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
    expect([full.options.durationS, full.options.repeat, full.options.cases.length]).toEqual([10, 3, 6]);
    expect([quick.options.durationS, quick.options.repeat, quick.options.noiseRetries]).toEqual([3, 1, 0]);
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
    expect(checkTargets(aggregate(samples)).map((c) => c.met)).toEqual([true, undefined, false, undefined]);
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
});

describe("configs", () => {
  test("kubegate's manifests load without errors: 3 Services, 5 EndpointSlices, 1 Node", () => {
    const text = kubegateManifests({ nodeName: "n", httpNodePort: 31001, tcpNodePort: 31002, iperfNodePort: 31003, backends: [18081, 18082], iperfBackend: 5201 });
    const { objects, errors } = parseManifests(text, "bench.yaml");
    expect(errors).toEqual([]);
    const kinds = objects.map((o) => o.kind).sort();
    expect(kinds).toEqual(["EndpointSlice", "EndpointSlice", "EndpointSlice", "EndpointSlice", "EndpointSlice", "Node", "Service", "Service", "Service"]);
    expect(objects.every((o) => o.event.type !== "invalid")).toBe(true);
    expect(text).toContain("appProtocol: http");
  });
  test("nginx proxy: 1 worker, upstream keepalive, HTTP/1.1 with Connection cleared", () => {
    const conf = nginxProxyConf({ port: 1, backends: [2, 3], dir: "/d", runAsRoot: false });
    for (const s of ["worker_processes 1;", "keepalive 64;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";', "server 127.0.0.1:3;"]) expect(conf).toContain(s);
    expect(conf).not.toContain("user root");
  });
  test("haproxy: 1 thread, an http and two tcp frontends", () => {
    const conf = haproxyConf({ httpPort: 1, tcpPort: 2, iperfPort: 3, backends: [4, 5], iperfBackend: 6 });
    expect(conf).toContain("nbthread 1");
    expect(conf.match(/mode tcp/g)).toHaveLength(4);
    expect(conf).toContain("server iperf 127.0.0.1:6");
  });
  test("nginx backend serves / and /64k", () => {
    const conf = nginxBackendConf({ port: 9, dir: "/d", wwwDir: "/w", runAsRoot: true });
    expect(conf).toContain('return 200 "ok"');
    expect(conf).toContain("location = /64k { root /w; }");
    expect(conf).toStartWith("# kubegate benchmark backend on 127.0.0.1:9\nuser root;");
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
});
