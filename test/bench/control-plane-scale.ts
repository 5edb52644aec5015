/**
 * Control-plane scale benchmark (not a test). The test API server (own process) holds N Services,
 * each a NodePort Service labelled for kubegate with one EndpointSlice of E endpoints; the gateway
 * runs as its own process (`bun src/main.ts --kubeconfig ...`) and binds every NodePort. Measured:
 *
 *   1. time to first snapshot: gateway start -> `/readyz` 200 (list everything, build, bind N listeners);
 *   2. the gateway's RSS after sync (VmRSS from /proc);
 *   3. propagation: an EndpointSlice write on the server -> a real HTTP request through the gateway
 *      reaching the new endpoint, p50/p99, while other slices churn in the background.
 *
 * Also printed: the gateway's CPU time (utime + stime from /proc) to each point, which is steadier
 * than wall time on a shared box.
 *
 *   bun test/bench/control-plane-scale.ts [--services 10000] [--endpoints-per-slice 10] [--changes 300] [--churn-per-sec 100]
 *     [--sync-only] [--cpu-prof DIR]   (--cpu-prof: the gateway writes a Bun CPU profile, also as Markdown, into DIR on exit)
 *     [--workers N]   (the gateway's --workers; CPU and RSS are then the whole process tree's)
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { values } = parseArgs({
  options: {
    services: { type: "string", default: "10000" },
    "endpoints-per-slice": { type: "string", default: "10" },
    changes: { type: "string", default: "300" },
    "churn-per-sec": { type: "string", default: "100" },
    "sync-only": { type: "boolean", default: false },
    "cpu-prof": { type: "string" },
    workers: { type: "string", default: "1" },
  },
});
const N = Number(values.services);
const E = Number(values["endpoints-per-slice"]);
const CHANGES = Number(values.changes);
const CHURN = Number(values["churn-per-sec"]);
const progress = (m: string) => process.stderr.write(`control-plane-scale: ${m}\n`);
const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;
const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

const children: ChildProcess[] = [];
const killAll = () => children.forEach((c) => c.exitCode === null && c.kill("SIGKILL"));
process.once("exit", killAll);
process.once("SIGINT", () => (killAll(), process.exit(130)));

/** Spawn a child that prints one JSON line (or a line matching `ready`) on stdout. */
function spawnChild(args: string[], firstLine: boolean) {
  const child = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  const line = firstLine
    ? new Promise<string>((resolve, reject) => {
        let text = "";
        child.stdout!.setEncoding("utf8");
        child.stdout!.on("data", (d: string) => {
          text += d;
          if (text.includes("\n")) resolve(text.slice(0, text.indexOf("\n")));
        });
        child.once("exit", (code) => reject(new Error(`Child ${args[0]} exited with code ${code}`)));
      })
    : Promise.resolve("");
  // Drain what else it prints (the gateway's access log): a full pipe would block its writes, and its event loop.
  if (!firstLine) child.stdout!.resume();
  return { child, line };
}

const ip = (i: number, j: number) => `10.${(i >> 8) & 255}.${i & 255}.${j + 1}`;
const nsOf = (i: number) => `ns-${i % 50}`;

function serviceOf(i: number, nodePort: number, appProtocol?: string) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: `svc-${i}`, namespace: nsOf(i), labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: {
      type: "NodePort",
      selector: { app: `svc-${i}` },
      ports: [{ name: "http", port: 80, targetPort: 8080, nodePort, ...(appProtocol ? { appProtocol } : {}) }],
    },
  };
}

function sliceOf(i: number, generation: number, endpoints: { address: string; port: number }[] | undefined = undefined) {
  const eps = endpoints ?? Array.from({ length: E }, (_, j) => ({ address: ip(i, j), port: 8080 }));
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `svc-${i}-abcde`,
      namespace: nsOf(i),
      labels: { "kubernetes.io/service-name": `svc-${i}` },
      annotations: { "kubegate.bench/generation": String(generation) },
    },
    addressType: "IPv4",
    endpoints: eps.map((e, j) => ({
      addresses: [e.address],
      conditions: { ready: endpoints ? true : j !== generation % E },
      nodeName: `node-${j % 20}`,
    })),
    ports: [{ name: "http", port: eps[0]!.port, protocol: "TCP" }],
  };
}

