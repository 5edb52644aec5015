/**
 * Retries and balancer feedback of the HTTP forwarder through real sockets: refused connects go elsewhere,
 * the keep-alive race is retried for idempotent requests only, a request whose body was streamed is never
 * resent, and every attempt is reported to the balancer as exactly one begin and one end with its outcome.
 * Also: the consistent-hash key a route's `hashOn` policy extracts.
 */
import { describe, expect, test } from "bun:test";
import type { Endpoint, TrafficPolicy } from "../../../src/model/types.ts";
import { closeIdleUpstreams } from "../../../src/proxy/http/index.ts";
import type { TcpSocket } from "../../../src/runtime/types.ts";
import {
  bytes,
  header,
  RawClient,
  RawUpstream,
  RecordingBalancer,
  refusedEndpoint,
  startProxy,
  text,
  waitFor,
  type UpstreamHandler,
} from "../../support/http-harness.ts";
import { endpointId } from "../../support/entrypoints.ts";

const H = "Host: h\r\n";

/** Start a proxy whose route balances with a {@link RecordingBalancer}; returns both. */
function recordingProxy(endpoints: readonly Endpoint[], options: Parameters<typeof startProxy>[1] = {}, policy?: TrafficPolicy) {
  let balancer: RecordingBalancer | undefined;
  const px = startProxy(endpoints, options, "127.0.0.1", {
    policy,
    balancer: (eps) => (balancer = new RecordingBalancer(eps)),
  });
  return { px, balancer: balancer! };
}

