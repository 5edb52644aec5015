/**
 * Port-forward vs direct (not a test), issue 17's "Measure": the same backends behind the same NodePort Services of a
 * `--local` gateway, reached directly (`--endpoint-access direct`) and through the API server's pods/portforward
 * (`--endpoint-access port-forward`). Prints a table:
 *
 * - HTTP requests/s and latency (wrk, keep-alive and `Connection: close`, i.e. a new upstream stream per request
 *   through port-forward);
 * - connection setup: time from a new client connection to the first echoed byte through a TCP Service (sequential);
 * - memory per open forwarded stream: RSS of a fresh gateway (and of the API server's relay) with N idle streams open.
 *
 * The API server is the project's test API server (test/support/apiserver.ts) in this process: it stands for
 * kube-apiserver and the kubelet together (one WebSocket hop, relayed to the backend on loopback). A real cluster adds
 * the kubelet hop and the container runtime's relay, so its numbers are a floor for port-forward's cost, not a
 * forecast. The gateway and the backends run as processes of their own.
 *
 *   bun test/bench/portforward.ts [--duration 5s] [--connections 16] [--streams 200] [--setups 200]
 */
import { spawn, type Subprocess } from "bun";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { forwardedPod, podSlice } from "../support/forwarded-pods.ts";
import { freePort } from "../support/ports.ts";

for (const line of (await Bun.$`pgrep -fa test/bench/`.nothrow().text()).split("\n")) {
  if (line.trim() && !line.includes("test/bench/portforward.ts")) {
    console.error(`Another benchmark runs (${line.trim()}): run this one alone.`);
    process.exit(2);
  }
}

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "5s" },
    connections: { type: "string", default: "16" },
    streams: { type: "string", default: "1000" },
    setups: { type: "string", default: "200" },
    help: { type: "boolean", default: false },
  },
  strict: true,
});
if (values.help) {
  console.log("Usage: bun test/bench/portforward.ts [--duration 5s] [--connections 16] [--streams 200] [--setups 200]");
  process.exit(0);
}
const duration = values.duration!;
const connections = Number(values.connections);
const streams = Number(values.streams);
const setups = Number(values.setups);
const NS = "bench";
const bun = process.execPath;
const children: Subprocess[] = [];
const log = (line: string) => console.error(`[portforward-bench] ${line}`);

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : Number.NaN;
}

