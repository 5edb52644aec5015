/**
 * OTLP/HTTP JSON encoding of finished spans, written straight into one byte buffer.
 *
 * Why not `@opentelemetry/otlp-transformer`: it builds an object per span, per attribute and per value
 * (`{ key, value: { stringValue } }`), converts every timestamp through BigInt, then `JSON.stringify` walks it all
 * again and the transport encodes the string to UTF-8. Why not a string built by concatenation either: the runtime
 * keeps it as a rope of thousands of small pieces and flattening it inside `fetch` cost as much as building it
 * (measured: 15% of a traced gateway's samples in `fetch`). Here each span is written as UTF-8 bytes into one
 * growing buffer: constant pieces and attribute keys pre-encoded once, ids as the hex they already are, times as
 * decimal nanoseconds from the `[seconds, nanos]` pair, strings escaped by hand (ASCII) or through `TextEncoder`
 * (anything else), the resource and the scope once per request. Fields at their proto3 default (no events, no links,
 * zero dropped counts) are left out, as the protobuf JSON mapping allows; everything else is what the transformer
 * writes (a test compares the two, decoded).
 *
 * The shape (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding, `ExportTraceServiceRequest`):
 * `{"resourceSpans":[{"resource":{"attributes":[…]},"scopeSpans":[{"scope":{"name","version"},"spans":[…]}]}]}`;
 * `traceId`/`spanId` lowercase hex, `kind` the proto enum (API kind + 1), 64-bit integers (times, `intValue`) as
 * decimal strings.
 */
import type { Attributes, HrTime, Link, SpanContext } from "@opentelemetry/api";
import type { ReadableSpan, TimedEvent } from "@opentelemetry/sdk-trace-base";

const utf8 = new TextEncoder();
const HEX = "0123456789abcdef";

/** The OTLP span flags: W3C trace flags in the low byte, "has is_remote" (0x100) and "is_remote" (0x200). */
function spanFlags(traceFlags: number, isRemote: boolean | undefined): number {
  return (traceFlags & 0xff) | 0x100 | (isRemote ? 0x200 : 0);
}

/**
 * `[seconds, nanoseconds]` as decimal nanoseconds since the epoch (exact: no float past 2^53).
 *
 * @example hrTimeNanos([1765000000, 5]) // "1765000000000000005"
 */
export function hrTimeNanos(t: HrTime): string {
  const s = Math.trunc(t[0]);
  const n = Math.trunc(t[1]);
  if (s > 0 && n >= 0 && n < 1e9) return `${s}${String(1e9 + n).slice(1)}`;
  if (s === 0 && n >= 0) return String(n);
  return (BigInt(s) * 1_000_000_000n + BigInt(n)).toString();
}

