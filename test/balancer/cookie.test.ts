/** Cookie affinity tokens: opaque, keyed, stable, mapped back only to serving endpoints. */
import { describe, expect, test } from "bun:test";
import { CookieAffinity, cookieToken } from "../../src/balancer/cookie.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import { ep } from "./conformance.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("cookie tokens", () => {
  test("are 16 base64url characters that do not contain the endpoint's address", () => {
    const t = cookieToken("secret", "ns/web:http", ep(7));
    expect(t).toMatch(/^[A-Za-z0-9_-]{16}$/);
    expect(t).not.toContain("10.0.0.7");
    expect(Buffer.from(t, "base64url").toString("latin1")).not.toContain("10.0.0.7");
  });

  test("are stable for a secret, and differ by secret, Service port and endpoint", () => {
    const base = cookieToken("s1", "ns/web:http", ep(1));
    expect(cookieToken("s1", "ns/web:http", ep(1))).toBe(base);
    const others = [cookieToken("s2", "ns/web:http", ep(1)), cookieToken("s1", "ns/api:http", ep(1)), cookieToken("s1", "ns/web:http", ep(2)), cookieToken("s1", "ns/web:http", ep(1, 8081))];
    expect(new Set([base, ...others]).size).toBe(5);
  });
});

describe("CookieAffinity", () => {
  const settings = { name: "kg", ttlSeconds: 3600 };

  test("maps a token back to the serving endpoint, and nothing else", () => {
    const eps = [ep(1), ep(2)];
    const c = new CookieAffinity(settings, "ns/web:http", new RoundRobin(eps), "k");
    expect(c.endpointFor(c.tokenFor(eps[1]!))).toBe(eps[1]!);
    expect(c.endpointFor(cookieToken("k", "ns/web:http", ep(3)))).toBeUndefined(); // not serving
    expect(c.endpointFor(cookieToken("other", "ns/web:http", eps[0]!))).toBeUndefined(); // forged with another key
    expect(c.endpointFor("10.0.0.1:8080")).toBeUndefined();
  });

  test("follows a balancer whose endpoints change, and the next route reuses the tokens", () => {
    let eps = [ep(1), ep(2)];
    const source = { get endpoints() { return eps; }, pick: () => undefined, begin() {}, end() {} };
    const c = new CookieAffinity(settings, "ns/web:http", source, "k");
    const t1 = c.tokenFor(eps[0]!);
    eps = [ep(2), ep(3)];
    expect(c.endpointFor(t1)).toBeUndefined();
    expect(c.endpointFor(c.tokenFor(ep(3)))).toBe(eps[1]!);
    const next = new CookieAffinity(settings, "ns/web:http", new RoundRobin([ep(3)]), "k", c);
    expect(next.endpointFor(c.tokenFor(ep(3)))!.address).toBe("10.0.0.3");
  });

  test("Set-Cookie lines: Path=/, HttpOnly, Max-Age only with a TTL", () => {
    const e = ep(1);
    const c = new CookieAffinity(settings, "ns/web:http", new RoundRobin([e]), "k");
    expect(text(c.setCookieLine(e))).toBe(`Set-Cookie: kg=${c.tokenFor(e)}; Path=/; Max-Age=3600; HttpOnly\r\n`);
    const session = new CookieAffinity({ name: "S", ttlSeconds: 0 }, "ns/web:http", new RoundRobin([e]), "k");
    expect(text(session.setCookieLine(e))).toBe(`Set-Cookie: S=${c.tokenFor(e)}; Path=/; HttpOnly\r\n`);
  });
});
