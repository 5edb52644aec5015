/**
 * The live admin page in headless Chromium against a whole gateway and the test API server: a
 * Service added through the API server appears without a reload, endpoint state changes follow,
 * hostile names stay text, and the server-rendered page is readable with JavaScript off.
 * Needs Debian's `chromium` at /usr/bin/chromium (and `playwright-core`); saves a screenshot.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, chromium } from "playwright-core";
import type { Gateway } from "../../src/gateway.ts";
import { startTestGateway } from "../support/gateway.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { freePort } from "../support/ports.ts";

const executablePath = "/usr/bin/chromium";
const chromiumArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const hostile = "<img src=x onerror=alert(1)>";

function service(name: string, nodePort: number) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: { type: "NodePort", selector: { app: "x" }, ports: [{ name: "http", port: 80, targetPort: 8080, nodePort, appProtocol: "http" }] },
  };
}

function slice(svc: string, name: string, port: number, ready: boolean) {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: "e2e", labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    ports: [{ name: "http", port, protocol: "TCP" }],
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready }, nodeName: "node-a", targetRef: { kind: "Pod", name: `${svc}-pod-1`, namespace: "e2e" } }],
  };
}

describe("admin page in headless Chromium", () => {
  let api: TestApiServer;
  let gw: Gateway;
  let browser: Browser;
  let dir: string;

  beforeAll(async () => {
    if (!existsSync(executablePath)) throw new Error(`Cannot run the admin page test: no Chromium at "${executablePath}" (apt-get install chromium)`);
    dir = await mkdtemp(join(tmpdir(), "kubegate-admin-page-"));
    api = await startApiServer({ bookmarkIntervalMs: 500 });
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    api.create(service("existing", await freePort()));
    api.create(slice("existing", "existing-a", 9, true));
    gw = await startTestGateway(api);
    browser = await chromium.launch({ executablePath, headless: true, args: chromiumArgs, timeout: 10_000 });
  }, 20_000);

  afterAll(async () => {
    await browser?.close();
    await gw?.[Symbol.asyncDispose]();
    await api?.[Symbol.asyncDispose]();
  });

  test("a Service added through the API server shows up live, without a reload", async () => {
    await using context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on("dialog", (d) => (problems.push(`dialog: ${d.message()}`), void d.dismiss()));
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
    await page.goto(`http://127.0.0.1:${gw.adminPort}/`);
    // The server-rendered page already lists what exists; the script then goes live over SSE.
    await page.locator('tr[data-key="NodePort/e2e/existing:http"]').waitFor({ timeout: 2_000 });
    await page.locator("#live", { hasText: "live" }).waitFor({ timeout: 5_000 });
    await page.evaluate(() => ((globalThis as unknown as { notReloaded: boolean }).notReloaded = true));

    const nodePort = await freePort();
    api.create(service("pagedemo", nodePort));
    api.create(slice("pagedemo", "pagedemo-a", 8080, true));
    api.create({ ...service(hostile, await freePort()), metadata: { ...service(hostile, 0).metadata, name: hostile } });

    const row = page.locator('tr[data-key="NodePort/e2e/pagedemo:http"]');
    await row.waitFor({ timeout: 5_000 });
    await row.getByText("ready", { exact: true }).waitFor({ timeout: 5_000 });
    expect(await row.innerText()).toContain(`127.0.0.1:${nodePort}`);
    expect(await row.innerText()).toContain("bound");
    expect(await row.innerText()).toContain("127.0.0.1:8080");
    expect(await row.innerText()).toContain("pagedemo-pod-1");

    // An endpoint state change follows, too.
    api.update({ ...slice("pagedemo", "pagedemo-a", 8080, false), metadata: (api.get("endpointslices", "e2e", "pagedemo-a") as { metadata: object }).metadata });
    await row.getByText("not ready", { exact: true }).waitFor({ timeout: 5_000 });
    expect(await row.innerText()).toContain("0 of 1 receive traffic");

    // The hostile name is text: shown literally, no element made of it, no script ran.
    const hostileRow = page.locator(`tr[data-key="NodePort/e2e/${hostile}:http"]`);
    await hostileRow.waitFor({ timeout: 5_000 });
    expect(await hostileRow.locator("strong").innerText()).toBe(`e2e/${hostile}:http`);
    expect(await page.locator("main img").count()).toBe(0);

    expect(await page.evaluate(() => (globalThis as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
    expect(problems).toEqual([]);
    const shot = join(dir, "admin-page.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`admin page screenshot: ${shot}`);
  }, 15_000);

  test("with JavaScript off, the server-rendered page shows the current state", async () => {
    await using context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    const res = await page.goto(`http://127.0.0.1:${gw.adminPort}/?q=existing`);
    expect(res?.status()).toBe(200);
    const row = page.locator('tr[data-key="NodePort/e2e/existing:http"]');
    expect(await row.innerText()).toContain("e2e/existing:http");
    expect(await row.innerText()).toContain("ready");
    expect(await page.locator("#live").innerText()).toBe("static page: reloads every 10 s");
    expect(await page.locator("#entrypoints tbody tr").count()).toBe(1);
    expect(await page.locator("#sync").innerText()).toContain("watching");
  }, 10_000);
});
