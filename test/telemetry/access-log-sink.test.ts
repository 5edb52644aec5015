/**
 * The access log's own sink: lines appended to a file byte for byte as the string sink gets them, at once (a
 * regular file takes a synchronous write per batch), reopened after logrotate moved the file; a pipe that nobody reads makes records drop whole and counted, with bounded memory and
 * a data plane that never waits; sampling keeps that share of successes and every failure; /metrics shows the drops.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { closeSync, constants, openSync, readFileSync, readSync } from "node:fs";
import { mkdtemp, readFile, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AccessLog, type HttpAccessRecord } from "../../src/telemetry/access-log.ts";
import { GatewayMetrics } from "../../src/telemetry/metrics/gateway-metrics.ts";
import { waitFor } from "../support/wait.ts";

const ok: HttpAccessRecord = { entrypoint: "ns/s:p", client: "10.0.0.1", endpoint: "10.1.0.1:80", method: "GET", path: "/", status: 200, bytesIn: 78, bytesOut: 150, durationMs: 0.125, error: "", traceId: "" };

async function tempDir() {
  const dir = await mkdtemp(join(tmpdir(), "kubegate-access-log-"));
  return { dir, [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
}

/** The line format as a string template (what the access log wrote before it wrote bytes): the reference. */
function referenceLine(r: HttpAccessRecord, ms: number): string {
  const q = (s: string) => JSON.stringify(s);
  const round = (x: number) => Math.round(x * 1000) / 1000;
  const time = new Date(ms).toISOString();
  return `{"time":"${time}","level":"info","msg":"access","protocol":"http","entrypoint":${q(r.entrypoint)},"client":${q(r.client)},"endpoint":${q(r.endpoint)},"method":${q(r.method)},"path":${q(r.path)},"status":${r.status},"bytes_in":${r.bytesIn},"bytes_out":${r.bytesOut},"duration_ms":${round(r.durationMs)}${r.error ? `,"error":${q(r.error)}` : ""}${r.traceId ? `,"trace_id":"${r.traceId}"` : ""}}`;
}

