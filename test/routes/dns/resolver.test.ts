/** The ExternalName resolver: refresh on TTL or interval, last good answer kept on failure, shared per name. */
import { describe, expect, test } from "bun:test";
import { DnsRegistry } from "../../../src/routes/dns/registry.ts";
import { type DnsAnswer, NameResolver, ResolveError, systemResolve } from "../../../src/routes/dns/resolver.ts";
import { manualClock } from "../../balancer/conformance.ts";
import { waitFor } from "../../support/wait.ts";

/** A resolve function that answers from a script (the last entry repeats) and counts calls. */
function scripted(...answers: (DnsAnswer | Error)[]) {
  let calls = 0;
  const resolve = async (hostname: string): Promise<DnsAnswer> => {
    const a = answers[Math.min(calls++, answers.length - 1)]!;
    if (a instanceof Error) throw a;
    expect(hostname).toBe("db.example.com");
    return a;
  };
  return { resolve, calls: () => calls };
}

describe("NameResolver", () => {
  test("re-resolves on the interval when the TTL is unknown; endpoints change identity only with the addresses", async () => {
    const s = scripted({ addresses: ["192.0.2.2", "192.0.2.1"] }, { addresses: ["192.0.2.1", "192.0.2.2"] }, { addresses: ["192.0.2.3", "2001:db8::1"] });
    using r = new NameResolver("db.example.com", { resolve: s.resolve, minRefreshMs: 5, refreshMs: 20 });
    await r.ready();
    expect(r.addresses).toEqual(["192.0.2.1", "192.0.2.2"]);
    const first = r.endpoints(5432);
    expect(first).toEqual([
      { address: "192.0.2.1", port: 5432, ready: true, serving: true, terminating: false },
      { address: "192.0.2.2", port: 5432, ready: true, serving: true, terminating: false },
    ]);
    await waitFor(() => r.attempts >= 2, { what: "a second resolution" });
    expect(r.endpoints(5432)).toBe(first); // same set in another order: unchanged
    await waitFor(() => r.attempts >= 3, { what: "a third resolution" });
    expect(r.addresses).toEqual(["192.0.2.3", "2001:db8::1"]);
    expect(r.endpoints(5432).map((e) => e.address)).toEqual(["192.0.2.3", "2001:db8::1"]);
  });

  test.each([
    ["a TTL inside the bounds", 60, 60_000],
    ["a TTL below the minimum", 0, 5_000],
    ["a TTL above the maximum", 86_400, 300_000],
    ["no TTL: the interval", undefined, 30_000],
  ])("refreshes after %s", async (_case, ttlSeconds, delay) => {
    const clock = manualClock();
    using r = new NameResolver("db.example.com", { resolve: async () => ({ addresses: ["192.0.2.1"], ttlSeconds }), now: clock.now });
    await r.ready();
    expect(r.status()).toEqual({ hostname: "db.example.com", addresses: ["192.0.2.1"], ttlSeconds, resolvedAt: clock.now(), nextRefreshAt: clock.now() + delay, error: undefined });
  });

  test("a failure keeps the last good answer, is reported, and is retried sooner with backoff", async () => {
    const clock = manualClock();
    const errors: [string, readonly string[]][] = [];
    const s = scripted({ addresses: ["192.0.2.1"], ttlSeconds: 60 }, Object.assign(new Error("queryA ESERVFAIL db.example.com"), { code: "ESERVFAIL" }));
    using r = new NameResolver("db.example.com", { resolve: s.resolve, now: clock.now, minRefreshMs: 1_000, onError: (e, kept) => errors.push([e.message, kept]) });
    await r.ready();
    await r.refresh();
    expect(r.addresses).toEqual(["192.0.2.1"]);
    expect(r.endpoints(80).map((e) => e.address)).toEqual(["192.0.2.1"]);
    expect(errors).toEqual([['Cannot resolve "db.example.com": queryA ESERVFAIL db.example.com', ["192.0.2.1"]]]);
    expect(r.status().error).toBe('Cannot resolve "db.example.com": queryA ESERVFAIL db.example.com');
    expect(r.status().nextRefreshAt).toBe(clock.now() + 1_000);
    await r.refresh();
    expect(r.status().nextRefreshAt).toBe(clock.now() + 2_000);
  });

  test("an empty answer counts as a failure", async () => {
    const errors: string[] = [];
    using r = new NameResolver("db.example.com", { resolve: async () => ({ addresses: [] }), onError: (e) => errors.push(e.message) });
    await r.ready();
    expect(r.addresses).toEqual([]);
    expect(errors).toEqual(['Cannot resolve "db.example.com": the answer has no addresses']);
  });

  test("dispose stops the refreshes", async () => {
    const s = scripted({ addresses: ["192.0.2.1"] });
    const r = new NameResolver("db.example.com", { resolve: s.resolve, minRefreshMs: 5, refreshMs: 10 });
    await waitFor(() => r.attempts >= 2, { what: "two resolutions" });
    r[Symbol.dispose]();
    const calls = s.calls();
    // Nothing to await for an event that must not happen: give it several intervals.
    await Bun.sleep(60);
    expect(s.calls()).toBe(calls);
    expect(r.status().nextRefreshAt).toBeUndefined();
  });
});

describe("systemResolve", () => {
  test("localhost resolves to a loopback address (DNS where it answers, else /etc/hosts)", async () => {
    const answer = await systemResolve("localhost");
    expect(answer.addresses).toContain("127.0.0.1");
    expect(answer.addresses.every((a) => a === "127.0.0.1" || a === "::1")).toBe(true);
  });

  test("IP literals are used as they are; a trailing dot is ignored", async () => {
    expect(await systemResolve("192.0.2.9")).toEqual({ addresses: ["192.0.2.9"] });
    expect(await systemResolve("[2001:db8::9]")).toEqual({ addresses: ["2001:db8::9"] });
    expect((await systemResolve("localhost.")).addresses).toContain("127.0.0.1");
  });

  test("an unknown name is a ResolveError naming it", async () => {
    const err = await systemResolve("no-such-name.invalid").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResolveError);
    expect((err as ResolveError).message).toStartWith('Cannot resolve "no-such-name.invalid": ');
    expect((err as ResolveError).cause).toBeDefined();
  });
});

describe("DnsRegistry", () => {
  test("one resolver per name (case and trailing dot ignored), stopped when the last lease is released", async () => {
    let calls = 0;
    using registry = new DnsRegistry({ resolve: async () => (calls++, { addresses: ["192.0.2.1"] }) });
    const a = registry.acquire("DB.example.com.");
    const b = registry.acquire("db.example.com");
    await a.ready();
    expect(calls).toBe(1);
    expect(b.endpoints(80)).toBe(a.endpoints(80));
    expect(registry.status().map((s) => s.hostname)).toEqual(["db.example.com"]);
    a.release();
    a.release(); // idempotent
    expect(registry.resolver("db.example.com")).toBeDefined();
    b.release();
    expect(registry.resolver("db.example.com")).toBeUndefined();
  });
});
