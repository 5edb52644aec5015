/**
 * The graceful shutdown of `bun src/main.ts` as a real process, with real clients: on SIGTERM `/healthz`
 * and `/readyz` answer 503 at once, the listeners keep accepting for `--shutdown-delay`, then stop; a
 * request in flight completes in full and the process exits 0. A second signal exits at once.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tcpExchange } from "../support/child-io.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** A body big enough to span many socket writes, with a recognisable end. */
const BODY = `${"0123456789abcdef".repeat(16 * 1024)}END\n`;

/**
 * The backend: `/slow` answers after 5 s, `/held` when the test calls `release()`, anything else at once.
 * `arrived(path)` resolves when a request for `path` has reached it (so it is in flight through the gateway).
 */
function backend() {
  const arrivals = new Map<string, PromiseWithResolvers<void>>();
  const arrival = (path: string) => arrivals.get(path) ?? (arrivals.set(path, Promise.withResolvers<void>()), arrivals.get(path)!);
  let held = Promise.withResolvers<void>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 30,
    async fetch(req) {
      const path = new URL(req.url).pathname;
      arrival(path).resolve();
      if (path === "/slow") await new Promise((r) => setTimeout(r, 5_000)); // the backend's own latency, not a test wait
      if (path === "/held") await held.promise;
      return new Response(BODY, { headers: { "content-type": "text/plain" } });
    },
  });
  return {
    port: server.port!,
    arrived: (path: string) => arrival(path).promise,
    release: () => held.resolve(),
    reset: () => {
      arrivals.clear();
      held = Promise.withResolvers<void>();
    },
    [Symbol.dispose]: () => void server.stop(true),
  };
}

/** Manifests for one NodePort HTTP Service on `nodePort` whose endpoint is 127.0.0.1:`backendPort`. */
function manifests(nodePort: number, backendPort: number): string {
  return JSON.stringify({
    kind: "List",
    items: [
      { apiVersion: "v1", kind: "Node", metadata: { name: "node-a" }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } },
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web", namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
        spec: { type: "NodePort", ports: [{ name: "http", port: 80, targetPort: "http", nodePort, appProtocol: "http" }] },
      },
      {
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: { name: "web-1", namespace: "e2e", labels: { "kubernetes.io/service-name": "web" } },
        addressType: "IPv4",
        ports: [{ name: "http", port: backendPort, protocol: "TCP" }],
        endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
      },
    ],
  });
}

/** `bun src/main.ts` on `manifestFile`, its JSON log lines collected as they come. Dispose kills it by PID. */
async function spawnGateway(manifestFile: string, extraArgs: string[], env: Record<string, string> = {}) {
  const child = Bun.spawn(
    [
      process.execPath, "src/main.ts",
      "--manifests", manifestFile, "--hostname-override", "node-a", "--host-addresses", "127.0.0.1", "--nodeport-addresses", "127.0.0.0/8",
      "--healthz-bind-address", "127.0.0.1:0", "--metrics-bind-address", "127.0.0.1:0", "--no-access-log",
      ...extraArgs,
    ],
    { cwd: root, stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } },
  );
  const lines: Record<string, unknown>[] = [];
  let stderr = "";
  const pump = async (stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) => {
    const decoder = new TextDecoder();
    let buffered = "";
    const reader = stream.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      buffered += decoder.decode(r.value, { stream: true });
      const parts = buffered.split("\n");
      buffered = parts.pop()!;
      for (const p of parts) onLine(p);
    }
  };
  void pump(child.stdout, (l) => {
    try {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      lines.push({ msg: l });
    }
  });
  void pump(child.stderr, (l) => (stderr += `${l}\n`));
  const logged = (msg: RegExp) => lines.find((l) => typeof l.msg === "string" && msg.test(l.msg));
  const waitLog = (msg: RegExp, timeoutMs = 10_000) =>
    waitFor(() => logged(msg), { timeoutMs, what: `a log line ${msg} (stdout: ${JSON.stringify(lines.map((l) => l.msg))}, stderr: ${stderr})` });
  const started = await waitLog(/^kubegate started$/, 20_000);
  const healthz = `http://${started.healthz as string}`;
  await waitFor(async () => (await fetch(`${healthz}/readyz`)).status === 200, { what: "/readyz 200" });
  return {
    child,
    healthz,
    logged,
    waitLog,
    /** Messages logged so far, in order. */
    messages: () => lines.map((l) => l.msg as string),
    [Symbol.dispose]: () => void (child.exitCode === null && child.kill("SIGKILL")),
  };
}

