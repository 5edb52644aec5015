/**
 * The gRPC peers themselves, client straight to server (no gateway): every scenario kind does what the gateway's
 * tests will rely on, with assertions that tell servers, codes and sizes apart. Also h2load and curl making valid
 * gRPC calls with the framed body file.
 */
import { describe, expect, test } from "bun:test";
import { h2loadFailed } from "../../bench/lib/h2load.ts";
import { REFUSED_PORT } from "../ports.ts";
import { waitFor } from "../wait.ts";
import { GRPC_REQUEST_HEADERS, grpcBodyFile, grpcFrame, grpcH2loadArgs, runGrpcClient, startGrpcServer } from "./peers.ts";

const MiB = 1024 * 1024;

/** Run a command to completion: its exit code and stdout. */
async function run(cmd: string[]): Promise<{ code: number; stdout: string }> {
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "inherit" });
  const stdout = await new Response(proc.stdout).text();
  return { code: await proc.exited, stdout };
}

describe("gRPC peers, client to server directly", () => {
  test("unary: every reply on one channel names its server; one connection per client run", async () => {
    await using a = await startGrpcServer({ name: "a" });
    await using b = await startGrpcServer({ name: "b" });
    const toA = await runGrpcClient(a.port, { kind: "unary", count: 30, payload: "hello" });
    expect(toA).toMatchObject({ kind: "unary", ok: 30, byServer: { a: 30 }, errors: [] });
    expect(await runGrpcClient(b.port, { kind: "unary", count: 3, timeline: true })).toMatchObject({
      byServer: { b: 3 },
      timeline: [{ server: "b" }, { server: "b" }, { server: "b" }],
    });
    expect(await a.stats()).toMatchObject({ name: "a", calls: 30, byMethod: { Unary: 30 }, ok: 30, connections: 1 });
    expect(await b.stats()).toMatchObject({ calls: 3, connections: 1 });
  });

  test("unary to a closed port: each call's status is recorded", async () => {
    const r = await runGrpcClient(REFUSED_PORT, { kind: "unary", count: 2 });
    expect(r.ok).toBe(0);
    expect(r.errors.map((e) => e.code)).toEqual(["UNAVAILABLE", "UNAVAILABLE"]);
  });

  test("server, client and bidi streaming", async () => {
    await using a = await startGrpcServer({ name: "a" });
    expect(await runGrpcClient(a.port, { kind: "server_stream", count: 5, size: 1000 })).toEqual({
      kind: "server_stream",
      messages: 5,
      bytes: 5 * 1000 + "a:0:".length * 5,
      servers: ["a"],
      intact: true,
      status: { code: "OK", details: "" },
    });
    expect(await runGrpcClient(a.port, { kind: "client_stream", count: 10, size: 100 })).toEqual({
      kind: "client_stream",
      sent: 10,
      sentBytes: 1000,
      reply: { name: "a", count: 10, bytes: 1000 },
      status: { code: "OK", details: "" },
    });
    expect(await runGrpcClient(a.port, { kind: "bidi", count: 20 })).toEqual({
      kind: "bidi",
      sent: 20,
      received: 20,
      servers: ["a"],
      inOrder: true,
      status: { code: "OK", details: "" },
    });
    expect((await a.stats()).byMethod).toEqual({ ServerStream: 1, ClientStream: 1, BidiStream: 1 });
  });

  test("deadline: exceeded when shorter than the sleep (and the server sees it); else the server sees the time left", async () => {
    await using a = await startGrpcServer({ name: "a" });
    const cut = await runGrpcClient(a.port, { kind: "deadline", sleepMs: 3_000, deadlineMs: 200 });
    expect(cut.status.code).toBe("DEADLINE_EXCEEDED");
    expect(cut.elapsedMs).toBeGreaterThanOrEqual(190);
    expect(cut.elapsedMs).toBeLessThan(2_000);
    await waitFor(async () => (await a.stats()).deadlines === 1, { what: "the server to see the deadline" });
    const whole = await runGrpcClient(a.port, { kind: "deadline", sleepMs: 20, deadlineMs: 5_000 });
    expect(whole.status.code).toBe("OK");
    expect(whole.reply?.deadlineMs).toBeGreaterThan(4_000);
    expect(whole.reply?.deadlineMs).toBeLessThanOrEqual(5_000);
    expect(await a.stats()).toMatchObject({ cancelled: 1, deadlines: 1, ok: 1 });
  });

  test("cancel: the client's cancel reaches the server as a cancellation", async () => {
    await using a = await startGrpcServer({ name: "a" });
    const r = await runGrpcClient(a.port, { kind: "cancel", sleepMs: 5_000, afterMs: 200 });
    expect(r).toMatchObject({ cancelled: true, status: { code: "CANCELLED" } });
    expect(r.elapsedMs).toBeLessThan(2_000);
    const stats = await waitFor(async () => {
      const s = await a.stats();
      return s.cancelled === 1 && s;
    }, { what: "the server to see the cancel" });
    expect(stats).toMatchObject({ cancelledByMethod: { Sleep: 1 }, deadlines: 0, inFlight: 0 });
  });

  test("fail: the requested status, message and trailers come back, x-kubegate-reason as the reason", async () => {
    await using a = await startGrpcServer({ name: "a" });
    const trailers = { "x-kubegate-reason": "no-endpoints" };
    expect(await runGrpcClient(a.port, { kind: "fail", code: "UNAVAILABLE", message: "down", trailers })).toEqual({
      kind: "fail",
      status: { code: "UNAVAILABLE", details: "down", reason: "no-endpoints" },
      initial: {},
      trailing: { "x-kubegate-reason": "no-endpoints", "x-server-name": "a" },
    });
    const other = await runGrpcClient(a.port, { kind: "fail", code: "RESOURCE_EXHAUSTED", message: "full" });
    expect(other.status).toEqual({ code: "RESOURCE_EXHAUSTED", details: "full" });
    expect(await a.stats()).toMatchObject({ failed: 2, ok: 0 });
  });

  test("big: 8 MiB each way, intact", async () => {
    await using a = await startGrpcServer({ name: "a" });
    expect(await runGrpcClient(a.port, { kind: "big", replyMiB: 8, requestMiB: 8 })).toMatchObject({
      status: { code: "OK" },
      server: "a",
      replyBytes: 8 * MiB,
      replyIntact: true,
      requestBytes: 8 * MiB,
      requestReceived: 8 * MiB,
      requestIntact: true,
    });
  });

  test("concurrent: 200 calls in flight at once on one channel; --max-concurrent-streams caps them", async () => {
    await using wide = await startGrpcServer({ name: "wide" });
    const all = await runGrpcClient(wide.port, { kind: "concurrent", calls: 200, sleepMs: 300 });
    expect(all).toMatchObject({ ok: 200, byServer: { wide: 200 }, errors: [] });
    expect(await wide.stats()).toMatchObject({ maxInFlight: 200, connections: 1 }); // all at once, one connection

    await using narrow = await startGrpcServer({ name: "narrow", maxConcurrentStreams: 10 });
    const capped = await runGrpcClient(narrow.port, { kind: "concurrent", calls: 40, sleepMs: 100 });
    expect(capped).toMatchObject({ ok: 40, errors: [] });
    expect(capped.elapsedMs).toBeGreaterThanOrEqual(4 * 100);
    expect((await narrow.stats()).maxInFlight).toBe(10);
  });

  test("metadata: the server sees the request metadata and echoes it in the trailers", async () => {
    await using a = await startGrpcServer({ name: "a" });
    const bin = Buffer.from([0, 1, 2, 255]).toString("base64");
    const r = await runGrpcClient(a.port, { kind: "metadata", metadata: { "x-tenant": "t1", "x-trace-bin": bin } });
    expect(r.server).toBe("a");
    expect(r.seen).toMatchObject({ "x-tenant": "t1", "x-trace-bin": bin });
    expect(r.seen["user-agent"]).toContain("grpc-python");
    expect(r.trailing).toEqual({ "x-tenant": "t1", "x-trace-bin": bin });
  });

  test("dispose stops the server by PID; with graceMs a call in flight finishes first", async () => {
    const a = await startGrpcServer({ name: "a", graceMs: 3_000 });
    const call = runGrpcClient(a.port, { kind: "deadline", sleepMs: 300, deadlineMs: 5_000 });
    await waitFor(async () => (await a.stats()).inFlight === 1, { what: "the call to be in flight" });
    await a[Symbol.asyncDispose]();
    expect((await call).status.code).toBe("OK");
    expect(await a.exited).toBe(0);
    expect(() => process.kill(a.pid, 0)).toThrow();
    await expect(a.stats()).rejects.toThrow("has exited");
  });
});

