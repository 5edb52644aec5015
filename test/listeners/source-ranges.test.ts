/**
 * loadBalancerSourceRanges: the pure check (parsing once, IPv4-mapped clients), and the listener
 * manager refusing, counting and logging real connections and datagrams from outside the ranges.
 */
import { describe, expect, test } from "bun:test";
import { sourceAllowed, sourceGuard } from "../../src/listeners/source-ranges.ts";
import type { Logger } from "../../src/log.ts";
import type { Entrypoint } from "../../src/model/types.ts";
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { makeUdpProxyFactory } from "../../src/proxy/udp/index.ts";
import { rt } from "../../src/runtime/index.ts";
import { listenerManager } from "../support/listeners.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";
import { connectClient, echoServer } from "../support/tcp-peers.ts";
import { freeUdpPort, udpClient, udpEcho } from "../support/udp-peers.ts";
import { waitFor } from "../support/wait.ts";

/** A LoadBalancer entrypoint with source ranges (the test helper makes NodePort ones). */
function lb(port: number, endpoints: readonly number[], sourceRanges: readonly string[] | undefined, protocol: "tcp" | "udp" = "tcp"): Entrypoint {
  const base = entrypoint({ name: `test/web:${protocol}`, protocol, port, endpoints });
  return { ...base, type: "LoadBalancer", key: `LoadBalancer/${base.name}`, ...(sourceRanges ? { sourceRanges } : {}) };
}

interface Line {
  readonly level: string;
  readonly msg: string;
  readonly fields?: Readonly<Record<string, unknown>> | undefined;
}

function manager() {
  const lines: Line[] = [];
  const at = (level: string) => (msg: string, fields?: Readonly<Record<string, unknown>>) => void lines.push({ level, msg, fields });
  const log: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  const udp = makeUdpProxyFactory(rt.bindUdp);
  const m = listenerManager({ http: createTcpProxy, tcp: createTcpProxy, udp }, { drainGraceMs: 1_000, retryIntervalMs: 0, log, refusedLogIntervalMs: 60_000 });
  return Object.assign(m, { lines });
}

describe("sourceGuard / sourceAllowed", () => {
  test("no ranges (absent or empty) means no guard", () => {
    expect(sourceGuard(lb(1, [], undefined))).toBeUndefined();
    expect(sourceGuard(lb(1, [], []))).toBeUndefined();
  });

  test("a source is allowed when any range holds it, in either family; IPv4-mapped IPv6 counts as IPv4", () => {
    const guard = sourceGuard(lb(1, [], ["10.0.0.0/8", " 192.168.1.0/24 ", "fd00::/8"]))!;
    expect(guard.invalid).toEqual([]);
    const table: [string, boolean][] = [
      ["10.1.2.3", true],
      ["::ffff:10.1.2.3", true],
      ["192.168.1.77", true],
      ["192.168.2.1", false],
      ["127.0.0.1", false],
      ["::ffff:127.0.0.1", false],
      ["fd12::1", true],
      ["::1", false],
      ["not an address", false],
    ];
    expect(table.map(([address]) => [address, sourceAllowed(guard, address)])).toEqual(table);
  });

  test("parsed once: unchanged ranges return the same guard, changed ones a new guard with the count kept", () => {
    const first = sourceGuard(lb(1, [], ["10.0.0.0/8"]))!;
    first.refused = 3;
    expect(sourceGuard(lb(1, [2], ["10.0.0.0/8"]), first)).toBe(first);
    const changed = sourceGuard(lb(1, [], ["127.0.0.0/8"]), first)!;
    expect(changed).not.toBe(first);
    expect(changed.refused).toBe(3);
    expect(sourceAllowed(changed, "127.0.0.1")).toBe(true);
  });

  test("invalid entries allow nothing and are listed", () => {
    const guard = sourceGuard(lb(1, [], ["10.0.0.0/33", "bogus"]))!;
    expect(guard.invalid).toEqual(["10.0.0.0/33", "bogus"]);
    expect(sourceAllowed(guard, "10.0.0.1")).toBe(false);
  });
});

