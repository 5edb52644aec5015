/**
 * Run by test/e2e/local-auto.test.ts inside a network namespace of its own, where pod networks are really
 * unroutable: 10.244.0.0/16 has no route at all (ENETUNREACH; Bun reports it as ECONNREFUSED), 10.245.0.0/16 is
 * routed to a tun device nobody reads (connects get no answer, like a laptop whose packets to a kind node vanish),
 * and 127.0.0.0/8 is the routable "pod network". `--local` (so `--endpoint-access auto`) must reach each Service:
 * directly where it can, through the API server's port-forward where it cannot, deciding per network and saying why.
 */
import { expect, test } from "bun:test";
import { startApiServer } from "../../support/apiserver.ts";
import { forwardedPod, podSlice } from "../../support/forwarded-pods.ts";
import { startTestGateway } from "../../support/gateway.ts";
import { startHttpLoad, startHttpPod } from "../../support/pod-backends.ts";
import { freePort } from "../../support/ports.ts";
import { waitFor } from "../../support/wait.ts";

const NS = "dev";

test("auto: direct where the pod network answers, port-forward where it has no route or no answer; decisions logged and shown", async () => {
  await using api = await startApiServer({ rbac: "local" });
  const services = [
    { name: "near", ip: "127.0.0.1" },
    { name: "noroute", ip: "10.244.1.10" },
    { name: "silent", ip: "10.245.1.10" },
  ];
  const pods = services.map((s) => startHttpPod({ name: `${s.name}-0`, hostname: "127.0.0.1" }));
  const nodePorts: number[] = [];
  for (const [i, s] of services.entries()) {
    const p = pods[i]!;
    // The "near" pod's address is its real one; the others listen on loopback only for the API server's relay.
    const port = s.ip === "127.0.0.1" ? p.port : 8080;
    nodePorts.push(await freePort());
    forwardedPod(api, NS, p.name, s.ip, port, { hostname: "127.0.0.1", port: p.port });
    api.create({ apiVersion: "v1", kind: "Service", metadata: { name: s.name, namespace: NS }, spec: { type: "NodePort", ports: [{ name: "http", port: 80, targetPort: port, nodePort: nodePorts[i], appProtocol: "http" }] } });
    api.create(podSlice(NS, `${s.name}-a`, s.name, { name: "http", port }, [{ ip: s.ip, pod: p.name }]));
  }
  await using gw = await startTestGateway(api, ["--local", "--hostname-override", ""]);
  await waitFor(() => gw.snapshot()?.entrypoints.filter((e) => e.cluster.serving.length === 1).length === 3, { what: "three Services" });
  for (const [i, s] of services.entries()) {
    await using load = startHttpLoad({ port: nodePorts[i]!, keepAliveWorkers: 2, newConnectionWorkers: 2, maxRequests: 40, postShare: 0.5 });
    const stats = await load.finished;
    expect({ service: s.name, ok: stats.ok, failed: stats.failed, failures: stats.failures }).toEqual({ service: s.name, ok: stats.requests, failed: 0, failures: [] });
    expect(stats.byPod).toEqual({ [`${s.name}-0`]: stats.requests });
  }
  const status = (await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/status`)).json()) as { endpointAccess: { mode: string; decisions: { network: string; via: string; reason: string }[] } };
  expect(status.endpointAccess.mode).toBe("auto");
  expect(status.endpointAccess.decisions.map((d) => [d.network, d.via, d.reason]).sort()).toEqual([
    ["10.244.1.0/24", "port-forward", "connect to 10.244.1.10:8080 failed: ENETUNREACH"],
    ["10.245.1.0/24", "port-forward", "connect to 10.245.1.10:8080 failed: no answer within 1000 ms"],
    ["127.0.0.0/24", "direct", expect.stringMatching(/^connected to 127\.0\.0\.1:\d+ in \d+ ms$/)],
  ]);
  // Only the unroutable pods were reached through the API server.
  expect(new Set(api.portForwards.map((f) => f.pod))).toEqual(new Set(["noroute-0", "silent-0"]));
  for (const p of pods) await p[Symbol.asyncDispose]();
}, 60_000);