async function waitPort(port: number, timeoutMs = 15_000): Promise<void> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    try {
      const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
      s.end();
      return;
    } catch {
      if (performance.now() > until) throw new Error(`Nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
      await Bun.sleep(50);
    }
  }
}

/** A backend process: an HTTP server answering "ok", or a TCP echo server. */
async function backend(kind: "http" | "echo"): Promise<number> {
  const port = await freePort();
  const code =
    kind === "http"
      ? `Bun.serve({ hostname: "127.0.0.1", port: ${port}, fetch: () => new Response("ok") });`
      : `Bun.listen({ hostname: "127.0.0.1", port: ${port}, socket: { data: (s, d) => { s.write(d); } } });`;
  children.push(spawn([bun, "-e", code], { stdout: "ignore", stderr: "inherit" }));
  await waitPort(port);
  return port;
}

function objects(api: TestApiServer, name: string, port: number, nodePort: number, appProtocol?: string): void {
  forwardedPod(api, NS, `${name}-0`, "127.0.0.1", port, { hostname: "127.0.0.1", port });
  api.create({ apiVersion: "v1", kind: "Service", metadata: { name, namespace: NS }, spec: { type: "NodePort", ports: [{ name: "p", port: 80, targetPort: port, nodePort, ...(appProtocol ? { appProtocol } : {}) }] } });
  api.create(podSlice(NS, `${name}-a`, name, { name: "p", port }, [{ ip: "127.0.0.1", pod: `${name}-0` }]));
}

interface Wrk {
  rps: number;
  /** CPU µs per request of the gateway and of the API server's relay (this process). */
  gatewayUs: number;
  relayUs: number;
  p50: number;
  p99: number;
  errors: number;
}

/** wrk's summary: requests/s, latency percentiles in ms, socket errors + non-2xx. */
async function wrk(port: number, close: boolean, gatewayPid: number): Promise<Wrk> {
  const args = ["wrk", "-t", "1", "-c", String(connections), "-d", duration, "--latency", ...(close ? ["-H", "Connection: close"] : []), `http://127.0.0.1:${port}/`];
  const cpu0 = [cpuSeconds(gatewayPid), cpuSeconds(process.pid)];
  const p = spawn(args, { stdout: "pipe", stderr: "inherit" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const cpu1 = [cpuSeconds(gatewayPid), cpuSeconds(process.pid)];
  const ms = (s: string | undefined) => {
    const m = /([\d.]+)(us|ms|s)/.exec(s ?? "");
    return m ? Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2] as "us" | "ms" | "s"] : Number.NaN;
  };
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  return {
    gatewayUs: ((cpu1[0]! - cpu0[0]!) / requests) * 1e6,
    relayUs: ((cpu1[1]! - cpu0[1]!) / requests) * 1e6,
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
    p50: ms(/^\s+50%\s+(\S+)/m.exec(out)?.[1]),
    p99: ms(/^\s+99%\s+(\S+)/m.exec(out)?.[1]),
    errors: (errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + Number(non2xx?.[1] ?? 0),
  };
}

/** Sequential new connections through the TCP Service: ms from connect to the first echoed byte (median, p99). */
async function setupTimes(port: number): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < setups; i++) {
    const t0 = performance.now();
    const got = Promise.withResolvers<void>();
    const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: () => got.resolve(), close: () => got.reject(new Error("closed")) } });
    s.write("x");
    await got.promise;
    times.push(performance.now() - t0);
    s.terminate();
  }
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(times.length / 2)]!, p99: times[Math.min(times.length - 1, Math.floor(times.length * 0.99))]! };
}

/** Open `streams` idle connections through the TCP Service (each echoed once); RSS before and after, KiB. */
async function streamMemory(port: number, gatewayPid: number): Promise<{ gateway: number; relay: number }> {
  Bun.gc(true);
  await Bun.sleep(500);
  const before = { gateway: rssKiB(gatewayPid), relay: rssKiB(process.pid) };
  const open: Bun.Socket[] = [];
  for (let i = 0; i < streams; i++) {
    const got = Promise.withResolvers<void>();
    const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: () => got.resolve(), close: () => got.reject(new Error("closed")) } });
    s.write("x");
    await got.promise;
    open.push(s);
  }
  // RSS moves with the collectors: the median of five readings a second apart.
  const readings: { gateway: number; relay: number }[] = [];
  for (let i = 0; i < 5; i++) {
    await Bun.sleep(1_000);
    readings.push({ gateway: rssKiB(gatewayPid), relay: rssKiB(process.pid) });
  }
  const mid = (xs: number[]) => xs.sort((a, b) => a - b)[2]!;
  const after = { gateway: mid(readings.map((r) => r.gateway)), relay: mid(readings.map((r) => r.relay)) };
  for (const s of open) s.terminate();
  return { gateway: (after.gateway - before.gateway) / streams, relay: (after.relay - before.relay) / streams };
}

async function gateway(kubeconfig: string, mode: "direct" | "port-forward"): Promise<Subprocess> {
  const p = spawn(
    [bun, "src/main.ts", "--kubeconfig", kubeconfig, "--local", "--hostname-override", "", "--endpoint-access", mode, "--no-access-log", "--healthz-bind-address", `127.0.0.1:${await freePort()}`, "--metrics-bind-address", `127.0.0.1:${await freePort()}`, "--log-level", "warn"],
    { stdout: "inherit", stderr: "inherit" },
  );
  children.push(p);
  return p;
}

