/**
 * Issue 15 end to end: a Service port with `appProtocol: grpc` on the whole gateway (test API server, real gRPC
 * servers and client from Debian's python3-grpcio). The calls of one client channel through the NodePort are
 * balanced each over both endpoints (kube-proxy would send all 40 to one), the per-Service metrics count them by
 * status class, and an endpoint removed from the slice stops getting calls on the open channel.
 */
import { describe, expect, test } from "bun:test";
import { startApiServer } from "../support/apiserver.ts";
import { startTestGateway } from "../support/gateway.ts";
import { runGrpcClient, startGrpcServer } from "../support/grpc/peers.ts";
import { parseScrape, valueOf } from "../support/metrics-parse.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

const NS = "grpc";

function objects(nodePort: number, ports: readonly number[]) {
  return {
    service: {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "echo", namespace: NS, labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
      spec: { type: "NodePort", selector: { app: "echo" }, ports: [{ name: "grpc", port: 50051, targetPort: 50051, nodePort, appProtocol: "grpc" }] },
    },
    // One slice per endpoint (their ports differ: each server listens on a port of its own on 127.0.0.1).
    slices: ports.map((port, i) => ({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `echo-${i}`, namespace: NS, labels: { "kubernetes.io/service-name": "echo" } },
      addressType: "IPv4",
      ports: [{ name: "grpc", port, protocol: "TCP" }],
      endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a", targetRef: { kind: "Pod", namespace: NS, name: `echo-${i}` } }],
    })),
  };
}

describe("gRPC Service through the gateway (issue 15)", () => {
  test("40 calls on one channel reach both endpoints; metrics count them; a removed endpoint gets no more calls", async () => {
    await using api = await startApiServer();
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    await using a = await startGrpcServer({ name: "a" });
    await using b = await startGrpcServer({ name: "b" });
    const nodePort = await freePort();
    const { service, slices } = objects(nodePort, [a.port, b.port]);
    api.create(service);
    for (const s of slices) api.create(s);
    await using gw = await startTestGateway(api);
    await waitFor(() => gw.snapshot()?.entrypoints.find((e) => e.name === `${NS}/echo:grpc`)?.cluster.serving.length === 2, { what: "both endpoints" });
    expect(gw.snapshot()!.entrypoints.find((e) => e.name === `${NS}/echo:grpc`)!.protocol).toBe("h2c");

    const r = await runGrpcClient(nodePort, { kind: "unary", count: 40 });
    expect({ ok: r.ok, errors: r.errors }).toEqual({ ok: 40, errors: [] });
    expect(r.byServer.a).toBeGreaterThanOrEqual(10);
    expect(r.byServer.b).toBeGreaterThanOrEqual(10);

    // Worker processes report their counts every 250 ms.
    const requests = async () =>
      valueOf(parseScrape(await (await fetch(`http://127.0.0.1:${gw.adminPort}/metrics`)).text()), "kubegate_requests_total", { namespace: NS, service: "echo", port: "grpc", protocol: "h2c", code_class: "2xx" });
    await waitFor(async () => (await requests()) === 40, { what: "40 calls counted as 2xx" });

    // Endpoint b leaves the Service: the next calls on a new channel and on an open one go to a only.
    api.remove("endpointslices", NS, "echo-1");
    await waitFor(() => gw.snapshot()?.entrypoints.find((e) => e.name === `${NS}/echo:grpc`)?.cluster.serving.length === 1, { what: "b to leave" });
    const after = await runGrpcClient(nodePort, { kind: "unary", count: 20 });
    expect({ ok: after.ok, byServer: after.byServer }).toEqual({ ok: 20, byServer: { a: 20 } });
  });
});
