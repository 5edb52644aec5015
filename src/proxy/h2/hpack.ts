/**
 * HPACK header compression (RFC 7541) for the HTTP/2 path: one {@link HpackDecoder} for the header blocks a
 * peer sends and one {@link HpackEncoder} for those we send, per connection.
 *
 * Strings are byte strings: every character is one octet (latin1), so names and values pass through unchanged
 * whatever bytes they hold. The decoder only decodes: whether a name is lower case and a valid token, or a value
 * holds no CR/LF/NUL (RFC 9113 §8.2.1), is for the session to check.
 *
 * Allocation is kept off the steady state: an indexed field decodes to the table's own (immutable) field, and
 * an encoder that meets the same header list again with its table unchanged (a gRPC client calling one method)
 * copies its previous output.
 */
import { putLatin1 } from "../http/bytes.ts";
import { latin1 } from "../http/parser.ts";
import { HUFFMAN_EOS, huffmanDecode, huffmanEncode, huffmanLength } from "./huffman.ts";

/** One header field: lower-case name and value, each a byte string (one character per octet). */
export type HeaderField = readonly [name: string, value: string];

/** A header block the peer sent cannot be decoded: an HTTP/2 COMPRESSION_ERROR (a connection error). */
export class HpackError extends Error {
  override name = "HpackError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * A decoded header list is larger than the decoder's `maxHeaderListSize` (RFC 9113 §6.5.2: name + value + 32
 * octets per field). The block was fully processed, so the connection's HPACK state is intact: the session may
 * refuse the one stream and carry on.
 */
export class HeaderListTooLarge extends Error {
  override name = "HeaderListTooLarge";
  /** Size of the whole decoded list, octets. */
  readonly size: number;
  /** The limit it exceeded, octets. */
  readonly limit: number;
  constructor(size: number, limit: number) {
    super(`Header list too large: ${size} octets, the limit is ${limit}`);
    this.size = size;
    this.limit = limit;
  }
}

/** The static table (RFC 7541 Appendix A); index 0 is unused. */
const STATIC: readonly HeaderField[] = [
  ["", ""],
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];
const STATIC_COUNT = 61;

/** Octets a field takes in a dynamic table (RFC 7541 §4.1). */
function entrySize(f: HeaderField): number {
  return 32 + f[0].length + f[1].length;
}

/** Largest integer the decoder accepts (a length, an index, a table size). */
const MAX_INT = 2 ** 31 - 1;

/**
 * A dynamic table (RFC 7541 §2.3.2): a ring of fields, newest first, evicted from the oldest end to stay within
 * `maxSize` octets.
 */
export class DynamicTable {
  /** Octets in use (32 + name + value per entry). */
  size = 0;
  /** Number of entries. */
  count = 0;
  /** Entries ever added: the newest entry is the `inserted`-th (see {@link IndexedTable}). */
  inserted = 0;
  maxSize: number;
  private ring: (HeaderField | undefined)[] = new Array<HeaderField | undefined>(16);
  private mask = 15;
  /** Where the next entry goes. */
  private next = 0;

  constructor(maxSize: number) {
    this.maxSize = maxSize;
  }

  /** The entry at dynamic index `i` (1 is the newest), undefined past the end. */
  get(i: number): HeaderField | undefined {
    return i <= this.count ? this.ring[(this.next - i) & this.mask] : undefined;
  }

  /** Entries, newest first (for tests and diagnostics). */
  entries(): HeaderField[] {
    const out: HeaderField[] = [];
    for (let i = 1; i <= this.count; i++) out.push(this.get(i)!);
    return out;
  }

  /** Add `f` as the newest entry, evicting old ones to make room; a field larger than the table empties it. */
  add(f: HeaderField): void {
    const size = entrySize(f);
    while (this.count > 0 && this.size + size > this.maxSize) this.evictOldest();
    if (size > this.maxSize) return;
    if (this.count === this.ring.length) this.grow();
    this.ring[this.next] = f;
    this.next = (this.next + 1) & this.mask;
    this.count++;
    this.size += size;
    this.inserted++;
  }

