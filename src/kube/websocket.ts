/**
 * A small RFC 6455 WebSocket client over the runtime's TCP/TLS socket (`rt.connectTcp`), for the API server's
 * streaming subresources (pods/portforward).
 *
 * Why not the runtime's `WebSocket`: Deno's takes no client certificate (kubeconfig mTLS), and the browser API
 * has neither read backpressure nor a write drain event, so a fast pod could fill memory. Here:
 *
 * - reading streams: a data message's payload is handed over in the chunks it arrives in (subarrays of the
 *   socket's reads, no reassembly and no copy), so memory does not grow with message size; `pause()` stops
 *   the underlying socket (backpressure reaches the server), bytes already read wait in order;
 * - writing is bounded: `sendBinary` frames and masks the payload into one new buffer and writes it; while more
 *   than `writeHighWaterMark` bytes wait for the socket it refuses (returns 0) and calls `onDrain` once the
 *   socket took them, the contract of {@link TcpSocket.write};
 * - the protocol is checked: server frames must be unmasked, without reserved bits, control frames short and
 *   whole, fragments in order, messages at most `maxMessageBytes` (close 1002 or 1009 otherwise); pings are
 *   answered; a close frame is echoed and the connection closed (the server closes TCP first; after
 *   `closeTimeoutMs` it is cut). No extensions are offered (no permessage-deflate), text is not UTF-8-checked
 *   (delivered as bytes like binary).
 */
import { createHash } from "node:crypto";
import { rt, type TcpHandlers, type TcpSocket, type TlsClientOptions } from "../runtime/index.ts";

/** What a {@link WebSocketConnection} tells its owner. Called as methods on the listener object. */
export interface WebSocketListener {
  /** The upgrade was accepted; called before any `onMessage` (they may follow within the same read). */
  onOpen?(ws: WebSocketConnection): void;
  /**
   * Payload bytes of a data message, in the chunks they arrived in: `start` on a message's first chunk,
   * `end` on its last (one chunk may be both). A chunk is empty only for an empty message. The callee owns the
   * chunk. `binary` is false for a text message (its bytes are UTF-8, not checked).
   */
  onMessage(chunk: Uint8Array, start: boolean, end: boolean, binary: boolean): void;
  /** `sendBinary` returned 0 and the queue has been written since: send again. */
  onDrain?(): void;
  /** The server sent a close frame (before `onClose`; nothing more arrives). */
  onCloseFrame?(code: number, reason: string): void;
  /** The connection is closed (once, also after {@link WebSocketConnection.terminate}). */
  onClose(info: WebSocketCloseInfo): void;
}

/** How a connection ended. */
export interface WebSocketCloseInfo {
  /** The close frame's status: 1005 when it had none, 1006 when there was no close frame. */
  readonly code: number;
  readonly reason: string;
  /** A close frame arrived and the connection then closed without error. */
  readonly clean: boolean;
  /** A socket or protocol error (protocol errors have `code` "EPROTO"). */
  readonly error?: Error | undefined;
}

export interface WebSocketConnectOptions {
  /** `wss:` or `https:` (TLS), `ws:` or `http:` (plain). */
  readonly url: string | URL;
  /** Subprotocols to offer (`Sec-WebSocket-Protocol`), most wanted first. */
  readonly protocols?: readonly string[] | undefined;
  /** Extra request headers (`Authorization`, `User-Agent`). */
  readonly headers?: Readonly<Record<string, string>> | undefined;
  /** TLS for `wss:`/`https:` (CA, client certificate). */
  readonly tls?: TlsClientOptions | undefined;
  /** Fail with `code` ETIMEDOUT when TCP, TLS and the upgrade take longer (default: no limit). */
  readonly timeoutMs?: number | undefined;
  readonly listener: WebSocketListener;
  /** Largest data message accepted (default 64 MiB; messages stream, so this bounds time, not memory). */
  readonly maxMessageBytes?: number | undefined;
  /** `sendBinary` refuses while at least this many bytes wait for the socket (default 64 KiB). */
  readonly writeHighWaterMark?: number | undefined;
  /** How long to wait for the server to close TCP after the close handshake (default 2000 ms). */
  readonly closeTimeoutMs?: number | undefined;
}

