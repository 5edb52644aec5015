/**
 * Bun's TCP and UDP behind the runtime port. Bun's sockets already have the shape of
 * {@link TcpSocket}, so they are passed to handlers unwrapped: the data path pays nothing here.
 *
 * Memory at 10k listeners: no closure per listener. Bun's handler object depends only on the port handlers'
 * `data`/`drain`/`end`/`close` functions (shared by every TCP proxy listener, so one object for all of them);
 * `open` reaches the listener through the socket's initial `data`. `data`, `drain`, `end` and `close` are
 * called as plain functions (no `this`).
 *
 * Outbound TLS (`connectTcp` with `tls`, for the API server's port-forward) has handler objects of its own and
 * resolves after the handshake (see {@link TlsDial}); plain connects do not pass through any of it.
 */
import type {
  TcpConnectOptions,
  TcpHandlers,
  TcpListener,
  TcpListenOptions,
  TcpSocket,
  TlsClientOptions,
  UdpBindOptions,
  UdpSocket,
} from "../types.ts";
import { withConnectTimeout } from "../connect-timeout.ts";
import { createSocket } from "node:dgram";
import { asEmfile, atFileLimit } from "../file-limit.ts";
import { fileLimit, openFiles } from "./files.ts";

type BunHandlers = Bun.SocketHandler<unknown, "buffer">;

/**
 * The port's `end()`: send FIN and keep reading. Bun 1.4's own `end()` closes both directions even
 * with `allowHalfOpen`, so each socket's `end` is replaced by `shutdown()` when it opens. Bun
 * sockets are unbuffered (`write` returns what the kernel took), so nothing is pending at that point.
 */
function halfClose(this: Bun.Socket<unknown>): void {
  this.shutdown();
}

/** Bun's own `setNoDelay` (one method shared by all TCP sockets), captured from the first socket. */
let nativeSetNoDelay: ((this: Bun.Socket<unknown>, on: boolean) => boolean) | undefined;
/** Sockets switched back to Nagle (`setNoDelay(false)`); every other socket has TCP_NODELAY set. */
const nagle = new WeakSet<object>();

/**
 * The port's `setNoDelay`, without a syscall when the socket is already in the asked state: Bun (uSockets)
 * sets TCP_NODELAY itself on every accepted and connected socket, so the proxies' `setNoDelay(true)`
 * would be a second, redundant setsockopt per socket.
 */
function setNoDelay(this: Bun.Socket<unknown>, on: boolean): void {
  if (on !== nagle.has(this)) return;
  if (on) nagle.delete(this);
  else nagle.add(this);
  nativeSetNoDelay!.call(this, on);
}

/** The error Bun reported for a socket before its `close` (folded into the port's `close`); one map for all sockets. */
const errors = new WeakMap<object, Error>();

function recordError(s: object, err: Error): void {
  errors.set(s, err);
}

/** Replace Bun's `end` and `setNoDelay` on a socket that just opened (see {@link halfClose}, {@link setNoDelay}). */
function patch(s: object): void {
  const o = s as { end: unknown; setNoDelay: typeof setNoDelay };
  nativeSetNoDelay ??= o.setNoDelay as unknown as typeof nativeSetNoDelay;
  o.end = halfClose;
  o.setNoDelay = setNoDelay;
}

/**
 * Stands in for an absent `end` or `close` handler. `end` is always set because Bun closes a socket whose
 * peer sent FIN when it has no `end` callback, even with `allowHalfOpen`; the port keeps it writable.
 */
function ignore(): void {}

type CloseHandler = NonNullable<TcpHandlers<unknown>["close"]>;
type BunClose = NonNullable<BunHandlers["close"]>;
/** Bun `close` callbacks per port `close` handler (the error of `error`/`connectError` folds into it). */
const closers = new WeakMap<CloseHandler, BunClose>();

function closer(close: CloseHandler | undefined): BunClose {
  if (close === undefined) return ignore;
  let c = closers.get(close);
  if (c === undefined) {
    c = (s: Bun.Socket<unknown>, err?: Error) => close(s as unknown as TcpSocket, err ?? errors.get(s));
    closers.set(close, c);
  }
  return c;
}

