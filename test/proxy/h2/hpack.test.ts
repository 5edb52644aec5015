/**
 * HPACK (RFC 7541): every example of Appendix C decoded with its dynamic table checked after each block, the
 * encoder against those examples and in round trips with a separate decoder (table size changes, eviction,
 * sensitive fields, seeded random header lists), every decoding error, and the Huffman code on all 256 bytes.
 */
import { describe, expect, test } from "bun:test";
import { type HeaderField, HeaderListTooLarge, HpackDecoder, HpackEncoder, HpackError, isNeverIndexed } from "../../../src/proxy/h2/hpack.ts";
import { HUFFMAN_BAD_PADDING, HUFFMAN_EOS, huffmanDecode, huffmanEncode, huffmanLength } from "../../../src/proxy/h2/huffman.ts";
import { seeded } from "../../support/random.ts";

function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, "");
  return Uint8Array.from({ length: clean.length / 2 }, (_, i) => parseInt(clean.slice(i * 2, i * 2 + 2), 16));
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** One block of an Appendix C example: its bytes, the fields, then the dynamic table (newest first) and size. */
interface Example {
  readonly id: string;
  readonly block: string;
  readonly fields: HeaderField[];
  readonly table: HeaderField[];
  readonly size: number;
}

const REQ1: HeaderField[] = [
  [":method", "GET"],
  [":scheme", "http"],
  [":path", "/"],
  [":authority", "www.example.com"],
];
const REQ2: HeaderField[] = [...REQ1, ["cache-control", "no-cache"]];
const REQ3: HeaderField[] = [
  [":method", "GET"],
  [":scheme", "https"],
  [":path", "/index.html"],
  [":authority", "www.example.com"],
  ["custom-key", "custom-value"],
];
const REQ_TABLES: HeaderField[][] = [
  [[":authority", "www.example.com"]],
  [
    ["cache-control", "no-cache"],
    [":authority", "www.example.com"],
  ],
  [
    ["custom-key", "custom-value"],
    ["cache-control", "no-cache"],
    [":authority", "www.example.com"],
  ],
];
const REQ_SIZES = [57, 110, 164];

/** C.3 and C.4: one connection's three requests, without and with Huffman coding (table size 4096). */
const requests = (id: string, blocks: string[]): Example[] =>
  [REQ1, REQ2, REQ3].map((fields, i) => ({ id: `${id}.${i + 1}`, block: blocks[i]!, fields, table: REQ_TABLES[i]!, size: REQ_SIZES[i]! }));

const DATE1 = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2 = "Mon, 21 Oct 2013 20:13:22 GMT";
const COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESP: HeaderField[][] = [
  [
    [":status", "302"],
    ["cache-control", "private"],
    ["date", DATE1],
    ["location", "https://www.example.com"],
  ],
  [
    [":status", "307"],
    ["cache-control", "private"],
    ["date", DATE1],
    ["location", "https://www.example.com"],
  ],
  [
    [":status", "200"],
    ["cache-control", "private"],
    ["date", DATE2],
    ["location", "https://www.example.com"],
    ["content-encoding", "gzip"],
    ["set-cookie", COOKIE],
  ],
];
const RESP_TABLES: HeaderField[][] = [
  [
    ["location", "https://www.example.com"],
    ["date", DATE1],
    ["cache-control", "private"],
    [":status", "302"],
  ],
  [
    [":status", "307"],
    ["location", "https://www.example.com"],
    ["date", DATE1],
    ["cache-control", "private"],
  ],
  [
    ["set-cookie", COOKIE],
    ["content-encoding", "gzip"],
    ["date", DATE2],
  ],
];
const RESP_SIZES = [222, 222, 215];

/** C.5 and C.6: one connection's three responses, without and with Huffman coding (table size 256: eviction). */
const responses = (id: string, blocks: string[]): Example[] =>
  RESP.map((fields, i) => ({ id: `${id}.${i + 1}`, block: blocks[i]!, fields, table: RESP_TABLES[i]!, size: RESP_SIZES[i]! }));