/** The server did not switch protocols: its answer, for the caller to explain. */
export class WebSocketHandshakeError extends Error {
  override name = "WebSocketHandshakeError";
  readonly code = "EHANDSHAKE";
  constructor(
    message: string,
    /** The HTTP status (101 when it switched but the upgrade is unusable, e.g. a wrong accept key). */
    readonly status: number,
    readonly statusText: string,
    /** Response headers, names in lower case. */
    readonly headers: ReadonlyMap<string, string>,
    /** The response body (at most 64 KiB), as text. */
    readonly body: string,
  ) {
    super(message);
  }
}

/** RFC 6455 section 1.3: appended to the key before hashing. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEAD_BYTES = 16 * 1024;
const MAX_ERROR_BODY_BYTES = 64 * 1024;
const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;
const CLOSE_NORMAL = 1000;
const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_TOO_BIG = 1009;
const EMPTY = new Uint8Array(0);

/** `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)). node:crypto is synchronous (Web Crypto is not). */
export function acceptKey(key: string): string {
  return createHash("sha1").update(key + ACCEPT_GUID).digest("base64");
}

/** A fresh `Sec-WebSocket-Key`: 16 random bytes, base64. */
function newKey(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
}

/** Masking keys, 4 bytes each, drawn from one pool of random words refilled by `getRandomValues`. */
const maskPool = new Uint32Array(1024);
let maskNext = maskPool.length;

function nextMask(): number {
  if (maskNext === maskPool.length) {
    crypto.getRandomValues(maskPool);
    maskNext = 0;
  }
  return maskPool[maskNext++]!;
}

/** Scratch for writing a mask word as bytes in the platform's order (the order the XOR below reads words in). */
const maskBytes = new Uint8Array(4);
const maskWord = new Uint32Array(maskBytes.buffer);

/**
 * One client frame (FIN set), masked: header, masking key, then `prefix` (a byte, when >= 0) and `payload`,
 * XORed with the key. The payload starts at a 4-byte-aligned offset of a fresh buffer, so the XOR runs over
 * 32-bit words.
 */
export function maskedFrame(opcode: number, payload: Uint8Array, prefix = -1): Uint8Array {
  const length = payload.length + (prefix >= 0 ? 1 : 0);
  const header = length < 126 ? 6 : length < 0x10000 ? 8 : 14;
  const pad = (4 - (header & 3)) & 3;
  const buffer = new ArrayBuffer(pad + header + length);
  const frame = new Uint8Array(buffer, pad);
  frame[0] = 0x80 | opcode;
  if (length < 126) frame[1] = 0x80 | length;
  else if (length < 0x10000) {
    frame[1] = 0x80 | 126;
    frame[2] = length >>> 8;
    frame[3] = length & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    // Bytes 2..5 (the high half) stay 0: no frame here reaches 4 GiB.
    frame[6] = length >>> 24;
    frame[7] = (length >>> 16) & 0xff;
    frame[8] = (length >>> 8) & 0xff;
    frame[9] = length & 0xff;
  }
  const mask = nextMask();
  maskWord[0] = mask;
  frame.set(maskBytes, header - 4);
  let at = header;
  if (prefix >= 0) frame[at++] = prefix;
  frame.set(payload, at);
  const words = new Uint32Array(buffer, pad + header, length >>> 2);
  for (let i = 0; i < words.length; i++) words[i]! ^= mask;
  for (let i = length & ~3; i < length; i++) frame[header + i]! ^= maskBytes[i & 3]!;
  return frame;
}

const enum State {
  Connecting,
  Open,
  Closed,
}

/** A WebSocket protocol violation by the server (closes with 1002 or 1009). */
function protocolError(message: string): Error {
  const err = new Error(`WebSocket protocol error: ${message}`);
  (err as Error & { code: string }).code = "EPROTO";
  return err;
}

function timeoutError(message: string): Error {
  const err = new Error(message);
  (err as Error & { code: string }).code = "ETIMEDOUT";
  return err;
}

/** Strip the brackets of an IPv6 literal (`[::1]` -> `::1`), as connect wants it. */
function bareHost(hostname: string): string {
  return hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
}

