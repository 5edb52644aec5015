import { describe, expect, test } from "bun:test";
import { flagSpecs, helpText, parseFlags } from "../../src/config/flags.ts";

const run = (argv: string[]) => {
  const r = parseFlags(argv, { hostname: "host-1" });
  if (r.kind !== "run") throw new Error(`Expected a config, got ${JSON.stringify(r)}`);
  return r.config;
};

describe("parseFlags", () => {
  test("defaults match kube-proxy's conventions, shifted beside kube-proxy's ports", () => {
    expect(run([])).toEqual({
      nodeName: "host-1",
      nodePortAddresses: [],
      serviceProxyName: "kubegate",
      allServices: false,
      healthzBindAddress: { host: "0.0.0.0", port: 10356 },
      metricsBindAddress: { host: "127.0.0.1", port: 10349 },
      hostAddresses: [],
      drainGracePeriodMs: 30_000,
      connectTimeoutMs: 2_000,
      idleTimeoutMs: 300_000,
      logLevel: "info",
      lbController: false,
      lbPool: [],
      lbClaimUnclassed: true,
      tracing: false,
      tracingSampleRatio: undefined,
      accessLog: true,
      accessLogSample: 1,
      accessLogFile: undefined,
      defaultBalancer: "round-robin",
      requestHeaderTimeoutMs: 30_000,
      responseHeaderTimeoutMs: 60_000,
      maxRequestDurationMs: 0,
      maxConnections: 0,
      maxConnectionsPerListener: 0,
      maxConcurrentRequests: 0,
      maxHeaderBytes: 65_536,
      maxBodyBytes: 0,
      retryIdempotent: true,
      outlierConsecutiveFailures: 5,
      outlierEjectionTimeMs: 30_000,
      outlierMaxEjectionPercent: 50,
      trustedProxies: [],
      shutdownDelayMs: 0,
      stateFile: undefined,
      handoverSocket: "auto",
      maxEndpointsPerService: 10_000,
      metricsMaxSeries: 20_000,
      workers: 0,
      local: false,
      endpointAccess: "direct",
      lbPortOffset: 0,
      otelEnv: {},
    });
  });

  test("the OTEL_* variables of the environment are kept in the config, nothing else of it", () => {
    const r = parseFlags([], { hostname: "h", env: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SERVICE_NAME: "edge", HOME: "/root", PATH: "/bin" } });
    if (r.kind !== "run") throw new Error(JSON.stringify(r));
    expect(r.config.otelEnv).toEqual({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SERVICE_NAME: "edge" });
  });

  test("every flag is parsed", () => {
    expect(
      run([
        "--manifests", "deploy/demo",
        "--hostname-override", "node-a",
        "--nodeport-addresses", "127.0.0.0/8, ::1/128",
        "--service-proxy-name", "edge",
        "--all-services",
        "--healthz-bind-address", "[::1]:0",
        "--metrics-bind-address", "127.0.0.1:9999",
        "--host-addresses", "127.0.0.1,::1",
        "--drain-grace-period", "500ms",
        "--connect-timeout", "1.5s",
        "--idle-timeout", "2m",
        "--log-level", "debug",
        "--lb-pool", "192.0.2.0/28,198.51.100.7",
        "--tracing-sample-ratio", "0.25",
        "--no-access-log",
        "--access-log-sample", "0.1",
        "--access-log-file", "/var/log/kubegate/access.log",
        "--default-balancer", "maglev",
        "--request-header-timeout", "5s",
        "--response-header-timeout", "10s",
        "--max-request-duration", "1m",
        "--max-connections", "20000",
        "--max-connections-per-listener", "5000",
        "--max-concurrent-requests", "1024",
        "--max-header-bytes", "16384",
        "--max-body-bytes", "1048576",
        "--no-retry-idempotent",
        "--outlier-consecutive-failures", "3",
        "--outlier-ejection-time", "10s",
        "--outlier-max-ejection-percent", "30",
        "--trusted-proxies", "10.0.0.0/8",
        "--shutdown-delay", "5s",
        "--state-file", "/var/lib/kubegate/state.json",
        "--max-endpoints-per-service", "500",
        "--metrics-max-series", "100",
        "--workers", "3",
      ]),
    ).toEqual({
      manifests: "deploy/demo",
      nodeName: "node-a",
      nodePortAddresses: ["127.0.0.0/8", "::1/128"],
      serviceProxyName: "edge",
      allServices: true,
      healthzBindAddress: { host: "::1", port: 0 },
      metricsBindAddress: { host: "127.0.0.1", port: 9999 },
      hostAddresses: ["127.0.0.1", "::1"],
      drainGracePeriodMs: 500,
      connectTimeoutMs: 1500,
      idleTimeoutMs: 120_000,
      logLevel: "debug",
      lbController: false,
      lbPool: ["192.0.2.0/28", "198.51.100.7"],
      lbClaimUnclassed: true,
      tracing: false,
      tracingSampleRatio: 0.25,
      accessLog: false,
      accessLogSample: 0.1,
      accessLogFile: "/var/log/kubegate/access.log",
      defaultBalancer: "maglev",
      requestHeaderTimeoutMs: 5_000,
      responseHeaderTimeoutMs: 10_000,
      maxRequestDurationMs: 60_000,
      maxConnections: 20_000,
      maxConnectionsPerListener: 5_000,
      maxConcurrentRequests: 1024,
      maxHeaderBytes: 16_384,
      maxBodyBytes: 1_048_576,
      retryIdempotent: false,
      outlierConsecutiveFailures: 3,
      outlierEjectionTimeMs: 10_000,
      outlierMaxEjectionPercent: 30,
      trustedProxies: ["10.0.0.0/8"],
      shutdownDelayMs: 5_000,
      stateFile: "/var/lib/kubegate/state.json",
      handoverSocket: "auto",
      maxEndpointsPerService: 500,
      metricsMaxSeries: 100,
      workers: 3,
      local: false,
      endpointAccess: "direct",
      lbPortOffset: 0,
      otelEnv: {},
    });
  });

  test.each([
    [["--nodeport-addresses", "10.0.0.0/33"], 'Invalid --nodeport-addresses "10.0.0.0/33"'],
    [["--healthz-bind-address", "10356"], 'Invalid --healthz-bind-address "10356"'],
    [["--drain-grace-period", "soon"], 'Invalid --drain-grace-period "soon"'],
    [["--log-level", "loud"], 'Invalid --log-level "loud"'],
    [["--tracing-sample-ratio", "1.5"], 'Invalid --tracing-sample-ratio "1.5": Expected a ratio from 0 to 1'],
    [["--access-log-sample", "2"], 'Invalid --access-log-sample "2": Expected a ratio from 0 to 1'],
    [["--metrics-bind-address", "127.0.0.1:70000"], "Port must be 0..65535"],
    [["--bogus"], "Unknown option '--bogus'"],
    [["--kubeconfig", "a", "--manifests", "b"], "exclusive"],
  ])("%p is a clear error", (argv, message) => {
    const r = parseFlags(argv, { hostname: "h" });
    expect(r.kind).toBe("error");
    expect(r.kind === "error" && r.message).toContain(message);
  });

  test("--help documents every flag with its default; --version is recognised", () => {
    const r = parseFlags(["--help"], { hostname: "h" });
    expect(r.kind).toBe("help");
    const text = r.kind === "help" ? r.text : "";
    for (const name of Object.keys(flagSpecs)) expect(text).toMatch(new RegExp(`--(\\[no-\\])?${name}`));
    expect(text).toContain("--[no-]lb-claim-unclassed");
    expect(text).toContain('(default "0.0.0.0:10356")');
    expect(helpText()).toBe(text);
    expect(parseFlags(["--version"], { hostname: "h" }).kind).toBe("version");
  });

  test("--help names each flag's config file key, and --config", () => {
    const text = helpText();
    expect(text).toContain("--nodeport-addresses VALUE  [config file: nodePortAddresses]");
    expect(text).toContain("--config VALUE\n");
    expect(text).toContain("kubegate check [flags]");
  });

  test("file values sit between flags and defaults", () => {
    const file = { path: "k.yaml", values: { "log-level": "warn", "all-services": true, "nodeport-addresses": "127.0.0.0/8" } as const };
    const r = parseFlags(["--log-level", "error", "--config", "k.yaml"], { hostname: "h", file });
    expect(r.kind === "run" && [r.config.logLevel, r.config.allServices, r.config.nodePortAddresses, r.configFile]).toEqual([
      "error", true, ["127.0.0.0/8"], "k.yaml",
    ]);
  });

  test("a bad value from the file is reported against the file's key, not a flag", () => {
    const r = parseFlags([], { hostname: "h", file: { path: "k.yaml", values: { "drain-grace-period": "soon" } } });
    expect(r.kind === "error" && r.message).toBe('Invalid config "k.yaml": at "drainGracePeriod": Expected a duration like 500ms, 30s, 5m, got "soon"');
  });
});
