/**
 * `--workers 2`: the data plane as two worker processes fed by one control plane, through a whole gateway against
 * the test API server. Both workers accept on every entrypoint (SO_REUSEPORT: TCP, HTTP and UDP); an endpoint change
 * reaches every worker; a killed worker is replaced while the other serves; shutdown drains them all; and workers
 * exit when their control plane dies.
 */
import { describe, expect, test } from "bun:test";
import { mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Gateway } from "../../src/gateway.ts";
import { rt } from "../../src/runtime/index.ts";
import { startApiServer } from "../support/apiserver.ts";
import { startTestGateway } from "../support/gateway.ts";
import { freePort } from "../support/ports.ts";
import { parseScrape, seriesOf } from "../support/metrics-parse.ts";
import { udpClient, udpEcho } from "../support/udp-peers.ts";
import { waitFor } from "../support/wait.ts";

interface WorkerView {
  worker: number;
  pid: number;
  ready: boolean;
  restarts: number;
  connections: number;
  requests: number;
}

/** No keep-alive: a pooled connection to a port a later test reuses would be reset under it. */
const once = { headers: { connection: "close" } };

const workersOf = async (gw: Gateway): Promise<WorkerView[]> =>
  ((await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/status`, once)).json()) as { workers?: WorkerView[] }).workers ?? [];

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The node's `kubegate_requests_total` for the web Service's HTTP port, summed over code classes. */
async function requestsCounted(gw: Gateway): Promise<number> {
  const scrape = parseScrape(await (await fetch(`http://127.0.0.1:${gw.adminPort}/metrics`, once)).text());
  return seriesOf(scrape, "kubegate_requests_total")
    .filter((id) => id.includes('service="web"') && id.includes('port="http"'))
    .reduce((n, id) => n + (scrape.samples.get(id) ?? 0), 0);
}

/** One request on a new connection (so the kernel picks a worker for each). */
const get = async (port: number): Promise<string> => (await fetch(`http://127.0.0.1:${port}/`, once)).text();

function backend(name: string) {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(name) });
  return { port: server.port!, [Symbol.asyncDispose]: () => server.stop(true) };
}

function service(name: string, nodePorts: { http: number; udp: number }) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "w", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: {
      type: "NodePort",
      selector: { app: name },
      ports: [
        { name: "http", port: 80, targetPort: 8080, nodePort: nodePorts.http, appProtocol: "http" },
        { name: "dns", port: 53, targetPort: 5353, nodePort: nodePorts.udp, protocol: "UDP" },
      ],
    },
  };
}

function slice(svc: string, httpPort: number, udpPort: number) {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: `${svc}-1`, namespace: "w", labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    ports: [
      { name: "http", port: httpPort, protocol: "TCP" },
      { name: "dns", port: udpPort, protocol: "UDP" },
    ],
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
  };
}

async function startCluster() {
  const api = await startApiServer({ bookmarkIntervalMs: 500 });
  const a = backend("a");
  const echo = await udpEcho(rt, { tag: "u" });
  const ports = { http: await freePort(), udp: await freePort() };
  api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
  api.create(service("web", ports));
  api.create(slice("web", a.port, echo.port));
  const gw = await startTestGateway(api, ["--workers", "2", "--drain-grace-period", "500ms"]);
  return {
    api,
    gw,
    ports,
    a,
    async [Symbol.asyncDispose]() {
      await gw[Symbol.asyncDispose]();
      await a[Symbol.asyncDispose]();
      await echo[Symbol.asyncDispose]();
      await api[Symbol.asyncDispose]();
    },
  };
}

