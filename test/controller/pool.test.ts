import { describe, expect, test } from "bun:test";
import { describePool, firstFree, parsePool, poolAddress, PoolError } from "../../src/controller/pool.ts";

describe("parsePool", () => {
  test.each([
    [["192.0.2.0/30"], 2n],
    [["192.0.2.0/31"], 2n],
    [["192.0.2.9"], 1n],
    [["192.0.2.7/24"], 254n],
    [["2001:db8::/126"], 4n],
    [["10.0.0.0/8", "2001:db8::/64"], 16_777_214n + 2n ** 64n],
  ])("%j has %p usable addresses", (cidrs, size) => {
    expect(parsePool(cidrs).size).toBe(size);
  });

  test.each([
    [["nope"], 'Invalid load balancer pool entry "nope": expected a CIDR such as 192.0.2.0/28 or 2001:db8::/120'],
    [["10.0.0.0/33"], 'Invalid load balancer pool entry "10.0.0.0/33": expected a CIDR such as 192.0.2.0/28 or 2001:db8::/120'],
    [["10.0.0.0/24", "10.0.0.128/25"], 'Invalid load balancer pool entry "10.0.0.128/25": it overlaps "10.0.0.0/24"'],
    [[" "], "Invalid load balancer pool: it has no CIDR"],
  ])("%j is refused", (cidrs, message) => {
    expect(() => parsePool(cidrs)).toThrow(new PoolError(message));
  });
});

test("poolAddress canonicalises members and rejects network, broadcast and outsiders", () => {
  const pool = parsePool(["192.0.2.0/30", "2001:db8::/126"]);
  expect(poolAddress(pool, "192.0.2.1")).toBe("192.0.2.1");
  expect(poolAddress(pool, "::ffff:192.0.2.2")).toBe("192.0.2.2");
  expect(poolAddress(pool, "2001:DB8::3")).toBe("2001:db8::3");
  expect(poolAddress(pool, "192.0.2.0")).toBeUndefined();
  expect(poolAddress(pool, "192.0.2.3")).toBeUndefined();
  expect(poolAddress(pool, "198.51.100.1")).toBeUndefined();
  expect(poolAddress(pool, "not-an-ip")).toBeUndefined();
  expect(describePool(pool)).toBe('"192.0.2.0/30", "2001:db8::/126"');
});

test("firstFree returns the lowest free address of the family, in pool order", () => {
  const pool = parsePool(["192.0.2.0/30", "2001:db8::/127"]);
  expect(firstFree(pool, new Set())).toBe("192.0.2.1");
  expect(firstFree(pool, new Set(["192.0.2.1"]))).toBe("192.0.2.2");
  expect(firstFree(pool, new Set(["192.0.2.1", "192.0.2.2"]))).toBe("2001:db8::");
  expect(firstFree(pool, new Set(["192.0.2.1", "192.0.2.2"]), 4)).toBeUndefined();
  expect(firstFree(pool, new Set(), 6)).toBe("2001:db8::");
  // A huge pool costs no more than the addresses taken.
  expect(firstFree(parsePool(["2001:db8::/32"]), new Set(["2001:db8::", "2001:db8::1"]))).toBe("2001:db8::2");
});
