/**
 * Listener reconciliation with real sockets: binding, route swaps that spare established
 * connections, drains, rebinds, and ports that cannot be bound.
 */
import { describe, expect, test } from "bun:test";
import type { Logger } from "../../src/log.ts";
import type { Entrypoint } from "../../src/model/types.ts";
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import type { ListenerProxyFactory } from "../../src/proxy/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { listenerManager, type TestListenerOptions } from "../support/listeners.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";
import { canConnect, connectClient, echoServer, echoTag as tagOf } from "../support/tcp-peers.ts";
import { waitFor } from "../support/wait.ts";

/** Stands in for the HTTP proxy: greets with `http-stub` and closes. */
const httpStub: ListenerProxyFactory = () => {
  let active = 0;
  return {
    handlers: {
      open(s) {
        active++;
        s.write(new TextEncoder().encode("http-stub"));
        s.end();
      },
      data() {},
      close() {
        active--;
      },
    },
    active: () => active,
    drain: () => waitFor(() => active === 0).then(() => {}),
    closeAll() {},
  };
};

interface LogLine {
  readonly level: string;
  readonly msg: string;
  readonly fields?: Readonly<Record<string, unknown>> | undefined;
}

function capture(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (msg: string, fields?: Readonly<Record<string, unknown>>) => void lines.push({ level, msg, fields });
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

function manager(options: TestListenerOptions = {}) {
  const log = capture();
  const m = listenerManager({ http: httpStub, tcp: createTcpProxy }, { drainGraceMs: 2_000, retryIntervalMs: 0, log, ...options });
  return Object.assign(m, { log });
}



function tcp(name: string, port: number, endpoints: readonly number[], extra: Partial<Parameters<typeof entrypoint>[0]> = {}): Entrypoint {
  return entrypoint({ name: `test/${name}:tcp`, port, endpoints, ...extra });
}

describe("ListenerManager", () => {
  test("binds every entrypoint's listeners and reports them", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    const [pa, pb] = [await freePort(), await freePort()];
    await using m = manager();
    m.apply(snapshot(tcp("one", pa, [a.port]), tcp("two", pb, [b.port])));
    expect([await tagOf(pa), await tagOf(pb)]).toEqual(["a", "b"]);
    expect(m.status()).toEqual([
      { key: "NodePort/test/one:tcp", listeners: [{ address: "127.0.0.1", port: pa, bound: true }] },
      { key: "NodePort/test/two:tcp", listeners: [{ address: "127.0.0.1", port: pb, bound: true }] },
    ]);
    await waitFor(() => m.counts().connections === 0, { what: "the clients' connections to close" });
    expect(m.counts()).toEqual({ bound: 2, failed: 0, draining: 0, connections: 0, flows: 0, refused: 0 });
  });

  test("an endpoint change reaches new connections; an established one keeps its endpoint", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    const port = await freePort();
    await using m = manager();
    m.apply(snapshot(tcp("web", port, [a.port])));
    await using established = await connectClient(rt, port);
    expect(await established.exchange("1", 3)).toBe("a:1");
    m.apply(snapshot(tcp("web", port, [b.port])));
    expect(await tagOf(port)).toBe("b");
    expect(await established.exchange("2", 3)).toBe("a:2");
    expect(m.counts().connections).toBe(1);
    // The old endpoint goes away: the established connection ends with it (EOF), new ones are unaffected.
    a.stop();
    await established.ended;
    expect(await tagOf(port)).toBe("b");
  });

  test("a changed entrypoint with the same cluster keeps the balancer's rotation", async () => {
    await using a = echoServer(rt, { tag: "a" });
    await using b = echoServer(rt, { tag: "b" });
    const port = await freePort();
    await using m = manager();
    let ep = tcp("web", port, [a.port, b.port]);
    m.apply(snapshot(ep));
    const seen = [await tagOf(port)];
    for (let i = 0; i < 6; i++) {
      ep = { ...ep, annotations: { revision: String(i) } }; // new object, same cluster object
      m.apply(snapshot(ep));
      seen.push(await tagOf(port));
    }
    // Strict alternation: a fresh balancer (random start) per apply would break it.
    const first = seen[0]!;
    const other = first === "a" ? "b" : "a";
    expect(seen).toEqual([first, other, first, other, first, other, first]);
  });

  test("a removed entrypoint stops accepting at once and drains its connections", async () => {
    await using echo = echoServer(rt);
    const port = await freePort();
    await using m = manager({ drainGraceMs: 5_000 });
    m.apply(snapshot(tcp("web", port, [echo.port])));
    await using c = await connectClient(rt, port);
    await c.exchange("a", 1);
    m.apply(snapshot());
    expect(await canConnect(port)).toBe(false);
    expect(m.counts()).toEqual({ bound: 0, failed: 0, draining: 1, connections: 1, flows: 0, refused: 0 });
    expect(m.status()).toEqual([]);
    // Still served while draining; once it ends, the drain is over.
    expect(await c.exchange("b", 1)).toBe("b");
    c.end();
    await c.closed;
    await waitFor(() => m.counts().draining === 0, { what: "the drain to finish" });
  });

  test("after the grace period, connections of a removed listener are closed", async () => {
    await using echo = echoServer(rt);
    const port = await freePort();
    await using m = manager({ drainGraceMs: 150 });
    m.apply(snapshot(tcp("web", port, [echo.port])));
    await using c = await connectClient(rt, port);
    await c.exchange("a", 1);
    const removed = performance.now();
    m.apply(snapshot());
    await c.closed;
    expect(performance.now() - removed).toBeGreaterThanOrEqual(140);
    await waitFor(() => m.counts().draining === 0 && echo.open === 0, { what: "the drain to finish" });
  });

  test("a NodePort change rebinds on the new port", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const [p1, p2] = [await freePort(), await freePort()];
    await using m = manager();
    m.apply(snapshot(tcp("web", p1, [echo.port])));
    expect(await tagOf(p1)).toBe("e");
    m.apply(snapshot(tcp("web", p2, [echo.port])));
    expect(await tagOf(p2)).toBe("e");
    expect(await canConnect(p1)).toBe(false);
    expect(m.status()).toEqual([{ key: "NodePort/test/web:tcp", listeners: [{ address: "127.0.0.1", port: p2, bound: true }] }]);
  });

  test("a protocol change on the same port closes the old listener and binds the new proxy", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const port = await freePort();
    await using m = manager();
    m.apply(snapshot(tcp("web", port, [echo.port])));
    expect(await tagOf(port)).toBe("e");
    m.apply(snapshot(entrypoint({ name: "test/web:tcp", protocol: "http", port, endpoints: [echo.port] })));
    await using c = await connectClient(rt, port);
    await c.ended;
    expect(c.text()).toBe("http-stub");
    expect(m.counts().bound).toBe(1);
  });

  test("a port in use is an error on that entrypoint only, and binds on a later apply once free", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const [blocked, free] = [await freePort(), await freePort()];
    const squatter = rt.listenTcp({ hostname: "127.0.0.1", port: blocked, handlers: { data() {} } });
    await using _s = { [Symbol.asyncDispose]: async () => squatter.stop(true) };
    await using m = manager();
    const snap = snapshot(tcp("blocked", blocked, [echo.port]), tcp("ok", free, [echo.port]));
    m.apply(snap);
    const error = `Cannot bind listener "test/blocked:tcp" on 127.0.0.1:${blocked}: address already in use`;
    expect(m.status()).toEqual([
      { key: "NodePort/test/blocked:tcp", listeners: [{ address: "127.0.0.1", port: blocked, bound: false, error }] },
      { key: "NodePort/test/ok:tcp", listeners: [{ address: "127.0.0.1", port: free, bound: true }] },
    ]);
    expect(m.log.lines.filter((l) => l.level === "error")).toEqual([
      {
        level: "error",
        msg: "Listener not bound",
        fields: { entrypoint: "NodePort/test/blocked:tcp", address: "127.0.0.1", port: blocked, protocol: "tcp", error },
      },
    ]);
    expect(await tagOf(free)).toBe("e");
    expect(m.counts()).toMatchObject({ bound: 1, failed: 1, draining: 0 });
    // The same failure again is not logged again.
    m.apply(snap);
    expect(m.log.lines.filter((l) => l.level === "error")).toHaveLength(1);

    squatter.stop(true);
    m.apply(snap);
    expect(m.status()[0]).toEqual({ key: "NodePort/test/blocked:tcp", listeners: [{ address: "127.0.0.1", port: blocked, bound: true }] });
    expect(await tagOf(blocked)).toBe("e");
  });

  test("a failed bind is retried on a timer", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const port = await freePort();
    const squatter = rt.listenTcp({ hostname: "127.0.0.1", port, handlers: { data() {} } });
    await using m = manager({ retryIntervalMs: 20 });
    m.apply(snapshot(tcp("web", port, [echo.port])));
    expect(m.counts().failed).toBe(1);
    squatter.stop(true);
    await waitFor(() => m.counts().bound === 1, { what: "the retry to bind" });
    expect(await tagOf(port)).toBe("e");
    expect(m.log.lines.some((l) => l.msg === "Listener bound after earlier failure")).toBe(true);
  });

  test("entrypoints with a model error, and UDP entrypoints without a UDP proxy, are not bound", async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    await using m = manager();
    m.apply(
      snapshot(
        tcp("conflict", p1, [1], { error: "Port 1 on 127.0.0.1 is already used by \"x\"" }),
        entrypoint({ name: "test/dns:udp", protocol: "udp", port: p2, endpoints: [1] }),
      ),
    );
    expect(m.status()).toEqual([]);
    expect(m.counts()).toEqual({ bound: 0, failed: 0, draining: 0, connections: 0, flows: 0, refused: 0 });
    expect(await canConnect(p1)).toBe(false);
    const notServed = { level: "info", msg: "Entrypoint not served", fields: { entrypoint: "NodePort/test/dns:udp", reason: "UDP entrypoints are not served: no UDP proxy is configured" } };
    expect(m.log.lines).toContainEqual(notServed);
    // Said once, not on every snapshot.
    m.apply(snapshot(entrypoint({ name: "test/dns:udp", protocol: "udp", port: p2, endpoints: [1] })));
    expect(m.log.lines.filter((l) => l.msg === notServed.msg)).toHaveLength(1);
  });

  test("an entrypoint on several addresses (IPv4 and IPv6) gets one listener per address", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const port = await freePort();
    await using m = manager();
    m.apply(snapshot(tcp("web", port, [echo.port], { addresses: ["127.0.0.1", "::1"] })));
    expect(m.status()).toEqual([
      {
        key: "NodePort/test/web:tcp",
        listeners: [
          { address: "127.0.0.1", port, bound: true },
          { address: "::1", port, bound: true },
        ],
      },
    ]);
    expect([await tagOf(port), await tagOf(port, "::1")]).toEqual(["e", "e"]);
  });

  test("a bind error on an IPv6 address names it in brackets", async () => {
    const port = await freePort("::1");
    const squatter = rt.listenTcp({ hostname: "::1", port, handlers: { data() {} } });
    await using _s = { [Symbol.asyncDispose]: async () => squatter.stop(true) };
    await using m = manager();
    m.apply(snapshot(tcp("web", port, [1], { addresses: ["::1"] })));
    expect(m.status()).toEqual([
      {
        key: "NodePort/test/web:tcp",
        listeners: [{ address: "::1", port, bound: false, error: `Cannot bind listener "test/web:tcp" on [::1]:${port}: address already in use` }],
      },
    ]);
  });

  test("close stops every listener and closes connections after the grace period", async () => {
    await using echo = echoServer(rt);
    const port = await freePort();
    const m = manager();
    m.apply(snapshot(tcp("web", port, [echo.port])));
    await using c = await connectClient(rt, port);
    await c.exchange("a", 1);
    const closing = m.close(100);
    expect(await canConnect(port)).toBe(false);
    await c.closed;
    await closing;
    expect(m.counts()).toEqual({ bound: 0, failed: 0, draining: 0, connections: 0, flows: 0, refused: 0 });
    m.apply(snapshot(tcp("web", port, [echo.port])));
    expect(await canConnect(port)).toBe(false);
  });
});
