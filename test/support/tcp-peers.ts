/**
 * Real TCP peers for data-plane tests: echo upstreams and scripted clients, written against the
 * runtime port so the same helpers run on Bun (`rt`) and on Deno (`src/runtime/deno/net.ts`).
 */
import { rt } from "../../src/runtime/index.ts";
import type { Runtime, TcpHandlers, TcpSocket } from "../../src/runtime/types.ts";

export type Net = Pick<Runtime, "listenTcp" | "connectTcp">;

/** Per-socket write queue with backpressure: what `write` did not accept is written on `drain`. */
class Outbox {
  readonly #queue: Uint8Array[] = [];
  #ending = false;
  #waiters: (() => void)[] = [];
  constructor(readonly socket: TcpSocket<unknown>) {}

  /** Queue and write `chunk`; resolves when the socket has accepted all of it. */
  send(chunk: Uint8Array): Promise<void> {
    this.#queue.push(chunk);
    if (this.#queue.length === 1) this.flush();
    if (this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Half-close once everything queued is written. */
  end(): void {
    this.#ending = true;
    if (this.#queue.length === 0) this.socket.end();
  }

  get pending(): number {
    return this.#queue.length;
  }

  flush(): void {
    while (this.#queue.length) {
      const c = this.#queue[0]!;
      const n = this.socket.write(c);
      if (n === c.length) {
        this.#queue.shift();
        continue;
      }
      if (n < 0) {
        this.#queue.length = 0;
        break;
      }
      if (n > 0) this.#queue[0] = c.subarray(n);
      return;
    }
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
    if (this.#ending) this.socket.end();
  }
}

export interface TestServer extends AsyncDisposable {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  stop(): void;
}

/**
 * An echo upstream on 127.0.0.1:0. With `tag`, replies are `${tag}:${data}` per chunk (small
 * exchanges only). Echoes with backpressure and half-closes after the peer's FIN once flushed.
 */
export function echoServer(net: Net, { tag }: { tag?: string } = {}): TestServer {
  const enc = new TextEncoder();
  const prefix = tag === undefined ? undefined : enc.encode(`${tag}:`);
  let accepted = 0;
  const open = new Set<TcpSocket<Outbox>>();
  const handlers: TcpHandlers<Outbox> = {
    open(s) {
      accepted++;
      open.add(s);
      s.data = new Outbox(s as TcpSocket<unknown>);
    },
    data(s, chunk) {
      const out = s.data;
      if (prefix) {
        const tagged = new Uint8Array(prefix.length + chunk.length);
        tagged.set(prefix);
        tagged.set(chunk, prefix.length);
        chunk = tagged;
      }
      void out.send(chunk);
      if (out.pending) s.pause();
    },
    drain(s) {
      s.data.flush();
      if (!s.data.pending) s.resume();
    },
    end(s) {
      s.data.end();
    },
    close(s) {
      open.delete(s);
    },
  };
  const listener = net.listenTcp({ hostname: "127.0.0.1", port: 0, handlers });
  let stopped = false;
  const stop = () => {
    if (!stopped) listener.stop(true);
    stopped = true;
  };
  return {
    port: listener.port,
    get accepted() {
      return accepted;
    },
    get open() {
      return open.size;
    },
    stop,
    async [Symbol.asyncDispose]() {
      stop();
    },
  };
}

/** A connected client that records what it receives. */
export interface TestClient extends AsyncDisposable {
  readonly socket: TcpSocket<unknown>;
  /** Bytes received so far. */
  readonly received: number;
  /** Everything received, decoded as UTF-8. */
  text(): string;
  /** Write all of `data` (waits through backpressure). */
  send(data: string | Uint8Array): Promise<void>;
  /** Half-close after pending writes. */
  end(): void;
  /** Resolves when at least `n` bytes have arrived (rejects if the socket closes first). */
  receivedAtLeast(n: number): Promise<void>;
  /** Send `data`, resolve with the next `expectedBytes` bytes received as text. */
  exchange(data: string, expectedBytes: number): Promise<string>;
  /** Resolves on the peer's FIN (or a clean close). */
  readonly ended: Promise<void>;
  /** Resolves when the socket is fully closed (with the error, if any). */
  readonly closed: Promise<Error | undefined>;
  readonly isClosed: boolean;
}

/** Connect to `hostname` (default 127.0.0.1):`port` and keep what arrives (or count only, with `keep: false`). */
export async function connectClient(
  net: Net,
  port: number,
  { keep = true, hostname = "127.0.0.1" }: { keep?: boolean; hostname?: string } = {},
): Promise<TestClient> {
  const chunks: Uint8Array[] = [];
  let received = 0;
  let isClosed = false;
  const ended = Promise.withResolvers<void>();
  const closed = Promise.withResolvers<Error | undefined>();
  let watchers: { n: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  const check = () => {
    watchers = watchers.filter((w) => (received >= w.n ? (w.resolve(), false) : true));
  };
  let out: Outbox | undefined;
  const handlers: TcpHandlers<unknown> = {
    data(_s, chunk) {
      received += chunk.length;
      if (keep) chunks.push(chunk);
      check();
    },
    drain() {
      out?.flush();
    },
    end() {
      ended.resolve();
    },
    close(_s, error) {
      isClosed = true;
      // Bun reports a FIN that arrives after our own FIN as a clean close, without `end`.
      if (error === undefined) ended.resolve();
      closed.resolve(error);
      for (const w of watchers) w.reject(new Error(`Socket closed after ${received} of ${w.n} bytes`));
      watchers = [];
    },
  };
  const socket = await net.connectTcp({ hostname, port, handlers, data: undefined });
  out = new Outbox(socket);
  const enc = new TextEncoder();
  const decoded = () => new TextDecoder().decode(concat(chunks));
  const client: TestClient = {
    socket,
    get received() {
      return received;
    },
    get isClosed() {
      return isClosed;
    },
    text: decoded,
    send: (data) => out!.send(typeof data === "string" ? enc.encode(data) : data),
    end: () => out!.end(),
    receivedAtLeast(n) {
      if (received >= n) return Promise.resolve();
      if (isClosed) return Promise.reject(new Error(`Socket closed after ${received} of ${n} bytes`));
      return new Promise((resolve, reject) => watchers.push({ n, resolve, reject }));
    },
    async exchange(data, expectedBytes) {
      const start = received;
      const before = decoded();
      await client.send(data);
      await client.receivedAtLeast(start + expectedBytes);
      return decoded().slice(before.length);
    },
    ended: ended.promise,
    closed: closed.promise,
    async [Symbol.asyncDispose]() {
      if (!isClosed) socket.terminate();
    },
  };
  return client;
}

export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const c of chunks) n += c.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Whether a TCP connection to `port` on 127.0.0.1 is accepted (it is closed at once). */
export async function canConnect(port: number): Promise<boolean> {
  try {
    const s = await rt.connectTcp({ hostname: "127.0.0.1", port, handlers: { data() {} }, data: undefined });
    s.terminate();
    return true;
  } catch {
    return false;
  }
}

/** One exchange on a new connection to a proxy in front of {@link echoServer}s: the tag of the one that answered. */
export async function echoTag(port: number, hostname = "127.0.0.1"): Promise<string> {
  await using c = await connectClient(rt, port, { hostname });
  return (await c.exchange("x", 3)).split(":")[0]!;
}
