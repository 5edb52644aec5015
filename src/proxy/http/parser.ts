/**
 * Strict RFC 9112 message-head parsers for the HTTP/1.1 forwarder.
 *
 * Heads are parsed by scanning bytes (no regex, no splitting): the caller first finds the end of the
 * head with {@link findHeadEnd}, then {@link parseRequestHead} / {@link parseResponseHead} validate every
 * byte and record where each field line is, so the forwarder can copy kept lines unchanged. Field
 * positions go to a module-level scratch table ({@link fields}) that is only valid until the next parse:
 * callers build the forwarded head in the same synchronous turn.
 *
 * Anything that could make two parsers disagree about framing is rejected (request smuggling):
 * bare LF, obs-fold, whitespace before the colon, duplicate or non-numeric Content-Length,
 * Content-Length with Transfer-Encoding, any request transfer coding other than a single `chunked`.
 */

export const CR = 13;
export const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;

/** 1 for `tchar` (RFC 9110 §5.6.2). */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

/** 1 for bytes allowed in a Host field value (reg-name / IP-literal / port). */
const HOSTCHAR = new Uint8Array(256);
for (const c of "-._~!$&'()*+,;=%:[]0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") HOSTCHAR[c.charCodeAt(0)] = 1;

/** 1 for bytes that may not appear in a field value: CTLs except HTAB, and DEL. */
const BADVALUE = new Uint8Array(256);
for (let i = 0; i < 32; i++) if (i !== HTAB) BADVALUE[i] = 1;
BADVALUE[127] = 1;

/** Field kinds the forwarder cares about; everything else is {@link F_OTHER}. */
export const F_OTHER = 0;
export const F_HOST = 1;
export const F_CONTENT_LENGTH = 2;
export const F_TRANSFER_ENCODING = 3;
export const F_CONNECTION = 4;
export const F_KEEP_ALIVE = 5;
export const F_PROXY_CONNECTION = 6;
export const F_TE = 7;
export const F_TRAILER = 8;
export const F_UPGRADE = 9;
export const F_PROXY_AUTHORIZATION = 10;
export const F_PROXY_AUTHENTICATE = 11;
export const F_EXPECT = 12;
export const F_X_FORWARDED_FOR = 13;
export const F_X_FORWARDED_PROTO = 14;
export const F_X_FORWARDED_HOST = 15;
export const F_FORWARDED = 16;
/** Cookie: end-to-end; classified only so cookie affinity can find it without comparing names. */
export const F_COOKIE = 17;
/** Any other `X-Forwarded-*` field (Port, Prefix, Server, ...): dropped unless the peer is trusted. */
export const F_X_FORWARDED_OTHER = 18;
/**
 * `Content_Length` / `Transfer_Encoding`: a CGI-style backend maps them to the framing fields, so a request
 * carrying one is refused.
 */
export const F_FRAMING_LOOKALIKE = 19;

/** Kinds that are hop-by-hop (never forwarded as received). Transfer-Encoding is handled apart. */
export const HOP_BY_HOP: Uint8Array = new Uint8Array(32);
for (const k of [F_CONNECTION, F_KEEP_ALIVE, F_PROXY_CONNECTION, F_TE, F_TRAILER, F_UPGRADE, F_PROXY_AUTHORIZATION, F_PROXY_AUTHENTICATE]) HOP_BY_HOP[k] = 1;

const lit = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const N_TE = lit("te");
const N_HOST = lit("host");
const N_EXPECT = lit("expect");
const N_COOKIE = lit("cookie");
const N_TRAILER = lit("trailer");
const N_UPGRADE = lit("upgrade");
const N_FORWARDED = lit("forwarded");
const N_CONNECTION = lit("connection");
const N_KEEP_ALIVE = lit("keep-alive");
const N_CONTENT_LENGTH = lit("content-length");
const N_X_FORWARDED_FOR = lit("x-forwarded-for");
const N_PROXY_CONNECTION = lit("proxy-connection");
const N_X_FORWARDED_HOST = lit("x-forwarded-host");
const N_TRANSFER_ENCODING = lit("transfer-encoding");
const N_X_FORWARDED_PROTO = lit("x-forwarded-proto");
const N_PROXY_AUTHENTICATE = lit("proxy-authenticate");
const N_PROXY_AUTHORIZATION = lit("proxy-authorization");
const N_X_FORWARDED_ = lit("x-forwarded-");
const N_CONTENT_LENGTH_ = lit("content_length");
const N_TRANSFER_ENCODING_ = lit("transfer_encoding");
const V_CHUNKED = lit("chunked");
const V_CLOSE = lit("close");
const V_100_CONTINUE = lit("100-continue");
const V_HTTP1 = lit("HTTP/1.");

