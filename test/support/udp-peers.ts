/**
 * Real UDP peers for data-plane tests, over the runtime port: a tagged echo upstream that records
 * who sent what, and a client socket that queues what it receives.
 */
import type { Runtime, UdpSocket } from "../../src/runtime/types.ts";

export type UdpNet = Pick<Runtime, "bindUdp">;

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface UdpEcho extends AsyncDisposable {
  readonly port: number;
  /** Datagrams received so far. */
  readonly received: number;
  /** `address:port` of each sender, in order of first datagram. */
  readonly senders: readonly string[];
  close(): void;
}

/** A UDP echo on `hostname` (default 127.0.0.1):0 that replies `${tag}:${datagram}` to each datagram's sender. */
export async function udpEcho(net: UdpNet, { tag = "echo", hostname = "127.0.0.1" }: { tag?: string; hostname?: string } = {}): Promise<UdpEcho> {
  let received = 0;
  const senders: string[] = [];
  const socket: UdpSocket = await net.bindUdp({
    hostname,
    port: 0,
    onMessage(data, port, address) {
      received++;
      const from = `${address}:${port}`;
      if (!senders.includes(from)) senders.push(from);
      socket.send(enc.encode(`${tag}:${dec.decode(data)}`), port, address);
    },
  });
  let closed = false;
  const close = () => {
    if (!closed) socket.close();
    closed = true;
  };
  return {
    port: socket.port,
    get received() {
      return received;
    },
    senders,
    close,
    async [Symbol.asyncDispose]() {
      close();
    },
  };
}

export interface UdpClient extends AsyncDisposable {
  readonly port: number;
  /** Send `text` to `port` on the client's target host. */
  send(text: string): void;
  /** The next datagram received, as text (rejects after `timeoutMs`, default 2 s). */
  next(timeoutMs?: number): Promise<string>;
  /** Send `text` and resolve with the next datagram received. */
  exchange(text: string, timeoutMs?: number): Promise<string>;
  /** Datagrams received and not yet taken by `next`. */
  readonly queued: number;
  /** `address:port` the last datagram came from. */
  readonly lastFrom: string | undefined;
}

/** A client socket on `hostname` (default 127.0.0.1):0 that talks to `hostname`:`port`. */
export async function udpClient(net: UdpNet, port: number, { hostname = "127.0.0.1" }: { hostname?: string } = {}): Promise<UdpClient> {
  const queue: string[] = [];
  const waiters: ((text: string) => void)[] = [];
  let lastFrom: string | undefined;
  const socket = await net.bindUdp({
    hostname,
    port: 0,
    onMessage(data, fromPort, fromAddress) {
      lastFrom = `${fromAddress}:${fromPort}`;
      const text = dec.decode(data);
      const w = waiters.shift();
      if (w) w(text);
      else queue.push(text);
    },
  });
  const next = (timeoutMs = 2_000): Promise<string> => {
    const ready = queue.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    const { promise, resolve, reject } = Promise.withResolvers<string>();
    const timer = setTimeout(() => {
      const i = waiters.indexOf(taker);
      if (i !== -1) waiters.splice(i, 1);
      reject(new Error(`No datagram within ${timeoutMs} ms on client port ${socket.port}`));
    }, timeoutMs);
    const taker = (text: string) => {
      clearTimeout(timer);
      resolve(text);
    };
    waiters.push(taker);
    return promise;
  };
  const send = (text: string) => {
    if (!socket.send(enc.encode(text), port, hostname)) throw new Error(`UDP send to ${hostname}:${port} was refused by the kernel`);
  };
  return {
    port: socket.port,
    send,
    next,
    exchange(text, timeoutMs) {
      send(text);
      return next(timeoutMs);
    },
    get queued() {
      return queue.length;
    },
    get lastFrom() {
      return lastFrom;
    },
    async [Symbol.asyncDispose]() {
      socket.close();
    },
  };
}

/** A UDP port the OS just reported free on `hostname` (bound to port 0, then released). */
export async function freeUdpPort(net: UdpNet, hostname = "127.0.0.1"): Promise<number> {
  const socket = await net.bindUdp({ hostname, port: 0, onMessage() {} });
  const { port } = socket;
  socket.close();
  // Deno releases the port once the pending receive is interrupted, a task later (Bun at once).
  await new Promise((r) => setTimeout(r, 0));
  return port;
}
