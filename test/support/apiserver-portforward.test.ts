/**
 * The test API server's pods/portforward must behave like kube-apiserver + kubelet on the wire, or a
 * port-forward client tested against it proves nothing. Driven by Bun's own WebSocket client (an independent
 * RFC 6455 implementation) over TLS with the test certificates, and by a raw TLS client for what a browser-grade
 * client will not send (unmasked frames, fragments, pings) or not show (the body of a refused handshake).
 */
import { describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { type ApiServerOptions, type TestApiServer, startApiServer } from "./apiserver.ts";
import { FrameParser, frameHeader, websocketAccept } from "./apiserver-portforward.ts";
import { waitFor } from "./wait.ts";

type Msg = { channel: number; data: Buffer };

const pod = (name: string, phase = "Running", ns = "default") => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace: ns, labels: { app: "web" } },
  spec: { nodeName: "kind-worker", containers: [{ name: "web", image: "nginx", ports: [{ containerPort: 8080 }] }] },
  status: { phase, podIP: "10.244.1.5", podIPs: [{ ip: "10.244.1.5" }] },
});

const pfPath = (name: string, query: string, ns = "default") => `/api/v1/namespaces/${ns}/pods/${name}/portforward${query}`;

/** A TCP backend standing for a pod's container port: echoes (or runs `onData`) and records what it saw. */
class Backend implements AsyncDisposable {
  readonly sockets: Socket[] = [];
  closed = 0;
  received = 0;
  private constructor(readonly server: Server) {}

  static async start(onConnection?: (s: Socket) => void): Promise<Backend> {
    const b: Backend = new Backend(
      createServer((s) => {
        b.sockets.push(s);
        s.on("data", (d) => (b.received += d.length));
        s.on("close", () => b.closed++);
        s.on("error", () => {});
        if (onConnection) onConnection(s);
        else s.pipe(s);
      }),
    );
    await new Promise<void>((r) => b.server.listen(0, "127.0.0.1", r));
    return b;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** Bun's WebSocket, with the messages collected per channel. */
class Client implements AsyncDisposable {
  readonly messages: Msg[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private constructor(
    readonly ws: WebSocket,
    readonly base64: boolean,
  ) {
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e) => {
      if (typeof e.data === "string") this.messages.push({ channel: e.data.charCodeAt(0) - 48, data: Buffer.from(e.data.slice(1), "base64") });
      else {
        const b = Buffer.from(e.data as ArrayBuffer);
        this.messages.push({ channel: b[0]!, data: b.subarray(1) });
      }
    });
    this.closed = new Promise((resolve) => ws.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason })));
  }

  /** Opens, or rejects with the close code when the handshake is refused. */
  static open(api: TestApiServer, path: string, options: { protocols?: string[]; headers?: Record<string, string> } = {}): Promise<Client> {
    const protocols = options.protocols ?? ["v4.channel.k8s.io"];
    const ws = new WebSocket(`${api.url.replace(/^http/, "ws")}${path}`, {
      protocols,
      headers: options.headers ?? {},
      tls: { ca: api.ca, cert: api.clientCert, key: api.clientKey },
    } as unknown as string[]);
    const c = new Client(ws, protocols[0] === "v4.base64.channel.k8s.io");
    return new Promise((resolve, reject) => {
      ws.addEventListener("open", () => resolve(c));
      ws.addEventListener("close", (e) => reject(new Error(`handshake refused: close ${e.code}`)));
    });
  }

  send(channel: number, data: Uint8Array): void {
    if (this.base64) this.ws.send(String.fromCharCode(48 + channel) + Buffer.from(data).toString("base64"));
    else this.ws.send(Buffer.concat([Buffer.from([channel]), data]));
  }

  /** Bytes on `channel` after its 2-byte port header. */
  data(channel: number): Buffer {
    return Buffer.concat(this.messages.filter((m) => m.channel === channel).slice(1).map((m) => m.data));
  }

  headers(): Msg[] {
    return this.messages.filter((m, i, all) => all.findIndex((x) => x.channel === m.channel) === i);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close();
  }
}

