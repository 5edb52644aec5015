/**
 * The surge hand-over as it happens on a node, run inside a network namespace of its own (see `netns.ts`): a test
 * API server, pod-like backends, and kubegate processes (`bun src/main.ts`, the same flags each: health on :10356,
 * admin on :10349, NodePorts 30080 HTTP, 30090 TCP, 30053 UDP, healthCheckNodePort 32000) started one after another
 * as a DaemonSet rollout with `maxSurge: 1` does: v(n+1) starts beside v(n), becomes ready, then v(n) gets SIGTERM
 * (or SIGKILL) and exits. Under constant load all the while: HTTP keep-alive GETs and POSTs, a new connection per
 * request, long-lived and short TCP connections, UDP request/response flows, and kubelet-like probes (a new
 * connection each) of /readyz, /livez and the healthCheckNodePort. Prints one JSON line: {@link ScenarioResult}.
 *
 * Also the benchmark of the hand-over (`npm run bench:handover`): with `--rate` it reports throughput per 250 ms
 * window and latency percentiles around each hand-over.
 *
 * Usage (inside the namespace): bun test/e2e/handover/scenario.ts '{"rounds":3}'
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tcpMigrateReq } from "../../../src/config/host.ts";
import { rt } from "../../../src/runtime/index.ts";
import { startApiServer } from "../../support/apiserver.ts";
import { type HttpLoadStats, PodNetwork, startHttpLoad, startHttpPod, startTcpEchoPod, startTcpLoad, type TcpLoadStats } from "../../support/pod-backends.ts";
import { udpClient, udpEcho } from "../../support/udp-peers.ts";

const root = fileURLToPath(new URL("../../..", import.meta.url));
const NS = "edge";
const HEALTH = 10356;
const ADMIN = 10349;
const HTTP_PORT = 30080;
const TCP_PORT = 30090;
const UDP_PORT = 30053;
const HCNP = 32000;

export interface ScenarioOptions {
  /** Hand-overs in a row (v1 -> v2 -> ... ; default 3). */
  readonly rounds?: number;
  /** `--workers` of every gateway (default 1). */
  readonly workers?: number;
  /** Run `kubegate prepare-node` first (net.ipv4.tcp_migrate_req=1; default true). */
  readonly migrate?: boolean;
  /** End the old gateway with SIGKILL instead of SIGTERM in the last round. */
  readonly killLast?: boolean;
  /** Keep-alive HTTP workers (default 4) and new-connection workers (default 2) of the load. */
  readonly keepAliveWorkers?: number;
  readonly newConnectionWorkers?: number;
  /** Pause between a load worker's requests, ms (default 2). */
  readonly paceMs?: number;
  /** Run the LB controller (`--lb-controller`): its Lease must pass from each old gateway to its successor. */
  readonly lbController?: boolean;
  /** Also time every HTTP request (the benchmark). */
  readonly timeline?: boolean;
}

/** A probe answer that broke the rule of its phase. */
export interface ProbeViolation {
  readonly path: string;
  readonly phase: Phase;
  readonly got: string;
  readonly atMs: number;
}

export interface ScenarioResult {
  readonly ok: boolean;
  readonly error?: string;
  readonly migrate: boolean | undefined;
  readonly prepareNode?: { code: number; output: string };
  readonly http?: HttpLoadStats;
  readonly tcp?: TcpLoadStats;
  readonly udp?: { sent: number; answered: number; lost: number; flows: number; deadFlows: number };
  readonly probes?: { total: number; byPhase: Record<string, Record<string, number>>; violations: ProbeViolation[] };
  /** Per gateway: its exit code and how it ended. */
  readonly gateways?: { name: string; code: number | null; signal: string; handedOver: boolean }[];
  /** With `killLast`: failures counted from 1 s after the SIGKILL to the end (the successor alone serves). */
  readonly afterKill?: { http: number; tcp: number; httpOk: number };
  /** With `lbController`: per hand-over, ms from the old gateway's exit to the new one leading the LB controller. */
  readonly leaseTakeoverMs?: number[];
  /** The state file's writer after the last hand-over (the last gateway's /api/status). */
  readonly finalState?: { writer: boolean; writes: number; role: string };
  /** With `timeline`: HTTP throughput and latency in the 2 s before each SIGTERM and from it to the old gateway's exit. */
  readonly timeline?: HandoverWindow[];
  /** The last log lines of each gateway (on failure). */
  readonly logs?: Record<string, string[]>;
}

