/**
 * ExternalName end to end through the listener manager: entrypoints whose target is `localhost` route TCP
 * and HTTP to a backend on 127.0.0.1, with the name resolved by the system resolver (DNS, else /etc/hosts).
 */
import { describe, expect, test } from "bun:test";
import { RouteBuilder } from "../../src/routes/builder.ts";
import { DnsRegistry } from "../../src/routes/dns/registry.ts";
import type { Entrypoint } from "../../src/model/types.ts";
import { closeIdleUpstreams, createHttpProxy } from "../../src/proxy/http/index.ts";
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { defaultProxyOptions } from "../../src/proxy/types.ts";
import type { RouteRef } from "../../src/routes/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { listenerManager } from "../support/listeners.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";
import { connectClient, echoServer } from "../support/tcp-peers.ts";
import { waitFor } from "../support/wait.ts";
import { header, RawClient, RawUpstream } from "../support/http-harness.ts";

function external(name: string, protocol: "tcp" | "http", port: number, target: { hostname: string; port: number }): Entrypoint {
  return { ...entrypoint({ name, protocol, port }), externalName: target };
}

function manager() {
  const m = listenerManager({ http: createHttpProxy, tcp: createTcpProxy }, { drainGraceMs: 500, retryIntervalMs: 0 });
  return Object.assign(m, {
    async [Symbol.asyncDispose]() {
      await m.close(500);
      closeIdleUpstreams();
    },
  });
}

describe("ExternalName to localhost", () => {
  test("TCP and HTTP entrypoints reach a local backend through the resolved name", async () => {
    await using echo = echoServer(rt, { tag: "echo" });
    await using web = new RawUpstream("web");
    const [tcpPort, httpPort] = [await freePort(), await freePort()];
    await using listeners = manager();
    listeners.apply(
      snapshot(
        external("ext/db:tcp", "tcp", tcpPort, { hostname: "localhost", port: echo.port }),
        external("ext/web:http", "http", httpPort, { hostname: "localhost", port: web.port }),
      ),
    );
    // Connections before the first answer are refused (no endpoints yet): poll until the name resolved.
    const reply = await waitFor(
      async () => {
        await using c = await connectClient(rt, tcpPort);
        return await c.exchange("ping", "echo:ping".length);
      },
      { what: "the TCP ExternalName entrypoint to answer" },
    );
    expect(reply).toBe("echo:ping");

    const res = await waitFor(
      async () => {
        await using c = await RawClient.connect(httpPort);
        c.send("GET /x HTTP/1.1\r\nHost: shop.example.com\r\n\r\n");
        const r = await c.readResponse({ timeoutMs: 1_000 });
        return r.status === 200 ? r : undefined;
      },
      { what: "the HTTP ExternalName entrypoint to answer" },
    );
    expect(res.body).toBe("web GET /x");
    // The client's Host is kept (not rewritten to the ExternalName).
    expect(header(web.requests.at(-1)!, "host")).toBe("shop.example.com");
  });
});

describe("ExternalName re-resolution", () => {
  test("when the name's address changes, new connections go to the new address", async () => {
    // Two backends on one port number: 127.0.0.1:P and ::1:P.
    const v4 = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: { open: (s) => void s.write(new TextEncoder().encode("v4")), data() {} } });
    await using _v4 = { [Symbol.asyncDispose]: async () => v4.stop(true) };
    const v6 = rt.listenTcp({ hostname: "::1", port: v4.port, handlers: { open: (s) => void s.write(new TextEncoder().encode("v6")), data() {} } });
    await using _v6 = { [Symbol.asyncDispose]: async () => v6.stop(true) };
    let answer = "127.0.0.1";
    using names = new DnsRegistry({ resolve: async () => ({ addresses: [answer] }), minRefreshMs: 5, refreshMs: 20 });
    using routes = new RouteBuilder({ externalNames: names });
    const ep = external("ext/db:tcp", "tcp", 0, { hostname: "db.example.com", port: v4.port });
    const ref: RouteRef = { current: routes.route(ep) };
    await routes.lease(ep.key)!.ready();
    const proxy = createTcpProxy(ref, defaultProxyOptions);
    const listener = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
    await using _px = { [Symbol.asyncDispose]: async () => (listener.stop(true), proxy.closeAll()) };
    const greeting = async () => {
      await using c = await connectClient(rt, listener.port);
      await c.receivedAtLeast(2);
      return c.text();
    };
    expect(await greeting()).toBe("v4");
    answer = "::1";
    expect(await waitFor(async () => ((await greeting()) === "v6" ? "v6" : undefined), { what: "connections to follow the new address" })).toBe("v6");
    expect(routes.describe(ep.key)?.externalName).toMatchObject({ hostname: "db.example.com", addresses: ["::1"], port: v4.port });
  });
});
