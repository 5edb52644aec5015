/**
 * Streaming helpers for the HTTP forwarder's large-body tests: a seeded block generator, a pump that
 * honours backpressure (write what the socket takes, continue on drain), and RSS sampling.
 */
import { readFileSync } from "node:fs";
import type { TcpSocket } from "../../src/runtime/types.ts";

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
const BLOCK = MiB;

/**
 * A deterministic byte stream: one xorshift-filled 1 MiB block, with the block's index stamped into
 * its first 8 bytes so reordered, dropped or repeated blocks change the hash.
 */
export class SeededStream {
  readonly #base = new Uint8Array(BLOCK);
  #index = 0;
  #left: number;
  readonly hasher = new Bun.CryptoHasher("sha256");

  constructor(readonly total: number, seed = 0x9e3779b9) {
    this.#left = total;
    const w = new Uint32Array(this.#base.buffer);
    let x = seed | 0 || 1;
    for (let i = 0; i < w.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      w[i] = x >>> 0;
    }
  }

  /** The next block (a fresh array: the socket may still hold the previous one), or null at the end. */
  next(): Uint8Array | null {
    if (this.#left === 0) return null;
    const n = Math.min(BLOCK, this.#left);
    const b = this.#base.slice(0, n);
    new DataView(b.buffer).setFloat64(0, this.#index++);
    this.#left -= n;
    this.hasher.update(b);
    return b;
  }
}

/**
 * Writes a stream to a socket with backpressure. Call {@link onDrain} from the socket's `drain` handler.
 * `written` counts bytes the socket accepted.
 */
export class Pump {
  written = 0;
  #pending: Uint8Array | null = null;
  #done = false;
  readonly finished = Promise.withResolvers<void>();

  constructor(readonly socket: TcpSocket<unknown>, readonly source: { next(): Uint8Array | null }) {}

  /** True while the socket refuses more bytes (waiting for drain). */
  get blocked(): boolean {
    return this.#pending !== null;
  }

  start(): void {
    this.onDrain();
  }

  onDrain(): void {
    if (this.#done) return;
    for (;;) {
      const chunk = this.#pending ?? this.source.next();
      this.#pending = null;
      if (!chunk) {
        this.#done = true;
        this.finished.resolve();
        return;
      }
      const n = this.socket.write(chunk);
      if (n < 0) {
        this.#done = true;
        this.finished.reject(new Error("Socket closed while pumping"));
        return;
      }
      this.written += n;
      if (n < chunk.length) {
        this.#pending = chunk.subarray(n);
        return;
      }
    }
  }
}

/** Resident set size of this process, after a full GC. */
export function rss(): number {
  Bun.gc(true);
  return process.memoryUsage().rss;
}

/** Samples RSS every `everyMs` until stopped; `max` is the highest seen. */
export class RssSampler {
  max = 0;
  readonly #timer: ReturnType<typeof setInterval>;
  constructor(everyMs = 50) {
    this.max = process.memoryUsage().rss;
    this.#timer = setInterval(() => {
      this.max = Math.max(this.max, process.memoryUsage().rss);
    }, everyMs);
  }
  stop(): number {
    clearInterval(this.#timer);
    this.max = Math.max(this.max, process.memoryUsage().rss);
    return this.max;
  }
}

/** The HTTP forwarder in a child process (see http-proxy-child.ts), with its memory readable from /proc. */
export interface ProxyChild extends AsyncDisposable {
  readonly port: number;
  readonly pid: number;
  /** Resident set size now, bytes. */
  rss(): number;
  /** Peak resident set size so far (VmHWM), bytes. */
  peakRss(): number;
}

function procStatusKiB(pid: number, field: string): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
  if (!m) throw new Error(`No ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

/** Start the forwarder in a child process in front of 127.0.0.1:`upstreamPort`. */
export async function startProxyChild(upstreamPort: number): Promise<ProxyChild> {
  const proc = Bun.spawn([process.execPath, `${import.meta.dir}/http-proxy-child.ts`, String(upstreamPort)], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = proc.stdout.getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`Proxy child exited before listening (code ${await proc.exited})`);
    line += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const { port } = JSON.parse(line) as { port: number };
  return {
    port,
    pid: proc.pid,
    rss: () => procStatusKiB(proc.pid, "VmRSS") * 1024,
    peakRss: () => procStatusKiB(proc.pid, "VmHWM") * 1024,
    async [Symbol.asyncDispose]() {
      await proc.stdin.end();
      const timer = setTimeout(() => proc.kill(), 2000);
      await proc.exited;
      clearTimeout(timer);
    },
  };
}
