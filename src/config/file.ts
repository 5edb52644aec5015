/**
 * The config file (`--config kubegate.yaml`): YAML or JSON whose keys are the camelCase of the flags
 * (`nodePortAddresses`, `healthzBindAddress`, `drainGracePeriod: 30s`, ...). Parsing is pure (text in,
 * flag values or errors out); `parseFlags` merges them: flags > file > defaults. `OTEL_*` settings stay
 * in the environment, read by the OpenTelemetry SDK, and are not config-file keys.
 *
 * @example
 * const parsed = parseConfigFile("nodePortAddresses: [127.0.0.0/8]\nlogLevel: debug\n", "kubegate.yaml");
 * // { ok: true, values: { "nodeport-addresses": "127.0.0.0/8", "log-level": "debug" } }
 */
import * as v from "valibot";
import { parseDocument } from "yaml";
import { BALANCER_ALGORITHMS } from "../model/annotations.ts";
import { parseCidr } from "../model/net.ts";
import { type FlagName, type FlagValues, flagSpecs } from "./flags.ts";

/** A config file key, e.g. `nodePortAddresses`. */
export type FileKey = NonNullable<{ [F in FlagName]: (typeof flagSpecs)[F] extends { key: infer K } ? K : never }[FlagName]>;

/** The flag each config file key sets. */
export const flagOfFileKey = Object.fromEntries(
  Object.entries(flagSpecs).flatMap(([name, spec]) => ("key" in spec ? [[spec.key, name]] : [])),
) as Record<FileKey, FlagName>;

const quote = (x: unknown) => JSON.stringify(x) ?? String(x);
const got = (issue: { input: unknown }) => `got ${quote(issue.input)}`;

const Str = v.string((i) => `expected a string, ${got(i)}`);
const Bool = v.boolean((i) => `expected true or false, ${got(i)}`);
const durationMessage = (i: { input: unknown }) => `expected a duration like 500ms, 30s or 5m, ${got(i)}`;
const Duration = v.pipe(v.string(durationMessage), v.regex(/^\d+(\.\d+)?(ms|s|m|h)$/, durationMessage));
const hostPortMessage = (i: { input: unknown }) => `expected host:port such as 127.0.0.1:10349 or [::1]:10349, ${got(i)}`;
const HostPort = v.pipe(
  v.string(hostPortMessage),
  v.check((s) => {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(s);
    return m !== null && Number(m[2]) <= 65535;
  }, hostPortMessage),
);

/** A whole number, as a YAML number or digits (kept as text: the flag parser converts it). */
const countMessage = (i: { input: unknown }) => `expected a whole number (0 or more), ${got(i)}`;
const Count = v.pipe(
  v.union([v.number(), Str], countMessage),
  v.transform(String),
  v.regex(/^\d{1,15}$/, countMessage),
);

/** A list: a YAML sequence of strings, or one comma-separated string. Elements are checked one by one. */
const list = (item: v.GenericSchema<string, string>) =>
  v.pipe(
    v.union([v.array(v.unknown()), Str], (i) => `expected a list or a comma-separated string, ${got(i)}`),
    v.transform((x) => (typeof x === "string" ? x.split(",").map((s) => s.trim()).filter(Boolean) : x)),
    v.array(item),
  );
const Cidr = v.pipe(Str, v.check((s) => parseCidr(s) !== undefined, (i) => `expected a CIDR, ${got(i)}`));
const Address = v.pipe(Str, v.minLength(1, "expected an address, got an empty string"));
const PoolEntry = v.pipe(
  Str,
  v.check((s) => parseCidr(s.includes("/") ? s : `${s}/${s.includes(":") ? 128 : 32}`) !== undefined, (i) => `expected an IP or a CIDR, ${got(i)}`),
);

