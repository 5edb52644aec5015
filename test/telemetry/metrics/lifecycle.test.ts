/**
 * Lifecycle metrics: the state file's staleness, age and writes (`--state-file`) and the shutdown gauge,
 * read from their views at scrape time.
 */
import { describe, expect, test } from "bun:test";
import { GatewayMetrics, type StateFileView } from "../../../src/telemetry/metrics/index.ts";
import { parseScrape, valueOf } from "../../support/metrics-parse.ts";

describe("state file and shutdown metrics", () => {
  test("stale, age, writes and last write follow the state view", () => {
    let now = 1_800_000_000_000;
    let view: StateFileView = { stale: true, savedAt: now - 42_500, writes: 0, writeErrors: 0 };
    const metrics = new GatewayMetrics({ state: () => view, now: () => now });
    let s = parseScrape(metrics.expose());
    expect(valueOf(s, "kubegate_state_stale", {})).toBe(1);
    expect(valueOf(s, "kubegate_state_age_seconds", {})).toBe(42.5);
    expect(valueOf(s, "kubegate_state_writes_total", { result: "success" })).toBe(0);
    expect(valueOf(s, "kubegate_state_last_write_timestamp_seconds", {})).toBe(0);
    expect(s.types.get("kubegate_state_writes_total")).toBe("counter");

    now += 10_000;
    expect(valueOf(parseScrape(metrics.expose()), "kubegate_state_age_seconds", {})).toBe(52.5);

    // The live source synced: no longer stale, age 0; the file is written.
    view = { stale: false, savedAt: view.savedAt, writes: 2, writeErrors: 1, lastWriteAt: now };
    s = parseScrape(metrics.expose());
    expect(valueOf(s, "kubegate_state_stale", {})).toBe(0);
    expect(valueOf(s, "kubegate_state_age_seconds", {})).toBe(0);
    expect(valueOf(s, "kubegate_state_writes_total", { result: "success" })).toBe(2);
    expect(valueOf(s, "kubegate_state_writes_total", { result: "error" })).toBe(1);
    expect(valueOf(s, "kubegate_state_last_write_timestamp_seconds", {})).toBe(now / 1000);
  });

  test("without --state-file there are no state families; kubegate_shutting_down is always there", () => {
    let down = false;
    const metrics = new GatewayMetrics({ shuttingDown: () => down });
    let s = parseScrape(metrics.expose());
    expect([...s.types.keys()].filter((n) => n.startsWith("kubegate_state_"))).toEqual([]);
    expect(valueOf(s, "kubegate_shutting_down", {})).toBe(0);
    down = true;
    s = parseScrape(metrics.expose());
    expect(valueOf(s, "kubegate_shutting_down", {})).toBe(1);
    expect(valueOf(parseScrape(new GatewayMetrics().expose()), "kubegate_shutting_down", {})).toBe(0);
  });
});
