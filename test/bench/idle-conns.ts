/**
 * Idle-connection memory benchmark (not a test; not part of `npm test`): how much resident memory the
 * gateway spends per idle client connection, for an HTTP keep-alive entrypoint and a TCP entrypoint.
 *
 *   bun test/bench/idle-conns.ts [--connections 10000] [--batch 200] [--md PATH]
 *
 * Starts kubegate as its own process (`bun src/main.ts --manifests DIR`, generated manifests: a Node, an
 * HTTP and a TCP NodePort Service) in front of two backends in this process (an HTTP pod and a TCP echo
 * pod from test/support/pod-backends.ts). For each entrypoint: a warm-up (200 connections opened, used
 * and closed), the gateway's VmRSS once it is stable, then N client connections opened in batches, each
 * used once (one GET on keep-alive; one echoed line over TCP) and then left idle, VmRSS again once stable,
 * and the count of the gateway's open file descriptors (to show it really holds them). Each idle TCP client
 * connection holds an upstream connection too, so the TCP row is per client connection (two sockets).
 * Client sockets are spread over several loopback source addresses (127.0.0.1, .2, ...) so the ephemeral
 * port range never runs out. The file-descriptor limit of this process (and so the gateway's, inherited) is
 * raised with `prlimit` when it is below what the run needs (2N + 1000); where it cannot be (no
 * CAP_SYS_RESOURCE, e.g. in a container with a hard limit), each phase opens as many connections as the
 * limit allows and the report says so. Everything started is stopped at the end.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { startHttpPod, startTcpEchoPod } from "../support/pod-backends.ts";
import { PortAllocator } from "./lib/ports.ts";
import { waitForHttp, waitForPort } from "./lib/probe.ts";
import { type Daemon, scriptGroup } from "./lib/procs.ts";
import { repoRoot } from "./lib/targets.ts";

const { values: args } = parseArgs({
  args: process.argv.slice(2),
  options: {
    connections: { type: "string", default: "10000" },
    batch: { type: "string", default: "200" },
    md: { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log("Usage: bun test/bench/idle-conns.ts [--connections 10000] [--batch 200] [--md PATH]");
  process.exit(0);
}
const N = Number(args.connections);
const BATCH = Number(args.batch);
if (!Number.isInteger(N) || N < 1 || N > 100_000 || !Number.isInteger(BATCH) || BATCH < 1) {
  console.error(`Bad --connections "${args.connections}" or --batch "${args.batch}": integers, 1..100000 connections`);
  process.exit(2);
}
const log = (line: string) => console.error(`[idle-conns ${new Date().toISOString().slice(11, 19)}] ${line}`);

// ---------------------------------------------------------------------------------------------------------
// File-descriptor limit

/** The soft limit of open files of process `pid` (from /proc/<pid>/limits). */
function nofile(pid: number | "self"): number {
  const line = readFileSync(`/proc/${pid}/limits`, "utf8").split("\n").find((l) => l.startsWith("Max open files"));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(soft);
}

// This process holds N client sockets plus N backend sockets (TCP phase); the gateway 2N (TCP). Headroom for the rest.
const HEADROOM = 1_000;
const needFds = 2 * N + HEADROOM;
if (nofile("self") < needFds) {
  const want = Math.max(65_536, needFds);
  const r = spawnSync("prlimit", ["--pid", String(process.pid), `--nofile=${want}:${want}`], { encoding: "utf8" });
  if (r.status === 0 && nofile("self") >= needFds) log(`Raised the open-files limit to ${want}`);
  else log(`Cannot raise the open-files limit to ${want} (it stays ${nofile("self")}): ${(r.stderr || r.error?.message || "").trim()}`);
}
const fdLimit = nofile("self");
/** Connections per phase within the limit: HTTP needs one gateway socket per client, TCP two. */
const counts = { http: Math.min(N, fdLimit - HEADROOM), tcp: Math.min(N, Math.floor((fdLimit - HEADROOM) / 2)) };
if (counts.http < N || counts.tcp < N) {
  log(`The open-files limit (${fdLimit}) allows ${counts.http} HTTP and ${counts.tcp} TCP idle connections; measuring those`);
}