/** A raw TLS client: the handshake answer as sent, then masked (or not) frames by hand. */
class RawClient implements AsyncDisposable {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  ended = false;
  private constructor(readonly socket: TLSSocket) {
    socket.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on("close", () => {
      this.ended = true;
      this.wake();
    });
    socket.on("error", () => {});
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  static async connect(api: TestApiServer): Promise<RawClient> {
    const u = new URL(api.url);
    const socket = tlsConnect({ host: u.hostname, port: Number(u.port), ca: api.ca, cert: api.clientCert, key: api.clientKey, servername: "localhost" });
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", reject);
    });
    return new RawClient(socket);
  }

  /** Send a request; resolve with the answer's head (and body, read until close, when not 101). */
  async request(path: string, headers: Record<string, string>, method = "GET"): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    const lines = [`${method} ${path} HTTP/1.1`, "Host: localhost", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), "", ""];
    this.socket.write(lines.join("\r\n"));
    await this.until(() => this.buf.indexOf("\r\n\r\n") >= 0 || this.ended);
    const end = this.buf.indexOf("\r\n\r\n");
    const head = this.buf.subarray(0, end).toString("latin1").split("\r\n");
    this.buf = this.buf.subarray(end + 4);
    const status = Number(head[0]!.split(" ")[1]);
    const h = Object.fromEntries(head.slice(1).map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
    if (status === 101) return { status, headers: h, body: "" };
    await this.until(() => this.ended);
    return { status, headers: h, body: this.buf.toString("utf8") };
  }

  static upgradeHeaders(protocol?: string): Record<string, string> {
    return {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Key": randomBytes(16).toString("base64"),
      ...(protocol !== undefined ? { "Sec-WebSocket-Protocol": protocol } : {}),
    };
  }

  /** Write one frame; masked unless `masked` is false. */
  frame(opcode: number, payload: Buffer, { fin = true, masked = true } = {}): void {
    const h = frameHeader(opcode, payload.length, fin);
    if (!masked) {
      this.socket.write(Buffer.concat([h, payload]));
      return;
    }
    h[1] = h[1]! | 0x80;
    const mask = randomBytes(4);
    const body = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]!));
    this.socket.write(Buffer.concat([h, mask, body]));
  }

  /** Server frames received so far (servers do not mask, so parse them by hand). */
  frames(): { opcode: number; payload: Buffer }[] {
    const out: { opcode: number; payload: Buffer }[] = [];
    let off = 0;
    while (off + 2 <= this.buf.length) {
      const b1 = this.buf[off + 1]!;
      expect(b1 & 0x80).toBe(0); // never masked
      let len = b1 & 0x7f;
      let h = 2;
      if (len === 126) [len, h] = [this.buf.readUInt16BE(off + 2), 4];
      else if (len === 127) [len, h] = [Number(this.buf.readBigUInt64BE(off + 2)), 10];
      if (off + h + len > this.buf.length) break;
      out.push({ opcode: this.buf[off]! & 0x0f, payload: this.buf.subarray(off + h, off + h + len) });
      off += h + len;
    }
    return out;
  }

  until(pred: () => boolean, timeoutMs = 5000): Promise<void> {
    return waitFor(() => pred() || undefined, { timeoutMs, what: "the raw client's condition" }).then(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.socket.destroy();
  }
}

async function withServer(options: ApiServerOptions = {}) {
  const api = await startApiServer({ rbac: "local", ...options });
  api.create(pod("web-1"));
  return api;
}

