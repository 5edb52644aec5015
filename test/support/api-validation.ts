/**
 * kube-apiserver's decoding, defaulting and validation for the kinds kubegate writes (core/v1 and
 * events.k8s.io/v1 Events, coordination.k8s.io/v1 Leases, the Service `/status` subresource) and for the
 * EndpointSlices tests create, so the test API server refuses what a real one refuses.
 *
 * Ported from kubernetes/kubernetes: pkg/apis/core/validation (legacyValidateEvent, ValidateEventCreate,
 * ValidateEventUpdate, ValidateLoadBalancerStatus), pkg/apis/coordination/validation (ValidateLeaseSpec),
 * pkg/apis/discovery/validation (ValidateEndpointSlice{Create,Update}), the v1 defaults
 * (SetDefaults_EndpointPort, the LoadBalancer ingress `ipMode: VIP`) and apimachinery's field errors
 * (`field.Error.ErrorBody`, `errors.NewInvalid`), so messages and Status bodies match byte for byte where
 * the rule is ported. Decoding is checked for the fields these kinds carry (types, int32 ranges, RFC 3339
 * Time and MicroTime); decode messages follow encoding/json's wording but are not guaranteed identical.
 *
 * Deliberate difference: EndpointSlice addresses may be loopback (127.0.0.0/8, ::1), which kube-apiserver's
 * ValidateEndpointIP refuses, because the test backends listen on loopback. Every other rule of
 * ValidateEndpointIP (unspecified, link-local, link-local multicast) is enforced.
 */
import { isIP, isIPv4, isIPv6 } from "node:net";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === "string" ? v : "");

/** apimachinery's field.ErrorType values that these rules use. */
export type FieldErrorType = "Required" | "Invalid" | "NotSupported" | "Forbidden" | "Duplicate" | "TooMany";

/** One field error (apimachinery's `field.Error`). */
export interface FieldError {
  readonly type: FieldErrorType;
  readonly field: string;
  readonly value?: unknown;
  readonly detail?: string;
}

const TYPE_TEXT: Record<FieldErrorType, string> = {
  Required: "Required value",
  Invalid: "Invalid value",
  NotSupported: "Unsupported value",
  Forbidden: "Forbidden",
  Duplicate: "Duplicate value",
  TooMany: "Too many",
};
const CAUSE: Record<FieldErrorType, string> = {
  Required: "FieldValueRequired",
  Invalid: "FieldValueInvalid",
  NotSupported: "FieldValueNotSupported",
  Forbidden: "FieldValueForbidden",
  Duplicate: "FieldValueDuplicate",
  TooMany: "FieldValueTooMany",
};

const required = (field: string, detail = ""): FieldError => ({ type: "Required", field, detail });
const invalid = (field: string, value: unknown, detail: string): FieldError => ({ type: "Invalid", field, value, detail });
const forbidden = (field: string, detail: string): FieldError => ({ type: "Forbidden", field, detail });
const notSupported = (field: string, value: unknown, valid: readonly string[]): FieldError => ({
  type: "NotSupported",
  field,
  value,
  detail: `supported values: ${valid.map((v) => JSON.stringify(v)).join(", ")}`,
});
const immutable = (field: string, value: unknown): FieldError => invalid(field, value, "field is immutable");

/** `field.Error.ErrorBody()`: the message of one cause. */
export function errorBody(e: FieldError): string {
  let s = TYPE_TEXT[e.type];
  if (e.type !== "Required" && e.type !== "Forbidden") {
    const v = e.value;
    const shown = v === undefined || v === null ? "null" : typeof v === "string" ? JSON.stringify(v) : typeof v === "number" || typeof v === "boolean" ? String(v) : JSON.stringify(v);
    s += `: ${shown}`;
  }
  if (e.detail) s += `: ${e.detail}`;
  return s;
}

/**
 * The message and details of kube-apiserver's 422 Invalid Status (`errors.NewInvalid`): `Kind.group "name" is
 * invalid: <cause>` or `... is invalid: [<cause>, <cause>]`, details with group, kind, name and causes.
 */