  /** Set the maximum size, evicting down to it. */
  resize(maxSize: number): void {
    this.maxSize = maxSize;
    while (this.size > maxSize) this.evictOldest();
  }

  /** Called with each evicted entry and its insertion number (1 for the first entry ever added). */
  protected evicted(_f: HeaderField, _n: number): void {}

  private evictOldest(): void {
    const at = (this.next - this.count) & this.mask;
    const f = this.ring[at]!;
    this.ring[at] = undefined;
    this.evicted(f, this.inserted - this.count + 1);
    this.count--;
    this.size -= entrySize(f);
  }

  private grow(): void {
    const ring = new Array<HeaderField | undefined>(this.ring.length * 2);
    for (let i = 0; i < this.count; i++) ring[i] = this.get(this.count - i);
    this.ring = ring;
    this.mask = ring.length - 1;
    this.next = this.count;
  }
}

/** Fields the decoder read as "never indexed" (RFC 7541 §6.2.3), so that the encoder keeps them so (§7.1.3). */
const neverIndexedFields = new WeakSet<HeaderField>();

/**
 * Whether `field` came from a peer as a "never indexed" literal (a value the sender marked sensitive). The
 * encoder sends such a field as never indexed again, as an intermediary must (RFC 7541 §7.1.3).
 */
export function isNeverIndexed(field: HeaderField): boolean {
  return neverIndexedFields.has(field);
}

/**
 * Decodes the header blocks of one connection's peer (one instance per connection, blocks in order).
 *
 * @example
 * const decoder = new HpackDecoder({ maxHeaderListSize: 16384 });
 * decoder.decode(Uint8Array.of(0x82, 0x86, 0x84)); // [[":method", "GET"], [":scheme", "http"], [":path", "/"]]
 */
export class HpackDecoder {
  /** The dynamic table, in step with the peer's encoder (read it for tests and diagnostics only). */
  readonly table: DynamicTable;
  /** The SETTINGS_HEADER_TABLE_SIZE we advertise: the largest size update the peer may send. */
  private readonly maxTableSize: number;
  private readonly maxHeaderListSize: number;
  /** Read position in the block being decoded. */
  private pos = 0;
  /** Huffman output before it becomes a string. */
  private scratch = new Uint8Array(256);

  constructor(options: { maxTableSize?: number; maxHeaderListSize?: number }) {
    this.maxTableSize = options.maxTableSize ?? 4096;
    this.maxHeaderListSize = options.maxHeaderListSize ?? Infinity;
    this.table = new DynamicTable(this.maxTableSize);
  }

  /**
   * Decode one complete header block (HEADERS + CONTINUATION payloads joined). Throws {@link HpackError} on a
   * COMPRESSION_ERROR (a connection error: the state is lost) and {@link HeaderListTooLarge} when the list is
   * over `maxHeaderListSize` (the decoder state stays consistent: the block is still fully processed so later
   * blocks decode).
   */
  decode(block: Uint8Array): HeaderField[] {
    const out: HeaderField[] = [];
    const end = block.length;
    const limit = this.maxHeaderListSize;
    let listSize = 0;
    let sizeUpdateAllowed = true;
    this.pos = 0;
    while (this.pos < end) {
      const b = block[this.pos]!;
      let f: HeaderField;
      if (b >= 0x80) {
        // Indexed (§6.1).
        f = this.field(this.integer(block, 7));
      } else if (b >= 0x40) {
        // Literal with incremental indexing (§6.2.1).
        const i = this.integer(block, 6);
        const name = i === 0 ? this.string(block) : this.field(i)[0];
        f = [name, this.string(block)];
        this.table.add(f);
      } else if (b >= 0x20) {
        // Dynamic table size update (§6.3).
        if (!sizeUpdateAllowed) throw new HpackError("Invalid header block: a dynamic table size update after a field");
        const n = this.integer(block, 5);
        if (n > this.maxTableSize) {
          throw new HpackError(`Invalid dynamic table size update: ${n} is over the advertised maximum of ${this.maxTableSize}`);
        }
        this.table.resize(n);
        continue;
      } else {
        // Literal without indexing (§6.2.2) or never indexed (§6.2.3).
        const i = this.integer(block, 4);
        const name = i === 0 ? this.string(block) : this.field(i)[0];
        f = [name, this.string(block)];
        if (b >= 0x10) neverIndexedFields.add(f);
      }
      sizeUpdateAllowed = false;
      listSize += 32 + f[0].length + f[1].length;
      if (listSize <= limit) out.push(f);
    }
    if (listSize > limit) throw new HeaderListTooLarge(listSize, limit);
    return out;
  }