/** HTTP exchanges in a span of time. */
export interface WindowStats {
  readonly ms: number;
  readonly requests: number;
  readonly failed: number;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  /** The fewest requests completed in any 250 ms of the span, per second. */
  readonly worst250msRps: number;
}

export interface HandoverWindow {
  readonly round: number;
  readonly before: WindowStats;
  /** From SIGTERM to the old gateway's exit (its drain included). */
  readonly during: WindowStats;
  /** The 2 s after the exit (the new gateway alone). */
  readonly after: WindowStats;
}

/** Exchanges (start, duration, ok) completed in [from, to). */
function windowStats(ex: { t: number[]; ms: number[]; ok: boolean[] }, from: number, to: number): WindowStats {
  const lat: number[] = [];
  let failed = 0;
  const buckets = new Array<number>(Math.max(1, Math.floor((to - from) / 250))).fill(0);
  for (let i = 0; i < ex.t.length; i++) {
    const end = ex.t[i]! + ex.ms[i]!;
    if (end < from || end >= to) continue;
    lat.push(ex.ms[i]!);
    if (!ex.ok[i]) failed++;
    const b = Math.floor((end - from) / 250);
    if (b < buckets.length) buckets[b]!++;
  }
  lat.sort((a, b) => a - b);
  const q = (p: number) => Math.round((lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? 0) * 100) / 100;
  return {
    ms: Math.round(to - from),
    requests: lat.length,
    failed,
    rps: Math.round((lat.length * 1000) / (to - from)),
    p50: q(0.5),
    p99: q(0.99),
    max: Math.round((lat.at(-1) ?? 0) * 100) / 100,
    worst250msRps: Math.min(...buckets) * 4,
  };
}

/** The phases of the node, for the probe rules. */
type Phase = "serving" | "successor-starting" | "handing-over" | "killed";

/** A kubegate process and its JSON log. */
class GatewayProcess {
  readonly lines: Record<string, unknown>[] = [];
  readonly exited: Promise<{ code: number | null; signal: string }>;
  readonly #child: ReturnType<typeof spawn>;
  readonly #waiters = new Set<() => void>();
  signal = "";

  constructor(
    readonly name: string,
    args: readonly string[],
  ) {
    this.#child = spawn(process.execPath, ["src/main.ts", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let pending = "";
    const take = (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      const parts = pending.split("\n");
      pending = parts.pop()!;
      for (const p of parts) {
        try {
          this.lines.push(JSON.parse(p) as Record<string, unknown>);
        } catch {
          this.lines.push({ msg: p });
        }
      }
      for (const w of this.#waiters) w();
    };
    this.#child.stdout!.on("data", take);
    this.#child.stderr!.on("data", take);
    this.exited = new Promise((resolve) => this.#child.once("exit", (code, signal) => resolve({ code, signal: signal ?? "" })));
  }

  get pid(): number {
    return this.#child.pid!;
  }

  /** Resolves with the first log line whose `msg` starts with `prefix` (rejects after `timeoutMs`). */
  logged(prefix: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.lines.find((l) => typeof l.msg === "string" && l.msg.startsWith(prefix));
        if (!hit) return;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve(hit);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`${this.name}: no log line "${prefix}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  kill(signal: "SIGTERM" | "SIGKILL"): void {
    this.signal = signal;
    this.#child.kill(signal);
  }

  tail(n = 30): string[] {
    return this.lines.slice(-n).map((l) => JSON.stringify(l).slice(0, 400));
  }
}

/** One kubelet-like probe: a new connection, `GET path`, the status code or the error. */
function probe(port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    let text = "";
    const timer = setTimeout(() => (socket.destroy(), resolve("timeout")), 2_000);
    socket.on("connect", () => socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nUser-Agent: kube-probe/1.31\r\n\r\n`));
    socket.on("data", (d) => (text += d.toString("latin1")));
    socket.on("error", (err: NodeJS.ErrnoException) => (clearTimeout(timer), resolve(err.code ?? err.message)));
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? (text ? "garbled" : "closed"));
    });
  });
}

