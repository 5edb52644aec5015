/**
 * The bind queue on its own, without sockets: binds now and in slices with the event loop running between
 * them, skips items no longer wanted, retries on a timer while the owner reports failures, and drops
 * everything on close. Plus the words for a failed bind.
 */
import { describe, expect, test } from "bun:test";
import { BindQueue, type BindQueueOptions, bindErrorMessage, bindReason } from "../../src/listeners/bind-queue.ts";

/** A queue over numbers that records what it bound; `failing` is what the owner reports as failed. */
function queue(options: Partial<BindQueueOptions<number>> = {}) {
  const bound: number[] = [];
  const state = { failing: false, retries: 0 };
  const q = new BindQueue<number>({
    bind: (n) => void bound.push(n),
    anyFailed: () => state.failing,
    retry: () => void state.retries++,
    retryIntervalMs: 0,
    ...options,
  });
  return Object.assign(q, { bound, state, [Symbol.dispose]: () => q.close() });
}

describe("BindQueue", () => {
  test("binds everything at once by default", async () => {
    using q = queue();
    q.bind([1, 2, 3]);
    expect(q.bound).toEqual([1, 2, 3]);
    await q.settled();
  });

  test("binds syncBinds items now, the rest in later slices; queued items are known until their turn", async () => {
    using q = queue({ syncBinds: 2, sliceMs: 0 });
    q.bind([1, 2, 3, 4]);
    expect(q.bound).toEqual([1, 2]);
    expect([q.queued(1), q.queued(3), q.queued(4)]).toEqual([false, true, true]);
    // A later call binds nothing now while older items wait: order is kept.
    q.bind([5]);
    expect(q.bound).toEqual([1, 2]);
    const seen = new Promise<number[]>((resolve) => setTimeout(() => resolve([...q.bound]), 0));
    await q.settled();
    expect(q.bound).toEqual([1, 2, 3, 4, 5]);
    // The event loop ran between slices: a timer saw part of the queue bound.
    expect((await seen).length).toBeLessThan(5);
    expect(q.queued(5)).toBe(false);
  });

  test("an item no longer wanted when its turn comes is not bound", async () => {
    const dropped = new Set([3]);
    using q = queue({ syncBinds: 1, wanted: (n) => !dropped.has(n) });
    q.bind([1, 2, 3, 4]);
    await q.settled();
    expect(q.bound).toEqual([1, 2, 4]);
  });

  test("onIdle runs when the queue empties", async () => {
    let idle = 0;
    using q = queue({ syncBinds: 0, onIdle: () => void idle++ });
    q.bind([1, 2]);
    expect(idle).toBe(0);
    await q.settled();
    expect(idle).toBe(1);
  });

  test("settled() also waits for tracked binds", async () => {
    using q = queue();
    const udp = Promise.withResolvers<void>();
    q.track(udp.promise);
    let settled = false;
    const waiting = q.settled().then(() => (settled = true));
    await Promise.resolve();
    expect(settled).toBe(false);
    udp.resolve();
    await waiting;
    expect(settled).toBe(true);
  });

  test("retries on a timer while the owner reports a failure, and stops when it does not", async () => {
    const retried = Promise.withResolvers<void>();
    using q = queue({
      retryIntervalMs: 5,
      retry: () => {
        q.state.retries++;
        if (q.state.retries === 3) {
          q.state.failing = false;
          retried.resolve();
        }
        q.scheduleRetry();
      },
    });
    q.state.failing = true;
    q.scheduleRetry();
    expect(q.failing).toBe(true);
    await retried.promise;
    expect(q.failing).toBe(false);
    // Stopped: another interval passes without a retry.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(q.state.retries).toBe(3);
  });

  test("no timer with retryIntervalMs 0", async () => {
    using q = queue({ retryIntervalMs: 0 });
    q.state.failing = true;
    q.scheduleRetry();
    expect(q.failing).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(q.state.retries).toBe(0);
  });

  test("close drops the queue, stops the timer and binds nothing afterwards", async () => {
    const q = queue({ syncBinds: 1, retryIntervalMs: 1 });
    q.bind([1, 2, 3]);
    q.state.failing = true;
    q.scheduleRetry();
    q.close();
    await q.settled();
    await new Promise((resolve) => setTimeout(resolve, 10));
    q.bind([4]);
    expect(q.bound).toEqual([1]);
    expect(q.queued(2)).toBe(false);
    expect(q.state.retries).toBe(0);
  });
});

describe("bindReason / bindErrorMessage", () => {
  const withCode = (code: string) => Object.assign(new Error(`listen ${code}`), { code });

  test.each([
    ["EADDRINUSE", withCode("EADDRINUSE"), "address already in use"],
    ["EADDRNOTAVAIL", withCode("EADDRNOTAVAIL"), "address not available on this host"],
    ["EACCES", withCode("EACCES"), "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE; a LoadBalancer port can be moved up with --lb-port-offset)"],
    ["EPERM", withCode("EPERM"), "permission denied"],
    ["another code", withCode("EOTHER"), "listen EOTHER"],
    ["no code", new Error("boom"), "boom"],
    ["a string", "Port 80 is taken", "Port 80 is taken"],
  ])("%s", (_, err, reason) => {
    expect(bindReason(err)).toBe(reason);
  });

  test("names what failed and where, IPv6 in brackets", () => {
    expect(bindErrorMessage('Cannot bind listener "ns/web:http"', "127.0.0.1", 30080, withCode("EADDRINUSE"))).toBe(
      'Cannot bind listener "ns/web:http" on 127.0.0.1:30080: address already in use',
    );
    expect(bindErrorMessage('Cannot start health check "ns/web"', "::1", 32000, withCode("EADDRINUSE"))).toBe(
      'Cannot start health check "ns/web" on [::1]:32000: address already in use',
    );
  });
});
