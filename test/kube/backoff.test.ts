import { describe, expect, test } from "bun:test";
import { Backoff, sleep } from "../../src/kube/backoff.ts";

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
