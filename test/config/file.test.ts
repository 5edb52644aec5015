import { describe, expect, test } from "bun:test";
import { type FileKey, flagOfFileKey, parseConfigFile, suggestKey } from "../../src/config/file.ts";
import { flagSpecs } from "../../src/config/flags.ts";

const errorsOf = (text: string) => {
  const r = parseConfigFile(text, "kubegate.yaml");
  if (r.ok) throw new Error(`Expected errors, got ${JSON.stringify(r.values)}`);
  return r.errors;
};

describe("parseConfigFile", () => {
  test("every value flag has a camelCase key; help, version and config itself are flag-only", () => {
    const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    for (const [flag, spec] of Object.entries(flagSpecs)) {
      if (["help", "version", "config"].includes(flag)) expect("key" in spec).toBe(false);
      else expect(camel(flag).toLowerCase()).toBe((spec as { key: string }).key.toLowerCase());
    }
    expect(flagOfFileKey.nodePortAddresses).toBe("nodeport-addresses");
    expect(flagOfFileKey.hostnameOverride).toBe("hostname-override");
  });

  test("values become flag values: lists as sequences or comma strings, booleans, durations", () => {
    const r = parseConfigFile(
      [
        "nodePortAddresses: [127.0.0.0/8, '::1/128']",
        "hostAddresses: 127.0.0.1, ::1",
        "lbPool:",
        "  - 192.0.2.0/28",
        "  - 198.51.100.7",
        "allServices: true",
        "lbClaimUnclassed: false",
        "drainGracePeriod: 5s",
        "healthzBindAddress: '[::1]:0'",
        "logLevel: debug",
        "hostnameOverride: node-a",
        "accessLogSample: 0.05",
        "accessLogFile: /var/log/kubegate/access.log",
      ].join("\n"),
      "kubegate.yaml",
    );
    expect(r).toEqual({
      ok: true,
      values: {
        "nodeport-addresses": "127.0.0.0/8,::1/128",
        "host-addresses": "127.0.0.1,::1",
        "lb-pool": "192.0.2.0/28,198.51.100.7",
        "all-services": true,
        "lb-claim-unclassed": false,
        "drain-grace-period": "5s",
        "healthz-bind-address": "[::1]:0",
        "log-level": "debug",
        "hostname-override": "node-a",
        "access-log-sample": "0.05",
        "access-log-file": "/var/log/kubegate/access.log",
      },
    });
  });

  test("an empty file is an empty config; JSON works too", () => {
    expect(parseConfigFile("", "k.yaml")).toEqual({ ok: true, values: {} });
    expect(parseConfigFile("# nothing\n", "k.yaml")).toEqual({ ok: true, values: {} });
    expect(parseConfigFile('{"logLevel": "warn"}', "k.json")).toEqual({ ok: true, values: { "log-level": "warn" } });
  });

  test("a bad value names its key path, with what was given", () => {
    expect(errorsOf("accessLogSample: 2")).toEqual(['Invalid config "kubegate.yaml": at "accessLogSample": expected a ratio from 0 to 1, got "2"']);
    expect(errorsOf('nodePortAddresses: ["127.0.0.0/8", "10.0.0.0/33"]')).toEqual([
      'Invalid config "kubegate.yaml": at "nodePortAddresses[1]": expected a CIDR, got "10.0.0.0/33"',
    ]);
    expect(errorsOf("nodePortAddresses: 127.0.0.0/8, nope")).toEqual([
      'Invalid config "kubegate.yaml": at "nodePortAddresses[1]": expected a CIDR, got "nope"',
    ]);
    expect(errorsOf("drainGracePeriod: 30")).toEqual([
      'Invalid config "kubegate.yaml": at "drainGracePeriod": expected a duration like 500ms, 30s or 5m, got 30',
    ]);
    expect(errorsOf("lbController: yes please")[0]).toBe('Invalid config "kubegate.yaml": at "lbController": expected true or false, got "yes please"');
    expect(errorsOf("metricsBindAddress: 127.0.0.1:70000")[0]).toContain('at "metricsBindAddress": expected host:port');
    expect(errorsOf("logLevel: loud")[0]).toContain('at "logLevel": expected debug, info, warn or error, got "loud"');
    expect(errorsOf("lbPool: [192.0.2.300]")[0]).toContain('at "lbPool[0]": expected an IP or a CIDR, got "192.0.2.300"');
  });

  test("unknown keys are errors with a suggestion; every problem is reported at once", () => {
    expect(errorsOf("nodeportAddresses: 127.0.0.0/8\nlogLevl: debug\nnode-port-addresses: x\nfrobnicate: 1\ndrainGracePeriod: soon")).toEqual([
      'Invalid config "kubegate.yaml": Unknown key "nodeportAddresses" (did you mean "nodePortAddresses"?)',
      'Invalid config "kubegate.yaml": Unknown key "logLevl" (did you mean "logLevel"?)',
      'Invalid config "kubegate.yaml": Unknown key "node-port-addresses" (did you mean "nodePortAddresses"?)',
      'Invalid config "kubegate.yaml": Unknown key "frobnicate"',
      'Invalid config "kubegate.yaml": at "drainGracePeriod": expected a duration like 500ms, 30s or 5m, got "soon"',
    ]);
  });

  test("OTel settings are pointed at the OTEL_* environment", () => {
    expect(errorsOf("otelExporterOtlpEndpoint: http://collector:4318")[0]).toContain("OTEL_* environment variables");
  });

  test("YAML syntax errors and a non-mapping file are clear", () => {
    expect(errorsOf("logLevel: [debug")[0]).toStartWith('Invalid config "kubegate.yaml": ');
    expect(errorsOf("- logLevel: debug")).toEqual(['Invalid config "kubegate.yaml": expected a mapping of keys to values, got a list']);
  });

  test("suggestKey", () => {
    expect(suggestKey("LOGLEVEL")).toBe("logLevel" satisfies FileKey);
    expect(suggestKey("lb-pool")).toBe("lbPool");
    expect(suggestKey("healthzBindAdress")).toBe("healthzBindAddress");
    expect(suggestKey("zzz")).toBeUndefined();
  });
});
