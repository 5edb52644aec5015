/**
 * Limits and timeouts of the HTTP forwarder through real sockets: slowloris (408), head size (431), body size
 * (413), circuit breaking (503), connections per listener and gateway-wide, max request duration, and the
 * per-Service policy overriding the gateway's options.
 */
import { describe, expect, test } from "bun:test";
import type { TrafficPolicy } from "../../../src/model/types.ts";
import { closeIdleUpstreams, idleUpstreams, requestsInFlight } from "../../../src/proxy/http/index.ts";
import { ConnectionBudget } from "../../../src/proxy/types.ts";
import type { TcpSocket } from "../../../src/runtime/types.ts";
import { bytes, header, RawClient, RawUpstream, startProxy, text, waitFor } from "../../support/http-harness.ts";

const H = "Host: h\r\n";
const GET = `GET / HTTP/1.1\r\n${H}\r\n`;

/** An upstream that holds every request unanswered until `release()` answers them all with 200. */
function holdingUpstream() {
  const held: TcpSocket<unknown>[] = [];
  const up = new RawUpstream("held", (_req, s) => void held.push(s as TcpSocket<unknown>));
  return {
    up,
    held,
    release() {
      for (const s of held.splice(0)) s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    },
  };
}

describe("slow clients", () => {
  test("a head sent byte by byte slower than requestHeaderTimeoutMs gets 408 and the connection closed", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { requestHeaderTimeoutMs: 200 });
    await using c = await RawClient.connect(px.port);
    const head = `GET / HTTP/1.1\r\n${H}X-Pad: ${"p".repeat(64)}\r\n\r\n`;
    let i = 0;
    const t0 = Date.now();
    // One byte every 10 ms: the whole head would take ~1 s, five times the timeout.
    const trickle = setInterval(() => {
      if (!c.closed && i < head.length) c.send(head[i++]!);
    }, 10);
    try {
      const r = await c.readResponse({ timeoutMs: 5000 });
      expect({ status: r.status, reason: header(r, "x-kubegate-reason"), connection: header(r, "connection"), body: r.body }).toEqual({
        status: 408,
        reason: "request_timeout",
        connection: "close",
        body: "Request timeout: the request head did not arrive within 200 ms\n",
      });
      await c.whenClosed;
    } finally {
      clearInterval(trickle);
    }
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(190);
    // The timeout bounds the whole head, not the gap between bytes: it fired while the head was still trickling
    // in (a per-byte timer would never fire at 10 ms a byte, and the head would get through). No upper bound on
    // the wall time: a loaded box slows the trickle too, and this is what tells the two apart.
    expect(i).toBeLessThan(head.length);
    expect(up.accepts).toBe(0);
  });

  test("the Service's requestHeaderTimeoutMs overrides the gateway's", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { requestHeaderTimeoutMs: 30_000 }, "127.0.0.1", { policy: { requestHeaderTimeoutMs: 150 } });
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\n");
    const r = await c.readResponse({ timeoutMs: 3000 });
    expect(r.status).toBe(408);
    expect(r.body).toBe("Request timeout: the request head did not arrive within 150 ms\n");
    await c.whenClosed;
  });

  test("the Service's idleTimeoutMs closes its idle keep-alive client connections", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { idleTimeoutMs: 300_000 }, "127.0.0.1", { policy: { idleTimeoutMs: 150 } });
    await using c = await RawClient.connect(px.port);
    c.send(GET);
    expect((await c.readResponse()).status).toBe(200);
    const t0 = Date.now();
    await c.whenClosed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
  });
});