/** Bun handler objects per port handler object used to connect: one per proxy kind, not per connection. */
const connectAdapted = new WeakMap<TcpHandlers<never>, BunHandlers>();

/**
 * Adapt port handlers to Bun's handler object for `connectTcp` (same callback names; `error` folds into
 * `close`), once per handler object: `connectTcp` is called per proxied connection with the same handlers.
 * Handlers are called as plain functions (no `this`), as the listener adapter does.
 */
function connectHandlers<T>(h: TcpHandlers<T>): BunHandlers {
  const key = h as unknown as TcpHandlers<never>;
  let b = connectAdapted.get(key);
  if (b === undefined) {
    b = {
      binaryType: "buffer",
      open: (s) => {
        patch(s);
        h.open?.(s as unknown as TcpSocket<T>);
      },
      data: h.data as unknown as BunHandlers["data"],
      drain: h.drain as BunHandlers["drain"],
      end: (h.end ?? ignore) as BunHandlers["end"],
      error: recordError,
      close: closer(h.close as CloseHandler | undefined),
      connectError: recordError,
    } as BunHandlers;
    connectAdapted.set(key, b);
  }
  return b;
}

/**
 * A Bun listener behind the port. It is the listener's Bun `data`, which Bun copies into every accepted
 * socket, so one module-level `open` ({@link listenerOpen}) finds the listener's current handlers: no
 * closure per listener here.
 */
class BunTcpListener<T> implements TcpListener<T> {
  server!: Bun.TCPSocketListener<unknown>;
  port = 0;

  constructor(public handlers: TcpHandlers<T>) {}

  get hostname(): string {
    return this.server.hostname;
  }

  reload(handlers: TcpHandlers<T>): void {
    this.server.reload({ socket: listenerHandlers(handlers) as Bun.SocketHandler<unknown> });
    this.handlers = handlers;
  }

  stop(closeActive = false): void {
    this.server.stop(closeActive);
  }
}

/** `open` of every accepted socket: the socket's `data` is its listener until the port's `open` sets its own. */
function listenerOpen(s: Bun.Socket<unknown>): void {
  const listener = s.data as BunTcpListener<unknown>;
  s.data = undefined;
  patch(s);
  listener.handlers.open?.(s as unknown as TcpSocket);
}

/**
 * The last Bun handler object built for listeners, by its `close` callback: listeners of one proxy kind share
 * it, while listeners with a `close` of their own (a source-range guard, an HTTP proxy) get their own.
 */
const listenerAdapted = new WeakMap<BunClose, BunHandlers>();

/**
 * Bun's handler object for a listener running `h`. It depends only on `h`'s `data`/`drain`/`end`/`close`
 * (never on `open`, see {@link listenerOpen}), so listeners whose handlers share those functions (every TCP
 * proxy's) share one object.
 */
function listenerHandlers<T>(h: TcpHandlers<T>): BunHandlers {
  const close = closer(h.close as CloseHandler | undefined);
  const end = h.end ?? ignore;
  const cached = listenerAdapted.get(close);
  if (cached !== undefined && cached.data === h.data && cached.drain === h.drain && cached.end === end) return cached;
  const b = {
    binaryType: "buffer",
    open: listenerOpen,
    data: h.data,
    drain: h.drain,
    end,
    error: recordError,
    close,
  } as BunHandlers;
  listenerAdapted.set(close, b);
  return b;
}

/**
 * A bind error with its cause named: Bun 1.4 gives EADDRINUSE and EADDRNOTAVAIL a `code`, but a listen that
 * failed for want of a file descriptor only as "Failed to listen at <host>". Such an error is EMFILE when the
 * process holds (nearly) every descriptor its limit allows at that moment.
 */
function bindError(err: unknown): unknown {
  if ((err as { code?: unknown } | null)?.code !== undefined) return err;
  return atFileLimit(openFiles(), fileLimit()) ? asEmfile(err) : err;
}