/** One request on a new connection (never a pooled one): the raw response text. */
const freshRequest = (port: number, path = "/") => tcpExchange(port, `GET ${path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n`);

/** A kept-alive client connection: requests in sequence, each answered in full (the body ends with END). */
async function keepAliveClient(port: number) {
  const s = connect({ host: "127.0.0.1", port });
  await new Promise<void>((resolve, reject) => (s.once("connect", resolve), s.once("error", reject)));
  let received = "";
  let closed = false;
  s.on("data", (d: Buffer) => void (received += d.toString("latin1")));
  s.on("close", () => void (closed = true));
  return {
    async request(path: string): Promise<string> {
      const start = received.length;
      s.write(`GET ${path} HTTP/1.1\r\nHost: web\r\n\r\n`);
      await waitFor(() => received.slice(start).endsWith("END\n"), { what: `the response to ${path}` });
      return received.slice(start);
    },
    closed: () => closed,
    [Symbol.dispose]: () => void s.destroy(),
  };
}

/** Whether a TCP connection to `port` is refused. */
const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => (s.destroy(), resolve(false)));
    s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });

async function health(url: string) {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

describe("graceful shutdown of the gateway process", () => {
  let dir: string;
  let file: string;
  let nodePort: number;
  let be: ReturnType<typeof backend>;

  beforeAll(async () => {
    be = backend();
    dir = mkdtempSync(join(tmpdir(), "kubegate-shutdown-"));
    file = join(dir, "manifests.json");
    nodePort = await freePort();
    writeFileSync(file, manifests(nodePort, be.port));
  });
  afterAll(() => {
    be?.[Symbol.dispose]();
    rmSync(dir, { recursive: true, force: true });
  });

  test("SIGTERM while a 5 s request is in flight: it completes with 200 and its full body, then the process exits 0", async () => {
    be.reset();
    using gw = await spawnGateway(file, ["--drain-grace-period", "15s"]);
    const inFlight = fetch(`http://127.0.0.1:${nodePort}/slow`).then(async (r) => ({ status: r.status, body: await r.text() }));
    await be.arrived("/slow");
    const signalledAt = performance.now();
    gw.child.kill("SIGTERM");

    await gw.waitLog(/^Shutdown started/);
    expect((await health(`${gw.healthz}/healthz`)).status).toBe(503);
    // No delay: the listener stops accepting at once, while the request in flight goes on.
    await gw.waitLog(/^Listeners stop accepting/);
    // With worker processes the line is logged as the drain is sent to them: their listeners close moments later.
    await waitFor(() => refused(nodePort), { what: "new connections to be refused", timeoutMs: 2_000 });
    expect(gw.child.exitCode).toBeNull();

    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(res.body).toBe(BODY);
    expect(await gw.child.exited).toBe(0);
    // It waited for the request (the backend took 5 s from its arrival), not for the 15 s grace period: the
    // drain finished (logged below) rather than running out; no upper wall-time bound on a loaded box.
    expect(performance.now() - signalledAt).toBeGreaterThan(4_000);
    const order = ["Signal received: shutting down", "Shutdown started: /healthz and /readyz answer 503", "Listeners stop accepting: draining open connections", "Drain finished", "kubegate stopped"];
    expect(gw.messages().filter((m) => order.includes(m))).toEqual(order);
    expect(gw.logged(/^Drain grace period over/)).toBeUndefined();
  }, 30_000);

  test("--shutdown-delay: /healthz is 503 at once and new connections are still served; after the delay they are refused", async () => {
    be.reset();
    using gw = await spawnGateway(file, ["--shutdown-delay", "2s", "--drain-grace-period", "15s"]);
    const before = await health(`${gw.healthz}/healthz`);
    expect(before.status).toBe(200);
    const held = fetch(`http://127.0.0.1:${nodePort}/held`).then(async (r) => ({ status: r.status, body: await r.text() }));
    await be.arrived("/held");
    using kept = await keepAliveClient(nodePort);
    expect((await kept.request("/first")).toLowerCase()).not.toContain("connection: close");

    gw.child.kill("SIGTERM");
    await gw.waitLog(/^Shutdown started/);
    // A kept-alive client is told to go (Connection: close on its next response) during the delay, and let go.
    expect((await kept.request("/second")).toLowerCase()).toContain("connection: close");
    await waitFor(() => kept.closed(), { what: "the kept-alive connection to be closed after its response" });
    expect(gw.logged(/^Listeners stop accepting/)).toBeUndefined();
    const h = await health(`${gw.healthz}/healthz`);
    expect(h.status).toBe(503);
    // kube-proxy's body shape, unchanged.
    expect(Object.keys(JSON.parse(h.body) as object)).toEqual(["lastUpdated", "currentTime", "nodeEligible"]);
    expect(JSON.parse(h.body).nodeEligible).toBe(true);
    expect(await health(`${gw.healthz}/readyz`)).toEqual({ status: 503, body: "shutting down\n" });
    // Liveness is unchanged: a draining gateway must not be restarted.
    expect((await health(`${gw.healthz}/livez`)).status).toBe(200);

    // A new connection during the delay is served...
    const during = await freshRequest(nodePort);
    expect(during).toStartWith("HTTP/1.1 200");
    expect(during).toEndWith("END\n");
    // ...and it really was during the delay.
    expect(gw.logged(/^Listeners stop accepting/)).toBeUndefined();

    await gw.waitLog(/^Listeners stop accepting/);
    // With worker processes the line is logged as the drain is sent to them: their listeners close moments later.
    await waitFor(() => refused(nodePort), { what: "new connections to be refused", timeoutMs: 2_000 });
    expect(gw.child.exitCode).toBeNull(); // still draining the held request
    be.release();
    expect(await held).toEqual({ status: 200, body: BODY });
    expect(await gw.child.exited).toBe(0);
  }, 30_000);

  test("a second SIGTERM exits at once with 143, without waiting for open requests", async () => {
    be.reset();
    using gw = await spawnGateway(file, ["--drain-grace-period", "30s"]);
    const held = fetch(`http://127.0.0.1:${nodePort}/held`).then(
      (r) => r.status,
      () => "failed",
    );
    await be.arrived("/held");
    gw.child.kill("SIGTERM");
    await gw.waitLog(/^Listeners stop accepting/);
    gw.child.kill("SIGTERM");
    expect(await gw.child.exited).toBe(143);
    expect(gw.logged(/^Second signal/)).toBeDefined();
    expect(await held).toBe("failed");
    be.release();
  }, 30_000);

  test("with tracing on (the SDK loads only then), a request's spans are exported on SIGTERM", async () => {
    const spans: { name: string; kind: number }[] = [];
    const receiver = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const body = (await req.json()) as { resourceSpans: { scopeSpans: { spans: { name: string; kind: number }[] }[] }[] };
        for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
        return Response.json({});
      },
    });
    try {
      using gw = await spawnGateway(file, ["--tracing", "--tracing-sample-ratio", "1"], {
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${receiver.port}/v1/traces`,
        OTEL_BSP_SCHEDULE_DELAY: "600000", // only the flush on exit exports
      });
      expect(gw.logged(/^kubegate started$/)?.tracing).toContain("TraceIdRatioBased{1}");
      expect(await freshRequest(nodePort, "/traced")).toStartWith("HTTP/1.1 200");
      expect(spans).toEqual([]);
      gw.child.kill("SIGTERM");
      expect(await gw.child.exited).toBe(0);
      // SERVER (kind 2) for the request, CLIENT (kind 3) for the upstream attempt.
      expect(spans.map((s) => s.kind).sort()).toEqual([2, 3]);
    } finally {
      await receiver.stop(true);
    }
  });
});
