/**
 * File descriptors are a resource like memory: `bun src/main.ts` under `ulimit -n 300` with 400 NodePorts (more
 * listeners than descriptors). Before the reserve, the listeners past the limit failed with a bare "Failed to
 * listen at 127.0.0.1" and `/healthz` and `/readyz` hung (no descriptor left to accept a probe). Now: the health
 * endpoints answer 200, the gateway is ready with the listeners that bound and they serve, the others report
 * EMFILE and what to do (in `/api/snapshot` and the log), and the process runs on and exits 0 on SIGTERM. With one
 * process and with two worker processes (each worker keeps its own reserve).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { jsonLines, tcpExchange } from "../support/child-io.ts";
import { parseScrape, valueOf } from "../support/metrics-parse.ts";
import { waitFor } from "../support/wait.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const SERVICES = 400;
const NOFILE = 300;

/** A TCP echo backend in this process. */
function echoBackend() {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (s, d) => void s.write(d), end: (s) => void s.end() } });
  return { port: server.port, [Symbol.dispose]: () => server.stop(true) };
}

/**
 * `n` consecutive free ports below the ephemeral range (32768-60999 here), so that nothing bound to port 0 (the
 * health and admin servers, another suite) or an outgoing connection can take one between this check and the
 * gateway's bind: a block that is free now (all held at once while checking), tried at random offsets.
 */
function freePortBlock(n: number): number[] {
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = 20_000 + Math.floor(Math.random() * (32_000 - 20_000 - n));
    const held: { stop(closeActive?: boolean): void }[] = [];
    try {
      for (let port = first; port < first + n; port++) held.push(Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } }));
      return held.map((_, i) => first + i);
    } catch {
      // One of them is taken: try another block.
    } finally {
      for (const l of held) l.stop(true);
    }
  }
  throw new Error(`No block of ${n} free ports found`);
}

/** One Node and `nodePorts.length` NodePort TCP Services, each with the backend as its one endpoint. */
function manifests(nodePorts: readonly number[], backendPort: number): string {
  const items: unknown[] = [
    { apiVersion: "v1", kind: "Node", metadata: { name: "node-a" }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } },
  ];
  nodePorts.forEach((nodePort, i) => {
    const name = `s${i}`;
    items.push(
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace: "fd", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
        spec: { type: "NodePort", ports: [{ name: "tcp", port: 80, targetPort: "tcp", nodePort }] },
      },
      {
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: { name: `${name}-1`, namespace: "fd", labels: { "kubernetes.io/service-name": name } },
        addressType: "IPv4",
        ports: [{ name: "tcp", port: backendPort, protocol: "TCP" }],
        endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
      },
    );
  });
  return JSON.stringify({ kind: "List", items });
}

/** The gateway under `ulimit -n NOFILE`, its JSON log lines collected. Dispose kills it by PID. */
function spawnGateway(dir: string, workers: string) {
  const command = [
    `ulimit -n ${NOFILE}`,
    `exec "${process.execPath}" src/main.ts --manifests "${dir}" --hostname-override node-a --host-addresses 127.0.0.1 ` +
      `--nodeport-addresses 127.0.0.0/8 --healthz-bind-address 127.0.0.1:0 --metrics-bind-address 127.0.0.1:0 --no-access-log --workers ${workers}`,
  ].join("; ");
  const child = Bun.spawn(["bash", "-c", command], { cwd: root, stdout: "pipe", stderr: "pipe" });
  const lines: Record<string, unknown>[] = [];
  void (async () => {
    for await (const line of jsonLines(child.stdout)) lines.push(line);
  })().catch(() => {});
  let stderr = "";
  void new Response(child.stderr).text().then((t) => (stderr = t));
  return {
    child,
    lines,
    stderr: () => stderr,
    [Symbol.dispose]: () => void (child.exitCode === null && child.kill("SIGKILL")),
  };
}

/** A GET that must answer within 5 s (a probe that hangs fails the test rather than the runner). */
async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: await res.text() };
}

interface ListenerJson {
  readonly port: number;
  readonly bound: boolean;
  readonly error?: string;
}

const EMFILE = /: too many open files \(EMFILE: the limit is 300, of which 75 are kept for health, admin and the API watch\): raise the nofile limit .* or narrow --nodeport-addresses$/;

