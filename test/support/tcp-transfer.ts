/**
 * Bulk transfers for data-integrity tests: a deterministic stream (a random block repeated; its
 * odd length keeps chunk boundaries from lining up with the period) sent with backpressure, and a
 * SHA-256 of what was received. Works with any {@link TcpSocket} (Bun or Deno port).
 */
import { createHash } from "node:crypto";
import type { Runtime, TcpSocket } from "../../src/runtime/types.ts";

/** A random block of `size` bytes (default 1 MiB + 7). */
export function randomPattern(size = 1024 * 1024 + 7): Uint8Array {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += 65_536) crypto.getRandomValues(out.subarray(at, Math.min(size, at + 65_536)));
  return out;
}

/** SHA-256 (hex) of the first `total` bytes of `pattern` repeated. */
export function patternSha256(pattern: Uint8Array, total: number): string {
  const h = createHash("sha256");
  for (let sent = 0; sent < total; ) {
    const len = Math.min(pattern.length, total - sent);
    h.update(pattern.subarray(0, len));
    sent += len;
  }
  return h.digest("hex");
}

/** Writes `total` bytes of `pattern` repeated; call `pump` on open and on every drain. Half-closes at the end. */
export function patternSender(pattern: Uint8Array, total: number, chunkBytes = 256 * 1024) {
  let sent = 0;
  let ended = false;
  const done = Promise.withResolvers<void>();
  return {
    get sent() {
      return sent;
    },
    done: done.promise,
    pump(s: TcpSocket<unknown>): void {
      while (sent < total) {
        const off = sent % pattern.length;
        const len = Math.min(chunkBytes, pattern.length - off, total - sent);
        const n = s.write(pattern.subarray(off, off + len));
        if (n < 0) return done.reject(new Error(`Socket closed after ${sent} of ${total} bytes were sent`));
        sent += n;
        if (n < len) return;
      }
      if (ended) return;
      ended = true;
      s.end();
      done.resolve();
    },
  };
}

/** Hashes what arrives; `digest()` once the peer is done. */
export function hashingReceiver() {
  const h = createHash("sha256");
  let received = 0;
  return {
    get received() {
      return received;
    },
    data(chunk: Uint8Array): void {
      received += chunk.length;
      h.update(chunk);
    },
    digest: () => h.digest("hex"),
  };
}

/** What one side of a transfer got: byte count and SHA-256 (hex). */
export interface Received {
  /** Bytes received. */
  readonly bytes: number;
  /** Bytes sent. */
  readonly sent: number;
  readonly sha256: string;
}

/**
 * Handlers that send `total` bytes of `pattern` and hash what arrives. Resolves when the socket
 * closes cleanly, i.e. both directions are finished (our FIN sent after the last byte, the peer's received).
 */
function transferHandlers(pattern: Uint8Array, total: number, result: PromiseWithResolvers<Received>) {
  const send = patternSender(pattern, total);
  const recv = hashingReceiver();
  return {
    open: (s: TcpSocket<unknown>) => send.pump(s),
    drain: (s: TcpSocket<unknown>) => send.pump(s),
    data: (_s: TcpSocket<unknown>, chunk: Uint8Array) => recv.data(chunk),
    close: (_s: TcpSocket<unknown>, error?: Error) =>
      error ? result.reject(error) : result.resolve({ bytes: recv.received, sent: send.sent, sha256: recv.digest() }),
  };
}

/**
 * An upstream on 127.0.0.1:0 that, for its first connection, sends `total` bytes of `pattern`
 * while hashing what it receives.
 */
export function transferUpstream(net: Pick<Runtime, "listenTcp">, pattern: Uint8Array, total: number) {
  const result = Promise.withResolvers<Received>();
  const listener = net.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: transferHandlers(pattern, total, result) });
  return {
    port: listener.port,
    received: result.promise,
    async [Symbol.asyncDispose]() {
      listener.stop(true);
    },
  };
}

/** Connect to `port`, send `total` bytes of `pattern` while hashing what comes back, until both sides are done. */
export async function transferClient(
  net: Pick<Runtime, "connectTcp">,
  port: number,
  pattern: Uint8Array,
  total: number,
): Promise<Received> {
  const result = Promise.withResolvers<Received>();
  const handlers = transferHandlers(pattern, total, result);
  const socket = await net.connectTcp({ hostname: "127.0.0.1", port, handlers, data: undefined });
  try {
    return await result.promise;
  } catch (err) {
    socket.terminate();
    throw err;
  }
}
