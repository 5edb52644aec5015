/**
 * The port-forward dialer (src/kube/portforward.ts) against an independent emulation of the API server and
 * kubelet (test/kube/portforward-server.ts: Bun's native WebSocket server over TLS, relaying to real TCP
 * backends on loopback): HTTP through the stream, 4 MiB each way with backpressure, close semantics, the
 * kubeconfig's credentials (token, mTLS, exec-plugin certificates, a 401 retried once), and every error the
 * proxies act on.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Authenticator, KubeConnection } from "../../src/kube/kubeconfig.ts";
import { PortForwardDialer, PortForwardError } from "../../src/kube/portforward.ts";
import { acceptKey } from "../../src/kube/websocket.ts";
import type { TcpHandlers, TcpSocket } from "../../src/runtime/index.ts";
import { testCerts, type TestCerts } from "../support/certs.ts";
import { waitFor } from "../support/wait.ts";
import { startFakePortForward } from "./portforward-server.ts";

let certs: TestCerts;
beforeAll(async () => {
  certs = await testCerts();
});

const enc = new TextEncoder();
const dec = new TextDecoder();

function staticAuth(headers: Record<string, string> = {}, extra: { cert?: string; key?: string } = {}): Authenticator {
  return { description: "a static token", credentials: async () => ({ headers, ...extra }), invalidate: () => false };
}

function connection(server: string, auth: Authenticator, tls: KubeConnection["tls"] = { ca: certs.ca }): KubeConnection {
  return { server, tls, auth, origin: { source: '"/tmp/kubeconfig"', context: "kind-dev", cluster: "kind-dev", user: "dev" } };
}

/** Handlers that record a stream's life. */
function recorder() {
  const events: string[] = [];
  let text = "";
  let bytes = 0;
  const closed = Promise.withResolvers<Error | undefined>();
  const handlers: TcpHandlers<undefined> = {
    open: () => void events.push("open"),
    data: (_s, chunk) => {
      bytes += chunk.length;
      text += dec.decode(chunk);
      if (events.at(-1) !== "data") events.push("data");
    },
    end: () => void events.push("end"),
    close: (_s, err) => {
      events.push(err ? `close:${(err as PortForwardError).code}` : "close");
      closed.resolve(err);
    },
  };
  return {
    handlers,
    events,
    closed: closed.promise,
    get text() {
      return text;
    },
    get bytes() {
      return bytes;
    },
  };
}

/** An HTTP backend (the pod's container) on loopback. */
let web: ReturnType<typeof Bun.serve>;
/** A TCP backend that greets first, then echoes, and closes on "quit". */
let greeter: Bun.TCPSocketListener<undefined>;
/** A port nothing listens on. */
let closedPort: number;
beforeAll(() => {
  web = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => new Response(`pod says hi to ${new URL(req.url).pathname}`) });
  greeter = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: (s) => void s.write("220 ready\r\n"),
      data: (s, d) => {
        const t = dec.decode(d);
        if (t.includes("quit")) {
          s.write("bye\r\n");
          s.end();
        } else s.write(d);
      },
    },
  });
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  closedPort = l.port;
  l.stop(true);
});
afterAll(() => {
  web.stop(true);
  greeter.stop(true);
});

const target = (pod: string, namespace = "default", port = 8080) => ({ namespace, pod, port });

