/**
 * OpenTelemetry's standard environment, read once for both OTLP/HTTP exports (traces in `tracing/setup.ts`, metrics
 * in `metrics/otlp-export.ts`): endpoints per signal, headers, the resource. Pure functions of an env record (the
 * caller passes `config.otelEnv`); nothing of OpenTelemetry's SDK is imported here, so the metrics export does not
 * load it.
 *
 * Reference: https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/ and
 * https://opentelemetry.io/docs/specs/otel/protocol/exporter/
 */

/** An environment as a record (`config.otelEnv`, or `process.env` in tests). */
export type OtelEnv = Readonly<Record<string, string | undefined>>;

/** A malformed `OTEL_*` setting (the message names the variable and says what is expected). */
export class OtelEnvError extends Error {
  override name = "OtelEnvError";
}

/** The value of `name`, trimmed, or undefined when unset or blank. */
export function envValue(env: OtelEnv, name: string): string | undefined {
  const v = env[name]?.trim();
  return v ? v : undefined;
}

/** Whether `name` is set to `true` (case-insensitive), as the spec reads booleans. */
export function envTrue(env: OtelEnv, name: string): boolean {
  return envValue(env, name)?.toLowerCase() === "true";
}

/**
 * The OTLP/HTTP URL of one signal: `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` as is, else `OTEL_EXPORTER_OTLP_ENDPOINT`
 * with `/v1/<signal>` appended; undefined when neither is set.
 *
 * @example signalUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/" }, "metrics") // "http://c:4318/v1/metrics"
 */
export function signalUrl(env: OtelEnv, signal: "traces" | "metrics"): string | undefined {
  const own = envValue(env, `OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_ENDPOINT`);
  if (own) return own;
  const base = envValue(env, "OTEL_EXPORTER_OTLP_ENDPOINT");
  return base ? `${base.replace(/\/+$/, "")}/v1/${signal}` : undefined;
}

/**
 * The headers of one signal's export: `OTEL_EXPORTER_OTLP_HEADERS`, then `OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS` (which
 * wins per key); `k=v` pairs, comma-separated, URL-encoded. Undefined when neither is set.
 *
 * @throws {OtelEnvError} on an entry without `=`.
 * @example signalHeaders({ OTEL_EXPORTER_OTLP_HEADERS: "x-tenant=team%20a" }, "metrics") // { "x-tenant": "team a" }
 */
export function signalHeaders(env: OtelEnv, signal: "traces" | "metrics"): Record<string, string> | undefined {
  const raw = [env.OTEL_EXPORTER_OTLP_HEADERS, env[`OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_HEADERS`]].filter((h): h is string => !!h?.trim()).join(",");
  if (!raw) return undefined;
  const headers: Record<string, string> = {};
  for (const pair of raw.split(",")) {
    if (pair.trim() === "") continue;
    const i = pair.indexOf("=");
    if (i <= 0) throw new OtelEnvError(`Invalid OTEL_EXPORTER_OTLP_HEADERS entry "${pair.trim()}": use key=value`);
    headers[decodeURIComponent(pair.slice(0, i).trim())] = decodeURIComponent(pair.slice(i + 1).trim());
  }
  return headers;
}

/** How one signal's export is sent, as both OTLP/HTTP exports read it. */
export interface SignalTransport {
  /** The endpoint ({@link signalUrl}, else the export's default), an http(s) URL. */
  readonly url: string;
  readonly headers: Record<string, string>;
  /** `OTEL_EXPORTER_OTLP_[<SIGNAL>_]COMPRESSION=gzip`. */
  readonly gzip: boolean;
  /** Settings this export does not support and what it does instead, for a warning at start-up. */
  readonly notes: string[];
}

/**
 * The endpoint, headers and compression of one signal's OTLP/HTTP JSON export; a protocol other than http/json and a
 * compression other than gzip or none are noted (and ignored).
 *
 * @throws {OtelEnvError} on an endpoint that is not an http(s) URL, or a malformed header entry.
 * @example signalTransport({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }, "traces", "http://localhost:4318/v1/traces").url // "http://c:4318/v1/traces"
 */
export function signalTransport(env: OtelEnv, signal: "traces" | "metrics", defaultUrl: string): SignalTransport {
  const url = signalUrl(env, signal) ?? defaultUrl;
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("not http(s)");
  } catch {
    throw new OtelEnvError(`Invalid OTLP ${signal} endpoint "${url}": use an http:// or https:// URL`);
  }
  const notes: string[] = [];
  const own = `OTEL_EXPORTER_OTLP_${signal.toUpperCase()}`;
  const protocol = envValue(env, `${own}_PROTOCOL`) ?? envValue(env, "OTEL_EXPORTER_OTLP_PROTOCOL");
  if (protocol !== undefined && protocol !== "http/json") notes.push(`OTLP protocol "${protocol}" is not supported for ${signal}: sending http/json`);
  const compression = (envValue(env, `${own}_COMPRESSION`) ?? envValue(env, "OTEL_EXPORTER_OTLP_COMPRESSION") ?? "none").toLowerCase();
  if (compression !== "gzip" && compression !== "none") notes.push(`OTLP compression "${compression}" is not supported: sending uncompressed`);
  return { url, headers: signalHeaders(env, signal) ?? {}, gzip: compression === "gzip", notes };
}

/**
 * A duration in ms from `name` (a non-negative integer of milliseconds, as the spec writes them), or `fallback` when
 * unset.
 *
 * @throws {OtelEnvError} on anything else.
 */
export function envMillis(env: OtelEnv, name: string, fallback: number): number {
  const raw = envValue(env, name);
  if (raw === undefined) return fallback;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms < 0) throw new OtelEnvError(`Invalid ${name} "${raw}": use a whole number of milliseconds`);
  return ms;
}

/**
 * The resource attributes kubegate reports with every export: `service.name` (`OTEL_SERVICE_NAME`, default
 * `kubegate`), `service.version` and, when given, `service.instance.id` (the node: series of several gateways must
 * not merge in a collector).
 */
export function resourceAttributes(env: OtelEnv, serviceVersion?: string, instanceId?: string): Record<string, string> {
  const attrs: Record<string, string> = { "service.name": envValue(env, "OTEL_SERVICE_NAME") ?? "kubegate" };
  if (serviceVersion) attrs["service.version"] = serviceVersion;
  if (instanceId) attrs["service.instance.id"] = instanceId;
  return attrs;
}
