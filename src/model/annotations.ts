/**
 * kubegate's per-Service annotations, parsed with valibot. Pure.
 *
 * | annotation | value | applies to | default |
 * | --- | --- | --- | --- |
 * | `kubegate.io/protocol` | `http`, `h2c` or `tcp` | TCP ports (UDP stays `udp`) | from `appProtocol`: `http` for `http` and `kubernetes.io/ws`, `h2c` for `kubernetes.io/h2c`, `h2c` and `grpc`, else `tcp` |
 * | `kubegate.io/affinity-cookie` | a cookie name (RFC 6265 token, e.g. `kg-affinity`) | HTTP entrypoints | none: no cookie affinity |
 * | `kubegate.io/affinity-cookie-ttl` | whole seconds, 1 to 31536000 | with `affinity-cookie` | the Service's affinity timeout (10800, or `sessionAffinityConfig.clientIP.timeoutSeconds`) |
 * | `kubegate.io/proxy-protocol` | `v2` | TCP entrypoints: a PROXY protocol v2 header is sent to the backend | none |
 * | `kubegate.io/expose-external-name` | `"true"` or `"false"` | ExternalName Services | `"false"`: ExternalName Services are not served |
 * | `kubegate.io/external-name-ports` | listen ports, see below | exposed ExternalName Services | none (required to expose one) |
 * | `kubegate.io/balancer` | `round-robin`, `least-request`, `random`, `ring-hash` or `maglev` | every entrypoint | `--default-balancer` |
 * | `kubegate.io/hash-on` | `client-ip`, `header:NAME` or `cookie:NAME` | `ring-hash` and `maglev` | `client-ip` |
 * | `kubegate.io/slow-start` | a duration from 0s to 1h (0s: off) | every entrypoint | off |
 * | `kubegate.io/connect-timeout` | a duration from 1ms to 24h | every entrypoint | `--connect-timeout` |
 * | `kubegate.io/request-header-timeout` | a duration from 1ms to 24h | HTTP | `--request-header-timeout` |
 * | `kubegate.io/response-header-timeout` | a duration from 1ms to 24h | HTTP | `--response-header-timeout` |
 * | `kubegate.io/idle-timeout` | a duration from 1ms to 24h | every entrypoint | `--idle-timeout` |
 * | `kubegate.io/max-request-duration` | a duration from 0s to 24h (0s: no limit) | HTTP | `--max-request-duration` |
 * | `kubegate.io/max-concurrent-requests` | a whole number from 0 to 1000000 (0: no limit) | HTTP | `--max-concurrent-requests` |
 * | `kubegate.io/max-body-bytes` | a whole number from 0 to 1099511627776 (0: no limit) | HTTP | `--max-body-bytes` |
 * | `kubegate.io/retry-idempotent` | `"true"` or `"false"` | HTTP | `--[no-]retry-idempotent` |
 *
 * Durations are Go-style: a sequence of decimal numbers, each with a unit `h`, `m`, `s` or `ms` (`500ms`, `30s`,
 * `1.5s`, `1m30s`), in whole milliseconds. The policy annotations fill {@link TrafficPolicy} (see {@link policyOf}).
 *
 * `kubegate.io/external-name-ports`: an ExternalName Service has no node ports, so this says where to listen. It is a
 * comma-separated list of entries, each `LISTEN` or `PORT=LISTEN`:
 * - `PORT` names one of the Service's `spec.ports`, by `name` or by `port` number; a bare `LISTEN` is allowed when
 *   the Service has exactly one port;
 * - `LISTEN` (1 to 65535) is the port kubegate listens on, on the node addresses (`--nodeport-addresses`), like a
 *   NodePort;
 * - connections are proxied to `spec.externalName` on that Service port's `targetPort` when it is a number, else on
 *   its `port` (the port a client of the DNS CNAME would use).
 *
 * @example
 * // Listen on 8443 for the Service port named "https" and on 8080 for the port numbered 80.
 * metadata.annotations:
 *   kubegate.io/expose-external-name: "true"
 *   kubegate.io/external-name-ports: "https=8443, 80=8080"
 *
 * An invalid value is reported as a ModelError for that Service only and the default applies; the Service is still
 * served.
 */
