/**
 * Jittered exponential backoff for the reflector's retry loop, with an injectable clock and random
 * source so tests can check exact delays without waiting for them.
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