const C3 = requests("C.3", [
  "828684410f7777772e6578616d706c652e636f6d",
  "828684be58086e6f2d6361636865",
  "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
]);
const C4 = requests("C.4", ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf", "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]);
const C5 = responses("C.5", [
  "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
  "4803333037c1c0bf",
  "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
]);
const C6 = responses("C.6", [
  "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
  "4883640effc1c0bf",
  "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
]);

describe("RFC 7541 Appendix C: decoding", () => {
  test.each([
    ["C.2.1 literal with indexing", "400a637573746f6d2d6b65790d637573746f6d2d686561646572", [["custom-key", "custom-header"]], [["custom-key", "custom-header"]], 55],
    ["C.2.2 literal without indexing", "040c2f73616d706c652f70617468", [[":path", "/sample/path"]], [], 0],
    ["C.2.3 literal never indexed", "100870617373776f726406736563726574", [["password", "secret"]], [], 0],
    ["C.2.4 indexed", "82", [[":method", "GET"]], [], 0],
  ] as [string, string, HeaderField[], HeaderField[], number][])("%s", (_id, block, fields, table, size) => {
    const d = new HpackDecoder({});
    expect(d.decode(hex(block))).toEqual(fields);
    expect(d.table.entries()).toEqual(table);
    expect(d.table.size).toBe(size);
  });

  test("C.2.3 is marked never indexed, C.2.2 is not", () => {
    expect(isNeverIndexed(new HpackDecoder({}).decode(hex("100870617373776f726406736563726574"))[0]!)).toBe(true);
    expect(isNeverIndexed(new HpackDecoder({}).decode(hex("040c2f73616d706c652f70617468"))[0]!)).toBe(false);
  });

  describe.each([
    ["C.3 requests without Huffman", C3, 4096],
    ["C.4 requests with Huffman", C4, 4096],
    ["C.5 responses without Huffman", C5, 256],
    ["C.6 responses with Huffman", C6, 256],
  ] as [string, Example[], number][])("%s", (_name, examples, maxTableSize) => {
    test("each block's fields, then the dynamic table and its size", () => {
      const d = new HpackDecoder({ maxTableSize });
      for (const ex of examples) {
        expect({ id: ex.id, fields: d.decode(hex(ex.block)), table: d.table.entries(), size: d.table.size }).toEqual({
          id: ex.id,
          fields: ex.fields,
          table: ex.table,
          size: ex.size,
        });
      }
    });
  });

  test("C.1: integers with a 5-bit prefix (table size updates of 10 and 1337)", () => {
    const d = new HpackDecoder({});
    d.decode(hex("2a"));
    expect(d.table.maxSize).toBe(10);
    d.decode(hex("3f9a0a"));
    expect(d.table.maxSize).toBe(1337);
    const e = new HpackEncoder();
    e.setMaxTableSize(1337);
    expect(toHex(e.encode([]))).toBe("3f9a0a");
  });
});

describe("RFC 7541 Appendix C: encoding", () => {
  test("C.4: the three requests encode byte for byte (Huffman where shorter, :authority and the rest indexed)", () => {
    const e = new HpackEncoder();
    for (const ex of C4) {
      expect({ id: ex.id, block: toHex(e.encode(ex.fields)), table: e.table.entries(), size: e.table.size }).toEqual({
        id: ex.id,
        block: ex.block,
        table: ex.table,
        size: ex.size,
      });
    }
  });

  test("C.5/C.6 responses at table size 256 round-trip, with the encoder's table equal to the decoder's", () => {
    const e = new HpackEncoder({ maxTableSize: 256 });
    const d = new HpackDecoder({ maxTableSize: 256 });
    for (const fields of [...RESP, ...RESP, ...RESP]) {
      expect(d.decode(e.encode(fields))).toEqual(fields);
      expect(d.table.entries()).toEqual(e.table.entries());
      expect(d.table.size).toBe(e.table.size);
      expect(e.table.size).toBeLessThanOrEqual(256);
    }
  });
});