  /** The field at index `i` of the static + dynamic address space (§2.3.3). */
  private field(i: number): HeaderField {
    if (i === 0) throw new HpackError("Invalid header block: index 0");
    if (i <= STATIC_COUNT) return STATIC[i]!;
    const f = this.table.get(i - STATIC_COUNT);
    if (f === undefined) {
      throw new HpackError(`Invalid header block: index ${i} is past the end of the table (${STATIC_COUNT + this.table.count} entries)`);
    }
    return f;
  }

  /** Read an integer with an N-bit prefix (§5.1) at `pos`; at most 2^31 - 1, in at most 5 continuation bytes. */
  private integer(block: Uint8Array, prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let v = block[this.pos++]! & max;
    if (v < max) return v;
    for (let shift = 0; shift <= 28; shift += 7) {
      if (this.pos >= block.length) throw new HpackError("Invalid header block: truncated integer");
      const b = block[this.pos++]!;
      v += (b & 0x7f) * (1 << shift);
      if (v > MAX_INT) throw new HpackError("Invalid header block: integer over 2^31 - 1");
      if (b < 0x80) return v;
    }
    throw new HpackError("Invalid header block: integer with more than 5 continuation bytes");
  }

  /** Read a string literal (§5.2) at `pos`. */
  private string(block: Uint8Array): string {
    if (this.pos >= block.length) throw new HpackError("Invalid header block: truncated field");
    const huffman = block[this.pos]! >= 0x80;
    const len = this.integer(block, 7);
    const start = this.pos;
    const end = start + len;
    if (end > block.length) throw new HpackError(`Invalid header block: a ${len}-octet string with ${block.length - start} octets left`);
    this.pos = end;
    if (!huffman) return latin1(block, start, end);
    if (this.scratch.length < len * 2) this.scratch = new Uint8Array(len * 2);
    const n = huffmanDecode(block, start, end, this.scratch);
    if (n < 0) {
      throw new HpackError(n === HUFFMAN_EOS ? "Invalid Huffman string: it holds EOS" : "Invalid Huffman string: padding longer than 7 bits or not all ones");
    }
    return latin1(this.scratch, 0, n);
  }
}

/** The largest dynamic table the encoder uses, whatever the peer allows (as nghttp2 and Envoy do), octets. */
const ENCODER_TABLE_MAX = 4096;

/** Name policies of the encoder. */
const P_NEVER = 1; // sensitive: never indexed, anywhere downstream
const P_COOKIE = 2; // never indexed when shorter than COOKIE_NEVER_BELOW octets (guessable), else as usual
const P_NO_INDEX = 3; // a value that changes per message: a literal, not worth a table entry

/** Cookies shorter than this are "never indexed" (a short cookie is open to guessing through compression). */
const COOKIE_NEVER_BELOW = 20;

/** What the encoder knows of a name: its first static index (0 if none), its static values, its policy. */
interface NameInfo {
  readonly index: number;
  readonly values: Map<string, number>;
  policy: number;
}

const NAMES = new Map<string, NameInfo>();
for (let i = 1; i <= STATIC_COUNT; i++) {
  const [name, value] = STATIC[i]!;
  let info = NAMES.get(name);
  if (info === undefined) NAMES.set(name, (info = { index: i, values: new Map(), policy: 0 }));
  if (!info.values.has(value)) info.values.set(value, i);
}
for (const [names, policy] of [
  [["authorization", "proxy-authorization"], P_NEVER],
  [["cookie"], P_COOKIE],
  [
    [
      ":path",
      "content-length",
      "age",
      "date",
      "etag",
      "if-modified-since",
      "if-none-match",
      "if-unmodified-since",
      "last-modified",
      "location",
      "set-cookie",
      "grpc-timeout",
      "traceparent",
      "x-request-id",
    ],
    P_NO_INDEX,
  ],
] as const) {
  for (const name of names) {
    const info = NAMES.get(name);
    if (info === undefined) NAMES.set(name, { index: 0, values: new Map(), policy });
    else info.policy = policy;
  }
}

