/**
 * Reach a pod's port through the API server: the pods/portforward subresource over WebSocket, one WebSocket per
 * connection, handed to the proxies as a {@link TcpSocket} so they use it exactly like a TCP connection to the
 * pod. For machines that cannot route to pod IPs (kind, k3d, minikube on a laptop).
 *
 * The wire protocol is Kubernetes' `v4.channel.k8s.io` (kubelet's WebSocket port-forward, also spoken by
 * @kubernetes/client-node's PortForward): every binary message is `[channel][payload]`; for the one port asked,
 * channel 0 carries data and channel 1 errors; the first two bytes on each channel are the port (uint16 little
 * endian), checked and stripped here. A 101 without a subprotocol means the same framing (kubelet's default).
 *
 * The socket facade ({@link TcpSocket}):
 * - `write(chunk)` sends `[0][chunk]`: returns `chunk.length`, 0 while the WebSocket's write queue is full (then
 *   `drain`), -1 once closed or after `end()`;
 * - `pause()`/`resume()` stop and restart reading the API server's socket: real backpressure towards the pod;
 * - `end()`: the channel protocol has no half-close (closing the WebSocket would drop the pod's answer still on
 *   its way), so `end()` is remembered (writes return -1) and nothing is sent; the stream ends when the pod
 *   closes. A client that waits for the server to see EOF before answering waits until the pod closes;
 * - `terminate()` closes the WebSocket now; `close` follows, once;
 * - the server's close (a close frame, or TCP FIN without one) is end of stream: `end`, then `close` without error;
 * - a message on the error channel closes the stream with a {@link PortForwardError}: code ECONNREFUSED when no
 *   byte came from the pod before it (kubelet could not connect to the port), EPORTFORWARD after;
 * - `remoteAddress`/`remotePort`/`localAddress`/`localPort` are those of the connection to the API server (the
 *   pod's address is the caller's to know; this socket never talks to it directly).
 *
 * `connect` resolves once the upgrade is accepted and both port frames arrived, i.e. kubelet started forwarding.
 * Kubelet dials the container port after sending them, so "nothing listens on that port" usually arrives just
 * after: as a rejection (ECONNREFUSED) when it came in the same read, else as `close` with that error before any
 * data. Callers treat both as a refused endpoint. (Whatever the error channel says before `connect` resolves
 * rejects it, EPORTFORWARD when the pod had sent bytes; those bytes are dropped, the caller never had a socket.)
 */
import type { TcpHandlers, TcpSocket, TlsClientOptions } from "../runtime/index.ts";
import type { Credentials, KubeConnection } from "./kubeconfig.ts";
import { connectWebSocket, WebSocketHandshakeError, type WebSocketCloseInfo, type WebSocketConnection, type WebSocketListener } from "./websocket.ts";

/** The channel protocol offered (kubelet's WebSocket port-forward). */
export const PORT_FORWARD_PROTOCOL = "v4.channel.k8s.io";

/** What went wrong, for the proxies to act on. */
export type PortForwardErrorCode =
  /** No 101 and both port frames within `timeoutMs` (TCP, TLS, upgrade and port frames together). */
  | "ETIMEDOUT"
  /** 403: the credentials may not create pods/portforward in the namespace. */
  | "EFORBIDDEN"
  /** 404: no such pod (or namespace). */
  | "ENOTFOUND"
  /** 401 after a retry with refreshed credentials, or the credentials could not be had. */
  | "EUNAUTHORIZED"
  /** No WebSocket upgrade or no v4 channel protocol (an old API server, or a proxy in front of it). */
  | "EUNSUPPORTED"
  /** The error channel spoke before any byte from the pod: kubelet could not connect to the port. */
  | "ECONNREFUSED"
  /** Anything else: the API server unreachable, a 5xx, an error after data, a protocol violation. */
  | "EPORTFORWARD";

/** A port-forward that could not be opened, or that ended with an error. */
export class PortForwardError extends Error {
  override name = "PortForwardError";
  constructor(
    readonly code: PortForwardErrorCode,
    message: string,
    options?: ErrorOptions & { readonly status?: number | undefined },
  ) {
    super(message, options);
    if (options?.status !== undefined) this.status = options.status;
  }
  /** The API server's HTTP status, when it answered the upgrade with one. */
  readonly status?: number;
}

/** A pod port to reach. */
export interface PortForwardTarget {
  readonly namespace: string;
  readonly pod: string;
  readonly port: number;
}