describe("pods", () => {
  test("are a namespaced core/v1 resource with list, watch, get, create and delete, and portforward in discovery", async () => {
    await using api = await startApiServer({ rbac: false });
    const tls = { ca: api.ca, cert: api.clientCert, key: api.clientKey };
    const call = (p: string, init: RequestInit = {}) => fetch(`${api.url}${p}`, { ...init, tls } as RequestInit);
    const created = await call("/api/v1/namespaces/default/pods", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(pod("web-1")) });
    expect(created.status).toBe(201);
    api.create(pod("web-2", "Pending", "other"));
    const list = (await (await call("/api/v1/pods?fieldSelector=status.phase%3DRunning")).json()) as { kind: string; items: { metadata: { name: string } }[] };
    expect(list.kind).toBe("PodList");
    expect(list.items.map((p) => p.metadata.name)).toEqual(["web-1"]);
    const got = (await (await call("/api/v1/namespaces/default/pods/web-1")).json()) as { status: { podIP: string } };
    expect(got.status.podIP).toBe("10.244.1.5");
    const discovery = (await (await call("/api/v1")).json()) as { resources: { name: string; verbs: string[]; kind: string }[] };
    expect(discovery.resources.find((r) => r.name === "pods/portforward")).toEqual({ name: "pods/portforward", singularName: "", namespaced: true, kind: "PodPortForwardOptions", verbs: ["create", "get"] } as never);
    const watch = await call("/api/v1/namespaces/other/pods?watch=1");
    const reader = watch.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(JSON.parse(first.split("\n")[0]!)).toMatchObject({ type: "ADDED", object: { metadata: { name: "web-2" } } });
    await reader.cancel();
    expect((await call("/api/v1/namespaces/default/pods/web-1", { method: "DELETE" })).status).toBe(200);
    expect(api.get("pods", "default", "web-1")).toBeUndefined();
  });
});