describe.each(["1", "2"])(`--workers %s under ulimit -n ${NOFILE} with ${SERVICES} NodePorts`, (workers) => {
  let dir: string;
  let nodePorts: number[];
  let backend: ReturnType<typeof echoBackend>;

  beforeAll(async () => {
    backend = echoBackend();
    dir = mkdtempSync(join(tmpdir(), "kubegate-file-limit-"));
    nodePorts = freePortBlock(SERVICES);
    writeFileSync(join(dir, "services.json"), manifests(nodePorts, backend.port));
  });
  afterAll(() => {
    backend?.[Symbol.dispose]();
    rmSync(dir, { recursive: true, force: true });
  });

  test("health answers, ready with the listeners that bound, they serve, the rest name EMFILE and what to do; exit 0 on SIGTERM", async () => {
    using gw = spawnGateway(dir, workers);
    const what = (s: string) => `${s} (log: ${JSON.stringify(gw.lines.map((l) => l.msg).slice(-20))}, stderr: ${gw.stderr()})`;
    const started = await waitFor(() => gw.lines.find((l) => l.msg === "kubegate started"), { timeoutMs: 30_000, what: what("kubegate started") });
    const healthz = `http://${started.healthz as string}`;
    const admin = `http://${started.admin as string}`;
    // Every listener settled (bound or failed): the first snapshot's apply is logged, /readyz turns 200.
    await waitFor(async () => (await get(`${healthz}/readyz`)).status === 200, { timeoutMs: 30_000, what: what("/readyz 200") });
    expect((await get(`${healthz}/healthz`)).status).toBe(200);

    const snapshot = JSON.parse((await get(`${admin}/api/snapshot`)).body) as { entrypoints: { listeners: ListenerJson[] }[] };
    const listeners = snapshot.entrypoints.flatMap((e) => e.listeners);
    expect(listeners.length).toBe(SERVICES);
    const bound = listeners.filter((l) => l.bound);
    const failed = listeners.filter((l) => !l.bound);
    // More listeners than descriptors: some bound, the rest failed, each with the cause and what to do.
    expect(bound.length).toBeGreaterThan(50);
    expect(failed.length).toBeGreaterThan(50);
    for (const l of failed) expect(l.error).toMatch(EMFILE);

    // The listeners that bound serve (a few, first and last); health still answers with them open.
    for (const l of [...bound.slice(0, 3), ...bound.slice(-3)]) expect(await tcpExchange(l.port, `hello ${l.port}\n`)).toBe(`hello ${l.port}\n`);
    expect((await get(`${healthz}/healthz`)).status).toBe(200);
    expect((await get(`${admin}/api/status`)).status).toBe(200);

    // The log says it too, once per listener (workers: once per worker and listener).
    const notBound = gw.lines.filter((l) => l.msg === "Listener not bound");
    expect(notBound.length).toBeGreaterThanOrEqual(failed.length);
    for (const l of notBound) expect(l.error).toMatch(EMFILE);

    expect(gw.child.exitCode).toBeNull();
    gw.child.kill("SIGTERM");
    expect(await gw.child.exited).toBe(0);
  });

  // Needs the wiring in src/main.ts (rt.raiseFileLimit() and its log line) and src/control-plane/index.ts
  // (FileDescriptorMetrics registered): see file-descriptors.ts and file-reserve.ts.
  test("the limit is logged at start, and /metrics shows the descriptors and the listeners failed for want of them", async () => {
    using gw = spawnGateway(dir, workers);
    const started = await waitFor(() => gw.lines.find((l) => l.msg === "kubegate started"), { timeoutMs: 30_000, what: "kubegate started" });
    const limit = gw.lines.find((l) => l.msg === "File descriptor limit");
    expect(limit).toMatchObject({ level: "info", soft: NOFILE, hard: NOFILE, before: NOFILE });
    expect(gw.lines.indexOf(limit!)).toBeLessThan(gw.lines.indexOf(started));
    await waitFor(async () => (await get(`http://${started.healthz as string}/readyz`)).status === 200, { timeoutMs: 30_000, what: "/readyz 200" });
    const scrape = parseScrape((await get(`http://${started.admin as string}/metrics`)).body);
    expect(valueOf(scrape, "kubegate_file_descriptors", { kind: "limit" })).toBe(NOFILE);
    expect(valueOf(scrape, "kubegate_file_descriptors", { kind: "open" })).toBeGreaterThan(0);
    const emfile = valueOf(scrape, "kubegate_listener_bind_failures", { reason: "too_many_open_files" });
    expect(emfile).toBeGreaterThan(50);
    expect(emfile).toBe(valueOf(scrape, "kubegate_listeners", { state: "failed" })!);
    gw.child.kill("SIGTERM");
    expect(await gw.child.exited).toBe(0);
  });
});