describe("size limits", () => {
  test("431 with a reason when the head exceeds maxHeaderBytes", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { maxHeaderBytes: 1024 });
    await using c = await RawClient.connect(px.port);
    c.send(`GET / HTTP/1.1\r\n${H}X-Big: ${"a".repeat(1100)}\r\n\r\n`);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 431, reason: "header_too_large" });
    await c.whenClosed;
    expect(up.accepts).toBe(0);
  });

  test("413 before connecting upstream when Content-Length exceeds maxRequestBodyBytes; at the limit it passes", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { maxRequestBodyBytes: 10 });
    {
      await using c = await RawClient.connect(px.port);
      c.send(`POST / HTTP/1.1\r\n${H}Content-Length: 10\r\n\r\n0123456789`);
      expect((await c.readResponse()).status).toBe(200);
    }
    await using c = await RawClient.connect(px.port);
    c.send(`POST / HTTP/1.1\r\n${H}Content-Length: 11\r\n\r\n`);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason"), body: r.body }).toEqual({
      status: 413,
      reason: "body_too_large",
      body: "Content too large: the request body exceeds 10 bytes\n",
    });
    await c.whenClosed;
    expect(up.requests.length).toBe(1);
  });

  test("413 for a chunked body that exceeds the limit in the first write: nothing reaches the upstream", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { maxRequestBodyBytes: 10 });
    await using c = await RawClient.connect(px.port);
    c.send(`POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n`);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 413, reason: "body_too_large" });
    await c.whenClosed;
    expect(up.received.length).toBe(0);
  });

  test("413 for a streamed chunked body once it exceeds the limit: the upstream connection is dropped before the excess", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { maxRequestBodyBytes: 10 });
    await using c = await RawClient.connect(px.port);
    c.send(`POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n`);
    await waitFor(() => text(up.received).endsWith("6\r\nabcdef\r\n"), "the first chunk upstream");
    c.send("5\r\nghijk\r\n0\r\n\r\n");
    const r = await c.readResponse();
    expect(r.status).toBe(413);
    await c.whenClosed;
    await waitFor(() => up.sockets.size === 0, "the upstream connection to close");
    expect(text(up.received)).not.toContain("ghijk");
    expect(up.requests).toEqual([]);
  });

  test("a chunked body exceeding the limit after the response started cuts the connection", async () => {
    await using up = new RawUpstream("up", () => {}, (_head, s) => {
      s.write(bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nearly\r\n"));
    });
    await using px = startProxy([up.endpoint], { maxRequestBodyBytes: 10 });
    await using c = await RawClient.connect(px.port);
    c.send(`POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n`);
    await waitFor(() => c.unread.includes("early"), "the early response");
    c.send("5\r\nghijk\r\n");
    await c.whenClosed;
    expect(c.unread).toStartWith("HTTP/1.1 200 OK\r\n");
    expect(c.unread).not.toContain("413");
    expect(text(up.received)).not.toContain("ghijk");
  });

  test("the Service's maxRequestBodyBytes overrides the gateway's", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { maxRequestBodyBytes: 0 }, "127.0.0.1", { policy: { maxRequestBodyBytes: 4 } });
    await using c = await RawClient.connect(px.port);
    c.send(`POST / HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`);
    expect((await c.readResponse()).status).toBe(413);
  });
});

describe("circuit breaking", () => {
  test("requests beyond maxConcurrentRequests get 503 circuit_open, keep the connection, and pass once others finish", async () => {
    const h = holdingUpstream();
    await using up = h.up;
    await using px = startProxy([up.endpoint], { maxConcurrentRequests: 2 });
    await using a = await RawClient.connect(px.port);
    await using b = await RawClient.connect(px.port);
    await using c = await RawClient.connect(px.port);
    a.send(GET);
    b.send(GET);
    await waitFor(() => h.held.length === 2, "two requests held upstream");
    expect(requestsInFlight("default/web:http")).toBe(2);
    c.send(GET);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason"), connection: header(r, "connection") }).toEqual({
      status: 503,
      reason: "circuit_open",
      connection: undefined,
    });
    h.release();
    expect((await a.readResponse()).status).toBe(200);
    expect((await b.readResponse()).status).toBe(200);
    expect(requestsInFlight("default/web:http")).toBe(0);
    c.send(GET);
    await waitFor(() => h.held.length === 1, "the third request upstream");
    h.release();
    expect((await c.readResponse()).status).toBe(200);
  });

  test("the count is per cluster and shared by its listeners; the Service's policy sets the limit", async () => {
    const h = holdingUpstream();
    await using up = h.up;
    const policy: TrafficPolicy = { maxConcurrentRequests: 1 };
    await using nodePort = startProxy([up.endpoint], {}, "127.0.0.1", { policy, name: "default/shared:http" });
    await using lb = startProxy([up.endpoint], {}, "127.0.0.1", { policy, name: "default/shared:http" });
    await using other = startProxy([up.endpoint], {}, "127.0.0.1", { policy, name: "default/other:http" });
    await using a = await RawClient.connect(nodePort.port);
    a.send(GET);
    await waitFor(() => h.held.length === 1, "the first request held");
    await using b = await RawClient.connect(lb.port);
    b.send(GET);
    const r = await b.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 503, reason: "circuit_open" });
    await using c = await RawClient.connect(other.port);
    c.send(GET);
    await waitFor(() => h.held.length === 2, "another cluster's request held");
    h.release();
    expect((await a.readResponse()).status).toBe(200);
    expect((await c.readResponse()).status).toBe(200);
  });

  test("a slot is given back when the client goes away mid-request, and when the gateway answers an error", async () => {
    const h = holdingUpstream();
    await using up = h.up;
    await using px = startProxy([up.endpoint], { maxConcurrentRequests: 1, responseHeaderTimeoutMs: 100 });
    {
      await using a = await RawClient.connect(px.port);
      a.send(GET);
      await waitFor(() => h.held.length === 1, "the request held");
      expect(requestsInFlight("default/web:http")).toBe(1);
    }
    await waitFor(() => requestsInFlight("default/web:http") === 0, "the slot of the abandoned request");
    await using b = await RawClient.connect(px.port);
    b.send(GET);
    expect((await b.readResponse()).status).toBe(504);
    expect(requestsInFlight("default/web:http")).toBe(0);
  });
});

