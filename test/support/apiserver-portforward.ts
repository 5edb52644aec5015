/**
 * `pods/{name}/portforward` over WebSocket for the test API server (test/support/apiserver.ts): the server
 * side of RFC 6455 and of the kubelet's channel protocol, relaying each forwarded port to a local backend.
 *
 * A real request goes client -> kube-apiserver -> kubelet/containerd, and the WebSocket is served by the
 * kubelet's streaming code (pkg/kubelet/cri/streaming/portforward/websocket.go over
 * k8s.io/apimachinery/pkg/util/httpstream/wsstream/conn.go and golang.org/x/net/websocket); this module is
 * that last hop:
 *
 * - subprotocols `v4.channel.k8s.io` (binary), `v4.base64.channel.k8s.io` (text frames, channel as an ASCII
 *   digit, payload base64) and none (binary, no `Sec-WebSocket-Protocol` in the answer); the first requested
 *   one the server supports wins; none supported is x/net/websocket's bare `403 Forbidden`;
 * - per requested port i: data channel 2i (read/write) and error channel 2i+1 (write only); right after the
 *   upgrade each channel carries `[port uint16 little-endian]`; then the pod's port is dialled and bytes flow
 *   both ways as `[channel][payload]` messages (at most 32 KiB of payload each, like Go's io.Copy);
 * - a failed dial writes containerd's message on the error channel and closes the WebSocket (close 1000);
 *   the pod side closing closes the WebSocket (close 1000, then TCP close); the client closing the WebSocket
 *   (or its TCP connection) closes the pod connection;
 * - client messages on an error channel, on a channel out of range, empty, or undecodable base64 are dropped
 *   (wsstream logs and continues);
 * - RFC 6455 is enforced on the client's frames (stricter than x/net/websocket, to catch client bugs):
 *   unmasked frames, reserved bits, unknown opcodes, fragmented or oversized control frames and a broken
 *   fragment sequence close with 1002; invalid UTF-8 in text with 1007; a message over the limit (32 MiB,
 *   x/net/websocket's DefaultMaxPayloadBytes) with 1009. Pings are answered with pongs.
 *
 * Backpressure is end to end: a slow client pauses reading from the pod, a slow pod pauses reading from the
 * WebSocket (which, as in wsstream, stalls every channel of that connection).
 *
 * Known differences (deliberate): with no subprotocol requested, x/net/websocket answers an empty
 * `Sec-WebSocket-Protocol:` header, this server none (RFC 6455 clients may reject the empty one); the RBAC
 * `create` check's 403 message reads like the filter's ("User ... cannot create resource ...") where kube-apiserver
 * appends the authorizer's reason, usually empty; SPDY is not served; the kubelet's 4 h idle timeout is not
 * applied; by default the pod connection closes as soon as the pod sends FIN (containerd waits up to 1 s for
 * the other direction: `portForwardLingerMs`).
 */
import { createHash } from "node:crypto";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";

/** The subprotocols the kubelet's port-forward WebSocket accepts ("" = none requested). */
export const PORT_FORWARD_PROTOCOLS = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""] as const;

/** x/net/websocket's DefaultMaxPayloadBytes. */
export const DEFAULT_MAX_MESSAGE_BYTES = 32 << 20;

/** Payload bytes per relayed message from the pod (Go's io.Copy buffer). */
const RELAY_CHUNK = 32 * 1024;

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Where a pod's container port really listens. */
export interface PortTarget {
  readonly hostname: string;
  readonly port: number;
}

/** `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2). */
export function websocketAccept(key: string): string {
  return createHash("sha1").update(key + WS_GUID).digest("base64");
}

/**
 * The subprotocol wsstream picks: the first requested one it supports, "" when none was requested, undefined
 * when none of the requested ones is supported.
 */
export function negotiateProtocol(requested: readonly string[]): string | undefined {
  const offered = requested.length === 0 ? [""] : requested;
  return offered.find((p) => (PORT_FORWARD_PROTOCOLS as readonly string[]).includes(p));
}

/** The values of a `Sec-WebSocket-Protocol` header (comma-separated, possibly repeated). */
export function requestedProtocols(header: string | string[] | undefined): string[] {
  const values = Array.isArray(header) ? header : header === undefined ? [] : [header];
  return values.flatMap((v) => v.split(",")).map((p) => p.trim()).filter((p) => p !== "");
}