/** Case-insensitive compare of buf[s..s+lower.length) with a lowercase token literal (input already validated as tchar). */
function eqLower(buf: Uint8Array, s: number, lower: Uint8Array): boolean {
  for (let i = 0; i < lower.length; i++) if ((buf[s + i]! | 0x20) !== lower[i]) return false;
  return true;
}

/** Like {@link eqLower}, for a literal with `_` (which `| 0x20` would turn into DEL). */
function eqLowerUnderscore(buf: Uint8Array, s: number, lower: Uint8Array): boolean {
  for (let i = 0; i < lower.length; i++) {
    const l = lower[i]!;
    const c = buf[s + i]!;
    if (l === 95 ? c !== 95 : (c | 0x20) !== l) return false;
  }
  return true;
}

/** Classify a validated field name buf[s..e). */
function classify(buf: Uint8Array, s: number, e: number): number {
  const k = known(buf, s, e);
  if (k !== F_OTHER || e - s < 13 || (buf[s]! | 0x20) !== 120 || buf[s + 1] !== 45) return k;
  return eqLower(buf, s, N_X_FORWARDED_) ? F_X_FORWARDED_OTHER : F_OTHER;
}

/** The kind of a field name the forwarder handles by name (exact length first). */
function known(buf: Uint8Array, s: number, e: number): number {
  switch (e - s) {
    case 2: return eqLower(buf, s, N_TE) ? F_TE : F_OTHER;
    case 4: return eqLower(buf, s, N_HOST) ? F_HOST : F_OTHER;
    case 6: return eqLower(buf, s, N_EXPECT) ? F_EXPECT : eqLower(buf, s, N_COOKIE) ? F_COOKIE : F_OTHER;
    case 7: return eqLower(buf, s, N_UPGRADE) ? F_UPGRADE : eqLower(buf, s, N_TRAILER) ? F_TRAILER : F_OTHER;
    case 9: return eqLower(buf, s, N_FORWARDED) ? F_FORWARDED : F_OTHER;
    case 10: return eqLower(buf, s, N_CONNECTION) ? F_CONNECTION : eqLower(buf, s, N_KEEP_ALIVE) ? F_KEEP_ALIVE : F_OTHER;
    case 14:
      return eqLower(buf, s, N_CONTENT_LENGTH) ? F_CONTENT_LENGTH : eqLowerUnderscore(buf, s, N_CONTENT_LENGTH_) ? F_FRAMING_LOOKALIKE : F_OTHER;
    case 15: return eqLower(buf, s, N_X_FORWARDED_FOR) ? F_X_FORWARDED_FOR : F_OTHER;
    case 16:
      return eqLower(buf, s, N_PROXY_CONNECTION) ? F_PROXY_CONNECTION : eqLower(buf, s, N_X_FORWARDED_HOST) ? F_X_FORWARDED_HOST : F_OTHER;
    case 17:
      return eqLower(buf, s, N_TRANSFER_ENCODING) ? F_TRANSFER_ENCODING
        : eqLower(buf, s, N_X_FORWARDED_PROTO) ? F_X_FORWARDED_PROTO
        : eqLowerUnderscore(buf, s, N_TRANSFER_ENCODING_) ? F_FRAMING_LOOKALIKE
        : F_OTHER;
    case 18: return eqLower(buf, s, N_PROXY_AUTHENTICATE) ? F_PROXY_AUTHENTICATE : F_OTHER;
    case 19: return eqLower(buf, s, N_PROXY_AUTHORIZATION) ? F_PROXY_AUTHORIZATION : F_OTHER;
    default: return F_OTHER;
  }
}