/** Reject CR and LF in request head values (header injection). */
function headerValue(name: string, value: string): string {
  if (/[\r\n]/.test(value) || /[\r\n:]/.test(name)) throw new Error(`Invalid WebSocket request header "${name}"`);
  return value;
}

/** The parsed head of the upgrade response. */
interface ResponseHead {
  readonly status: number;
  readonly statusText: string;
  readonly headers: Map<string, string>;
}

function parseHead(text: string): ResponseHead | undefined {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? "");
  if (!m) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const had = headers.get(name);
    headers.set(name, had === undefined ? value : `${had}, ${value}`);
  }
  return { status: Number(m[1]), statusText: m[2] ?? "", headers };
}

/** Index of `\r\n\r\n` in `bytes`, or -1. */
function headEnd(bytes: Uint8Array): number {
  for (let i = 3; i < bytes.length; i++) {
    if (bytes[i] === 10 && bytes[i - 1] === 13 && bytes[i - 2] === 10 && bytes[i - 3] === 13) return i + 1;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The body of a chunked response when complete (`undefined` while more is needed). Tolerates a cut body at close. */
function dechunk(raw: Uint8Array, final: boolean): Uint8Array | undefined {
  const parts: Uint8Array[] = [];
  let at = 0;
  for (;;) {
    let eol = -1;
    for (let i = at; i + 1 < raw.length; i++) if (raw[i] === 13 && raw[i + 1] === 10) (eol = i), (i = raw.length);
    if (eol < 0) break;
    const size = parseInt(new TextDecoder().decode(raw.subarray(at, eol)).split(";")[0]!.trim(), 16);
    if (!Number.isFinite(size)) break;
    if (size === 0) return parts.reduce(concat, EMPTY);
    if (eol + 2 + size > raw.length) {
      if (final) parts.push(raw.subarray(eol + 2));
      break;
    }
    parts.push(raw.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return final ? parts.reduce(concat, EMPTY) : undefined;
}

/**
 * An open WebSocket connection (from {@link connectWebSocket}). `sendBinary` is the data path; everything the
 * server sends goes to the {@link WebSocketListener}.
 */
export class WebSocketConnection {
  /** The subprotocol the server chose; "" when it chose none. */
  protocol = "";
  #state = State.Connecting;
  #socket: TcpSocket<WebSocketConnection> | undefined;
  readonly #listener: WebSocketListener;
  readonly #maxMessageBytes: number;
  readonly #highWater: number;
  readonly #closeTimeoutMs: number;

  // Handshake (until the 101 is taken apart).
  #handshake:
    | {
        readonly key: string;
        readonly protocols: readonly string[];
        readonly settle: PromiseWithResolvers<WebSocketConnection>;
        received: Uint8Array;
        head: ResponseHead | undefined;
        bodyStart: number;
      }
    | undefined;

  // Reading: the frame being received.
  /** A header split across reads, gathered here (allocated when that happens). */
  #partialHeader: Uint8Array | undefined;
  #partialHeaderLength = 0;
  /** Payload bytes of the current frame still to come; -1 between frames. */
  #remaining = -1;
  #frameOpcode = 0;
  #frameFin = false;
  /** The opcode of the data message in progress (0: none). */
  #messageOpcode = 0;
  #messageBytes = 0;
  #messageStarted = false;
  /** A control frame's payload, gathered. */
  #control: Uint8Array | undefined;
  #controlLength = 0;
  #paused = false;
  /** Reads not parsed yet (while paused), oldest first. */
  #held: Uint8Array[] | undefined;
  #pumpScheduled = false;

  // Writing.
  /** Bytes the socket has not taken yet, oldest first. */
  #queue: Uint8Array[] | undefined;
  #queued = 0;
  #wantDrain = false;
  #closeSent = false;
  #closeFrame: { code: number; reason: string } | undefined;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #error: Error | undefined;

  private constructor(listener: WebSocketListener, options: WebSocketConnectOptions) {
    this.#listener = listener;
    this.#maxMessageBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    this.#highWater = options.writeHighWaterMark ?? 64 * 1024;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 2000;
  }

  /** The underlying socket's handlers, one object for all connections (`socket.data` is the connection). */
  static readonly #socketHandlers: TcpHandlers<WebSocketConnection> = {
    open: (s) => s.data.#onSocketOpen(s),
    data: (s, chunk) => s.data.#onSocketData(chunk),
    drain: (s) => s.data.#flush(),
    end: (s) => s.data.#onSocketEnd(),
    close: (s, err) => s.data.#finish(err),
  };

  /** See {@link connectWebSocket}. */
  static async connect(options: WebSocketConnectOptions): Promise<WebSocketConnection> {
    const url = typeof options.url === "string" ? new URL(options.url) : options.url;
    const secure = url.protocol === "wss:" || url.protocol === "https:";
    if (!secure && url.protocol !== "ws:" && url.protocol !== "http:") {
      throw new Error(`Cannot open a WebSocket to "${url.href}": the scheme must be wss, ws, https or http`);
    }
    const protocols = options.protocols ?? [];
    const key = newKey();
    const head = [
      `GET ${url.pathname || "/"}${url.search} HTTP/1.1`,
      `Host: ${url.host}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${key}`,
      "Sec-WebSocket-Version: 13",
      ...(protocols.length ? [`Sec-WebSocket-Protocol: ${headerValue("Sec-WebSocket-Protocol", protocols.join(", "))}`] : []),
      ...Object.entries(options.headers ?? {}).map(([k, v]) => `${k}: ${headerValue(k, v)}`),
      "",
      "",
    ].join("\r\n");
    const ws = new WebSocketConnection(options.listener, options);
    const settle = Promise.withResolvers<WebSocketConnection>();
    ws.#handshake = { key, protocols, settle, received: EMPTY, head: undefined, bodyStart: 0 };
    const hostname = bareHost(url.hostname);
    const port = Number(url.port) || (secure ? 443 : 80);
    const started = performance.now();
    const socket = await rt.connectTcp<WebSocketConnection>({
      hostname,
      port,
      handlers: WebSocketConnection.#socketHandlers,
      data: ws,
      timeoutMs: options.timeoutMs,
      ...(secure ? { tls: options.tls ?? {} } : {}),
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (options.timeoutMs) {
      const left = Math.max(1, options.timeoutMs - (performance.now() - started));
      timer = setTimeout(() => {
        settle.reject(timeoutError(`WebSocket upgrade at ${url.host} timed out after ${options.timeoutMs} ms`));
        socket.terminate();
      }, left);
    }
    ws.#write(new TextEncoder().encode(head));
    try {
      return await settle.promise;
    } finally {
      clearTimeout(timer);
    }
  }

  /** True until the connection is closed. */
  get open(): boolean {
    return this.#state === State.Open;
  }

  /** The underlying TCP/TLS socket (for its addresses and `setNoDelay`). */
  get socket(): TcpSocket<WebSocketConnection> {
    return this.#socket!;
  }

  /**
   * Send one binary message: `prefix` (one byte, when given: the channel of Kubernetes channel protocols)
   * then `payload`. Returns `payload.length` when queued, 0 when the write queue is full (`onDrain` follows),
   * -1 when closed or closing. The payload is copied (masked); the caller may reuse it.
   */
  sendBinary(payload: Uint8Array, prefix?: number): number {
    if (this.#state !== State.Open || this.#closeSent) return -1;
    if (payload.length === 0 && prefix === undefined) return 0;
    if (this.#queued >= this.#highWater) {
      this.#wantDrain = true;
      return 0;
    }
    this.#write(maskedFrame(OP_BINARY, payload, prefix ?? -1));
    return payload.length;
  }

  /** Send a ping (its pong is not reported). */
  ping(payload: Uint8Array = EMPTY): void {
    if (this.#state === State.Open && !this.#closeSent) this.#write(maskedFrame(OP_PING, payload.subarray(0, 125)));
  }

  /** Start the close handshake: send a close frame; the connection closes when the server answers (or after `closeTimeoutMs`). */
  close(code = CLOSE_NORMAL, reason = ""): void {
    if (this.#state !== State.Open || this.#closeSent) return;
    this.#sendClose(code, reason);
    this.#armCloseTimer();
  }

  /** Close the socket now (no close handshake); `onClose` follows. */
  terminate(): void {
    if (this.#state === State.Closed) return;
    if (this.#socket) this.#socket.terminate();
    else this.#finish(undefined);
  }

  /** Stop reading (the socket stops too: backpressure towards the server). */
  pause(): void {
    if (this.#paused || this.#state === State.Closed) return;
    this.#paused = true;
    this.#socket?.pause();
  }

  /** Read again; bytes read before the pause are delivered first (in a microtask, not within this call). */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#state === State.Closed) return;
    this.#socket?.resume();
    this.#schedulePump();
  }

  #onSocketOpen(s: TcpSocket<WebSocketConnection>): void {
    this.#socket = s;
  }

  #onSocketData(chunk: Uint8Array): void {
    if (this.#state === State.Connecting) return this.#onHandshakeData(chunk);
    if (this.#state === State.Closed) return;
    if (this.#paused || this.#held !== undefined) {
      (this.#held ??= []).push(chunk);
      if (!this.#paused) this.#schedulePump();
      return;
    }
    this.#parse(chunk, 0);
  }

  #schedulePump(): void {
    if (this.#pumpScheduled || this.#held === undefined) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      let held = this.#held;
      while (held !== undefined && held.length !== 0 && !this.#paused && this.#state === State.Open) {
        const chunk = held.shift()!;
        if (held.length === 0) this.#held = held = undefined;
        this.#parse(chunk, 0);
        held = this.#held;
      }
    });
  }

  #onHandshakeData(chunk: Uint8Array): void {
    const h = this.#handshake!;
    h.received = concat(h.received, chunk);
    if (h.head === undefined) {
      const end = headEnd(h.received);
      if (end < 0) {
        if (h.received.length > MAX_HEAD_BYTES) this.#failHandshake(protocolError(`the upgrade response head is longer than ${MAX_HEAD_BYTES} bytes`));
        return;
      }
      const head = parseHead(new TextDecoder("latin1").decode(h.received.subarray(0, end - 4)));
      if (head === undefined) return this.#failHandshake(protocolError("the upgrade response is not HTTP/1.1"));
      h.head = head;
      h.bodyStart = end;
      if (head.status === 101) return this.#upgrade(h.received.subarray(end));
    }
    this.#maybeRejected(false);
  }

  /** A non-101 answer: wait for its body (Content-Length, chunked, or until close), then fail with it. */
  #maybeRejected(closed: boolean): void {
    const h = this.#handshake!;
    const head = h.head!;
    const raw = h.received.subarray(h.bodyStart);
    const length = Number(head.headers.get("content-length") ?? NaN);
    let body: Uint8Array | undefined;
    if (/chunked/i.test(head.headers.get("transfer-encoding") ?? "")) body = dechunk(raw, closed || raw.length >= MAX_ERROR_BODY_BYTES);
    else if (Number.isFinite(length)) body = raw.length >= length || closed ? raw.subarray(0, length) : undefined;
    else if (closed || raw.length >= MAX_ERROR_BODY_BYTES) body = raw;
    if (body === undefined && raw.length < MAX_ERROR_BODY_BYTES) return;
    const text = new TextDecoder().decode((body ?? raw).subarray(0, MAX_ERROR_BODY_BYTES));
    this.#failHandshake(
      new WebSocketHandshakeError(
        `WebSocket upgrade refused: the server answered ${head.status}${head.statusText ? ` ${head.statusText}` : ""}`,
        head.status,
        head.statusText,
        head.headers,
        text,
      ),
    );
  }

  /** Check the 101 (RFC 6455 section 4.2.2), then parse what followed it as frames. */
  #upgrade(rest: Uint8Array): void {
    const h = this.#handshake!;
    const head = h.head!;
    const fail = (why: string): void =>
      this.#failHandshake(new WebSocketHandshakeError(`WebSocket upgrade unusable: ${why}`, 101, head.statusText, head.headers, ""));
    if ((head.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") return fail(`the server switched to "${head.headers.get("upgrade") ?? ""}", not to websocket`);
    if (!/(^|,)\s*upgrade\s*(,|$)/i.test(head.headers.get("connection") ?? "")) return fail("the Connection header does not say upgrade");
    if (head.headers.get("sec-websocket-accept") !== acceptKey(h.key)) return fail("Sec-WebSocket-Accept does not match the key");
    if (head.headers.has("sec-websocket-extensions")) return fail(`the server chose extensions that were not offered: ${head.headers.get("sec-websocket-extensions")}`);
    const protocol = head.headers.get("sec-websocket-protocol") ?? "";
    if (protocol !== "" && !h.protocols.includes(protocol)) return fail(`the server chose the subprotocol "${protocol}", which was not offered`);
    this.protocol = protocol;
    this.#handshake = undefined;
    this.#state = State.Open;
    this.#opened = true;
    try {
      this.#listener.onOpen?.(this);
    } catch (err) {
      h.settle.reject(err);
      this.terminate();
      return;
    }
    h.settle.resolve(this);
    if (rest.length !== 0) this.#onSocketData(rest);
  }

  #failHandshake(err: Error): void {
    const h = this.#handshake;
    if (h === undefined) return;
    this.#handshake = undefined;
    this.#state = State.Closed;
    h.settle.reject(err);
    this.#socket?.terminate();
  }

  /** Parse frames from `chunk` at `at`; stops (keeping the rest) when paused or closed. */
  #parse(chunk: Uint8Array, at: number): void {
    const length = chunk.length;
    while (at < length) {
      if (this.#paused) {
        (this.#held ??= []).unshift(chunk.subarray(at));
        return;
      }
      if (this.#remaining < 0) {
        at = this.#parseHeader(chunk, at);
        if (at < 0) return;
        continue;
      }
      const n = Math.min(this.#remaining, length - at);
      const part = chunk.subarray(at, at + n);
      at += n;
      this.#remaining -= n;
      if (this.#frameOpcode >= OP_CLOSE) {
        this.#control!.set(part, this.#controlLength);
        this.#controlLength += n;
        if (this.#remaining === 0) {
          this.#remaining = -1;
          this.#onControl();
        }
      } else {
        const end = this.#remaining === 0 && this.#frameFin;
        if (this.#remaining === 0) this.#remaining = -1;
        this.#deliver(part, end);
      }
      if (this.#state !== State.Open) return;
    }
  }

  /** Hand payload bytes of the current data message to the listener. */
  #deliver(part: Uint8Array, end: boolean): void {
    const start = !this.#messageStarted;
    this.#messageStarted = !end;
    const binary = this.#messageOpcode === OP_BINARY;
    if (end) {
      this.#messageOpcode = 0;
      this.#messageBytes = 0;
    }
    this.#listener.onMessage(part, start, end, binary);
  }

  /** Parse one frame header at `at` (gathering it when split across reads); returns where the payload starts, or -1. */
  #parseHeader(chunk: Uint8Array, at: number): number {
    let src = chunk;
    let from = at;
    if (this.#partialHeaderLength !== 0 || chunk.length - at < 2 || chunk.length - at < headerSize(chunk[at + 1]!)) {
      const buf = (this.#partialHeader ??= new Uint8Array(14));
      let filled = this.#partialHeaderLength;
      while (at < chunk.length && (filled < 2 || filled < headerSize(buf[1]!))) buf[filled++] = chunk[at++]!;
      if (filled < 2 || filled < headerSize(buf[1]!)) {
        this.#partialHeaderLength = filled;
        return -1;
      }
      this.#partialHeaderLength = 0;
      src = buf;
      from = 0;
    } else {
      at += headerSize(chunk[at + 1]!);
    }
    const b0 = src[from]!;
    const b1 = src[from + 1]!;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    if ((b0 & 0x70) !== 0) return this.#protocolFailure(protocolError("a frame has reserved bits set (no extension was negotiated)"));
    if ((b1 & 0x80) !== 0) return this.#protocolFailure(protocolError("the server masked a frame (server frames must not be masked)"));
    let size = b1 & 0x7f;
    if (size === 126) size = (src[from + 2]! << 8) | src[from + 3]!;
    else if (size === 127) {
      const high = ((src[from + 2]! << 24) | (src[from + 3]! << 16) | (src[from + 4]! << 8) | src[from + 5]!) >>> 0;
      const low = ((src[from + 6]! << 24) | (src[from + 7]! << 16) | (src[from + 8]! << 8) | src[from + 9]!) >>> 0;
      size = high * 0x1_0000_0000 + low;
    }
    if (opcode >= OP_CLOSE) {
      if (opcode !== OP_CLOSE && opcode !== OP_PING && opcode !== OP_PONG) return this.#protocolFailure(protocolError(`unknown opcode ${opcode}`));
      if (!fin || size > 125) return this.#protocolFailure(protocolError("a control frame is fragmented or longer than 125 bytes"));
      this.#control = new Uint8Array(size);
      this.#controlLength = 0;
    } else {
      if (opcode === OP_CONTINUATION) {
        if (this.#messageOpcode === 0) return this.#protocolFailure(protocolError("a continuation frame without a message to continue"));
      } else if (opcode === OP_TEXT || opcode === OP_BINARY) {
        if (this.#messageOpcode !== 0) return this.#protocolFailure(protocolError("a new message began before the last one ended"));
        this.#messageOpcode = opcode;
      } else {
        return this.#protocolFailure(protocolError(`unknown opcode ${opcode}`));
      }
      this.#messageBytes += size;
      if (this.#messageBytes > this.#maxMessageBytes) {
        return this.#protocolFailure(protocolError(`a message is longer than ${this.#maxMessageBytes} bytes`), CLOSE_TOO_BIG);
      }
    }
    this.#frameOpcode = opcode;
    this.#frameFin = fin;
    this.#remaining = size;
    if (size === 0) {
      this.#remaining = -1;
      if (opcode >= OP_CLOSE) this.#onControl();
      else if (fin) this.#deliver(EMPTY, true);
      if (this.#state !== State.Open) return -1;
    }
    return at;
  }

  #onControl(): void {
    const payload = this.#control!.subarray(0, this.#controlLength);
    this.#control = undefined;
    if (this.#frameOpcode === OP_PING) {
      if (!this.#closeSent) this.#write(maskedFrame(OP_PONG, payload));
      return;
    }
    if (this.#frameOpcode === OP_PONG) return;
    // Close.
    if (payload.length === 1) {
      this.#protocolFailure(protocolError("a close frame with a 1-byte payload"));
      return;
    }
    const code = payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
    const reason = payload.length > 2 ? new TextDecoder().decode(payload.subarray(2)) : "";
    this.#closeFrame = { code, reason };
    this.#held = undefined;
    if (!this.#closeSent) {
      this.#closeSent = true;
      this.#write(payload.length >= 2 ? maskedFrame(OP_CLOSE, payload.subarray(0, 2)) : maskedFrame(OP_CLOSE, EMPTY));
    }
    this.#state = State.Closed; // nothing more is read; #finish reports it when the socket closes
    this.#listener.onCloseFrame?.(code, reason);
    this.#endWhenFlushed();
    this.#armCloseTimer();
  }

  /** Fail the connection for a protocol error: close frame, then cut. Returns -1 (for the parser). */
  #protocolFailure(err: Error, code = CLOSE_PROTOCOL_ERROR): number {
    this.#error ??= err;
    if (!this.#closeSent) this.#sendClose(code, "");
    this.#state = State.Closed;
    this.#held = undefined;
    this.#endWhenFlushed();
    this.#armCloseTimer();
    return -1;
  }

  #sendClose(code: number, reason: string): void {
    this.#closeSent = true;
    const text = new TextEncoder().encode(reason).subarray(0, 123);
    const payload = new Uint8Array(2 + text.length);
    payload[0] = code >>> 8;
    payload[1] = code & 0xff;
    payload.set(text, 2);
    this.#write(maskedFrame(OP_CLOSE, payload));
  }

  #endPending = false;

  /** Half-close TCP once the queue is written (after a close frame: the server closes its side then). */
  #endWhenFlushed(): void {
    if (this.#queue === undefined || this.#queue.length === 0) this.#socket?.end();
    else this.#endPending = true;
  }

  #armCloseTimer(): void {
    if (this.#closeTimer !== undefined) return;
    this.#closeTimer = setTimeout(() => this.#socket?.terminate(), this.#closeTimeoutMs);
  }

  /** Write bytes in order: straight to the socket when nothing waits, else behind what waits. */
  #write(bytes: Uint8Array): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    if (this.#queue === undefined || this.#queue.length === 0) {
      const n = socket.write(bytes);
      if (n === bytes.length || n < 0) return;
      bytes = bytes.subarray(n);
    }
    (this.#queue ??= []).push(bytes);
    this.#queued += bytes.length;
  }

  /** The socket can take more: write what waits; then `onDrain` if a send was refused. */
  #flush(): void {
    const queue = this.#queue;
    const socket = this.#socket!;
    if (queue !== undefined) {
      while (queue.length !== 0) {
        const head = queue[0]!;
        const n = socket.write(head);
        if (n < 0) return;
        this.#queued -= n;
        if (n < head.length) {
          queue[0] = head.subarray(n);
          return;
        }
        queue.shift();
      }
    }
    if (this.#endPending) {
      this.#endPending = false;
      socket.end();
    }
    if (this.#wantDrain && this.#state === State.Open && !this.#closeSent) {
      this.#wantDrain = false;
      this.#listener.onDrain?.();
    }
  }

  /** The server closed its side of TCP. After a close frame the close follows; without one the stream was cut. */
  #onSocketEnd(): void {
    if (this.#handshake?.head !== undefined) return this.#maybeRejected(true);
    if (this.#closeFrame === undefined) {
      // No close frame: RFC 6455 calls this abnormal (1006). Nothing more can be said on a closed stream; close.
      this.#state = State.Closed;
      this.#held = undefined;
    }
    this.#socket?.terminate();
  }

  /** The socket closed: settle a pending upgrade, or report the close to the listener (once). */
  #finish(err: Error | undefined): void {
    if (this.#reported) return;
    this.#reported = true;
    this.#state = State.Closed;
    clearTimeout(this.#closeTimer);
    this.#closeTimer = undefined;
    this.#queue = undefined;
    this.#queued = 0;
    this.#held = undefined;
    const h = this.#handshake;
    if (h !== undefined) {
      if (h.head !== undefined && h.head.status !== 101) this.#maybeRejected(true);
      this.#handshake = undefined;
      const why = err ?? Object.assign(new Error("WebSocket upgrade failed: the server closed the connection before answering"), { code: "ECONNRESET" });
      h.settle.reject(why); // no-op when settled above
      return;
    }
    if (!this.#opened) return; // the upgrade failed: the caller got the error
    const frame = this.#closeFrame;
    const error = this.#error ?? err;
    this.#listener.onClose({
      code: frame?.code ?? 1006,
      reason: frame?.reason ?? "",
      clean: frame !== undefined && error === undefined,
      ...(error !== undefined ? { error } : {}),
    });
  }

  #reported = false;
  #opened = false;
}

/** Bytes of a frame header given its second byte (server frames: no masking key). */
function headerSize(b1: number): number {
  const len = b1 & 0x7f;
  return 2 + (len === 126 ? 2 : len === 127 ? 8 : 0) + ((b1 & 0x80) !== 0 ? 4 : 0);
}

/**
 * Open a WebSocket: connect (TLS for wss/https), send the upgrade request, check the 101. Resolves with the open
 * connection; rejects with a {@link WebSocketHandshakeError} when the server answers otherwise (its status and
 * body attached), an error with `code` ETIMEDOUT after `timeoutMs`, or the connect error.
 *
 * @example
 * const ws = await connectWebSocket({
 *   url: "wss://127.0.0.1:6443/api/v1/namespaces/default/pods/web-0/portforward?ports=8080",
 *   protocols: ["v4.channel.k8s.io"],
 *   headers: { authorization: `Bearer ${token}` },
 *   tls: { ca },
 *   listener: { onMessage: (chunk) => console.log(chunk), onClose: () => {} },
 * });
 */
export function connectWebSocket(options: WebSocketConnectOptions): Promise<WebSocketConnection> {
  return WebSocketConnection.connect(options);
}