describe("pods/portforward over WebSocket (v4.channel.k8s.io)", () => {
  test("the port header comes first on the data and the error channel; an HTTP exchange is relayed to the backend", async () => {
    await using backend = await Backend.start((s) =>
      s.on("data", () => s.end("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")),
    );
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    expect(c.ws.protocol).toBe("v4.channel.k8s.io");
    await waitFor(() => c.messages.length >= 2, { what: "the port headers" });
    expect(c.messages.slice(0, 2)).toEqual([
      { channel: 0, data: Buffer.from([0x90, 0x1f]) },
      { channel: 1, data: Buffer.from([0x90, 0x1f]) },
    ]);
    c.send(0, Buffer.from("GET / HTTP/1.1\r\nHost: web\r\n\r\n"));
    // The backend closes after its answer: the WebSocket is closed normally, after the data.
    expect(await c.closed).toEqual({ code: 1000, reason: "" });
    expect(c.data(0).toString()).toBe("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    expect(c.data(1).length).toBe(0); // no error
    await api.waitForPortForwards(0, { exact: true });
    expect(api.portForwardTotal).toBe(1);
    expect(api.portForwards).toEqual([expect.objectContaining({ namespace: "default", pod: "web-1", ports: [8080], protocol: "v4.channel.k8s.io", open: false })]);
    expect(api.requests.at(-1)).toMatchObject({ method: "GET", path: "/api/v1/namespaces/default/pods/web-1/portforward", status: 101 });
    expect(api.forbidden).toEqual([]);
  });

  test("4 MiB each way through an echo backend arrive intact and in order", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    const payload = randomBytes(4 << 20);
    // One 1 MiB message, then 48 KiB ones.
    c.send(0, payload.subarray(0, 1 << 20));
    for (let off = 1 << 20; off < payload.length; off += 48 * 1024) c.send(0, payload.subarray(off, off + 48 * 1024));
    await waitFor(() => c.data(0).length >= payload.length, { timeoutMs: 20_000, what: "4 MiB echoed" });
    const got = c.data(0);
    expect(got.length).toBe(payload.length);
    expect(createHash("sha256").update(got).digest("hex")).toBe(createHash("sha256").update(payload).digest("hex"));
    // The relay never sends more than 32 KiB of payload per message (Go's io.Copy buffer).
    expect(Math.max(...c.messages.map((m) => m.data.length))).toBeLessThanOrEqual(32 * 1024);
    expect(backend.received).toBe(payload.length);
  }, 30_000);

  test("v4.base64.channel.k8s.io: text frames with an ASCII channel digit and base64 payload", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    const texts: string[] = [];
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"), { protocols: ["v4.base64.channel.k8s.io"] });
    c.ws.addEventListener("message", (e) => texts.push(typeof e.data === "string" ? e.data : "<binary>"));
    expect(c.ws.protocol).toBe("v4.base64.channel.k8s.io");
    c.send(0, Buffer.from("ping\x00\xff", "latin1"));
    await waitFor(() => c.data(0).length >= 6, { what: "the echo" });
    expect(c.data(0)).toEqual(Buffer.from("ping\x00\xff", "latin1"));
    expect(texts.slice(0, 2)).toEqual(["0kB8=", "1kB8="]); // 8080 = 0x1f90, little-endian
  });

  test("no subprotocol is binary with no Sec-WebSocket-Protocol; the first supported one wins; an unknown one is 403", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    {
      await using raw = await RawClient.connect(api);
      const headers = RawClient.upgradeHeaders();
      const res = await raw.request(pfPath("web-1", "?ports=8080"), headers);
      expect(res.status).toBe(101);
      expect(res.headers["sec-websocket-accept"]).toBe(websocketAccept(headers["Sec-WebSocket-Key"]!));
      expect(res.headers["sec-websocket-protocol"]).toBeUndefined();
      await raw.until(() => raw.frames().length >= 2);
      expect(raw.frames().slice(0, 2)).toEqual([
        { opcode: 2, payload: Buffer.from([0, 0x90, 0x1f]) },
        { opcode: 2, payload: Buffer.from([1, 0x90, 0x1f]) },
      ]);
    }
    await using none = await Client.open(api, pfPath("web-1", "?ports=8080"), { protocols: [] });
    expect(none.ws.protocol).toBe("");
    none.send(0, Buffer.from("x"));
    await waitFor(() => none.data(0).length === 1, { what: "the echo" });

    await using picked = await Client.open(api, pfPath("web-1", "?ports=8080"), { protocols: ["v5.channel.k8s.io", "v4.base64.channel.k8s.io", "v4.channel.k8s.io"] });
    expect(picked.ws.protocol).toBe("v4.base64.channel.k8s.io");

    await expect(Client.open(api, pfPath("web-1", "?ports=8080"), { protocols: ["v5.channel.k8s.io"] })).rejects.toThrow("handshake refused");
    await using raw = await RawClient.connect(api);
    const refused = await raw.request(pfPath("web-1", "?ports=8080"), RawClient.upgradeHeaders("v5.channel.k8s.io"));
    // golang.org/x/net/websocket's answer to a handshake its Handshake func refuses: a bare 403.
    expect(refused).toEqual({ status: 403, headers: {}, body: "" });
  });

  test("a port nothing listens on: the kubelet's error on the error channel, then close 1000", async () => {
    await using api = await withServer();
    const uid = (api.get("pods", "default", "web-1") as { metadata: { uid: string } }).metadata.uid;
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    expect(await c.closed).toEqual({ code: 1000, reason: "" });
    const text = c.data(1).toString();
    expect(text).toMatch(
      /^error forwarding port 8080 to pod [0-9a-f]{64}, uid : failed to connect to localhost:8080 inside namespace "[0-9a-f]{64}", IPv4: dial tcp4 127\.0\.0\.1:8080: connect: connection refused IPv6 dial tcp6 \[::1\]:8080: connect: connection refused $/,
    );
    expect(text).not.toContain(uid);
    expect(c.data(0).length).toBe(0);
  });

  test("a registered port whose backend is gone refuses the same way", async () => {
    const backend = await Backend.start();
    const port = backend.port;
    await backend[Symbol.asyncDispose]();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port });
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    expect((await c.closed).code).toBe(1000);
    expect(c.data(1).toString()).toContain("connect: connection refused");
  });

  test("several ports: channels 2i and 2i+1 each; one refusing does not stop the other", async () => {
    await using backend = await Backend.start();
    await using api = await withServer({ portForwardTarget: (_pod, port) => (port === 9090 ? { hostname: "127.0.0.1", port: backend.port } : undefined) });
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080,9090"));
    await waitFor(() => c.data(3).length + c.data(1).length > 0, { what: "the refusal of 8080" });
    expect(c.headers().map((m) => [m.channel, m.data.readUInt16LE(0)])).toEqual([[0, 8080], [1, 8080], [2, 9090], [3, 9090]]);
    expect(c.data(1).toString()).toContain("error forwarding port 8080");
    expect(c.data(3).length).toBe(0);
    c.send(2, Buffer.from("still here"));
    await waitFor(() => c.data(2).length === 10, { what: "the echo on port 9090" });
    expect(c.data(2).toString()).toBe("still here");
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  test("messages on an error channel, out of range or empty are dropped; the data channel still works", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    c.send(1, Buffer.from("to the error channel"));
    c.send(7, Buffer.from("nowhere"));
    c.ws.send(new Uint8Array(0));
    c.send(0, Buffer.from("ok"));
    await waitFor(() => c.data(0).length === 2, { what: "the echo" });
    expect(c.data(0).toString()).toBe("ok");
    expect(backend.received).toBe(2);
  });

  test("the client closing the WebSocket closes the pod connection", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    const c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    c.send(0, Buffer.from("hi"));
    await waitFor(() => c.data(0).length === 2, { what: "the echo" });
    expect(api.portForwardCount).toBe(1);
    c.ws.close(1000);
    expect((await c.closed).code).toBe(1000);
    await waitFor(() => backend.closed === 1, { what: "the backend to see the close" });
    await api.waitForPortForwards(0, { exact: true });
    expect(api.portForwards[0]!.end).toMatchObject({ by: "client", code: 1000 });
  });

  test("the client dropping its TCP connection closes the pod connection", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    const raw = await RawClient.connect(api);
    expect((await raw.request(pfPath("web-1", "?ports=8080"), RawClient.upgradeHeaders("v4.channel.k8s.io"))).status).toBe(101);
    await waitFor(() => backend.sockets.length === 1, { what: "the pod connection" });
    raw.socket.destroy();
    await waitFor(() => backend.closed === 1, { what: "the backend to see the close" });
    await api.waitForPortForwards(0, { exact: true });
  });

  test("dropPortForwards kills open streams without a close frame, and their pod connections", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    const a = await Client.open(api, pfPath("web-1", "?ports=8080"));
    const b = await Client.open(api, pfPath("web-1", "?ports=8080"));
    await waitFor(() => backend.sockets.length === 2, { what: "two pod connections" });
    await api.waitForPortForwards(2, { exact: true });
    expect(api.dropPortForwards()).toBe(2);
    expect((await a.closed).code).toBe(1006);
    expect((await b.closed).code).toBe(1006);
    await waitFor(() => backend.closed === 2, { what: "the backend to see both closes" });
    expect(api.portForwardCount).toBe(0);
    expect(api.portForwardTotal).toBe(2);
    // A new stream works after the "kubelet restart".
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    c.send(0, Buffer.from("again"));
    await waitFor(() => c.data(0).length === 5, { what: "the echo" });
  });

  test("bearer tokens authenticate the handshake like any request", async () => {
    await using backend = await Backend.start();
    await using api = await withServer({ tokens: ["s3cret"], requireClientCert: false });
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"), { headers: { Authorization: "Bearer s3cret" } });
    expect(c.ws.protocol).toBe("v4.channel.k8s.io");
    await using raw = await RawClient.connect(api);
    const res = await raw.request(pfPath("web-1", "?ports=8080"), RawClient.upgradeHeaders("v4.channel.k8s.io"));
    expect(res.status).toBe(401);
    expect(JSON.parse(res.body)).toMatchObject({ kind: "Status", reason: "Unauthorized", code: 401 });
  });
});