/** Whether `got` is a right answer of probe `path` in `phase` (see the module comment of the test). */
function allowed(path: string, phase: Phase, got: string): boolean {
  if (path === "/readyz" && phase === "successor-starting") return got === "200" || got === "503";
  return got === "200";
}

/** Objects of the node: Node, three Services, their EndpointSlices (endpoints on this node). */
function objects(http: { hostname: string; port: number }[], tcp: { hostname: string; port: number }[], udp: { port: number }[]) {
  const label = { "service.kubernetes.io/service-proxy-name": "kubegate" };
  const service = (name: string, type: string, port: { name: string; protocol: string; nodePort: number; appProtocol?: string }, extra: object = {}) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: NS, labels: label },
    spec: { type, selector: { app: name }, ports: [{ port: 80, targetPort: 8080, ...port }], ...extra },
  });
  const slice = (name: string, port: { name: string; protocol: string; port: number }, eps: { hostname: string }[]) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: `${name}-abcde`, namespace: NS, labels: { "kubernetes.io/service-name": name } },
    addressType: "IPv4",
    ports: [port],
    endpoints: eps.map((e, i) => ({
      addresses: [e.hostname],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: "node-a",
      targetRef: { kind: "Pod", namespace: NS, name: `${name}-${i}` },
    })),
  });
  // Every endpoint listens on its own address with one port number per Service (as pods do).
  return [
    { apiVersion: "v1", kind: "Node", metadata: { name: "node-a" }, status: { addresses: [{ type: "InternalIP", address: "127.0.0.1" }] } },
    service("web", "LoadBalancer", { name: "http", protocol: "TCP", nodePort: HTTP_PORT, appProtocol: "http" }, { externalTrafficPolicy: "Local", healthCheckNodePort: HCNP }),
    slice("web", { name: "http", protocol: "TCP", port: http[0]!.port }, http),
    service("echo", "NodePort", { name: "tcp", protocol: "TCP", nodePort: TCP_PORT }),
    slice("echo", { name: "tcp", protocol: "TCP", port: tcp[0]!.port }, tcp),
    service("dns", "NodePort", { name: "udp", protocol: "UDP", nodePort: UDP_PORT }),
    slice("dns", { name: "udp", protocol: "UDP", port: udp[0]!.port }, udp.map(() => ({ hostname: "127.0.0.1" }))),
  ];
}