/** Most field lines a head may have (more is answered 431). */
export const MAX_FIELDS = 512;

/**
 * Scratch table of the last parsed head's field lines, 5 ints each:
 * line start, name end, value start, value end (OWS trimmed), line end (after CRLF).
 * Valid only until the next parse.
 */
export const fields: Int32Array = new Int32Array(MAX_FIELDS * 5);
/** Kind of each field line of the last parse (F_*). */
export const kinds: Uint8Array = new Uint8Array(MAX_FIELDS);

/**
 * Decode bytes as latin1 (heads are octets; this keeps obs-text byte-exact). Short ranges are decoded by a
 * loop: a `subarray` of a freshly received chunk costs more than decoding it (see `copyRange` in bytes.ts).
 */
export function latin1(buf: Uint8Array, s: number, e: number): string {
  let out = "";
  if (e - s <= 256) {
    for (let i = s; i < e; i++) out += String.fromCharCode(buf[i]!);
    return out;
  }
  for (let i = s; i < e; i += 4096) {
    out += String.fromCharCode.apply(null, buf.subarray(i, Math.min(e, i + 4096)) as unknown as number[]);
  }
  return out;
}

/**
 * Find the end of a message head in buf[start..end): the index just past CRLFCRLF.
 * Scanning resumes at `from` (pass the previous `end`; overlap is handled).
 * Returns 0 while incomplete and -1 on a bare LF (a line ending that is not CRLF).
 */
export function findHeadEnd(buf: Uint8Array, start: number, from: number, end: number): number {
  // A plain loop: faster than (Buffer's) indexOf for heads of typical size.
  for (let i = from - 3 > start ? from - 3 : start; i < end; i++) {
    if (buf[i] !== LF) continue;
    if (i === start || buf[i - 1] !== CR) return -1;
    if (i - 3 >= start && buf[i - 2] === LF) return i + 1;
  }
  return 0;
}

/**
 * Parse the field lines of a head from `p` (start of the first field line) to `headEnd`.
 * Fills {@link fields}/{@link kinds}; returns the field count, or -1 (with `err.message`) on a bad line,
 * or -2 when there are more than {@link MAX_FIELDS}.
 */
function parseFields(buf: Uint8Array, p: number, headEnd: number, err: { error: string }): number {
  let n = 0;
  const last = headEnd - 2; // the final empty line's CRLF
  while (p < last) {
    if (n === MAX_FIELDS) return -2;
    const lineStart = p;
    const c0 = buf[p]!;
    if (c0 === SP || c0 === HTAB) {
      err.error = n === 0 ? "whitespace before the first field line" : "obsolete line folding (obs-fold)";
      return -1;
    }
    while (TCHAR[buf[p]!] === 1) p++;
    const nameEnd = p;
    if (buf[p] !== COLON) {
      const c = buf[p]!;
      err.error = nameEnd === lineStart && c === COLON ? "empty field name"
        : c === SP || c === HTAB ? "whitespace between field name and colon"
        : c === CR ? "field line without a colon"
        : "invalid character in field name";
      return -1;
    }
    if (nameEnd === lineStart) {
      err.error = "empty field name";
      return -1;
    }
    p++;
    while (buf[p] === SP || buf[p] === HTAB) p++;
    const valueStart = p;
    let valueEnd = p;
    for (;;) {
      const c = buf[p]!;
      if (c === CR) break;
      if (BADVALUE[c] === 1) {
        err.error = "invalid character in field value";
        return -1;
      }
      p++;
      if (c !== SP && c !== HTAB) valueEnd = p;
    }
    // findHeadEnd guaranteed every LF is preceded by CR; a CR must be followed by LF.
    if (buf[p + 1] !== LF) {
      err.error = "bare CR in field line";
      return -1;
    }
    p += 2;
    const o = n * 5;
    fields[o] = lineStart;
    fields[o + 1] = nameEnd;
    fields[o + 2] = valueStart;
    fields[o + 3] = valueEnd;
    fields[o + 4] = p;
    kinds[n] = classify(buf, lineStart, nameEnd);
    n++;
  }
  return n;
}

