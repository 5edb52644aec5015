/**
 * kubegate's per-Service annotations, parsed with valibot. Pure.
 *
 * | annotation | value | applies to | default |
 * | --- | --- | --- | --- |
 * | `kubegate.io/protocol` | `http` or `tcp` | TCP ports (UDP stays `udp`) | from `appProtocol`: `http` for `http` and `kubernetes.io/ws`, else `tcp` |
 * | `kubegate.io/affinity-cookie` | a cookie name (RFC 6265 token, e.g. `kg-affinity`) | HTTP entrypoints | none: no cookie affinity |
 * | `kubegate.io/affinity-cookie-ttl` | whole seconds, 1 to 31536000 | with `affinity-cookie` | the Service's affinity timeout (10800, or `sessionAffinityConfig.clientIP.timeoutSeconds`) |
 * | `kubegate.io/proxy-protocol` | `v2` | TCP entrypoints: a PROXY protocol v2 header is sent to the backend | none |
 * | `kubegate.io/expose-external-name` | `"true"` or `"false"` | ExternalName Services | `"false"`: ExternalName Services are not served |
 * | `kubegate.io/external-name-ports` | listen ports, see below | exposed ExternalName Services | none (required to expose one) |
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
 * served. Later annotations (balancer, timeouts) join {@link ANNOTATIONS}.
 */
import * as v from "valibot";

/** Seconds a cookie may live at most (a year). */
export const MAX_COOKIE_TTL_SECONDS = 31_536_000;

/** RFC 6265 cookie-name: an RFC 2616 token (visible ASCII except separators). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A Service port name (IANA_SVC_NAME) or number. */
const PORT_REF = /^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$/;

/** `kubegate.io/protocol`: force TCP ports to `http` or `tcp`. */
export const ProtocolAnnotation = v.picklist(["http", "tcp"], 'expected "http" or "tcp"');
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

/**
 * Every kubegate annotation, by the field it fills in {@link ServiceAnnotations}: its key and the schema that parses
 * its text. Add later ones (balancer, timeouts) here.
 */
export const ANNOTATIONS = {
  protocol: { key: "kubegate.io/protocol", schema: ProtocolAnnotation },
  affinityCookie: { key: "kubegate.io/affinity-cookie", schema: AffinityCookieAnnotation },
  affinityCookieTtl: { key: "kubegate.io/affinity-cookie-ttl", schema: AffinityCookieTtlAnnotation },
  proxyProtocol: { key: "kubegate.io/proxy-protocol", schema: ProxyProtocolAnnotation },
  exposeExternalName: { key: "kubegate.io/expose-external-name", schema: ExposeExternalNameAnnotation },
  externalNamePorts: { key: "kubegate.io/external-name-ports", schema: ExternalNamePortsAnnotation },
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
