/**
 * Binding sockets without stalling the event loop, and retrying the ones that failed: the one unit the
 * listener manager and the service-health servers share, plus the words for a failed bind.
 *
 * - {@link BindQueue.bind} binds the first `syncBinds` items at once; the rest wait in a queue that is
 *   worked off in slices of about `sliceMs`, with the event loop running between slices (the first
 *   snapshot at 10k Services: routes switch, watches are read and health is answered meanwhile).
 * - A queued item whose turn comes is bound only if still `wanted` (a later snapshot may have dropped it).
 * - While the owner says something failed, a timer calls its `retry` every `retryIntervalMs`.
 * - {@link BindQueue.settled} waits for the queue to empty and for binds the owner {@link BindQueue.track}s
 *   (asynchronous ones, e.g. UDP sockets).
 *
 * What a bind is, and what failing means, stay the owner's: the queue only decides when.
 */
import { hostPort } from "./desired.ts";

export interface BindQueueOptions<T> {
  /** Binds one item now. A failure is the owner's to record; `anyFailed` then reports it for a retry. */
  readonly bind: (item: T) => void;
  /** Whether a queued item is still to be bound when its turn comes (default: always). */
  readonly wanted?: ((item: T) => boolean) | undefined;
  /** Whether anything failed to bind and waits for a retry (asked by {@link BindQueue.scheduleRetry}). */
  readonly anyFailed: () => boolean;
  /** Binds again what failed; run by the retry timer (the owner calls {@link BindQueue.scheduleRetry} after). */
  readonly retry: () => void;
  /** Called when the queue empties or is dropped (bind states changed). */
  readonly onIdle?: (() => void) | undefined;
  /** Items bound within {@link BindQueue.bind} while nothing is queued (default: all of them). */
  readonly syncBinds?: number | undefined;
  /** How long one slice of queued binds runs before yielding to the event loop, ms (default 5). */
  readonly sliceMs?: number | undefined;
  /** How often `retry` runs while anything failed, ms (default 5 s; 0: never, only when the owner retries). */
  readonly retryIntervalMs?: number | undefined;
}

const DEFAULT_SLICE_MS = 5;
const DEFAULT_RETRY_INTERVAL_MS = 5_000;

/**
 * When to bind: now, in a later slice, or again on the retry timer. Close it to drop the queue and stop the timer.
 *
 * @example
 * const binds = new BindQueue<Slot>({ bind: (s) => listen(s), anyFailed: () => failed.size > 0, retry: () => retryFailed(), syncBinds: 256 });
 * binds.bind(newSlots); // 256 now, the rest in slices
 * binds.scheduleRetry(); // arm (or stop) the retry timer
 * await binds.settled();
 */
export class BindQueue<T> {
  readonly #bind: (item: T) => void;
  readonly #wanted: (item: T) => boolean;
  readonly #anyFailed: () => boolean;
  readonly #retry: () => void;
  readonly #onIdle: () => void;
  readonly #syncBinds: number;
  readonly #sliceMs: number;
  readonly #retryIntervalMs: number;
  /** Items waiting, in the order given; `#at` is the next one. */
  #queue: T[] = [];
  #at = 0;
  readonly #queued = new Set<T>();
  /** Resolved when the queue empties; set while it is not empty. */
  #done: PromiseWithResolvers<void> | undefined;
  #sliceTimer: ReturnType<typeof setTimeout> | undefined;
  /** The queue's completion and the owner's asynchronous binds. */
  readonly #inFlight = new Set<Promise<unknown>>();
  #retryTimer: ReturnType<typeof setInterval> | undefined;
  #failing = false;
  #closed = false;

  constructor(options: BindQueueOptions<T>) {
    this.#bind = options.bind;
    this.#wanted = options.wanted ?? (() => true);
    this.#anyFailed = options.anyFailed;
    this.#retry = options.retry;
    this.#onIdle = options.onIdle ?? (() => {});
    this.#syncBinds = options.syncBinds ?? Number.POSITIVE_INFINITY;
    this.#sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
    this.#retryIntervalMs = options.retryIntervalMs ?? DEFAULT_RETRY_INTERVAL_MS;
  }