describe("PortForwardDialer", () => {
  test("an HTTP exchange through the stream, with the bearer token and the URL the API server expects", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/web-0": web.port! }, token: () => "s3cret" });
    const dialer = new PortForwardDialer(connection(api.url, staticAuth({ authorization: "Bearer s3cret" })));
    const r = recorder();
    const s = await dialer.connect(target("web-0"), { handlers: r.handlers, data: undefined, timeoutMs: 5000 });
    expect(r.events).toEqual(["open"]);
    expect([s.remoteAddress, s.remotePort]).toEqual(["127.0.0.1", api.port]);
    const req = enc.encode("GET /index.html HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
    expect(s.write(req)).toBe(req.length);
    await r.closed;
    expect(r.text).toStartWith("HTTP/1.1 200 OK");
    expect(r.text).toEndWith("pod says hi to /index.html");
    expect(r.events).toEqual(["open", "data", "end", "close"]);
    expect(api.requests).toEqual([
      {
        path: "/api/v1/namespaces/default/pods/web-0/portforward?ports=8080",
        authorization: "Bearer s3cret",
        protocols: "v4.channel.k8s.io",
        userAgent: "kubegate",
      },
    ]);
    expect(s.write(req)).toBe(-1);
  });

  test("bytes the pod sends first arrive after connect resolved, then the server's close is end + close", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/mail-0": greeter.port } });
    const dialer = new PortForwardDialer(connection(api.url, staticAuth()));
    const r = recorder();
    const s = await dialer.connect(target("mail-0"), { handlers: r.handlers, data: undefined });
    r.events.push("resolved");
    await waitFor(() => r.text === "220 ready\r\n", { what: "the greeting" });
    s.write(enc.encode("echo me\r\n"));
    await waitFor(() => r.text.endsWith("echo me\r\n"), { what: "the echo" });
    s.write(enc.encode("quit\r\n"));
    expect(await r.closed).toBeUndefined();
    expect(r.text).toBe("220 ready\r\necho me\r\nbye\r\n");
    expect(r.events).toEqual(["open", "resolved", "data", "end", "close"]);
    await waitFor(() => api.stats.openStreams === 0, { what: "the server side to close" });
  });

  test.each([
    ["sends a line and closes", "hello\n"],
    ["closes without a byte", ""],
  ])("a pod that %s at once: connect resolves, then data, end and close", async (_, line) => {
    const quick = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(s) {
          if (line) s.write(line);
          s.end();
        },
        data() {},
      },
    });
    try {
      await using api = startFakePortForward({ certs, pods: { "default/quick-0": quick.port } });
      const r = recorder();
      await new PortForwardDialer(connection(api.url, staticAuth())).connect(target("quick-0"), { handlers: r.handlers, data: undefined });
      r.events.push("resolved");
      expect(await r.closed).toBeUndefined();
      expect(r.text).toBe(line);
      expect(r.events).toEqual(line ? ["open", "resolved", "data", "end", "close"] : ["open", "resolved", "end", "close"]);
    } finally {
      quick.stop(true);
    }
  });

  test("the WebSocket closed by the server (close frame) is end of stream", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/mail-0": greeter.port } });
    const r = recorder();
    await new PortForwardDialer(connection(api.url, staticAuth())).connect(target("mail-0"), { handlers: r.handlers, data: undefined });
    await waitFor(() => r.text !== "", { what: "the greeting" });
    api.closeAll();
    expect(await r.closed).toBeUndefined();
    expect(r.events).toEqual(["open", "data", "end", "close"]);
  });

  test("terminate closes the stream now: close once, no error; the server and the pod side close", async () => {
    let backendClosed = false;
    const pod = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {}, close: () => void (backendClosed = true) } });
    try {
      await using api = startFakePortForward({ certs, pods: { "default/db-0": pod.port } });
      const r = recorder();
      const s = await new PortForwardDialer(connection(api.url, staticAuth())).connect(target("db-0", "default", 5432), {
        handlers: r.handlers,
        data: undefined,
      });
      await waitFor(() => api.stats.openStreams === 1, { what: "the stream on the server" });
      s.terminate();
      s.terminate();
      expect(await r.closed).toBeUndefined();
      expect(r.events).toEqual(["open", "close"]);
      await waitFor(() => api.stats.openStreams === 0 && backendClosed, { what: "the server and the pod side to close" });
      expect(s.write(enc.encode("x"))).toBe(-1);
    } finally {
      pod.stop(true);
    }
  });

  // Loopback TCP absorbs about 4 MiB per socket (autotuned send buffers) before the other side sees backpressure,
  // so these transfers are larger than that: 12 MiB down, 16 MiB up (through two sockets that both buffer).
  const pattern = (i: number) => (i * 31 + (i >> 12)) & 0xff;

  test("12 MiB down: pausing reaches the server as WebSocket backpressure; nothing arrives while paused; all in order after", async () => {
    const DOWN = 12 * 1024 * 1024;
    const download = new Uint8Array(DOWN).map((_, i) => pattern(i));
    const pod = Bun.listen<{ sent: number }>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(s) {
          s.data = { sent: Math.max(0, s.write(download)) };
        },
        drain(s) {
          if (s.data.sent < DOWN) s.data.sent += Math.max(0, s.write(download.subarray(s.data.sent)));
        },
        data() {},
      },
    });
    try {
      await using api = startFakePortForward({ certs, pods: { "default/bulk-0": pod.port } });
      let got = 0;
      let gotOk = true;
      let paused = true;
      let whilePaused = 0;
      const s = await new PortForwardDialer(connection(api.url, staticAuth())).connect(target("bulk-0"), {
        data: undefined,
        handlers: {
          open: (sock) => sock.pause(),
          data(_s, d) {
            if (paused) whilePaused += d.length;
            for (let i = 0; i < d.length; i++) if (d[i] !== pattern(got + i)) gotOk = false;
            got += d.length;
          },
        },
      });
      await waitFor(() => api.stats.backpressured > 0, { what: "WebSocket backpressure on the server", timeoutMs: 10_000 });
      expect(api.stats.podBytes).toBeLessThan(DOWN);
      paused = false;
      s.resume();
      await waitFor(() => got === DOWN, { what: "12 MiB down", timeoutMs: 20_000 });
      expect([gotOk, whilePaused]).toEqual([true, 0]);
      s.terminate();
    } finally {
      pod.stop(true);
    }
  }, 30_000);

  test("16 MiB up to a pod that does not read yet: write returns 0, drain continues, all bytes arrive in order", async () => {
    const UP = 16 * 1024 * 1024;
    let received = 0;
    let receivedOk = true;
    const podSockets: Bun.Socket<undefined>[] = [];
    const pod = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(s) {
          s.pause();
          podSockets.push(s);
        },
        data(_s, d) {
          for (let i = 0; i < d.length; i++) if (d[i] !== (pattern(received + i) ^ 0x55)) receivedOk = false;
          received += d.length;
        },
      },
    });
    try {
      await using api = startFakePortForward({ certs, pods: { "default/bulk-0": pod.port } });
      const upload = new Uint8Array(UP).map((_, i) => pattern(i) ^ 0x55);
      let sent = 0;
      let refusals = 0;
      let drains = 0;
      const pump = (s: TcpSocket<undefined>) => {
        while (sent < UP) {
          const n = s.write(upload.subarray(sent, sent + 48 * 1024));
          if (n <= 0) return void refusals++;
          sent += n;
        }
      };
      const s = await new PortForwardDialer(connection(api.url, staticAuth())).connect(target("bulk-0"), {
        data: undefined,
        handlers: {
          data() {},
          drain(sock) {
            drains++;
            pump(sock);
          },
        },
      });
      pump(s);
      expect(refusals).toBe(1);
      expect(sent).toBeLessThan(UP);
      await waitFor(() => podSockets.length === 1, { what: "the pod connection" });
      podSockets[0]!.resume();
      await waitFor(() => received === UP, { what: "16 MiB up", timeoutMs: 20_000 });
      expect(receivedOk).toBe(true);
      expect(drains).toBeGreaterThan(0);
      s.terminate();
    } finally {
      pod.stop(true);
    }
  }, 30_000);

  test("mTLS: the API server requires a client certificate; the kubeconfig's or an exec plugin's is used", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/web-0": web.port! }, requireClientCert: true });
    const exchange = async (conn: KubeConnection) => {
      const r = recorder();
      const s = await new PortForwardDialer(conn).connect(target("web-0"), { handlers: r.handlers, data: undefined, timeoutMs: 5000 });
      s.write(enc.encode("GET /tls HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"));
      await r.closed;
      return r.text;
    };
    expect(await exchange(connection(api.url, staticAuth(), { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }))).toEndWith(
      "pod says hi to /tls",
    );
    expect(await exchange(connection(api.url, staticAuth({}, { cert: certs.clientCert, key: certs.clientKey })))).toEndWith("pod says hi to /tls");
    const err = await new PortForwardDialer(connection(api.url, staticAuth()))
      .connect(target("web-0"), { handlers: recorder().handlers, data: undefined, timeoutMs: 5000 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PortForwardError);
    expect((err as PortForwardError).code).toBe("EPORTFORWARD");
    expect((err as Error).message).toContain(`cannot reach the API server at ${api.url}`);
  });

  test("a 401 invalidates the credentials and retries once with fresh ones", async () => {
    let generation = 1;
    await using api = startFakePortForward({ certs, pods: { "default/web-0": web.port! }, token: () => "token-2" });
    const auth: Authenticator = {
      description: 'token file "/var/run/token"',
      credentials: async () => ({ headers: { authorization: `Bearer token-${generation}` } }),
      invalidate: () => (generation++, true),
    };
    const r = recorder();
    const s = await new PortForwardDialer(connection(api.url, auth)).connect(target("web-0"), { handlers: r.handlers, data: undefined });
    s.write(enc.encode("GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"));
    await r.closed;
    expect(r.text).toEndWith("pod says hi to /");
    expect(api.requests.map((q) => q.authorization)).toEqual(["Bearer token-1", "Bearer token-2"]);
  });

  test("a 401 with static credentials is EUNAUTHORIZED after one request", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/web-0": web.port! }, token: () => "right" });
    const err = (await new PortForwardDialer(connection(api.url, staticAuth({ authorization: "Bearer wrong" })))
      .connect(target("web-0"), { handlers: recorder().handlers, data: undefined })
      .catch((e: unknown) => e)) as PortForwardError;
    expect([err.code, err.status, api.requests.length]).toEqual(["EUNAUTHORIZED", 401, 1]);
    expect(err.message).toContain('user "dev", a static token) were rejected');
  });

  test("403: EFORBIDDEN names the verb, the resource, the namespace, the server's message and the rule to grant", async () => {
    await using api = startFakePortForward({ certs, pods: { "prod/web-0": web.port! }, forbiddenNamespaces: ["prod"] });
    const err = (await new PortForwardDialer(connection(api.url, staticAuth()))
      .connect(target("web-0", "prod"), { handlers: recorder().handlers, data: undefined })
      .catch((e: unknown) => e)) as PortForwardError;
    expect(err).toBeInstanceOf(PortForwardError);
    expect([err.code, err.status]).toEqual(["EFORBIDDEN", 403]);
    expect(err.message).toBe(
      'Cannot port-forward to pod "prod/web-0" port 8080: the API server answered 403 Forbidden: the credentials in "/tmp/kubeconfig" ' +
        '(context "kind-dev", user "dev", a static token) may not create pods/portforward in namespace "prod"; grant it with RBAC: ' +
        'a Role in "prod" (or a ClusterRole) with the rule {apiGroups: [""], resources: ["pods/portforward"], verbs: ["create", "get"]} ' +
        'bound to that user (port-forward over WebSocket is a GET: API servers authorize it as "create", older ones as "get"). ' +
        'Server said: pods "web-0" is forbidden: User "kubegate-test" cannot create resource "pods/portforward" in API group "" in the namespace "prod"',
    );
  });

  test("404: ENOTFOUND with the server's message", async () => {
    await using api = startFakePortForward({ certs, pods: {} });
    const err = (await new PortForwardDialer(connection(api.url, staticAuth()))
      .connect(target("gone-0"), { handlers: recorder().handlers, data: undefined })
      .catch((e: unknown) => e)) as PortForwardError;
    expect([err.code, err.status]).toEqual(["ENOTFOUND", 404]);
    expect(err.message).toBe(
      'Cannot port-forward to pod "default/gone-0" port 8080: the API server answered 404 Not Found: the pod does not exist (deleted, or another namespace). Server said: pods "gone-0" not found',
    );
  });

  test.each([
    ["no-upgrade", 400, "answered 400 Bad Request. Server said: Upgrade request required"],
    ["bare-403", 403, "answered 403 Forbidden without a body, kubelet's answer to an unsupported subprotocol"],
  ] as const)("%s: EUNSUPPORTED says what kubegate needs", async (mode, status, why) => {
    await using api = startFakePortForward({ certs, pods: { "default/web-0": web.port! } });
    api.mode = mode;
    const err = (await new PortForwardDialer(connection(api.url, staticAuth()))
      .connect(target("web-0"), { handlers: recorder().handlers, data: undefined })
      .catch((e: unknown) => e)) as PortForwardError;
    expect([err.code, err.status]).toEqual(["EUNSUPPORTED", status]);
    expect(err.message).toContain(`the API server (or a proxy in front of it) did not accept a WebSocket port-forward (the API server ${why})`);
    expect(err.message).toContain("kubegate needs the pods/portforward subresource over WebSocket with the v4.channel.k8s.io protocol");
  });

  test("a 101 without a subprotocol is kubelet's default binary framing: it works", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/web-0": web.port! } });
    api.mode = "no-protocol";
    const r = recorder();
    const s = await new PortForwardDialer(connection(api.url, staticAuth())).connect(target("web-0"), { handlers: r.handlers, data: undefined });
    s.write(enc.encode("GET /bare HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"));
    await r.closed;
    expect(r.text).toEndWith("pod says hi to /bare");
  });

  test("a port nothing listens on: ECONNREFUSED with the server's text and the port, before any data", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/web-0": closedPort } });
    const r = recorder();
    const outcome = await new PortForwardDialer(connection(api.url, staticAuth()))
      .connect(target("web-0", "default", 9999), { handlers: r.handlers, data: undefined })
      .then(
        async () => await r.closed,
        (e: unknown) => e,
      );
    // Kubelet dials after sending the port frames: the refusal is a rejection when it arrives with them, else
    // the stream's close error before any data. Both carry the same error.
    const err = outcome as PortForwardError;
    expect(err).toBeInstanceOf(PortForwardError);
    expect(err.code).toBe("ECONNREFUSED");
    expect(err.message).toStartWith(
      'Port-forward to pod "default/web-0" port 9999 failed: the API server could not connect to port 9999 in the pod (does the container listen on it?): error forwarding port 9999',
    );
    expect(err.message).toContain("connection refused");
    expect(r.events.filter((e) => e === "data" || e === "end")).toEqual([]);
  });

  test.each(["silent", "no-port-frames"] as const)("%s: ETIMEDOUT after timeoutMs", async (mode) => {
    await using api = startFakePortForward({ certs, pods: { "default/web-0": web.port! } });
    api.mode = mode;
    const started = performance.now();
    const err = (await new PortForwardDialer(connection(api.url, staticAuth()))
      .connect(target("web-0"), { handlers: recorder().handlers, data: undefined, timeoutMs: 300 })
      .catch((e: unknown) => e)) as PortForwardError;
    const took = performance.now() - started;
    expect(err.code).toBe("ETIMEDOUT");
    expect(err.message).toContain('Cannot port-forward to pod "default/web-0" port 8080 through https://127.0.0.1:');
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(2000);
    await waitFor(() => api.stats.openStreams === 0, { what: "the timed-out stream to be closed" });
  });

  test("the server's pings are answered (the client's frames are masked, or Bun's server would close)", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/mail-0": greeter.port } });
    const r = recorder();
    const s = await new PortForwardDialer(connection(api.url, staticAuth())).connect(target("mail-0"), { handlers: r.handlers, data: undefined });
    api.pingAll("are you there");
    await waitFor(() => api.pongs.length === 1, { what: "the pong" });
    expect(api.pongs).toEqual(["are you there"]);
    s.write(enc.encode("still here\r\n"));
    await waitFor(() => r.text.endsWith("still here\r\n"), { what: "the echo" });
    expect(api.stats.clientBytes).toBe("still here\r\n".length);
    s.terminate();
    await r.closed;
  });

  test("end() sends nothing and refuses later writes; the stream stays readable until the pod closes", async () => {
    await using api = startFakePortForward({ certs, pods: { "default/mail-0": greeter.port } });
    const r = recorder();
    const s = await new PortForwardDialer(connection(api.url, staticAuth())).connect(target("mail-0"), { handlers: r.handlers, data: undefined });
    s.write(enc.encode("quit\r\n"));
    s.end();
    expect(s.write(enc.encode("more"))).toBe(-1);
    expect(await r.closed).toBeUndefined();
    expect(r.text).toBe("220 ready\r\nbye\r\n");
    expect(api.stats.clientBytes).toBe(6);
  });

  describe("against a scripted server (plain HTTP, one write after the upgrade)", () => {
    /** A server frame (unmasked, FIN) with `payload`. */
    const frame = (opcode: number, payload: Uint8Array) => Buffer.concat([Uint8Array.of(0x80 | opcode, payload.length), payload]);
    /** Answers the upgrade with `after` in the same write; `later` answers the client's first frame. */
    const scripted = (after: Uint8Array, later?: Uint8Array) =>
      Bun.listen<{ upgraded: boolean }>({
        hostname: "127.0.0.1",
        port: 0,
        socket: {
          open(sock) {
            sock.data = { upgraded: false };
          },
          data(sock, d) {
            if (sock.data.upgraded) return void (later && sock.write(later));
            sock.data.upgraded = true;
            const key = /sec-websocket-key: (.*)\r\n/i.exec(dec.decode(d))?.[1] ?? "";
            const head = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n`;
            sock.write(Buffer.concat([enc.encode(head), after]));
          },
        },
      });
    const ports = (port: number) => Buffer.concat([frame(2, Uint8Array.of(0, port & 0xff, port >> 8)), frame(2, Uint8Array.of(1, port & 0xff, port >> 8))]);

    test("an error-channel message after data from the pod closes the stream with EPORTFORWARD", async () => {
      using srv = scripted(
        Buffer.concat([ports(8080), frame(2, Buffer.concat([Uint8Array.of(0), enc.encode("partial")]))]),
        frame(2, Buffer.concat([Uint8Array.of(1), enc.encode("lost connection to pod")])),
      );
      const r = recorder();
      const s = await new PortForwardDialer(connection(`http://127.0.0.1:${srv.port}`, staticAuth())).connect(target("web-0"), { handlers: r.handlers, data: undefined });
      await waitFor(() => r.text === "partial", { what: "the pod's bytes" });
      s.write(enc.encode("more"));
      const err = (await r.closed) as PortForwardError;
      expect(r.text).toBe("partial");
      expect([err.code, err.message]).toEqual(["EPORTFORWARD", 'Port-forward to pod "default/web-0" port 8080 failed: lost connection to pod']);
      expect(r.events).toEqual(["open", "data", "close:EPORTFORWARD"]);
    });

    test("an error-channel message with the port frames rejects connect with ECONNREFUSED", async () => {
      using srv = scripted(Buffer.concat([ports(8080), frame(2, Buffer.concat([Uint8Array.of(1), enc.encode("dial tcp4 127.0.0.1:8080: connect: connection refused")]))]));
      const r = recorder();
      const err = (await new PortForwardDialer(connection(`http://127.0.0.1:${srv.port}`, staticAuth()))
        .connect(target("web-0"), { handlers: r.handlers, data: undefined })
        .catch((e: unknown) => e)) as PortForwardError;
      expect(err.code).toBe("ECONNREFUSED");
      expect(err.message).toEndWith("(does the container listen on it?): dial tcp4 127.0.0.1:8080: connect: connection refused");
      expect(r.events).toEqual([]);
    });

    test("data and an error in the same read as the port frames reject connect (the bytes are dropped)", async () => {
      using srv = scripted(Buffer.concat([ports(8080), frame(2, Buffer.concat([Uint8Array.of(0), enc.encode("partial")])), frame(2, Buffer.concat([Uint8Array.of(1), enc.encode("lost connection to pod")]))]));
      const r = recorder();
      const err = (await new PortForwardDialer(connection(`http://127.0.0.1:${srv.port}`, staticAuth()))
        .connect(target("web-0"), { handlers: r.handlers, data: undefined })
        .catch((e: unknown) => e)) as PortForwardError;
      expect([err.code, err.message]).toEqual(["EPORTFORWARD", 'Port-forward to pod "default/web-0" port 8080 failed: lost connection to pod']);
      expect(r.events).toEqual([]);
    });

    test("a port frame naming another port rejects connect", async () => {
      using srv = scripted(ports(9090));
      const err = (await new PortForwardDialer(connection(`http://127.0.0.1:${srv.port}`, staticAuth()))
        .connect(target("web-0"), { handlers: recorder().handlers, data: undefined })
        .catch((e: unknown) => e)) as PortForwardError;
      expect([err.code, err.message]).toEqual(["EPORTFORWARD", 'Port-forward to pod "default/web-0" port 8080 failed: the API server announced port 9090 on the data channel']);
    });
  });
});

