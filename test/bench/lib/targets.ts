/**
 * The things under test, started on the proxy core (or unpinned, `core` undefined) in front of the same
 * backends: kubegate (from a generated manifest directory), nginx (1 worker, or N with reuseport; HTTP/1.1 only),
 * haproxy (1 thread or N; http and tcp mode, and h2c), and the direct path (no proxy).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Backends } from "../backends/start.ts";
import { haproxyConf } from "../configs/haproxy.ts";
import { kubegateManifests } from "../configs/kubegate-manifests.ts";
import { nginxProxyConf } from "../configs/nginx-proxy.ts";
import type { EndpointKind } from "./cases.ts";
import type { PortAllocator } from "./ports.ts";
import type { Daemon, ProcessGroup } from "./procs.ts";
import { waitForH2, waitForHttp, waitForPort } from "./probe.ts";
import type { TargetKind } from "./report.ts";

/** A proxy under test (or the direct path): where its entrypoints are and whose CPU to count. */
export interface Target {
  readonly name: string;
  readonly kind: TargetKind;
  /** Root of the process tree whose CPU is counted (undefined for the direct path). */
  readonly pid: number | undefined;
  readonly ports: Readonly<Partial<Record<EndpointKind, number>>>;
  readonly daemon: Daemon | undefined;
}

/** The repository root (for `src/main.ts`). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** Throws when `daemon` has exited (a probe may have reached another process on its port). */
function assertRunning(daemon: Daemon): void {
  if (daemon.hasExited()) throw new Error(`"${daemon.name}" exited while starting:\n${daemon.logTail()}`);
}

/** The direct path: the load generator straight to the first backend (of each kind). */
export function directTarget(b: Backends): Target {
  return { name: "direct", kind: "direct", pid: undefined, ports: { http: b.http[0]!, tcp: b.http[0]!, iperf: b.iperf, echo: b.echo, h2c: b.h2c[0]! }, daemon: undefined };
}

/** `core` as spawn options: pinned to it, or unpinned when undefined. */
function onCore(core: number | undefined): { core?: number } {
  return core === undefined ? {} : { core };
}

/** Start nginx as a reverse proxy (`workers` workers, default 1; upstream keepalive 64) on `core`. */
export async function startNginxProxy(group: ProcessGroup, ports: PortAllocator, dir: string, core: number | undefined, b: Backends, workers = 1): Promise<Target> {
  const ndir = join(dir, "nginx-proxy");
  mkdirSync(ndir, { recursive: true });
  const port = await ports.next();
  const conf = join(ndir, "nginx.conf");
  writeFileSync(conf, nginxProxyConf({ port, backends: b.http, dir: ndir, runAsRoot: process.getuid?.() === 0, workers }));
  const daemon = group.start("nginx-proxy", ["nginx", "-p", ndir, "-e", "stderr", "-c", conf], onCore(core));
  await waitForHttp(`http://127.0.0.1:${port}/`, daemon);
  assertRunning(daemon);
  return { name: "nginx", kind: "nginx", pid: daemon.pid, ports: { http: port }, daemon };
}

/**
 * Start haproxy (`threads` threads, default 1; an http frontend and tcp ones to the HTTP backends, iperf3 and echo,
 * and an h2c frontend to the h2c origins) on `core`.
 */
export async function startHaproxy(group: ProcessGroup, ports: PortAllocator, dir: string, core: number | undefined, b: Backends, threads = 1): Promise<Target> {
  const hdir = join(dir, "haproxy");
  mkdirSync(hdir, { recursive: true });
  const [http, tcp, iperf, echo, h2c] = [await ports.next(), await ports.next(), await ports.next(), await ports.next(), await ports.next()];
  const conf = join(hdir, "haproxy.cfg");
  writeFileSync(
    conf,
    haproxyConf({ httpPort: http, tcpPort: tcp, iperfPort: iperf, backends: b.http, iperfBackend: b.iperf, echoPort: echo, echoBackend: b.echo, h2cPort: h2c, h2cBackends: b.h2c, threads }),
  );
  const daemon = group.start("haproxy", ["haproxy", "-db", "-f", conf], onCore(core));
  await waitForHttp(`http://127.0.0.1:${http}/`, daemon);
  await waitForHttp(`http://127.0.0.1:${tcp}/`, daemon);
  await waitForPort(iperf, daemon);
  await waitForPort(echo, daemon);
  await waitForH2(`http://127.0.0.1:${h2c}/`, daemon);
  assertRunning(daemon);
  return { name: "haproxy", kind: "haproxy", pid: daemon.pid, ports: { http, tcp, iperf, echo, h2c }, daemon };
}

