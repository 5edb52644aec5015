/** KubeClient against the real test API server (mTLS), plus NDJSON framing against a raw streaming server. */
import { describe, expect, test } from "bun:test";
import { KubeApiError, KubeClient, type WatchEvent } from "../../src/kube/client.ts";
import type { KubeConnection } from "../../src/kube/kubeconfig.ts";
import { startApiServer } from "../support/apiserver.ts";
import { RequestLog, loggedClientFor } from "../support/apiserver-outage.ts";
import { clientFor, service } from "../support/kube-sinks.ts";
import { waitFor } from "../support/wait.ts";

const Events = { group: "events.k8s.io", version: "v1", plural: "events", namespaced: true } as const;

describe("KubeClient", () => {
  test("get, create, patch, updateStatus and delete", async () => {
    await using server = await startApiServer({ rbac: false }); // the client's whole API, beyond the gateway's role
    using client = await clientFor(server);
    const created = await client.create("Service", { ...service("web"), spec: { type: "LoadBalancer", ports: [{ port: 80 }] } });
    expect(created).toMatchObject({ metadata: { name: "web", namespace: "default" } });

    const patched = await client.patch("Service", "default", "web", { metadata: { labels: { tier: "edge" } } });
    expect(patched).toMatchObject({ metadata: { labels: { tier: "edge" } } });

    const current = await client.get("Service", "default", "web");
    const withStatus = await client.updateStatus("Service", {
      ...current,
      status: { loadBalancer: { ingress: [{ ip: "192.0.2.10", ipMode: "Proxy" }] } },
    });
    expect(withStatus).toMatchObject({ status: { loadBalancer: { ingress: [{ ip: "192.0.2.10" }] } } });
    expect(server.get("services", "default", "web")).toMatchObject({ status: { loadBalancer: { ingress: [{ ip: "192.0.2.10" }] } } });

    const viaPatch = await client.patch("Service", "default", "web", { status: { loadBalancer: { ingress: [{ ip: "192.0.2.11" }] } } }, { subresource: "status" });
    expect(viaPatch).toMatchObject({ status: { loadBalancer: { ingress: [{ ip: "192.0.2.11" }] } } });

    // Any resource by reference, not only the watched kinds.
    await client.create(Events, {
      apiVersion: "events.k8s.io/v1",
      kind: "Event",
      metadata: { name: "web.1", namespace: "default" },
      regarding: { kind: "Service", name: "web", namespace: "default" },
      reason: "Bound",
      type: "Normal",
      action: "Bind",
      reportingController: "kubegate",
      reportingInstance: "node-a",
      eventTime: new Date().toISOString().replace(/Z$/, "000Z"), // a MicroTime: six fractional digits, or 400
    });
    expect(server.items("events.events.k8s.io")).toHaveLength(1);

    await client.delete("Service", "default", "web");
    expect(server.get("services", "default", "web")).toBeUndefined();
  });

  test("errors carry status, reason and the operation", async () => {
    await using server = await startApiServer({ rbac: false });
    using client = await clientFor(server);
    const err = await client.get("Service", "default", "nope").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect(err).toMatchObject({ name: "KubeApiError", status: 404, reason: "NotFound", operation: 'get services "default/nope"' });
    expect((err as Error).message).toStartWith('API server answered 404 Not Found for "get services "default/nope"": ');

    server.failNext(1, 429, { retryAfterSeconds: 7 });
    const limited = await client.list("Service").catch((e: unknown) => e);
    expect(limited).toMatchObject({ status: 429, retryAfter: 7 });
  });

  test("list pages with limit and continue", async () => {
    await using server = await startApiServer();
    for (let i = 0; i < 5; i++) server.create(service(`s${i}`));
    using client = await clientFor(server);
    const first = await client.list("Service", { limit: 2 });
    expect(first.items.map((o) => (o["metadata"] as { name: string }).name)).toEqual(["s0", "s1"]);
    expect(first.continue).toBeString();
    const second = await client.list("Service", { limit: 2, continue: first.continue });
    expect(second.items.map((o) => (o["metadata"] as { name: string }).name)).toEqual(["s2", "s3"]);
    expect(second.resourceVersion).toBe(first.resourceVersion);
  });

  test("watch yields events and ends with the stream; an ERROR event throws an expired KubeApiError", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: 50 });
    using client = await clientFor(server);
    const { resourceVersion } = await client.list("Service");
    server.create(service("a"));
    server.remove("services", "default", "a");
    const seen: WatchEvent["type"][] = [];
    for await (const ev of client.watch("Service", { resourceVersion, timeoutSeconds: 1, allowWatchBookmarks: true })) {
      seen.push(ev.type);
    }
    expect(seen.slice(0, 2)).toEqual(["ADDED", "DELETED"]);
    expect(seen).toContain("BOOKMARK");

    server.compact({ notifyWatchers: false });
    const err = await (async () => {
      for await (const _ of client.watch("Service", { resourceVersion })) {
        // no events before the error
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect(err).toMatchObject({ status: 410, reason: "Expired", expired: true });
  });

  test("untilReachable: one /readyz probe at a time while connections are refused, released when the server answers", async () => {
    await using server = await startApiServer();
    const log = new RequestLog();
    using client = await loggedClientFor(server, log, { probe: { intervalMs: 200 } });
    const forbidden = await client.get("Service", "default", "nope").catch((e: unknown) => e); // the gateway's role: list and watch
    expect(forbidden).toMatchObject({ status: 403, unreachable: false });
    await server.down();
    const refused = await client.list("Service").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(KubeApiError);
    expect(refused).toMatchObject({ status: undefined, unreachable: true });

    let released = false;
    const waits = [client.untilReachable(), client.untilReachable()];
    void Promise.all(waits).then(() => (released = true));
    const probes = () => log.sent.filter((r) => r.path === "/readyz");
    await waitFor(() => probes().length >= 3, { what: "three probes" });
    expect(released).toBe(false);
    await server.up();
    await Promise.all(waits);
    const sent = probes();
    expect(server.requests.filter((r) => r.path === "/readyz").map((r) => r.status)).toEqual([200]);
    // One probe for both waiters, started 100-300 ms apart (timers never fire early).
    for (let i = 1; i < sent.length; i++) expect(sent[i]!.at - sent[i - 1]!.at).toBeGreaterThanOrEqual(99);
    expect(log.sent.filter((r) => r.path !== "/readyz").map((r) => r.path)).toEqual(["/api/v1/namespaces/default/services/nope", "/api/v1/services"]);
  });

  test("untilReachable waits out the Retry-After of a 429 probe answer", async () => {
    await using server = await startApiServer();
    using client = await clientFor(server);
    server.failNext(1, 429, { match: "/readyz", retryAfterSeconds: 1 });
    const started = performance.now();
    await client.untilReachable();
    expect(performance.now() - started).toBeGreaterThanOrEqual(999);
    expect(server.requests.map((r) => [r.path, r.status])).toEqual([["/readyz", 429]]);
  });

  test("mTLS: without the client certificate the handshake is refused and the error says where", async () => {
    await using server = await startApiServer();
    using client = await clientFor(server, { skipClientCert: true });
    const err = await client.list("Service").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect((err as KubeApiError).status).toBeUndefined();
    expect((err as Error).message).toStartWith(`Cannot list services at ${server.url}: `);
  });

  test("a server outside the kubeconfig's CA is not trusted", async () => {
    await using server = await startApiServer();
    const path = await server.writeKubeconfig();
    const { loadKubeConfig } = await import("../../src/kube/kubeconfig.ts");
    const conn = await loadKubeConfig({ path, env: () => undefined });
    using client = new KubeClient({ ...conn, tls: { ...conn.tls, ca: undefined } });
    await expect(client.list("Service")).rejects.toThrow(`Cannot list services at ${server.url}: `);
  });
});