// ---------------------------------------------------------------------------------------------------------
// Gateway process, backends

const { tmp, group, cleanup: cleanupSync } = scriptGroup("kubegate-idle-", log);

const httpPod = startHttpPod({ name: "idle-http", hostname: "127.0.0.1" });
const tcpPod = startTcpEchoPod({ name: "idle-tcp", hostname: "127.0.0.1" });
const ports = new PortAllocator();

/** The manifests: a Node, an HTTP and a TCP NodePort Service, one endpoint each (the backends above). */
function manifests(httpPort: number, tcpPort: number): string {
  const svc = (name: string, nodePort: number, appProtocol?: string) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "bench", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
    spec: { type: "NodePort", ports: [{ name: "p", port: 80, nodePort, protocol: "TCP", ...(appProtocol ? { appProtocol } : {}) }] },
  });
  const slice = (service: string, port: number) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: `${service}-1`, namespace: "bench", labels: { "kubernetes.io/service-name": service } },
    addressType: "IPv4",
    ports: [{ name: "p", port, protocol: "TCP" }],
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true, serving: true, terminating: false }, nodeName: "bench-node" }],
  });
  const docs = [
    { apiVersion: "v1", kind: "Node", metadata: { name: "bench-node" }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } },
    svc("idle-http", httpPort, "http"),
    svc("idle-tcp", tcpPort),
    slice("idle-http", httpPod.port),
    slice("idle-tcp", tcpPod.port),
  ];
  return docs.map((d) => stringify(d)).join("---\n");
}

/** A fresh kubegate process (each phase gets its own, so one phase's freed memory does not hide the next one's). */
async function startGateway(name: string): Promise<{ daemon: Daemon; httpPort: number; tcpPort: number }> {
  const [httpPort, tcpPort, healthz, metrics] = [await ports.next(), await ports.next(), await ports.next(), await ports.next()];
  const mdir = join(tmp, name);
  mkdirSync(mdir);
  writeFileSync(join(mdir, "idle.yaml"), manifests(httpPort, tcpPort));
  const bun = process.versions.bun ? process.execPath : "bun";
  const daemon = group.start(name, [
    bun,
    join(repoRoot, "src", "main.ts"),
    "--manifests", mdir,
    "--hostname-override", "bench-node",
    "--nodeport-addresses", "127.0.0.0/8",
    "--host-addresses", "127.0.0.1",
    "--healthz-bind-address", `127.0.0.1:${healthz}`,
    "--metrics-bind-address", `127.0.0.1:${metrics}`,
    "--log-level", "warn",
    "--no-access-log",
  ], { cwd: repoRoot });
  await waitForHttp(`http://127.0.0.1:${healthz}/readyz`, daemon, { timeoutMs: 30_000 });
  await waitForHttp(`http://127.0.0.1:${httpPort}/`, daemon);
  await waitForPort(tcpPort, daemon);
  log(`${name} (pid ${daemon.pid}) serves HTTP on ${httpPort} and TCP on ${tcpPort}; open-files limit ${nofile(daemon.pid)}`);
  return { daemon, httpPort, tcpPort };
}

// ---------------------------------------------------------------------------------------------------------
// Measuring

/** VmRSS (and RssAnon) of `pid`, bytes. */
function rss(pid: number): { rss: number; anon: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN) * 1024;
  return { rss: kb("VmRSS"), anon: kb("RssAnon") };
}

