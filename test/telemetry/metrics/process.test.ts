/**
 * Process metrics (src/telemetry/metrics/process.ts): the standard `process_*` families of the process serving
 * /metrics, each worker's CPU and memory from /proc, and the event loop's lag; checked by promtool.
 */
import { describe, expect, test } from "bun:test";
import { ExpositionWriter } from "../../../src/telemetry/metrics/exposition.ts";
import { LoopLag, ProcessMetrics, procSample } from "../../../src/telemetry/metrics/process.ts";
import { parseScrape, valueOf } from "../../support/metrics-parse.ts";
import { waitFor } from "../../support/wait.ts";

function scrape(m: ProcessMetrics): string {
  const out = new ExpositionWriter();
  m.collect(out);
  return out.text();
}

describe("procSample", () => {
  test("reads utime, stime and rss of /proc/<pid>/stat, a command name with spaces and parentheses included", () => {
    // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ... rss is field 24.
    const stat = "42 (bun (worker) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 1000 123456789 2560 18446744073709551615";
    expect(procSample(42, () => stat)).toEqual({ cpuSeconds: 3, residentBytes: 2560 * 4096 });
    expect(procSample(43, () => { throw new Error("ENOENT"); })).toBeUndefined();
  });

  test("this process's own /proc entry agrees with what the runtime reports", () => {
    const s = procSample(process.pid)!;
    expect(s.residentBytes).toBeGreaterThan(10 * 1024 * 1024);
    const rss = process.memoryUsage.rss();
    expect(Math.abs(s.residentBytes - rss)).toBeLessThan(rss * 0.5);
  });
});

describe("ProcessMetrics", () => {
  test("the process families, workers by label, and promtool finds nothing to report", async () => {
    using m = new ProcessMetrics({
      files: () => ({ open: 12, limit: 1024 }),
      workers: () => [{ worker: 0, pid: 100 }, { worker: 1, pid: 101 }, { worker: 2, pid: 102 }],
      sample: (pid) => (pid === 102 ? undefined : { cpuSeconds: pid - 90, residentBytes: pid * 1_000 }),
    });
    const text = scrape(m);
    const s = parseScrape(text);
    expect(valueOf(s, "process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(valueOf(s, "process_resident_memory_bytes")).toBeGreaterThan(0);
    expect(valueOf(s, "process_open_fds")).toBe(12);
    expect(valueOf(s, "process_max_fds")).toBe(1024);
    expect(Math.abs(valueOf(s, "process_start_time_seconds")! - (Date.now() / 1000 - performance.now() / 1000))).toBeLessThan(1);
    expect(valueOf(s, "kubegate_worker_cpu_seconds_total", { worker: "0" })).toBe(10);
    expect(valueOf(s, "kubegate_worker_resident_memory_bytes", { worker: "1" })).toBe(101_000);
    // A worker whose /proc entry cannot be read (just restarted) is left out, not written as 0.
    expect(valueOf(s, "kubegate_worker_cpu_seconds_total", { worker: "2" })).toBeUndefined();
    if (!Bun.which("promtool")) throw new Error('promtool not found (scripts/pretest.sh installs Debian\'s prometheus package)');
    const child = Bun.spawn(["promtool", "check", "metrics"], { stdin: new Blob([text]), stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
    expect({ code, out: `${out}${err}`.trim() }).toEqual({ code: 0, out: "" });
  });

  test("CPU time grows with work done", () => {
    using m = new ProcessMetrics();
    const before = valueOf(parseScrape(scrape(m)), "process_cpu_seconds_total")!;
    const until = performance.now() + 150;
    let x = 0;
    while (performance.now() < until) x += Math.sqrt(x + 1);
    expect(x).toBeGreaterThan(0);
    expect(valueOf(parseScrape(scrape(m)), "process_cpu_seconds_total")!).toBeGreaterThan(before + 0.1);
  });
});

describe("LoopLag", () => {
  test("a loop blocked for 300 ms shows up as about 300 ms of lag", async () => {
    using lag = new LoopLag(20);
    const until = performance.now() + 300;
    while (performance.now() < until) {
      // the event loop is blocked
    }
    await waitFor(() => lag.seconds() >= 0.25, { what: "the lag to be seen", timeoutMs: 2_000 });
    expect(lag.seconds()).toBeLessThan(1);
  });
});