/** An answer the kubelet gives as plain text (kube-apiserver passes a failed upgrade's response through). */
export class KubeletError extends Error {
  override name = "KubeletError";
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
  response(): Response {
    return new Response(this.message, { status: this.code, headers: { "Content-Type": "text/plain; charset=utf-8" } });
  }
}

/**
 * The ports of a request as kube-apiserver converts them into PodPortForwardOptions: each `ports` value
 * (comma-separated lists allowed) with ParseUint(v, 10, 16); a failure is a 400 Status, thrown as
 * `badRequest(message)`. None is fine here (the kubelet refuses it: {@link checkKubeletPorts}).
 */
export function parsePorts(values: readonly string[], badRequest: (message: string) => Error): number[] {
  const ports: number[] = [];
  for (const value of values) {
    for (const v of value.split(",")) {
      if (!/^\d+$/.test(v)) throw badRequest(`cannot convert to []int32: strconv.ParseUint: parsing ${JSON.stringify(v)}: invalid syntax`);
      const n = Number(v);
      if (n > 65535) throw badRequest(`cannot convert to []int32: strconv.ParseUint: parsing ${JSON.stringify(v)}: value out of range`);
      ports.push(n);
    }
  }
  return ports;
}

/** The kubelet's own checks of the `port` parameters kube-apiserver passes on (plain-text 400s). */
export function checkKubeletPorts(ports: readonly number[]): void {
  if (ports.length === 0) throw new KubeletError(400, `query parameter "port" is required`);
  const zero = ports.find((p) => p < 1);
  if (zero !== undefined) throw new KubeletError(400, `port "${zero}" must be > 0`);
}

/** The containerd sandbox id that stands for a pod in port-forward errors (64 hex digits, from the uid). */
export const sandboxIdOf = (uid: string): string => createHash("sha256").update(`sandbox:${uid}`).digest("hex");

/** containerd's message for a port nothing listens on (the kubelet prefixes it with "error forwarding port"). */
export function dialErrorText(port: number, sandbox: string, code: string | undefined): string {
  const why = code === "ETIMEDOUT" ? "i/o timeout" : code === "EHOSTUNREACH" ? "connect: no route to host" : "connect: connection refused";
  return `error forwarding port ${port} to pod ${sandbox}, uid : failed to connect to localhost:${port} inside namespace "${sandbox}", IPv4: dial tcp4 127.0.0.1:${port}: ${why} IPv6 dial tcp6 [::1]:${port}: ${why} `;
}

// ---------------------------------------------------------------------------------------------------------
// RFC 6455, server side

/** A violation of RFC 6455 by the client: the connection is closed with `code`. */
export class WebSocketProtocolError extends Error {
  override name = "WebSocketProtocolError";
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** One frame from the client, unmasked. */
export interface Frame {
  readonly fin: boolean;
  readonly opcode: number;
  readonly payload: Buffer;
}

const OP_CONT = 0;
const OP_TEXT = 1;
const OP_BINARY = 2;
const OP_CLOSE = 8;
const OP_PING = 9;
const OP_PONG = 10;

/** Incremental parser of client frames: feed bytes with `push`, get whole frames; throws WebSocketProtocolError. */
export class FrameParser {
  private chunks: Buffer[] = [];
  private length = 0;

  constructor(private readonly maxPayload: number) {}

  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      const frame = this.next();
      if (!frame) return frames;
      frames.push(frame);
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all;
  }

  private take(n: number): Buffer {
    const out = this.peek(n).subarray(0, n);
    const first = this.chunks[0]!;
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.length -= n;
    return out;
  }