describe("--workers 2", () => {
  test("both workers accept on the entrypoint, and an endpoint change reaches every worker", async () => {
    await using c = await startCluster();
    const workers = await workersOf(c.gw);
    expect(workers.map((w) => [w.worker, w.ready])).toEqual([
      [0, true],
      [1, true],
    ]);
    expect(new Set(workers.map((w) => w.pid)).size).toBe(2);
    for (const w of workers) expect(w.pid).not.toBe(process.pid);

    // New connections are spread by the kernel: within a bounded number, each worker has served some.
    for (let i = 0; i < 200; i++) {
      expect(await get(c.ports.http)).toBe("a");
      if (i >= 20 && i % 10 === 0 && (await workersOf(c.gw)).every((w) => w.requests > 0)) break;
    }
    await waitFor(async () => (await workersOf(c.gw)).every((w) => w.requests > 0), { what: "requests served by both workers" });

    // UDP: each worker bound the UDP entrypoint too (flows stay on one worker each).
    await using client = await udpClient(rt, c.ports.udp);
    expect(await client.exchange("ping")).toBe("u:ping");

    await using b = backend("b");
    c.api.patch("endpointslices.discovery.k8s.io", "w", "web-1", { ports: slice("web", b.port, 1).ports });
    await waitFor(async () => (await get(c.ports.http)) === "b", { what: "the new endpoint" });
    // Every new connection, whichever worker takes it, goes to the new endpoint.
    for (let i = 0; i < 30; i++) expect(await get(c.ports.http)).toBe("b");
  });

  test("a killed worker is started again while the other keeps serving; the node's counters never go back", async () => {
    await using c = await startCluster();
    let made = 0;
    for (; made < 40; made++) expect(await get(c.ports.http)).toBe("a");
    // /metrics shows the node's series once: every request, whichever worker served it.
    await waitFor(async () => (await requestsCounted(c.gw)) === made, { what: `${made} requests in /metrics` });
    const [victim, other] = await workersOf(c.gw);
    process.kill(victim!.pid, "SIGKILL");
    await waitFor(() => !alive(victim!.pid), { what: "the worker to die" });
    // The survivor serves every new connection meanwhile.
    for (let i = 0; i < 20; i++) expect(await get(c.ports.http)).toBe("a");
    const replaced = await waitFor(
      async () => {
        const now = await workersOf(c.gw);
        const w = now.find((x) => x.worker === victim!.worker);
        return w && w.ready && w.pid !== victim!.pid && w.restarts === 1 ? now : undefined;
      },
      { what: "a new worker 0", timeoutMs: 10_000 },
    );
    expect(replaced.find((w) => w.worker === other!.worker)?.pid).toBe(other!.pid);
    for (let i = 0; i < 20; i++) expect(await get(c.ports.http)).toBe("a");
    made += 40;
    // What the dead worker had counted stays in the node's total.
    await waitFor(async () => (await requestsCounted(c.gw)) === made, { what: `${made} requests in /metrics after the restart` });
  });

  test("shutdown drains every worker and they exit", async () => {
    const c = await startCluster();
    const pids = (await workersOf(c.gw)).map((w) => w.pid);
    await c[Symbol.asyncDispose]();
    for (const pid of pids) expect(alive(pid)).toBe(false);
  });
});

