import { describe, expect, test } from "bun:test";
import { canonicalIP, cidrContains, compareIP, formatCidr, ipFamily, isIP, parseCidr, parseIP } from "../../src/model/net.ts";

describe("parseIP / canonicalIP", () => {
  test.each([
    ["10.0.0.1", "10.0.0.1", 4],
    ["0.0.0.0", "0.0.0.0", 4],
    ["255.255.255.255", "255.255.255.255", 4],
    ["::", "::", 6],
    ["::1", "::1", 6],
    ["1::", "1::", 6],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1", 6],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", 6], // first of two equal zero runs is compressed
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1", 6], // a single zero group is not compressed
    ["fe80::0001", "fe80::1", 6],
    ["::ffff:10.0.0.1", "10.0.0.1", 4], // IPv4-mapped is IPv4
    ["0:0:0:0:0:ffff:a00:1", "10.0.0.1", 4],
    ["::10.0.0.1", "::a00:1", 6], // IPv4-compatible stays IPv6
    ["64:ff9b::192.0.2.33", "64:ff9b::c000:221", 6],
    ["fe80::1%eth0", "fe80::1%eth0", 6],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0", 6],
  ])("%p -> %p (IPv%p)", (input, canonical, family) => {
    expect(canonicalIP(input)).toBe(canonical);
    expect(ipFamily(input)).toBe(family as 4 | 6);
    expect(isIP(input)).toBe(true);
  });

  test.each([
    "",
    "10.0.0",
    "10.0.0.1.2",
    "10.0.0.256",
    "010.0.0.1", // leading zeros are ambiguous (octal); Go rejects them too
    "10.0.0.-1",
    "10.0.0.1 ",
    "a.b.c.d",
    ":",
    ":::",
    "1:::2",
    "1::2::3",
    ":1",
    "1:",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8::",
    "12345::1",
    "g::1",
    "1.2.3.4::",
    "::1.2.3.4:5",
    "fe80::1%",
    "::ffff:10.0.0.1%eth0",
    "[::1]",
    "10.0.0.0/8",
  ])("rejects %p", (input) => {
    expect(parseIP(input)).toBeUndefined();
    expect(isIP(input)).toBe(false);
    expect(ipFamily(input)).toBeUndefined();
  });

  test("keeps the zone apart from the address", () => {
    expect(parseIP("fe80::1%eth0")).toEqual({ family: 6, bytes: parseIP("fe80::1")!.bytes, zone: "eth0" });
  });
});

describe("compareIP", () => {
  test("orders numerically, IPv4 before IPv6", () => {
    const sorted = ["fd00::10", "10.0.0.10", "::1", "10.0.0.9", "9.255.255.255", "fd00::9"].sort(compareIP);
    expect(sorted).toEqual(["9.255.255.255", "10.0.0.9", "10.0.0.10", "::1", "fd00::9", "fd00::10"]);
  });
});

describe("parseCidr / cidrContains", () => {
  test.each([
    ["10.0.0.0/8", "10.0.0.0/8"],
    ["10.1.2.3/8", "10.0.0.0/8"], // host bits cleared, as Go's ParseCIDR
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["127.0.0.1/32", "127.0.0.1/32"],
    ["fd00::1/8", "fd00::/8"],
    ["::/0", "::/0"],
    ["::1/128", "::1/128"],
    ["::ffff:10.0.0.0/104", "10.0.0.0/8"],
    ["::ffff:0.0.0.0/95", "::fffe:0:0/95"],
  ])("%p -> %p", (input, canonical) => {
    expect(formatCidr(parseCidr(input)!)).toBe(canonical);
  });

  test.each(["10.0.0.0", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/08", "10.0.0.0/", "fd00::/129", "fe80::%eth0/64", "x/8", "10.0.0.0/8/8"])(
    "rejects %p",
    (input) => {
      expect(parseCidr(input)).toBeUndefined();
    },
  );

  test.each([
    ["10.0.0.0/8", "10.255.1.2", true],
    ["10.0.0.0/8", "11.0.0.1", false],
    ["10.0.0.0/8", "::ffff:10.1.1.1", true], // mapped input counts as IPv4
    ["10.0.0.0/8", "fd00::1", false], // other family
    ["0.0.0.0/0", "192.0.2.1", true],
    ["0.0.0.0/0", "::1", false],
    ["192.168.1.128/25", "192.168.1.127", false],
    ["192.168.1.128/25", "192.168.1.128", true],
    ["192.168.1.128/25", "192.168.1.255", true],
    ["fd00::/8", "fd12:3456::1", true],
    ["fd00::/8", "fe80::1", false],
    ["2001:db8::/127", "2001:db8::1", true],
    ["2001:db8::/127", "2001:db8::2", false],
    ["::/0", "::1", true],
    ["::1/128", "::1", true],
    ["fe80::/10", "fe80::1%eth0", true], // zones are ignored for membership
  ])("%p contains %p: %p", (cidr, ip, expected) => {
    expect(cidrContains(parseCidr(cidr)!, parseIP(ip)!)).toBe(expected);
  });
});
