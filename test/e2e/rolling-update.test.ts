/**
 * Issue 7's first acceptance test: a Deployment rollout under load through the whole gateway, fed by the
 * test API server (real watches), with pod-like backends (test/support/pod-backends.ts).
 *
 * Each rollout replaces every pod of a 3-replica Deployment one at a time, as the Deployment and
 * EndpointSlice controllers do with maxSurge 1 / maxUnavailable 0: a new pod starts (endpoint not ready),
 * becomes ready; an old pod becomes terminating (ready=false, serving=true, terminating=true) and gets its
 * SIGTERM (it closes its idle keep-alive connections at once and says `Connection: close` on whatever it
 * still answers); it is then removed from the slice, and the process stops (its port refuses connections).
 * Three rollouts run back to back under one constant load, and the pass mark is zero failed requests and
 * zero reset connections. Every step waits for the gateway to have seen it and for traffic to have flowed
 * through it, so each state is really exercised.
 *
 * HTTP runs twice: with SIGTERM at the moment of the slice update (no preStop hook, the hard case: the pod
 * closes keep-alive connections the gateway may be about to use, before the gateway knows it is
 * terminating), and with SIGTERM once the gateway has stopped picking the pod (a preStop hook).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Gateway } from "../../src/gateway.ts";
import type { Cluster } from "../../src/model/types.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { startTestGateway } from "../support/gateway.ts";
import {
  connectRefused,
  type HttpPod,
  PodNetwork,
  startHttpLoad,
  startHttpPod,
  startTcpEchoPod,
  startTcpLoad,
  type TcpPod,
} from "../support/pod-backends.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

const NS = "rollout";
const REPLICAS = 3;
const ROLLOUTS = 3;
const label = { "service.kubernetes.io/service-proxy-name": "kubegate" };

type PodState = "starting" | "ready" | "terminating";
type AnyPod = HttpPod | TcpPod;

const conditions: Record<PodState, { ready: boolean; serving: boolean; terminating: boolean }> = {
  starting: { ready: false, serving: false, terminating: false },
  ready: { ready: true, serving: true, terminating: false },
  terminating: { ready: false, serving: true, terminating: true },
};

/**
 * The EndpointSlice of one Service as the EndpointSlice controller keeps it: one slice listing every pod
 * of the Deployment with its conditions, rewritten on each change.
 */
class EndpointSliceWriter {
  readonly pods = new Map<AnyPod, PodState>();
  #created = false;
  constructor(
    readonly api: TestApiServer,
    readonly service: string,
    readonly portName: string,
    readonly targetPort: number,
  ) {}

  set(pod: AnyPod, state: PodState | "removed"): void {
    if (state === "removed") this.pods.delete(pod);
    else this.pods.set(pod, state);
    const slice = {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `${this.service}-abcde`, namespace: NS, labels: { "kubernetes.io/service-name": this.service } },
      addressType: "IPv4",
      ports: [{ name: this.portName, port: this.targetPort, protocol: "TCP" }],
      endpoints: [...this.pods].map(([p, s]) => ({
        addresses: [p.hostname],
        conditions: conditions[s],
        nodeName: "node-a",
        targetRef: { kind: "Pod", namespace: NS, name: p.name },
      })),
    };
    if (!this.#created) {
      this.api.create(slice);
      this.#created = true;
      return;
    }
    const current = this.api.get("endpointslices", NS, slice.metadata.name) as { metadata: object };
    this.api.update({ ...slice, metadata: current.metadata });
  }
}

function nodePortService(name: string, portName: string, nodePort: number, targetPort: number, appProtocol?: string) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: NS, labels: label },
    spec: {
      type: "NodePort",
      selector: { app: name },
      ports: [{ name: portName, port: 80, targetPort, nodePort, protocol: "TCP", ...(appProtocol ? { appProtocol } : {}) }],
    },
  };
}

