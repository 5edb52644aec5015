/**
 * The runtime port: everything kubegate needs from Bun or Deno, behind one interface.
 *
 * This directory is the only place that touches the `Bun` or `Deno` globals. Everything else
 * (kube client, data plane, admin) is written against {@link Runtime}. Get the current one with
 * `runtime()` from `./index.ts`.
 */

/** TLS material for an HTTPS client (PEM strings). */
export interface TlsClientOptions {
  /** PEM CA bundle to trust instead of the system roots. */
  readonly ca?: string | undefined;
  /** PEM client certificate (mTLS). */
  readonly cert?: string | undefined;
  /** PEM client private key (mTLS). */
  readonly key?: string | undefined;
  /** Verify the server certificate (default true). */
  readonly rejectUnauthorized?: boolean | undefined;
  /** SNI / verification name override (kubeconfig `tls-server-name`). */
  readonly serverName?: string | undefined;
}

/** A fetch bound to one TLS configuration. Bun: `fetch(url, { tls })`; Deno: `Deno.createHttpClient`. */
export interface HttpClient {
  fetch(url: string | URL, init?: RequestInit): Promise<Response>;
  /** Release pooled connections (Deno's client must be closed). */
  close(): void;
}

/**
 * A connected TCP socket. Named exactly like Bun's socket, so the Bun port passes Bun sockets
 * through unwrapped (no cost on the data path). Like Bun's socket: `write` is non-blocking and returns the number
 * of bytes the kernel accepted; the caller keeps the rest and writes it again on `drain`.
 *
 * `T` is a per-socket user slot (`socket.data`) so handlers need no Map lookups on the hot path.
 */
export interface TcpSocket<T = unknown> {
  data: T;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /**
   * Write as much as possible now; returns bytes accepted (0..len), or -1 when the socket is closed or ending.
   * Never throws. The accepted bytes may still be referenced until sent (Deno queues the chunk without
   * copying): never reuse a buffer after writing it.
   */
  write(chunk: Uint8Array): number;
  /** Half-close: send FIN after pending bytes are flushed. Reading continues (allowHalfOpen). */
  end(): void;
  /** Abort both directions now (RST where possible); pending writes are dropped. */
  terminate(): void;
  /** Stop delivering `data` (backpressure towards the peer). */
  pause(): void;
  /** Resume delivering `data`. */
  resume(): void;
  /** Disable Nagle. */
  setNoDelay(on: boolean): void;
}

/**
 * Event handlers for sockets of one listener or one outbound connection. They are called as plain functions
 * (no `this`): keep per-listener state in a closure or reach it through `socket.data`.
 */
export interface TcpHandlers<T = unknown> {
  /** Called once, before any `data`, for accepted sockets (and for connected ones). */
  open?(socket: TcpSocket<T>): void;
  /** Bytes arrived. The chunk is owned by the callee (it may be kept). */
  data(socket: TcpSocket<T>, chunk: Uint8Array): void;
  /** The socket can accept writes again after `write` returned less than asked. */
  drain?(socket: TcpSocket<T>): void;
  /**
   * The peer sent FIN (half-close). The socket stays writable. On Bun, a FIN that arrives after our own
   * FIN may surface only as a clean `close` (no `end` first): treat a clean close as end of stream.
   */
  end?(socket: TcpSocket<T>): void;
  /** The socket is fully closed. Called exactly once. */
  close?(socket: TcpSocket<T>, error?: Error): void;
}

export interface TcpListenOptions<T = unknown> {
  readonly hostname: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly handlers: TcpHandlers<T>;
  /** Bind with SO_REUSEPORT where supported. */
  readonly reusePort?: boolean | undefined;
}

export interface TcpListener<T = unknown> {
  readonly hostname: string;
  /** The bound port (resolved when 0 was asked). */
  readonly port: number;
  /** Switch handlers for connections accepted from now on; open connections keep theirs. */
  reload(handlers: TcpHandlers<T>): void;
  /** Stop accepting. Open connections are left alone unless `closeActive`. */
  stop(closeActive?: boolean): void;
}

export interface TcpConnectOptions<T = unknown> {
  readonly hostname: string;
  readonly port: number;
  readonly handlers: TcpHandlers<T>;
  /** Initial value of `socket.data`. */
  readonly data: T;
  /** Reject the promise when not connected within this many ms (with TLS: connected and the handshake done). */
  readonly timeoutMs?: number | undefined;
  /**
   * Speak TLS over the connection (absent: plain TCP, at exactly the cost it has without this option). The promise
   * resolves, and `open` is called, once the handshake is done and the server's certificate verified; a failed
   * verification rejects it (`code` from the TLS library where it gives one). Deno cannot skip verification per
   * connection (`rejectUnauthorized: false` needs `--unsafely-ignore-certificate-errors=<host>`) nor override the
   * server name (`serverName` is ignored, with a warning): it verifies the certificate against `hostname`.
   */
  readonly tls?: TlsClientOptions | undefined;
}

/** A UDP socket bound to a local address. */
export interface UdpSocket {
  readonly hostname: string;
  readonly port: number;
  send(data: Uint8Array, port: number, address: string): boolean;
  close(): void;
}

export interface UdpBindOptions {
  readonly hostname: string;
  readonly port: number;
  readonly onMessage: (data: Uint8Array, port: number, address: string) => void;
  /** Bind with SO_REUSEPORT (several processes on one port; the kernel keeps each flow on one of them). Bun only. */
  readonly reusePort?: boolean | undefined;
}

