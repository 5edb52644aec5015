/**
 * An independent emulation of the API server's pods/portforward over WebSocket, for the port-forward client's
 * tests and benchmark: Bun's native WebSocket server (`Bun.serve` with `websocket` handlers, uWebSockets: it
 * rejects unmasked client frames) over TLS with the test certificates, doing what kubelet's
 * pkg/kubelet/cri/streaming/portforward/websocket.go does for one port: answer `v4.channel.k8s.io`, send the
 * port (uint16 little endian) on the data (0) and error (1) channels, dial the pod's port (a real TCP backend on
 * loopback) and relay `[0][payload]` messages both ways with backpressure, write the dial error on channel 1 and
 * close when the backend refuses, close (1000) when the backend closes.
 *
 * The API server around it: bearer tokens (401 with a Status), mTLS (`requireClientCert`), RBAC as a list of
 * namespaces where port-forward is forbidden (403 with the API server's message), unknown pods (404), and
 * failure modes (`mode`): no upgrade (a proxy that drops `Upgrade`: 400 "Upgrade request required"), a 101
 * without a subprotocol, a bare 403 (x/net/websocket's answer to an unsupported subprotocol), never answering,
 * answering but never sending the port frames. Not shared with test/support/apiserver.ts on purpose: the client
 * is checked against a second implementation.
 */
import type { ServerWebSocket } from "bun";
import { PORT_FORWARD_PROTOCOL } from "../../src/kube/portforward.ts";
import type { TestCerts } from "../support/certs.ts";

export type FakeMode = "normal" | "no-upgrade" | "no-protocol" | "bare-403" | "silent" | "no-port-frames";

export interface FakePortForwardOptions {
  readonly certs: TestCerts;
  /** Pods ("namespace/name") and the loopback port their container listens on. */
  readonly pods: Record<string, number>;
  /** When set, `Authorization: Bearer <token>` must carry the token it returns now. */
  readonly token?: (() => string) | undefined;
  /** Refuse TLS without a client certificate signed by the test CA. */
  readonly requireClientCert?: boolean | undefined;
  /** Namespaces where the user may not create pods/portforward. */
  readonly forbiddenNamespaces?: readonly string[] | undefined;
  /** Largest payload of a relayed message (Go's io.Copy buffer: 32 KiB). */
  readonly relayChunk?: number | undefined;
}

/** What the server saw of one upgrade request. */
export interface SeenRequest {
  readonly path: string;
  readonly authorization: string | null;
  readonly protocols: string | null;
  readonly userAgent: string | null;
}

interface Stream {
  ws: ServerWebSocket<Stream> | undefined;
  backend: Bun.Socket<Stream> | undefined;
  readonly port: number;
  /** Client bytes waiting for the backend to connect or drain. */
  toBackend: Uint8Array[];
  /** Backend bytes (as messages) waiting for the WebSocket to drain. */
  toClient: Uint8Array[];
  closed: boolean;
}

export interface FakePortForward extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  mode: FakeMode;
  readonly requests: SeenRequest[];
  /**
   * `backpressured`: times the WebSocket's buffer was full and the backend was paused (the client stopped reading);
   * `clientBytes`/`podBytes`: payload relayed each way; `openStreams`: WebSockets open now.
   */
  readonly stats: { backpressured: number; openStreams: number; clientBytes: number; podBytes: number };
  /** Send a ping on every open stream. */
  pingAll(payload: string): void;
  /** Pongs received, by payload text. */
  readonly pongs: string[];
  /** Close every open stream's WebSocket (1000) without closing the backends first. */
  closeAll(): void;
}

function status(code: number, reason: string, message: string): Response {
  return Response.json({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code }, { status: code });
}

/** Bytes buffered by the WebSocket server above which the backend is paused. */
const BACKPRESSURE_LIMIT = 256 * 1024;

const PATH = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/;