/** Open file descriptors of `pid`. */
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** RSS once three samples 300 ms apart agree within 1% (at most 15 s). */
async function stableRss(pid: number): Promise<{ rss: number; anon: number }> {
  const samples: { rss: number; anon: number }[] = [];
  const deadline = performance.now() + 15_000;
  for (;;) {
    samples.push(rss(pid));
    const last = samples.slice(-3);
    if (last.length === 3 && Math.max(...last.map((s) => s.rss)) - Math.min(...last.map((s) => s.rss)) <= last[2]!.rss * 0.01) return last[2]!;
    if (performance.now() > deadline) return samples.at(-1)!;
    await new Promise((r) => setTimeout(r, 300));
  }
}

/**
 * Source addresses so that no source runs out of ephemeral ports (~28k in 32768-60999): 127.0.0.1, .2, ...
 * Up to 20 000 connections one source suffices and none is bound: a bound source port is searched for
 * among every port in use on that address (slow once thousands are), a connect()-chosen one is not.
 */
const sources = N <= 20_000 ? [] : Array.from({ length: Math.ceil(N / 20_000) }, (_, i) => `127.0.0.${i + 1}`);

type Kind = "http" | "tcp";

/** Open one client connection, make one exchange, resolve with the socket left open (idle). */
function openIdle(kind: Kind, port: number, i: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, ...(sources.length ? { localAddress: sources[i % sources.length]! } : {}) });
    let got = "";
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`Connection ${i} (${kind}): no answer within 10 s`));
    }, 10_000);
    const done = (err?: Error) => {
      clearTimeout(timer);
      s.removeAllListeners("data");
      if (err) {
        s.destroy();
        reject(err);
      } else resolve(s);
    };
    s.setEncoding("latin1");
    s.once("error", (e) => done(e));
    s.once("close", () => done(new Error(`Connection ${i} (${kind}) closed before its answer`)));
    s.on("connect", () => {
      if (kind === "http") s.write(`GET /idle/${i} HTTP/1.1\r\nhost: bench\r\n\r\n`);
      else s.write(`ping ${i}\n`);
    });
    s.on("data", (chunk: string) => {
      got += chunk;
      if (kind === "tcp") {
        if (got === `ping ${i}\n`) done();
        return;
      }
      const end = got.indexOf("\r\n\r\n");
      const len = /content-length: *(\d+)/i.exec(got)?.[1];
      if (end >= 0 && len !== undefined && got.length >= end + 4 + Number(len)) {
        if (!got.startsWith("HTTP/1.1 200")) done(new Error(`Connection ${i}: ${got.slice(0, 40)}`));
        else done();
      }
    });
  }).then((s) => {
    (s as Socket).removeAllListeners("close");
    (s as Socket).removeAllListeners("error");
    (s as Socket).on("error", () => {});
    return s as Socket;
  });
}

/** Open `n` idle connections, `batch` at a time. */
async function openMany(kind: Kind, port: number, n: number): Promise<Socket[]> {
  const socks: Socket[] = [];
  for (let i = 0; i < n; i += BATCH) {
    const part = await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, (_, j) => openIdle(kind, port, i + j)));
    socks.push(...part);
  }
  return socks;
}

/**
 * Close `socks` and wait (at most 15 s) until the gateway's descriptors are back at `fdsBefore` or have not
 * changed for a second (pooled upstream connections may stay open).
 */
async function closeAll(pid: number, socks: Socket[], fdsBefore: number): Promise<void> {
  for (const s of socks) s.destroy();
  const deadline = performance.now() + 15_000;
  let last = fds(pid);
  let since = performance.now();
  while (last > fdsBefore && performance.now() - since < 1_000 && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    const now = fds(pid);
    if (now !== last) since = performance.now();
    last = now;
  }
}

interface Row {
  readonly entrypoint: string;
  readonly connections: number;
  /** Gateway sockets per client connection. */
  readonly socketsPerConnection: number;
  readonly fdsBefore: number;
  readonly fdsAfter: number;
  readonly rssBefore: number;
  readonly rssAfter: number;
  readonly anonBefore: number;
  readonly anonAfter: number;
  readonly openMs: number;
}