describe("lifecycle and controls", () => {
  test("with portForwardLingerMs the client's bytes still reach a pod that closed only its sending side", async () => {
    const got: Buffer[] = [];
    await using backend = await Backend.start((s) => {
      s.end("bye"); // FIN: the pod is done sending, still reading
      s.on("data", (d: Buffer) => got.push(d));
    });
    await using api = await withServer({ portForwardLingerMs: 300 });
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    await waitFor(() => c.data(0).toString() === "bye", { what: "the pod's last bytes" });
    c.send(0, Buffer.from("late"));
    expect((await c.closed).code).toBe(1000);
    expect(Buffer.concat(got).toString()).toBe("late");
  });

  test("plain HTTP works the same; down() kills open streams, up() serves new ones", async () => {
    await using backend = await Backend.start();
    await using api = await withServer({ tls: false });
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    const c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    c.send(0, Buffer.from("x"));
    await waitFor(() => c.data(0).length === 1, { what: "the echo" });
    await api.down();
    expect((await c.closed).code).toBe(1006);
    await waitFor(() => backend.closed === 1, { what: "the pod connection to close" });
    expect(api.portForwardCount).toBe(0);
    await api.up();
    await using again = await Client.open(api, pfPath("web-1", "?ports=8080"));
    again.send(0, Buffer.from("y"));
    await waitFor(() => again.data(0).length === 1, { what: "the echo after up()" });
  });

  test("the controls over HTTP: forwardPod, portForwards, dropPortForwards, setPortForwardWebSockets", async () => {
    await using backend = await Backend.start();
    await using api = await withServer({ controlPort: 0 });
    const control = async (name: string, body: object = {}) => (await fetch(`${api.controlUrl}/_control/${name}`, { method: "POST", body: JSON.stringify(body) })).json() as Promise<Record<string, unknown>>;
    await control("forwardPod", { namespace: "default", name: "web-1", port: 8080, target: { hostname: "127.0.0.1", port: backend.port } });
    const c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    c.send(0, Buffer.from("x"));
    await waitFor(() => c.data(0).length === 1, { what: "the echo" });
    expect(await control("portForwards")).toMatchObject({ open: 1, total: 1, streams: [{ pod: "web-1", ports: [8080], open: true }] });
    expect(await control("dropPortForwards")).toEqual({ ok: true, dropped: 1 });
    expect((await c.closed).code).toBe(1006);
    await control("setPortForwardWebSockets", { on: false });
    await expect(Client.open(api, pfPath("web-1", "?ports=8080"))).rejects.toThrow("handshake refused");
    await control("setPortForwardWebSockets", { on: true });
    await control("unforwardPod", { namespace: "default", name: "web-1" });
    await using refused = await Client.open(api, pfPath("web-1", "?ports=8080"));
    expect((await refused.closed).code).toBe(1000);
    expect(refused.data(1).toString()).toContain("connection refused");
  });
});