export interface PortForwardConnectOptions<T> {
  readonly handlers: TcpHandlers<T>;
  /** Initial `socket.data`. */
  readonly data: T;
  /** Fail with ETIMEDOUT when not forwarding within this many ms (TCP, TLS, upgrade, port frames); none when 0 or absent. */
  readonly timeoutMs?: number | undefined;
}

export interface PortForwardDialerOptions {
  /** `User-Agent` of the upgrade requests (default `kubegate`). */
  readonly userAgent?: string | undefined;
  /** `write` returns 0 while this many bytes wait for the API server's socket (default 64 KiB). */
  readonly writeHighWaterMark?: number | undefined;
}

const enum Phase {
  Connecting,
  Open,
  Closed,
}

/** Longest error-channel text kept. */
const MAX_ERROR_TEXT = 4096;

function describe(target: PortForwardTarget): string {
  return `pod "${target.namespace}/${target.pod}" port ${target.port}`;
}

/**
 * The port-forward stream as a {@link TcpSocket} (see the module comment), and the listener of its WebSocket.
 * Before `connect` resolves, bytes from the pod are kept and handed over in a later task, after the caller's
 * continuation (as a TCP connect delivers its first data).
 */
class PortForwardStream<T> implements TcpSocket<T>, WebSocketListener {
  data: T;
  remoteAddress = "";
  remotePort = 0;
  localAddress = "";
  localPort = 0;

  readonly #target: PortForwardTarget;
  readonly #handlers: TcpHandlers<T>;
  readonly settle = Promise.withResolvers<PortForwardStream<T>>();
  #ws: WebSocketConnection | undefined;
  #phase = Phase.Connecting;
  /** Channel of the message being received. */
  #channel = -1;
  /** Port bytes still expected on channel 0 and 1, and what arrived of them. */
  #dataPortLeft = 2;
  #dataPort = 0;
  #errorPortLeft = 2;
  #errorPort = 0;
  #errorText = "";
  #podSpoke = false;
  /** Bytes from the pod not handed over yet (before `open` was delivered, or left when paused during that). */
  #pending: Uint8Array[] | undefined;
  /** The WebSocket closed while `#pending` still had bytes, or before `open` was delivered: report it after. */
  #closedAfterPending: WebSocketCloseInfo | undefined;
  /** The error the stream closes with (error channel, protocol). */
  #closeError: PortForwardError | undefined;
  #paused = false;
  #ended = false;
  /** `terminate()` was called: the close that follows is not an end of stream. */
  #terminated = false;
  #readyScheduled = false;

  constructor(target: PortForwardTarget, handlers: TcpHandlers<T>, data: T) {
    this.#target = target;
    this.#handlers = handlers;
    this.data = data;
    this.settle.promise.catch(() => {}); // awaited by connect, unless the upgrade itself fails
  }

  // --- TcpSocket