export function invalidStatus(kind: string, group: string, name: string, errs: readonly FieldError[]): { message: string; details: Obj } {
  const causes = errs.map((e) => ({ reason: CAUSE[e.type], message: errorBody(e), field: e.field }));
  const texts = [...new Set(errs.map((e) => `${e.field}: ${errorBody(e)}`))];
  const qualified = group ? `${kind}.${group}` : kind;
  const message = `${qualified} ${JSON.stringify(name)} is invalid: ${texts.length === 1 ? texts[0] : `[${texts.join(", ")}]`}`;
  return { message, details: { name, ...(group ? { group } : {}), kind, causes } };
}

// ---------------------------------------------------------------------------------------------------------
// Names (apimachinery/pkg/util/validation)

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function isDNS1123Label(v: string): string[] {
  const out: string[] = [];
  if (v.length > 63) out.push("must be no more than 63 characters");
  if (!DNS1123_LABEL.test(v)) {
    out.push("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')");
  }
  return out;
}

function isDNS1123Subdomain(v: string): string[] {
  const out: string[] = [];
  if (v.length > 253) out.push("must be no more than 253 characters");
  if (!DNS1123_SUBDOMAIN.test(v)) {
    out.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
  }
  return out;
}

function isQualifiedName(v: string): string[] {
  const parts = v.split("/");
  let name = v;
  const out: string[] = [];
  if (parts.length === 2) {
    const [prefix, n] = parts as [string, string];
    name = n;
    if (prefix.length === 0) out.push("prefix part must be non-empty");
    else for (const m of isDNS1123Subdomain(prefix)) out.push(`prefix part ${m}`);
  } else if (parts.length > 2) {
    return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"];
  }
  if (name.length === 0) out.push("name part must be non-empty");
  else if (name.length > 63) out.push("name part must be no more than 63 characters");
  if (name.length > 0 && !QUALIFIED_NAME.test(name)) {
    out.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
  }
  return out;
}

function isFullyQualifiedDomainName(field: string, name: string): FieldError[] {
  if (name.length === 0) return [required(field)];
  const n = name.endsWith(".") ? name.slice(0, -1) : name;
  const errs = isDNS1123Subdomain(n);
  if (errs.length) return [invalid(field, n, errs.join(","))];
  if (n.split(".").length < 2) return [invalid(field, n, "should be a domain with at least two segments separated by dots")];
  for (const label of n.split(".")) {
    const e = isDNS1123Label(label);
    if (e.length) return [invalid(field, label, e.join(","))];
  }
  return [];
}

/** ValidateObjectMeta's name rule for kinds named as DNS subdomains (EndpointSlice, Lease, events.k8s.io). */
function subdomainName(o: Obj): FieldError[] {
  const name = str(isObj(o["metadata"]) ? o["metadata"]["name"] : undefined);
  return isDNS1123Subdomain(name).map((m) => invalid("metadata.name", name, m));
}

/** path.ValidatePathSegmentName, the rule every object name passes (core/v1 Events get no other). */
function pathSegmentName(o: Obj): FieldError[] {
  const name = str(isObj(o["metadata"]) ? o["metadata"]["name"] : undefined);
  if (name === "." || name === "..") return [invalid("metadata.name", name, `may not be '${name}'`)];
  for (const bad of ["/", "%"]) if (name.includes(bad)) return [invalid("metadata.name", name, `may not contain '${bad}'`)];
  return [];
}

// ---------------------------------------------------------------------------------------------------------
// Decoding: what json.Unmarshal into the Go types refuses (a 400 on create/update, a 422 on patch).

/** A body the Go types cannot hold. */
export class DecodeError extends Error {
  override name = "DecodeError";
}

type FieldType = "string" | "int32" | "bool" | "Time" | "MicroTime" | "object" | "stringArray";