import * as v from "valibot";
import type { BalancerAlgorithm, HashOn, TrafficPolicy } from "./types.ts";
import { BALANCER_ALGORITHMS, POLICY_FIELDS } from "./types.ts";

/** Seconds a cookie may live at most (a year). */
export const MAX_COOKIE_TTL_SECONDS = 31_536_000;

/** RFC 6265 cookie-name: an RFC 2616 token (visible ASCII except separators). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A Service port name (IANA_SVC_NAME) or number. */
const PORT_REF = /^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$/;

/** `kubegate.io/protocol`: force TCP ports to `http`, `h2c` (HTTP/2 cleartext, gRPC) or `tcp`. */
export const ProtocolAnnotation = v.picklist(["http", "h2c", "tcp"], 'expected "http", "h2c" or "tcp"');
export type ProtocolAnnotation = v.InferOutput<typeof ProtocolAnnotation>;

/** `kubegate.io/affinity-cookie`: the name of the affinity cookie the gateway sets on HTTP responses. */
export const AffinityCookieAnnotation = v.pipe(
  v.string(),
  v.regex(TOKEN, "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
);
export type AffinityCookieAnnotation = v.InferOutput<typeof AffinityCookieAnnotation>;

/** `kubegate.io/affinity-cookie-ttl`: the cookie's Max-Age in seconds. */
export const AffinityCookieTtlAnnotation = v.pipe(
  v.string(),
  v.regex(/^[1-9][0-9]{0,8}$/, `expected whole seconds from 1 to ${MAX_COOKIE_TTL_SECONDS}`),
  v.transform(Number),
  v.maxValue(MAX_COOKIE_TTL_SECONDS, `expected whole seconds from 1 to ${MAX_COOKIE_TTL_SECONDS}`),
);
export type AffinityCookieTtlAnnotation = v.InferOutput<typeof AffinityCookieTtlAnnotation>;

/** `kubegate.io/proxy-protocol`: send a PROXY protocol header of this version to the backends of TCP ports. */
export const ProxyProtocolAnnotation = v.literal("v2", 'expected "v2"');
export type ProxyProtocolAnnotation = v.InferOutput<typeof ProxyProtocolAnnotation>;

/** `kubegate.io/expose-external-name`: serve this ExternalName Service. */
export const ExposeExternalNameAnnotation = v.pipe(
  v.picklist(["true", "false"], 'expected "true" or "false"'),
  v.transform((text) => text === "true"),
);
export type ExposeExternalNameAnnotation = v.InferOutput<typeof ExposeExternalNameAnnotation>;

/** One entry of `kubegate.io/external-name-ports`. */
export interface ExternalNamePort {
  /** The Service port (name, or number), or undefined for the Service's only port. */
  readonly servicePort?: string | number | undefined;
  /** The port to listen on. */
  readonly listen: number;
}

/** `kubegate.io/external-name-ports`: `LISTEN` or `PORT=LISTEN`, comma-separated (see the module comment). */
export const ExternalNamePortsAnnotation = v.pipe(
  v.string(),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const entries: ExternalNamePort[] = [];
    const listens = new Set<number>();
    const refs = new Set<string>();
    for (const raw of dataset.value.split(",")) {
      const text = raw.trim();
      const eq = text.indexOf("=");
      const ref = eq === -1 ? undefined : text.slice(0, eq).trim();
      const listenText = eq === -1 ? text : text.slice(eq + 1).trim();
      const listen = /^[1-9][0-9]{0,4}$/.test(listenText) ? Number(listenText) : Number.NaN;
      if ((ref !== undefined && !PORT_REF.test(ref)) || !(listen <= 65535)) {
        addIssue({ message: 'expected entries "LISTEN" or "PORT=LISTEN" (LISTEN from 1 to 65535) separated by commas' });
        return NEVER;
      }
      if (listens.has(listen)) {
        addIssue({ message: `expected each listen port once; ${listen} is given twice` });
        return NEVER;
      }
      const refKey = ref ?? "";
      if (refs.has(refKey)) {
        addIssue({ message: `expected each Service port once; ${ref === undefined ? "the only port" : `"${ref}"`} is given twice` });
        return NEVER;
      }
      listens.add(listen);
      refs.add(refKey);
      entries.push(ref === undefined ? { listen } : { servicePort: /^[0-9]+$/.test(ref) ? Number(ref) : ref, listen });
    }
    return entries;
  }),
);
export type ExternalNamePortsAnnotation = v.InferOutput<typeof ExternalNamePortsAnnotation>;