async function parallel(n: number, limit: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < n) await task(next++);
  }));
}

/** CPU time (user + system) of process `pid` so far, ms. */
/** `pid` and its descendants (the gateway and its worker processes). */
function processTree(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // exited meanwhile
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) for (const [child, parent] of parentOf) if (parent === tree[i]) tree.push(child);
  return tree;
}

/** CPU time of the gateway's process tree, ms. */
function cpuMs(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
    } catch {
      // exited meanwhile
    }
  }
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/** RSS of the gateway's process tree, MiB. */
function rssMiB(pid: number): number {
  let kb = 0;
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, "utf8"));
      kb += m ? Number(m[1]) : 0;
    } catch {
      // exited meanwhile
    }
  }
  return kb / 1024;
}

const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const loadAtStart = loadavg();

// --- the API server, seeded -------------------------------------------------------------------
const api = spawnChild([join(root, "test/support/apiserver-main.ts"), "--port", "0", "--bookmark-ms", "60000"], true);
const info = JSON.parse(await api.line) as { kubeconfig: string; controlUrl: string };
const control = async (name: string, body: unknown) => {
  const res = await fetch(`${info.controlUrl}/_control/${name}`, { method: "POST", body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`Control "${name}" failed: ${await res.text()}`);
  return res.json();
};

// Two real backends for the probed Service (index 0): the probe sees which one answers.
const backends = ["A", "B"].map((name) =>
  Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(name) }),
);
const probePort = 20_000;
const seedStart = performance.now();
await parallel(N, 32, async (i) => {
  await control("create", serviceOf(i, probePort + i, i === 0 ? "http" : undefined));
  await control("create", i === 0 ? sliceOf(0, 0, [{ address: "127.0.0.1", port: backends[0]!.port! }]) : sliceOf(i, 0));
});
progress(`seeded ${N} Services / ${N * E} endpoints in ${round((performance.now() - seedStart) / 1000)} s`);

// --- the gateway -------------------------------------------------------------------------------
const healthPort = 20_000 + N + 100;
const gwStart = performance.now();
const profDir = values["cpu-prof"];
const gw = spawnChild(
  [
    ...(profDir ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${profDir}`] : []),
    join(root, "src/main.ts"),
    "--kubeconfig", info.kubeconfig,
    "--hostname-override", "node-0",
    "--host-addresses", "127.0.0.1",
    "--healthz-bind-address", `127.0.0.1:${healthPort}`,
    "--metrics-bind-address", "127.0.0.1:0",
    "--log-level", "warn",
    "--workers", values.workers!,
  ],
  false,
);
for (;;) {
  const ok = await fetch(`http://127.0.0.1:${healthPort}/readyz`).then((r) => r.ok, () => false);
  if (ok) break;
  if (performance.now() - gwStart > 120_000) throw new Error("The gateway was not ready within 120 s");
  await new Promise((r) => setTimeout(r, 5));
}
const syncMs = performance.now() - gwStart;
const syncCpu = cpuMs(gw.child.pid!);
// Wait for the last listener (bind happens with the first snapshot).
const lastPort = probePort + N - 1;
const { connect } = await import("node:net");
const canConnect = (port: number) =>
  new Promise<boolean>((res) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => (s.destroy(), res(true)));
    s.once("error", () => res(false));
  });
while (!(await canConnect(lastPort))) await new Promise((r) => setTimeout(r, 5));
const boundMs = performance.now() - gwStart;
const boundCpu = cpuMs(gw.child.pid!);
const rss = rssMiB(gw.child.pid!);
progress(
  `first snapshot in ${round(syncMs)} ms (gateway CPU ${round(syncCpu)} ms), all ${N} listeners bound in ${round(boundMs)} ms ` +
    `(CPU ${round(boundCpu)} ms), RSS ${round(rss, 1)} MiB`,
);
const stopGateway = async () => {
  gw.child.kill("SIGTERM");
  await new Promise((r) => gw.child.once("exit", r));
};
if (values["sync-only"]) {
  // Let the post-sync garbage settle, then measure RSS again.
  await new Promise((r) => setTimeout(r, 2000));
  progress(`RSS 2 s after sync ${round(rssMiB(gw.child.pid!), 1)} MiB, CPU ${round(cpuMs(gw.child.pid!))} ms`);
  await stopGateway();
  api.child.kill("SIGTERM");
  for (const b of backends) b.stop(true);
  process.exit(0);
}