  private next(): Frame | undefined {
    if (this.length < 2) return undefined;
    const h = this.peek(2);
    const b0 = h[0]!;
    const b1 = h[1]!;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    if ((b0 & 0x70) !== 0) throw new WebSocketProtocolError(1002, "reserved bits set without a negotiated extension");
    if (![OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG].includes(opcode)) throw new WebSocketProtocolError(1002, `unknown opcode ${opcode}`);
    if (!masked) throw new WebSocketProtocolError(1002, "client frames must be masked");
    let len = b1 & 0x7f;
    let headerLen = 2;
    if (len === 126) headerLen = 4;
    else if (len === 127) headerLen = 10;
    if (opcode >= OP_CLOSE && (!fin || len > 125)) throw new WebSocketProtocolError(1002, "control frames must not be fragmented or longer than 125 bytes");
    if (this.length < headerLen + 4) return undefined;
    const hdr = this.peek(headerLen + 4);
    if (len === 126) len = hdr.readUInt16BE(2);
    else if (len === 127) {
      const big = hdr.readBigUInt64BE(2);
      if (big >> 63n) throw new WebSocketProtocolError(1002, "payload length with the most significant bit set");
      if (big > BigInt(this.maxPayload)) throw new WebSocketProtocolError(1009, `frame of ${big} bytes exceeds ${this.maxPayload}`);
      len = Number(big);
    }
    if (len > this.maxPayload) throw new WebSocketProtocolError(1009, `frame of ${len} bytes exceeds ${this.maxPayload}`);
    if (this.length < headerLen + 4 + len) return undefined;
    const mask = Buffer.from(this.take(headerLen + 4).subarray(headerLen));
    const payload = Buffer.from(this.take(len));
    unmask(payload, mask);
    return { fin, opcode, payload };
  }
}

function unmask(data: Buffer, mask: Buffer): void {
  const n = data.length;
  const m0 = mask[0]!, m1 = mask[1]!, m2 = mask[2]!, m3 = mask[3]!;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    data[i] = data[i]! ^ m0;
    data[i + 1] = data[i + 1]! ^ m1;
    data[i + 2] = data[i + 2]! ^ m2;
    data[i + 3] = data[i + 3]! ^ m3;
  }
  for (; i < n; i++) data[i] = data[i]! ^ mask[i & 3]!;
}

