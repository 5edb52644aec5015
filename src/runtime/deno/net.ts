/**
 * Deno's TCP and UDP behind the runtime port. Deno gives promise-based connections
 * (`Deno.Conn.read/write`); this file adapts them to the callback shape of {@link TcpSocket} /
 * {@link TcpHandlers} that Bun has natively:
 *
 * - one read loop per connection calls `data`; `pause()` holds it, `resume()` releases it;
 * - `write` queues and returns the chunk's length while less than {@link WRITE_HIGH_WATER_MARK}
 *   bytes are queued, else 0; `drain` is called once the queue has been flushed after that;
 * - `end()` sends FIN (`closeWrite`) after the queue is flushed; reading continues;
 * - read EOF calls `end`; when both directions are finished the connection closes and `close` is
 *   called, exactly once (also after errors and `terminate()`);
 * - with `tls`, `connectTcp` uses `Deno.connectTls` and resolves after the handshake (see {@link connectTls}).
 *
 * Only the few members of the `Deno` namespace used here are declared (see {@link DenoNet}), so
 * this file typechecks with Bun's types and does not need Deno's lib.
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

/** `write` accepts chunks while fewer bytes than this are queued for the kernel. */
export const WRITE_HIGH_WATER_MARK = 1024 * 1024;
/** Size of each read. */
const READ_BUFFER_BYTES = 64 * 1024;
/** Reads smaller than this are copied out so the read buffer can be reused. */
const COPY_BELOW_BYTES = 16 * 1024;

interface DenoNetAddr {
  readonly transport: "tcp" | "udp";
  readonly hostname: string;
  readonly port: number;
}

interface DenoConn {
  readonly localAddr: DenoNetAddr;
  readonly remoteAddr: DenoNetAddr;
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay(noDelay?: boolean): void;
}

interface DenoListener {
  readonly addr: DenoNetAddr;
  accept(): Promise<DenoConn>;
  close(): void;
}

interface DenoDatagramConn {
  readonly addr: DenoNetAddr;
  receive(p?: Uint8Array): Promise<[Uint8Array, DenoNetAddr]>;
  send(p: Uint8Array, addr: DenoNetAddr): Promise<number>;
  close(): void;
}

interface DenoTlsConn extends DenoConn {
  handshake(): Promise<unknown>;
}

/** `Deno.connectTls`'s options (Deno 2.9): no way to skip verification or to set the server name. */
interface DenoConnectTlsOptions {
  hostname: string;
  port: number;
  caCerts?: string[];
  cert?: string;
  key?: string;
}

/** The part of the `Deno` namespace this file uses. */
interface DenoNet {
  listen(options: { hostname: string; port: number; transport: "tcp"; reusePort?: boolean }): DenoListener;
  connect(options: { hostname: string; port: number; transport: "tcp"; signal?: AbortSignal }): Promise<DenoConn>;
  connectTls(options: DenoConnectTlsOptions): Promise<DenoTlsConn>;
  /** Unstable: needs `--unstable-net` (absent otherwise). */
  listenDatagram?(options: { hostname: string; port: number; transport: "udp" }): DenoDatagramConn;
}

const Deno = (globalThis as { Deno?: unknown }).Deno as DenoNet;

/** Deno's error classes carry `code` (EADDRINUSE...) already; make sure of it for the ones we map. */
function withCode(err: unknown): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  const codes: Record<string, string> = {
    AddrInUse: "EADDRINUSE",
    AddrNotAvailable: "EADDRNOTAVAIL",
    ConnectionRefused: "ECONNREFUSED",
    ConnectionReset: "ECONNRESET",
    PermissionDenied: "EACCES",
    TimedOut: "ETIMEDOUT",
  };
  const x = e as Error & { code?: string };
  const code = codes[e.name];
  if (x.code === undefined && code !== undefined) x.code = code;
  return e;
}

/** A {@link TcpSocket} over a `Deno.Conn`. */
class DenoSocket<T> implements TcpSocket<T> {
  data: T;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;

  readonly #conn: DenoConn;
  readonly #handlers: TcpHandlers<T>;
  /** The listener's set of open sockets (for `stop(true)`). */
  readonly #group: Set<DenoSocket<T>> | undefined;
  readonly #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #wantDrain = false;
  /** `end()` was called: FIN goes out after the queue. */
  #ending = false;
  #writeClosed = false;
  #readEof = false;
  #paused = false;
  #resume: PromiseWithResolvers<void> | undefined;
  #closed = false;