/** UDP request/response flows through the gateway: each sends a numbered datagram and waits for its echo. */
function udpFlows(flows: number) {
  const stats = { sent: 0, answered: 0, lost: 0, flows, deadFlows: 0 };
  let running = true;
  const lastAnswer = new Array<number>(flows).fill(0);
  const done = Promise.all(
    Array.from({ length: flows }, async (_, f) => {
      await using client = await udpClient(rt, UDP_PORT);
      for (let seq = 0; running; seq++) {
        const text = `flow${f}-${seq}`;
        stats.sent++;
        client.send(text);
        const deadline = performance.now() + 500;
        for (;;) {
          const left = deadline - performance.now();
          const got = left > 0 ? await client.next(left).catch(() => undefined) : undefined;
          if (got === undefined) {
            stats.lost++;
            break;
          }
          if (got.endsWith(`:${text}`)) {
            stats.answered++;
            lastAnswer[f] = performance.now();
            break;
          }
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    }),
  );
  return {
    stats,
    async stop() {
      running = false;
      await done;
      const now = performance.now();
      stats.deadFlows = lastAnswer.filter((t) => now - t > 2_000).length;
      return stats;
    },
  };
}

export async function runScenario(options: ScenarioOptions): Promise<ScenarioResult> {
  const rounds = options.rounds ?? 3;
  const dir = mkdtempSync(join(tmpdir(), "kubegate-handover-"));
  const gateways: GatewayProcess[] = [];
  const started = performance.now();
  const at = () => Math.round(performance.now() - started);
  let prepareNode: ScenarioResult["prepareNode"];
  spawnSync("ip", ["link", "set", "lo", "up"]);
  if (options.migrate ?? true) {
    const r = spawnSync(process.execPath, ["src/main.ts", "prepare-node"], { cwd: root, encoding: "utf8" });
    prepareNode = { code: r.status ?? -1, output: `${r.stdout}${r.stderr}`.trim() };
  }
  const migrate = tcpMigrateReq();
  await using api = await startApiServer({ bookmarkIntervalMs: 500, ...(options.lbController ? { rbac: "lb-controller" as const } : {}) });
  const net = new PodNetwork();
  const httpPods = [0, 1].map((i) => startHttpPod({ name: `web-${i}`, hostname: net.nextAddress(), port: 8080 }));
  const tcpPods = [0, 1].map((i) => startTcpEchoPod({ name: `echo-${i}`, hostname: net.nextAddress(), port: 8080 }));
  const udpPods = await Promise.all([0, 1].map((i) => udpEcho(rt, { tag: `udp-${i}` })));
  // Both UDP echoes need the same port: a Service port has one target port.
  for (const o of objects(httpPods, tcpPods, [udpPods[0]!])) api.create(o);
  const kubeconfig = await api.writeKubeconfig();
  const args = [
    "--kubeconfig", kubeconfig,
    "--hostname-override", "node-a",
    "--host-addresses", "127.0.0.1",
    "--nodeport-addresses", "127.0.0.0/8",
    "--healthz-bind-address", `127.0.0.1:${HEALTH}`,
    "--metrics-bind-address", `127.0.0.1:${ADMIN}`,
    "--drain-grace-period", "10s",
    "--workers", String(options.workers ?? 1),
    "--state-file", join(dir, "state.json"),
    "--no-access-log",
    ...(options.lbController ? ["--lb-controller"] : []),
  ];
  const LEADER = "Became the load balancer controller leader";
  const leaseTakeoverMs: number[] = [];
  const probes = { total: 0, byPhase: {} as Record<string, Record<string, number>>, violations: [] as ProbeViolation[] };
  let phase: Phase = "serving";
  let probing = true;
  const probeLoop = async () => {
    const paths = [
      [HEALTH, "/readyz"],
      [HEALTH, "/livez"],
      [HCNP, "/"],
    ] as const;
    while (probing) {
      await Promise.all(
        paths.map(async ([port, path]) => {
          const now = phase;
          const got = await probe(port, path);
          const key = `${port === HCNP ? "healthCheckNodePort" : path} ${now}`;
          probes.total++;
          probes.byPhase[key] ??= {};
          probes.byPhase[key]![got] = (probes.byPhase[key]![got] ?? 0) + 1;
          // The phase may have moved on while the probe ran: judge by the more lenient of the two.
          if (!allowed(path, now, got) && !allowed(path, phase, got)) probes.violations.push({ path: key, phase: now, got, atMs: at() });
        }),
      );
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  let prober: Promise<void> | undefined;
  let http: ReturnType<typeof startHttpLoad> | undefined;
  let tcp: ReturnType<typeof startTcpLoad> | undefined;
  let udp: ReturnType<typeof udpFlows> | undefined;
  const handovers: { round: number; sigtermAt: number; exitedAt: number }[] = [];
  const exchanges = { t: [] as number[], ms: [] as number[], ok: [] as boolean[] };
  const onExchange = options.timeline
    ? (t: number, ms: number, ok: boolean) => (exchanges.t.push(t - started), exchanges.ms.push(ms), exchanges.ok.push(ok))
    : undefined;
  let error: string | undefined;
  let afterKill: ScenarioResult["afterKill"];
  try {
    const first = new GatewayProcess("v1", args);
    gateways.push(first);
    await first.logged("Ready: the first snapshot's listeners are bound");
    if (options.lbController) await first.logged(LEADER);
    prober = probeLoop();
    const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
    // The load starts once v1 serves: from here on nothing may fail.
    http = startHttpLoad({ port: HTTP_PORT, keepAliveWorkers: options.keepAliveWorkers ?? 4, newConnectionWorkers: options.newConnectionWorkers ?? 2, paceMs: options.paceMs ?? 2, maxMs: 600_000, maxRequests: 10_000_000, maxBodyBytes: 16 * 1024, ...(onExchange ? { onExchange } : {}) });
        // Long-lived TCP connections of ~1 s: each ends on the gateway it started on (an established connection
    // cannot move; one that outlives the drain grace period is cut, see README).
    tcp = startTcpLoad({ port: TCP_PORT, exchanges: 100, exchangePaceMs: 10, maxMs: 600_000, maxConnections: 10_000_000 });
    udp = udpFlows(4);
    const progress = async () => {
      const h = http!.stats.ok;
      const t = tcp!.stats.exchanges;
      const deadline = performance.now() + 10_000;
      while ((http!.stats.ok < h + 200 || tcp!.stats.exchanges < t + 20) && performance.now() < deadline) await wait(20);
    };
    await progress();
    for (let round = 1; round <= rounds; round++) {
      const old = gateways.at(-1)!;
      phase = "successor-starting";
      const next = new GatewayProcess(`v${round + 1}`, args);
      gateways.push(next);
      await next.logged("Ready: the first snapshot's listeners are bound");
      await old.logged("Successor ready");
      phase = "serving";
      await progress();
      const kill = options.killLast && round === rounds;
      phase = kill ? "killed" : "handing-over";
      // The benchmark compares the hand-over with the 2 s before it.
      if (options.timeline) await wait(2_000);
      const sigtermAt = at();
      old.kill(kill ? "SIGKILL" : "SIGTERM");
      await old.exited;
      handovers.push({ round, sigtermAt, exitedAt: at() });
      await next.logged("This gateway now holds the node", 5_000);
      if (options.lbController) {
        await next.logged(LEADER, 15_000);
        leaseTakeoverMs.push(at() - handovers.at(-1)!.exitedAt);
      }
      phase = "serving";
      if (options.timeline) await wait(2_000);
      if (kill) {
        // What the killed process held is lost (its connections reset); from here on the successor serves alone.
        await wait(1_000);
        afterKill = { http: http.stats.failed, tcp: tcp.stats.failed, httpOk: http.stats.ok };
      }
      await progress();
    }
  } catch (err) {
    error = String(err);
  }
  const httpStats = await http?.stop();
  const tcpStats = await tcp?.stop();
  const udpStats = await udp?.stop();
  probing = false;
  await prober;
  let finalState: ScenarioResult["finalState"];
  try {
    const status = (await (await fetch(`http://127.0.0.1:${ADMIN}/api/status`)).json()) as { state: { writer: boolean; writes: number }; succession: { role: string } };
    finalState = { writer: status.state.writer, writes: status.state.writes, role: status.succession.role };
  } catch (err) {
    error ??= `admin status: ${String(err)}`;
  }
  for (const g of gateways) if (g.signal === "") g.kill("SIGTERM");
  const ends = await Promise.all(gateways.map(async (g) => ({ name: g.name, ...(await g.exited), handedOver: g.lines.some((l) => l.msg === "Shutdown started: handing over to the other gateway on this node") })));
  for (const p of httpPods) await p[Symbol.asyncDispose]();
  for (const p of tcpPods) await p[Symbol.asyncDispose]();
  for (const p of udpPods) p.close();
  rmSync(dir, { recursive: true, force: true });
  const result: ScenarioResult = {
    ok: error === undefined,
    ...(error ? { error } : {}),
    migrate,
    ...(prepareNode ? { prepareNode } : {}),
    ...(httpStats ? { http: httpStats } : {}),
    ...(tcpStats ? { tcp: tcpStats } : {}),
    ...(udpStats ? { udp: udpStats } : {}),
    probes,
    gateways: ends.map((e) => ({ name: e.name, code: e.code, signal: e.signal || gateways.find((g) => g.name === e.name)!.signal, handedOver: e.handedOver })),
    ...(finalState ? { finalState } : {}),
    ...(options.lbController ? { leaseTakeoverMs } : {}),
    ...(afterKill && httpStats && tcpStats
      ? { afterKill: { http: httpStats.failed - afterKill.http, tcp: tcpStats.failed - afterKill.tcp, httpOk: httpStats.ok - afterKill.httpOk } }
      : {}),
    ...(options.timeline
      ? { timeline: handovers.map((h) => ({ round: h.round, before: windowStats(exchanges, h.sigtermAt - 2_000, h.sigtermAt), during: windowStats(exchanges, h.sigtermAt, h.exitedAt), after: windowStats(exchanges, h.exitedAt, h.exitedAt + 2_000) })) }
      : {}),
    ...(error || (httpStats?.failed ?? 0) > 0 || (tcpStats?.failed ?? 0) > 0 ? { logs: Object.fromEntries(gateways.map((g) => [g.name, g.tail()])) } : {}),
  };
  return result;
}

if (import.meta.main) {
  const result = await runScenario(JSON.parse(process.argv[2] ?? "{}") as ScenarioOptions);
  console.log(JSON.stringify(result));
  process.exit(0);
}
