import { describe, expect, test } from "bun:test";
import { parseServiceAnnotations, policyOf } from "../../src/model/annotations.ts";
import {
  sameAffinity,
  sameApartFromError,
  sameBalancerPolicy,
  sameEntrypoint,
  sameErrors,
  sameHashKey,
  sameHashOn,
  sameHints,
  sameList,
  sameOptionalList,
  sameRecord,
  sameSelection,
  sameTrafficPolicy,
} from "../../src/model/equal.ts";
import type { Entrypoint, HashOn, TrafficPolicy } from "../../src/model/types.ts";

function policy(annotations: Record<string, string>): TrafficPolicy | undefined {
  return policyOf(parseServiceAnnotations(annotations, "ns/web", () => {}));
}

const entrypoint: Entrypoint = Object.freeze({
  name: "ns/web:http",
  key: "NodePort/ns/web:http",
  type: "NodePort",
  protocol: "http",
  namespace: "ns",
  service: "web",
  addresses: ["10.0.0.1"],
  port: 30080,
  cluster: { name: "ns/web:http", endpoints: [], serving: [] },
  externalTrafficPolicy: "Cluster",
  annotations: {},
});

describe("sameList", () => {
  test("compares elements by identity, in order", () => {
    const ep = { address: "10.1.0.1", port: 80, ready: true, serving: true, terminating: false };
    expect(sameList([ep], [ep])).toBe(true);
    expect(sameList([ep], [{ ...ep }])).toBe(false);
    expect(sameList(["a", "b"], ["a", "b"])).toBe(true);
    expect(sameList(["a", "b"], ["b", "a"])).toBe(false);
    expect(sameList(["a"], ["a", "b"])).toBe(false);
    expect(sameList([], [])).toBe(true);
  });

  test("sameOptionalList: absent equals absent only", () => {
    expect(sameOptionalList(undefined, undefined)).toBe(true);
    expect(sameOptionalList(undefined, [])).toBe(false);
    expect(sameOptionalList(["a"], ["a"])).toBe(true);
  });
});

describe("sameRecord", () => {
  test("same keys and values, whatever the order", () => {
    expect(sameRecord({ a: "1", b: "2" }, { b: "2", a: "1" })).toBe(true);
    expect(sameRecord({ a: "1" }, { a: "2" })).toBe(false);
    expect(sameRecord({ a: "1" }, { a: "1", b: "2" })).toBe(false);
    expect(sameRecord({ a: "1", b: "2" }, { a: "1" })).toBe(false);
    expect(sameRecord({ a: "1" }, { b: "1" })).toBe(false);
    expect(sameRecord({}, {})).toBe(true);
  });
});

describe("endpoint parts", () => {
  test("sameHints compares both lists by value", () => {
    expect(sameHints({ forZones: ["z1"] }, { forZones: ["z1"] })).toBe(true);
    expect(sameHints({ forZones: ["z1"] }, { forZones: ["z1"], forNodes: ["n1"] })).toBe(false);
    expect(sameHints(undefined, {})).toBe(false);
  });

  test("sameSelection compares every field", () => {
    const a = { policy: "Local", topology: "none", fallback: "none" } as const;
    expect(sameSelection(a, { ...a })).toBe(true);
    expect(sameSelection(a, { ...a, topologyIgnored: "not every endpoint has a hint" })).toBe(false);
    expect(sameSelection(a, { ...a, fallback: "serving-terminating" })).toBe(false);
    expect(sameSelection(a, undefined)).toBe(false);
  });
});

describe("affinity and hashing", () => {
  test("sameAffinity compares mode, timeout and cookie", () => {
    const a = { mode: "ClientIP", timeoutSeconds: 10, cookie: { name: "c", ttlSeconds: 5 } } as const;
    expect(sameAffinity(a, { ...a, cookie: { ...a.cookie } })).toBe(true);
    expect(sameAffinity(a, { ...a, cookie: { name: "c", ttlSeconds: 6 } })).toBe(false);
    expect(sameAffinity(a, { mode: "ClientIP", timeoutSeconds: 10 })).toBe(false);
    expect(sameAffinity(a, undefined)).toBe(false);
  });

  test("sameHashOn: as written (absent is not client-ip); sameHashKey: what is hashed (absent is client-ip)", () => {
    const clientIp: HashOn = { source: "client-ip" };
    expect(sameHashOn(undefined, clientIp)).toBe(false);
    expect(sameHashKey(undefined, clientIp)).toBe(true);
    for (const same of [sameHashOn, sameHashKey]) {
      expect(same({ source: "header", name: "x" }, { source: "header", name: "x" })).toBe(true);
      expect(same({ source: "header", name: "x" }, { source: "cookie", name: "x" })).toBe(false);
      expect(same({ source: "cookie", name: "x" }, { source: "cookie", name: "y" })).toBe(false);
      expect(same({ source: "cookie", name: "x" }, undefined)).toBe(false);
    }
  });
});

