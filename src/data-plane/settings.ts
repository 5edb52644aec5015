/**
 * Config -> the data plane's settings (plain data, see `types.ts`), and settings -> the proxies' options (with the
 * live objects a data plane builds for itself: the connection budget, the lifecycle flag, the trusted-peer check).
 */
import type { Config } from "../config/flags.ts";
import { cidrContains, parseCidr, parseIP } from "../model/net.ts";
import type { HttpProxyOptions } from "../proxy/http/options.ts";
import { ConnectionBudget, defaultProxyOptions } from "../proxy/types.ts";
import type { DataPlaneSettings, ProxySettings } from "./types.ts";

/**
 * The data plane's settings this config implies.
 * @example const settings = dataPlaneSettings(config, pkg.version);
 */
export function dataPlaneSettings(config: Config, serviceVersion: string): DataPlaneSettings {
  const env = config.otelEnv;
  return {
    proxy: {
      connectTimeoutMs: config.connectTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
      requestHeaderTimeoutMs: config.requestHeaderTimeoutMs,
      responseHeaderTimeoutMs: config.responseHeaderTimeoutMs,
      maxRequestDurationMs: config.maxRequestDurationMs,
      maxConcurrentRequests: config.maxConcurrentRequests,
      maxHeaderBytes: config.maxHeaderBytes,
      maxRequestBodyBytes: config.maxBodyBytes,
      retryIdempotent: config.retryIdempotent,
      maxConnectionsPerListener: config.maxConnectionsPerListener,
      maxConnections: config.maxConnections,
      trustedProxies: config.trustedProxies,
    },
    defaultBalancer: config.defaultBalancer,
    outlier: {
      consecutiveFailures: config.outlierConsecutiveFailures,
      baseEjectionMs: config.outlierEjectionTimeMs,
      maxEjectionPercent: config.outlierMaxEjectionPercent,
    },
    drainGraceMs: config.drainGracePeriodMs,
    maxTrafficSeries: config.metricsMaxSeries,
    // Web Crypto, not node:crypto: a worker loads no node:stream (its idle memory, BENCHMARKS.md).
    cookieSecret: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url"),
    accessLog: config.accessLog,
    ...(config.accessLogSample < 1 ? { accessLogSample: config.accessLogSample } : {}),
    ...(config.accessLogFile !== undefined ? { accessLogFile: config.accessLogFile } : {}),
    ...(config.endpointAccess !== "direct"
      ? { endpointAccess: { mode: config.endpointAccess, ...(config.kubeconfig !== undefined ? { kubeconfig: config.kubeconfig } : {}) } }
      : {}),
    tracing: {
      // An OTLP endpoint in the environment turns tracing on (unless --tracing=false or OTEL_SDK_DISABLED, see setup.ts).
      wanted: config.tracing || Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
      ...(config.tracingSampleRatio !== undefined ? { sampleRatio: config.tracingSampleRatio } : {}),
      env,
      serviceVersion,
    },
  };
}

/**
 * Whether a peer address is inside one of `cidrs` (`--trusted-proxies`); undefined when the list is empty. An
 * IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`, what a dual-stack listener reports for an IPv4 client) is matched as IPv4.
 */
export function trustedPeers(cidrs: readonly string[]): ((peer: string) => boolean) | undefined {
  const parsed = cidrs.map((c) => parseCidr(c)!);
  if (parsed.length === 0) return undefined;
  return (peer) => {
    const ip = parseIP(peer); // `::ffff:a.b.c.d` parses as IPv4, as in Go
    return ip !== undefined && parsed.some((c) => cidrContains(c, ip));
  };
}

/**
 * The proxies' options from the settings (gateway-wide defaults; Services override some by annotation). Each call
 * makes a new connection budget and lifecycle flag: one data plane, one call.
 */
export function proxyOptions(settings: ProxySettings): HttpProxyOptions {
  const trust = trustedPeers(settings.trustedProxies);
  const { maxConnections: _, trustedProxies: __, ...limits } = settings;
  return {
    ...defaultProxyOptions,
    ...limits,
    ...(settings.maxConnections > 0 ? { connections: new ConnectionBudget(settings.maxConnections) } : {}),
    lifecycle: { closing: false },
    ...(trust ? { trustForwarded: trust } : {}),
  };
}