export { BALANCER_ALGORITHMS };
/** The consistent-hash algorithms, the only ones `kubegate.io/hash-on` applies to. */
export const HASH_BALANCERS: ReadonlySet<BalancerAlgorithm> = new Set(["ring-hash", "maglev"]);

/** `kubegate.io/balancer`: the balancing algorithm of the Service's ports. */
export const BalancerAnnotation = v.picklist(
  BALANCER_ALGORITHMS,
  'expected "round-robin", "least-request", "random", "ring-hash" or "maglev"',
);
export type BalancerAnnotation = v.InferOutput<typeof BalancerAnnotation>;

const HASH_ON_MESSAGE = 'expected "client-ip", "header:NAME" or "cookie:NAME" (NAME of letters, digits and !#$%&\'*+-.^_`|~)';
const CLIENT_IP: HashOn = Object.freeze({ source: "client-ip" });

/**
 * `kubegate.io/hash-on`: what ring-hash and maglev key on: `client-ip`, `header:NAME` (an HTTP field name, matched
 * case-insensitively: stored lowercase) or `cookie:NAME` (an RFC 6265 cookie name, case-sensitive).
 */
export const HashOnAnnotation = v.pipe(
  v.string(),
  v.rawTransform(({ dataset, addIssue, NEVER }): HashOn => {
    const text = dataset.value;
    if (text === "client-ip") return CLIENT_IP;
    const colon = text.indexOf(":");
    const source = text.slice(0, colon);
    const name = text.slice(colon + 1);
    if (colon !== -1 && TOKEN.test(name)) {
      if (source === "header") return Object.freeze({ source, name: name.toLowerCase() });
      if (source === "cookie") return Object.freeze({ source, name });
    }
    addIssue({ message: HASH_ON_MESSAGE });
    return NEVER;
  }),
);
export type HashOnAnnotation = v.InferOutput<typeof HashOnAnnotation>;

/** Milliseconds per duration unit. */
const UNIT_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
/** One `NUMBER UNIT` term of a Go-style duration; `ms` before `m`. */
const TERM = /(\d+(?:\.\d+)?)(ms|h|m|s)/y;

/** A Go-style duration (`500ms`, `30s`, `1m30s`, `1.5h`, or `0`) in whole milliseconds, or undefined. */
export function parseDurationMs(text: string): number | undefined {
  if (text === "0") return 0;
  if (text === "") return undefined;
  let total = 0;
  TERM.lastIndex = 0;
  while (TERM.lastIndex < text.length) {
    const at = TERM.lastIndex;
    const m = TERM.exec(text);
    if (!m || m.index !== at) return undefined;
    total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
  }
  const whole = Math.round(total);
  return Math.abs(total - whole) < 1e-6 ? whole : undefined;
}

/** Formats a duration in ms the way the messages and docs write it (`24h`, `1ms`, `0s`). */
function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  for (const unit of ["h", "m", "s"] as const) if (ms % (UNIT_MS[unit] as number) === 0) return `${ms / (UNIT_MS[unit] as number)}${unit}`;
  return `${ms}ms`;
}

/** A duration annotation: Go-style text -> whole ms from `minMs` to `maxMs`. */
function durationAnnotation(minMs: number, maxMs: number) {
  const message = `expected a duration from ${formatDuration(minMs)} to ${formatDuration(maxMs)}, such as "500ms", "30s" or "1m30s"`;
  return v.pipe(
    v.string(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      const ms = parseDurationMs(dataset.value);
      if (ms !== undefined && ms >= minMs && ms <= maxMs) return ms;
      addIssue({ message });
      return NEVER;
    }),
  );
}

