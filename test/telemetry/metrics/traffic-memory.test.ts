/**
 * Memory at scale: the series of idle Service ports share one all-zero counter array; a series gets
 * its own on its first update.
 */
import { heapStats } from "bun:jsc";
import { expect, test } from "bun:test";
import type { Snapshot } from "../../../src/model/types.ts";
import { TrafficMetrics } from "../../../src/telemetry/metrics/index.ts";
import { entrypoint } from "../../support/entrypoints.ts";

function float64Arrays(): number {
  Bun.gc(true);
  return heapStats().objectTypeCounts["Float64Array"] ?? 0;
}

test("10k idle Service ports allocate no counter arrays; the first update allocates one", () => {
  const eps = Array.from({ length: 10_000 }, (_, i) => entrypoint({ name: `ns/svc-${String(i).padStart(5, "0")}:p`, protocol: "tcp" }));
  const snapshot: Snapshot = { version: 1, entrypoints: eps, errors: [], node: { name: "node-a" } };
  const traffic = new TrafficMetrics();
  const before = float64Arrays();
  traffic.sync(snapshot);
  expect(traffic.trackedSeries).toBe(10_000);
  const idle = float64Arrays();
  expect(idle - before).toBeLessThan(50);
  const handle = traffic.forEntrypoint(eps[0]!);
  handle.connOpened();
  handle.connClosed();
  expect(float64Arrays() - idle).toBe(1);
  expect(traffic.samples().find((s) => s.key === "ns/svc-00000:p")).toMatchObject({ requests: 1, active: 0 });
});
