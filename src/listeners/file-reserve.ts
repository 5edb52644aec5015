/**
 * File descriptors kept back from listeners, so that what a node must always do still has some when thousands
 * of NodePorts meet a low `nofile` limit: answer `/healthz` and `/readyz` (a probe that hangs gets the pod
 * restarted, and the new one fails the same way), serve admin and `/metrics`, keep the API watch and write
 * Events, and accept connections on the listeners that did bind.
 *
 * A new listener is refused with EMFILE ("too many open files", the limit, the reserve and what to do) once the
 * process's open descriptors reach the soft limit minus the reserve. Counting them (`/proc/self/fd`) costs about
 * 8 ms at 10k descriptors, so it is done at most once per `recountMs` (and when the estimate runs out): between
 * counts every listener taken lowers the estimated headroom by one. The limit is read again at each count, so a
 * limit raised from outside (`prlimit --pid`) lets the failed listeners bind on their next retry.
 */
import type { FileLimit } from "../runtime/types.ts";

/** Descriptors kept for health, admin, the API watch and accepted connections (default; at most a quarter of the limit). */
export const DEFAULT_FILE_RESERVE = 256;
const DEFAULT_RECOUNT_MS = 1_000;

/**
 * Descriptors kept back at `limit`: `reserve`, at most a quarter of the soft limit (a limit of 300 keeps 75, so a
 * small node still binds most of its listeners).
 *
 * @example fileReserveAt({ soft: 1_048_576, hard: 1_048_576 }) // 256
 */
export function fileReserveAt(limit: FileLimit, reserve = DEFAULT_FILE_RESERVE): number {
  return Number.isFinite(limit.soft) ? Math.max(0, Math.min(reserve, Math.floor(limit.soft / 4))) : reserve;
}

export interface FileReserveOptions {
  /** Descriptors to keep (default {@link DEFAULT_FILE_RESERVE}); at most a quarter of the soft limit is kept. 0 keeps none. */
  readonly reserve?: number | undefined;
  /** The open descriptor count (the runtime's `openFiles`); undefined: unknown, listeners are never refused. */
  readonly openFiles: () => number | undefined;
  /** The limit (the runtime's `fileLimit`); undefined: unknown, listeners are never refused. */
  readonly fileLimit: () => FileLimit | undefined;
  /** How long a count is trusted, ms (default 1 s). */
  readonly recountMs?: number | undefined;
  /** Monotonic clock, ms (default `performance.now`). */
  readonly now?: (() => number) | undefined;
}

/** The state of the last count, for metrics and the admin API. */
export interface FileReserveState {
  readonly open: number | undefined;
  readonly limit: FileLimit | undefined;
  /** Descriptors kept back at this limit. */
  readonly reserve: number;
}

/** An EMFILE bind error, as the runtime's own errors carry their code; `limit` and `reserve` name the numbers. */
export interface FileLimitError extends Error {
  readonly code: "EMFILE";
  readonly errno: 24;
  readonly limit?: number | undefined;
  readonly reserve?: number | undefined;
}

/**
 * The reserve itself: {@link take} before each bind, {@link explain} on a bind error.
 *
 * @example
 * const files = new FileReserve({ openFiles: rt.openFiles, fileLimit: rt.fileLimit });
 * const listenTcp = files.guard(rt.listenTcp); // throws EMFILE once binding would eat into the reserve
 * const bindUdp = files.guardAsync(rt.bindUdp); // rejects likewise
 */
export class FileReserve {
  readonly #reserve: number;
  readonly #openFiles: () => number | undefined;
  readonly #fileLimit: () => FileLimit | undefined;
  readonly #recountMs: number;
  readonly #now: () => number;
  /** Listeners that may still be taken before the next count (Infinity: the count is unknown). */
  #headroom = 0;
  #countedAt = Number.NEGATIVE_INFINITY;
  #state: FileReserveState = { open: undefined, limit: undefined, reserve: 0 };

  constructor(options: FileReserveOptions) {
    this.#reserve = Math.max(0, options.reserve ?? DEFAULT_FILE_RESERVE);
    this.#openFiles = options.openFiles;
    this.#fileLimit = options.fileLimit;
    this.#recountMs = options.recountMs ?? DEFAULT_RECOUNT_MS;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Descriptors kept back at `limit` (see {@link fileReserveAt}). */
  reserveAt(limit: FileLimit): number {
    return fileReserveAt(limit, this.#reserve);
  }

  /** The last count (counting now when none was made yet). */
  get state(): FileReserveState {
    if (this.#countedAt === Number.NEGATIVE_INFINITY) this.#count();
    return this.#state;
  }

  /**
   * Take one descriptor for a new listener; throws a {@link FileLimitError} when that would eat into the reserve.
   * A count is trusted for `recountMs`: refusals within it cost nothing (10k failing binds stay cheap), and what
   * was closed meanwhile is seen at the next count (the listeners' retry).
   */
  take(): void {
    if (this.#now() - this.#countedAt >= this.#recountMs) this.#count();
    if (this.#headroom <= 0) throw this.#error(new Error("File descriptor reserve reached"));
    this.#headroom--;
  }

  /**
   * A bind error with the numbers named: an EMFILE from the runtime gets the limit and reserve (and the next
   * {@link take} counts again); any other error is returned as it is.
   */
  explain(err: unknown): unknown {
    if ((err as { code?: unknown } | null)?.code !== "EMFILE" || !(err instanceof Error)) return err;
    this.#headroom = 0;
    this.#countedAt = Number.NEGATIVE_INFINITY;
    return this.#error(err);
  }

  /** A synchronous `bind` (TCP) behind the reserve: {@link take} first, then `bind`, its errors {@link explain}ed. */
  guard<A extends unknown[], R>(bind: (...args: A) => R): (...args: A) => R {
    return (...args) => {
      this.take();
      try {
        return bind(...args);
      } catch (err) {
        throw this.explain(err);
      }
    };
  }

  /** An asynchronous `bind` (UDP) behind the reserve: as {@link guard}, failing by rejection, never by a throw. */
  guardAsync<A extends unknown[], R>(bind: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
    return async (...args) => {
      this.take();
      try {
        return await bind(...args);
      } catch (err) {
        throw this.explain(err);
      }
    };
  }

  #count(): void {
    this.#countedAt = this.#now();
    const limit = this.#fileLimit();
    const open = limit === undefined ? undefined : this.#openFiles();
    const reserve = limit === undefined ? 0 : this.reserveAt(limit);
    this.#state = { open, limit, reserve };
    this.#headroom = limit === undefined || open === undefined || !Number.isFinite(limit.soft) ? Number.POSITIVE_INFINITY : limit.soft - reserve - open;
  }

  #error(err: Error): FileLimitError {
    const { limit, reserve } = this.#state;
    return Object.assign(err, {
      code: "EMFILE" as const,
      errno: 24 as const,
      ...(limit !== undefined && Number.isFinite(limit.soft) ? { limit: limit.soft, reserve } : {}),
    });
  }
}
