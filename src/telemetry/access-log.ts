/**
 * The access log: one JSON line per HTTP request, TCP connection or UDP flow, on stdout next to the
 * structured log (`"msg":"access"`), or appended to a file (`--access-log-file`), carrying the trace id when
 * the request was sampled.
 *
 * With worker processes each line names its worker (`"worker":N`, after `msg`, as the structured log's lines do);
 * a single-process gateway's lines have no such field.
 *
 * Hot path: a record is written as UTF-8 bytes straight into a preallocated batch buffer (no string per line; the
 * line's head up to the entrypoint is kept encoded per millisecond and entrypoint), and `--access-log-sample` below
 * 1 skips most records before that (failures are always logged). The batch is handed to the sink once per flush
 * interval (or when it is full, {@link AccessLogOptions.maxBufferBytes}):
 * - a regular file (`--access-log-file`, or stdout redirected to a file) is written at once with one `write(2)` of the
 *   whole batch, as nginx's buffered `access_log` does: a page-cache copy of at most 64 KiB (~15 µs, once per ~250
 *   lines), and the batch buffer is reused: ~0.45 µs of CPU per line in all, where the asynchronous write below cost
 *   1-2 µs (its thread-pool hand-off; BENCHMARKS.md, "Access log cost");
 * - a pipe (the pod's stdout under a container runtime) is opened again through `/proc/self/fd/N` with O_NONBLOCK (a
 *   file description of our own: fd 1 stays as it is for the structured log) and written synchronously on the next
 *   turn of the event loop until it is full; what it cannot take yet waits in the queue and is tried again 10 ms later. This never blocks, and costs
 *   ~0.7 µs of CPU per line where the asynchronous write below cost ~4 µs (16 thread-pool hops per 64 KiB batch);
 * - anything else (a terminal, a socket, a pipe without /proc) may block, so one write at a time goes to the file
 *   descriptor asynchronously (on Bun off the event loop): a slow sink never blocks the data plane.
 * Queued bytes are bounded ({@link AccessLogOptions.maxQueueBytes}): records that find the queue full are dropped
 * whole and counted ({@link AccessLog.dropped}, `kubegate_access_log_dropped_total`). Writes to a pipe are cut at
 * line ends into pieces of at most PIPE_BUF (4 KiB), which the kernel keeps whole, so lines of worker processes and
 * of the structured log sharing the pod's stdout never interleave. {@link AccessLog.reopen} (SIGUSR1) reopens the file
 * after logrotate moved it; {@link AccessLog.close} writes what is left.
 *
 * @example
 * const accessLog = new AccessLog(); // stdout, flushed every 100 ms
 * // proxies: accessLog.http(...) / accessLog.stream(...) — see the methods
 * await accessLog.close(); // on shutdown
 */
import { close as closeFd, closeSync, constants, fstatSync, openSync, write as writeFd, writeSync } from "node:fs";

/** Where and how the access log writes. */
export interface AccessLogOptions {
  /**
   * Receives a batch of lines joined by "\n", without the final newline, synchronously (tests). Default: the
   * {@link file} (or stdout), written asynchronously through the bounded queue.
   */
  readonly write?: ((lines: string) => void) | undefined;
  /** Append to this file, opened now and again on {@link AccessLog.reopen} (default: stdout). */
  readonly file?: string | undefined;
  /** Encoded bytes waiting for the sink at most (default 4 MiB): records beyond it are dropped and counted. */
  readonly maxQueueBytes?: number | undefined;
  /** Share of successful records logged, 0..1 (default 1); failures (HTTP status >= 500, a gateway reason) always are. */
  readonly sample?: number | undefined;
  /** Uniform in [0, 1) (tests; default Math.random). */
  readonly random?: (() => number) | undefined;
  /** Longest a line waits in the buffer, ms (default 100). */
  readonly flushMs?: number | undefined;
  /** Size of a batch in bytes: a full one is flushed at once (default 64 KiB). */
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

/** JSON string quoting: plain strings (the common case) are copied byte for byte; others go through JSON.stringify. */
function q(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) return JSON.stringify(s);
  }
  return `"${s}"`;
}

/** Writes to a pipe up to this size are atomic (POSIX PIPE_BUF on Linux). */
const PIPE_BUF = 4096;
/** A write the sink refused for now (a non-blocking pipe that is full) is tried again after this, ms. */
const RETRY_MS = 10;
/** Bytes of a line besides its strings, at most (keys, numbers, the head's time and worker): room checked per line. */
const FIXED_BYTES = 512;