describe("RFC 6455 on the server side", () => {
  async function upgraded(api: TestApiServer) {
    const raw = await RawClient.connect(api);
    expect((await raw.request(pfPath("web-1", "?ports=8080"), RawClient.upgradeHeaders("v4.channel.k8s.io"))).status).toBe(101);
    await raw.until(() => raw.frames().length >= 2);
    return raw;
  }

  test("fragmented messages are reassembled, with a ping answered in between", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    await using raw = await upgraded(api);
    raw.frame(2, Buffer.from([0, ...Buffer.from("hel")]), { fin: false });
    raw.frame(9, Buffer.from("are you there"));
    raw.frame(0, Buffer.from("lo"), { fin: false });
    raw.frame(0, Buffer.from(" world"));
    await raw.until(() => raw.frames().some((f) => f.opcode === 2 && f.payload.subarray(1).toString().includes("world")));
    const frames = raw.frames().slice(2);
    expect(frames[0]).toEqual({ opcode: 10, payload: Buffer.from("are you there") });
    expect(Buffer.concat(frames.filter((f) => f.opcode === 2).map((f) => f.payload.subarray(1))).toString()).toBe("hello world");
  });

  test("an unmasked client frame is a protocol error: close 1002, and the pod connection is closed", async () => {
    await using backend = await Backend.start();
    await using api = await withServer();
    api.forwardPod("default", "web-1", 8080, { hostname: "127.0.0.1", port: backend.port });
    await using raw = await upgraded(api);
    await waitFor(() => backend.sockets.length === 1, { what: "the pod connection" });
    raw.frame(2, Buffer.from([0, 1, 2, 3]), { masked: false });
    await raw.until(() => raw.frames().some((f) => f.opcode === 8));
    const close = raw.frames().find((f) => f.opcode === 8)!;
    expect(close.payload.readUInt16BE(0)).toBe(1002);
    await raw.until(() => raw.ended);
    await waitFor(() => backend.closed === 1, { what: "the pod connection to close" });
    expect(backend.received).toBe(0);
  });

  for (const [what, send, code] of [
    ["a continuation without a first fragment", (r: RawClient) => r.frame(0, Buffer.from("x")), 1002],
    ["a fragmented ping", (r: RawClient) => r.frame(9, Buffer.from("x"), { fin: false }), 1002],
    ["reserved bits", (r: RawClient) => r.socket.write(Buffer.from([0xc2, 0x80, 0, 0, 0, 0])), 1002],
    ["an unknown opcode", (r: RawClient) => r.frame(3, Buffer.from("x")), 1002],
    ["a text message that is not UTF-8", (r: RawClient) => r.frame(1, Buffer.from([0x30, 0xff, 0xfe])), 1007],
  ] as const) {
    test(`${what} closes with ${code}`, async () => {
      await using backend = await Backend.start();
      await using api = await withServer({ portForwardTarget: () => ({ hostname: "127.0.0.1", port: backend.port }) });
      await using raw = await upgraded(api);
      send(raw);
      await raw.until(() => raw.frames().some((f) => f.opcode === 8));
      expect(raw.frames().find((f) => f.opcode === 8)!.payload.readUInt16BE(0)).toBe(code);
    });
  }

  test("a message over the limit closes with 1009", async () => {
    await using backend = await Backend.start();
    await using api = await withServer({ portForwardMaxMessageBytes: 1024, portForwardTarget: () => ({ hostname: "127.0.0.1", port: backend.port }) });
    await using raw = await upgraded(api);
    raw.frame(2, Buffer.alloc(600), { fin: false });
    raw.frame(0, Buffer.alloc(600));
    await raw.until(() => raw.frames().some((f) => f.opcode === 8));
    expect(raw.frames().find((f) => f.opcode === 8)!.payload.readUInt16BE(0)).toBe(1009);
  });

  test("the frame parser takes frames split anywhere", () => {
    const frame = Buffer.concat([Buffer.from([0x82, 0x80 | 126, 0x01, 0x00]), Buffer.from([1, 2, 3, 4]), Buffer.alloc(256, 7)]);
    const p = new FrameParser(1 << 20);
    const got = [...frame].flatMap((b) => p.push(Buffer.from([b])));
    expect(got.length).toBe(1);
    expect(got[0]!.payload.length).toBe(256);
    expect(got[0]!.payload[0]).toBe(7 ^ 1);
  });
});