/** A server frame header (servers never mask). */
export function frameHeader(opcode: number, length: number, fin = true): Buffer {
  const b0 = (fin ? 0x80 : 0) | opcode;
  if (length < 126) return Buffer.from([b0, length]);
  if (length < 65536) {
    const h = Buffer.alloc(4);
    h[0] = b0;
    h[1] = 126;
    h.writeUInt16BE(length, 2);
    return h;
  }
  const h = Buffer.alloc(10);
  h[0] = b0;
  h[1] = 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return h;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const validUtf8 = (b: Buffer): boolean => {
  try {
    utf8.decode(b);
    return true;
  } catch {
    return false;
  }
};

const validCloseCode = (c: number): boolean => (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);

/** How a WebSocket ended, seen from the server. */
export interface WebSocketEnd {
  /** `client`: a close frame or the client's TCP close; `server`: we closed; `protocol`: the client broke RFC 6455; `dropped`: destroyed. */
  readonly by: "client" | "server" | "protocol" | "dropped";
  readonly code: number | undefined;
  readonly reason: string;
}

/** The server end of one WebSocket on an upgraded socket. */
export class WebSocketConn {
  private readonly parser: FrameParser;
  private fragments: Buffer[] = [];
  private fragmentOpcode = 0;
  private fragmentBytes = 0;
  private ended = false;
  private readonly drainHandlers = new Set<() => void>();

  constructor(
    readonly socket: Duplex,
    head: Buffer,
    private readonly maxMessageBytes: number,
    private readonly onMessage: (data: Buffer, binary: boolean) => void,
    private readonly onEnd: (end: WebSocketEnd) => void,
  ) {
    this.parser = new FrameParser(maxMessageBytes);
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("end", () => this.finish({ by: "client", code: undefined, reason: "TCP connection closed" }, false));
    socket.on("close", () => this.finish({ by: "client", code: undefined, reason: "TCP connection closed" }, false));
    socket.on("error", () => this.finish({ by: "client", code: undefined, reason: "TCP connection failed" }, false));
    socket.on("drain", () => {
      for (const h of [...this.drainHandlers]) h();
    });
    if (head.length > 0) queueMicrotask(() => this.receive(head));
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Run `fn` once the socket can take more (after `send` returned false). */
  onDrain(fn: () => void): void {
    this.drainHandlers.add(fn);
  }

  /** Stop reading frames (backpressure toward the client) until `resume`. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    if (!this.ended) this.socket.resume();
  }

  /** Send one unfragmented message; false when the socket's buffer is full (wait for `onDrain`). */
  send(data: Buffer, binary: boolean): boolean {
    if (this.ended) return true;
    this.socket.write(frameHeader(binary ? OP_BINARY : OP_TEXT, data.length));
    return this.socket.write(data);
  }

  /** Close handshake from our side (x/net/websocket: close frame, then close the TCP connection). */
  close(code = 1000, reason = ""): void {
    if (this.ended) return;
    this.writeClose(code, reason);
    this.finish({ by: "server", code, reason }, true);
  }

  /** Kill the connection without a close frame (a kubelet restart). */
  drop(): void {
    if (this.ended) return;
    this.finish({ by: "dropped", code: undefined, reason: "dropped" }, false);
    // Bun's upgraded sockets have no working resetAndDestroy; the client sees the connection end without a close frame.
    this.socket.destroy();
  }

  private writeClose(code: number, reason: string): void {
    const r = Buffer.from(reason, "utf8").subarray(0, 123);
    const payload = Buffer.alloc(2 + r.length);
    payload.writeUInt16BE(code, 0);
    r.copy(payload, 2);
    this.socket.write(Buffer.concat([frameHeader(OP_CLOSE, payload.length), payload]));
  }

  private finish(end: WebSocketEnd, endSocket: boolean): void {
    if (this.ended) return;
    this.ended = true;
    this.drainHandlers.clear();
    if (endSocket) this.socket.end();
    else if (end.by === "client" || end.by === "protocol") this.socket.destroy();
    this.onEnd(end);
  }

  private receive(chunk: Buffer): void {
    if (this.ended) return;
    try {
      for (const f of this.parser.push(chunk)) {
        this.frame(f);
        if (this.ended) return;
      }
    } catch (e) {
      if (!(e instanceof WebSocketProtocolError)) throw e;
      this.protocolError(e.code, e.message);
    }
  }

  private protocolError(code: number, reason: string): void {
    if (this.ended) return;
    this.writeClose(code, reason);
    this.ended = true;
    this.drainHandlers.clear();
    this.socket.end();
    this.onEnd({ by: "protocol", code, reason });
  }

  private frame(f: Frame): void {
    switch (f.opcode) {
      case OP_PING:
        this.socket.write(Buffer.concat([frameHeader(OP_PONG, f.payload.length), f.payload]));
        return;
      case OP_PONG:
        return;
      case OP_CLOSE: {
        if (f.payload.length === 1) throw new WebSocketProtocolError(1002, "close frame with a 1-byte payload");
        const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : undefined;
        if (code !== undefined && !validCloseCode(code)) throw new WebSocketProtocolError(1002, `invalid close code ${code}`);
        const reasonBytes = f.payload.subarray(2);
        if (!validUtf8(reasonBytes)) throw new WebSocketProtocolError(1007, "close reason is not UTF-8");
        // x/net/websocket answers any close with 1000 and closes the connection.
        this.writeClose(1000, "");
        this.finish({ by: "client", code, reason: reasonBytes.toString("utf8") }, true);
        return;
      }
      case OP_CONT:
        if (this.fragments.length === 0) throw new WebSocketProtocolError(1002, "continuation frame without a message to continue");
        break;
      default:
        if (this.fragments.length > 0) throw new WebSocketProtocolError(1002, "new data frame inside a fragmented message");
        this.fragmentOpcode = f.opcode;
        this.fragmentBytes = 0;
    }
    this.fragmentBytes += f.payload.length;
    if (this.fragmentBytes > this.maxMessageBytes) throw new WebSocketProtocolError(1009, `message exceeds ${this.maxMessageBytes} bytes`);
    if (!f.fin) {
      this.fragments.push(f.payload);
      return;
    }
    const data = this.fragments.length === 0 ? f.payload : Buffer.concat([...this.fragments, f.payload]);
    this.fragments = [];
    const binary = this.fragmentOpcode === OP_BINARY;
    if (!binary && !validUtf8(data)) throw new WebSocketProtocolError(1007, "text message is not UTF-8");
    this.onMessage(data, binary);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Port forwarding

/** One port-forward WebSocket, for assertions. */
export interface PortForwardRecord {
  readonly namespace: string;
  readonly pod: string;
  readonly ports: readonly number[];
  /** The negotiated subprotocol ("" when none). */
  readonly protocol: string;
  readonly at: number;
  /** Whether it is still open. */
  readonly open: boolean;
  /** How it ended (undefined while open). */
  readonly end: WebSocketEnd | undefined;
}

/** What a stream needs to know about its pod and ports. */
export interface PortForwardRequest {
  readonly namespace: string;
  readonly pod: string;
  readonly sandbox: string;
  readonly ports: readonly { readonly port: number; readonly target: PortTarget | undefined }[];
  readonly protocol: string;
}

interface PortState {
  readonly port: number;
  readonly target: PortTarget | undefined;
  socket: Socket | undefined;
  connected: boolean;
  done: boolean;
  pending: Buffer[];
  paused: boolean;
  linger: ReturnType<typeof setTimeout> | undefined;
}

/** One client connection: a WebSocket relaying its ports to the pod's. */
export class PortForwardStream {
  private readonly ports: PortState[];
  private readonly binary: boolean;
  private ws!: WebSocketConn;
  readonly at = Date.now();
  end: WebSocketEnd | undefined;

  constructor(
    readonly request: PortForwardRequest,
    private readonly lingerMs: number,
    private readonly onClosed: (s: PortForwardStream) => void,
  ) {
    this.binary = request.protocol !== "v4.base64.channel.k8s.io";
    this.ports = request.ports.map((p) => ({ port: p.port, target: p.target, socket: undefined, connected: false, done: false, pending: [], paused: false, linger: undefined }));
  }

  get open(): boolean {
    return this.end === undefined;
  }

  /** Take over the upgraded socket (after the 101 was written): port headers, then dial every port. */
  start(socket: Duplex, head: Buffer, maxMessageBytes: number): void {
    this.ws = new WebSocketConn(socket, head, maxMessageBytes, (data, binary) => this.fromClient(data, binary), (end) => this.wsEnded(end));
    this.ws.onDrain(() => {
      for (const p of this.ports) {
        if (p.paused && !p.done) {
          p.paused = false;
          p.socket?.resume();
        }
      }
    });
    for (const [i, p] of this.ports.entries()) {
      const header = Buffer.alloc(2);
      header.writeUInt16LE(p.port, 0);
      this.write(2 * i, header);
      this.write(2 * i + 1, header);
    }
    for (const [i, p] of this.ports.entries()) this.dial(i, p);
  }

  /** Kill the WebSocket and the pod connections abruptly. */
  drop(): void {
    this.ws.drop();
  }

  private write(channel: number, data: Buffer): boolean {
    if (this.binary) return this.ws.send(Buffer.concat([Buffer.from([channel]), data]), true);
    return this.ws.send(Buffer.from(String.fromCharCode(48 + channel) + data.toString("base64"), "latin1"), false);
  }

  private dial(i: number, p: PortState): void {
    if (!p.target) {
      queueMicrotask(() => this.failPort(i, p, "ECONNREFUSED"));
      return;
    }
    const socket = connect({ host: p.target.hostname, port: p.target.port, allowHalfOpen: true });
    p.socket = socket;
    socket.setNoDelay(true);
    socket.on("connect", () => {
      p.connected = true;
      if (p.done) return;
      for (const b of p.pending) socket.write(b);
      p.pending = [];
    });
    socket.on("data", (chunk: Buffer) => {
      if (p.done || this.ws.closed) return;
      let ok = true;
      for (let off = 0; off < chunk.length; off += RELAY_CHUNK) ok = this.write(2 * i, chunk.subarray(off, off + RELAY_CHUNK)) && ok;
      if (!ok) {
        p.paused = true;
        socket.pause();
      }
    });
    socket.on("drain", () => this.ws.resume());
    socket.on("end", () => {
      // The pod closed its side. containerd waits up to 1 s for the other direction, then closes.
      if (this.lingerMs > 0) p.linger = setTimeout(() => this.portDone(i, p), this.lingerMs);
      else this.portDone(i, p);
    });
    socket.on("error", (e: NodeJS.ErrnoException) => {
      if (!p.connected) this.failPort(i, p, e.code);
      else this.portDone(i, p, `error forwarding port ${p.port} to pod ${this.request.sandbox}, uid : ${e.code === "ECONNRESET" ? "read: connection reset by peer" : e.message}`);
    });
    socket.on("close", () => this.portDone(i, p));
  }

  private failPort(i: number, p: PortState, code: string | undefined): void {
    this.portDone(i, p, dialErrorText(p.port, this.request.sandbox, code));
  }

  private portDone(i: number, p: PortState, error?: string): void {
    if (p.done) return;
    p.done = true;
    p.pending = [];
    if (p.linger) clearTimeout(p.linger);
    if (error !== undefined && !this.ws.closed) this.write(2 * i + 1, Buffer.from(error, "utf8"));
    p.socket?.destroy();
    if (this.ports.every((x) => x.done)) this.ws.close(1000);
  }

  private fromClient(data: Buffer, binary: boolean): void {
    if (data.length === 0) return;
    let channel = data[0]!;
    let payload = data.subarray(1);
    if (!this.binary) {
      channel -= 48;
      const text = payload.toString("latin1");
      if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return; // base64.StdEncoding.Decode fails: dropped
      payload = Buffer.from(text, "base64");
    }
    void binary; // x/net/websocket's Message.Receive takes text and binary frames alike
    if (channel < 0 || channel >= 2 * this.ports.length || channel % 2 === 1) return; // not a readable channel
    const p = this.ports[channel / 2]!;
    if (p.done || payload.length === 0) return;
    if (!p.connected) {
      p.pending.push(Buffer.from(payload));
      return;
    }
    if (!p.socket!.write(payload)) this.ws.pause();
  }

  private wsEnded(end: WebSocketEnd): void {
    this.end = end;
    for (const p of this.ports) {
      if (p.done) continue;
      p.done = true;
      if (p.linger) clearTimeout(p.linger);
      p.socket?.destroy();
    }
    this.onClosed(this);
  }
}

/** Registered pod ports, open streams and their history. */
export class PortForwards {
  private readonly targets = new Map<string, PortTarget>();
  readonly streams = new Set<PortForwardStream>();
  readonly history: PortForwardStream[] = [];
  private waiters: (() => void)[] = [];

  /** Route `namespace/pod:containerPort` to a local listener (undefined removes the route). */
  forward(namespace: string, pod: string, containerPort: number, target: PortTarget | undefined): void {
    const key = `${namespace}/${pod}:${containerPort}`;
    if (target) this.targets.set(key, { hostname: target.hostname, port: target.port });
    else this.targets.delete(key);
  }

  /** Remove every route of a pod. */
  unforwardPod(namespace: string, pod: string): void {
    for (const k of [...this.targets.keys()]) if (k.startsWith(`${namespace}/${pod}:`)) this.targets.delete(k);
  }

  target(namespace: string, pod: string, containerPort: number): PortTarget | undefined {
    return this.targets.get(`${namespace}/${pod}:${containerPort}`);
  }

  open(request: PortForwardRequest, lingerMs: number): PortForwardStream {
    const s = new PortForwardStream(request, lingerMs, (x) => {
      this.streams.delete(x);
      this.notify();
    });
    this.streams.add(s);
    this.history.push(s);
    this.notify();
    return s;
  }

  get openCount(): number {
    return this.streams.size;
  }

  get total(): number {
    return this.history.length;
  }

  records(): PortForwardRecord[] {
    return this.history.map((s) => ({
      namespace: s.request.namespace,
      pod: s.request.pod,
      ports: s.request.ports.map((p) => p.port),
      protocol: s.request.protocol,
      at: s.at,
      open: s.open,
      end: s.end,
    }));
  }

  dropAll(): number {
    const open = [...this.streams];
    for (const s of open) s.drop();
    return open.length;
  }

  /** Resolve when `pred` holds (checked now and whenever a stream opens or closes). */
  until(pred: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
    if (pred()) return Promise.resolve();
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const check = (): void => {
      if (!pred()) return;
      clearTimeout(timer);
      this.waiters = this.waiters.filter((x) => x !== check);
      resolve();
    };
    const timer = setTimeout(() => {
      this.waiters = this.waiters.filter((x) => x !== check);
      reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${what()}`));
    }, timeoutMs);
    this.waiters.push(check);
    return promise;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}