describe("--workers 2 with --access-log-file", () => {
  test("every worker appends its lines; SIGUSR1 to the control plane reopens the file in each; drops reach /metrics", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kubegate-access-log-"));
    await using _dir = { [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
    const path = join(dir, "access.log");
    const api = await startApiServer({ bookmarkIntervalMs: 500 });
    await using _api = { [Symbol.asyncDispose]: () => api[Symbol.asyncDispose]() };
    await using a = backend("a");
    const ports = { http: await freePort(), udp: await freePort() };
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    api.create(service("web", ports));
    api.create(slice("web", a.port, 1));
    await using gw = await startTestGateway(api, ["--workers", "2", "--access-log", "--access-log-file", path]);
    // Whole lines only: a write may be under way as the file is read (its last line not ended yet).
    const workersIn = async (file: string) =>
      new Set((await readFile(file, "utf8").catch(() => "")).split("\n").slice(0, -1).map((l) => (JSON.parse(l) as { worker: number }).worker));
    // New connections: within a bounded number, each worker has logged some (100 ms flush).
    for (let i = 0; i < 200 && (await workersIn(path)).size < 2; i++) expect(await get(ports.http)).toBe("a");
    await waitFor(async () => (await workersIn(path)).size === 2, { what: "lines of both workers" });

    await rename(path, `${path}.1`);
    process.kill(process.pid, "SIGUSR1"); // the WorkerPool's handler forwards it to every worker
    for (let i = 0; i < 200 && (await workersIn(path)).size < 2; i++) expect(await get(ports.http)).toBe("a");
    await waitFor(async () => (await workersIn(path)).size === 2, { what: "both workers writing to the new file" });

    const scrape = parseScrape(await (await fetch(`http://127.0.0.1:${gw.adminPort}/metrics`, once)).text());
    expect(scrape.samples.get("kubegate_access_log_dropped_total")).toBe(0);
  });
});

describe("--workers 2: balancing agrees across workers", () => {
  test("sessionAffinity ClientIP: a client whose connections land on both workers sticks to one endpoint", async () => {
    const api = await startApiServer({ bookmarkIntervalMs: 500 });
    await using _api = { [Symbol.asyncDispose]: () => api[Symbol.asyncDispose]() };
    await using b1 = backend("one");
    await using b2 = backend("two");
    await using b3 = backend("three");
    const nodePort = await freePort();
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    api.create({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "sticky", namespace: "w", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
      spec: {
        type: "NodePort",
        sessionAffinity: "ClientIP",
        ports: [{ name: "http", port: 80, targetPort: 8080, nodePort, appProtocol: "http" }],
      },
    });
    for (const [i, b] of [b1, b2, b3].entries()) {
      api.create({
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: { name: `sticky-${i}`, namespace: "w", labels: { "kubernetes.io/service-name": "sticky" } },
        addressType: "IPv4",
        ports: [{ name: "http", port: b.port, protocol: "TCP" }],
        endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
      });
    }
    await using gw = await startTestGateway(api, ["--workers", "2"]);
    // Three endpoints share 127.0.0.1 with different ports: one client IP, so one endpoint for every connection.
    await waitFor(async () => (await gw.snapshot())?.entrypoints.some((e) => e.service === "sticky" && e.cluster.serving.length === 3), { what: "three endpoints" });
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      seen.add(await get(nodePort));
      if (i >= 20 && i % 10 === 0 && (await workersOf(gw)).every((w) => w.requests > 0)) break;
    }
    await waitFor(async () => (await workersOf(gw)).every((w) => w.requests > 0), { what: "requests served by both workers" });
    expect(seen.size).toBe(1);
  });
});

describe("--workers 2 as processes", () => {
  test("workers exit when their control plane dies (no stale routes served for ever)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kubegate-workers-"));
    await using _dir = { [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
    const nodePort = await freePort();
    await writeFile(
      join(dir, "svc.yaml"),
      JSON.stringify({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "w" }, spec: { type: "NodePort", ports: [{ port: 80, nodePort }] } }),
    );
    const [health, admin] = [await freePort(), await freePort()];
    const proc = Bun.spawn(
      [process.execPath, "src/main.ts", "--manifests", dir, "--all-services", "--hostname-override", "node-a", "--host-addresses", "127.0.0.1",
        "--healthz-bind-address", `127.0.0.1:${health}`, "--metrics-bind-address", `127.0.0.1:${admin}`, "--workers", "2", "--no-access-log"],
      { cwd: join(import.meta.dir, "..", ".."), stdout: "ignore", stderr: "ignore" },
    );
    await using _p = { [Symbol.asyncDispose]: async () => (proc.kill("SIGKILL"), void (await proc.exited)) };
    const pids = await waitFor(
      async () => {
        const r = await fetch(`http://127.0.0.1:${admin}/api/status`, once);
        const w = ((await r.json()) as { workers?: WorkerView[] }).workers ?? [];
        return w.length === 2 && w.every((x) => x.ready && x.pid > 0) ? w.map((x) => x.pid) : undefined;
      },
      { what: "two workers", timeoutMs: 20_000 },
    );
    proc.kill("SIGKILL");
    await proc.exited;
    await waitFor(() => pids.every((pid) => !alive(pid)), { what: "the workers to exit", timeoutMs: 10_000 });
  });
});