describe("AccessLog sink", () => {
  test("lines are byte for byte the reference format: numbers of every size, escapes, non-ASCII, lone surrogates", async () => {
    const batches: string[] = [];
    let clock = 1_700_000_000_000;
    const log = new AccessLog({ write: (b) => void batches.push(b), now: () => clock, maxBufferBytes: 4096 });
    const odd = ["", "/", "/a b", '/q"uote', "/back\\slash", "/tab\t", "/\u0001", "/é/日本", "/\ud800lone", "/😀", "x".repeat(700)];
    const durations = [0, 0.0004, 0.0005, 0.001, 0.01, 0.1, 0.25, 1, 1.5, 2.0005, 12.345678, 999.9999, 1e6 + 0.123, 1e12 + 0.5, 1e13, 1e15, 1e20, -1, Number.NaN];
    const expected: string[] = [];
    let seed = 1;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    for (let i = 0; i < 3000; i++) {
      clock += Math.floor(rnd() * 1500);
      const r: HttpAccessRecord = {
        entrypoint: i % 7 === 0 ? "ns/é:p" : `ns/s${i % 3}:p`,
        client: i % 5 === 0 ? "::1" : "10.0.0.1",
        endpoint: i % 11 === 0 ? "" : "10.1.0.1:80",
        method: i % 13 === 0 ? "PÖST" : "GET",
        path: odd[i % odd.length]!,
        status: [200, 404, 502, 0][i % 4]!,
        bytesIn: [0, 7, 10, 99, 12345, 2 ** 31 + 5, 2 ** 53 + 2][i % 7]!,
        bytesOut: Math.floor(rnd() * 10 ** (i % 12)),
        durationMs: i < durations.length ? durations[i]! : rnd() * 10 ** ((i % 9) - 3),
        error: i % 17 === 0 ? "upstream_reset" : "",
        traceId: i % 19 === 0 ? "4bf92f3577b34da6a3ce929d0e0e4736" : "",
      };
      log.http(r);
      expected.push(referenceLine(r, clock));
    }
    await log.close();
    expect(batches.flatMap((b) => b.split("\n"))).toEqual(expected);
  });

  test("a file gets the same bytes as the string sink; after a rename, reopen() writes to a new file", async () => {
    await using tmp = await tempDir();
    const path = join(tmp.dir, "access.log");
    const now = () => 1_700_000_000_123;
    const batches: string[] = [];
    const reference = new AccessLog({ write: (b) => void batches.push(b), now });
    const log = new AccessLog({ file: path, now, flushMs: 5 });
    const records = [ok, { ...ok, path: '/we"ird\n/é', status: 502, error: "upstream_reset" }, { ...ok, traceId: "4bf92f3577b34da6a3ce929d0e0e4736" }];
    for (const r of records) (reference.http(r), log.http(r));
    reference.stream({ protocol: "udp", entrypoint: "ns/s:53", client: "c", endpoint: "e", bytesIn: 1, bytesOut: 2, durationMs: 1, close: "idle_timeout", traceId: "" });
    log.stream({ protocol: "udp", entrypoint: "ns/s:53", client: "c", endpoint: "e", bytesIn: 1, bytesOut: 2, durationMs: 1, close: "idle_timeout", traceId: "" });
    await reference.close();
    const expected = `${batches.join("\n")}\n`;
    await waitFor(async () => (await readFile(path, "utf8")) === expected, { what: "the lines in the file" });

    await rename(path, `${path}.1`);
    log.reopen();
    log.http({ ...ok, path: "/after" });
    await log.close();
    expect(await readFile(`${path}.1`, "utf8")).toBe(expected);
    const after = (await readFile(path, "utf8")).split("\n");
    expect(after).toHaveLength(2);
    expect(JSON.parse(after[0]!)).toMatchObject({ path: "/after" });
    expect(log.dropped).toBe(0);
  });

  test("a regular file takes each batch at once, into one reused buffer: full batches and flush() are on disk without a turn of the event loop", async () => {
    await using tmp = await tempDir();
    const path = join(tmp.dir, "access.log");
    const log = new AccessLog({ file: path, flushMs: 60_000, maxBufferBytes: 16 * 1024 });
    try {
      const size = () => Bun.file(path).size;
      let n = 0;
      while (size() === 0 && n < 10_000) (log.http(ok), n++);
      expect(size()).toBeGreaterThan(12 * 1024); // a whole batch (full at 16 KiB less a line's room)
      expect(n).toBeLessThan(200);
      log.http({ ...ok, path: "/last" });
      log.flush();
      // Read at once, without awaiting: an asynchronous sink would have the second batch queued or in flight.
      const lines = readFileSync(path, "utf8").trimEnd().split("\n");
      expect(lines).toHaveLength(n + 1);
      expect(JSON.parse(lines.at(-1)!)).toMatchObject({ path: "/last" });
      expect(log.dropped).toBe(0);
    } finally {
      await log.close();
    }
  });

  test("a pipe is written through a non-blocking descriptor of its own, in one turn, in whole-line pieces of at most 4 KiB", async () => {
    await using tmp = await tempDir();
    const fifo = join(tmp.dir, "fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    await using _r = { [Symbol.asyncDispose]: async () => closeSync(reader) };
    const log = new AccessLog({ file: fifo, flushMs: 60_000 });
    try {
      const n = 100; // ~13 KB: four pieces; an asynchronous sink writes each after the previous one's callback
      for (let i = 0; i < n; i++) log.http({ ...ok, bytesIn: i });
      log.flush();
      await new Promise((resolve) => setImmediate(resolve)); // one turn of the event loop
      const buf = Buffer.alloc(64 * 1024);
      const got = readSync(reader, buf, 0, buf.length, null);
      const lines = buf.subarray(0, got).toString("utf8").trimEnd().split("\n");
      expect(lines).toHaveLength(n);
      expect(lines.map((l) => JSON.parse(l).bytes_in)).toEqual(Array.from({ length: n }, (_, i) => i));
      expect(log.dropped).toBe(0);
    } finally {
      await log.close();
    }
  });

  test("a pipe nobody reads: records drop whole and counted, the queue stays bounded, logging never waits", async () => {
    await using tmp = await tempDir();
    const fifo = join(tmp.dir, "fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    // Non-blocking reader: the writer's open does not wait, and reads return EAGAIN when the pipe is empty.
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    await using _r = { [Symbol.asyncDispose]: async () => closeSync(reader) };
    const maxQueueBytes = 64 * 1024;
    const log = new AccessLog({ file: fifo, flushMs: 5, maxQueueBytes, maxBufferBytes: 16 * 1024 });
    const records = 20_000; // ~2.6 MB of lines: far more than the pipe (64 KiB) and the queue hold
    const started = performance.now();
    for (let i = 0; i < records; i++) log.http({ ...ok, bytesIn: i });
    log.flush();
    const loggingMs = performance.now() - started;
    await waitFor(() => log.dropped > 0, { what: "drops" });
    expect(loggingMs).toBeLessThan(2_000);

    // Now read everything: every line arrives whole, and lines read + dropped = records logged.
    let text = "";
    const buf = Buffer.alloc(64 * 1024);
    const closed = log.close(5_000);
    const lines = await waitFor(
      () => {
        for (;;) {
          let n = 0;
          try {
            n = readSync(reader, buf, 0, buf.length, null);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
          }
          if (n <= 0) break;
          text += buf.toString("latin1", 0, n);
        }
        const got = text.endsWith("\n") ? text.slice(0, -1).split("\n") : [];
        return got.length + log.dropped === records ? got : undefined;
      },
      { what: "every line not dropped", timeoutMs: 10_000 },
    );
    await closed;
    for (const line of lines) expect(JSON.parse(line)).toMatchObject({ msg: "access", status: 200 });
    // Bounded: what got through is at most the pipe, the queue and one batch (with slack), far below what was logged.
    expect(text.length).toBeLessThan(512 * 1024);
    expect(log.dropped).toBeGreaterThan(records / 2);
  });

  test("sampling logs that share of successes, and every failure", async () => {
    const batches: string[] = [];
    let i = 0;
    const log = new AccessLog({ write: (b) => void batches.push(b), sample: 0.25, random: () => (i++ % 4) / 4 });
    for (let n = 0; n < 100; n++) log.http(ok);
    for (let n = 0; n < 10; n++) log.http({ ...ok, status: 503, error: "no_endpoints" });
    for (let n = 0; n < 10; n++) log.http({ ...ok, status: 500 }); // the upstream's own failure
    for (let n = 0; n < 10; n++) log.http({ ...ok, status: 200, error: "client_closed" });
    for (let n = 0; n < 40; n++) log.stream({ protocol: "tcp", entrypoint: "e", client: "c", endpoint: "e", bytesIn: 0, bytesOut: 0, durationMs: 1, close: "client_closed", traceId: "" });
    for (let n = 0; n < 10; n++) log.stream({ protocol: "tcp", entrypoint: "e", client: "c", endpoint: "", bytesIn: 0, bytesOut: 0, durationMs: 1, close: "connect_refused", traceId: "" });
    await log.close();
    const lines = batches.flatMap((b) => b.split("\n")).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.filter((l) => l.status === 200 && l.error === undefined)).toHaveLength(25);
    expect(lines.filter((l) => l.status === 503 || l.status === 500 || l.error === "client_closed")).toHaveLength(30);
    expect(lines.filter((l) => l.close === "client_closed")).toHaveLength(10);
    expect(lines.filter((l) => l.close === "connect_refused")).toHaveLength(10);
    expect(log.dropped).toBe(0);
    expect(() => new AccessLog({ write: () => {}, sample: 1.5 })).toThrow("Invalid access log sample 1.5: use a ratio from 0 to 1");
  });

  test("/metrics shows kubegate_access_log_dropped_total when the access log is on", async () => {
    let dropped = 7;
    const on = new GatewayMetrics({ accessLogDropped: () => dropped });
    const scrape = async (m: GatewayMetrics) => (await m.handler(new Request("http://x/metrics")).text()).split("\n");
    expect(await scrape(on)).toContain("kubegate_access_log_dropped_total 7");
    dropped = 9;
    expect(await scrape(on)).toContain("kubegate_access_log_dropped_total 9");
    expect((await scrape(new GatewayMetrics())).some((l) => l.includes("kubegate_access_log_dropped_total"))).toBe(false);
  });
});
