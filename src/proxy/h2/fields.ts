/**
 * HTTP/2 message checks (RFC 9113 §8.1.1, §8.2, §8.3): which decoded field lists make a request, a response or
 * trailers malformed (the session answers those with a stream error PROTOCOL_ERROR). Pure.
 *
 * Checked: names are lower-case tokens (no upper case, no separators or controls); values hold no NUL, CR or LF
 * and neither start nor end with a space or tab; pseudo-header fields are the ones defined for the kind of message,
 * each at most once, all before the regular fields, none in trailers; a request has `:method`, `:scheme` and a
 * non-empty `:path` (CONNECT: `:authority` and neither `:scheme` nor `:path`; extended CONNECT is not enabled);
 * a response has a three-digit `:status`; no connection-specific field (`connection`, `keep-alive`,
 * `proxy-connection`, `transfer-encoding`, `upgrade`) and `te` only as `trailers`; `content-length` is digits and
 * agrees with itself when repeated; `host`, when sent with `:authority`, names the same authority.
 */

/** The verdict of a check: undefined when well-formed, else why not. Results land in {@link checked}. */
export type FieldCheck = string | undefined;

/** What the last successful check found (valid until the next check: read it in the same turn). */
export const checked = {
  /** The `content-length` value, or -1 when absent. */
  contentLength: -1,
  /** A response's `:status` (0 for requests and trailers). */
  status: 0,
  /** A request's `:method` ("" for responses and trailers). */
  method: "",
};

/** 2 for `tchar` bytes (RFC 9110 §5.6.2) but upper case, 1 for upper case. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 2;
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

/** Not a token; `min` 2 refuses upper case too (field names), 1 allows it (methods). */
function notToken(s: string, min: number): boolean {
  if (s.length === 0) return true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TCHAR[c]! < min) return true;
  }
  return false;
}

function badValue(value: string): boolean {
  const n = value.length;
  if (n === 0) return false;
  let c = value.charCodeAt(0);
  if (c === 0x20 || c === 0x09) return true;
  c = value.charCodeAt(n - 1);
  if (c === 0x20 || c === 0x09) return true;
  for (let i = 0; i < n; i++) {
    c = value.charCodeAt(i);
    if (c === 0 || c === 0x0a || c === 0x0d) return true;
  }
  return false;
}

