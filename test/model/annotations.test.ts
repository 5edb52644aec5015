import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import {
  AffinityCookieAnnotation,
  AffinityCookieTtlAnnotation,
  ANNOTATIONS,
  BalancerAnnotation,
  ExposeExternalNameAnnotation,
  ExternalNamePortsAnnotation,
  HashOnAnnotation,
  MaxBodyBytesAnnotation,
  MaxConcurrentRequestsAnnotation,
  MaxRequestDurationAnnotation,
  parseDurationMs,
  parseServiceAnnotations,
  policyOf,
  ProtocolAnnotation,
  ProxyProtocolAnnotation,
  RetryIdempotentAnnotation,
  SlowStartAnnotation,
  TimeoutAnnotation,
} from "../../src/model/annotations.ts";

function parse(annotations: Record<string, string> | undefined) {
  const messages: string[] = [];
  const values = parseServiceAnnotations(annotations, "ns/web", (m) => messages.push(m));
  return { values, messages };
}

describe("parseServiceAnnotations", () => {
  test("parses every kubegate annotation and ignores others", () => {
    expect(
      parse({
        "kubegate.io/protocol": "http",
        "kubegate.io/affinity-cookie": "kg_affinity",
        "kubegate.io/affinity-cookie-ttl": "600",
        "kubegate.io/proxy-protocol": "v2",
        "kubegate.io/expose-external-name": "true",
        "kubegate.io/external-name-ports": "https=8443, 80=8080",
        "kubegate.io/not-yet-known": "x",
        "example.com/other": "y",
      }),
    ).toEqual({
      values: {
        protocol: "http",
        affinityCookie: "kg_affinity",
        affinityCookieTtl: 600,
        proxyProtocol: "v2",
        exposeExternalName: true,
        externalNamePorts: [
          { servicePort: "https", listen: 8443 },
          { servicePort: 80, listen: 8080 },
        ],
      },
      messages: [],
    });
  });

  test("no annotations: no values, no messages", () => {
    expect(parse(undefined)).toEqual({ values: {}, messages: [] });
    expect(parse({})).toEqual({ values: {}, messages: [] });
  });

  test("an invalid value is reported with the annotation, the Service and the value, and left out", () => {
    expect(parse({ "kubegate.io/proxy-protocol": "v3", "kubegate.io/protocol": "tcp" })).toEqual({
      values: { protocol: "tcp" },
      messages: ['Annotation "kubegate.io/proxy-protocol" on Service "ns/web" is invalid: expected "v2", got "v3"; ignored'],
    });
  });
});

/** The first issue's message of `schema` on `input`, or the output. */
function run(schema: v.GenericSchema<string, unknown>, input: string): { ok: unknown } | { error: string } {
  const result = v.safeParse(schema, input);
  return result.success ? { ok: result.output } : { error: result.issues[0].message };
}

describe("annotation schemas", () => {
  test.each([
    [ProtocolAnnotation, "http", { ok: "http" }],
    [ProtocolAnnotation, "h2c", { ok: "h2c" }],
    [ProtocolAnnotation, "HTTP", { error: 'expected "http", "h2c" or "tcp"' }],
    [AffinityCookieAnnotation, "SESSION-ID.1", { ok: "SESSION-ID.1" }],
    [AffinityCookieAnnotation, "a;b", { error: "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~)" }],
    [AffinityCookieAnnotation, "", { error: "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~)" }],
    [AffinityCookieAnnotation, "a=b", { error: "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~)" }],
    [AffinityCookieTtlAnnotation, "1", { ok: 1 }],
    [AffinityCookieTtlAnnotation, "31536000", { ok: 31_536_000 }],
    [AffinityCookieTtlAnnotation, "31536001", { error: "expected whole seconds from 1 to 31536000" }],
    [AffinityCookieTtlAnnotation, "0", { error: "expected whole seconds from 1 to 31536000" }],
    [AffinityCookieTtlAnnotation, "1.5", { error: "expected whole seconds from 1 to 31536000" }],
    [AffinityCookieTtlAnnotation, "-5", { error: "expected whole seconds from 1 to 31536000" }],
    [ProxyProtocolAnnotation, "v2", { ok: "v2" }],
    [ProxyProtocolAnnotation, "V2", { error: 'expected "v2"' }],
    [ExposeExternalNameAnnotation, "false", { ok: false }],
    [ExposeExternalNameAnnotation, "1", { error: 'expected "true" or "false"' }],
  ] as const)("%#: %p", (schema, input, expected) => {
    expect(run(schema as v.GenericSchema<string, unknown>, input)).toEqual(expected);
  });
});