describe("connection limits", () => {
  test("connections beyond maxConnectionsPerListener are closed at accept and counted", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { maxConnectionsPerListener: 2 });
    await using a = await RawClient.connect(px.port);
    await using b = await RawClient.connect(px.port);
    await waitFor(() => px.proxy.active() === 2, "two accepted connections");
    await using c = await RawClient.connect(px.port);
    await c.whenClosed;
    expect({ refused: px.refused, active: px.proxy.active(), unread: c.unread }).toEqual({ refused: 1, active: 2, unread: "" });
    a.send(GET);
    expect((await a.readResponse()).status).toBe(200);
    b.end();
    await waitFor(() => px.proxy.active() === 1, "the closed connection to be gone");
    await using d = await RawClient.connect(px.port);
    d.send(GET);
    expect((await d.readResponse()).status).toBe(200);
    expect(px.refused).toBe(1);
  });

  test("the gateway-wide connection budget is shared by listeners and given back at close", async () => {
    await using up = new RawUpstream();
    const budget = new ConnectionBudget(2);
    await using p1 = startProxy([up.endpoint], { connections: budget });
    await using p2 = startProxy([up.endpoint], { connections: budget });
    await using a = await RawClient.connect(p1.port);
    await using b = await RawClient.connect(p2.port);
    await waitFor(() => budget.active === 2, "both connections counted");
    await using c = await RawClient.connect(p2.port);
    await c.whenClosed;
    expect({ refused: budget.refused, p1: p1.refused, p2: p2.refused, active: budget.active }).toEqual({ refused: 1, p1: 0, p2: 1, active: 2 });
    a.end();
    await waitFor(() => budget.active === 1, "the budget to get a slot back");
    await using d = await RawClient.connect(p1.port);
    d.send(GET);
    expect((await d.readResponse()).status).toBe(200);
    b.send(GET);
    expect((await b.readResponse()).status).toBe(200);
  });
});

describe("max request duration", () => {
  test("504 max_duration when the response head has not started in time", async () => {
    const h = holdingUpstream();
    await using up = h.up;
    await using px = startProxy([up.endpoint], { maxRequestDurationMs: 150, responseHeaderTimeoutMs: 60_000 });
    await using c = await RawClient.connect(px.port);
    const t0 = Date.now();
    c.send(GET);
    const r = await c.readResponse({ timeoutMs: 3000 });
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 504, reason: "max_duration" });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    await c.whenClosed;
  });

  test("a response still streaming at the limit is cut", async () => {
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")));
    await using px = startProxy([up.endpoint], {}, "127.0.0.1", { policy: { maxRequestDurationMs: 150 } });
    await using c = await RawClient.connect(px.port);
    c.send(GET);
    await c.whenClosed;
    expect(c.unread).toBe("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  });

  test("the limit is per request: a keep-alive connection outlives it", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { maxRequestDurationMs: 100 });
    await using c = await RawClient.connect(px.port);
    for (let i = 0; i < 3; i++) {
      c.send(GET);
      expect((await c.readResponse()).status).toBe(200);
      await Bun.sleep(60); // idle time between requests, which the limit must not count
    }
    expect(c.closed).toBe(false);
  });
});

describe("per-Service policy overrides", () => {
  test("responseHeaderTimeoutMs from the policy: 504 upstream_timeout", async () => {
    await using up = new RawUpstream("up", () => {});
    await using px = startProxy([up.endpoint], { responseHeaderTimeoutMs: 60_000 }, "127.0.0.1", { policy: { responseHeaderTimeoutMs: 150 } });
    await using c = await RawClient.connect(px.port);
    const t0 = Date.now();
    c.send(GET);
    const r = await c.readResponse({ timeoutMs: 3000 });
    expect({ status: r.status, reason: header(r, "x-kubegate-reason"), body: r.body }).toEqual({
      status: 504,
      reason: "upstream_timeout",
      body: 'Gateway timeout: service "default/web:http" did not respond within 150 ms\n',
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });

  test("idleTimeoutMs from the policy also closes the Service's idle pooled upstream connections", async () => {
    closeIdleUpstreams();
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], {}, "127.0.0.1", { policy: { idleTimeoutMs: 150 } });
    await using c = await RawClient.connect(px.port);
    c.send(GET);
    expect((await c.readResponse()).status).toBe(200);
    await waitFor(() => idleUpstreams() === 1, "the upstream connection pooled");
    await waitFor(() => up.sockets.size === 0, "the pooled connection closed after the Service's idle timeout", 3000);
    expect(idleUpstreams()).toBe(0);
  });
});