/** Digits only, as a number (-1 when not). */
function digits(v: string): number {
  if (v.length === 0 || v.length > 15) return -1;
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/**
 * Check one regular field (name, value) for any kind of message; records `content-length` in {@link checked}.
 * Returns why it is malformed, or undefined.
 */
function regularField(name: string, value: string): FieldCheck {
  if (notToken(name, 2)) return `invalid field name "${name}"`;
  if (badValue(value)) return `invalid value of field "${name}"`;
  switch (name.length) {
    case 2:
      if (name === "te" && value.toLowerCase() !== "trailers") return `field "te" is "${value}", not "trailers"`;
      break;
    case 7:
      if (name === "upgrade") return `connection-specific field "${name}"`;
      break;
    case 10:
      if (name === "connection" || name === "keep-alive") return `connection-specific field "${name}"`;
      break;
    case 14:
      if (name === "content-length") {
        const n = digits(value);
        if (n < 0) return `invalid content-length "${value}"`;
        if (checked.contentLength >= 0 && checked.contentLength !== n) return "conflicting content-length values";
        checked.contentLength = n;
      }
      break;
    case 16:
      if (name === "proxy-connection") return `connection-specific field "${name}"`;
      break;
    case 17:
      if (name === "transfer-encoding") return `connection-specific field "${name}"`;
      break;
  }
  return undefined;
}

const P_METHOD = 1;
const P_SCHEME = 2;
const P_AUTHORITY = 4;
const P_PATH = 8;

/**
 * Check a request's fields (the first HEADERS of a stream a client opened).
 *
 * @example
 * checkRequest([[":method", "GET"], [":scheme", "http"], [":path", "/"]]); // undefined; checked.method is "GET"
 * checkRequest([[":method", "GET"], [":path", "/"]]); // "missing :scheme"
 */
export function checkRequest(headers: readonly (readonly [string, string])[]): FieldCheck {
  checked.contentLength = -1;
  checked.status = 0;
  checked.method = "";
  let seen = 0;
  let regular = false;
  let authority = "";
  let host: string | undefined;
  let path = "";
  for (let i = 0; i < headers.length; i++) {
    const field = headers[i]!;
    const name = field[0];
    const value = field[1];
    if (name.charCodeAt(0) === 0x3a) {
      if (regular) return `pseudo-header field "${name}" after a regular field`;
      let bit: number;
      if (name === ":method") {
        bit = P_METHOD;
        checked.method = value;
        if (notToken(value, 1)) return `invalid :method "${value}"`;
      } else if (name === ":scheme") bit = P_SCHEME;
      else if (name === ":authority") {
        bit = P_AUTHORITY;
        authority = value;
      } else if (name === ":path") {
        bit = P_PATH;
        path = value;
      } else return `pseudo-header field "${name}" is not one of a request`;
      if ((seen & bit) !== 0) return `duplicate pseudo-header field "${name}"`;
      seen |= bit;
      if (badValue(value)) return `invalid value of "${name}"`;
      continue;
    }
    regular = true;
    const why = regularField(name, value);
    if (why !== undefined) return why;
    if (name === "host") host = value;
  }
  if ((seen & P_METHOD) === 0 || checked.method === "") return "missing :method";
  if (checked.method === "CONNECT") {
    if ((seen & P_AUTHORITY) === 0) return "CONNECT without :authority";
    if ((seen & (P_SCHEME | P_PATH)) !== 0) return "CONNECT with :scheme or :path";
  } else {
    if ((seen & P_SCHEME) === 0) return "missing :scheme";
    if ((seen & P_PATH) === 0 || path === "") return "missing :path";
  }
  if (host !== undefined && (seen & P_AUTHORITY) !== 0 && host.toLowerCase() !== authority.toLowerCase()) {
    return `host "${host}" differs from :authority "${authority}"`;
  }
  return undefined;
}

/**
 * Check a response's fields (informational or final); {@link checked}.status gets the status.
 *
 * @example
 * checkResponse([[":status", "200"], ["content-length", "2"]]); // undefined; checked.status 200, contentLength 2
 */
export function checkResponse(headers: readonly (readonly [string, string])[]): FieldCheck {
  checked.contentLength = -1;
  checked.status = 0;
  checked.method = "";
  let regular = false;
  for (let i = 0; i < headers.length; i++) {
    const field = headers[i]!;
    const name = field[0];
    const value = field[1];
    if (name.charCodeAt(0) === 0x3a) {
      if (regular) return `pseudo-header field "${name}" after a regular field`;
      if (name !== ":status") return `pseudo-header field "${name}" is not one of a response`;
      if (checked.status !== 0) return "duplicate :status";
      const s = value.length === 3 ? digits(value) : -1;
      if (s < 100) return `invalid :status "${value}"`;
      checked.status = s;
      continue;
    }
    regular = true;
    const why = regularField(name, value);
    if (why !== undefined) return why;
  }
  if (checked.status === 0) return "missing :status";
  return undefined;
}

/**
 * Check trailers (a field block that ends a stream after its head): regular fields only.
 *
 * @example
 * checkTrailers([["grpc-status", "0"]]); // undefined
 * checkTrailers([[":status", "200"]]); // "pseudo-header field \":status\" in trailers"
 */
export function checkTrailers(headers: readonly (readonly [string, string])[]): FieldCheck {
  checked.contentLength = -1;
  for (let i = 0; i < headers.length; i++) {
    const field = headers[i]!;
    const name = field[0];
    const value = field[1];
    if (name.charCodeAt(0) === 0x3a) return `pseudo-header field "${name}" in trailers`;
    const why = regularField(name, value);
    if (why !== undefined) return why;
  }
  return undefined;
}