/** A whole-number annotation from 0 to `max`. */
function countAnnotation(max: number) {
  const message = `expected a whole number from 0 to ${max}`;
  return v.pipe(v.string(), v.regex(/^(?:0|[1-9][0-9]{0,15})$/, message), v.transform(Number), v.maxValue(max, message));
}

/** One day, the longest timeout an annotation may set. */
export const MAX_TIMEOUT_MS = 86_400_000;
/** One hour, the longest slow-start window. */
export const MAX_SLOW_START_MS = 3_600_000;
/** The largest `kubegate.io/max-concurrent-requests`. */
export const MAX_CONCURRENT_REQUESTS = 1_000_000;
/** The largest `kubegate.io/max-body-bytes` (1 TiB). */
export const MAX_BODY_BYTES = 1_099_511_627_776;

/** `kubegate.io/slow-start`: new endpoints ramp up over this long (0s: off). */
export const SlowStartAnnotation = durationAnnotation(0, MAX_SLOW_START_MS);
/** `kubegate.io/connect-timeout`, `request-header-timeout`, `response-header-timeout`, `idle-timeout`: 1ms to 24h. */
export const TimeoutAnnotation = durationAnnotation(1, MAX_TIMEOUT_MS);
/** `kubegate.io/max-request-duration`: 0s (no limit) to 24h. */
export const MaxRequestDurationAnnotation = durationAnnotation(0, MAX_TIMEOUT_MS);
/** `kubegate.io/max-concurrent-requests`: 0 (no limit) to 1000000. */
export const MaxConcurrentRequestsAnnotation = countAnnotation(MAX_CONCURRENT_REQUESTS);
/** `kubegate.io/max-body-bytes`: 0 (no limit) to 1 TiB. */
export const MaxBodyBytesAnnotation = countAnnotation(MAX_BODY_BYTES);
/** `kubegate.io/retry-idempotent`: retry an idempotent HTTP request that got no response bytes, once. */
export const RetryIdempotentAnnotation = v.pipe(
  v.picklist(["true", "false"], 'expected "true" or "false"'),
  v.transform((text) => text === "true"),
);
export type RetryIdempotentAnnotation = v.InferOutput<typeof RetryIdempotentAnnotation>;

/**
 * Every kubegate annotation, by the field it fills in {@link ServiceAnnotations}: its key and the schema that parses
 * its text. A new annotation is added here (and to docs/annotations.md).
 */
export const ANNOTATIONS = {
  protocol: { key: "kubegate.io/protocol", schema: ProtocolAnnotation },
  affinityCookie: { key: "kubegate.io/affinity-cookie", schema: AffinityCookieAnnotation },
  affinityCookieTtl: { key: "kubegate.io/affinity-cookie-ttl", schema: AffinityCookieTtlAnnotation },
  proxyProtocol: { key: "kubegate.io/proxy-protocol", schema: ProxyProtocolAnnotation },
  exposeExternalName: { key: "kubegate.io/expose-external-name", schema: ExposeExternalNameAnnotation },
  externalNamePorts: { key: "kubegate.io/external-name-ports", schema: ExternalNamePortsAnnotation },
  balancer: { key: "kubegate.io/balancer", schema: BalancerAnnotation },
  hashOn: { key: "kubegate.io/hash-on", schema: HashOnAnnotation },
  slowStartMs: { key: "kubegate.io/slow-start", schema: SlowStartAnnotation },
  connectTimeoutMs: { key: "kubegate.io/connect-timeout", schema: TimeoutAnnotation },
  requestHeaderTimeoutMs: { key: "kubegate.io/request-header-timeout", schema: TimeoutAnnotation },
  responseHeaderTimeoutMs: { key: "kubegate.io/response-header-timeout", schema: TimeoutAnnotation },
  idleTimeoutMs: { key: "kubegate.io/idle-timeout", schema: TimeoutAnnotation },
  maxRequestDurationMs: { key: "kubegate.io/max-request-duration", schema: MaxRequestDurationAnnotation },
  maxConcurrentRequests: { key: "kubegate.io/max-concurrent-requests", schema: MaxConcurrentRequestsAnnotation },
  maxRequestBodyBytes: { key: "kubegate.io/max-body-bytes", schema: MaxBodyBytesAnnotation },
  retryIdempotent: { key: "kubegate.io/retry-idempotent", schema: RetryIdempotentAnnotation },
} as const;