const GO_TYPE: Record<FieldType, string> = { string: "string", int32: "int32", bool: "bool", Time: "v1.Time", MicroTime: "v1.MicroTime", object: "struct", stringArray: "[]string" };
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
/** metav1.MicroTime parses with "2006-01-02T15:04:05.000000Z07:00": exactly six fractional digits. */
const RFC3339_MICRO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

function jsonKind(v: unknown): string {
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return `number ${v}`;
  return typeof v === "object" ? "object" : typeof v;
}

/** Check one field's JSON type against its Go type; null is always accepted (the zero value). */
function check(v: unknown, type: FieldType, struct: string, path: string): void {
  if (v === undefined || v === null) return;
  const fail = (): never => {
    throw new DecodeError(`json: cannot unmarshal ${jsonKind(v)} into Go struct field ${struct}.${path} of type ${GO_TYPE[type]}`);
  };
  switch (type) {
    case "string":
      if (typeof v !== "string") fail();
      return;
    case "bool":
      if (typeof v !== "boolean") fail();
      return;
    case "int32":
      if (typeof v !== "number" || !Number.isInteger(v) || v < -2147483648 || v > 2147483647) fail();
      return;
    case "object":
      if (!isObj(v)) fail();
      return;
    case "stringArray":
      if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) fail();
      return;
    case "Time":
    case "MicroTime": {
      if (typeof v !== "string") fail();
      const re = type === "Time" ? RFC3339 : RFC3339_MICRO;
      const layout = type === "Time" ? "2006-01-02T15:04:05Z07:00" : "2006-01-02T15:04:05.000000Z07:00";
      if (!re.test(v as string) || Number.isNaN(Date.parse(v as string))) {
        throw new DecodeError(`parsing time ${JSON.stringify(v)} as ${JSON.stringify(layout)}: cannot parse ${JSON.stringify(v)} as ${JSON.stringify(layout)}`);
      }
      return;
    }
  }
}

function checkFields(o: unknown, fields: Readonly<Record<string, FieldType>>, struct: string, prefix: string): void {
  if (!isObj(o)) return;
  for (const [k, t] of Object.entries(fields)) check(o[k], t, struct, `${prefix}${k}`);
}

function checkList(v: unknown, struct: string, path: string, each: (item: unknown, i: number) => void): void {
  if (v === undefined || v === null) return;
  if (!Array.isArray(v)) throw new DecodeError(`json: cannot unmarshal ${jsonKind(v)} into Go struct field ${struct}.${path} of type []${struct}`);
  v.forEach(each);
}

const OBJECT_REFERENCE: Record<string, FieldType> = { kind: "string", namespace: "string", name: "string", uid: "string", apiVersion: "string", resourceVersion: "string", fieldPath: "string" };

// ---------------------------------------------------------------------------------------------------------
// The kinds

/** The hooks of one kind: decode check, defaulting, validation. `old` is set on update. */
export interface KindRules {
  /** Throws {@link DecodeError} when the Go type cannot hold the object. */
  readonly decode?: (o: Obj) => void;
  /** Defaulting (the v1 SetDefaults_* functions) of a decoded object. */
  readonly defaults?: (o: Obj) => Obj;
  readonly validate?: (o: Obj, old: Obj | undefined) => FieldError[];
  /** Defaulting and validation of a write to `/status` (only `status` changed). */
  readonly validateStatus?: (o: Obj, old: Obj) => FieldError[];
  readonly defaultsStatus?: (o: Obj) => Obj;
}

// --- EndpointSlice (discovery.k8s.io/v1) ------------------------------------------------------------------

const ADDRESS_TYPES = ["FQDN", "IPv4", "IPv6"];
const PROTOCOLS = ["SCTP", "TCP", "UDP"];