async function measure(kind: Kind, n: number): Promise<Row> {
  const gw = await startGateway(`kubegate-${kind}`);
  const pid = gw.daemon.pid;
  const port = kind === "http" ? gw.httpPort : gw.tcpPort;
  try {
    // Warm-up: the code paths run (JIT, first allocations) before the baseline is taken.
    const fdsIdle = fds(pid);
    await closeAll(pid, await openMany(kind, port, 200), fdsIdle);
    const fdsBefore = fds(pid);
    const before = await stableRss(pid);
    const t0 = performance.now();
    const socks = await openMany(kind, port, n);
    const openMs = performance.now() - t0;
    const after = await stableRss(pid);
    const fdsAfter = fds(pid);
    log(`${kind}: ${socks.length} idle connections in ${(openMs / 1000).toFixed(1)} s; gateway fds ${fdsBefore} -> ${fdsAfter}, VmRSS ${mib(before.rss)} -> ${mib(after.rss)}`);
    await closeAll(pid, socks, fdsBefore);
    return {
      entrypoint: kind === "http" ? "HTTP keep-alive, idle after one request" : "TCP, idle after one echo (each holds an upstream connection)",
      connections: socks.length,
      socketsPerConnection: kind === "http" ? 1 : 2,
      fdsBefore,
      fdsAfter,
      rssBefore: before.rss,
      rssAfter: after.rss,
      anonBefore: before.anon,
      anonAfter: after.anon,
      openMs,
    };
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${gw.daemon.logTail()}`, { cause: err });
  } finally {
    await group.stop(gw.daemon);
  }
}

const mib = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;
const kib = (b: number) => `${(b / 1024).toFixed(2)} KiB`;

let rows: Row[] = [];
let failure: unknown;
try {
  rows = [await measure("http", counts.http), await measure("tcp", counts.tcp)];
} catch (err) {
  failure = err;
} finally {
  await group.stopAll();
  await httpPod[Symbol.asyncDispose]();
  await tcpPod[Symbol.asyncDispose]();
}
if (failure !== undefined) {
  console.error(`The benchmark failed: ${(failure as Error).message}`);
  cleanupSync();
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------------------
// Report

const TARGET = 8 * 1024;
const lines = [
  `kubegate idle connections — ${new Date().toISOString().slice(0, 10)}, bun ${process.versions.bun ?? "?"}, ${readFileSync("/proc/sys/kernel/osrelease", "utf8").trim()}, ${Math.max(1, sources.length)} client source address(es)`,
  "",
  "| Entrypoint | Idle connections | Gateway fds before → after | VmRSS before → after | RSS delta | Per connection | Per gateway socket | RssAnon delta per connection |",
  "|---|---:|---:|---:|---:|---:|---:|---:|",
  ...rows.map((r) => {
    const delta = r.rssAfter - r.rssBefore;
    return `| ${r.entrypoint} | ${r.connections} | ${r.fdsBefore} → ${r.fdsAfter} | ${mib(r.rssBefore)} → ${mib(r.rssAfter)} | ${mib(delta)} | ${kib(delta / r.connections)} | ${kib(delta / r.connections / r.socketsPerConnection)} | ${kib((r.anonAfter - r.anonBefore) / r.connections)} |`;
  }),
  "",
  `- Open-files limit ${fdLimit}${counts.tcp < N || counts.http < N ? ` (could not be raised): ${N} connections asked, the limit allowed the counts above` : ""}.`,
  ...rows.map((r) => {
    const per = (r.rssAfter - r.rssBefore) / r.connections;
    return `- ${r.entrypoint}: ${kib(per)} per connection — target under 8 KiB ${per < TARGET ? "met" : "NOT met"}.`;
  }),
];
const md = lines.join("\n");
console.log(md);
if (args.md) writeFileSync(args.md, `${md}\n`);
cleanupSync();