  /** Bind `items` (none bound, none queued): up to `syncBinds` now when nothing is queued, the rest in slices. */
  bind(items: Iterable<T>): void {
    if (this.#closed) return;
    let now = 0;
    for (const item of items) {
      if (now < this.#syncBinds && this.#queue.length === this.#at) {
        now++;
        this.#bind(item);
      } else {
        this.#queue.push(item);
        this.#queued.add(item);
      }
    }
    if (this.#queue.length !== this.#at && this.#done === undefined) {
      const done = Promise.withResolvers<void>();
      this.#done = done;
      this.track(done.promise);
      this.#sliceTimer = setTimeout(() => this.#slice(), 0);
    }
  }

  /** Whether `item` waits in the queue (neither bound nor failed yet). */
  queued(item: T): boolean {
    return this.#queued.has(item);
  }

  /** Count `bind` (an asynchronous bind of the owner's) as in flight until it settles (see {@link settled}). */
  track(bind: Promise<unknown>): void {
    this.#inFlight.add(bind);
    void bind.finally(() => this.#inFlight.delete(bind));
  }

  /** Resolves once nothing is queued and no tracked bind is in flight. */
  async settled(): Promise<void> {
    while (this.#inFlight.size !== 0) await Promise.all(this.#inFlight);
  }

  /** Whether something had failed at the last {@link scheduleRetry}. */
  get failing(): boolean {
    return this.#failing;
  }

  /** Ask the owner whether anything failed: arm the retry timer if so (and it is not running), else stop it. */
  scheduleRetry(): void {
    const failing = this.#anyFailed();
    this.#failing = failing;
    if (!failing || this.#closed) return this.#stopRetry();
    if (this.#retryTimer !== undefined || this.#retryIntervalMs <= 0) return;
    this.#retryTimer = setInterval(this.#retry, this.#retryIntervalMs);
    (this.#retryTimer as { unref?: () => void }).unref?.();
  }

  /** Drop the queue (its items are never bound), stop the retry timer, and bind nothing from now on. */
  close(): void {
    this.#closed = true;
    this.#stopRetry();
    clearTimeout(this.#sliceTimer);
    this.#finish();
  }

  /** Bind queued items for about `sliceMs`, then yield to the event loop (or finish). */
  #slice(): void {
    this.#sliceTimer = undefined;
    const started = performance.now();
    const queue = this.#queue;
    while (this.#at < queue.length) {
      const item = queue[this.#at++]!;
      this.#queued.delete(item);
      if (this.#wanted(item)) this.#bind(item);
      if (performance.now() - started >= this.#sliceMs && this.#at < queue.length) {
        this.#sliceTimer = setTimeout(() => this.#slice(), 0);
        return;
      }
    }
    this.#finish();
    this.scheduleRetry();
  }

  /** The queue is empty (worked off or dropped): reset it and resolve its completion. */
  #finish(): void {
    this.#queue = [];
    this.#at = 0;
    this.#queued.clear();
    const done = this.#done;
    this.#done = undefined;
    this.#onIdle();
    done?.resolve();
  }

  #stopRetry(): void {
    if (this.#retryTimer !== undefined) clearInterval(this.#retryTimer);
    this.#retryTimer = undefined;
  }
}

/** What to do when the file descriptor limit stops a bind, said wherever it does (log, status, Event). */
export const FILE_LIMIT_ADVICE = "raise the nofile limit (ulimit -n, systemd LimitNOFILE=, the container runtime's nofile ulimit) or narrow --nodeport-addresses";

/** Why a bind failed, by errno code: the words for people, and the `reason` label of `kubegate_listener_bind_failures`. */
const bindReasons: Readonly<Record<string, { readonly text: string; readonly label: string }>> = {
  EADDRINUSE: { text: "address already in use", label: "address_in_use" },
  EADDRNOTAVAIL: { text: "address not available on this host", label: "address_not_available" },
  EACCES: { text: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE; a LoadBalancer port can be moved up with --lb-port-offset)", label: "permission_denied" },
  EPERM: { text: "permission denied", label: "permission_denied" },
  EMFILE: { text: `too many open files (EMFILE)`, label: "too_many_open_files" },
  ENFILE: { text: "the system's file table is full (ENFILE): raise fs.file-max", label: "too_many_open_files" },
};

/** Bind failure reasons as `kubegate_listener_bind_failures` labels them; anything else is `other`. */
export type BindFailureReason = "address_in_use" | "address_not_available" | "permission_denied" | "too_many_open_files" | "other";

/**
 * An EMFILE bind error's reason: the limit and the reserve when the error carries them (see `FileReserve`), and
 * what to do. Only the limit and reserve are named, not the open count, so the reason stays the same across
 * retries (logged and reported once).
 */
function fileLimitReason(err: { limit?: unknown; reserve?: unknown }): string {
  const limit = typeof err.limit === "number" ? err.limit : undefined;
  const reserve = typeof err.reserve === "number" && err.reserve > 0 ? err.reserve : undefined;
  const detail =
    limit === undefined
      ? ""
      : reserve === undefined
        ? `: the limit of ${limit} is reached`
        : `: the limit is ${limit}, of which ${reserve} are kept for health, admin and the API watch`;
  return `too many open files (EMFILE${detail}): ${FILE_LIMIT_ADVICE}`;
}

/**
 * Why a bind failed, for people: `address already in use` for EADDRINUSE, `too many open files (EMFILE...)`
 * and what to do for EMFILE, else the error's message (a string is its own reason).
 *
 * @example bindReason(Object.assign(new Error("listen EADDRINUSE"), { code: "EADDRINUSE" })) // "address already in use"
 */
export function bindReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "EMFILE") return fileLimitReason(err as { limit?: unknown; reserve?: unknown });
  return (typeof code === "string" ? bindReasons[code]?.text : undefined) ?? (err instanceof Error ? err.message : String(err));
}

/**
 * The `reason` label of a bind error message made by {@link bindErrorMessage} (the listener states carry the
 * message only, across processes too).
 *
 * @example bindFailureReason('Cannot bind listener "ns/web:http" on 127.0.0.1:30080: address already in use') // "address_in_use"
 */
export function bindFailureReason(message: string): BindFailureReason {
  if (message.includes("too many open files (EMFILE") || message.includes("(ENFILE)")) return "too_many_open_files";
  for (const { text, label } of Object.values(bindReasons)) if (message.endsWith(`: ${text}`)) return label as BindFailureReason;
  return "other";
}

/**
 * The message for a failed bind: what could not be done, where, and {@link bindReason why}.
 *
 * @example
 * bindErrorMessage(`Cannot bind listener "ns/web:http"`, "127.0.0.1", 30080, err)
 * // 'Cannot bind listener "ns/web:http" on 127.0.0.1:30080: address already in use'
 */
export function bindErrorMessage(action: string, address: string, port: number, err: unknown): string {
  return `${action} on ${hostPort(address, port)}: ${bindReason(err)}`;
}

/**
 * Listeners that are not bound, counted by {@link bindFailureReason} (for `kubegate_listener_bind_failures`),
 * from the listener states of the data plane (`DataPlane.listeners()`).
 *
 * @example bindFailuresByReason(dataPlane.listeners()).get("too_many_open_files") // 181
 */
export function bindFailuresByReason(
  entrypoints: Iterable<{ readonly listeners: readonly { readonly bound: boolean; readonly error?: string | undefined }[] }>,
): Map<BindFailureReason, number> {
  const counts = new Map<BindFailureReason, number>();
  for (const { listeners } of entrypoints) {
    for (const l of listeners) {
      if (l.bound || l.error === undefined) continue;
      const reason = bindFailureReason(l.error);
      counts.set(reason, (counts.get(reason) ?? 0) + 1);
    }
  }
  return counts;
}