describe("ListenerManager with loadBalancerSourceRanges", () => {
  test("a connection from inside the ranges is proxied", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const port = await freePort();
    await using m = manager();
    m.apply(snapshot(lb(port, [echo.port], ["10.0.0.0/8", "127.0.0.0/8"])));
    await using c = await connectClient(rt, port);
    expect(await c.exchange("hi", 4)).toBe("e:hi");
    expect(m.status()).toEqual([{ key: "LoadBalancer/test/web:tcp", listeners: [{ address: "127.0.0.1", port, bound: true }], refused: 0 }]);
  });

  test("a connection from outside is closed before any upstream connect, counted and logged at a rate limit", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const port = await freePort();
    await using m = manager();
    m.apply(snapshot(lb(port, [echo.port], ["10.0.0.0/8"])));
    for (let i = 1; i <= 2; i++) {
      await using c = await connectClient(rt, port);
      await c.send("data that must not reach the upstream").catch(() => {});
      // Bun resets the connection (closed); Deno can only close it (FIN: ended).
      await Promise.race([c.ended, c.closed]);
      expect(c.received).toBe(0);
      expect(m.counts().refused).toBe(i);
    }
    expect(echo.accepted).toBe(0);
    expect(m.counts()).toMatchObject({ connections: 0, refused: 2 });
    expect(m.status()).toEqual([{ key: "LoadBalancer/test/web:tcp", listeners: [{ address: "127.0.0.1", port, bound: true }], refused: 2 }]);
    // Two refusals inside the log interval: one line.
    expect(m.lines.filter((l) => l.level === "warn")).toEqual([
      {
        level: "warn",
        msg: "Connection refused: source not in loadBalancerSourceRanges",
        fields: { entrypoint: "LoadBalancer/test/web:tcp", source: "127.0.0.1", listener: `127.0.0.1:${port}`, refused: 1 },
      },
    ]);
  });

  test("a change of ranges applies to the next connection without rebinding; the count survives", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const port = await freePort();
    await using m = manager();
    m.apply(snapshot(lb(port, [echo.port], ["10.0.0.0/8"])));
    await using refused = await connectClient(rt, port);
    await Promise.race([refused.ended, refused.closed]);
    m.apply(snapshot(lb(port, [echo.port], ["127.0.0.1/32"])));
    await using allowed = await connectClient(rt, port);
    expect(await allowed.exchange("ok", 4)).toBe("e:ok");
    expect(m.status()[0]?.refused).toBe(1);
    // Ranges dropped: everyone is allowed, nothing is counted any more.
    m.apply(snapshot(lb(port, [echo.port], undefined)));
    expect(m.status()).toEqual([{ key: "LoadBalancer/test/web:tcp", listeners: [{ address: "127.0.0.1", port, bound: true }] }]);
    expect(m.lines.filter((l) => l.msg === "Listener bound")).toHaveLength(1);
  });

  test("ranges added to a listener bound without them apply to the next connection, and removed again too", async () => {
    await using echo = echoServer(rt, { tag: "e" });
    const port = await freePort();
    await using m = manager();
    m.apply(snapshot(lb(port, [echo.port], undefined)));
    await using before = await connectClient(rt, port);
    expect(await before.exchange("a", 3)).toBe("e:a");
    m.apply(snapshot(lb(port, [echo.port], ["10.0.0.0/8"])));
    await using refused = await connectClient(rt, port);
    await Promise.race([refused.ended, refused.closed]);
    expect(refused.received).toBe(0);
    expect(m.counts().refused).toBe(1);
    // The connection accepted before the ranges existed is left alone.
    expect(await before.exchange("b", 3)).toBe("e:b");
    m.apply(snapshot(lb(port, [echo.port], undefined)));
    await using after = await connectClient(rt, port);
    expect(await after.exchange("c", 3)).toBe("e:c");
    expect(m.lines.filter((l) => l.msg === "Listener bound")).toHaveLength(1);
  });

  test("UDP: datagrams from outside the ranges are dropped and counted; from inside they are proxied", async () => {
    await using echo = await udpEcho(rt, { tag: "u" });
    const port = await freeUdpPort(rt);
    await using m = manager();
    m.apply(snapshot(lb(port, [echo.port], ["10.0.0.0/8"], "udp")));
    await m.settled();
    await using client = await udpClient(rt, port);
    client.send("nope");
    await waitFor(() => m.counts().refused === 1, { what: "the datagram to be refused" });
    expect(echo.received).toBe(0);
    expect(m.counts().flows).toBe(0);
    expect(m.lines.some((l) => l.msg === "Datagram dropped: source not in loadBalancerSourceRanges")).toBe(true);

    m.apply(snapshot(lb(port, [echo.port], ["127.0.0.0/8"], "udp")));
    expect(await client.exchange("yes")).toBe("u:yes");
    expect(m.status()).toEqual([
      { key: "LoadBalancer/test/web:udp", listeners: [{ address: "127.0.0.1", port, bound: true, flows: 1 }], refused: 1 },
    ]);
  });

  test("invalid entries are reported once", async () => {
    const port = await freePort();
    await using m = manager();
    const snap = snapshot(lb(port, [1], ["bogus"]));
    m.apply(snap);
    m.apply(snap);
    expect(m.lines.filter((l) => l.level === "error")).toEqual([
      {
        level: "error",
        msg: "Invalid loadBalancerSourceRanges entries ignored: they allow no source",
        fields: { entrypoint: "LoadBalancer/test/web:tcp", invalid: ["bogus"] },
      },
    ]);
  });
});