/** A filesystem watch; dispose to stop. `onChange` is called (possibly several times) after any change. */
export interface Watcher extends Disposable {}

/** A request/response HTTP server for control endpoints (health, admin) — not the data path. */
export interface HttpServeOptions {
  readonly hostname: string;
  readonly port: number;
  readonly fetch: (request: Request, info: { readonly remoteAddress: string }) => Response | Promise<Response>;
  /** Bind with SO_REUSEPORT (Linux): a successor gateway on the node binds the same port beside this one. */
  readonly reusePort?: boolean | undefined;
}

export interface HttpServer extends AsyncDisposable {
  readonly hostname: string;
  readonly port: number;
}

/** SIGUSR1: reopen the access log file (logrotate). */
export type SignalName = "SIGINT" | "SIGTERM" | "SIGHUP" | "SIGUSR1";

/** A child process with a message channel (JSON values), e.g. a worker data plane. */
export interface ChildProcess {
  readonly pid: number;
  /** Send a message; false when the channel is closed. */
  send(message: unknown): boolean;
  kill(signal?: "SIGTERM" | "SIGKILL"): void;
  /** Resolves with the exit code (or 128 + signal) once the process has exited. */
  readonly exited: Promise<number>;
}

export interface SpawnChildOptions {
  /** The program and its arguments. */
  readonly cmd: readonly string[];
  /** Extra environment variables (the parent's environment is inherited). */
  readonly env?: Readonly<Record<string, string>> | undefined;
  readonly onMessage: (message: unknown) => void;
}

/** The channel to the parent, in a process started by {@link Runtime.spawnChild}. */
export interface ParentChannel {
  send(message: unknown): void;
  onMessage(handler: (message: unknown) => void): void;
  /** Called once when the parent goes away (exited or closed the channel). */
  onDisconnect(handler: () => void): void;
}

/** The process's limit on open file descriptors (RLIMIT_NOFILE): every listener, connection and file is one. */
export interface FileLimit {
  /** The limit in force; an open, socket or accept past it fails with EMFILE. */
  readonly soft: number;
  /** The ceiling the soft limit may be raised to without privileges. */
  readonly hard: number;
}

/** What {@link Runtime.raiseFileLimit} did. */
export interface FileLimitRaise {
  /** The limit before (Bun and Deno already raise the soft limit to the hard one as they start, so usually equal). */
  readonly before: FileLimit;
  /** The limit now. */
  readonly after: FileLimit;
  /** Why the soft limit could not be raised (it stays `before`). */
  readonly error?: string | undefined;
}

export interface Runtime {
  readonly name: "bun" | "deno";
  /** An HTTP client with this TLS configuration. */
  createHttpClient(tls: TlsClientOptions): HttpClient;
  /** Bind a TCP listener. Throws an Error (with `code`, e.g. EADDRINUSE) when the address cannot be bound. */
  listenTcp<T>(options: TcpListenOptions<T>): TcpListener<T>;
  /** Open an outbound TCP connection. Rejects on refusal or timeout. */
  connectTcp<T>(options: TcpConnectOptions<T>): Promise<TcpSocket<T>>;
  /**
   * Listen on a Unix socket; a path that starts with NUL is in Linux's abstract namespace (no file, gone with the
   * process, shared by the processes of one network namespace). Throws with `code` EADDRINUSE when taken.
   * Absent where unsupported (Deno).
   */
  listenUnix?<T>(path: string, handlers: TcpHandlers<T>): TcpListener<T>;
  /** Connect to a Unix socket (see {@link listenUnix}). Rejects on refusal. */
  connectUnix?<T>(path: string, handlers: TcpHandlers<T>, data: T): Promise<TcpSocket<T>>;
  /** Serve HTTP with a fetch handler (health and admin; the data plane uses `listenTcp`). Throws when it cannot bind. */
  serveHttp(options: HttpServeOptions): HttpServer;
  /** Bind a UDP socket. */
  bindUdp(options: UdpBindOptions): Promise<UdpSocket>;
  readTextFile(path: string): Promise<string>;
  /** Watch a file or directory (recursively) for changes. */
  watchPath(path: string, onChange: () => void): Watcher;
  /** Register a signal handler; returns a function that removes it. */
  onSignal(signal: SignalName, handler: () => void): () => void;
  env(name: string): string | undefined;
  exit(code: number): never;
  /** Start a child process with a message channel; stdout and stderr are the parent's. Throws where unsupported (Deno). */
  spawnChild(options: SpawnChildOptions): ChildProcess;
  /** The channel to the parent when this process was started by {@link spawnChild}; undefined otherwise. */
  parentChannel(): ParentChannel | undefined;
  /** The file descriptor limit (RLIMIT_NOFILE); undefined where it cannot be read (not Linux, no permission). */
  fileLimit(): FileLimit | undefined;
  /**
   * Raise the soft file descriptor limit to the hard one (`ulimit -n` from within), as nginx's
   * `worker_rlimit_nofile` and Envoy's start scripts do; undefined where the limit cannot be read.
   */
  raiseFileLimit(): FileLimitRaise | undefined;
  /** How many file descriptors this process has open now (`/proc/self/fd`); undefined where unknown. About 1 ms at 10k. */
  openFiles(): number | undefined;
  /** The program that runs this process's scripts (`bun`, `deno`, or the compiled binary itself). */
  readonly execPath: string;
}
