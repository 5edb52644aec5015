import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import {
  AffinityCookieAnnotation,
  AffinityCookieTtlAnnotation,
  ExposeExternalNameAnnotation,
  ExternalNamePortsAnnotation,
  parseServiceAnnotations,
  ProtocolAnnotation,
  ProxyProtocolAnnotation,
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
    [ProtocolAnnotation, "HTTP", { error: 'expected "http" or "tcp"' }],
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