/** Parse a Content-Length value: digits only; -1 when invalid. */
function parseLength(buf: Uint8Array, s: number, e: number): number {
  if (s === e || e - s > 15) return -1;
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = buf[i]! - 48;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

/** Connection option flags. */
export const C_CLOSE = 1;
export const C_KEEP_ALIVE = 2;
export const C_UPGRADE = 4;

/**
 * Parse a comma-separated token list (Connection, Transfer-Encoding) into lowercase tokens.
 * Returns undefined when an element is not a token.
 */
export function tokenList(buf: Uint8Array, s: number, e: number): string[] | undefined {
  const out: string[] = [];
  let i = s;
  while (i < e) {
    while (i < e && (buf[i] === SP || buf[i] === HTAB || buf[i] === 44)) i++;
    if (i >= e) break;
    const ts = i;
    while (i < e && TCHAR[buf[i]!] === 1) i++;
    if (i === ts) return undefined;
    out.push(latin1(buf, ts, i).toLowerCase());
    while (i < e && (buf[i] === SP || buf[i] === HTAB)) i++;
    if (i < e && buf[i] !== 44) return undefined;
  }
  return out;
}

/** Apply a Connection field value to `info`. Returns false when it is not a token list. */
function connection(buf: Uint8Array, s: number, e: number, info: { conn: number; connOther: string[] | null }): boolean {
  const len = e - s;
  // Fast paths for the usual single option.
  if (len === 10 && eqLower(buf, s, N_KEEP_ALIVE)) return ((info.conn |= C_KEEP_ALIVE), true);
  if (len === 5 && eqLower(buf, s, V_CLOSE)) return ((info.conn |= C_CLOSE), true);
  if (len === 7 && eqLower(buf, s, N_UPGRADE)) return ((info.conn |= C_UPGRADE), true);
  const list = tokenList(buf, s, e);
  if (!list) return false;
  for (const t of list) {
    if (t === "close") info.conn |= C_CLOSE;
    else if (t === "keep-alive") info.conn |= C_KEEP_ALIVE;
    else if (t === "upgrade") info.conn |= C_UPGRADE;
    else (info.connOther ??= []).push(t);
  }
  return true;
}

/** Methods the forwarder distinguishes. */
export const M_OTHER = 0;
export const M_GET = 1;
export const M_HEAD = 2;
export const M_POST = 3;
export const M_CONNECT = 4;
export const M_OPTIONS = 5;
/** Safe/idempotent methods other than GET/HEAD/OPTIONS (PUT, DELETE, TRACE). */
export const M_IDEMPOTENT = 6;

function methodOf(buf: Uint8Array, s: number, e: number): number {
  const c = buf[s];
  switch (e - s) {
    case 3:
      if (c === 71 && buf[s + 1] === 69 && buf[s + 2] === 84) return M_GET; // GET
      if (c === 80 && buf[s + 1] === 85 && buf[s + 2] === 84) return M_IDEMPOTENT; // PUT
      return M_OTHER;
    case 4:
      if (c === 72 && buf[s + 1] === 69 && buf[s + 2] === 65 && buf[s + 3] === 68) return M_HEAD;
      if (c === 80 && buf[s + 1] === 79 && buf[s + 2] === 83 && buf[s + 3] === 84) return M_POST;
      return M_OTHER;
    case 5:
      return latin1(buf, s, e) === "TRACE" ? M_IDEMPOTENT : M_OTHER;
    case 6:
      return latin1(buf, s, e) === "DELETE" ? M_IDEMPOTENT : M_OTHER;
    case 7: {
      const m = latin1(buf, s, e);
      return m === "CONNECT" ? M_CONNECT : m === "OPTIONS" ? M_OPTIONS : M_OTHER;
    }
    default:
      return M_OTHER;
  }
}

/** What {@link parseRequestHead} found. One instance is reused per downstream connection. */
export class RequestInfo {
  /** Why the head was rejected (sentence case, no trailing period). */
  error = "";
  /** Index where the request line starts. */
  start = 0;
  /** Index just past the head's final CRLFCRLF. */
  headEnd = 0;
  methodEnd = 0;
  targetStart = 0;
  targetEnd = 0;
  /** Index just past the request line's CRLF. */
  lineEnd = 0;
  /** M_* constant. */
  method = M_OTHER;
  /** HTTP/1.x minor version (0 or 1; higher minors are treated as 1). */
  minor = 1;
  fieldCount = 0;
  /** Index of the Host field line, -1 when absent. */
  host = -1;
  /** -1 when absent. */
  contentLength = -1;
  chunked = false;
  /** C_* flags from Connection. */
  conn = 0;
  /** Other Connection options (lowercase field names to drop). */
  connOther: string[] | null = null;
  expectContinue = false;
  /** Index of the Upgrade field line, -1 when absent. */
  upgrade = -1;
  /** For absolute-form targets: the authority's range and where the path starts; -1 otherwise. */
  authStart = -1;
  authEnd = -1;
  pathStart = -1;
  /**
   * True when any field needs dropping or rewriting (hop-by-hop, X-Forwarded-*, Forwarded), other than a lone
   * `Connection: keep-alive` ({@link keepAliveLine}).
   */
  rewrite = false;
  /**
   * Content-Length or Transfer-Encoding is valid but not written canonically (`Name: value` with one space,
   * lowercase `chunked`): the forwarded head carries a canonical line instead, so no next hop can read the
   * framing differently (implies {@link rewrite}).
   */
  reframe = false;
  /**
   * The head's one hop-by-hop field is `Connection: keep-alive`, and nothing else needs rewriting: it may be
   * forwarded as received on a connection that stays open (see {@link keepAliveOnly}).
   */
  keepAliveLine = false;

  reset(): void {
    this.error = "";
    this.host = -1;
    this.contentLength = -1;
    this.chunked = false;
    this.conn = 0;
    this.connOther = null;
    this.expectContinue = false;
    this.upgrade = -1;
    this.authStart = this.authEnd = this.pathStart = -1;
    this.rewrite = false;
    this.reframe = false;
    this.keepAliveLine = false;
    this.minor = 1;
  }
}

/** A request parse outcome: 0 when valid, else the HTTP status to answer (400, 405, 431, 505) with `info.error` set. */
export type ParseStatus = number;

/**
 * Validate and index a request head occupying buf[start..headEnd) (headEnd from {@link findHeadEnd}).
 *
 * @example
 * const end = findHeadEnd(buf, 0, 0, buf.length);
 * if (end > 0 && parseRequestHead(buf, 0, end, info) === 0) console.log(info.method, info.contentLength);
 */
export function parseRequestHead(buf: Uint8Array, start: number, headEnd: number, info: RequestInfo): ParseStatus {
  info.reset();
  info.start = start;
  info.headEnd = headEnd;
  // request-line = method SP request-target SP HTTP-version CRLF
  let p = start;
  while (TCHAR[buf[p]!] === 1) p++;
  if (p === start || buf[p] !== SP) return bad(info, p === start ? "missing method" : "invalid character in method");
  info.methodEnd = p;
  info.method = methodOf(buf, start, p);
  p++;
  const ts = p;
  for (;;) {
    const c = buf[p]!;
    if (c <= SP || c === 127) break;
    p++;
  }
  if (p === ts || buf[p] !== SP) return bad(info, p === ts ? "missing request target" : "invalid character in request target");
  info.targetStart = ts;
  info.targetEnd = p;
  p++;
  // HTTP-version = "HTTP/" DIGIT "." DIGIT
  for (let i = 0; i < 5; i++) {
    if (buf[p + i] !== V_HTTP1[i]) return bad(info, "malformed HTTP version");
  }
  const major = buf[p + 5]! - 48;
  const minor = buf[p + 7]! - 48;
  if (major < 0 || major > 9 || buf[p + 6] !== 46 || minor < 0 || minor > 9 || buf[p + 8] !== CR || buf[p + 9] !== LF) {
    return bad(info, "malformed HTTP version");
  }
  if (major !== 1) return fail(info, 505, `HTTP version ${major}.${minor} is not supported`);
  info.minor = minor === 0 ? 0 : 1;
  info.lineEnd = p + 10;
  if (info.method === M_CONNECT) return fail(info, 405, "CONNECT is not supported");

  // request-target forms
  const t0 = buf[ts];
  if (t0 === 47) {
    // origin-form
  } else if (t0 === 42 && p - 1 - ts === 1) {
    if (info.method !== M_OPTIONS) return bad(info, "asterisk-form target is only valid for OPTIONS");
  } else {
    const s = absoluteForm(buf, ts, info.targetEnd, info);
    if (s) return bad(info, s);
  }

  const n = parseFields(buf, info.lineEnd, headEnd, info);
  if (n === -2) return fail(info, 431, "too many header fields");
  if (n < 0) return 400;
  info.fieldCount = n;

  let te = false;
  let connSeen = false;
  let keptLine = false;
  for (let i = 0; i < n; i++) {
    const k = kinds[i]!;
    if (k === F_OTHER) continue;
    const o = i * 5;
    const vs = fields[o + 2]!;
    const ve = fields[o + 3]!;
    switch (k) {
      case F_HOST:
        if (info.host >= 0) return bad(info, "duplicate Host field");
        for (let j = vs; j < ve; j++) if (HOSTCHAR[buf[j]!] !== 1) return bad(info, "invalid Host field value");
        info.host = i;
        break;
      case F_CONTENT_LENGTH:
        if (info.contentLength >= 0) return bad(info, "duplicate Content-Length field");
        info.contentLength = parseLength(buf, vs, ve);
        if (info.contentLength < 0) return bad(info, "invalid Content-Length value");
        if (!canonicalLine(buf, o)) info.reframe = info.rewrite = true;
        break;
      case F_TRANSFER_ENCODING: {
        // Only a single `chunked` coding is accepted on requests.
        if (te || ve - vs !== 7 || !eqLower(buf, vs, V_CHUNKED)) {
          const list = tokenList(buf, vs, ve);
          if (te || !list || list.length !== 1 || list[0] !== "chunked") return bad(info, "unsupported Transfer-Encoding (only a single chunked coding is accepted)");
        }
        if (!canonicalLine(buf, o) || !exact(buf, vs, V_CHUNKED)) info.reframe = info.rewrite = true;
        te = true;
        info.chunked = true;
        break;
      }
      case F_FRAMING_LOOKALIKE:
        return bad(info, "field name with an underscore in place of a framing field's hyphen");
      case F_CONNECTION:
        if (!connection(buf, vs, ve, info)) return bad(info, "invalid Connection field value");
        if (keepAliveOnly(info, connSeen)) keptLine = true;
        else info.rewrite = true;
        connSeen = true;
        break;
      case F_EXPECT:
        if (ve - vs === 12 && eqLower(buf, vs, V_100_CONTINUE)) info.expectContinue = true;
        break;
      case F_UPGRADE:
        info.upgrade = i;
        info.rewrite = true;
        break;
      case F_COOKIE:
        break;
      default:
        info.rewrite = true;
    }
  }
  if (te) {
    if (info.contentLength >= 0) return bad(info, "both Content-Length and Transfer-Encoding present");
    if (info.minor === 0) return bad(info, "Transfer-Encoding in an HTTP/1.0 request");
  }
  if (info.minor === 1 && info.host < 0) return bad(info, "missing Host field");
  if (info.authStart >= 0 || info.minor === 0) info.rewrite = true;
  info.keepAliveLine = keptLine && !info.rewrite;
  if (info.connOther) markConnectionNamed(buf, n, info.connOther);
  return 0;
}

/** Whether field line `o` (offset in {@link fields}) is `name: value\r\n`: one space after the colon, none after the value. */
function canonicalLine(buf: Uint8Array, o: number): boolean {
  const nameEnd = fields[o + 1]!;
  return fields[o + 2] === nameEnd + 2 && buf[nameEnd + 1] === SP && fields[o + 3]! + 2 === fields[o + 4];
}

/** Byte-exact (case-sensitive) compare of buf[s..) with `lit`. */
function exact(buf: Uint8Array, s: number, b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (buf[s + i] !== b[i]) return false;
  return true;
}

/** Parse an absolute-form target; returns an error reason or "" when fine. */
function absoluteForm(buf: Uint8Array, s: number, e: number, info: RequestInfo): string {
  let p = s;
  const isAlpha = (c: number) => (c | 0x20) >= 97 && (c | 0x20) <= 122;
  if (!isAlpha(buf[p]!)) return "invalid request target";
  while (p < e && (isAlpha(buf[p]!) || (buf[p]! >= 48 && buf[p]! <= 57) || buf[p] === 43 || buf[p] === 45 || buf[p] === 46)) p++;
  if (buf[p] !== COLON || buf[p + 1] !== 47 || buf[p + 2] !== 47) return "invalid request target";
  const scheme = latin1(buf, s, p).toLowerCase();
  if (scheme !== "http" && scheme !== "https") return "unsupported URI scheme in absolute-form target";
  p += 3;
  const as = p;
  while (p < e && buf[p] !== 47 && buf[p] !== 63) {
    const c = buf[p]!;
    if (c === 64) return "userinfo in request target";
    if (HOSTCHAR[c] !== 1) return "invalid authority in request target";
    p++;
  }
  if (p === as) return "empty authority in request target";
  info.authStart = as;
  info.authEnd = p;
  info.pathStart = p;
  return "";
}

/** Mark fields named in Connection as hop-by-hop (kind F_CONNECTION so they are dropped). */
function markConnectionNamed(buf: Uint8Array, n: number, names: readonly string[]): void {
  for (let i = 0; i < n; i++) {
    if (kinds[i] !== F_OTHER && kinds[i] !== F_COOKIE) continue;
    const o = i * 5;
    const name = latin1(buf, fields[o]!, fields[o + 1]!).toLowerCase();
    if (names.includes(name)) kinds[i] = F_CONNECTION;
  }
}

function bad(info: { error: string }, reason: string): ParseStatus {
  info.error = reason;
  return 400;
}

function reject(info: { error: string }, reason: string): false {
  info.error = reason;
  return false;
}

function fail(info: { error: string }, status: number, reason: string): ParseStatus {
  info.error = reason;
  return status;
}

/** Response body framing (RFC 9112 §6.3). */
export const B_NONE = 0;
export const B_LENGTH = 1;
export const B_CHUNKED = 2;
export const B_CLOSE = 3;

/** What {@link parseResponseHead} found. */
export class ResponseInfo {
  error = "";
  headEnd = 0;
  status = 0;
  minor = 1;
  fieldCount = 0;
  /** Index just past the status line's CRLF. */
  lineEnd = 0;
  contentLength = -1;
  /** Transfer-Encoding present. */
  te = false;
  /** Transfer-Encoding's final coding is chunked. */
  chunked = false;
  conn = 0;
  connOther: string[] | null = null;
  /** True when any field needs dropping (hop-by-hop), other than a lone `Connection: keep-alive` ({@link keepAliveLine}). */
  rewrite = false;
  /** The head's one hop-by-hop field is `Connection: keep-alive` (see {@link RequestInfo.keepAliveLine}). */
  keepAliveLine = false;

  reset(): void {
    this.error = "";
    this.contentLength = -1;
    this.te = false;
    this.chunked = false;
    this.conn = 0;
    this.connOther = null;
    this.rewrite = false;
    this.keepAliveLine = false;
  }
}

/**
 * Validate and index a response head occupying buf[start..headEnd). Returns true when valid,
 * false with `info.error` set when the upstream sent something we will not forward (answered 502).
 */
export function parseResponseHead(buf: Uint8Array, start: number, headEnd: number, info: ResponseInfo): boolean {
  info.reset();
  info.headEnd = headEnd;
  let p = start;
  for (let i = 0; i < 7; i++) if (buf[p + i] !== V_HTTP1[i]) return reject(info, "malformed status line");
  const minor = buf[p + 7]! - 48;
  if (minor < 0 || minor > 9 || buf[p + 8] !== SP) return reject(info, "malformed status line");
  info.minor = minor === 0 ? 0 : 1;
  p += 9;
  const d0 = buf[p]! - 48;
  const d1 = buf[p + 1]! - 48;
  const d2 = buf[p + 2]! - 48;
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return reject(info, "malformed status code");
  info.status = d0 * 100 + d1 * 10 + d2;
  p += 3;
  if (buf[p] === SP) {
    p++;
    for (;;) {
      const c = buf[p]!;
      if (c === CR) break;
      if (BADVALUE[c] === 1) return reject(info, "invalid character in reason phrase");
      p++;
    }
  }
  if (buf[p] !== CR || buf[p + 1] !== LF) return reject(info, "malformed status line");
  info.lineEnd = p + 2;
  const n = parseFields(buf, info.lineEnd, headEnd, info);
  if (n < 0) {
    if (n === -2) info.error = "too many header fields";
    return false;
  }
  info.fieldCount = n;
  let connSeen = false;
  let keptLine = false;
  for (let i = 0; i < n; i++) {
    const k = kinds[i]!;
    if (k === F_OTHER) continue;
    const o = i * 5;
    const vs = fields[o + 2]!;
    const ve = fields[o + 3]!;
    switch (k) {
      case F_CONTENT_LENGTH:
        if (info.contentLength >= 0) return reject(info, "duplicate Content-Length field");
        info.contentLength = parseLength(buf, vs, ve);
        if (info.contentLength < 0) return reject(info, "invalid Content-Length value");
        break;
      case F_TRANSFER_ENCODING: {
        const list = tokenList(buf, vs, ve);
        if (!list) return reject(info, "invalid Transfer-Encoding value");
        for (const t of list) {
          if (info.chunked) return reject(info, "chunked is not the final transfer coding");
          if (t === "chunked") info.chunked = true;
        }
        info.te = true;
        break;
      }
      case F_CONNECTION:
        if (!connection(buf, vs, ve, info)) return reject(info, "invalid Connection field value");
        if (info.minor === 1 && keepAliveOnly(info, connSeen)) keptLine = true;
        else info.rewrite = true;
        connSeen = true;
        break;
      case F_HOST:
      case F_EXPECT:
      case F_X_FORWARDED_FOR:
      case F_X_FORWARDED_HOST:
      case F_X_FORWARDED_PROTO:
      case F_X_FORWARDED_OTHER:
      case F_FRAMING_LOOKALIKE:
      case F_FORWARDED:
      case F_COOKIE:
        break;
      default:
        info.rewrite = true;
    }
  }
  if (info.te && info.contentLength >= 0) return reject(info, "both Content-Length and Transfer-Encoding present");
  if (info.connOther) {
    markConnectionNamed(buf, n, info.connOther);
    info.rewrite = true;
  }
  info.keepAliveLine = keptLine && !info.rewrite;
  return true;
}

/**
 * Whether the Connection field just applied to `info` leaves the head forwardable as received: it is the
 * head's only Connection field and says just `keep-alive`. Sent on a connection the forwarder keeps open,
 * that line is exactly the control option the forwarder would send for its own hop (RFC 9110 §7.6.1 lets an
 * intermediary replace Connection with its own options), so the head need not be rebuilt to drop it.
 */
function keepAliveOnly(info: { conn: number; connOther: string[] | null }, seenBefore: boolean): boolean {
  return !seenBefore && info.conn === C_KEEP_ALIVE && info.connOther === null;
}

/**
 * The body framing of a response (RFC 9112 §6.3) given the request method and status.
 * B_CLOSE means the body runs until the upstream closes.
 */
export function responseFraming(info: ResponseInfo, requestWasHead: boolean): number {
  const s = info.status;
  if (requestWasHead || s < 200 || s === 204 || s === 304) return B_NONE;
  if (info.te) return info.chunked ? B_CHUNKED : B_CLOSE;
  if (info.contentLength >= 0) return info.contentLength === 0 ? B_NONE : B_LENGTH;
  return B_CLOSE;
}
