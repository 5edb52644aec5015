/**
 * `Downstream.drainNow` (issue 14): a listener drain closes a kept-alive connection that is idle between requests at
 * once, but keeps one whose client has not sent a byte yet (accepted a moment before the drain, as at a hand-over):
 * its first request is answered with `Connection: close`. Real sockets through the HTTP harness.
 */
import { describe, expect, test } from "bun:test";
import { FRESH_DRAIN_MS } from "../../../src/proxy/http/downstream.ts";
import { header, RawClient, RawUpstream, startProxy, waitFor } from "../../support/http-harness.ts";

describe("drain and connections that have not spoken", () => {
  test("one drain: the idle kept-alive connection is closed at once, the fresh one is kept and its request answered with Connection: close", async () => {
    await using up = new RawUpstream("up");
    await using px = startProxy([up.endpoint]);
    await using idle = await RawClient.connect(px.port);
    idle.send("GET /first HTTP/1.1\r\nHost: h\r\n\r\n");
    const first = await idle.readResponse();
    expect({ body: first.body, conn: header(first, "connection") }).toEqual({ body: "up GET /first", conn: undefined });
    await using fresh = await RawClient.connect(px.port);
    await waitFor(() => px.proxy.active() === 2, "the fresh connection to be accepted");

    const started = performance.now();
    const drained = px.proxy.drain();
    await idle.whenClosed;
    expect(performance.now() - started).toBeLessThan(FRESH_DRAIN_MS); // not by the fresh connection's grace
    await waitFor(() => px.proxy.active() === 1, "the idle connection to be gone");
    expect({ freshClosed: fresh.closed, freshGot: fresh.unread }).toEqual({ freshClosed: false, freshGot: "" });

    fresh.send("GET /late HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await fresh.readResponse();
    expect({ status: r.status, body: r.body, conn: header(r, "connection") }).toEqual({ status: 200, body: "up GET /late", conn: "close" });
    await fresh.whenClosed;
    await drained;
    expect(px.proxy.active()).toBe(0);
    expect(up.requests.map((q) => q.target)).toEqual(["/first", "/late"]);
  });

  test("a connection accepted after the drain began is answered once with Connection: close", async () => {
    await using up = new RawUpstream("up");
    await using px = startProxy([up.endpoint]);
    await using busy = await RawClient.connect(px.port); // keeps the drain open
    busy.send("GET /a HTTP/1.1\r\nHost: h\r\n");
    await waitFor(() => px.proxy.active() === 1, "the first connection");
    const drained = px.proxy.drain();
    await using late = await RawClient.connect(px.port);
    late.send("GET /late HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await late.readResponse();
    expect({ body: r.body, conn: header(r, "connection") }).toEqual({ body: "up GET /late", conn: "close" });
    await late.whenClosed;
    busy.send("\r\n");
    expect(header(await busy.readResponse(), "connection")).toBe("close");
    await drained;
  });

  test("a connection with part of its first head in is left to finish it, then closed", async () => {
    await using up = new RawUpstream("up");
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /partial HTTP/1.1\r\n");
    await waitFor(() => px.proxy.active() === 1, "the connection");
    const drained = px.proxy.drain();
    c.send("Host: h\r\n\r\n");
    const r = await c.readResponse();
    expect({ body: r.body, conn: header(r, "connection") }).toEqual({ body: "up GET /partial", conn: "close" });
    await c.whenClosed;
    await drained;
  });

  test("a silent fresh connection is closed without a response by a request head timeout shorter than the grace", async () => {
    await using up = new RawUpstream("up");
    await using px = startProxy([up.endpoint], { requestHeaderTimeoutMs: 200 });
    await using silent = await RawClient.connect(px.port);
    await waitFor(() => px.proxy.active() === 1, "the connection to be accepted");
    const started = performance.now();
    await px.proxy.drain();
    await silent.whenClosed;
    expect(performance.now() - started).toBeLessThan(FRESH_DRAIN_MS);
    expect(silent.unread).toBe(""); // no 408 for a client that never started a request
    expect(up.accepts).toBe(0);
  });
});