/** Encode with `e`, decode with `d`, and check the fields and that both tables agree. */
function roundTrip(e: HpackEncoder, d: HpackDecoder, fields: HeaderField[]): Uint8Array {
  const block = e.encode(fields);
  expect(d.decode(block)).toEqual(fields);
  expect(d.table.entries()).toEqual(e.table.entries());
  expect(d.table.size).toBe(e.table.size);
  expect(d.table.maxSize).toBe(e.table.maxSize);
  return block;
}

const GRPC: HeaderField[] = [
  [":method", "POST"],
  [":scheme", "http"],
  [":path", "/helloworld.Greeter/SayHello"],
  [":authority", "greeter.default.svc:50051"],
  ["content-type", "application/grpc"],
  ["te", "trailers"],
  ["user-agent", "grpc-python/1.60.0 grpc-c/37.0.0 (linux; chttp2)"],
  ["grpc-accept-encoding", "identity,deflate,gzip"],
];

describe("HpackEncoder", () => {
  test("a repeated gRPC header list shrinks to indexes (and the :path literal) and stays byte-identical", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder({});
    const first = roundTrip(e, d, GRPC);
    const second = roundTrip(e, d, GRPC);
    const third = roundTrip(e, d, GRPC.map(([n, v]) => [n, v] as const));
    expect(second.length).toBeLessThan(first.length / 2);
    expect(third).toEqual(second);
    expect(third).not.toBe(second);
    // Each call returns its own array: changing one does not change the next.
    third.fill(0);
    expect(roundTrip(e, d, GRPC)).toEqual(second);
    expect(e.table.entries().map(([n]) => n)).not.toContain(":path");
  });

  test("a size update goes at the start of the next block; the smallest of several changes first (RFC 7541 §4.2)", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder({});
    roundTrip(e, d, GRPC);
    expect(e.table.count).toBeGreaterThan(3);
    e.setMaxTableSize(0);
    e.setMaxTableSize(1000);
    const block = roundTrip(e, d, GRPC);
    // 0x20: size 0; 0x3f 0xc9 0x07: size 1000 (31 + 969).
    expect(toHex(block.subarray(0, 4))).toBe("203fc907");
    expect(e.table.maxSize).toBe(1000);
    // The table was emptied by the 0, then refilled within 1000.
    expect(e.table.size).toBeGreaterThan(0);
    expect(e.table.size).toBeLessThanOrEqual(1000);
    // No further update once sent.
    expect(roundTrip(e, d, GRPC)[0]).toBe(0x83);
  });

  test("table size 0: every block decodes, nothing is indexed", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder({});
    roundTrip(e, d, GRPC);
    e.setMaxTableSize(0);
    expect(roundTrip(e, d, GRPC)[0]).toBe(0x20);
    for (let i = 0; i < 3; i++) roundTrip(e, d, [...GRPC, ["x-n", String(i)]]);
    expect(e.table.count).toBe(0);
    expect(d.table.count).toBe(0);
    e.setMaxTableSize(4096);
    roundTrip(e, d, GRPC);
    expect(e.table.count).toBeGreaterThan(0);
  });

  test("eviction: a small table keeps the newest entries, in step with the decoder", () => {
    const e = new HpackEncoder({ maxTableSize: 200 });
    const d = new HpackDecoder({ maxTableSize: 200 });
    for (let i = 0; i < 50; i++) roundTrip(e, d, [["x-key", `value-${i % 7}`], [`x-name-${i % 5}`, "v"]]);
    expect(e.table.size).toBeLessThanOrEqual(200);
    expect(e.table.count).toBeGreaterThan(1);
  });

  test("the encoder uses at most 4096 octets of a larger table the peer allows", () => {
    const e = new HpackEncoder({ maxTableSize: 65536 });
    const d = new HpackDecoder({ maxTableSize: 65536 });
    expect(e.table.maxSize).toBe(4096);
    for (let i = 0; i < 100; i++) {
      const block = e.encode([["x-big", `${i}`.padStart(100, "x")]]);
      expect(d.decode(block)).toEqual([["x-big", `${i}`.padStart(100, "x")]]);
    }
    expect(e.table.size).toBeLessThanOrEqual(4096);
    // The decoder keeps more (its limit is 65536): harmless, the encoder never refers to what it evicted.
    expect(d.table.entries().slice(0, e.table.count)).toEqual(e.table.entries());
    e.setMaxTableSize(100_000);
    expect(toHex(e.encode([]))).toBe("3fe11f");
  });

  test.each([
    ["authorization", "Bearer abc.def.ghi", "never"],
    ["proxy-authorization", "Basic dXNlcjpwYXNz", "never"],
    ["cookie", "id=1234567", "never"],
    ["cookie", "session=0123456789abcdef0123456789", "indexed"],
    [":path", "/a/b?c=d", "not indexed"],
    ["content-length", "1234", "not indexed"],
    ["grpc-timeout", "999m", "not indexed"],
    ["x-custom", "value", "indexed"],
  ])("%s: %s is %s", (name, value, how) => {
    const e = new HpackEncoder();
    const d = new HpackDecoder({});
    const block = roundTrip(e, d, [[name, value]]);
    const kind = block[0]! >= 0x40 ? "indexed" : block[0]! >= 0x10 ? "never" : "not indexed";
    expect(kind).toBe(how);
    expect(isNeverIndexed(d.decode(e.encode([[name, value]]))[0]!)).toBe(how === "never");
  });

  test("a field the peer sent never indexed is sent never indexed again (RFC 7541 §7.1.3), even on the fast path", () => {
    const fields = new HpackDecoder({}).decode(hex("100870617373776f726406736563726574"));
    const plain: HeaderField[] = [["password", "secret"]];
    const e = new HpackEncoder();
    const d = new HpackDecoder({});
    // Sent plain twice (indexed, then an index), then the same strings marked sensitive.
    roundTrip(e, d, plain);
    roundTrip(e, d, plain);
    const block = roundTrip(e, d, fields);
    expect(block[0]! & 0xf0).toBe(0x10);
    expect(isNeverIndexed(d.decode(e.encode(fields))[0]!)).toBe(true);
  });

  test("a field larger than 3/4 of the table is not indexed", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder({});
    roundTrip(e, d, [["x-large", "v".repeat(3100)]]);
    expect(e.table.count).toBe(0);
    roundTrip(e, d, [["x-large", "v".repeat(3000)]]);
    expect(e.table.count).toBe(1);
  });

  test("Huffman only when shorter: raw bytes with long codes stay literal", () => {
    const e = new HpackEncoder();
    const raw = "\x00\x01\x02\xff";
    const block = roundTrip(e, new HpackDecoder({}), [["x-raw", raw]]);
    // 0x40 new name; name "x-raw" Huffman (0x84); value raw (0x04, no H bit).
    expect(block.subarray(block.length - 5)).toEqual(Uint8Array.of(0x04, 0, 1, 2, 0xff));
  });

  test("a character above 255 is refused (TypeError), not mangled", () => {
    expect(() => new HpackEncoder().encode([["x-name", "caf\u00e9 \u263a"]])).toThrow(TypeError);
  });
});

