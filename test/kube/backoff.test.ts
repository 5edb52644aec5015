import { describe, expect, test } from "bun:test";
import { Backoff, ReachabilityProbe, sleep, type ProbeResult } from "../../src/kube/backoff.ts";

describe("Backoff", () => {
  test("doubles from the base up to the cap (no jitter when random is 0)", () => {
    const b = new Backoff({ baseMs: 250, capMs: 30_000, random: () => 0, now: () => 0 });
    const delays = Array.from({ length: 10 }, () => b.next());
    expect(delays).toEqual([250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    expect(b.failures).toBe(10);
  });

  test("jitter takes up to half the delay off, never more", () => {
    const max = new Backoff({ baseMs: 1000, random: () => 0.999999, now: () => 0 });
    expect(max.next()).toBe(500);
    expect(max.next()).toBe(1000);
    const mid = new Backoff({ baseMs: 1000, random: () => 0.5, now: () => 0 });
    expect(mid.next()).toBe(750);
    const custom = new Backoff({ baseMs: 1000, jitter: 0.2, random: () => 0.5, now: () => 0 });
    expect(custom.next()).toBe(900);
  });

  test("restarts at the base after a healthy period of resetAfterMs", () => {
    let now = 0;
    const b = new Backoff({ baseMs: 100, resetAfterMs: 5000, random: () => 0, now: () => now });
    expect([b.next(), b.next(), b.next()]).toEqual([100, 200, 400]);
    b.healthy();
    now += 4999; // healthy, but not long enough
    expect(b.next()).toBe(800);
    b.healthy();
    now += 1000;
    b.healthy(); // a second call keeps the original start
    now += 4000;
    expect(b.next()).toBe(100);
    expect(b.next()).toBe(200);
  });

  test("reset forgets failures", () => {
    const b = new Backoff({ baseMs: 10, random: () => 0, now: () => 0 });
    b.next();
    b.next();
    b.reset();
    expect(b.failures).toBe(0);
    expect(b.next()).toBe(10);
  });
});

/** "settled" if `p` settled before a zero-delay timer fired, else "pending": no wall-time bound involved. */
async function settledByNextTask(p: Promise<void>): Promise<"settled" | "pending"> {
  let settled = false;
  void p.then(() => (settled = true));
  await new Promise((resolve) => setTimeout(resolve, 0));
  return settled ? "settled" : "pending";
}

describe("sleep", () => {
  test("a sleep is still pending a task later (the control for the cases below)", async () => {
    const ac = new AbortController();
    const slept = sleep(10_000, ac.signal);
    expect(await settledByNextTask(slept)).toBe("pending");
    ac.abort();
    await slept;
  });

  test("an abort ends the sleep at once, without rejecting", async () => {
    const ac = new AbortController();
    const slept = sleep(10_000, ac.signal);
    ac.abort();
    expect(await settledByNextTask(slept)).toBe("settled");
    expect(await slept).toBeUndefined(); // resolves: a rejection would throw here
  });

  test("an already-aborted signal resolves at once", async () => {
    const slept = sleep(10_000, AbortSignal.abort());
    expect(await settledByNextTask(slept)).toBe("settled");
    expect(await slept).toBeUndefined();
  });
});

/** A clock and `sleep` the test moves by hand; `advance` fires what is due and lets the awaiting code run. */
function manualClock() {
  let now = 0;
  const timers = new Set<{ at: number; fire: () => void }>();
  const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
  return {
    now: () => now,
    sleep(ms: number, signal: AbortSignal): Promise<void> {
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = { at: now + ms, fire: resolve };
      timers.add(timer);
      signal.addEventListener("abort", () => (timers.delete(timer), resolve()), { once: true });
      return promise;
    },
    /** Timers not yet fired. */
    get pending(): number {
      return timers.size;
    },
    async advance(ms: number): Promise<void> {
      now += ms;
      for (const t of [...timers]) if (t.at <= now) (timers.delete(t), t.fire());
      await settle();
    },
    settle,
  };
}

/** A probe whose answers the test gives, one call at a time. */
function scriptedProbe(clock: { now: () => number }) {
  const calls: { at: number; signal: AbortSignal; answer: (r: ProbeResult | Error) => void }[] = [];
  const probe = (signal: AbortSignal): Promise<ProbeResult> => {
    const { promise, resolve, reject } = Promise.withResolvers<ProbeResult>();
    calls.push({ at: clock.now(), signal, answer: (r) => (r instanceof Error ? reject(r) : resolve(r)) });
    return promise;
  };
  return { calls, probe, last: () => calls[calls.length - 1]! };
}

const away: ProbeResult = { answered: false };
const back: ProbeResult = { answered: true, retryAfterMs: 0 };

/** Whether each promise has settled, by the time the tasks queued now have run. */
async function settledNow(clock: { settle: () => Promise<unknown> }, ...ps: Promise<void>[]): Promise<boolean[]> {
  const done = ps.map(() => false);
  ps.forEach((p, i) => void p.then(() => (done[i] = true)));
  await clock.settle();
  return done;
}

describe("ReachabilityProbe", () => {
  test("one probe at a time for every waiter, each a jittered interval after the previous one started", async () => {
    const clock = manualClock();
    const { calls, probe, last } = scriptedProbe(clock);
    const randoms = [0, 0.999, 0.5];
    const p = new ReachabilityProbe(probe, { intervalMs: 1000, jitter: 0.5, now: clock.now, sleep: clock.sleep, random: () => randoms.shift()! });
    const waits = [p.untilAnswered(), p.untilAnswered(), p.untilAnswered()];
    await clock.settle();
    expect(calls.map((c) => c.at)).toEqual([0]); // the first probe at once, one for the three waiters
    last().answer(away);
    await clock.advance(499);
    expect(calls).toHaveLength(1);
    await clock.advance(1); // gap = 1000 * (0.5 + 1 * 0): 500 ms
    expect(calls.map((c) => c.at)).toEqual([0, 500]);
    // A slow probe delays the next one: never two in flight.
    await clock.advance(3000);
    expect(calls).toHaveLength(2);
    last().answer(away);
    await clock.settle();
    expect(calls.map((c) => c.at)).toEqual([0, 500, 3500]); // its gap (1499 ms) had passed: at once
    last().answer(away);
    await clock.advance(999);
    expect(calls).toHaveLength(3);
    await clock.advance(1); // gap = 1000 * (0.5 + 0.5): 1000 ms
    expect(calls.map((c) => c.at)).toEqual([0, 500, 3500, 4500]);
    expect(await settledNow(clock, ...waits)).toEqual([false, false, false]);
    last().answer(back);
    expect(await settledNow(clock, ...waits)).toEqual([true, true, true]);
    expect(calls).toHaveLength(4);
    expect(clock.pending).toBe(0);
  });

  test("the pace does not grow however long the outage lasts", async () => {
    const clock = manualClock();
    const { calls, probe, last } = scriptedProbe(clock);
    const p = new ReachabilityProbe(probe, { now: clock.now, sleep: clock.sleep, random: () => 0.999 });
    const wait = p.untilAnswered();
    await clock.settle();
    for (let i = 0; i < 120; i++) {
      last().answer(away);
      await clock.settle();
      await clock.advance(1499);
    }
    expect(calls).toHaveLength(121); // three minutes away: still a probe every 1.5 s at most (1 s on average)
    last().answer(back);
    await wait;
  });

  test("a probe that throws counts as no answer", async () => {
    const clock = manualClock();
    const { calls, probe, last } = scriptedProbe(clock);
    const p = new ReachabilityProbe(probe, { now: clock.now, sleep: clock.sleep, random: () => 0 });
    const wait = p.untilAnswered();
    await clock.settle();
    last().answer(new Error("boom"));
    await clock.advance(500);
    expect(calls).toHaveLength(2);
    last().answer(back);
    expect(await settledNow(clock, wait)).toEqual([true]);
  });

  test("an answer's Retry-After is waited out before the waiters go", async () => {
    const clock = manualClock();
    const { probe, last } = scriptedProbe(clock);
    const p = new ReachabilityProbe(probe, { now: clock.now, sleep: clock.sleep, random: () => 0 });
    const wait = p.untilAnswered();
    await clock.settle();
    last().answer({ answered: true, retryAfterMs: 2000 });
    await clock.settle();
    await clock.advance(1999);
    expect(await settledNow(clock, wait)).toEqual([false]);
    await clock.advance(1);
    expect(await settledNow(clock, wait)).toEqual([true]);
  });

  test("the next outage's first probe still keeps the interval after the last one", async () => {
    const clock = manualClock();
    const { calls, probe, last } = scriptedProbe(clock);
    const p = new ReachabilityProbe(probe, { now: clock.now, sleep: clock.sleep, random: () => 0 });
    const first = p.untilAnswered();
    await clock.settle();
    last().answer(back);
    await first;
    await clock.advance(100);
    void p.untilAnswered(); // the request that followed failed at once: no hot loop
    await clock.settle();
    expect(calls).toHaveLength(1);
    await clock.advance(400);
    expect(calls.map((c) => c.at)).toEqual([0, 500]);
    await clock.advance(5000); // long after: at once
    last().answer(back);
    await clock.settle();
    void p.untilAnswered();
    await clock.settle();
    expect(calls.map((c) => c.at)).toEqual([0, 500, 5500]);
    p.close();
  });

  test("when the last waiter leaves, its probe and timer are aborted; close releases the rest", async () => {
    const clock = manualClock();
    const { calls, probe, last } = scriptedProbe(clock);
    const p = new ReachabilityProbe(probe, { now: clock.now, sleep: clock.sleep, random: () => 0 });
    const a = new AbortController();
    const b = new AbortController();
    const waits = [p.untilAnswered(a.signal), p.untilAnswered(b.signal)];
    await clock.settle();
    a.abort();
    expect(await settledNow(clock, ...waits)).toEqual([true, false]);
    expect(last().signal.aborted).toBe(false); // b still waits
    b.abort();
    expect(last().signal.aborted).toBe(true);
    expect(await settledNow(clock, ...waits)).toEqual([true, true]);
    last().answer(away);
    await clock.settle();
    expect(clock.pending).toBe(0); // no timer left behind

    const c = p.untilAnswered();
    await clock.advance(500);
    expect(calls).toHaveLength(2);
    last().answer(away);
    await clock.settle();
    expect(clock.pending).toBe(1);
    p.close();
    expect(await settledNow(clock, c)).toEqual([true]);
    expect(clock.pending).toBe(0);
    expect(await settledNow(clock, p.untilAnswered(AbortSignal.abort()))).toEqual([true]);
  });
});