describe("h2load and curl against the gRPC server", () => {
  test("the framed body makes valid unary calls", async () => {
    expect([...grpcFrame("ping")]).toEqual([0, 0, 0, 0, 4, 112, 105, 110, 103]);
    await using a = await startGrpcServer({ name: "a" });
    await using body = await grpcBodyFile("ping");
    const load = await run(["h2load", "-n200", "-c2", "-m8", ...grpcH2loadArgs(a.port, body.path)]);
    expect(load.code).toBe(0);
    expect(load.stdout).toContain("200 succeeded");
    expect(h2loadFailed(load.stdout)).toBe(0);
    // Each reply: the 5-byte prefix and "a:ping".
    expect(load.stdout).toContain(`(${200 * (5 + "a:ping".length)}) data`);
    expect(await a.stats()).toMatchObject({ calls: 200, ok: 200, failed: 0 });

    const url = `http://127.0.0.1:${a.port}/kubegate.test.Echo/Unary`;
    const headers = GRPC_REQUEST_HEADERS.flatMap((h) => ["-H", h]);
    const curl = await run(["curl", "-sS", "--http2-prior-knowledge", ...headers, "--data-binary", `@${body.path}`, "-D", "-", "-o", "/dev/null", url]);
    expect(curl.code).toBe(0);
    expect(curl.stdout).toMatch(/^HTTP\/2 200/);
    expect(curl.stdout).toContain("grpc-status: 0"); // a trailer
    expect((await a.stats()).ok).toBe(201);
  });
});
