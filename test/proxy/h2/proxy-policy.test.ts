/**
 * Service policies on gRPC calls through the HTTP/2 proxy: a consistent hash on a request header reads gRPC
 * metadata (every call with the same `x-user` goes to the same endpoint, different users spread), and the circuit
 * breaker (`maxConcurrentRequests`) answers a call over the limit with a trailers-only UNAVAILABLE naming
 * `circuit_open`, while the calls under it are served.
 */
import { describe, expect, test } from "bun:test";
import { RingHash } from "../../../src/balancer/ring-hash.ts";
import type { Endpoint } from "../../../src/model/types.ts";
import { H2Proxy } from "../../../src/proxy/h2/index.ts";
import { defaultProxyOptions } from "../../../src/proxy/types.ts";
import type { RouteRef } from "../../../src/routes/types.ts";
import { rt } from "../../../src/runtime/index.ts";
import { endpoint } from "../../support/entrypoints.ts";
import { runGrpcClient, startGrpcServer } from "../../support/grpc/peers.ts";
import { route } from "../../support/http-harness.ts";
import { waitFor } from "../../support/wait.ts";
import { startH2Proxy } from "./proxy-harness.ts";

/** An h2c listener whose route hashes on request header `x-user` (ring hash). */
function hashingProxy(endpoints: readonly Endpoint[]) {
  const r = route(endpoints, "default/grpc:grpc", { policy: { hashOn: { source: "header", name: "x-user" } }, balancer: (e) => new RingHash(e) });
  const ref: RouteRef = { current: { ...r, entrypoint: { ...r.entrypoint, protocol: "h2c" } } };
  const proxy = new H2Proxy(ref, defaultProxyOptions);
  const listener = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
  return {
    port: listener.port,
    async [Symbol.asyncDispose]() {
      listener.stop(true);
      proxy.closeAll();
      await waitFor(() => proxy.active() === 0, { what: "proxy connections to close" });
    },
  };
}

describe("policies on gRPC calls", () => {
  test("a hash on a header reads gRPC metadata: one user, one endpoint; many users, every endpoint", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using b = await startGrpcServer({ name: "b" });
    await using c = await startGrpcServer({ name: "c" });
    await using px = hashingProxy([endpoint(a.port), endpoint(b.port), endpoint(c.port)]);
    const servers = new Set<string>();
    // Users until every endpoint has had one (the ring depends on the servers' random ports: a fixed 12 users left
    // one endpoint without any about 2% of the time); at most 60 (3 x (2/3)^60 ~ 1e-10 to miss one).
    for (let u = 0; u < 60 && servers.size < 3; u++) {
      const r = await runGrpcClient(px.port, { kind: "unary", count: 6, metadata: { "x-user": `user-${u}` } });
      expect(r.ok).toBe(6);
      // All six calls of one user on one endpoint.
      expect(Object.keys(r.byServer)).toHaveLength(1);
      servers.add(Object.keys(r.byServer)[0]!);
    }
    expect([...servers].sort()).toEqual(["a", "b", "c"]);
  });

  test("the circuit breaker answers a call over maxConcurrentRequests with UNAVAILABLE (circuit_open)", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using px = startH2Proxy([endpoint(a.port)], { maxConcurrentRequests: 2 });
    // Two calls hold the breaker's slots; the third is refused at once; after them, calls pass again.
    const held = [runGrpcClient(px.port, { kind: "deadline", sleepMs: 1_500, deadlineMs: 10_000 }), runGrpcClient(px.port, { kind: "deadline", sleepMs: 1_500, deadlineMs: 10_000 })];
    await waitFor(async () => (await a.stats()).inFlight === 2, { what: "two calls in flight" });
    const refused = await runGrpcClient(px.port, { kind: "fail", code: "OK" });
    expect(refused.status).toMatchObject({ code: "UNAVAILABLE", reason: "circuit_open" });
    for (const h of await Promise.all(held)) expect(h.status.code).toBe("OK");
    const after = await runGrpcClient(px.port, { kind: "unary", count: 3 });
    expect(after.ok).toBe(3);
  });
});