/** The dynamic-table entries of one name, by insertion number. */
interface NameEntries {
  /** The newest entry with this name. */
  newest: number;
  readonly values: Map<string, number>;
}

/** The encoder's dynamic table, with a lookup of its entries by name and value. */
class IndexedTable extends DynamicTable {
  readonly names = new Map<string, NameEntries>();

  /** HPACK index (static entries first) of an entry, by its insertion number. */
  indexOf(n: number): number {
    return STATIC_COUNT + this.inserted - n + 1;
  }

  override add(f: HeaderField): void {
    const before = this.inserted;
    super.add(f);
    if (this.inserted === before) return;
    const e = this.names.get(f[0]);
    if (e === undefined) this.names.set(f[0], { newest: this.inserted, values: new Map([[f[1], this.inserted]]) });
    else {
      e.newest = this.inserted;
      e.values.set(f[1], this.inserted);
    }
  }

  protected override evicted(f: HeaderField, n: number): void {
    const e = this.names.get(f[0])!;
    // Eviction goes oldest first: if this was the newest entry of its name, it was the only one left.
    if (e.newest === n) this.names.delete(f[0]);
    else if (e.values.get(f[1]) === n) e.values.delete(f[1]);
  }
}

/** No size update pending. */
const NO_UPDATE = -1;

/**
 * Encodes the header blocks we send on one connection (one instance per connection, blocks sent in the order
 * encoded).
 *
 * Exact matches of the static or dynamic table go as one index; other fields as literals, with the name indexed
 * when a table has it, Huffman-coded when that is shorter. A field goes into the dynamic table unless its value
 * changes per message (`:path`, `content-length`, `date`, `grpc-timeout`, ...), it is larger than 3/4 of the
 * table, or it is sensitive: `authorization`, `proxy-authorization`, a cookie under 20 octets, or a field the
 * peer sent as never indexed ({@link isNeverIndexed}) go as "never indexed" literals.
 *
 * @example
 * const encoder = new HpackEncoder();
 * const block = encoder.encode([[":method", "GET"], [":scheme", "http"], [":path", "/"]]); // 82 86 84
 */
export class HpackEncoder {
  private readonly dyn: IndexedTable;
  /** Smallest size since the last block, when an update is pending (RFC 7541 §4.2), else NO_UPDATE. */
  private updateMin = NO_UPDATE;
  /** Size to announce at the start of the next block, when an update is pending. */
  private updateTo = NO_UPDATE;
  private buf = new Uint8Array(512);
  private pos = 0;
  /** The previous header list and its block, when encoding it left the table as it was; else null. */
  private lastHeaders: HeaderField[] | null = null;
  private lastBlock: Uint8Array | null = null;

  constructor(options: { maxTableSize?: number } = {}) {
    this.dyn = new IndexedTable(Math.min(options.maxTableSize ?? 4096, ENCODER_TABLE_MAX));
  }

  /** The dynamic table, as the peer's decoder will hold it (read it for tests and diagnostics only). */
  get table(): DynamicTable {
    return this.dyn;
  }

  /**
   * Peer changed SETTINGS_HEADER_TABLE_SIZE: emit a dynamic table size update at the start of the next block
   * (the encoder uses at most 4096 octets of what the peer allows). After several changes between two blocks,
   * the smallest size goes first, then the last (RFC 7541 §4.2).
   */
  setMaxTableSize(n: number): void {
    const size = Math.min(n, ENCODER_TABLE_MAX);
    this.updateMin = this.updateMin === NO_UPDATE ? size : Math.min(this.updateMin, size);
    this.updateTo = size;
    this.lastHeaders = null;
  }