/** Header lists drawn from a seeded PRNG: static names and values, repeats, sensitive fields, random bytes. */
function randomFields(rng: () => number): HeaderField[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
  const names = [":path", ":authority", "content-type", "cookie", "authorization", "x-a", "x-b", "grpc-timeout", "user-agent", "accept-encoding"];
  const values = ["", "gzip, deflate", "/", "application/grpc", "v1", "a longer value that repeats across blocks"];
  const bytes = (n: number) => String.fromCharCode(...Array.from({ length: n }, () => Math.floor(rng() * 256)));
  const out: HeaderField[] = [];
  const count = Math.floor(rng() * 16);
  for (let i = 0; i < count; i++) {
    const r = rng();
    const name = r < 0.7 ? pick(names) : `x-${bytes(1 + Math.floor(rng() * 8)).toLowerCase()}`;
    const value = rng() < 0.5 ? pick(values) : bytes(Math.floor(rng() * 60));
    out.push([name, value]);
  }
  return out;
}

describe("seeded random round trips", () => {
  test.each([1, 2, 3])("seed %d: 300 blocks with table size changes decode to the same fields", (seed) => {
    const rng = seeded(seed);
    const e = new HpackEncoder();
    const d = new HpackDecoder({});
    let prev: HeaderField[] = [];
    for (let i = 0; i < 300; i++) {
      if (rng() < 0.05) e.setMaxTableSize(Math.floor(rng() * 5000));
      if (rng() < 0.02) e.setMaxTableSize(Math.floor(rng() * 300));
      // Repeat the previous list now and then (the encoder's fast path).
      const fields = rng() < 0.2 ? prev : randomFields(rng);
      roundTrip(e, d, fields);
      prev = fields;
    }
  });

  test("random bytes either decode or throw HpackError, never anything else", () => {
    const rng = seeded(42);
    let decoded = 0;
    for (let i = 0; i < 3000; i++) {
      const block = Uint8Array.from({ length: 1 + Math.floor(rng() * 24) }, () => Math.floor(rng() * 256));
      try {
        new HpackDecoder({}).decode(block);
        decoded++;
      } catch (err) {
        if (!(err instanceof HpackError)) throw err;
      }
    }
    expect(decoded).toBeGreaterThan(0);
  });
});

