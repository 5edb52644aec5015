/**
 * `WorkerPool` without processes: a fake `spawn` whose children exit at once shows the restart back-off of a crash
 * loop (a worker that keeps dying is started again less and less often, not every 200 ms for ever).
 */
import { describe, expect, test } from "bun:test";
import { parseFlags } from "../../src/config/flags.ts";
import { dataPlaneSettings } from "../../src/data-plane/settings.ts";
import { MAX_RESTART_DELAY_MS, RESTART_DELAY_MS, WorkerPool } from "../../src/data-plane/workers.ts";
import type { Logger } from "../../src/log.ts";
import type { ChildProcess } from "../../src/runtime/types.ts";
import { waitFor } from "../support/wait.ts";

function settings() {
  const parsed = parseFlags([], { hostname: "node-a" });
  if (parsed.kind !== "run") throw new Error("bad flags");
  return dataPlaneSettings(parsed.config, "test");
}

describe("WorkerPool", () => {
  test("a worker that keeps exiting at start is restarted with a doubling pause, up to the cap", async () => {
    const delays: number[] = [];
    let spawned = 0;
    const log: Logger = {
      debug() {},
      info() {},
      error() {},
      warn: (msg, fields) => void (msg.startsWith("A worker exited") && delays.push(Number(fields?.inMs))),
    };
    const spawn = (): ChildProcess => {
      spawned++;
      return { pid: 1000 + spawned, send: () => true, kill() {}, exited: Promise.resolve(1) };
    };
    const pool = new WorkerPool(settings(), { workers: 1, command: ["unused"], spawn, log });
    await waitFor(() => delays.length >= 4, { what: "four restarts", timeoutMs: 10_000 });
    await pool[Symbol.asyncDispose]();
    expect(delays.slice(0, 4)).toEqual([RESTART_DELAY_MS, RESTART_DELAY_MS * 2, RESTART_DELAY_MS * 4, RESTART_DELAY_MS * 8]);
    expect(Math.max(...delays)).toBeLessThanOrEqual(MAX_RESTART_DELAY_MS);
    const after = spawned;
    // Disposed: the restart already scheduled (after the next, doubled pause) does not happen.
    await new Promise((r) => setTimeout(r, RESTART_DELAY_MS * 16 + 200));
    expect(spawned).toBe(after);
    expect(pool.workers()).toEqual([{ worker: 0, pid: 0, ready: false, restarts: delays.length, connections: 0, requests: 0 }]);
  }, 20_000);
});