/** A growing UTF-8 buffer with the few writes JSON needs; reusable (set {@link pos} to 0). */
export class Writer {
  buf: Uint8Array<ArrayBuffer>;
  pos = 0;
  constructor(size: number) {
    this.buf = new Uint8Array(size);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  /** Pre-encoded bytes. */
  bytes(b: Uint8Array): void {
    const n = b.length;
    this.ensure(n);
    const buf = this.buf;
    let p = this.pos;
    if (n > 24) buf.set(b, p);
    else for (let i = 0; i < n; i++) buf[p + i] = b[i]!;
    this.pos = p + n;
  }

  /** A string known to be ASCII without anything to escape (hex ids, numbers). */
  ascii(s: string): void {
    const n = s.length;
    this.ensure(n);
    const buf = this.buf;
    const p = this.pos;
    for (let i = 0; i < n; i++) buf[p + i] = s.charCodeAt(i);
    this.pos = p + n;
  }

  byte(c: number): void {
    this.ensure(1);
    this.buf[this.pos++] = c;
  }

  /** `s` as a JSON string, quoted. */
  str(s: string): void {
    const n = s.length;
    this.ensure(n * 6 + 2); // worst case: every unit \u00XX, or 3 UTF-8 bytes
    const buf = this.buf;
    const start = this.pos;
    let p = start;
    buf[p++] = 34; // "
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x20 && c < 0x7f && c !== 34 && c !== 92) buf[p++] = c;
      else if (c < 0x80) {
        buf[p++] = 92; // \
        switch (c) {
          case 34:
          case 92:
            buf[p++] = c;
            break;
          case 10:
            buf[p++] = 110; // n
            break;
          case 13:
            buf[p++] = 114; // r
            break;
          case 9:
            buf[p++] = 116; // t
            break;
          default: // other controls and DEL as \u00XX
            buf[p++] = 117;
            buf[p++] = 48;
            buf[p++] = 48;
            buf[p++] = HEX.charCodeAt(c >> 4);
            buf[p++] = HEX.charCodeAt(c & 15);
        }
      } else {
        // Beyond ASCII: JSON.stringify escapes lone surrogates, TextEncoder writes the rest as UTF-8.
        this.pos = start;
        const { written } = utf8.encodeInto(JSON.stringify(s), buf.subarray(start));
        this.pos = start + written;
        return;
      }
    }
    buf[p++] = 34;
    this.pos = p;
  }

  take(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

const enc = (s: string): Uint8Array => utf8.encode(s);
const K = {
  open: enc(`{"resourceSpans":[`),
  resourceOpen: enc(`{"resource":{`),
  scopeSpansOpen: enc(`,"scopeSpans":[`),
  scopeOpen: enc(`{"scope":{"name":`),
  version: enc(`,"version":`),
  schemaUrl: enc(`,"schemaUrl":`),
  spansOpen: enc(`,"spans":[`),
  traceId: enc(`{"traceId":"`),
  spanId: enc(`","spanId":"`),
  traceState: enc(`,"traceState":`),
  parentSpanId: enc(`,"parentSpanId":"`),
  flags: enc(`,"flags":`),
  name: enc(`,"name":`),
  kind: enc(`,"kind":`),
  start: enc(`,"startTimeUnixNano":"`),
  end: enc(`","endTimeUnixNano":"`),
  attributes: enc(`,"attributes":[`),
  attributesFirst: enc(`"attributes":[`),
  droppedAttributes: enc(`,"droppedAttributesCount":`),
  events: enc(`,"events":[`),
  droppedEvents: enc(`,"droppedEventsCount":`),
  links: enc(`,"links":[`),
  droppedLinks: enc(`,"droppedLinksCount":`),
  status: enc(`,"status":{"code":`),
  message: enc(`,"message":`),
  timeUnixNano: enc(`{"timeUnixNano":"`),
  eventName: enc(`","name":`),
  stringValue: enc(`{"stringValue":`),
  intValue: enc(`{"intValue":"`),
  doubleValue: enc(`{"doubleValue":`),
  boolTrue: enc(`{"boolValue":true}`),
  boolFalse: enc(`{"boolValue":false}`),
  bytesValue: enc(`{"bytesValue":"`),
  arrayOpen: enc(`{"arrayValue":{"values":[`),
  kvlistOpen: enc(`{"kvlistValue":{"values":[`),
  close2: enc(`]}}`),
  empty: enc(`{}`),
  quoteClose: enc(`"}`),
};

/** `{"key":"…","value":` per attribute key, pre-encoded (the gateway uses a few constant keys). */
const keyPrefix = new Map<string, Uint8Array>();
function keyOf(key: string): Uint8Array {
  let p = keyPrefix.get(key);
  if (p === undefined) {
    p = enc(`{"key":${JSON.stringify(key)},"value":`);
    if (keyPrefix.size < 1024) keyPrefix.set(key, p);
  }
  return p;
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return btoa(s);
}

/** One `AnyValue` (opentelemetry-proto `common/v1/common.proto`). */
function anyValue(w: Writer, v: unknown): void {
  switch (typeof v) {
    case "string":
      w.bytes(K.stringValue);
      w.str(v);
      w.byte(125); // }
      return;
    case "number":
      if (Number.isSafeInteger(v)) {
        w.bytes(K.intValue);
        w.ascii(String(v));
        w.bytes(K.quoteClose);
      } else {
        w.bytes(K.doubleValue);
        // proto3 JSON writes the non-finite doubles as strings
        w.ascii(Number.isFinite(v) ? String(v) : `"${v}"`);
        w.byte(125);
      }
      return;
    case "boolean":
      w.bytes(v ? K.boolTrue : K.boolFalse);
      return;
    case "object": {
      if (v === null) return w.bytes(K.empty);
      if (v instanceof Uint8Array) {
        w.bytes(K.bytesValue);
        w.ascii(base64(v));
        w.bytes(K.quoteClose);
        return;
      }
      if (Array.isArray(v)) {
        w.bytes(K.arrayOpen);
        for (let i = 0; i < v.length; i++) {
          if (i) w.byte(44);
          anyValue(w, v[i]);
        }
        w.bytes(K.close2);
        return;
      }
      w.bytes(K.kvlistOpen);
      let first = true;
      for (const k of Object.keys(v)) {
        if (!first) w.byte(44);
        first = false;
        w.bytes(keyOf(k));
        anyValue(w, (v as Record<string, unknown>)[k]);
        w.byte(125);
      }
      w.bytes(K.close2);
      return;
    }
    default:
      w.bytes(K.empty);
  }
}

/**
 * Encoded key-value pairs by key and value, for strings up to {@link PAIR_MAX_STRING} characters and numbers: a
 * gateway's spans repeat most of theirs (namespace, service, entrypoint, method, addresses, ports, status). At most
 * {@link PAIR_MAX_VALUES} values per key and {@link PAIR_MAX_KEYS} keys; past that a pair is encoded each time.
 */
const pairCache = new Map<string, Map<string | number, Uint8Array>>();
const PAIR_MAX_STRING = 64;
const PAIR_MAX_VALUES = 256;
const PAIR_MAX_KEYS = 256;
const pairWriter = new Writer(1024);

function pair(w: Writer, k: string, v: unknown): void {
  w.bytes(keyOf(k));
  anyValue(w, v);
  w.byte(125);
}

/** The attributes' key-values, comma-separated. */
function attributeList(w: Writer, attributes: Attributes | undefined): void {
  let first = true;
  for (const k in attributes) {
    if (!first) w.byte(44);
    first = false;
    const v = attributes[k];
    if ((typeof v === "string" && v.length <= PAIR_MAX_STRING) || typeof v === "number") {
      let byValue = pairCache.get(k);
      if (byValue === undefined && pairCache.size < PAIR_MAX_KEYS) pairCache.set(k, (byValue = new Map()));
      const cached = byValue?.get(v);
      if (cached !== undefined) {
        w.bytes(cached);
        continue;
      }
      if (byValue !== undefined && byValue.size < PAIR_MAX_VALUES) {
        pairWriter.pos = 0;
        pair(pairWriter, k, v);
        const b = pairWriter.take();
        byValue.set(v, b);
        w.bytes(b);
        continue;
      }
    }
    pair(w, k, v);
  }
}

function count(w: Writer, key: Uint8Array, n: number | undefined): void {
  if (!n) return;
  w.bytes(key);
  w.ascii(String(n));
}

function traceState(w: Writer, sc: SpanContext): void {
  const ts = sc.traceState?.serialize();
  if (!ts) return;
  w.bytes(K.traceState);
  w.str(ts);
}

function event(w: Writer, e: TimedEvent): void {
  w.bytes(K.timeUnixNano);
  w.ascii(hrTimeNanos(e.time));
  w.bytes(K.eventName);
  w.str(e.name);
  w.bytes(K.attributes);
  attributeList(w, e.attributes);
  w.byte(93);
  count(w, K.droppedAttributes, e.droppedAttributesCount);
  w.byte(125);
}

function link(w: Writer, l: Link & { droppedAttributesCount?: number }): void {
  const c = l.context;
  w.bytes(K.traceId);
  w.ascii(c.traceId);
  w.bytes(K.spanId);
  w.ascii(c.spanId);
  w.byte(34);
  traceState(w, c);
  w.bytes(K.attributes);
  attributeList(w, l.attributes);
  w.byte(93);
  count(w, K.droppedAttributes, l.droppedAttributesCount);
  w.bytes(K.flags);
  w.ascii(String(spanFlags(c.traceFlags, c.isRemote)));
  w.byte(125);
}

/** Ids go into the JSON as they are: check they are hex (they come from the SDK or a parsed `traceparent`). */
const isHex = (s: string): boolean => /^[0-9a-f]*$/.test(s);

function span(w: Writer, span: ReadableSpan): void {
  const sc = span.spanContext();
  const parent = span.parentSpanContext;
  if (!isHex(sc.traceId) || !isHex(sc.spanId) || (parent?.spanId && !isHex(parent.spanId))) throw new Error(`span ids are not hex: ${sc.traceId}/${sc.spanId}`);
  w.bytes(K.traceId);
  w.ascii(sc.traceId);
  w.bytes(K.spanId);
  w.ascii(sc.spanId);
  w.byte(34);
  traceState(w, sc);
  if (parent?.spanId) {
    w.bytes(K.parentSpanId);
    w.ascii(parent.spanId);
    w.byte(34);
  }
  w.bytes(K.flags);
  w.ascii(String(spanFlags(sc.traceFlags, parent?.isRemote)));
  w.bytes(K.name);
  w.str(span.name);
  w.bytes(K.kind);
  w.ascii(String(span.kind == null ? 0 : span.kind + 1));
  w.bytes(K.start);
  w.ascii(hrTimeNanos(span.startTime));
  w.bytes(K.end);
  w.ascii(hrTimeNanos(span.endTime));
  w.byte(34);
  w.bytes(K.attributes);
  attributeList(w, span.attributes);
  w.byte(93);
  count(w, K.droppedAttributes, span.droppedAttributesCount);
  if (span.events.length > 0) {
    w.bytes(K.events);
    for (let i = 0; i < span.events.length; i++) {
      if (i) w.byte(44);
      event(w, span.events[i]!);
    }
    w.byte(93);
  }
  count(w, K.droppedEvents, span.droppedEventsCount);
  if (span.links.length > 0) {
    w.bytes(K.links);
    for (let i = 0; i < span.links.length; i++) {
      if (i) w.byte(44);
      link(w, span.links[i]!);
    }
    w.byte(93);
  }
  count(w, K.droppedLinks, span.droppedLinksCount);
  const st = span.status;
  w.bytes(K.status);
  w.ascii(String(st.code));
  if (st.message) {
    w.bytes(K.message);
    w.str(st.message);
  }
  w.byte(125);
  w.byte(125);
}

type Resource = ReadableSpan["resource"];
type Scope = ReadableSpan["instrumentationScope"];

/** `"resource":{…}` (+ schema URL) pre-encoded per resource object (a provider has one; a settled resource does not change). */
const resourceCache = new WeakMap<Resource, Uint8Array>();
function resource(w: Writer, r: Resource): void {
  let b = resourceCache.get(r);
  if (b === undefined) {
    const rw = new Writer(256);
    rw.bytes(K.resourceOpen);
    rw.bytes(K.attributesFirst);
    attributeList(rw, r.attributes);
    rw.byte(93);
    rw.byte(125);
    if (r.schemaUrl) {
      rw.bytes(K.schemaUrl);
      rw.str(r.schemaUrl);
    }
    b = rw.take();
    if (!r.asyncAttributesPending) resourceCache.set(r, b);
  }
  w.bytes(b);
}

function scope(w: Writer, s: Scope): void {
  w.bytes(K.scopeOpen);
  w.str(s.name);
  if (s.version !== undefined) {
    w.bytes(K.version);
    w.str(s.version);
  }
  w.byte(125);
  if (s.schemaUrl) {
    w.bytes(K.schemaUrl);
    w.str(s.schemaUrl);
  }
}

/** Bytes per span to reserve up front (a gateway span is ~0.9 KB). */
const SPAN_BYTES = 1024;

/**
 * An `ExportTraceServiceRequest` of `spans` as UTF-8 JSON (a copy: see {@link writeTraceRequest}).
 *
 * @example JSON.parse(new TextDecoder().decode(otlpTraceRequest(spans))).resourceSpans[0].scopeSpans[0].spans.length // spans.length (one provider, one tracer)
 */
export function otlpTraceRequest(spans: readonly ReadableSpan[]): Uint8Array<ArrayBuffer> {
  return writeTraceRequest(spans, new Writer(1024)).slice();
}

/**
 * Write an `ExportTraceServiceRequest` of `spans` as UTF-8 JSON into `w` (from its start) and return the bytes, a
 * view of `w`'s buffer valid until `w` is written again: spans grouped by resource, then by instrumentation scope
 * (name, version, schema URL), in the order they came. The exporter keeps a few writers and reuses them, because a
 * new buffer of half a megabyte per request costs more than the writing (allocation and zeroing, measured).
 *
 * @throws {Error} on a span whose ids are not lowercase hex (never from the SDK).
 */
export function writeTraceRequest(spans: readonly ReadableSpan[], w: Writer): Uint8Array<ArrayBuffer> {
  w.pos = 0;
  w.ensure(256 + spans.length * SPAN_BYTES);
  const groups = new Map<Resource, Map<string, readonly ReadableSpan[]>>();
  // Almost always one resource and one scope: group only when they differ.
  const r0 = spans[0]?.resource;
  const s0 = spans[0]?.instrumentationScope;
  let uniform = true;
  for (let i = 1; i < spans.length && uniform; i++) uniform = spans[i]!.resource === r0 && spans[i]!.instrumentationScope === s0;
  if (uniform && r0 !== undefined) groups.set(r0, new Map([["", spans]]));
  else for (const s of spans) {
    let scopes = groups.get(s.resource);
    if (scopes === undefined) groups.set(s.resource, (scopes = new Map()));
    const sc = s.instrumentationScope;
    const key = `${sc.name}@${sc.version ?? ""}:${sc.schemaUrl ?? ""}`;
    let list = scopes.get(key) as ReadableSpan[] | undefined;
    if (list === undefined) scopes.set(key, (list = []));
    list.push(s);
  }
  w.bytes(K.open);
  let firstResource = true;
  for (const [r, scopes] of groups) {
    if (!firstResource) w.byte(44);
    firstResource = false;
    resource(w, r);
    w.bytes(K.scopeSpansOpen);
    let firstScope = true;
    for (const list of scopes.values()) {
      if (!firstScope) w.byte(44);
      firstScope = false;
      scope(w, list[0]!.instrumentationScope);
      w.bytes(K.spansOpen);
      for (let i = 0; i < list.length; i++) {
        if (i) w.byte(44);
        span(w, list[i]!);
      }
      w.byte(93);
      w.byte(125);
    }
    w.byte(93);
    w.byte(125);
  }
  w.byte(93);
  w.byte(125);
  return w.buf.subarray(0, w.pos);
}
