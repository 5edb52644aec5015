/**
 * Waiting between attempts, with an injectable clock and random source so tests can check exact delays without
 * waiting for them: jittered exponential backoff for errors the API server answers, and a shared, rate-bounded
 * probe for the time it does not answer at all.
 */

/** Milliseconds since some fixed point (only differences matter). Defaults to `performance.now()`. */
export type Now = () => number;
/** A number in [0, 1). Defaults to `Math.random`. */
export type Random = () => number;

export interface BackoffOptions {
  /** First delay in ms (default 250). */
  readonly baseMs?: number | undefined;
  /** Largest delay in ms (default 30 000). */
  readonly capMs?: number | undefined;
  /** Growth per failure (default 2). */
  readonly factor?: number | undefined;
  /**
   * Fraction of the delay that is random (default 0.5): the delay is drawn from
   * `[d * (1 - jitter), d]`, so retries of many clients spread out but never collapse to zero.
   */
  readonly jitter?: number | undefined;
  /** After this long healthy (see {@link Backoff.healthy}), the next failure starts again at `baseMs` (default 60 000). */
  readonly resetAfterMs?: number | undefined;
  readonly now?: Now | undefined;
  readonly random?: Random | undefined;
}

/**
 * Delays for consecutive failures: `base * factor^n`, capped, jittered.
 *
 * @example
 * const backoff = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0 });
 * backoff.next(); // 100
 * backoff.next(); // 200
 * backoff.healthy(); // the operation works again; after resetAfterMs the sequence restarts
 */
export class Backoff {
  readonly #base: number;
  readonly #cap: number;
  readonly #factor: number;
  readonly #jitter: number;
  readonly #resetAfter: number;
  readonly #now: Now;
  readonly #random: Random;
  #failures = 0;
  #healthySince: number | undefined;

  constructor(options: BackoffOptions = {}) {
    this.#base = options.baseMs ?? 250;
    this.#cap = options.capMs ?? 30_000;
    this.#factor = options.factor ?? 2;
    this.#jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
    this.#resetAfter = options.resetAfterMs ?? 60_000;
    this.#now = options.now ?? (() => performance.now());
    this.#random = options.random ?? Math.random;
  }

  /** Consecutive failures counted so far (since the last reset). */
  get failures(): number {
    return this.#failures;
  }

  /** The delay before the next retry; counts one more failure. */
  next(): number {
    if (this.#healthySince !== undefined && this.#now() - this.#healthySince >= this.#resetAfter) {
      this.#failures = 0;
    }
    this.#healthySince = undefined;
    const exp = Math.min(this.#cap, this.#base * this.#factor ** this.#failures);
    this.#failures++;
    return Math.round(exp * (1 - this.#jitter * this.#random()));
  }

  /**
   * The operation is working (e.g. a watch stream opened). Calling it again while healthy keeps
   * the original start. If it stays healthy for `resetAfterMs`, the next failure counts as the first.
   */
  healthy(): void {
    this.#healthySince ??= this.#now();
  }

  /** Forget all failures now. */
  reset(): void {
    this.#failures = 0;
    this.#healthySince = undefined;
  }
}

/** The longest wait a `Retry-After` can impose (5 minutes): a larger value is taken as this. */
export const maxRetryAfterMs = 5 * 60_000;

/** What one probe learned. */
export type ProbeResult =
  /** No answer: the connection was refused, reset or timed out. */
  | { readonly answered: false }
  /** An HTTP answer, whatever its status; `retryAfterMs` > 0 when it asked to wait (`Retry-After`). */
  | { readonly answered: true; readonly retryAfterMs: number };

export interface ProbeOptions {
  /** Mean time from one probe's start to the next while there is no answer (default 1000 ms). */
  readonly intervalMs?: number | undefined;
  /**
   * Each gap is drawn from `[interval * (1 - jitter), interval * (1 + jitter)]` (default 0.5), so nodes that lost
   * the server at the same instant drift apart instead of probing (and coming back) in step.
   */
  readonly jitter?: number | undefined;
  readonly now?: Now | undefined;
  readonly random?: Random | undefined;
  /** How to wait (default {@link sleep}); tests drive a hand-made clock with it. */
  readonly sleep?: ((ms: number, signal: AbortSignal) => Promise<void>) | undefined;
}

/**
 * Waits out an outage cheaply. Every caller that got no answer waits on the same probe loop: one probe in flight at
 * most, the next starting a jittered interval after the previous one started (also across outages, so a server
 * that answers probes but not requests cannot cause a hot loop). The first answer releases every waiter, after the
 * `Retry-After` it carried. With no waiter left, the loop stops (its timer and in-flight probe are aborted).
 *
 * @example
 * const probe = new ReachabilityProbe((signal) => pingServer(signal), { intervalMs: 1000 });
 * await probe.untilAnswered(signal); // resolves once a probe got an answer (or signal aborted)
 */
export class ReachabilityProbe {
  readonly #probe: (signal: AbortSignal) => Promise<ProbeResult>;
  readonly #interval: number;
  readonly #jitter: number;
  readonly #now: Now;
  readonly #random: Random;
  readonly #sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly #waiters = new Set<() => void>();
  /** The running loop's controller (aborted when the last waiter leaves). */
  #loop: AbortController | undefined;
  /** Earliest start of the next probe. */
  #nextAt = -Infinity;

  constructor(probe: (signal: AbortSignal) => Promise<ProbeResult>, options: ProbeOptions = {}) {
    this.#probe = probe;
    this.#interval = options.intervalMs ?? 1000;
    this.#jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
    this.#now = options.now ?? (() => performance.now());
    this.#random = options.random ?? Math.random;
    this.#sleep = options.sleep ?? sleep;
  }

  /** Resolves once a probe gets an answer (after its `Retry-After`), or early (without rejecting) when `signal` aborts. */
  untilAnswered(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    const release = () => {
      this.#waiters.delete(release);
      signal?.removeEventListener("abort", leave);
      resolve();
    };
    const leave = () => {
      release();
      if (this.#waiters.size === 0) this.#loop?.abort();
    };
    signal?.addEventListener("abort", leave, { once: true });
    this.#waiters.add(release);
    if (!this.#loop || this.#loop.signal.aborted) void this.#run();
    return promise;
  }

  /** Stop probing now and release every waiter. */
  close(): void {
    this.#loop?.abort();
    for (const release of [...this.#waiters]) release();
  }

  async #run(): Promise<void> {
    const loop = new AbortController();
    this.#loop = loop;
    const { signal } = loop;
    try {
      while (!signal.aborted) {
        const wait = this.#nextAt - this.#now();
        if (wait > 0) await this.#sleep(wait, signal);
        if (signal.aborted) return;
        this.#nextAt = this.#now() + this.#interval * (1 - this.#jitter + 2 * this.#jitter * this.#random());
        const result = await this.#probe(signal).catch((): ProbeResult => ({ answered: false }));
        if (signal.aborted || !result.answered) continue;
        if (result.retryAfterMs > 0) await this.#sleep(Math.min(result.retryAfterMs, maxRetryAfterMs), signal);
        if (signal.aborted) return;
        for (const release of [...this.#waiters]) release();
        return;
      }
    } finally {
      if (this.#loop === loop) this.#loop = undefined;
    }
  }
}

/** Resolve after `ms`, or early (without rejecting) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted || ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