describe("kubegate.io/external-name-ports", () => {
  const syntax = 'expected entries "LISTEN" or "PORT=LISTEN" (LISTEN from 1 to 65535) separated by commas';
  test.each([
    ["8080", { ok: [{ listen: 8080 }] }],
    [" web = 8080 ,443=8443", { ok: [{ servicePort: "web", listen: 8080 }, { servicePort: 443, listen: 8443 }] }],
    ["65535", { ok: [{ listen: 65535 }] }],
    ["65536", { error: syntax }],
    ["0", { error: syntax }],
    ["08080", { error: syntax }],
    ["", { error: syntax }],
    ["8080,", { error: syntax }],
    ["Web=8080", { error: syntax }],
    ["web=", { error: syntax }],
    ["web:8080", { error: syntax }],
    ["a=8080,b=8080", { error: "expected each listen port once; 8080 is given twice" }],
    ["a=8080,a=8081", { error: 'expected each Service port once; "a" is given twice' }],
    ["8080,8081", { error: "expected each Service port once; the only port is given twice" }],
  ] as const)("%p", (input, expected) => {
    expect(run(ExternalNamePortsAnnotation as v.GenericSchema<string, unknown>, input)).toEqual(expected as never);
  });
});

describe("traffic policy annotations", () => {
  const policySchemas: Record<string, v.GenericSchema<string, unknown>> = {
    balancer: BalancerAnnotation,
    "hash-on": HashOnAnnotation as v.GenericSchema<string, unknown>,
    timeout: TimeoutAnnotation as v.GenericSchema<string, unknown>,
    "max-request-duration": MaxRequestDurationAnnotation as v.GenericSchema<string, unknown>,
    "slow-start": SlowStartAnnotation as v.GenericSchema<string, unknown>,
    "max-concurrent-requests": MaxConcurrentRequestsAnnotation as v.GenericSchema<string, unknown>,
    "max-body-bytes": MaxBodyBytesAnnotation as v.GenericSchema<string, unknown>,
    "retry-idempotent": RetryIdempotentAnnotation as v.GenericSchema<string, unknown>,
  };
  const durationMessage = 'expected a duration from 1ms to 24h, such as "500ms", "30s" or "1m30s"';
  const durationOrZero = 'expected a duration from 0s to 24h, such as "500ms", "30s" or "1m30s"';
  const slowStart = 'expected a duration from 0s to 1h, such as "500ms", "30s" or "1m30s"';
  const hashOn = 'expected "client-ip", "header:NAME" or "cookie:NAME" (NAME of letters, digits and !#$%&\'*+-.^_`|~)';
  const balancer = 'expected "round-robin", "least-request", "random", "ring-hash" or "maglev"';
  test.each([
    ["balancer", "round-robin", { ok: "round-robin" }],
    ["balancer", "least-request", { ok: "least-request" }],
    ["balancer", "random", { ok: "random" }],
    ["balancer", "ring-hash", { ok: "ring-hash" }],
    ["balancer", "maglev", { ok: "maglev" }],
    ["balancer", "Maglev", { error: balancer }],
    ["balancer", "least_conn", { error: balancer }],
    ["balancer", "", { error: balancer }],
    ["hash-on", "client-ip", { ok: { source: "client-ip" } }],
    ["hash-on", "header:X-User-ID", { ok: { source: "header", name: "x-user-id" } }],
    ["hash-on", "cookie:Session_ID", { ok: { source: "cookie", name: "Session_ID" } }],
    ["hash-on", "header:", { error: hashOn }],
    ["hash-on", "header:a b", { error: hashOn }],
    ["hash-on", "header:a:b", { error: hashOn }],
    ["hash-on", "cookie:a=b", { error: hashOn }],
    ["hash-on", "cookie:a;b", { error: hashOn }],
    ["hash-on", "Header:x", { error: hashOn }],
    ["hash-on", "query:x", { error: hashOn }],
    ["hash-on", "client-ip ", { error: hashOn }],
    ["hash-on", "source-ip", { error: hashOn }],
    ["timeout", "500ms", { ok: 500 }],
    ["timeout", "30s", { ok: 30_000 }],
    ["timeout", "5m", { ok: 300_000 }],
    ["timeout", "1m30s", { ok: 90_000 }],
    ["timeout", "1.5s", { ok: 1500 }],
    ["timeout", "1h0m0s", { ok: 3_600_000 }],
    ["timeout", "24h", { ok: 86_400_000 }],
    ["timeout", "1ms", { ok: 1 }],
    ["timeout", "24h1ms", { error: durationMessage }],
    ["timeout", "0s", { error: durationMessage }],
    ["timeout", "0", { error: durationMessage }],
    ["timeout", "30", { error: durationMessage }],
    ["timeout", "1.5ms", { error: durationMessage }],
    ["timeout", "-1s", { error: durationMessage }],
    ["timeout", "30 s", { error: durationMessage }],
    ["timeout", "1d", { error: durationMessage }],
    ["timeout", "30S", { error: durationMessage }],
    ["timeout", "", { error: durationMessage }],
    ["timeout", "1e3ms", { error: durationMessage }],
    ["max-request-duration", "0s", { ok: 0 }],
    ["max-request-duration", "0", { ok: 0 }],
    ["max-request-duration", "2m", { ok: 120_000 }],
    ["max-request-duration", "25h", { error: durationOrZero }],
    ["slow-start", "0s", { ok: 0 }],
    ["slow-start", "30s", { ok: 30_000 }],
    ["slow-start", "1h", { ok: 3_600_000 }],
    ["slow-start", "61m", { error: slowStart }],
    ["max-concurrent-requests", "0", { ok: 0 }],
    ["max-concurrent-requests", "100", { ok: 100 }],
    ["max-concurrent-requests", "1000000", { ok: 1_000_000 }],
    ["max-concurrent-requests", "1000001", { error: "expected a whole number from 0 to 1000000" }],
    ["max-concurrent-requests", "010", { error: "expected a whole number from 0 to 1000000" }],
    ["max-concurrent-requests", "1e3", { error: "expected a whole number from 0 to 1000000" }],
    ["max-concurrent-requests", "-1", { error: "expected a whole number from 0 to 1000000" }],
    ["max-concurrent-requests", "1.0", { error: "expected a whole number from 0 to 1000000" }],
    ["max-body-bytes", "1048576", { ok: 1_048_576 }],
    ["max-body-bytes", "1099511627776", { ok: 1_099_511_627_776 }],
    ["max-body-bytes", "1099511627777", { error: "expected a whole number from 0 to 1099511627776" }],
    ["max-body-bytes", "1Mi", { error: "expected a whole number from 0 to 1099511627776" }],
    ["retry-idempotent", "true", { ok: true }],
    ["retry-idempotent", "false", { ok: false }],
    ["retry-idempotent", "yes", { error: 'expected "true" or "false"' }],
  ] as const)("%s %p", (name, input, expected) => {
    expect(run(policySchemas[name]!, input)).toEqual(expected as never);
  });

  test("parseDurationMs reads Go-style durations in whole milliseconds", () => {
    expect(["0", "250ms", "2h45m", "0.5s", "1m0.5s", "10s10s"].map(parseDurationMs)).toEqual([0, 250, 9_900_000, 500, 60_500, 20_000]);
    expect(["", "ms", "1", "1.s", ".5s", "1us", "1ns", "1h-5m", "0.0001s"].map(parseDurationMs)).toEqual(Array(9).fill(undefined));
  });

  test("every policy annotation fills its TrafficPolicy field; absent ones stay absent", () => {
    const { values, messages } = parse({
      "kubegate.io/balancer": "ring-hash",
      "kubegate.io/hash-on": "header:X-Tenant",
      "kubegate.io/slow-start": "30s",
      "kubegate.io/connect-timeout": "500ms",
      "kubegate.io/request-header-timeout": "10s",
      "kubegate.io/response-header-timeout": "1m",
      "kubegate.io/idle-timeout": "90s",
      "kubegate.io/max-request-duration": "5m",
      "kubegate.io/max-concurrent-requests": "250",
      "kubegate.io/max-body-bytes": "1048576",
      "kubegate.io/retry-idempotent": "false",
    });
    expect(messages).toEqual([]);
    const policy = policyOf(values);
    expect(policy).toEqual({
      balancer: "ring-hash",
      hashOn: { source: "header", name: "x-tenant" },
      slowStartMs: 30_000,
      connectTimeoutMs: 500,
      requestHeaderTimeoutMs: 10_000,
      responseHeaderTimeoutMs: 60_000,
      idleTimeoutMs: 90_000,
      maxRequestDurationMs: 300_000,
      maxConcurrentRequests: 250,
      maxRequestBodyBytes: 1_048_576,
      retryIdempotent: false,
    });
    expect(Object.isFrozen(policy) && Object.isFrozen(policy?.hashOn)).toBe(true);
    expect(policyOf(parse({ "kubegate.io/idle-timeout": "2m" }).values)).toEqual({ idleTimeoutMs: 120_000 });
    expect(policyOf(parse({ "kubegate.io/protocol": "http" }).values)).toBeUndefined();
    expect(policyOf(parse(undefined).values)).toBeUndefined();
  });

  test.each(
    Object.values(ANNOTATIONS)
      .map((a) => a.key)
      .filter((key) => !["protocol", "affinity-cookie", "affinity-cookie-ttl", "proxy-protocol", "expose-external-name", "external-name-ports"].includes(key.slice(12))),
  )("an invalid %s is reported for that Service and leaves no policy", (key) => {
    const { values, messages } = parse({ [key]: "bogus value" });
    expect(values).toEqual({});
    expect(policyOf(values)).toBeUndefined();
    expect(messages).toHaveLength(1);
    expect(messages[0]).toStartWith(`Annotation "${key}" on Service "ns/web" is invalid: expected `);
    expect(messages[0]).toEndWith(', got "bogus value"; ignored');
  });
});
