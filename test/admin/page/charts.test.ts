/**
 * The live page's charts (issue 16): requests/s per Service port over the last 15 minutes, drawn as inline SVG with
 * no external assets, the busiest first, endpoint changes marked; in the server's first paint and re-drawn in
 * headless Chromium by the page's own script (SVG elements in the SVG namespace, under the page's strict CSP).
 * The admin app runs on a fake clock that moves a step per request, so minutes of history take no wall time.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { type AdminView, adminApp } from "../../../src/admin/app.ts";
import { HISTORY_STEP_MS } from "../../../src/admin/page/history.ts";
import type { PageState } from "../../../src/admin/page/state.ts";
import { rt } from "../../../src/runtime/index.ts";
import type { TrafficSample } from "../../../src/telemetry/metrics/traffic.ts";
import { endpoint, entrypoint, snapshot } from "../../support/entrypoints.ts";

const executablePath = "/usr/bin/chromium";
const chromiumArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

/** Three Service ports with different loads; `web`'s endpoints change at the 8th step. */
function busyView() {
  let step = 0;
  const counts = { web: 0, api: 0, idle: 0 };
  const one = entrypoint({ name: "ns/web:http", protocol: "http", endpoints: [endpoint(8080)] });
  const two = entrypoint({ name: "ns/web:http", protocol: "http", endpoints: [endpoint(8080), endpoint(8081)] });
  const api = entrypoint({ name: "ns/api:grpc", protocol: "h2c", endpoints: [endpoint(9090)] });
  const idle = entrypoint({ name: "ns/idle:tcp", endpoints: [endpoint(7070)] });
  const view: AdminView = {
    snapshot: () => snapshot(step >= 8 ? two : one, api, idle),
    listeners: () => [],
    sources: () => [],
    traffic: (): TrafficSample[] => [
      // Every web request takes between 1 and 2.5 ms (the third latency bucket).
      { key: "ns/web:http", requests: counts.web, errors: Math.floor(counts.web / 50), active: 3, bytesIn: 0, bytesOut: 0, latency: [0, 0, counts.web, ...new Array<number>(14).fill(0)] },
      { key: "ns/api:grpc", requests: counts.api, errors: 0, active: 1, bytesIn: 0, bytesOut: 0 },
      { key: "ns/idle:tcp", requests: counts.idle, errors: 0, active: 0, bytesIn: 0, bytesOut: 0 },
    ],
  };
  return {
    view,
    /** One step of traffic: web ramps up, api steady, idle nothing. */
    advance() {
      step++;
      counts.web += (step * 10 * HISTORY_STEP_MS) / 1000;
      counts.api += (20 * HISTORY_STEP_MS) / 1000;
    },
    now: () => 1_000 * HISTORY_STEP_MS + step * HISTORY_STEP_MS,
  };
}

describe("live page charts", () => {
  test("the state carries the busiest Service ports' history, with the endpoint change marked", async () => {
    const v = busyView();
    const app = adminApp(v.view, { now: v.now });
    for (let i = 0; i < 12; i++) {
      await app.request("/api/state");
      v.advance();
    }
    const s = (await (await app.request("/api/state")).json()) as PageState;
    expect(s.charts!.map((c) => c.key)).toEqual(["ns/web:http", "ns/api:grpc", "ns/idle:tcp"]);
    const web = s.charts![0]!;
    expect(web.requests.at(-1)).toBe(120);
    expect(web.requests.slice(0, 3)).toEqual([10, 20, 30]);
    expect(web.changes).toEqual([7]);
    // p99 of 1–2.5 ms requests, interpolated as histogram_quantile does; TCP ports have none.
    expect(web.p99!.slice(1).every((v) => v !== null && v > 1 && v <= 2.5)).toBe(true);
    expect(s.charts![2]!.p99).toBeUndefined();
    expect(s.charts![1]!.requests.every((r) => r === 20)).toBe(true);
    // A filter narrows the charts as it narrows the tables.
    const filtered = (await (await app.request("/api/state?q=api")).json()) as PageState;
    expect(filtered.charts!.map((c) => c.key)).toEqual(["ns/api:grpc"]);
    const html = await (await app.request("/")).text();
    expect(html).toContain('<polyline class="req" points="');
    expect(html).toContain('class="change"');
  });

  test("headless Chromium draws them from the page's script (SVG namespace, strict CSP) and a screenshot is saved", async () => {
    if (!existsSync(executablePath)) throw new Error(`No Chromium at "${executablePath}" (apt-get install chromium)`);
    const v = busyView();
    const app = adminApp(v.view, { now: v.now });
    for (let i = 0; i < 30; i++) {
      await app.request("/api/state");
      v.advance();
    }
    await using server = rt.serveHttp({ hostname: "127.0.0.1", port: 0, fetch: (r) => app.fetch(r) });
    const browser = await chromium.launch({ executablePath, headless: true, args: chromiumArgs, timeout: 10_000 });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const problems: string[] = [];
      page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
      page.on("pageerror", (e) => problems.push(String(e)));
      await page.goto(`http://127.0.0.1:${server.port}/`);
      await page.locator("#live", { hasText: "live" }).waitFor({ timeout: 5_000 });
      // Re-rendered by the script on the next update: advance the clock and wait for the redraw.
      v.advance();
      await page.locator("figure.chart").first().waitFor({ timeout: 5_000 });
      const drawn = await page.evaluate(() =>
        [...document.querySelectorAll("figure.chart polyline.req")].map((p) => ({ ns: p.namespaceURI, points: p.getAttribute("points")!.split(" ").length, width: (p as SVGGraphicsElement).getBBox().width })),
      );
      expect(drawn.length).toBe(3);
      for (const d of drawn) expect(d.ns).toBe("http://www.w3.org/2000/svg");
      expect(drawn[0]!.points).toBeGreaterThanOrEqual(30);
      // A real drawing: the line spans most of the chart's width.
      expect(drawn[0]!.width).toBeGreaterThan(200);
      expect(await page.locator("figure.chart line.change").count()).toBe(1);
      // The web chart has its p99 strip, in the SVG namespace too.
      expect(await page.evaluate(() => [...document.querySelectorAll("figure.chart polyline.p99")].map((p) => p.namespaceURI))).toEqual(["http://www.w3.org/2000/svg"]);
      expect(await page.locator("figure.chart figcaption").first().innerText()).toMatch(/p99 \d+(\.\d)? ms/);
      expect(problems).toEqual([]);
      const shot = join(await mkdtemp(join(tmpdir(), "kubegate-charts-")), "charts.png");
      await page.locator("#charts").screenshot({ path: shot });
      console.log(`charts screenshot: ${shot}`);
    } finally {
      await browser.close();
    }
  }, 30_000);
});
