/**
 * An independent, deliberately narrow parser of what the gateway sends upstream: it accepts only canonical
 * HTTP/1.1 requests (the form a gateway that normalises framing must produce) and throws on anything else.
 * Smuggling tests run every byte an upstream received through it: a request the gateway parsed one way and
 * forwarded in a form another parser could read differently fails here.
 *
 * Canonical means: `METHOD SP origin-form SP HTTP/1.1 CRLF`; field lines `name: value CRLF` with one space
 * after the colon, no whitespace at the value's ends and no control characters; exactly one Host; at most
 * one Content-Length (digits) or one `Transfer-Encoding: chunked`, never both; chunked bodies with hex sizes
 * of at most 13 significant digits (leading zeros allowed), no extensions, no trailers.
 */
import { text } from "./http-harness.ts";

export interface StrictRequest {
  readonly method: string;
  readonly target: string;
  readonly headers: readonly (readonly [string, string])[];
  /** The payload (de-chunked). */
  readonly body: string;
}

export interface StrictParse {
  readonly requests: StrictRequest[];
  /** Bytes of an unfinished canonical request at the end (the connection was cut mid-request); "" when none. */
  readonly partial: string;
}

const REQUEST_LINE = /^([A-Z]+) (\/[!-~]*|\*) HTTP\/1\.1$/;
const FIELD_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+): ([!-~\x80-\xff](?:[ \t!-~\x80-\xff]*[!-~\x80-\xff])?)$/;

/** Parse `bytes` (one upstream connection's input) as canonical requests; throws with the reason otherwise. */
export function strictRequests(bytes: Uint8Array): StrictParse {
  const s = text(bytes);
  const requests: StrictRequest[] = [];
  let p = 0;
  while (p < s.length) {
    const r = oneRequest(s, p);
    if (r === undefined) {
      // Incomplete: it must still be a canonical prefix (checked by the parse so far) and nothing else.
      return { requests, partial: s.slice(p) };
    }
    requests.push(r[0]);
    p = r[1];
  }
  return { requests, partial: "" };
}

function fail(reason: string, s: string, at: number): never {
  throw new Error(`Not a canonical request at byte ${at}: ${reason}: ${JSON.stringify(s.slice(at, at + 80))}`);
}

/** One request at `p`: the request and the index after it, or undefined when `s` ends inside it. */
function oneRequest(s: string, p: number): [StrictRequest, number] | undefined {
  const start = p;
  const lines: string[] = [];
  for (;;) {
    const lf = s.indexOf("\n", p);
    if (lf < 0) {
      if (s.slice(p).includes("\r") && !s.endsWith("\r")) fail("bare CR", s, p);
      return undefined;
    }
    if (lf === p || s[lf - 1] !== "\r") fail("bare LF", s, lf);
    const line = s.slice(p, lf - 1);
    if (line.includes("\r")) fail("bare CR", s, p);
    p = lf + 1;
    if (line === "") break;
    lines.push(line);
  }
  if (lines.length === 0) fail("empty line where a request line belongs", s, start);
  const m = REQUEST_LINE.exec(lines[0]!);
  if (!m) fail("request line not canonical", s, start);
  const headers = lines.slice(1).map((l) => {
    const f = FIELD_LINE.exec(l);
    if (!f) fail(`field line not canonical (${JSON.stringify(l)})`, s, start);
    return [f[1]!, f[2]!] as const;
  });
  const named = (n: string) => headers.filter(([k]) => k.toLowerCase() === n);
  if (named("host").length !== 1) fail("not exactly one Host", s, start);
  const cl = named("content-length");
  const te = named("transfer-encoding");
  if (cl.length > 1 || te.length > 1) fail("repeated framing field", s, start);
  if (cl.length && te.length) fail("both Content-Length and Transfer-Encoding", s, start);
  for (const [k] of headers) if (/^(content|transfer)_/i.test(k)) fail("framing field look-alike", s, start);
  let body = "";
  if (te.length) {
    if (te[0]![1] !== "chunked") fail("Transfer-Encoding other than chunked", s, start);
    for (;;) {
      const lf = s.indexOf("\r\n", p);
      if (lf < 0) {
        if (!/^0*[0-9a-fA-F]{0,13}\r?$/.test(s.slice(p))) fail("chunk size line not canonical", s, p);
        return undefined;
      }
      const sizeText = s.slice(p, lf);
      if (!/^0*[0-9a-fA-F]{1,13}$/.test(sizeText)) fail("chunk size line not canonical", s, p);
      const size = parseInt(sizeText, 16);
      p = lf + 2;
      if (size === 0) {
        if (s.length < p + 2) {
          if (s.slice(p) !== "" && s.slice(p) !== "\r") fail("trailer section", s, p);
          return undefined;
        }
        if (s.slice(p, p + 2) !== "\r\n") fail("trailer section", s, p);
        p += 2;
        break;
      }
      if (s.length < p + size + 2) {
        const rest = s.slice(p + size);
        if (s.length > p + size && rest !== "\r") fail("chunk data not followed by CRLF", s, p + size);
        return undefined;
      }
      body += s.slice(p, p + size);
      if (s.slice(p + size, p + size + 2) !== "\r\n") fail("chunk data not followed by CRLF", s, p + size);
      p += size + 2;
    }
  } else if (cl.length) {
    if (!/^\d{1,15}$/.test(cl[0]![1])) fail("Content-Length not canonical", s, start);
    const n = Number(cl[0]![1]);
    if (s.length < p + n) return undefined;
    body = s.slice(p, p + n);
    p += n;
  }
  return [{ method: m[1]!, target: m[2]!, headers, body }, p];
}