describe("HpackDecoder errors", () => {
  test.each([
    ["index 0", "80", /index 0/],
    ["an index past the static table with an empty dynamic table", "be", /index 62 is past the end/],
    ["an index past the table (two-byte integer)", "ff00", /index 127 is past the end/],
    ["a name index past the table", "7f0001", /index 63 is past the end/],
    ["an integer over 2^31 - 1", "ffffffffff0f", /over 2\^31 - 1/],
    ["too many continuation bytes", "ff808080808000", /more than 5 continuation bytes/],
    ["a truncated integer", "ff80", /truncated integer/],
    ["a truncated string", "400561", /5-octet string with 1 octets left/],
    ["a literal with no name", "40", /truncated field/],
    ["a literal with no value", "400161", /truncated field/],
    ["a size update after a field", "8220", /size update after a field/],
    ["a size update over the advertised maximum", "3fe21f", /4097 is over the advertised maximum of 4096/],
    ["a Huffman string holding EOS", "0084ffffffff0161", /holds EOS/],
    ["Huffman padding longer than 7 bits", "00821fff0161", /padding/],
    ["Huffman padding not all ones", "0081180161", /padding/],
  ])("%s -> HpackError", (_what, block, message) => {
    const d = new HpackDecoder({});
    expect(() => d.decode(hex(block))).toThrow(HpackError);
    expect(() => new HpackDecoder({}).decode(hex(block))).toThrow(message);
  });

  test("the largest integer, 2^31 - 1, is read (and is then past the table)", () => {
    // 0xff, then 2^31 - 1 - 127 in 7-bit groups.
    let v = 2 ** 31 - 1 - 127;
    const bytes = [0xff];
    while (v >= 128) {
      bytes.push((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    bytes.push(v);
    expect(() => new HpackDecoder({}).decode(Uint8Array.from(bytes))).toThrow(/index 2147483647 is past the end/);
  });

  test("size updates at the start of a block (several) are accepted, and Huffman with 7 bits of padding decodes", () => {
    const d = new HpackDecoder({});
    expect(d.decode(hex("203fe11f 00811f 0161"))).toEqual([["a", "a"]]);
    expect(d.table.maxSize).toBe(4096);
  });

  test("HeaderListTooLarge comes after the whole block: the table stays in step and the next block decodes", () => {
    const d = new HpackDecoder({ maxHeaderListSize: 100 });
    const e = new HpackEncoder();
    const big: HeaderField[] = [
      ["x-one", "a".repeat(40)],
      ["x-two", "b".repeat(40)],
      ["x-three", "c".repeat(40)],
    ];
    const size = big.reduce((n, [k, v]) => n + 32 + k.length + v.length, 0);
    let err: unknown;
    try {
      d.decode(e.encode(big));
    } catch (x) {
      err = x;
    }
    expect(err).toBeInstanceOf(HeaderListTooLarge);
    expect((err as HeaderListTooLarge).message).toBe(`Header list too large: ${size} octets, the limit is 100`);
    expect((err as HeaderListTooLarge).size).toBe(size);
    // All three were added, as by the encoder, and the next block refers to them.
    expect(d.table.entries()).toEqual(e.table.entries());
    expect(d.decode(e.encode([big[2]!]))).toEqual([big[2]!]);
  });

  test("a header list exactly at the limit decodes", () => {
    const fields: HeaderField[] = [["x-k", "v".repeat(65)]];
    expect(new HpackDecoder({ maxHeaderListSize: 100 }).decode(new HpackEncoder().encode(fields))).toEqual(fields);
  });
});

describe("Huffman code (RFC 7541 Appendix B)", () => {
  test.each([
    ["'0' (00000, 5 bits)", 0x30, "07"],
    ["'a' (00011, 5 bits)", 0x61, "1f"],
    ["' ' (010100, 6 bits)", 0x20, "53"],
    ["0x00 (1ff8, 13 bits)", 0x00, "ffc7"],
    ["0xff (3ffffee, 26 bits)", 0xff, "fffffbbf"],
    ["0x0a (3ffffffc, 30 bits)", 0x0a, "fffffff3"],
  ])("%s", (_what, byte, code) => {
    const out = new Uint8Array(8);
    const s = String.fromCharCode(byte);
    const n = huffmanEncode(s, out, 0);
    expect(n).toBe(huffmanLength(s));
    expect(toHex(out.subarray(0, n))).toBe(code);
  });

  test("all 256 byte values encode and decode, alone and together at every bit alignment", () => {
    const out = new Uint8Array(2048);
    const back = new Uint8Array(4096);
    for (let b = 0; b < 256; b++) {
      for (let k = 1; k <= 8; k++) {
        const s = String.fromCharCode(b).repeat(k);
        const n = huffmanEncode(s, out, 0);
        expect(n).toBe(huffmanLength(s));
        expect(huffmanDecode(out, 0, n, back)).toBe(k);
        expect(back.subarray(0, k).every((x) => x === b)).toBe(true);
      }
    }
    const all = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
    for (const s of [all, "a" + all, "ab" + all, all.split("").reverse().join("")]) {
      const n = huffmanEncode(s, out, 0);
      const m = huffmanDecode(out, 0, n, back);
      expect(String.fromCharCode(...back.subarray(0, m))).toBe(s);
    }
  });

  test("invalid codings: EOS, long or non-one padding", () => {
    const out = new Uint8Array(16);
    expect(huffmanDecode(hex("ffffffff"), 0, 4, out)).toBe(HUFFMAN_EOS);
    expect(huffmanDecode(hex("1fff"), 0, 2, out)).toBe(HUFFMAN_BAD_PADDING);
    expect(huffmanDecode(hex("18"), 0, 1, out)).toBe(HUFFMAN_BAD_PADDING);
    expect(huffmanDecode(hex("ff"), 0, 1, out)).toBe(HUFFMAN_BAD_PADDING);
    expect(huffmanDecode(hex("1f"), 0, 1, out)).toBe(1);
    expect(huffmanDecode(hex(""), 0, 0, out)).toBe(0);
  });
});