describe("watch framing", () => {
  test("events split across chunks, multi-byte characters split across chunks, and a final line without newline", async () => {
    const enc = new TextEncoder();
    const ev = (name: string) => JSON.stringify({ type: "ADDED", object: { metadata: { name } } });
    const bytes = enc.encode(`${ev("ünïcødé-1")}\n${ev("two")}\n\n${ev("thrëe")}`);
    const cut = [5, bytes.indexOf(0xc3) + 1, bytes.length - 9]; // the second cut splits "ü"
    using server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: () =>
        new Response(
          new ReadableStream({
            async pull(c) {
              let from = 0;
              for (const at of [...cut, bytes.length]) {
                c.enqueue(bytes.slice(from, at));
                from = at;
                await Bun.sleep(5);
              }
              c.close();
            },
          }),
        ),
    });
    const conn: KubeConnection = {
      server: `http://127.0.0.1:${server.port}`,
      tls: {},
      auth: { description: "none", credentials: async () => ({ headers: {} }), invalidate: () => false },
      origin: { source: "test", context: "test", cluster: "test", user: "test" },
    };
    using client = new KubeClient(conn);
    const names: string[] = [];
    for await (const e of client.watch("Service")) names.push((e.object["metadata"] as { name: string }).name);
    expect(names).toEqual(["ünïcødé-1", "two", "thrëe"]);
  });

  test("a malformed line fails the watch with the line quoted", async () => {
    using server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response('{"type":"ADDED","object":{}}\nnot json\n') });
    const conn: KubeConnection = {
      server: `http://127.0.0.1:${server.port}`,
      tls: {},
      auth: { description: "none", credentials: async () => ({ headers: {} }), invalidate: () => false },
      origin: { source: "test", context: "test", cluster: "test", user: "test" },
    };
    using client = new KubeClient(conn);
    const got: string[] = [];
    const err = await (async () => {
      for await (const e of client.watch("Service")) got.push(e.type);
    })().catch((e: unknown) => e);
    expect(got).toEqual(["ADDED"]);
    expect((err as Error).message).toBe('API server sent a malformed watch event for "watch services": not json');
  });
});