/** Answers `200 <target>` except on the n-th request of a connection (1-based), where it `end`s or resets. */
function dropsNth(n: number, how: "fin" | "reset"): UpstreamHandler {
  return (req, s) => {
    if (s.data.served === n) return void (how === "fin" ? s.end() : s.terminate());
    s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${req.target.length}\r\n\r\n${req.target}`));
  };
}

describe("connect failures", () => {
  test("connect refused on one of two endpoints: every request succeeds, and the balancer hears of each failure", async () => {
    const dead = refusedEndpoint();
    await using up = new RawUpstream("live");
    const { px, balancer } = recordingProxy([dead, up.endpoint]);
    await using _px = px;
    // New connections and keep-alive ones.
    for (let i = 0; i < 6; i++) {
      const r = await fetch(`${px.url}/n${i}`, { headers: { connection: "close" } });
      expect({ status: r.status, body: await r.text() }).toEqual({ status: 200, body: `live GET /n${i}` });
    }
    await using c = await RawClient.connect(px.port);
    for (let i = 0; i < 6; i++) {
      c.send(`GET /k${i} HTTP/1.1\r\n${H}\r\n`);
      expect((await c.readResponse()).body).toBe(`live GET /k${i}`);
    }
    await waitFor(() => balancer.open === 0, "every attempt ended");
    const failures = balancer.events.filter((e) => e === `end ${endpointId(dead)} connect-failure`).length;
    // Round robin: the retry's pick takes the live endpoint's turn, so every request tries the dead one first.
    expect(failures).toBe(12);
    expect(balancer.events.filter((e) => e === `end ${up.port} success`).length).toBe(12);
    expect(balancer.events.filter((e) => e.startsWith("unmatched"))).toEqual([]);
  });

  test("attempts are bounded by connectAttempts, on distinct endpoints: 502 connect_failed", async () => {
    // Four distinct refusing endpoints (127.0.0.1:1 to 127.0.0.4:1), told apart by address.
    const dead = [0, 1, 2, 3].map((n) => refusedEndpoint(n));
    const ids = dead.map(endpointId);
    const { px, balancer } = recordingProxy(dead, { connectAttempts: 3 });
    await using _px = px;
    await using c = await RawClient.connect(px.port);
    c.send(`GET / HTTP/1.1\r\n${H}\r\n`);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 502, reason: "connect_failed" });
    expect(new Set(ids).size).toBe(4);
    expect(balancer.events).toEqual(ids.slice(0, 3).flatMap((id) => [`begin ${id}`, `end ${id} connect-failure`]));
    expect(balancer.picks.map((p) => p.exclude)).toEqual([[], ids.slice(0, 1), ids.slice(0, 2)]);
  });
});

describe("the keep-alive race", () => {
  test.each(["fin", "reset"] as const)(
    "an idempotent GET on a pooled connection the upstream closed (%s) is resent once, on a fresh connection to another endpoint",
    async (how) => {
      closeIdleUpstreams();
      await using a = new RawUpstream("a", dropsNth(2, how));
      await using b = new RawUpstream("b");
      const { px, balancer } = recordingProxy([a.endpoint, b.endpoint]);
      await using _px = px;
      await using c = await RawClient.connect(px.port);
      for (const path of ["/1", "/2", "/3"]) {
        c.send(`GET ${path} HTTP/1.1\r\n${H}\r\n`);
        expect((await c.readResponse()).status).toBe(200);
      }
      // /1 -> a (pooled), /2 -> b (pooled), /3 -> a's pooled connection, dropped -> b on a fresh connection.
      expect(a.requests.map((r) => r.target)).toEqual(["/1", "/3"]);
      expect(b.requests.map((r) => `${r.target}@${r.conn}`)).toEqual(["/2@0", "/3@1"]);
      await waitFor(() => balancer.open === 0, "every attempt ended");
      expect(balancer.events).toEqual([
        `begin ${a.port}`,
        `end ${a.port} success`,
        `begin ${b.port}`,
        `end ${b.port} success`,
        `begin ${a.port}`,
        `end ${a.port} connect-failure`,
        `begin ${b.port}`,
        `end ${b.port} success`,
      ]);
    },
  );

  test("with a single endpoint the resend goes to the same endpoint on a fresh connection", async () => {
    closeIdleUpstreams();
    await using up = new RawUpstream("up", dropsNth(2, "reset"));
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(`GET /one HTTP/1.1\r\n${H}\r\n`);
    expect((await c.readResponse()).body).toBe("/one");
    c.send(`GET /two HTTP/1.1\r\n${H}\r\n`);
    expect((await c.readResponse()).body).toBe("/two");
    expect(up.requests.map((r) => `${r.target}@${r.conn}`)).toEqual(["/one@0", "/two@0", "/two@1"]);
  });

  test("a POST goes on a new connection, so the race cannot hit it; failing after the send, it is never resent: 502", async () => {
    closeIdleUpstreams();
    await using a = new RawUpstream("a", (req, s) => {
      if (req.method === "POST") return void s.terminate();
      s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok`));
    });
    await using b = new RawUpstream("b");
    const { px, balancer } = recordingProxy([a.endpoint, b.endpoint]);
    await using _px = px;
    await using c = await RawClient.connect(px.port);
    for (const path of ["/1", "/2"]) {
      c.send(`GET ${path} HTTP/1.1\r\n${H}\r\n`);
      expect((await c.readResponse()).status).toBe(200);
    }
    c.send(`POST /pay HTTP/1.1\r\n${H}Content-Length: 2\r\n\r\nok`);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 502, reason: "upstream_reset" });
    await c.whenClosed;
    // /1's connection to a was pooled and idle: the POST still opened a new one.
    expect(a.requests.map((q) => `${q.method} ${q.target}@${q.conn}`)).toEqual(["GET /1@0", "POST /pay@1"]);
    expect(b.requests.map((q) => q.target)).toEqual(["/2"]);
    await waitFor(() => balancer.open === 0, "every attempt ended");
    expect(balancer.events.slice(-2)).toEqual([`begin ${a.port}`, `end ${a.port} server-error`]);
  });

  test("a POST that lands on a connection the upstream had closed (FIN, then a reset for the request) is resent elsewhere", async () => {
    // A backend shutting down closes connections it thinks idle, a new one included; the request that then
    // arrives on the closed socket is reset unread. That proves it was not applied.
    let closedUnread = 0;
    await using a = new RawUpstream("a", () => {}, (_head, s) => {
      closedUnread++;
      s.end();
      setTimeout(() => s.terminate(), 5);
    });
    await using b = new RawUpstream("b");
    const { px, balancer } = recordingProxy([a.endpoint, b.endpoint]);
    await using _px = px;
    await using c = await RawClient.connect(px.port);
    c.send(`POST /pay HTTP/1.1\r\n${H}Content-Length: 2\r\n\r\nok`);
    const r = await c.readResponse();
    expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: "b POST /pay" });
    expect(closedUnread).toBe(1);
    await waitFor(() => balancer.open === 0, "every attempt ended");
    expect(balancer.events).toEqual([`begin ${a.port}`, `end ${a.port} connect-failure`, `begin ${b.port}`, `end ${b.port} success`]);
  });

  test("a POST whose upstream closes (FIN) with no reset is not resent: it may have been applied (502)", async () => {
    await using a = new RawUpstream("a", (_req, s) => s.end());
    await using b = new RawUpstream("b");
    await using px = startProxy([a.endpoint, b.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(`POST /pay HTTP/1.1\r\n${H}Content-Length: 2\r\n\r\nok`);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 502, reason: "upstream_reset" });
    expect({ a: a.requests.length, b: b.requests.length }).toEqual({ a: 1, b: 0 });
  });

  test("a PUT whose whole body came with its head is resent (the gateway holds it); one whose body is streamed is not", async () => {
    closeIdleUpstreams();
    await using up = new RawUpstream("up", dropsNth(2, "reset"));
    await using px = startProxy([up.endpoint]);
    {
      await using c = await RawClient.connect(px.port);
      c.send(`GET /warm HTTP/1.1\r\n${H}\r\n`);
      await c.readResponse();
      c.send(`PUT /held HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\nbody`);
      expect((await c.readResponse()).body).toBe("/held");
      expect(up.requests.filter((q) => q.target === "/held").map((q) => text(q.body))).toEqual(["body", "body"]);
    }
    // A streamed body goes on a new connection (the race cannot hit it); dropped after the send, it is not resent.
    await using s = new RawUpstream("s", (req, sock) => {
      if (req.target === "/streamed") return void sock.terminate();
      sock.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    });
    px.setEndpoints([s.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(`GET /warm HTTP/1.1\r\n${H}\r\n`);
    await c.readResponse();
    c.send(`PUT /streamed HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\n`);
    await waitFor(() => text(s.received).includes("PUT /streamed"), "the head upstream");
    c.send("body");
    expect((await c.readResponse()).status).toBe(502);
    expect(s.requests.map((q) => `${q.target}@${q.conn}`)).toEqual(["/warm@0", "/streamed@1"]);
  });

  test("retryIdempotent: false (the Service's policy) turns the race into a 502", async () => {
    closeIdleUpstreams();
    await using up = new RawUpstream("up", dropsNth(2, "reset"));
    await using px = startProxy([up.endpoint], { retryIdempotent: true }, "127.0.0.1", { policy: { retryIdempotent: false } });
    await using c = await RawClient.connect(px.port);
    c.send(`GET /one HTTP/1.1\r\n${H}\r\n`);
    await c.readResponse();
    c.send(`GET /two HTTP/1.1\r\n${H}\r\n`);
    expect((await c.readResponse()).status).toBe(502);
    expect(up.requests.map((r) => r.target)).toEqual(["/one", "/two"]);
  });
});

