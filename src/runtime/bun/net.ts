/**
 * Bun's TCP and UDP behind the runtime port. Bun's sockets already have the shape of
 * {@link TcpSocket}, so they are passed to handlers unwrapped: the data path pays nothing here.
 */
import type {
  TcpConnectOptions,
  TcpHandlers,
  TcpListener,
  TcpListenOptions,
  TcpSocket,
  UdpBindOptions,
  UdpSocket,
} from "../types.ts";
import { withConnectTimeout } from "../connect-timeout.ts";

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

/** Bun handler objects per port handler object: one per listener and one for all upstream connects of a proxy. */
const adapted = new WeakMap<TcpHandlers<never>, BunHandlers>();

/**
 * Adapt port handlers to Bun's handler object (same callback names; `error` folds into `close`), once per
 * handler object: `connectTcp` is called per proxied connection with the same handlers.
 */
function toBunHandlers<T>(h: TcpHandlers<T>): BunHandlers {
  const key = h as unknown as TcpHandlers<never>;
  let b = adapted.get(key);
  if (b === undefined) {
    b = adapt(h);
    adapted.set(key, b);
  }
  return b;
}

function adapt<T>(h: TcpHandlers<T>): BunHandlers {
  const errors = new WeakMap<object, Error>();
  return {
    binaryType: "buffer",
    open: (s) => {
      const o = s as unknown as { end: unknown; setNoDelay: typeof setNoDelay };
      nativeSetNoDelay ??= o.setNoDelay as unknown as typeof nativeSetNoDelay;
      o.end = halfClose;
      o.setNoDelay = setNoDelay;
      h.open?.(s as unknown as TcpSocket<T>);
    },
    data: h.data as unknown as BunHandlers["data"],
    drain: h.drain as BunHandlers["drain"],
    end: (s) => h.end?.(s as unknown as TcpSocket<T>),
    error: (s, err) => void errors.set(s, err),
    close: (s, err) => h.close?.(s as unknown as TcpSocket<T>, err ?? errors.get(s)),
    connectError: (s, err) => void errors.set(s, err),
  } as BunHandlers;
}

export function listenTcp<T>(options: TcpListenOptions<T>): TcpListener<T> {
  const server = Bun.listen<T>({
    hostname: options.hostname,
    port: options.port,
    allowHalfOpen: true,
    ...(options.reusePort ? { reusePort: true } : {}),
    data: undefined as T,
    socket: toBunHandlers(options.handlers) as Bun.SocketHandler<T>,
  } as Bun.TCPSocketListenOptions<T>);
  return {
    hostname: server.hostname,
    port: server.port,
    reload(handlers) {
      server.reload({ socket: toBunHandlers(handlers) as Bun.SocketHandler<T> });
    },
    stop(closeActive = false) {
      server.stop(closeActive);
    },
  };
}

export async function connectTcp<T>(options: TcpConnectOptions<T>): Promise<TcpSocket<T>> {
  const connecting = Bun.connect<T>({
    hostname: options.hostname,
    port: options.port,
    allowHalfOpen: true,
    data: options.data,
    socket: toBunHandlers(options.handlers) as Bun.SocketHandler<T>,
  } as Bun.TCPSocketConnectOptions<T>);
  return (await withConnectTimeout(connecting, options, (s) => s.terminate())) as unknown as TcpSocket<T>;
}

export async function bindUdp(options: UdpBindOptions): Promise<UdpSocket> {
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