export function listenTcp<T>(options: TcpListenOptions<T>): TcpListener<T> {
  const listener = new BunTcpListener(options.handlers);
  let server: Bun.TCPSocketListener<unknown>;
  try {
    server = Bun.listen<unknown>({
      hostname: options.hostname,
      port: options.port,
      allowHalfOpen: true,
      ...(options.reusePort ? { reusePort: true } : {}),
      data: listener,
      socket: listenerHandlers(options.handlers) as Bun.SocketHandler<unknown>,
    } as Bun.TCPSocketListenOptions<unknown>);
  } catch (err) {
    throw bindError(err);
  }
  listener.server = server;
  listener.port = server.port;
  return listener;
}

export async function connectTcp<T>(options: TcpConnectOptions<T>): Promise<TcpSocket<T>> {
  if (options.tls !== undefined) return connectTls(options, options.tls);
  const connecting = Bun.connect<T>({
    hostname: options.hostname,
    port: options.port,
    allowHalfOpen: true,
    data: options.data,
    socket: connectHandlers(options.handlers) as Bun.SocketHandler<T>,
  } as Bun.TCPSocketConnectOptions<T>);
  return (await withConnectTimeout(connecting, options, (s) => s.terminate())) as unknown as TcpSocket<T>;
}

/**
 * A TLS connection between `Bun.connect` and its handshake: the socket's `data` until then (the caller's `data`
 * after). Bun resolves `Bun.connect` and calls `open` as soon as TCP is connected, and drops writes made before
 * the handshake (`write` returns 0); the port promises a socket that is ready, so it waits for `handshake`.
 */
class TlsDial<T> {
  readonly settled = Promise.withResolvers<void>();
  constructor(
    readonly data: T,
    readonly handlers: TcpHandlers<T>,
    readonly rejectUnauthorized: boolean,
    readonly target: string,
  ) {}
}

/** Bun handler objects per port handler object used for TLS connects (see {@link connectHandlers}). */
const tlsAdapted = new WeakMap<TcpHandlers<never>, BunHandlers>();

function tlsHandshake(s: Bun.Socket<unknown>, success: boolean, authorizationError: Error | null): void {
  const dial = s.data;
  if (!(dial instanceof TlsDial)) return; // a renegotiation: nothing to do
  if (!success && dial.rejectUnauthorized) {
    const why = authorizationError?.message ?? "the server certificate was not verified";
    const err = new Error(`TLS handshake with ${dial.target} failed: ${why}`, { cause: authorizationError ?? undefined });
    const code = (authorizationError as { code?: unknown } | null)?.code;
    if (typeof code === "string") (err as Error & { code: string }).code = code;
    dial.settled.reject(err);
    s.terminate();
    return;
  }
  s.data = dial.data;
  try {
    dial.handlers.open?.(s as unknown as TcpSocket);
  } finally {
    dial.settled.resolve();
  }
}

/**
 * Port handlers adapted for TLS connects (once per handler object): `open` waits for {@link tlsHandshake};
 * `drain`, `end` and `close` before the handshake belong to the dial, not to the caller (who has no socket yet).
 */
function tlsConnectHandlers<T>(h: TcpHandlers<T>): BunHandlers {
  const key = h as unknown as TcpHandlers<never>;
  let b = tlsAdapted.get(key);
  if (b === undefined) {
    const close = closer(h.close as CloseHandler | undefined);
    b = {
      binaryType: "buffer",
      open: patch,
      handshake: tlsHandshake,
      data: h.data as unknown as BunHandlers["data"],
      drain: (s) => {
        if (!(s.data instanceof TlsDial)) h.drain?.(s as unknown as TcpSocket<T>);
      },
      end: (s) => {
        if (!(s.data instanceof TlsDial)) h.end?.(s as unknown as TcpSocket<T>);
      },
      error: recordError,
      close: (s, err) => {
        const dial = s.data;
        if (dial instanceof TlsDial) {
          const why = err ?? errors.get(s);
          dial.settled.reject(
            new Error(`TLS handshake with ${dial.target} failed: the connection closed${why ? `: ${why.message}` : ""}`, { cause: why }),
          );
        } else close(s, err);
      },
      connectError: recordError,
    } as BunHandlers;
    tlsAdapted.set(key, b);
  }
  return b;
}