/** The schema of each key: the same values the flags take, with lists as YAML sequences too. */
export const ConfigFile = v.object({
  kubeconfig: v.optional(Str),
  manifests: v.optional(Str),
  hostnameOverride: v.optional(v.pipe(Str, v.minLength(1, "expected a node name, got an empty string"))),
  nodePortAddresses: v.optional(list(Cidr)),
  serviceProxyName: v.optional(v.pipe(Str, v.minLength(1, "expected a name, got an empty string"))),
  allServices: v.optional(Bool),
  healthzBindAddress: v.optional(HostPort),
  metricsBindAddress: v.optional(HostPort),
  hostAddresses: v.optional(list(Address)),
  drainGracePeriod: v.optional(Duration),
  connectTimeout: v.optional(Duration),
  idleTimeout: v.optional(Duration),
  lbController: v.optional(Bool),
  lbPool: v.optional(list(PoolEntry)),
  lbClaimUnclassed: v.optional(Bool),
  tracing: v.optional(Bool),
  tracingSampleRatio: v.optional(
    v.pipe(
      v.union([v.number(), Str], (i) => `expected a ratio from 0 to 1, ${got(i)}`),
      v.transform(String),
      v.check((x) => /^\d*\.?\d+$/.test(x) && Number(x) <= 1, (i) => `expected a ratio from 0 to 1, ${got(i)}`),
    ),
  ),
  accessLog: v.optional(Bool),
  accessLogSample: v.optional(
    v.pipe(
      v.union([v.number(), Str], (i) => `expected a ratio from 0 to 1, ${got(i)}`),
      v.transform(String),
      v.check((x) => /^\d*\.?\d+$/.test(x) && Number(x) <= 1, (i) => `expected a ratio from 0 to 1, ${got(i)}`),
    ),
  ),
  accessLogFile: v.optional(Str),
  logLevel: v.optional(v.picklist(["debug", "info", "warn", "error"], (i) => `expected debug, info, warn or error, ${got(i)}`)),
  defaultBalancer: v.optional(
    v.picklist(BALANCER_ALGORITHMS, (i) => `expected ${BALANCER_ALGORITHMS.join(", ")}, ${got(i)}`),
  ),
  requestHeaderTimeout: v.optional(Duration),
  responseHeaderTimeout: v.optional(Duration),
  maxRequestDuration: v.optional(Duration),
  maxConnections: v.optional(Count),
  maxConnectionsPerListener: v.optional(Count),
  maxConcurrentRequests: v.optional(Count),
  maxHeaderBytes: v.optional(Count),
  maxBodyBytes: v.optional(Count),
  retryIdempotent: v.optional(Bool),
  outlierConsecutiveFailures: v.optional(Count),
  outlierEjectionTime: v.optional(Duration),
  outlierMaxEjectionPercent: v.optional(Count),
  trustedProxies: v.optional(list(Cidr)),
  shutdownDelay: v.optional(Duration),
  stateFile: v.optional(Str),
  handoverSocket: v.optional(Str),
  maxEndpointsPerService: v.optional(Count),
  metricsMaxSeries: v.optional(Count),
  local: v.optional(Bool),
  endpointAccess: v.optional(v.picklist(["direct", "port-forward", "auto"], (i) => `expected direct, port-forward or auto, ${got(i)}`)),
  lbPortOffset: v.optional(Count),
  workers: v.optional(
    v.pipe(
      v.union([v.number(), Str], (i) => `expected a number of workers or "auto", ${got(i)}`),
      v.transform(String),
      v.regex(/^(auto|\d{1,4})$/, (i) => `expected a number of workers or "auto", ${got(i)}`),
    ),
  ),
} satisfies Record<FileKey, v.GenericSchema>);

/** The result of parsing a config file: flag values, or every problem found (one line each). */
export type ConfigFileResult =
  | { readonly ok: true; readonly values: FlagValues }
  | { readonly ok: false; readonly errors: readonly string[] };

/** Edit distance (insert, delete, substitute), for "did you mean". */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The known key closest to `key`: same letters ignoring case and dashes, the flag's own name, or a small typo. */
export function suggestKey(key: string): FileKey | undefined {
  const keys = Object.keys(flagOfFileKey) as FileKey[];
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, "");
  const same = keys.find((k) => norm(k) === norm(key));
  if (same) return same;
  let best: { key: FileKey; d: number } | undefined;
  for (const k of keys) {
    const d = distance(key.toLowerCase(), k.toLowerCase());
    if (d <= Math.max(2, Math.floor(k.length / 4)) && (!best || d < best.d)) best = { key: k, d };
  }
  return best?.key;
}

/** `nodePortAddresses[1]` from a valibot issue path. */
function pathOf(issue: v.BaseIssue<unknown>): string {
  let out = "";
  for (const item of issue.path ?? []) {
    const key = item.key as string | number;
    out += typeof key === "number" ? `[${key}]` : out ? `.${key}` : key;
  }
  return out;
}

/**
 * Parse the text of a config file. Unknown keys and bad values are errors that name the key path:
 * `Invalid config "kubegate.yaml": at "nodePortAddresses[1]": expected a CIDR, got "10.0.0.0/33"`.
 */
export function parseConfigFile(text: string, path: string): ConfigFileResult {
  const where = `Invalid config "${path}"`;
  const doc = parseDocument(text);
  if (doc.errors.length) {
    return { ok: false, errors: doc.errors.map((e) => `${where}: ${e.message.split("\n")[0]!.replace(/:$/, "")}`) };
  }
  const raw: unknown = doc.toJS() ?? {};
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return { ok: false, errors: [`${where}: expected a mapping of keys to values, got ${Array.isArray(raw) ? "a list" : quote(raw)}`] };
  }
  const errors: string[] = [];
  for (const key of Object.keys(raw)) {
    if (key in flagOfFileKey) continue;
    const suggestion = suggestKey(key);
    const hint = /^otel/i.test(key) ? " (OpenTelemetry is configured with the OTEL_* environment variables)" : suggestion ? ` (did you mean "${suggestion}"?)` : "";
    errors.push(`${where}: Unknown key "${key}"${hint}`);
  }
  const result = v.safeParse(ConfigFile, raw, { abortEarly: false });
  if (!result.success) for (const issue of result.issues) errors.push(`${where}: at "${pathOf(issue)}": ${issue.message}`);
  if (errors.length || !result.success) return { ok: false, errors };
  const values: Partial<Record<FlagName, string | boolean>> = {};
  for (const [key, value] of Object.entries(result.output) as [FileKey, unknown][]) {
    if (value === undefined) continue;
    values[flagOfFileKey[key]] = Array.isArray(value) ? value.join(",") : (value as string | boolean);
  }
  return { ok: true, values };
}