// --- propagation under churn ----------------------------------------------------------------------
let churning = true;
let churned = 0;
const churn = (async () => {
  let g = 1;
  while (churning) {
    const started = performance.now();
    const i = 1 + Math.floor(Math.random() * (N - 1));
    await control("patch", { resource: "endpointslices", namespace: nsOf(i), name: `svc-${i}-abcde`, patch: sliceOf(i, g++) });
    churned++;
    const wait = 1000 / CHURN - (performance.now() - started);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
})();

const probeUrl = `http://127.0.0.1:${probePort}/`;
const latencies: number[] = [];
let stuck = 0;
const churnCpuStart = cpuMs(gw.child.pid!);
const churnStart = performance.now();
for (let c = 0; c < CHANGES; c++) {
  const target = backends[(c + 1) % 2]!;
  const name = (c + 1) % 2 ? "B" : "A";
  const t0 = performance.now();
  await control("patch", {
    resource: "endpointslices",
    namespace: nsOf(0),
    name: "svc-0-abcde",
    patch: sliceOf(0, c + 1, [{ address: "127.0.0.1", port: target.port! }]),
  });
  for (;;) {
    // A new connection per probe (no client-side keep-alive state to go stale); a request that hangs is
    // counted and retried rather than waited on for fetch's own 5-minute timeout.
    let body: string;
    try {
      body = await (await fetch(probeUrl, { headers: { connection: "close" }, signal: AbortSignal.timeout(2_000) })).text();
    } catch (err) {
      stuck++;
      progress(`probe request failed (${(err as Error).name}); retrying`);
      continue;
    }
    if (body === name) break;
    if (performance.now() - t0 > 10_000) throw new Error(`Change ${c} was not routed within 10 s`);
  }
  latencies.push(performance.now() - t0);
  await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
}
churning = false;
await churn;
const churnCpuPerSec = (cpuMs(gw.child.pid!) - churnCpuStart) / ((performance.now() - churnStart) / 1000);
latencies.sort((a, b) => a - b);
const rssAfter = rssMiB(gw.child.pid!);

const rows: [string, string][] = [
  ["Services (all NodePort, in scope) / slices", `${N} / ${N}`],
  ["endpoints", String(N * E)],
  ["gateway start -> /readyz (first snapshot)", `${round(syncMs)} ms`],
  ["gateway start -> all listeners bound", `${round(boundMs)} ms`],
  ["gateway CPU to /readyz / to all bound", `${round(syncCpu)} ms / ${round(boundCpu)} ms`],
  ["gateway RSS after sync", `${round(rss, 1)} MiB`],
  ["gateway RSS after churn", `${round(rssAfter, 1)} MiB`],
  [`slice write -> request reaches new endpoint, p50 (n=${latencies.length})`, `${round(pct(latencies, 50), 2)} ms`],
  ["... p99", `${round(pct(latencies, 99), 2)} ms`],
  ["... max", `${round(latencies.at(-1) ?? NaN, 2)} ms`],
  ["probe requests that failed or hung > 2 s (retried; in the figures)", String(stuck)],
  ["background churn (other slices)", `${churned} writes at ~${CHURN}/s`],
  ["load average at start / end", `${loadAtStart} / ${loadavg()}`],
  ["gateway CPU during churn", `${round(churnCpuPerSec / 10, 1)} % of a core`],
];
const w = Math.max(...rows.map(([k]) => k.length));
console.log(`\n| metric${" ".repeat(w - 6)} | value |\n|${"-".repeat(w + 2)}|-------|`);
for (const [k, v] of rows) console.log(`| ${k.padEnd(w)} | ${v} |`);
console.log("\nThe propagation figure includes the control write's round trip to the API server and one HTTP request; measured on loopback, all processes on one 2-core box.");

await stopGateway();
api.child.kill("SIGTERM");
for (const b of backends) b.stop(true);
process.exit(0);