  write(chunk: Uint8Array): number {
    if (this.#phase !== Phase.Open || this.#ended) return -1;
    if (chunk.length === 0) return 0;
    return this.#ws!.sendBinary(chunk, 0);
  }

  end(): void {
    this.#ended = true;
  }

  terminate(): void {
    if (this.#phase === Phase.Closed) return;
    this.#terminated = true;
    this.#ws?.terminate();
  }

  pause(): void {
    this.#paused = true;
    this.#ws?.pause();
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#pending !== undefined) queueMicrotask(() => this.#deliverPending());
    else this.#ws?.resume();
  }

  setNoDelay(on: boolean): void {
    if (this.#phase !== Phase.Closed) this.#ws?.socket.setNoDelay(on);
  }

  // --- WebSocketListener

  onOpen(ws: WebSocketConnection): void {
    this.#ws = ws;
    const s = ws.socket;
    this.remoteAddress = s.remoteAddress;
    this.remotePort = s.remotePort;
    this.localAddress = s.localAddress;
    this.localPort = s.localPort;
  }

  onMessage(chunk: Uint8Array, start: boolean, end: boolean): void {
    if (start) {
      if (chunk.length === 0) return;
      this.#channel = chunk[0]!;
      chunk = chunk.subarray(1);
    }
    if (this.#channel === 0) {
      if (this.#dataPortLeft !== 0) {
        chunk = this.#takePort(chunk, true);
        if (chunk.length === 0) return;
      }
      this.#podSpoke = true;
      if (this.#phase === Phase.Open && this.#pending === undefined) this.#handlers.data(this, chunk);
      else if (this.#phase !== Phase.Closed) (this.#pending ??= []).push(chunk);
    } else if (this.#channel === 1) {
      if (this.#errorPortLeft !== 0) chunk = this.#takePort(chunk, false);
      if (chunk.length !== 0 && this.#errorText.length < MAX_ERROR_TEXT) {
        this.#errorText += new TextDecoder().decode(chunk).slice(0, MAX_ERROR_TEXT - this.#errorText.length);
      }
      if (end && this.#errorText !== "") this.#onErrorMessage();
    } else {
      this.#fail(new PortForwardError("EPORTFORWARD", `Port-forward to ${describe(this.#target)} failed: the API server sent channel ${this.#channel}; only 0 (data) and 1 (error) exist for one port`));
    }
  }

  onDrain(): void {
    if (this.#phase === Phase.Open) this.#handlers.drain?.(this);
  }

  onClose(info: WebSocketCloseInfo): void {
    if (this.#phase === Phase.Connecting) {
      if (this.#readyScheduled && this.#closeError === undefined && this.#errorText === "" && info.error === undefined) {
        // Forwarding had started and the pod closed at once: open, then hand over its bytes and the end.
        this.#closedAfterPending = info;
        return;
      }
      this.#phase = Phase.Closed;
      this.settle.reject(this.#closeError ?? this.#refusedOr(info));
      return;
    }
    if (this.#phase === Phase.Closed) return;
    if (this.#pending !== undefined) {
      this.#closedAfterPending = info;
      return;
    }
    this.#deliverClose(info);
  }

  /** `connect`'s time ran out before both port frames arrived. */
  onPortFramesLate(error: PortForwardError): void {
    if (this.#phase === Phase.Connecting) this.#fail(error);
  }

  // --- internals

  /** Strip (and check) the port header bytes at the start of channel 0 or 1. */
  #takePort(chunk: Uint8Array, data: boolean): Uint8Array {
    let left = data ? this.#dataPortLeft : this.#errorPortLeft;
    let port = data ? this.#dataPort : this.#errorPort;
    let at = 0;
    while (left !== 0 && at < chunk.length) {
      port |= chunk[at++]! << (8 * (2 - left)); // little endian
      left--;
    }
    if (data) (this.#dataPortLeft = left), (this.#dataPort = port);
    else (this.#errorPortLeft = left), (this.#errorPort = port);
    if (left === 0) {
      if (port !== this.#target.port) {
        this.#fail(new PortForwardError("EPORTFORWARD", `Port-forward to ${describe(this.#target)} failed: the API server announced port ${port} on the ${data ? "data" : "error"} channel`));
        return chunk.subarray(chunk.length);
      }
      if (this.#dataPortLeft === 0 && this.#errorPortLeft === 0 && !this.#readyScheduled) {
        // Both port frames are here: open once the rest of this read is parsed (an error in it rejects instead).
        this.#readyScheduled = true;
        queueMicrotask(() => this.#ready());
      }
    }
    return chunk.subarray(at);
  }

  #ready(): void {
    if (this.#phase !== Phase.Connecting) return;
    this.#phase = Phase.Open;
    try {
      this.#handlers.open?.(this);
    } catch (err) {
      this.#phase = Phase.Closed;
      this.settle.reject(err);
      this.#ws?.terminate();
      return;
    }
    this.settle.resolve(this);
    if (this.#pending !== undefined || this.#closedAfterPending !== undefined) {
      this.#ws!.pause();
      setTimeout(() => this.#deliverPending(), 0);
    }
  }

  /** Hand over kept bytes (stopping if paused), then a close that waited for them, else read again. */
  #deliverPending(): void {
    if (this.#phase !== Phase.Open) return;
    const pending = this.#pending;
    if (pending !== undefined) {
      while (pending.length !== 0 && !this.#paused && this.#phase === Phase.Open) this.#handlers.data(this, pending.shift()!);
      if (pending.length !== 0 || this.#phase !== Phase.Open) return;
      this.#pending = undefined;
    }
    const closed = this.#closedAfterPending;
    if (closed !== undefined) this.#deliverClose(closed);
    else if (!this.#paused) this.#ws!.resume();
  }

  /** The stream closed: `end` (clean) then `close`, or `close` with the error. */
  #deliverClose(info: WebSocketCloseInfo): void {
    this.#phase = Phase.Closed;
    const error = this.#closeError ?? (info.error ? this.#wrap(info.error) : undefined);
    if (error === undefined && !this.#terminated) this.#handlers.end?.(this);
    this.#handlers.close?.(this, error);
  }

  #onErrorMessage(): void {
    const text = this.#errorText.trim();
    this.#errorText = "";
    const error = this.#podSpoke
      ? new PortForwardError("EPORTFORWARD", `Port-forward to ${describe(this.#target)} failed: ${text}`)
      : refused(this.#target, text);
    this.#fail(error);
  }

  /** Fail: reject `connect`, or close the open stream with `error`. */
  #fail(error: PortForwardError): void {
    this.#closeError ??= error;
    if (this.#phase === Phase.Connecting) {
      this.#phase = Phase.Closed;
      this.settle.reject(error);
    }
    this.#ws?.terminate();
  }

  /** Why a connection closed before forwarding started. */
  #refusedOr(info: WebSocketCloseInfo): PortForwardError {
    if (this.#errorText.trim() !== "") return refused(this.#target, this.#errorText.trim());
    const why = info.error ? info.error.message : `the WebSocket closed (${info.code}${info.reason ? ` ${info.reason}` : ""})`;
    return new PortForwardError("EPORTFORWARD", `Port-forward to ${describe(this.#target)} failed before forwarding started: ${why}`, {
      cause: info.error,
    });
  }

  #wrap(err: Error): PortForwardError {
    return new PortForwardError("EPORTFORWARD", `Port-forward to ${describe(this.#target)} failed: ${err.message}`, { cause: err });
  }
}

function refused(target: PortForwardTarget, text: string): PortForwardError {
  return new PortForwardError(
    "ECONNREFUSED",
    `Port-forward to ${describe(target)} failed: the API server could not connect to port ${target.port} in the pod (does the container listen on it?): ${text}`,
  );
}

/** The message of a Kubernetes Status body, else the body's text (short). */
function serverMessage(body: string): string {
  try {
    const status = JSON.parse(body) as { message?: unknown };
    if (typeof status.message === "string" && status.message) return status.message;
  } catch {
    // Not JSON: use the text.
  }
  return body.trim().slice(0, 500);
}

/**
 * Opens port-forward streams to pods through one API server, with the connection's credentials: headers (a
 * bearer token) per request, the client certificate from the kubeconfig or an exec plugin (the plugin's wins).
 * A 401 drops the credentials (`auth.invalidate()`) and retries once with fresh ones.
 *
 * @example
 * const dialer = new PortForwardDialer(await loadKubeConfig());
 * const socket = await dialer.connect({ namespace: "default", pod: "web-0", port: 8080 }, { handlers, data: ctx, timeoutMs: 5000 });
 * socket.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: web\r\n\r\n"));
 */
export class PortForwardDialer {
  readonly #connection: KubeConnection;
  readonly #userAgent: string;
  readonly #writeHighWaterMark: number | undefined;
  /** The TLS options per client certificate in use (the kubeconfig's, or the last one an exec plugin gave). */
  #tls: { readonly cert: string | undefined; readonly key: string | undefined; readonly options: TlsClientOptions } | undefined;

  constructor(connection: KubeConnection, options: PortForwardDialerOptions = {}) {
    this.#connection = connection;
    this.#userAgent = options.userAgent ?? "kubegate";
    this.#writeHighWaterMark = options.writeHighWaterMark;
  }

  /** The upgrade URL for a target. */
  url(target: PortForwardTarget): string {
    const base = this.#connection.server.replace(/\/+$/, "");
    return `${base}/api/v1/namespaces/${encodeURIComponent(target.namespace)}/pods/${encodeURIComponent(target.pod)}/portforward?ports=${target.port}`;
  }

  /**
   * Open a stream to `target`: resolves with a socket once kubelet forwards (the upgrade accepted and both port
   * frames arrived; `handlers.open` has been called). Rejects with a {@link PortForwardError}.
   */
  async connect<T>(target: PortForwardTarget, options: PortForwardConnectOptions<T>): Promise<TcpSocket<T>> {
    const started = performance.now();
    const timeoutMs = options.timeoutMs || undefined;
    const left = (): number | undefined => (timeoutMs === undefined ? undefined : timeoutMs - (performance.now() - started));
    const auth = this.#connection.auth;
    const url = this.url(target);
    for (let attempt = 0; ; attempt++) {
      let creds: Credentials;
      try {
        creds = await auth.credentials();
      } catch (err) {
        throw new PortForwardError("EUNAUTHORIZED", `Cannot port-forward to ${describe(target)}: ${(err as Error).message}`, { cause: err });
      }
      const stream = new PortForwardStream<T>(target, options.handlers, options.data);
      const budget = left();
      if (budget !== undefined && budget <= 0) throw this.#timedOut(target, timeoutMs!);
      try {
        await connectWebSocket({
          url,
          protocols: [PORT_FORWARD_PROTOCOL],
          headers: { "User-Agent": this.#userAgent, ...creds.headers },
          tls: this.#tlsFor(creds),
          timeoutMs: budget,
          listener: stream,
          writeHighWaterMark: this.#writeHighWaterMark,
        });
      } catch (err) {
        if (err instanceof WebSocketHandshakeError && err.status === 401 && attempt === 0 && auth.invalidate()) continue;
        throw this.#explain(err, target, timeoutMs);
      }
      const rest = left();
      let timer: ReturnType<typeof setTimeout> | undefined;
      if (rest !== undefined) {
        timer = setTimeout(() => stream.onPortFramesLate(this.#timedOut(target, timeoutMs!)), Math.max(1, rest));
      }
      try {
        return await stream.settle.promise;
      } finally {
        clearTimeout(timer);
      }
    }
  }

  #tlsFor(creds: Credentials): TlsClientOptions {
    const base = this.#connection.tls;
    const cert = creds.cert ?? base.cert;
    const key = creds.key ?? base.key;
    if (this.#tls === undefined || this.#tls.cert !== cert || this.#tls.key !== key) {
      this.#tls = { cert, key, options: cert === base.cert && key === base.key ? base : { ...base, cert, key } };
    }
    return this.#tls.options;
  }

  #timedOut(target: PortForwardTarget, timeoutMs: number): PortForwardError {
    return new PortForwardError(
      "ETIMEDOUT",
      `Cannot port-forward to ${describe(target)} through ${this.#connection.server}: not forwarding after ${timeoutMs} ms`,
    );
  }

  /** A failed upgrade as a {@link PortForwardError} that says what to do. */
  #explain(err: unknown, target: PortForwardTarget, timeoutMs: number | undefined): PortForwardError {
    const head = `Cannot port-forward to ${describe(target)}`;
    if (!(err instanceof WebSocketHandshakeError)) {
      const e = err as Error & { code?: unknown };
      if (e.code === "ETIMEDOUT") {
        return new PortForwardError("ETIMEDOUT", `${head} through ${this.#connection.server}: not forwarding after ${timeoutMs} ms (${e.message})`, { cause: err });
      }
      return new PortForwardError("EPORTFORWARD", `${head}: cannot reach the API server at ${this.#connection.server}: ${e.message}`, { cause: err });
    }
    const status = err.status;
    const said = serverMessage(err.body);
    const answered = `the API server answered ${status}${err.statusText ? ` ${err.statusText}` : ""}`;
    const server = said ? `. Server said: ${said}` : "";
    const o = this.#connection.origin;
    const who = `the credentials in ${o.source} (context "${o.context}", user "${o.user}", ${this.#connection.auth.description})`;
    const opts = { cause: err, status };
    if (status === 401) {
      return new PortForwardError("EUNAUTHORIZED", `${head}: ${answered}: ${who} were rejected; refresh them${server}`, opts);
    }
    if (status === 403 && err.body.trim() === "") {
      // x/net/websocket's bare answer (kubelet's WebSocket server) when no offered subprotocol is supported;
      // RBAC's 403 always carries a Status.
      return this.#unsupported(head, `${answered} without a body, kubelet's answer to an unsupported subprotocol`, opts);
    }
    if (status === 403) {
      return new PortForwardError(
        "EFORBIDDEN",
        `${head}: ${answered}: ${who} may not create pods/portforward in namespace "${target.namespace}"; ` +
          `grant it with RBAC: a Role in "${target.namespace}" (or a ClusterRole) with the rule ` +
          `{apiGroups: [""], resources: ["pods/portforward"], verbs: ["create", "get"]} bound to that user ` +
          `(port-forward over WebSocket is a GET: API servers authorize it as "create", older ones as "get")${server}`,
        opts,
      );
    }
    if (status === 404) {
      return new PortForwardError("ENOTFOUND", `${head}: ${answered}: the pod does not exist (deleted, or another namespace)${server}`, opts);
    }
    const noUpgrade =
      status === 101 || status === 426 || (status >= 200 && status < 400) || (status === 400 && /upgrade/i.test(said));
    if (noUpgrade) return this.#unsupported(head, `${status === 101 ? err.message : answered}${server}`, opts);
    return new PortForwardError("EPORTFORWARD", `${head}: ${answered}${server}`, opts);
  }

  #unsupported(head: string, why: string, opts: ErrorOptions & { status: number }): PortForwardError {
    return new PortForwardError(
      "EUNSUPPORTED",
      `${head}: the API server (or a proxy in front of it) did not accept a WebSocket port-forward (${why}); ` +
        `kubegate needs the pods/portforward subresource over WebSocket with the ${PORT_FORWARD_PROTOCOL} protocol ` +
        `(any current Kubernetes API server; a proxy in front of it must pass WebSocket upgrades), or --endpoint-access direct`,
      opts,
    );
  }
}
