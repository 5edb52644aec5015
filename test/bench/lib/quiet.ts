/**
 * The benchmarks' noise handling: before a measured run, wait (bounded) for other processes on the measured cores
 * to quiet down; after it, run it again (a bounded number of times) when they took too much of a core meanwhile,
 * and keep the quietest run.
 */
import { othersBusyPct } from "./cpu.ts";

/** The noise limits of a benchmark run (the same flags in every script: --max-noise, --noise-retries, --quiet-wait). */
export interface QuietOptions {
  /** A run during which other processes took more than this % of a core is run again. */
  readonly maxNoisePct: number;
  /** How many times a noisy run is repeated at most. */
  readonly noiseRetries: number;
  /** Before each run, wait at most this long (s) for other processes to quiet down; 0 skips the wait. */
  readonly quietWaitS: number;
}

/** What a measured run must say about its noise. */
export interface NoisyRun {
  /** CPU other processes took on the measured cores during the run, % of a core. */
  readonly noisePct: number;
  /** Runs made to get this one. */
  readonly attempts: number;
}

/**
 * Runs measurements quietly on `cores`; `ownPids` are the benchmark's own processes (not noise).
 *
 * @example
 * const quiet = new QuietRunner(opts, () => group.pids(), [0, 1], log);
 * const s = await quiet.measure(() => measureOnce(), (s) => s.target);
 */
export class QuietRunner {
  /** Seconds spent waiting for quiet so far. */
  waitedS = 0;

  constructor(
    readonly options: QuietOptions,
    readonly ownPids: () => readonly number[],
    readonly cores: readonly number[],
    readonly log: (line: string) => void,
  ) {}

  /** Wait (at most `quietWaitS`) until other processes take at most `maxNoisePct` of a core, over 1 s windows. */
  async waitForQuiet(): Promise<void> {
    const { quietWaitS, maxNoisePct } = this.options;
    if (quietWaitS <= 0) return;
    const started = performance.now();
    const deadline = started + quietWaitS * 1000;
    for (let i = 0; i < 600; i++) {
      const pct = await othersBusyPct(this.ownPids(), this.cores, 1_000);
      if (pct <= maxNoisePct) break;
      if (performance.now() >= deadline) {
        this.log(`Still ${Math.round(pct)}% of a core taken by other processes after ${quietWaitS} s: measuring anyway`);
        break;
      }
      if (i === 0) this.log(`Other processes take ${Math.round(pct)}% of a core: waiting for quiet (up to ${quietWaitS} s)`);
    }
    this.waitedS += (performance.now() - started) / 1000;
  }

  /**
   * Run `measure` until other processes took at most `maxNoisePct` of a core during the run (at most
   * `1 + noiseRetries` runs); the quietest run, with its attempt number. `what` names a run in the log.
   */
  async measure<S extends NoisyRun>(measure: () => Promise<S>, what: (s: S) => string): Promise<S> {
    const { maxNoisePct, noiseRetries } = this.options;
    let best: S | undefined;
    for (let attempt = 1; attempt <= 1 + noiseRetries; attempt++) {
      await this.waitForQuiet();
      const s = { ...(await measure()), attempts: attempt };
      if (best === undefined || s.noisePct < best.noisePct) best = s;
      if (s.noisePct <= maxNoisePct) break;
      if (attempt <= noiseRetries) this.log(`Other processes took ${Math.round(s.noisePct)}% of a core during ${what(s)}: running it again`);
    }
    return best!;
  }
}

/** The runs other processes left within `maxNoisePct`, or all of them when none were (as the report's medians use). */
export function quietOrAll<S extends NoisyRun>(runs: readonly S[], maxNoisePct: number): readonly S[] {
  const quiet = runs.filter((s) => s.noisePct <= maxNoisePct);
  return quiet.length ? quiet : runs;
}