/** The Node the benchmark's kubegate runs as (`--hostname-override`). */
export const benchNodeName = "bench-node";

/**
 * Start kubegate (`bun [bunArgs] src/main.ts --manifests DIR ...` plus `extraArgs`, with `env` over the harness's
 * environment) on `core` serving `manifests` (YAML, for the Node {@link benchNodeName}) from
 * `<dir>/<name>/manifests`, and wait for /readyz.
 */
export async function launchKubegate(
  group: ProcessGroup,
  ports: PortAllocator,
  dir: string,
  core: number | undefined,
  name: string,
  manifests: string,
  extraArgs: readonly string[],
  bunArgs: readonly string[] = [],
  env?: Readonly<Record<string, string>>,
): Promise<Daemon> {
  const mdir = join(dir, name, "manifests");
  mkdirSync(mdir, { recursive: true });
  writeFileSync(join(mdir, "bench.yaml"), manifests);
  const [healthz, metrics] = [await ports.next(), await ports.next()];
  const bun = process.versions.bun ? process.execPath : "bun";
  const cmd = [
    bun,
    ...bunArgs,
    join(repoRoot, "src", "main.ts"),
    "--manifests", mdir,
    "--hostname-override", benchNodeName,
    "--nodeport-addresses", "127.0.0.0/8",
    "--host-addresses", "127.0.0.1",
    "--healthz-bind-address", `127.0.0.1:${healthz}`,
    "--metrics-bind-address", `127.0.0.1:${metrics}`,
    "--log-level", "warn",
    // nginx and haproxy run without access logs here; so does kubegate (it logs each request by default).
    "--no-access-log",
    ...extraArgs,
  ];
  const daemon = group.start(name, cmd, { ...onCore(core), cwd: repoRoot, ...(env ? { env } : {}) });
  await waitForHttp(`http://127.0.0.1:${healthz}/readyz`, daemon, { timeoutMs: 30_000 });
  return daemon;
}

/**
 * Start kubegate ({@link launchKubegate}) with the benchmark's manifests on `core`, and wait for its HTTP, TCP
 * and h2c entrypoints to answer through to the backends.
 */
export async function startKubegate(
  group: ProcessGroup,
  ports: PortAllocator,
  dir: string,
  core: number | undefined,
  b: Backends,
  name: string,
  extraArgs: readonly string[],
  bunArgs: readonly string[] = [],
  env?: Readonly<Record<string, string>>,
): Promise<Target> {
  const [http, tcp, iperf, echo, h2c] = [await ports.next(), await ports.next(), await ports.next(), await ports.next(), await ports.next()];
  const manifests = kubegateManifests({
    nodeName: benchNodeName,
    httpNodePort: http,
    tcpNodePort: tcp,
    iperfNodePort: iperf,
    echoNodePort: echo,
    backends: b.http,
    iperfBackend: b.iperf,
    echoBackend: b.echo,
    h2c: { nodePort: h2c, backends: b.h2c },
  });
  const daemon = await launchKubegate(group, ports, dir, core, name, manifests, extraArgs, bunArgs, env);
  await waitForHttp(`http://127.0.0.1:${http}/`, daemon);
  await waitForHttp(`http://127.0.0.1:${tcp}/`, daemon);
  await waitForPort(iperf, daemon);
  await waitForPort(echo, daemon);
  await waitForH2(`http://127.0.0.1:${h2c}/`, daemon);
  assertRunning(daemon);
  return { name, kind: "kubegate", pid: daemon.pid, ports: { http, tcp, iperf, echo, h2c }, daemon };
}