/** {@link connectTcp} with TLS: resolves after the handshake (see {@link TlsDial}). */
async function connectTls<T>(options: TcpConnectOptions<T>, tls: TlsClientOptions): Promise<TcpSocket<T>> {
  const rejectUnauthorized = tls.rejectUnauthorized ?? true;
  const dial = new TlsDial(options.data, options.handlers, rejectUnauthorized, `${options.hostname}:${options.port}`);
  dial.settled.promise.catch(() => {}); // observed by `connecting`, unless Bun.connect itself fails first
  let socket: Bun.Socket<unknown> | undefined;
  const connecting = (async () => {
    const s = (socket = await Bun.connect<unknown>({
      hostname: options.hostname,
      port: options.port,
      allowHalfOpen: true,
      data: dial,
      tls: {
        ...(tls.ca ? { ca: tls.ca } : {}),
        ...(tls.cert ? { cert: tls.cert } : {}),
        ...(tls.key ? { key: tls.key } : {}),
        ...(tls.serverName ? { serverName: tls.serverName } : {}),
        rejectUnauthorized,
      },
      socket: tlsConnectHandlers(options.handlers) as Bun.SocketHandler<unknown>,
    } as Bun.TCPSocketConnectOptions<unknown>));
    try {
      await dial.settled.promise;
    } catch (err) {
      s.terminate();
      throw err;
    }
    return s;
  })();
  try {
    return (await withConnectTimeout(connecting, options, (s) => s.terminate())) as unknown as TcpSocket<T>;
  } catch (err) {
    socket?.terminate(); // timed out during the handshake
    throw err;
  }
}

export function listenUnix<T>(path: string, handlers: TcpHandlers<T>): TcpListener<T> {
  const listener = new BunTcpListener(handlers);
  listener.server = Bun.listen<unknown>({
    unix: path,
    allowHalfOpen: true,
    data: listener,
    socket: listenerHandlers(handlers) as Bun.SocketHandler<unknown>,
  } as Bun.UnixSocketOptions<unknown>) as unknown as Bun.TCPSocketListener<unknown>;
  return listener;
}

export function connectUnix<T>(path: string, handlers: TcpHandlers<T>, data: T): Promise<TcpSocket<T>> {
  return Bun.connect<T>({
    unix: path,
    allowHalfOpen: true,
    data,
    socket: connectHandlers(handlers) as Bun.SocketHandler<T>,
  } as Bun.UnixSocketOptions<T>) as unknown as Promise<TcpSocket<T>>;
}

export async function bindUdp(options: UdpBindOptions): Promise<UdpSocket> {
  // Bun.udpSocket has no SO_REUSEPORT; Bun's node:dgram does (the worker processes' shared UDP entrypoints).
  if (options.reusePort) return bindUdpReusePort(options);
  const socket = await Bun.udpSocket({
    hostname: options.hostname,
    port: options.port,
    binaryType: "uint8array",
    socket: {
      data(_s, data, port, address) {
        options.onMessage(data, port, address);
      },
    },
  });
  return {
    hostname: socket.hostname,
    port: socket.port,
    send: (data, port, address) => socket.send(data, port, address),
    close: () => socket.close(),
  };
}

/** A UDP socket bound with SO_REUSEPORT through node:dgram. */
function bindUdpReusePort(options: UdpBindOptions): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: options.hostname.includes(":") ? "udp6" : "udp4", reusePort: true });
    socket.once("error", reject);
    socket.on("message", (msg, rinfo) => options.onMessage(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), rinfo.port, rinfo.address));
    socket.bind(options.port, options.hostname, () => {
      socket.off("error", reject);
      socket.on("error", () => {}); // a send error is reported by send's return value
      resolve({
        hostname: options.hostname,
        port: socket.address().port,
        send: (data, port, address) => (socket.send(data, port, address), true),
        close: () => socket.close(),
      });
    });
  });
}