type AnnotationTable = typeof ANNOTATIONS;

/** The parsed kubegate annotations of one Service; a field is absent when its annotation is unset or invalid. */
export type ServiceAnnotations = {
  readonly [K in keyof AnnotationTable]?: v.InferOutput<AnnotationTable[K]["schema"]>;
};

/** `kubegate.io/protocol`. */
export const PROTOCOL_ANNOTATION = ANNOTATIONS.protocol.key;
/** `kubegate.io/expose-external-name`. */
export const EXPOSE_EXTERNAL_NAME_ANNOTATION = ANNOTATIONS.exposeExternalName.key;

const FIELDS = Object.keys(ANNOTATIONS) as (keyof AnnotationTable)[];
const NONE: ServiceAnnotations = Object.freeze({});

/** The message for an annotation that is set but wrong; the annotation is then ignored. */
export function invalidAnnotationMessage(key: string, service: string, problem: string, value: string): string {
  return `Annotation "${key}" on Service "${service}" is invalid: ${problem}, got "${value}"; ignored`;
}

/**
 * Parse the kubegate annotations of Service `service` (`namespace/name`). Each invalid one is reported through
 * `report` (once, with the annotation, the Service and the value) and left out of the result.
 *
 * @example
 * parseServiceAnnotations({ "kubegate.io/proxy-protocol": "v3" }, "ns/web", console.log);
 * // logs: Annotation "kubegate.io/proxy-protocol" on Service "ns/web" is invalid: expected "v2", got "v3"; ignored
 * // returns: {}
 */
export function parseServiceAnnotations(
  annotations: Readonly<Record<string, string>> | undefined,
  service: string,
  report: (message: string) => void,
): ServiceAnnotations {
  if (!annotations) return NONE;
  let out: Record<string, unknown> | undefined;
  for (const field of FIELDS) {
    const { key, schema } = ANNOTATIONS[field];
    const text = annotations[key];
    if (text === undefined) continue;
    const result = v.safeParse(schema as v.GenericSchema<string, unknown>, text);
    if (result.success) (out ??= {})[field] = result.output;
    else report(invalidAnnotationMessage(key, service, result.issues[0].message, text));
  }
  return out ?? NONE;
}

// The policy fields are annotation fields too, named alike (POLICY_FIELDS lives in types.ts: equality needs it, not valibot).
const _policyFieldsAreAnnotations: readonly (keyof AnnotationTable)[] = POLICY_FIELDS;
void _policyFieldsAreAnnotations;
export { POLICY_FIELDS };

/** The policy fields that only HTTP entrypoints use (a Service without HTTP ports is told they have no effect). */
export const HTTP_ONLY_POLICY_FIELDS = [
  "requestHeaderTimeoutMs",
  "responseHeaderTimeoutMs",
  "maxRequestDurationMs",
  "maxConcurrentRequests",
  "maxRequestBodyBytes",
  "retryIdempotent",
] as const satisfies readonly (typeof POLICY_FIELDS)[number][];

/**
 * The {@link TrafficPolicy} of parsed annotations (frozen), or undefined when no policy annotation is set (validly).
 * `omit` leaves fields out (e.g. a `hashOn` that does not apply).
 *
 * @example
 * policyOf(parseServiceAnnotations({ "kubegate.io/balancer": "maglev", "kubegate.io/idle-timeout": "90s" }, "ns/web", log));
 * // { balancer: "maglev", idleTimeoutMs: 90000 }
 */
export function policyOf(parsed: ServiceAnnotations, omit?: ReadonlySet<keyof TrafficPolicy>): TrafficPolicy | undefined {
  if (parsed === NONE) return undefined;
  let out: Record<string, unknown> | undefined;
  for (const field of POLICY_FIELDS) {
    const value = parsed[field];
    if (value !== undefined && !omit?.has(field)) (out ??= {})[field] = value;
  }
  return out === undefined ? undefined : Object.freeze(out as TrafficPolicy);
}