describe("traffic policies", () => {
  test("sameTrafficPolicy compares by value, hashOn included", () => {
    const a = policy({ "kubegate.io/balancer": "maglev", "kubegate.io/hash-on": "cookie:s" });
    const b = policy({ "kubegate.io/hash-on": "cookie:s", "kubegate.io/balancer": "maglev" });
    expect(a).not.toBe(b);
    expect(sameTrafficPolicy(a, b)).toBe(true);
    expect(sameTrafficPolicy(a, policy({ "kubegate.io/balancer": "maglev", "kubegate.io/hash-on": "cookie:S" }))).toBe(false);
    expect(sameTrafficPolicy(a, policy({ "kubegate.io/balancer": "maglev", "kubegate.io/hash-on": "header:s" }))).toBe(false);
    expect(sameTrafficPolicy(a, policy({ "kubegate.io/balancer": "maglev" }))).toBe(false);
    expect(sameTrafficPolicy(undefined, undefined)).toBe(true);
    expect(sameTrafficPolicy(a, undefined)).toBe(false);
  });

  test("sameBalancerPolicy looks at the balancer, slow start and hash key only", () => {
    const a = policy({ "kubegate.io/balancer": "maglev", "kubegate.io/idle-timeout": "90s" });
    expect(sameBalancerPolicy(a, policy({ "kubegate.io/balancer": "maglev" }))).toBe(true);
    expect(sameBalancerPolicy(a, policy({ "kubegate.io/balancer": "maglev", "kubegate.io/hash-on": "client-ip" }))).toBe(true);
    expect(sameBalancerPolicy(a, policy({ "kubegate.io/balancer": "maglev", "kubegate.io/hash-on": "header:x" }))).toBe(false);
    expect(sameBalancerPolicy(a, policy({ "kubegate.io/balancer": "ring-hash" }))).toBe(false);
    expect(sameBalancerPolicy(undefined, policy({ "kubegate.io/idle-timeout": "90s" }))).toBe(true);
    expect(sameBalancerPolicy(undefined, policy({ "kubegate.io/slow-start": "10s" }))).toBe(false);
  });
});

describe("entrypoints and errors", () => {
  test("sameEntrypoint: nested lists by value, shared objects by identity", () => {
    expect(sameEntrypoint(entrypoint, { ...entrypoint, addresses: ["10.0.0.1"] })).toBe(true);
    expect(sameEntrypoint(entrypoint, { ...entrypoint, addresses: ["10.0.0.2"] })).toBe(false);
    expect(sameEntrypoint(entrypoint, { ...entrypoint, cluster: { ...entrypoint.cluster } })).toBe(false);
    expect(sameEntrypoint(entrypoint, { ...entrypoint, sourceRanges: ["10.0.0.0/8"] })).toBe(false);
  });

  test("sameApartFromError: the base plus an error field, nothing else", () => {
    expect(sameApartFromError({ ...entrypoint, error: "x" }, entrypoint)).toBe(true);
    expect(sameApartFromError({ ...entrypoint, error: "x", port: 1 }, entrypoint)).toBe(false);
    expect(sameApartFromError({ ...entrypoint, error: "x", proxyProtocol: "v2" }, entrypoint)).toBe(false);
    expect(sameApartFromError(entrypoint, entrypoint)).toBe(false);
  });

  test("sameErrors compares kind, object and message in order", () => {
    const e = { kind: "Service", object: "ns/web", message: "m" } as const;
    expect(sameErrors([e], [{ ...e }])).toBe(true);
    expect(sameErrors([e], [{ ...e, message: "n" }])).toBe(false);
    expect(sameErrors([e, { ...e, object: "ns/b" }], [{ ...e, object: "ns/b" }, e])).toBe(false);
  });
});