/** ValidateEndpointIP without its loopback rule (see the file comment). */
function endpointIP(field: string, address: string): FieldError[] {
  const family = isIP(address);
  if (family === 0) return [invalid(field, address, "must be a valid IP address")];
  const out: FieldError[] = [];
  const v4 = family === 4 ? address.split(".").map(Number) : undefined;
  const lower = address.toLowerCase();
  if (v4 ? v4.every((n) => n === 0) : /^[0:]+$/.test(lower)) out.push(invalid(field, address, `may not be unspecified (${address})`));
  if (v4 ? v4[0] === 169 && v4[1] === 254 : /^fe[89ab][0-9a-f]?:/.test(lower)) out.push(invalid(field, address, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
  if (v4 ? v4[0] === 224 && v4[1] === 0 && v4[2] === 0 : /^ff02:/.test(lower)) out.push(invalid(field, address, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"));
  return out;
}

function validateEndpointSlice(o: Obj, old: Obj | undefined): FieldError[] {
  const errs: FieldError[] = old ? [] : subdomainName(o);
  const addressType = str(o["addressType"]);
  if (addressType === "") errs.push(required("addressType"));
  else if (!ADDRESS_TYPES.includes(addressType)) errs.push(notSupported("addressType", addressType, ADDRESS_TYPES));
  const endpoints = Array.isArray(o["endpoints"]) ? (o["endpoints"] as unknown[]) : [];
  if (endpoints.length > 1000) errs.push({ type: "TooMany", field: "endpoints", value: endpoints.length, detail: "must have at most 1000 items" });
  else {
    endpoints.forEach((raw, i) => {
      const ep: Obj = isObj(raw) ? raw : {};
      const path = `endpoints[${i}]`;
      const addresses = Array.isArray(ep["addresses"]) ? (ep["addresses"] as string[]) : [];
      if (addresses.length === 0) errs.push(required(`${path}.addresses`, "must contain at least 1 address"));
      else if (addresses.length > 100) errs.push({ type: "TooMany", field: `${path}.addresses`, value: addresses.length, detail: "must have at most 100 items" });
      addresses.forEach((a, j) => {
        const f = `${path}.addresses[${j}]`;
        if (addressType === "IPv4") errs.push(...(isIPv4(a) ? endpointIP(f, a) : [invalid(f, a, "must be a valid IPv4 address")]));
        else if (addressType === "IPv6") errs.push(...(isIPv6(a) ? endpointIP(f, a) : [invalid(f, a, "must be a valid IPv6 address")]));
        else if (addressType === "FQDN") errs.push(...isFullyQualifiedDomainName(f, a));
      });
      if (typeof ep["nodeName"] === "string") for (const m of isDNS1123Subdomain(ep["nodeName"])) errs.push(invalid(`${path}.nodeName`, ep["nodeName"], m));
      if (typeof ep["hostname"] === "string") for (const m of isDNS1123Label(ep["hostname"])) errs.push(invalid(`${path}.hostname`, ep["hostname"], m));
      const hints = ep["hints"];
      if (isObj(hints) && Array.isArray(hints["forZones"])) {
        const zones = hints["forZones"] as unknown[];
        if (zones.length > 8) errs.push({ type: "TooMany", field: `${path}.hints.forZones`, value: zones.length, detail: "must have at most 8 items" });
        else {
          const seen = new Set<string>();
          zones.forEach((z, k) => {
            const name = str(isObj(z) ? z["name"] : undefined);
            const f = `${path}.hints.forZones[${k}].name`;
            if (seen.has(name)) errs.push({ type: "Duplicate", field: f, value: name });
            seen.add(name);
            if (!LABEL_VALUE.test(name) || name.length > 63) errs.push(invalid(f, name, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
          });
        }
      }
    });
  }
  const ports = Array.isArray(o["ports"]) ? (o["ports"] as unknown[]) : [];
  if (ports.length > 20000) errs.push({ type: "TooMany", field: "ports", value: ports.length, detail: "must have at most 20000 items" });
  else {
    const names = new Set<string>();
    ports.forEach((raw, i) => {
      const p: Obj = isObj(raw) ? raw : {};
      const path = `ports[${i}]`;
      const name = str(p["name"]);
      if (name.length > 0) for (const m of isDNS1123Label(name)) errs.push(invalid(`${path}.name`, name, m));
      if (names.has(name)) errs.push({ type: "Duplicate", field: `${path}.name`, value: name });
      names.add(name);
      const protocol = p["protocol"];
      if (typeof protocol !== "string") errs.push(required(`${path}.protocol`));
      else if (!PROTOCOLS.includes(protocol)) errs.push(notSupported(`${path}.protocol`, protocol, PROTOCOLS));
      // kube-apiserver checks a port's name, protocol and appProtocol; never its number.
      if (typeof p["appProtocol"] === "string") for (const m of isQualifiedName(p["appProtocol"])) errs.push(invalid(`${path}.appProtocol`, p["appProtocol"], m));
    });
  }
  if (old && str(old["addressType"]) !== addressType) errs.push(immutable("addressType", addressType));
  return errs;
}

const endpointSliceRules: KindRules = {
  decode: (o) => {
    check(o["addressType"], "string", "EndpointSlice", "addressType");
    checkList(o["endpoints"], "Endpoint", "endpoints", (ep) => {
      check(ep, "object", "EndpointSlice", "endpoints");
      checkFields(ep, { addresses: "stringArray", hostname: "string", nodeName: "string", zone: "string", conditions: "object", targetRef: "object", hints: "object" }, "Endpoint", "endpoints.");
      if (isObj(ep)) checkFields(ep["conditions"], { ready: "bool", serving: "bool", terminating: "bool" }, "EndpointConditions", "endpoints.conditions.");
    });
    checkList(o["ports"], "EndpointPort", "ports", (p) => {
      check(p, "object", "EndpointSlice", "ports");
      checkFields(p, { name: "string", protocol: "string", port: "int32", appProtocol: "string" }, "EndpointPort", "ports.");
    });
  },
  // SetDefaults_EndpointPort: name "" and protocol TCP when absent.
  defaults: (o) =>
    Array.isArray(o["ports"])
      ? { ...o, ports: (o["ports"] as unknown[]).map((p) => (isObj(p) ? { ...p, name: p["name"] ?? "", protocol: p["protocol"] ?? "TCP" } : p)) }
      : o,
  validate: validateEndpointSlice,
};

// --- Lease (coordination.k8s.io/v1) -----------------------------------------------------------------------

const leaseRules: KindRules = {
  decode: (o) => {
    check(o["spec"], "object", "Lease", "spec");
    checkFields(
      o["spec"],
      { holderIdentity: "string", leaseDurationSeconds: "int32", acquireTime: "MicroTime", renewTime: "MicroTime", leaseTransitions: "int32", strategy: "string", preferredHolder: "string" },
      "LeaseSpec",
      "spec.",
    );
  },
  validate: (o, old) => {
    const errs = old ? [] : subdomainName(o);
    const spec: Obj = isObj(o["spec"]) ? o["spec"] : {};
    const d = spec["leaseDurationSeconds"];
    if (typeof d === "number" && d <= 0) errs.push(invalid("spec.leaseDurationSeconds", d, "must be greater than 0"));
    const t = spec["leaseTransitions"];
    if (typeof t === "number" && t < 0) errs.push(invalid("spec.leaseTransitions", t, "must be greater than or equal to 0"));
    if (str(spec["preferredHolder"]) !== "" && str(spec["strategy"]) === "") errs.push(forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined"));
    return errs;
  },
};

// --- Events -----------------------------------------------------------------------------------------------

/** An Event in the internal (core) shape that the validation reads. */
interface InternalEvent {
  readonly namespace: string;
  readonly involvedObject: Obj;
  readonly reason: string;
  readonly message: string;
  readonly type: string;
  readonly eventTime: unknown;
  readonly action: string;
  readonly reportingController: string;
  readonly reportingInstance: string;
  readonly source: Obj;
  readonly firstTimestamp: unknown;
  readonly lastTimestamp: unknown;
  readonly count: unknown;
  readonly series: unknown;
  readonly related: unknown;
}

const nsOf = (o: Obj): string => str(isObj(o["metadata"]) ? o["metadata"]["namespace"] : undefined);

function coreEvent(o: Obj): InternalEvent {
  return {
    namespace: nsOf(o),
    involvedObject: isObj(o["involvedObject"]) ? o["involvedObject"] : {},
    reason: str(o["reason"]),
    message: str(o["message"]),
    type: str(o["type"]),
    eventTime: o["eventTime"] ?? null,
    action: str(o["action"]),
    reportingController: str(o["reportingComponent"]),
    reportingInstance: str(o["reportingInstance"]),
    source: isObj(o["source"]) ? o["source"] : {},
    firstTimestamp: o["firstTimestamp"] ?? null,
    lastTimestamp: o["lastTimestamp"] ?? null,
    count: o["count"] ?? 0,
    series: o["series"] ?? null,
    related: o["related"] ?? null,
  };
}

function eventsV1Event(o: Obj): InternalEvent {
  return {
    namespace: nsOf(o),
    involvedObject: isObj(o["regarding"]) ? o["regarding"] : {},
    reason: str(o["reason"]),
    message: str(o["note"]),
    type: str(o["type"]),
    eventTime: o["eventTime"] ?? null,
    action: str(o["action"]),
    reportingController: str(o["reportingController"]),
    reportingInstance: str(o["reportingInstance"]),
    source: isObj(o["deprecatedSource"]) ? o["deprecatedSource"] : {},
    firstTimestamp: o["deprecatedFirstTimestamp"] ?? null,
    lastTimestamp: o["deprecatedLastTimestamp"] ?? null,
    count: o["deprecatedCount"] ?? 0,
    series: o["series"] ?? null,
    related: o["related"] ?? null,
  };
}

/** legacyValidateEvent: what every Event passes, whatever API version wrote it. */
function legacyValidateEvent(e: InternalEvent): FieldError[] {
  const errs: FieldError[] = [];
  const involvedNs = str(e.involvedObject["namespace"]);
  if (e.eventTime === null) {
    if (involvedNs === "") {
      if (e.namespace !== "" && e.namespace !== "default") errs.push(invalid("involvedObject.namespace", involvedNs, "does not match event.namespace"));
    } else if (e.namespace !== involvedNs) errs.push(invalid("involvedObject.namespace", involvedNs, "does not match event.namespace"));
  } else {
    if (involvedNs === "" && e.namespace !== "default" && e.namespace !== "kube-system") errs.push(invalid("involvedObject.namespace", involvedNs, "does not match event.namespace"));
    if (e.reportingController === "") errs.push(required("reportingController"));
    for (const m of isQualifiedName(e.reportingController)) errs.push(invalid("reportingController", e.reportingController, m));
    if (e.reportingInstance === "") errs.push(required("reportingInstance"));
    if (e.reportingInstance.length > 128) errs.push(invalid("reportingInstance", "", "can have at most 128 characters"));
    if (e.action === "") errs.push(required("action"));
    if (e.action.length > 128) errs.push(invalid("action", "", "can have at most 128 characters"));
    if (e.reason === "") errs.push(required("reason"));
    if (e.reason.length > 128) errs.push(invalid("reason", "", "can have at most 128 characters"));
    if (e.message.length > 1024) errs.push(invalid("message", "", "can have at most 1024 characters"));
  }
  for (const m of isDNS1123Subdomain(e.namespace)) errs.push(invalid("namespace", e.namespace, m));
  return errs;
}

function validateSeries(e: InternalEvent): FieldError[] {
  if (!isObj(e.series)) return [];
  const errs: FieldError[] = [];
  const count = e.series["count"];
  if (typeof count !== "number" || count < 2) errs.push(invalid("series.count", "", "should be at least 2"));
  if (!e.series["lastObservedTime"]) errs.push(required("series.lastObservedTime"));
  return errs;
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

/** ValidateEventCreate/Update for events.k8s.io/v1: legacy rules plus the strict ones of the new API. */
function validateEventsV1(o: Obj, old: Obj | undefined): FieldError[] {
  const e = eventsV1Event(o);
  const errs = legacyValidateEvent(e);
  if (!old) {
    errs.push(...subdomainName(o), ...validateSeries(e));
    if (e.eventTime === null) errs.push(required("eventTime"));
    if (e.type !== "Normal" && e.type !== "Warning") errs.push(invalid("type", "", `has invalid value: ${e.type}`));
    if (e.firstTimestamp !== null) errs.push(invalid("firstTimestamp", "", "needs to be unset"));
    if (e.lastTimestamp !== null) errs.push(invalid("lastTimestamp", "", "needs to be unset"));
    if (e.count !== 0) errs.push(invalid("count", "", "needs to be unset"));
    if (str(e.source["component"]) !== "" || str(e.source["host"]) !== "") errs.push(invalid("source", "", "needs to be unset"));
    return errs;
  }
  const was = eventsV1Event(old);
  if (!same(e.series, was.series)) errs.push(...validateSeries(e));
  const fields: [string, keyof InternalEvent][] = [
    ["involvedObject", "involvedObject"], ["reason", "reason"], ["message", "message"], ["source", "source"],
    ["firstTimestamp", "firstTimestamp"], ["lastTimestamp", "lastTimestamp"], ["count", "count"], ["reason", "reason"],
    ["type", "type"], ["eventTime", "eventTime"], ["action", "action"], ["related", "related"],
    ["reportingController", "reportingController"], ["reportingInstance", "reportingInstance"],
  ];
  for (const [field, k] of fields) if (!same(e[k], was[k])) errs.push(immutable(field, e[k]));
  return errs;
}

const coreEventRules: KindRules = {
  decode: (o) => {
    checkFields(o, { involvedObject: "object", reason: "string", message: "string", source: "object", firstTimestamp: "Time", lastTimestamp: "Time", count: "int32", type: "string", eventTime: "MicroTime", series: "object", action: "string", related: "object", reportingComponent: "string", reportingInstance: "string" }, "Event", "");
    checkFields(o["involvedObject"], OBJECT_REFERENCE, "ObjectReference", "involvedObject.");
    checkFields(o["source"], { component: "string", host: "string" }, "EventSource", "source.");
    checkFields(o["series"], { count: "int32", lastObservedTime: "MicroTime" }, "EventSeries", "series.");
  },
  // Requests through core/v1 get legacyValidateEvent only (ValidateEventCreate/Update return early for v1).
  validate: (o, old) => [...(old ? [] : pathSegmentName(o)), ...legacyValidateEvent(coreEvent(o))],
};

const eventsV1Rules: KindRules = {
  decode: (o) => {
    checkFields(o, { eventTime: "MicroTime", series: "object", reportingController: "string", reportingInstance: "string", action: "string", reason: "string", regarding: "object", related: "object", note: "string", type: "string", deprecatedSource: "object", deprecatedFirstTimestamp: "Time", deprecatedLastTimestamp: "Time", deprecatedCount: "int32" }, "Event", "");
    checkFields(o["regarding"], OBJECT_REFERENCE, "ObjectReference", "regarding.");
    checkFields(o["series"], { count: "int32", lastObservedTime: "MicroTime" }, "EventSeries", "series.");
  },
  validate: validateEventsV1,
};

// --- Service status -----------------------------------------------------------------------------------------

const IP_MODES = ["Proxy", "VIP"];

/** ValidateLoadBalancerStatus (LoadBalancerIPMode on, AllowServiceLBStatusOnNonLB off: the 1.33 defaults). */
function validateLoadBalancerStatus(o: Obj): FieldError[] {
  const spec: Obj = isObj(o["spec"]) ? o["spec"] : {};
  const lb = isObj(o["status"]) && isObj(o["status"]["loadBalancer"]) ? o["status"]["loadBalancer"] : {};
  const ingress = Array.isArray(lb["ingress"]) ? (lb["ingress"] as unknown[]) : [];
  const path = "status.loadBalancer.ingress";
  if (spec["type"] !== "LoadBalancer" && ingress.length !== 0) return [forbidden(path, "may only be used when `spec.type` is 'LoadBalancer'")];
  const errs: FieldError[] = [];
  ingress.forEach((raw, i) => {
    const ing: Obj = isObj(raw) ? raw : {};
    const f = `${path}[${i}]`;
    const ip = str(ing["ip"]);
    const hostname = str(ing["hostname"]);
    const mode = ing["ipMode"];
    if (ip !== "" && isIP(ip) === 0) errs.push(invalid(`${f}.ip`, ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
    if (mode === undefined || mode === null) {
      if (ip !== "") errs.push(required(`${f}.ipMode`, "must be specified when `ip` is set"));
    } else if (ip === "") errs.push(forbidden(`${f}.ipMode`, "may not be specified when `ip` is not set"));
    else if (!IP_MODES.includes(String(mode))) errs.push(notSupported(`${f}.ipMode`, mode, IP_MODES));
    if (hostname !== "") {
      for (const m of isDNS1123Subdomain(hostname)) errs.push(invalid(`${f}.hostname`, hostname, m));
      if (isIP(hostname) !== 0) errs.push(invalid(`${f}.hostname`, hostname, "must be a DNS name, not an IP address"));
    }
  });
  return errs;
}

/** SetDefaults_Service: a LoadBalancer's ingress with an `ip` and no `ipMode` gets `ipMode: VIP`. */
export function defaultIngressIPMode(o: Obj): Obj {
  const spec: Obj = isObj(o["spec"]) ? o["spec"] : {};
  const status = o["status"];
  if (spec["type"] !== "LoadBalancer" || !isObj(status) || !isObj(status["loadBalancer"])) return o;
  const ingress = status["loadBalancer"]["ingress"];
  if (!Array.isArray(ingress)) return o;
  const fixed = ingress.map((i: unknown) => (isObj(i) && str(i["ip"]) !== "" && (i["ipMode"] === undefined || i["ipMode"] === null) ? { ...i, ipMode: "VIP" } : i));
  return { ...o, status: { ...status, loadBalancer: { ...status["loadBalancer"], ingress: fixed } } };
}

const serviceRules: KindRules = {
  decode: (o) => {
    const status = o["status"];
    check(status, "object", "Service", "status");
    if (!isObj(status)) return;
    check(status["loadBalancer"], "object", "ServiceStatus", "status.loadBalancer");
    const lb = status["loadBalancer"];
    if (!isObj(lb)) return;
    checkList(lb["ingress"], "LoadBalancerIngress", "status.loadBalancer.ingress", (ing) => {
      check(ing, "object", "LoadBalancerStatus", "status.loadBalancer.ingress");
      checkFields(ing, { ip: "string", hostname: "string", ipMode: "string" }, "LoadBalancerIngress", "status.loadBalancer.ingress.");
      if (isObj(ing)) checkList(ing["ports"], "PortStatus", "status.loadBalancer.ingress.ports", (p) => checkFields(p, { port: "int32", protocol: "string", error: "string" }, "PortStatus", "status.loadBalancer.ingress.ports."));
    });
  },
  defaultsStatus: defaultIngressIPMode,
  validateStatus: (o) => validateLoadBalancerStatus(o),
};

/** The rules by `apiVersion/Kind`. */
export const KIND_RULES: Readonly<Record<string, KindRules>> = {
  "discovery.k8s.io/v1/EndpointSlice": endpointSliceRules,
  "coordination.k8s.io/v1/Lease": leaseRules,
  "v1/Event": coreEventRules,
  "events.k8s.io/v1/Event": eventsV1Rules,
  "v1/Service": serviceRules,
};