describe("failures after the request was sent", () => {
  test("an idempotent request on a fresh connection closed without a response is resent once on another endpoint", async () => {
    await using a = new RawUpstream("a", dropsNth(1, "fin"));
    await using b = new RawUpstream("b");
    const { px, balancer } = recordingProxy([a.endpoint, b.endpoint]);
    await using _px = px;
    const r = await fetch(`${px.url}/x`, { method: "DELETE" });
    expect({ status: r.status, body: await r.text() }).toEqual({ status: 200, body: "b DELETE /x" });
    await waitFor(() => balancer.open === 0, "every attempt ended");
    expect(balancer.events).toEqual([`begin ${a.port}`, `end ${a.port} server-error`, `begin ${b.port}`, `end ${b.port} success`]);
  });

  test("only once: when the resend fails too, the client gets 502", async () => {
    await using a = new RawUpstream("a", dropsNth(1, "reset"));
    await using b = new RawUpstream("b", dropsNth(1, "reset"));
    await using c3 = new RawUpstream("c");
    const { px, balancer } = recordingProxy([a.endpoint, b.endpoint, c3.endpoint]);
    await using _px = px;
    await using c = await RawClient.connect(px.port);
    c.send(`GET /x HTTP/1.1\r\n${H}\r\n`);
    expect((await c.readResponse()).status).toBe(502);
    expect({ a: a.requests.length, b: b.requests.length, c: c3.requests.length }).toEqual({ a: 1, b: 1, c: 0 });
    await waitFor(() => balancer.open === 0, "every attempt ended");
    expect(balancer.events).toEqual([`begin ${a.port}`, `end ${a.port} server-error`, `begin ${b.port}`, `end ${b.port} server-error`]);
  });

  test("a request that got response bytes is not resent", async () => {
    await using a = new RawUpstream("a", (_req, s) => {
      s.write(bytes("HTTP/1.1 200 OK\r\nContent-"));
      setTimeout(() => s.terminate(), 5);
    });
    await using b = new RawUpstream("b");
    await using px = startProxy([a.endpoint, b.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(`GET /x HTTP/1.1\r\n${H}\r\n`);
    expect((await c.readResponse()).status).toBe(502);
    expect(b.requests.length).toBe(0);
  });
});

describe("outcomes reported to the balancer", () => {
  test("5xx is a server error, 4xx a success, a response-head timeout a server error", async () => {
    let status = 503;
    const held: TcpSocket<unknown>[] = [];
    await using up = new RawUpstream("up", (req, s) => {
      if (req.target === "/hang") return void held.push(s as TcpSocket<unknown>);
      s.write(bytes(`HTTP/1.1 ${status} X\r\nContent-Length: 0\r\n\r\n`));
    });
    const { px, balancer } = recordingProxy([up.endpoint], { responseHeaderTimeoutMs: 100 });
    await using _px = px;
    await using c = await RawClient.connect(px.port);
    c.send(`GET / HTTP/1.1\r\n${H}\r\n`);
    expect((await c.readResponse()).status).toBe(503);
    status = 404;
    c.send(`GET / HTTP/1.1\r\n${H}\r\n`);
    expect((await c.readResponse()).status).toBe(404);
    c.send(`GET /hang HTTP/1.1\r\n${H}\r\n`);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 504, reason: "upstream_timeout" });
    await waitFor(() => balancer.open === 0, "every attempt ended");
    const p = up.port;
    expect(balancer.events).toEqual([`begin ${p}`, `end ${p} server-error`, `begin ${p}`, `end ${p} success`, `begin ${p}`, `end ${p} server-error`]);
  });

  test("a client that goes away mid-request ends the attempt as a success", async () => {
    await using up = new RawUpstream("up", () => {});
    const { px, balancer } = recordingProxy([up.endpoint]);
    await using _px = px;
    {
      await using c = await RawClient.connect(px.port);
      c.send(`GET / HTTP/1.1\r\n${H}\r\n`);
      await waitFor(() => up.requests.length === 1, "the request upstream");
    }
    await waitFor(() => balancer.open === 0, "the attempt ended");
    expect(balancer.events).toEqual([`begin ${up.port}`, `end ${up.port} success`]);
  });

  test("an invalid response head is a server error (502 invalid_response)", async () => {
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx")));
    const { px, balancer } = recordingProxy([up.endpoint]);
    await using _px = px;
    await using c = await RawClient.connect(px.port);
    c.send(`GET / HTTP/1.1\r\n${H}\r\n`);
    const r = await c.readResponse();
    expect({ status: r.status, reason: header(r, "x-kubegate-reason") }).toEqual({ status: 502, reason: "invalid_response" });
    await waitFor(() => balancer.open === 0, "the attempt ended");
    expect(balancer.events).toEqual([`begin ${up.port}`, `end ${up.port} server-error`]);
  });

  test("a WebSocket upgrade ends its attempt at the 101", async () => {
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")));
    const { px, balancer } = recordingProxy([up.endpoint], { maxConcurrentRequests: 1 });
    await using _px = px;
    await using c = await RawClient.connect(px.port);
    c.send(`GET /ws HTTP/1.1\r\n${H}Connection: upgrade\r\nUpgrade: websocket\r\n\r\n`);
    await waitFor(() => c.unread.includes("101"), "the 101");
    await waitFor(() => balancer.open === 0, "the attempt ended");
    expect(balancer.events).toEqual([`begin ${up.port}`, `end ${up.port} success`]);
  });
});

describe("consistent-hash keys", () => {
  test.each([
    [{ source: "header", name: "x-user" }, ["X-User: alice", "x-user: bob", "X-Other: carol", "X-User:"], ["alice", "bob", undefined, undefined]],
    [{ source: "cookie", name: "sid" }, ["Cookie: a=1; sid=s1", "Cookie: sid=\"s2\"", "Cookie: SID=s3", "Cookie: a=1"], ["s1", "s2", undefined, undefined]],
    [{ source: "client-ip" }, ["X-User: alice"], [undefined]],
  ] as const)("hashOn %o passes the request's value as hashKey", async (hashOn, lines, keys) => {
    await using up = new RawUpstream();
    const { px, balancer } = recordingProxy([up.endpoint], {}, { hashOn });
    await using _px = px;
    await using c = await RawClient.connect(px.port);
    for (const line of lines) {
      c.send(`GET / HTTP/1.1\r\n${H}${line}\r\n\r\n`);
      expect((await c.readResponse()).status).toBe(200);
    }
    expect(balancer.picks.map((p) => p.hashKey)).toEqual([...keys]);
    expect(balancer.picks.every((p) => p.clientAddress === "127.0.0.1")).toBe(true);
  });
});