/** Stream close reasons that are not failures (sampled like successful requests). */
const CLEAN_CLOSE = new Set(["client_closed", "upstream_closed", "idle_timeout", "closed"]);

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (s: string): Uint8Array => encoder.encode(s);
const K_CLIENT = bytes(`,"client":`);
const K_ENDPOINT = bytes(`,"endpoint":`);
const K_METHOD = bytes(`,"method":`);
const K_PATH = bytes(`,"path":`);
const K_STATUS = bytes(`,"status":`);
const K_BYTES_IN = bytes(`,"bytes_in":`);
const K_BYTES_OUT = bytes(`,"bytes_out":`);
const K_DURATION = bytes(`,"duration_ms":`);
const K_ERROR = bytes(`,"error":`);
const K_CLOSE = bytes(`,"close":`);
const K_TRACE = bytes(`,"trace_id":`);

/** The line's head up to the entrypoint's value, encoded, for one millisecond, protocol and entrypoint. */
interface Head {
  ms: number;
  protocol: string;
  entrypoint: string;
  bytes: Uint8Array;
}

/** A buffered JSON-lines access log. */
export class AccessLog {
  readonly #write: ((lines: string) => void) | undefined;
  readonly #file: string | undefined;
  readonly #flushMs: number;
  readonly #max: number;
  readonly #maxQueue: number;
  readonly #sample: number;
  readonly #random: () => number;
  readonly #now: () => number;
  /** `"msg":"access",` plus the worker field when set. */
  readonly #msg: string;
  /** The batch being filled, and how much of it is. */
  #buf: Uint8Array;
  #pos = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastSecond = -1;
  #lastStamp = "";
  readonly #head: Head = { ms: -1, protocol: "", entrypoint: "", bytes: new Uint8Array(0) };
  /** The sink (fd 1 or the file), when {@link AccessLogOptions.write} is not set. */
  #fd = 1;
  /** The sink is a pipe: writes are cut into atomic pieces. */
  #pipe = false;
  /** The sink is a regular file: batches are written at once (see the file comment). */
  #regular = false;
  /** The pipe opened again without blocking (`/proc/self/fd/N`, Linux): written synchronously, never waits. */
  #nonBlocking: number | undefined;
  /** A write to the non-blocking pipe found it full: the next try. */
  #retry: ReturnType<typeof setTimeout> | undefined;
  /** A write of the non-blocking pipe is scheduled for the next turn. */
  #drainSoon = false;
  /** Batches waiting, oldest first, with their line counts; one write is in flight at a time. */
  readonly #queue: { bytes: Uint8Array; lines: number }[] = [];
  #queued = 0;
  /** Lines in the batch being filled. */
  #lines = 0;
  #writing = false;
  #reopenAsked = false;
  readonly #idle: (() => void)[] = [];
  #dropped = 0;
  /** {@link close} has run: the sink takes nothing more. */
  #closed = false;

