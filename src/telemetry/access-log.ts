/**
 * The access log: one JSON line per HTTP request, TCP connection or UDP flow, on stdout next to the
 * structured log (`"msg":"access"`), carrying the trace id when the request was sampled.
 *
 * With worker processes each line names its worker (`"worker":N`, after `msg`, as the structured log's lines do);
 * a single-process gateway's lines have no such field.
 *
 * Hot path: a record is one string concatenation appended to a buffer; the buffer is written once
 * per flush interval (or when it grows past {@link AccessLogOptions.maxBufferBytes}), so a busy
 * gateway does one write syscall per interval, not one per request. {@link AccessLog.close} writes
 * what is left.
 *
 * @example
 * const accessLog = new AccessLog(); // stdout, flushed every 100 ms
 * // proxies: accessLog.http(...) / accessLog.tcp(...) — see the methods
 * accessLog.close(); // on shutdown
 */
import { writeStdout } from "../log.ts";

/** Where and how the access log writes. */
export interface AccessLogOptions {
  /** Receives a batch of lines joined by "\n", without the final newline (default: stdout). */
  readonly write?: ((lines: string) => void) | undefined;
  /** Longest a line waits in the buffer, ms (default 100). */
  readonly flushMs?: number | undefined;
  /** Buffered characters that trigger a write at once (default 64 KiB). */
  readonly maxBufferBytes?: number | undefined;
  /** Wall clock (tests). */
  readonly now?: (() => number) | undefined;
  /** The worker process writing (its index): each line gets `"worker":N`. Unset: no such field. */
  readonly worker?: number | undefined;
}

/** One HTTP request, as the HTTP forwarder reports it. */
export interface HttpAccessRecord {
  /** Entrypoint name `namespace/service:port`. */
  readonly entrypoint: string;
  readonly client: string;
  /** `address:port` of the endpoint that answered, or "" when none did. */
  readonly endpoint: string;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  /** Bytes from / to the client during the request. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly durationMs: number;
  /** Why the gateway failed the request (a `ProxyErrorReason`), or "". */
  readonly error: string;
  /** Hex trace id when sampled, or "". */
  readonly traceId: string;
}

/** One TCP connection or UDP flow. */
export interface StreamAccessRecord {
  readonly protocol: "tcp" | "udp";
  readonly entrypoint: string;
  readonly client: string;
  readonly endpoint: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly durationMs: number;
  /** Why it closed: `client_closed`, `upstream_closed`, `idle_timeout`, a `ProxyErrorReason`, ... */
  readonly close: string;
  readonly traceId: string;
}

/** A JSON string literal; plain strings (the common case) skip JSON.stringify. */
function q(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) return JSON.stringify(s);
  }
  return `"${s}"`;
}

/** A buffered JSON-lines access log. */
export class AccessLog {
  readonly #write: (lines: string) => void;
  readonly #flushMs: number;
  readonly #max: number;
  readonly #now: () => number;
  /** `"msg":"access",` plus the worker field when set. */
  readonly #msg: string;
  #lines: string[] = [];
  #size = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastSecond = -1;
  #lastStamp = "";

  constructor(options: AccessLogOptions = {}) {
    this.#write = options.write ?? writeStdout;
    this.#flushMs = options.flushMs ?? 100;
    this.#max = options.maxBufferBytes ?? 64 * 1024;
    this.#now = options.now ?? Date.now;
    const worker = options.worker;
    if (worker !== undefined && !(Number.isInteger(worker) && worker >= 0)) throw new Error(`Invalid access log worker ${worker}: use a whole number of 0 or more`);
    this.#msg = worker === undefined ? `"msg":"access",` : `"msg":"access","worker":${worker},`;
  }

  /** ISO time, the date part formatted at most once per second. */
  #time(): string {
    const ms = this.#now();
    const sec = Math.floor(ms / 1000);
    if (sec !== this.#lastSecond) {
      this.#lastSecond = sec;
      this.#lastStamp = new Date(sec * 1000).toISOString().slice(0, 19);
    }
    return `${this.#lastStamp}.${String(ms - sec * 1000).padStart(3, "0")}Z`;
  }

  /** Log one HTTP request. */
  http(r: HttpAccessRecord): void {
    this.#push(
      `{"time":"${this.#time()}","level":"info",${this.#msg}"protocol":"http","entrypoint":${q(r.entrypoint)},"client":${q(r.client)},"endpoint":${q(r.endpoint)},"method":${q(r.method)},"path":${q(r.path)},"status":${r.status},"bytes_in":${r.bytesIn},"bytes_out":${r.bytesOut},"duration_ms":${round(r.durationMs)}${r.error ? `,"error":${q(r.error)}` : ""}${r.traceId ? `,"trace_id":"${r.traceId}"` : ""}}`,
    );
  }

  /** Log one TCP connection or UDP flow. */
  stream(r: StreamAccessRecord): void {
    this.#push(
      `{"time":"${this.#time()}","level":"info",${this.#msg}"protocol":"${r.protocol}","entrypoint":${q(r.entrypoint)},"client":${q(r.client)},"endpoint":${q(r.endpoint)},"bytes_in":${r.bytesIn},"bytes_out":${r.bytesOut},"duration_ms":${round(r.durationMs)},"close":${q(r.close)}${r.traceId ? `,"trace_id":"${r.traceId}"` : ""}}`,
    );
  }

  #push(line: string): void {
    // A batch stays within the bound (each write at most `maxBufferBytes` plus one line that alone is longer).
    if (this.#lines.length > 0 && this.#size + line.length + 1 > this.#max) this.flush();
    this.#lines.push(line);
    this.#size += line.length + 1;
    if (this.#size >= this.#max) this.flush();
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.flush();
      }, this.#flushMs);
      (this.#timer as { unref?: () => void }).unref?.();
    }
  }

  /** Write the buffered lines now. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const lines = this.#lines;
    if (lines.length === 0) return;
    this.#lines = [];
    this.#size = 0;
    this.#write(lines.join("\n"));
  }

  /** Flush and stop (shutdown). Later records are still written, synchronously batched by the next flush. */
  close(): void {
    this.flush();
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