  /**
   * Encode one header block; returns a new array each call. Names and values must be byte strings: a character
   * above 255 throws a TypeError, after which the encoder may be out of step with the peer (close the connection).
   */
  encode(headers: readonly HeaderField[]): Uint8Array {
    if (this.lastHeaders !== null && sameFields(this.lastHeaders, headers)) return this.lastBlock!.slice();
    const table = this.dyn;
    const inserted = table.inserted;
    this.pos = 0;
    let updated = false;
    if (this.updateTo !== NO_UPDATE) {
      this.ensure(12);
      if (this.updateMin < this.updateTo) {
        this.integer(0x20, 5, this.updateMin);
        table.resize(this.updateMin);
      }
      this.integer(0x20, 5, this.updateTo);
      table.resize(this.updateTo);
      this.updateMin = this.updateTo = NO_UPDATE;
      updated = true;
    }
    for (let i = 0; i < headers.length; i++) this.field(headers[i]!);
    const block = this.buf.slice(0, this.pos);
    if (updated || table.inserted !== inserted) this.lastHeaders = null;
    else {
      this.lastHeaders = headers.slice();
      this.lastBlock = block;
      return block.slice();
    }
    return block;
  }

  private field(f: HeaderField): void {
    const name = f[0];
    const value = f[1];
    this.ensure(name.length + value.length + 16);
    const info = NAMES.get(name);
    const policy = info === undefined ? 0 : info.policy;
    if (info !== undefined) {
      const i = info.values.get(value);
      if (i !== undefined) return this.integer(0x80, 7, i);
    }
    const table = this.dyn;
    const entries = table.names.get(name);
    const never = policy === P_NEVER || (policy === P_COOKIE && value.length < COOKIE_NEVER_BELOW) || neverIndexedFields.has(f);
    if (!never && entries !== undefined) {
      const n = entries.values.get(value);
      if (n !== undefined) return this.integer(0x80, 7, table.indexOf(n));
    }
    const nameIndex = info !== undefined && info.index !== 0 ? info.index : entries !== undefined ? table.indexOf(entries.newest) : 0;
    if (never) this.integer(0x10, 4, nameIndex);
    else if (policy !== P_NO_INDEX && entrySize(f) * 4 <= table.maxSize * 3) {
      this.integer(0x40, 6, nameIndex);
      if (nameIndex === 0) this.string(name);
      this.string(value);
      table.add(f);
      return;
    } else this.integer(0, 4, nameIndex);
    if (nameIndex === 0) this.string(name);
    this.string(value);
  }

  /** Write an integer with an N-bit prefix (§5.1); `flags` are the bits above the prefix. */
  private integer(flags: number, prefixBits: number, v: number): void {
    const buf = this.buf;
    const max = (1 << prefixBits) - 1;
    if (v < max) {
      buf[this.pos++] = flags | v;
      return;
    }
    buf[this.pos++] = flags | max;
    v -= max;
    while (v >= 0x80) {
      buf[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 0x80);
    }
    buf[this.pos++] = v;
  }

  /** Write a string literal (§5.2), Huffman-coded when that is shorter. */
  private string(s: string): void {
    const h = huffmanLength(s);
    if (h < 0) throw new TypeError(`Cannot encode header string "${s.slice(0, 64)}": a character is above 255 (not a byte string)`);
    if (h < s.length) {
      this.integer(0x80, 7, h);
      this.pos = huffmanEncode(s, this.buf, this.pos);
    } else {
      this.integer(0, 7, s.length);
      this.pos = putLatin1(this.buf, this.pos, s);
    }
  }

  /** Make room for `n` more octets. */
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const buf = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    buf.set(this.buf.subarray(0, this.pos));
    this.buf = buf;
  }
}

/** Whether two header lists hold the same fields in the same order (a field marked never indexed only as itself). */
function sameFields(a: readonly HeaderField[], b: readonly HeaderField[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y && (x[0] !== y[0] || x[1] !== y[1] || neverIndexedFields.has(y))) return false;
  }
  return true;
}