  constructor(options: AccessLogOptions = {}) {
    this.#write = options.write;
    this.#file = options.file;
    this.#flushMs = options.flushMs ?? 100;
    this.#max = options.maxBufferBytes ?? 64 * 1024;
    this.#buf = new Uint8Array(this.#max);
    this.#maxQueue = options.maxQueueBytes ?? 4 * 1024 * 1024;
    this.#sample = options.sample ?? 1;
    if (!(this.#sample >= 0 && this.#sample <= 1)) throw new Error(`Invalid access log sample ${this.#sample}: use a ratio from 0 to 1`);
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
    const worker = options.worker;
    if (worker !== undefined && !(Number.isInteger(worker) && worker >= 0)) throw new Error(`Invalid access log worker ${worker}: use a whole number of 0 or more`);
    this.#msg = worker === undefined ? `"msg":"access",` : `"msg":"access","worker":${worker},`;
    if (this.#write === undefined) this.#open();
  }

  /** Records dropped because the sink could not keep up (or failed), since the start. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Whether to log a request now: a failure always, a success with probability `sample`. A caller that asks first
   * (and then calls {@link httpKept}) builds no record for the requests sampling drops.
   */
  keeps(success: boolean): boolean {
    return !this.#skip(success);
  }

  /** Log one HTTP request (a successful one with probability `sample`). */
  http(r: HttpAccessRecord): void {
    if (this.keeps(r.status < 500 && r.error === "")) this.httpKept(r);
  }

  /** Log one HTTP request that {@link keeps} already let through. */
  httpKept(r: HttpAccessRecord): void {
    const { client, endpoint, method, path, error, traceId } = r;
    let p = this.#begin("http", r.entrypoint, client.length + endpoint.length + method.length + path.length + error.length + traceId.length);
    const b = this.#buf;
    p = str(b, lit(b, p, K_CLIENT), client);
    p = str(b, lit(b, p, K_ENDPOINT), endpoint);
    p = str(b, lit(b, p, K_METHOD), method);
    p = str(b, lit(b, p, K_PATH), path);
    p = num(b, lit(b, p, K_STATUS), r.status);
    p = num(b, lit(b, p, K_BYTES_IN), r.bytesIn);
    p = num(b, lit(b, p, K_BYTES_OUT), r.bytesOut);
    p = ms(b, lit(b, p, K_DURATION), r.durationMs);
    if (error) p = str(b, lit(b, p, K_ERROR), error);
    if (traceId) p = str(b, lit(b, p, K_TRACE), traceId);
    this.#end(p);
  }

  /** Log one TCP connection or UDP flow (one that closed cleanly with probability `sample`). */
  stream(r: StreamAccessRecord): void {
    if (this.#skip(CLEAN_CLOSE.has(r.close))) return;
    const { client, endpoint, close, traceId } = r;
    let p = this.#begin(r.protocol, r.entrypoint, client.length + endpoint.length + close.length + traceId.length);
    const b = this.#buf;
    p = str(b, lit(b, p, K_CLIENT), client);
    p = str(b, lit(b, p, K_ENDPOINT), endpoint);
    p = num(b, lit(b, p, K_BYTES_IN), r.bytesIn);
    p = num(b, lit(b, p, K_BYTES_OUT), r.bytesOut);
    p = ms(b, lit(b, p, K_DURATION), r.durationMs);
    p = str(b, lit(b, p, K_CLOSE), close);
    if (traceId) p = str(b, lit(b, p, K_TRACE), traceId);
    this.#end(p);
  }

  /** Whether to leave this record out: sampled out (`sampled`: it may be), or no room in the queue (counted). */
  #skip(sampled: boolean): boolean {
    if (sampled && this.#sample < 1 && this.#random() >= this.#sample) return true;
    if (this.#queued + this.#pos < this.#maxQueue && !this.#closed) return false;
    this.#dropped++;
    return true;
  }

  /**
   * Make room for a line whose strings (besides the entrypoint) have `chars` UTF-16 units, write its head, and
   * return where the rest goes. JSON.stringify turns a unit into 6 bytes at most (`\u001f`), UTF-8 into 3.
   */
  #begin(protocol: string, entrypoint: string, chars: number): number {
    const need = FIXED_BYTES + 6 * (chars + entrypoint.length);
    if (this.#pos + need > this.#buf.length) {
      this.flush();
      if (need > this.#buf.length) this.#buf = new Uint8Array(need); // one line longer than a batch: a batch of its own
    }
    const ms = this.#now();
    const h = this.#head;
    if (ms !== h.ms || protocol !== h.protocol || entrypoint !== h.entrypoint) {
      h.ms = ms;
      h.protocol = protocol;
      h.entrypoint = entrypoint;
      h.bytes = bytes(`{"time":"${this.#time(ms)}","level":"info",${this.#msg}"protocol":"${protocol}","entrypoint":${q(entrypoint)}`);
    }
    return lit(this.#buf, this.#pos, h.bytes);
  }

  /** Close the line that ends before `p`; flush a full batch, or start the flush timer. */
  #end(p: number): void {
    const b = this.#buf;
    b[p++] = 0x7d; // }
    b[p++] = 0x0a; // \n
    this.#pos = p;
    this.#lines++;
    if (p + FIXED_BYTES > b.length) this.flush();
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.flush();
      }, this.#flushMs);
      (this.#timer as { unref?: () => void }).unref?.();
    }
  }

  /** ISO time of `ms`, the date part formatted at most once per second. */
  #time(ms: number): string {
    const sec = Math.floor(ms / 1000);
    if (sec !== this.#lastSecond) {
      this.#lastSecond = sec;
      this.#lastStamp = new Date(sec * 1000).toISOString().slice(0, 19);
    }
    return `${this.#lastStamp}.${String(ms - sec * 1000).padStart(3, "0")}Z`;
  }

  /** Hand the batched lines to the sink now (the default sink writes them asynchronously). */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const n = this.#pos;
    if (n === 0) return;
    const batch = this.#buf.subarray(0, n);
    const lines = this.#lines;
    this.#pos = 0;
    this.#lines = 0;
    if (this.#write !== undefined) return this.#write(decoder.decode(batch.subarray(0, n - 1)));
    if (!this.#writing && this.#queue.length === 0) {
      if (this.#reopenAsked) this.#reopenNow();
      if (this.#regular) return this.#writeNow(batch, lines);
    }
    // The queue owns the batch now; the next one gets a new buffer.
    this.#buf = new Uint8Array(this.#max);
    this.#queue.push({ bytes: batch, lines });
    this.#queued += n;
    if (this.#nonBlocking === undefined) return this.#pump();
    // The non-blocking pipe is written on the next turn, in a frame of its own: a full pipe's EAGAIN is thrown there,
    // not through the request path's optimized frames; after one, only the retry timer tries again.
    if (this.#retry === undefined && !this.#drainSoon) {
      this.#drainSoon = true;
      setImmediate(() => {
        this.#drainSoon = false;
        this.#pump();
      });
    }
  }

  /** Reopen the file (logrotate moved it; SIGUSR1): lines queued now go to the new one. No-op on stdout. */
  reopen(): void {
    if (this.#file === undefined || this.#write !== undefined) return;
    this.#reopenAsked = true;
    if (!this.#writing) this.#pump();
  }

  /**
   * Flush, and resolve once everything queued is written, or after `timeoutMs` when the sink does not take it
   * (shutdown); then the file is closed. Records logged after this are dropped.
   */
  async close(timeoutMs = 2_000): Promise<void> {
    this.flush();
    if (this.#writing || this.#queue.length > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([new Promise<void>((resolve) => this.#idle.push(resolve)), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    }
    if (this.#write === undefined) this.#closed = true;
    if (this.#retry !== undefined) {
      clearTimeout(this.#retry);
      this.#retry = undefined;
    }
    if (this.#nonBlocking !== undefined) {
      closeSync(this.#nonBlocking);
      this.#nonBlocking = undefined;
    }
    if (this.#file !== undefined && this.#write === undefined && !this.#writing) closeSync(this.#fd);
  }

  #open(): void {
    if (this.#file !== undefined) this.#fd = openSync(this.#file, "a");
    try {
      const st = fstatSync(this.#fd);
      this.#pipe = st.isFIFO();
      this.#regular = st.isFile();
    } catch {
      this.#pipe = false;
      this.#regular = false;
    }
    const old = this.#nonBlocking;
    this.#nonBlocking = undefined;
    if (old !== undefined) closeFd(old, () => {});
    if (this.#pipe) {
      // A pipe of our own without O_NONBLOCK (the pod's stdout) would block a synchronous write when full; opened again
      // through /proc, it gets a file description of its own that never blocks (fd 1 itself is left as it is).
      try {
        this.#nonBlocking = openSync(`/proc/self/fd/${this.#fd}`, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch {
        this.#nonBlocking = undefined; // no /proc (not Linux): the asynchronous path
      }
    }
  }

  /** Open the file again (between writes); when it cannot be opened, keep writing to the old one. */
  #reopenNow(): void {
    this.#reopenAsked = false;
    const old = this.#fd;
    const [pipe, regular] = [this.#pipe, this.#regular];
    try {
      this.#open();
      closeFd(old, () => {});
    } catch {
      this.#fd = old;
      this.#pipe = pipe;
      this.#regular = regular;
    }
  }

  /** Write a batch to a regular file now (its buffer stays the batch buffer); a failed write drops its lines, counted. */
  #writeNow(batch: Uint8Array, lines: number): void {
    let done = 0;
    try {
      while (done < batch.length) done += writeSync(this.#fd, batch, done, batch.length - done);
    } catch {
      this.#dropped += lines; // the sink failed (full disk, I/O error): this batch is lost
    }
  }

  /** How much of `b` to write in one go: all of it, or for a pipe up to the last line end within PIPE_BUF. */
  #piece(b: Uint8Array): number {
    let n = b.length;
    // A pipe keeps a write of at most PIPE_BUF whole: cut at the last line end within it.
    if (this.#pipe && n > PIPE_BUF) {
      n = b.lastIndexOf(10, PIPE_BUF - 1) + 1;
      if (n === 0) n = b.indexOf(10) + 1; // one line longer than PIPE_BUF: it cannot be atomic anyway
    }
    return n;
  }

  /**
   * Write the queue to the non-blocking pipe now, piece by piece, until it is empty or the pipe is full (then again
   * in RETRY_MS). A piece of at most PIPE_BUF is written whole or not at all (EAGAIN), so lines stay whole.
   */
  #drainNonBlocking(fd: number): void {
    for (;;) {
      const next = this.#queue[0];
      if (next === undefined) {
        for (const resolve of this.#idle.splice(0)) resolve();
        return;
      }
      const b = next.bytes;
      let written: number;
      try {
        written = writeSync(fd, b, 0, this.#piece(b));
      } catch (err) {
        if ((err as { code?: string }).code === "EAGAIN") {
          this.#retry ??= setTimeout(() => {
            this.#retry = undefined;
            this.#pump();
          }, RETRY_MS);
          return;
        }
        // The sink failed (the reader is gone): this batch is lost, counted as dropped.
        this.#queue.shift();
        this.#queued -= b.length;
        this.#dropped += next.lines;
        continue;
      }
      if (written < b.length) {
        next.bytes = b.subarray(written);
        this.#queued -= written;
      } else {
        this.#queue.shift();
        this.#queued -= b.length;
      }
    }
  }

  /** Start the next write unless one is in flight; reopen between writes when asked. */
  #pump(): void {
    if (this.#writing) return;
    if (this.#reopenAsked) this.#reopenNow();
    if (this.#nonBlocking !== undefined) return this.#drainNonBlocking(this.#nonBlocking);
    const next = this.#queue[0];
    if (next === undefined) {
      for (const resolve of this.#idle.splice(0)) resolve();
      return;
    }
    const b = next.bytes;
    const n = this.#piece(b);
    this.#writing = true;
    writeFd(this.#fd, b, 0, n, null, (err, written) => {
      this.#writing = false;
      if (err) {
        if ((err as { code?: string }).code === "EAGAIN") {
          setTimeout(() => this.#pump(), RETRY_MS);
          return;
        }
        // The sink failed (closed pipe, full disk): this batch is lost, counted as dropped.
        this.#queue.shift();
        this.#queued -= b.length;
        this.#dropped += next.lines;
      } else if (written < b.length) {
        next.bytes = b.subarray(written);
        this.#queued -= written;
      } else {
        this.#queue.shift();
        this.#queued -= b.length;
      }
      this.#pump();
    });
  }
}

/** Copy `src` into `b` at `p`; returns the end. */
function lit(b: Uint8Array, p: number, src: Uint8Array): number {
  const n = src.length;
  if (n > 32) {
    b.set(src, p);
    return p + n;
  }
  for (let i = 0; i < n; i++) b[p + i] = src[i]!;
  return p + n;
}

/** `s` as a JSON string literal at `p` (UTF-8); returns the end. Plain ASCII is copied, anything else stringified. */
function str(b: Uint8Array, p: number, s: string): number {
  const start = p;
  b[p++] = 0x22;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) return start + encoder.encodeInto(JSON.stringify(s), b.subarray(start)).written;
    b[p++] = c;
  }
  b[p++] = 0x22;
  return p;
}

/** ASCII `s` at `p`. */
function ascii(b: Uint8Array, p: number, s: string): number {
  for (let i = 0; i < s.length; i++) b[p++] = s.charCodeAt(i);
  return p;
}

/** A number as JSON writes it (`String(n)`): whole numbers of 0..2^53 by hand, others through String. */
function num(b: Uint8Array, p: number, n: number): number {
  if (!(n >= 0 && n <= Number.MAX_SAFE_INTEGER && Math.floor(n) === n)) return ascii(b, p, String(n));
  if (n < 10) {
    b[p] = 48 + n;
    return p + 1;
  }
  let digits = 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++;
  for (let i = p + digits - 1, x = n; i >= p; i--, x = Math.floor(x / 10)) b[i] = 48 + (x % 10);
  return p + digits;
}

/**
 * `round(ms)` as String writes it. By hand for k = ms in µs below 10^15: k / 1000 has at most 15 significant digits,
 * so its shortest round-trip form (what String prints) is the decimal k / 1000 itself.
 */
function ms(b: Uint8Array, p: number, value: number): number {
  const k = Math.round(value * 1000);
  if (!(k >= 0 && k < 1e15)) return ascii(b, p, String(round(value)));
  const whole = Math.floor(k / 1000);
  let frac = k - whole * 1000;
  p = num(b, p, whole);
  if (frac === 0) return p;
  b[p++] = 0x2e; // .
  b[p++] = 48 + Math.floor(frac / 100);
  frac %= 100;
  if (frac === 0) return p;
  b[p++] = 48 + Math.floor(frac / 10);
  frac %= 10;
  if (frac !== 0) b[p++] = 48 + frac;
  return p;
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