export function startFakePortForward(options: FakePortForwardOptions): FakePortForward {
  const relayChunk = options.relayChunk ?? 32 * 1024;
  const requests: SeenRequest[] = [];
  const stats = { backpressured: 0, openStreams: 0, clientBytes: 0, podBytes: 0 };
  const pongs: string[] = [];
  const streams = new Set<ServerWebSocket<Stream>>();
  let mode: FakeMode = "normal";

  /**
   * Relay backend bytes as `[0][payload]` messages. Bun's `send` drops a message (returns 0) once more than
   * `backpressureLimit` bytes are buffered, so messages wait here while that many are, and the backend is
   * paused until the WebSocket drains.
   */
  const toClient = (s: Stream, chunk: Uint8Array): void => {
    stats.podBytes += chunk.length;
    for (let at = 0; at < chunk.length; at += relayChunk) {
      const part = chunk.subarray(at, at + relayChunk);
      const msg = new Uint8Array(part.length + 1);
      msg.set(part, 1);
      s.toClient.push(msg);
    }
    flushToClient(s);
  };

  const flushToClient = (s: Stream): void => {
    const ws = s.ws!;
    while (s.toClient.length) {
      if (ws.getBufferedAmount() > BACKPRESSURE_LIMIT) break;
      const r = ws.send(s.toClient[0]!);
      if (r === 0) break; // dropped: sent again on drain
      s.toClient.shift();
      if (r === -1) break;
    }
    if (s.toClient.length) {
      stats.backpressured++;
      s.backend?.pause();
    } else s.backend?.resume();
  };

  const flushToBackend = (s: Stream): void => {
    const b = s.backend!;
    while (s.toBackend.length) {
      const head = s.toBackend[0]!;
      const n = b.write(head);
      if (n < head.length) {
        s.toBackend[0] = head.subarray(Math.max(n, 0));
        s.ws?.pause();
        return;
      }
      s.toBackend.shift();
    }
    s.ws?.resume();
  };

  const server = Bun.serve<Stream>({
    hostname: "127.0.0.1",
    port: 0,
    tls: {
      cert: options.certs.serverCert,
      key: options.certs.serverKey,
      ca: options.certs.ca,
      ...(options.requireClientCert ? { requestCert: true, rejectUnauthorized: true } : {}),
    },
    fetch(req, srv) {
      const url = new URL(req.url);
      requests.push({
        path: url.pathname + url.search,
        authorization: req.headers.get("authorization"),
        protocols: req.headers.get("sec-websocket-protocol"),
        userAgent: req.headers.get("user-agent"),
      });
      if (mode === "silent") return new Promise<Response>(() => {});
      if (options.token) {
        if (req.headers.get("authorization") !== `Bearer ${options.token()}`) return status(401, "Unauthorized", "Unauthorized");
      }
      const m = PATH.exec(url.pathname);
      const port = Number(url.searchParams.get("ports"));
      if (!m || !port) return status(404, "NotFound", "the server could not find the requested resource");
      const [ns, pod] = [decodeURIComponent(m[1]!), decodeURIComponent(m[2]!)];
      if (options.forbiddenNamespaces?.includes(ns)) {
        return status(
          403,
          "Forbidden",
          `pods "${pod}" is forbidden: User "kubegate-test" cannot create resource "pods/portforward" in API group "" in the namespace "${ns}"`,
        );
      }
      if (!(`${ns}/${pod}` in options.pods)) return status(404, "NotFound", `pods "${pod}" not found`);
      if (mode === "no-upgrade" || req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return status(400, "BadRequest", "Upgrade request required");
      }
      if (mode === "bare-403") return new Response(null, { status: 403 });
      const offered = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
      if (mode !== "no-protocol" && !offered.includes(PORT_FORWARD_PROTOCOL)) return new Response(null, { status: 403 });
      const data: Stream = { ws: undefined, backend: undefined, port, toBackend: [], toClient: [], closed: false };
      const headers = mode === "no-protocol" ? {} : { "Sec-WebSocket-Protocol": PORT_FORWARD_PROTOCOL };
      const target = options.pods[`${ns}/${pod}`]!;
      (data as { target?: number }).target = target;
      return srv.upgrade(req, { headers, data }) ? undefined : new Response("upgrade failed", { status: 500 });
    },
    websocket: {
      backpressureLimit: BACKPRESSURE_LIMIT,
      maxPayloadLength: 32 * 1024 * 1024,
      open(ws) {
        const s = ws.data;
        s.ws = ws;
        streams.add(ws);
        stats.openStreams++;
        if (mode === "no-port-frames") return;
        const portBytes = [s.port & 0xff, s.port >>> 8];
        ws.send(new Uint8Array([0, ...portBytes]));
        ws.send(new Uint8Array([1, ...portBytes]));
        const target = (s as { target?: number }).target!;
        Bun.connect<Stream>({
          hostname: "127.0.0.1",
          port: target,
          data: s,
          socket: {
            binaryType: "uint8array",
            open(b) {
              if (s.closed) return void b.end();
              s.backend = b;
              flushToBackend(s);
            },
            data(b, chunk) {
              toClient(b.data, chunk);
            },
            drain(b) {
              flushToBackend(b.data);
            },
            close(b) {
              const st = b.data;
              if (!st.closed) {
                st.closed = true;
                st.ws?.close(1000, "");
              }
            },
            error() {},
          },
        }).catch((err: Error) => {
          // kubelet: "error forwarding port <p> to pod <id>, uid : ... dial tcp4 127.0.0.1:<p>: connect: connection refused"
          const text = `error forwarding port ${s.port} to pod 0123abcd, uid : failed to execute portforward in network namespace: failed to connect to localhost:${s.port} inside namespace: dial tcp4 127.0.0.1:${s.port}: connect: connection refused (${err.message})`;
          const msg = new TextEncoder().encode(text);
          const frame = new Uint8Array(msg.length + 1);
          frame[0] = 1;
          frame.set(msg, 1);
          ws.send(frame);
          s.closed = true;
          ws.close(1000, "");
        });
      },
      message(ws, message) {
        const bytes = typeof message === "string" ? new TextEncoder().encode(message) : new Uint8Array(message);
        if (bytes.length === 0 || bytes[0] !== 0) return; // wsstream drops other channels
        const s = ws.data;
        stats.clientBytes += bytes.length - 1;
        s.toBackend.push(bytes.subarray(1));
        if (s.backend) flushToBackend(s);
      },
      drain(ws) {
        flushToClient(ws.data);
      },
      pong(_ws, data) {
        pongs.push(new TextDecoder().decode(data));
      },
      close(ws) {
        streams.delete(ws);
        stats.openStreams--;
        const s = ws.data;
        s.closed = true;
        s.backend?.end();
      },
    },
  });

  return {
    url: `https://127.0.0.1:${server.port}`,
    port: server.port!,
    get mode() {
      return mode;
    },
    set mode(m: FakeMode) {
      mode = m;
    },
    requests,
    stats,
    pongs,
    pingAll(payload) {
      for (const ws of streams) ws.ping(payload);
    },
    closeAll() {
      for (const ws of streams) ws.close(1000, "bye");
    },
    async [Symbol.asyncDispose]() {
      await server.stop(true);
    },
  };
}