const rows: string[][] = [];
try {
  await using api = await startApiServer({ rbac: "local" });
  const [httpPort, echoPort] = [await backend("http"), await backend("echo")];
  const [httpNodePort, echoNodePort] = [await freePort(), await freePort()];
  objects(api, "web", httpPort, httpNodePort, "http");
  objects(api, "echo", echoPort, echoNodePort);
  const kubeconfig = await api.writeKubeconfig();
  const results: Record<string, { keep: Wrk; close: Wrk; setup: { p50: number; p99: number }; mem?: { gateway: number; relay: number } }> = {};
  for (const mode of ["direct", "port-forward"] as const) {
    log(`${mode}: starting the gateway`);
    const gw = await gateway(kubeconfig, mode);
    await waitPort(httpNodePort);
    await waitPort(echoNodePort);
    // Memory first, on a fresh gateway: after the load its heap has room that new streams reuse.
    const mem = mode === "port-forward" ? await streamMemory(echoNodePort, gw.pid) : undefined;
    await wrk(httpNodePort, false, gw.pid); // warm-up
    const keep = await wrk(httpNodePort, false, gw.pid);
    log(`${mode}: keep-alive ${keep.rps.toFixed(0)} req/s`);
    const close = await wrk(httpNodePort, true, gw.pid);
    log(`${mode}: new connection per request ${close.rps.toFixed(0)} req/s`);
    const setup = await setupTimes(echoNodePort);
    results[mode] = { keep, close, setup, ...(mem ? { mem } : {}) };
    gw.kill("SIGTERM");
    await gw.exited;
  }
  const d = results.direct!;
  const f = results["port-forward"]!;
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
  rows.push(
    ["HTTP keep-alive, req/s", d.keep.rps.toFixed(0), f.keep.rps.toFixed(0), ratio(f.keep.rps, d.keep.rps)],
    ["HTTP keep-alive, p50 / p99 ms", `${d.keep.p50.toFixed(2)} / ${d.keep.p99.toFixed(2)}`, `${f.keep.p50.toFixed(2)} / ${f.keep.p99.toFixed(2)}`, `+${(f.keep.p50 - d.keep.p50).toFixed(2)} ms p50`],
    ["HTTP keep-alive, CPU µs/request: gateway (relay)", `${d.keep.gatewayUs.toFixed(1)}`, `${f.keep.gatewayUs.toFixed(1)} (${f.keep.relayUs.toFixed(1)})`, `+${(f.keep.gatewayUs - d.keep.gatewayUs).toFixed(1)} µs gateway`],
    ["HTTP new client connection per request (upstreams pooled), req/s", d.close.rps.toFixed(0), f.close.rps.toFixed(0), ratio(f.close.rps, d.close.rps)],
    ["HTTP new connection, p50 / p99 ms", `${d.close.p50.toFixed(2)} / ${d.close.p99.toFixed(2)}`, `${f.close.p50.toFixed(2)} / ${f.close.p99.toFixed(2)}`, `+${(f.close.p50 - d.close.p50).toFixed(2)} ms p50`],
    ["TCP connection setup to first byte, p50 / p99 ms", `${d.setup.p50.toFixed(2)} / ${d.setup.p99.toFixed(2)}`, `${f.setup.p50.toFixed(2)} / ${f.setup.p99.toFixed(2)}`, `+${(f.setup.p50 - d.setup.p50).toFixed(2)} ms p50`],
    ["errors (wrk socket errors + non-2xx)", String(d.keep.errors + d.close.errors), String(f.keep.errors + f.close.errors), ""],
    [`RSS per open forwarded stream (${streams} idle), KiB: gateway / test API server relay`, "", `${f.mem!.gateway.toFixed(1)} / ${f.mem!.relay.toFixed(1)}`, ""],
  );
  console.log(`\nkubegate --local, direct vs --endpoint-access port-forward (wrk -t1 -c${connections} -d${duration}; ${setups} sequential setups; ${new Date().toISOString()})\n`);
  console.log("| measure | direct | port-forward | port-forward vs direct |\n| --- | --- | --- | --- |");
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
} finally {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
}