describe("rolling update through the gateway (issue 7)", () => {
  let api: TestApiServer;
  let gw: Gateway;

  beforeAll(async () => {
    api = await startApiServer({ bookmarkIntervalMs: 500 });
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    gw = await startTestGateway(api);
  });

  afterAll(async () => {
    await gw?.[Symbol.asyncDispose]();
    await api?.[Symbol.asyncDispose]();
  });

  /** The gateway's current view of one entrypoint's cluster. */
  const clusterOf = (key: string): Cluster | undefined => gw.snapshot()?.entrypoints.find((e) => e.key === key)?.cluster;
  const serves = (key: string, ip: string) => clusterOf(key)?.serving.some((e) => e.address === ip) ?? false;
  const knows = (key: string, ip: string) => clusterOf(key)?.endpoints.some((e) => e.address === ip) ?? false;

  /**
   * Roll every pod of `slices` to a new one, one at a time. `started(pod)` tells when a new pod has taken
   * traffic; `progress()` waits until the load has made progress (so each state carries traffic).
   */
  async function rollout<P extends AnyPod>(
    key: string,
    slices: EndpointSliceWriter,
    current: P[],
    start: (name: string) => P,
    generation: number,
    took: (pod: P) => boolean,
    progress: () => Promise<void>,
    preStop = false,
  ): Promise<P[]> {
    const next: P[] = [];
    for (const [i, old] of current.entries()) {
      // A new pod starts: listed, not ready, so it must get nothing.
      const fresh = start(`web-v${generation}-${i}`);
      next.push(fresh);
      slices.set(fresh, "starting");
      await waitFor(() => knows(key, fresh.hostname), { what: `the gateway to list ${fresh.name}` });
      await progress();
      expect({ pod: fresh.name, connectionsWhileNotReady: fresh.stats.connections }).toEqual({ pod: fresh.name, connectionsWhileNotReady: 0 });
      // Its readiness probe passes.
      slices.set(fresh, "ready");
      await waitFor(() => serves(key, fresh.hostname), { what: `the gateway to serve ${fresh.name}` });
      await waitFor(() => took(fresh), { what: `${fresh.name} to take traffic`, timeoutMs: 10_000 });
      // The old pod is deleted: terminating in the slice and SIGTERM to the process at the same moment, or,
      // with a preStop hook, SIGTERM once the gateway has stopped picking it.
      slices.set(old, "terminating");
      if (!preStop) old.terminate();
      await waitFor(() => !serves(key, old.hostname), { what: `the gateway to stop picking ${old.name}` });
      if (preStop) old.terminate();
      await progress();
      // The EndpointSlice controller drops it; the process finishes what it has and exits.
      slices.set(old, "removed");
      await old.stop();
      expect({ pod: old.name, refused: await connectRefused(old.hostname, old.port) }).toEqual({ pod: old.name, refused: true });
      await waitFor(() => !knows(key, old.hostname), { what: `the gateway to forget ${old.name}` });
      await progress();
    }
    return next;
  }

  test.each([
    ["SIGTERM with the slice update (no preStop hook)", false],
    ["SIGTERM after the gateway stopped picking the pod (preStop hook)", true],
  ])(
    "HTTP, %s: three rollouts under keep-alive and new-connection load, GETs and POSTs: zero failed requests, zero resets",
    async (_name, preStop) => {
      const net = new PodNetwork();
      const pods: HttpPod[] = [];
      const delay = () => Math.random() * 4;
      const first = startHttpPod({ name: "web-v0-0", hostname: net.nextAddress(), responseDelayMs: delay });
      const targetPort = first.port;
      const start = (name: string) => {
        const p = startHttpPod({ name, hostname: net.nextAddress(), port: targetPort, responseDelayMs: delay });
        pods.push(p);
        return p;
      };
      pods.push(first);
      try {
        const nodePort = await freePort();
        const svc = preStop ? "web-prestop" : "web";
        api.create(nodePortService(svc, "http", nodePort, targetPort, "http"));
        const key = `NodePort/${NS}/${svc}:http`;
        const slices = new EndpointSliceWriter(api, svc, "http", targetPort);
        let current: HttpPod[] = [first, ...Array.from({ length: REPLICAS - 1 }, (_, i) => start(`web-v0-${i + 1}`))];
        for (const p of current) slices.set(p, "ready");
        await waitFor(() => current.every((p) => serves(key, p.hostname)) && gw.listeners.status().some((l) => l.key === key && l.listeners.every((x) => x.bound)), {
          what: "the Service to be served",
        });

        await using load = startHttpLoad({ port: nodePort, keepAliveWorkers: 4, newConnectionWorkers: 2, paceMs: 2, maxMs: 45_000 });
        const progress = async () => {
          const mark = load.stats.ok;
          await waitFor(() => load.stats.ok >= mark + 30 || load.stats.failed > 0, { what: "the load to make progress", timeoutMs: 10_000 });
        };
        await waitFor(() => current.every((p) => p.stats.requests > 0), { what: "every first pod to take traffic", timeoutMs: 10_000 });

        for (let gen = 1; gen <= ROLLOUTS; gen++) {
          current = await rollout(key, slices, current, start, gen, (p) => p.stats.requests >= 10, progress, preStop);
        }
        const stats = await load.stop();
        const served = pods.filter((p) => (stats.byPod[p.name] ?? 0) > 0).map((p) => p.name);
        const podSide = pods.reduce(
          (t, p) => ({ aborted: t.aborted + p.stats.aborted, resets: t.resets + p.stats.resets, idleClosed: t.idleClosed + p.stats.idleClosed }),
          { aborted: 0, resets: 0, idleClosed: 0 },
        );
        expect({
          failed: stats.failed,
          resets: stats.resets,
          unexpectedCloses: stats.unexpectedCloses,
          failures: stats.failures,
          everyPodServed: served.length,
          upstreamAborted: podSide.aborted,
          upstreamResets: podSide.resets,
        }).toEqual({
          failed: 0,
          resets: 0,
          unexpectedCloses: 0,
          failures: [],
          everyPodServed: REPLICAS * (ROLLOUTS + 1),
          upstreamAborted: 0,
          upstreamResets: 0,
        });
        // The load really was mixed, and terminating pods really closed keep-alive connections under the gateway.
        expect(stats.gets).toBeGreaterThan(100);
        expect(stats.posts).toBeGreaterThan(100);
        expect(stats.connections).toBeGreaterThan(100);
        expect(podSide.idleClosed).toBeGreaterThan(0);
      } finally {
        await Promise.all(pods.map((p) => p[Symbol.asyncDispose]()));
      }
    },
    60_000,
  );

  test(
    "TCP: three rollouts under long-lived and short echo connections: zero failed connections, zero resets",
    async () => {
      const net = new PodNetwork();
      const pods: TcpPod[] = [];
      const first = startTcpEchoPod({ name: "echo-v0-0", hostname: net.nextAddress() });
      const targetPort = first.port;
      const start = (name: string) => {
        const p = startTcpEchoPod({ name, hostname: net.nextAddress(), port: targetPort });
        pods.push(p);
        return p;
      };
      pods.push(first);
      try {
        const nodePort = await freePort();
        api.create(nodePortService("echo", "tcp", nodePort, targetPort));
        const key = `NodePort/${NS}/echo:tcp`;
        const slices = new EndpointSliceWriter(api, "echo", "tcp", targetPort);
        let current: TcpPod[] = [first, ...Array.from({ length: REPLICAS - 1 }, (_, i) => start(`echo-v0-${i + 1}`))];
        for (const p of current) slices.set(p, "ready");
        await waitFor(() => current.every((p) => serves(key, p.hostname)) && gw.listeners.status().some((l) => l.key === key && l.listeners.every((x) => x.bound)), {
          what: "the Service to be served",
        });

        await using load = startTcpLoad({ port: nodePort, longLivedWorkers: 4, exchanges: 25, exchangePaceMs: 10, shortWorkers: 2, paceMs: 2, maxMs: 45_000 });
        const progress = async () => {
          const mark = load.stats.ok;
          await waitFor(() => load.stats.ok >= mark + 10 || load.stats.failed > 0, { what: "the load to make progress", timeoutMs: 10_000 });
        };
        await waitFor(() => current.every((p) => p.stats.connections > 0), { what: "every first pod to take traffic", timeoutMs: 10_000 });

        for (let gen = 1; gen <= ROLLOUTS; gen++) {
          current = await rollout(key, slices, current, start, gen, (p) => p.stats.connections >= 3, progress);
        }
        const stats = await load.stop();
        const podSide = pods.reduce((t, p) => ({ resets: t.resets + p.stats.resets, killed: t.killed + p.stats.killed }), { resets: 0, killed: 0 });
        expect({
          failed: stats.failed,
          resets: stats.resets,
          failures: stats.failures,
          upstreamResets: podSide.resets,
          killedAtStop: podSide.killed,
          everyPodConnected: pods.filter((p) => p.stats.connections > 0).length,
        }).toEqual({ failed: 0, resets: 0, failures: [], upstreamResets: 0, killedAtStop: 0, everyPodConnected: REPLICAS * (ROLLOUTS + 1) });
        // Long-lived connections spanned the steps (each lasts hundreds of ms), short ones came and went.
        expect(stats.longLived).toBeGreaterThan(10);
        expect(stats.exchanges).toBeGreaterThan(500);
        expect(stats.connections).toBeGreaterThan(100);
      } finally {
        await Promise.all(pods.map((p) => p[Symbol.asyncDispose]()));
      }
    },
    60_000,
  );
});