describe("refusals, as kube-apiserver and the kubelet answer them", () => {
  async function refusal(api: TestApiServer, path: string, protocol: string | undefined = "v4.channel.k8s.io") {
    await using raw = await RawClient.connect(api);
    const res = await raw.request(path, RawClient.upgradeHeaders(protocol));
    return { status: res.status, type: res.headers["content-type"], body: res.headers["content-type"] === "application/json" ? JSON.parse(res.body) : res.body };
  }

  test("without the local role: 403 from the filter (get), recorded in forbidden", async () => {
    await using api = await startApiServer(); // the edge deployment's roles
    api.create(pod("web-1"));
    const res = await refusal(api, pfPath("web-1", "?ports=8080"));
    expect(res).toEqual({
      status: 403,
      type: "application/json",
      body: {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message: `pods "web-1" is forbidden: User "kubegate-test" cannot get resource "pods/portforward" in API group "" in the namespace "default"`,
        reason: "Forbidden",
        details: { name: "web-1", kind: "pods" },
        code: 403,
      },
    });
    expect(api.forbidden).toEqual([{ verb: "get", resource: "pods", subresource: "portforward", group: "", namespace: "default", name: "web-1", user: "kubegate-test" }]);
    await expect(Client.open(api, pfPath("web-1", "?ports=8080"))).rejects.toThrow("handshake refused");
  });

  test("get without create: the 1.35 check of create on pods/portforward refuses the WebSocket", async () => {
    await using api = await startApiServer({ rbac: false, authorize: (a) => !(a.subresource === "portforward" && a.verb === "create") });
    api.create(pod("web-1"));
    const res = await refusal(api, pfPath("web-1", "?ports=8080"));
    expect(res.status).toBe(403);
    expect(res.body.message).toBe(`pods "web-1" is forbidden: User "kubegate-test" cannot create resource "pods/portforward" in API group "" in the namespace "default"`);
    expect(res.body.details).toEqual({ name: "web-1", kind: "pods" });
  });

  test("the local role grants get and create on pods/portforward", async () => {
    const seen: string[] = [];
    await using api = await withServer({ authorize: (a) => (seen.push(`${a.verb} ${a.resource}/${a.subresource}`), true) });
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    expect(seen).toEqual(["get pods/portforward", "create pods/portforward"]);
    expect(api.forbidden).toEqual([]);
  });

  test("a missing pod is 404; a pod without a node is 400", async () => {
    await using api = await withServer();
    const missing = await refusal(api, pfPath("nope", "?ports=8080"));
    expect(missing).toMatchObject({ status: 404, body: { reason: "NotFound", message: `pods "nope" not found`, details: { name: "nope", kind: "pods" } } });
    api.create({ ...pod("unscheduled", "Pending"), spec: { containers: [{ name: "web", image: "nginx" }] } });
    const pending = await refusal(api, pfPath("unscheduled", "?ports=8080"));
    expect(pending).toMatchObject({ status: 400, body: { reason: "BadRequest", message: "pod unscheduled does not have a host assigned" } });
  });

  test("a pod that is not running: the kubelet's 500 'pod not found', passed through as text", async () => {
    await using api = await withServer();
    api.create(pod("done", "Succeeded"));
    api.create(pod("starting", "Pending"));
    for (const name of ["done", "starting"]) {
      expect(await refusal(api, pfPath(name, "?ports=8080"))).toEqual({ status: 500, type: "text/plain; charset=utf-8", body: `pod not found ("${name}_default")` });
    }
  });

  test("ports: a bad value is kube-apiserver's 400 Status; none or 0 is the kubelet's plain-text 400", async () => {
    await using api = await withServer();
    expect(await refusal(api, pfPath("web-1", "?ports=http"))).toMatchObject({ status: 400, body: { kind: "Status", reason: "BadRequest", message: `cannot convert to []int32: strconv.ParseUint: parsing "http": invalid syntax` } });
    expect(await refusal(api, pfPath("web-1", "?ports=70000"))).toMatchObject({ status: 400, body: { message: expect.stringContaining("value out of range") } });
    expect(await refusal(api, pfPath("web-1", ""))).toEqual({ status: 400, type: "text/plain; charset=utf-8", body: `query parameter "port" is required` });
    expect(await refusal(api, pfPath("web-1", "?ports=0"))).toEqual({ status: 400, type: "text/plain; charset=utf-8", body: `port "0" must be > 0` });
  });

  test("a GET that is not an upgrade is 400 'Upgrade request required'", async () => {
    await using api = await withServer();
    const res = await fetch(`${api.url}${pfPath("web-1", "?ports=8080")}`, { tls: { ca: api.ca, cert: api.clientCert, key: api.clientKey } } as RequestInit);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ kind: "Status", reason: "BadRequest", message: "Upgrade request required", code: 400 });
  });

  test("a server without WebSocket port-forward (a proxy stripping Upgrade) answers the handshake 400 'Upgrade request required'", async () => {
    await using api = await withServer({ portForwardWebSockets: false });
    expect(await refusal(api, pfPath("web-1", "?ports=8080"))).toMatchObject({ status: 400, body: { reason: "BadRequest", message: "Upgrade request required" } });
    await expect(Client.open(api, pfPath("web-1", "?ports=8080"))).rejects.toThrow("handshake refused");
    api.setPortForwardWebSockets(true);
    await using c = await Client.open(api, pfPath("web-1", "?ports=8080"));
    expect(api.portForwardTotal).toBe(1);
  });

  test("failNext applies to port-forward handshakes too", async () => {
    await using api = await withServer();
    api.failNext(1, 503, { match: "/portforward" });
    expect(await refusal(api, pfPath("web-1", "?ports=8080"))).toMatchObject({ status: 503, body: { reason: "ServiceUnavailable" } });
  });
});