  constructor(conn: DenoConn, handlers: TcpHandlers<T>, data: T, group?: Set<DenoSocket<T>>) {
    this.#conn = conn;
    this.#handlers = handlers;
    this.data = data;
    this.#group = group;
    this.remoteAddress = conn.remoteAddr.hostname;
    this.remotePort = conn.remoteAddr.port;
    this.localAddress = conn.localAddr.hostname;
    this.localPort = conn.localAddr.port;
    group?.add(this);
  }

  /** Call `open`, then start reading (the first read completes in a later task, never before the caller's continuation). */
  start(): void {
    try {
      this.#handlers.open?.(this);
    } catch (err) {
      this.#fail(err);
      return;
    }
    if (!this.#closed) void this.#readLoop();
  }

  write(chunk: Uint8Array): number {
    if (this.#closed || this.#ending) return -1;
    if (chunk.length === 0) return 0;
    if (this.#queued >= WRITE_HIGH_WATER_MARK) {
      this.#wantDrain = true;
      return 0;
    }
    this.#queue.push(chunk);
    this.#queued += chunk.length;
    if (!this.#writing) void this.#writeLoop();
    return chunk.length;
  }

  end(): void {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    if (!this.#writing) void this.#shutdownWrite();
  }

  terminate(): void {
    if (this.#closed) return;
    this.#finish(undefined);
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    const r = this.#resume;
    this.#resume = undefined;
    r?.resolve();
  }

  setNoDelay(on: boolean): void {
    if (this.#closed) return;
    try {
      this.#conn.setNoDelay(on);
    } catch {
      // Not connected any more: nothing to tune.
    }
  }

  async #readLoop(): Promise<void> {
    let buf = new Uint8Array(READ_BUFFER_BYTES);
    try {
      for (;;) {
        if (this.#paused) await (this.#resume ??= Promise.withResolvers<void>()).promise;
        if (this.#closed) return;
        const n = await this.#conn.read(buf);
        if (this.#closed) return;
        if (n === null) {
          this.#readEof = true;
          this.#handlers.end?.(this);
          this.#closeIfDone();
          return;
        }
        let chunk: Uint8Array;
        if (n < COPY_BELOW_BYTES) chunk = buf.slice(0, n);
        else {
          chunk = buf.subarray(0, n);
          buf = new Uint8Array(READ_BUFFER_BYTES);
        }
        // Paused while the read was in flight: hold the bytes until resumed.
        if (this.#paused) await (this.#resume ??= Promise.withResolvers<void>()).promise;
        if (this.#closed) return;
        this.#handlers.data(this, chunk);
      }
    } catch (err) {
      this.#fail(err);
    }
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length !== 0) {
        const head = this.#queue[0]!;
        const n = await this.#conn.write(head);
        if (this.#closed) return;
        this.#queued -= n;
        if (n === head.length) this.#queue.shift();
        else this.#queue[0] = head.subarray(n);
      }
    } catch (err) {
      this.#fail(err);
      return;
    } finally {
      this.#writing = false;
    }
    if (this.#ending) {
      await this.#shutdownWrite();
    } else if (this.#wantDrain) {
      this.#wantDrain = false;
      try {
        this.#handlers.drain?.(this);
      } catch (err) {
        this.#fail(err);
      }
    }
  }

  async #shutdownWrite(): Promise<void> {
    if (this.#writeClosed || this.#closed) return;
    this.#writeClosed = true;
    try {
      await this.#conn.closeWrite();
    } catch (err) {
      // The peer is gone already (ENOTCONN): the read side will report it.
      if ((err as Error).name !== "NotConnected") return this.#fail(err);
    }
    this.#closeIfDone();
  }

  #closeIfDone(): void {
    if (this.#readEof && this.#writeClosed && !this.#writing) this.#finish(undefined);
  }

  #fail(err: unknown): void {
    if (this.#closed) return;
    this.#finish(withCode(err));
  }

  /** Close the connection and call `close` (once). */
  #finish(error: Error | undefined): void {
    this.#closed = true;
    this.#queue.length = 0;
    this.#queued = 0;
    this.#group?.delete(this);
    try {
      this.#conn.close();
    } catch {
      // Already closed by Deno.
    }
    this.#resume?.resolve();
    this.#resume = undefined;
    this.#handlers.close?.(this, error);
  }
}

/** Bind a TCP listener. Throws (with `code`, e.g. EADDRINUSE) when the address cannot be bound. */
export function listenTcp<T>(options: TcpListenOptions<T>): TcpListener<T> {
  let listener: DenoListener;
  try {
    listener = Deno.listen({
      hostname: options.hostname,
      port: options.port,
      transport: "tcp",
      ...(options.reusePort ? { reusePort: true } : {}),
    });
  } catch (err) {
    throw withCode(err);
  }
  let handlers = options.handlers;
  let stopped = false;
  const open = new Set<DenoSocket<T>>();
  void (async () => {
    while (!stopped) {
      let conn: DenoConn;
      try {
        conn = await listener.accept();
      } catch {
        if (stopped) return;
        // EMFILE and friends: back off a little instead of spinning.
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (stopped) {
        conn.close();
        return;
      }
      new DenoSocket<T>(conn, handlers, undefined as T, open).start();
    }
  })();
  return {
    hostname: listener.addr.hostname,
    port: listener.addr.port,
    reload(next) {
      handlers = next;
    },
    stop(closeActive = false) {
      if (!stopped) {
        stopped = true;
        listener.close();
      }
      if (closeActive) for (const s of [...open]) s.terminate();
    },
  };
}

/** Open an outbound TCP connection. Rejects on refusal or timeout (`code` ETIMEDOUT). */
export async function connectTcp<T>(options: TcpConnectOptions<T>): Promise<TcpSocket<T>> {
  if (options.tls !== undefined) return connectTls(options, options.tls);
  const connecting = Deno.connect({ hostname: options.hostname, port: options.port, transport: "tcp" });
  let conn: DenoConn;
  try {
    conn = await withConnectTimeout(connecting, options, (c) => c.close());
  } catch (err) {
    throw withCode(err);
  }
  const socket = new DenoSocket<T>(conn, options.handlers, options.data);
  socket.start();
  return socket;
}

let warnedTls = false;

/**
 * {@link connectTcp} with TLS: `Deno.connectTls`, resolved once the handshake is done (Deno would otherwise
 * report a certificate it rejects only at the first read or write). Deno has no per-connection switch to skip
 * verification or to set the server name (see `TcpConnectOptions.tls`): both are named in a warning, once.
 */
async function connectTls<T>(options: TcpConnectOptions<T>, tls: TlsClientOptions): Promise<TcpSocket<T>> {
  if (!warnedTls && (tls.rejectUnauthorized === false || tls.serverName)) {
    warnedTls = true;
    console.warn(
      tls.rejectUnauthorized === false
        ? `kubegate: Deno cannot skip TLS verification per connection; run with --unsafely-ignore-certificate-errors=${options.hostname} for insecure-skip-tls-verify`
        : `kubegate: Deno cannot override the TLS server name; tls-server-name "${tls.serverName}" is ignored (the certificate is checked against "${options.hostname}")`,
    );
  }
  let pending: DenoTlsConn | undefined;
  const connecting = (async () => {
    const conn = (pending = await Deno.connectTls({
      hostname: options.hostname,
      port: options.port,
      ...(tls.ca ? { caCerts: [tls.ca] } : {}),
      ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
    }));
    try {
      await conn.handshake();
    } catch (err) {
      conn.close();
      throw err;
    }
    return conn;
  })();
  let conn: DenoConn;
  try {
    conn = await withConnectTimeout(connecting, options, (c) => c.close());
  } catch (err) {
    try {
      // Timed out during the handshake. Deno 2.9 cancels the handshake but keeps the TCP connection open until
      // the server drops it (a TlsConn closed mid-handshake does not release its socket).
      pending?.close();
    } catch {
      // Closed already.
    }
    throw withCode(err);
  }
  const socket = new DenoSocket<T>(conn, options.handlers, options.data);
  socket.start();
  return socket;
}

/** Bind a UDP socket. Needs Deno's `--unstable-net` (`Deno.listenDatagram` is unstable). */
export async function bindUdp(options: UdpBindOptions): Promise<UdpSocket> {
  if (!Deno.listenDatagram) throw new Error("UDP needs Deno's --unstable-net flag (Deno.listenDatagram is unstable)");
  let conn: DenoDatagramConn;
  try {
    conn = Deno.listenDatagram({ hostname: options.hostname, port: options.port, transport: "udp" });
  } catch (err) {
    throw withCode(err);
  }
  let closed = false;
  void (async () => {
    while (!closed) {
      try {
        const [data, addr] = await conn.receive();
        options.onMessage(data, addr.port, addr.hostname);
      } catch {
        if (closed) return;
      }
    }
  })();
  return {
    hostname: conn.addr.hostname,
    port: conn.addr.port,
    send(data, port, address) {
      if (closed) return false;
      conn.send(data, { transport: "udp", hostname: address, port }).catch(() => {});
      return true;
    },
    close() {
      if (closed) return;
      closed = true;
      conn.close();
    },
  };
}
