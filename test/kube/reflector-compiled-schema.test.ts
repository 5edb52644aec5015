/**
 * The reflector's compiled schemas against valibot itself: same verdict and, on success, the same
 * output (keys, order, defaults) for every object of the model fixtures and for thousands of random
 * mutations of them (seeded, so a failure reproduces).
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import { parseAllDocuments } from "yaml";
import { compileSchema } from "../../src/kube/compiled-schema.ts";
import { Kinds, type KindName } from "../../src/kube/objects.ts";
import { seeded } from "../support/random.ts";

const fixtures = join(import.meta.dir, "..", "fixtures", "model");

let loaded: { kind: KindName; raw: Record<string, unknown> }[] | undefined;
function fixtureObjects(): { kind: KindName; raw: Record<string, unknown> }[] {
  if (loaded) return loaded;
  const out: { kind: KindName; raw: Record<string, unknown> }[] = [];
  for (const dir of readdirSync(fixtures)) {
    let text: string;
    try {
      text = readFileSync(join(fixtures, dir, "input.yaml"), "utf8");
    } catch {
      continue;
    }
    for (const doc of parseAllDocuments(text)) {
      const raw = doc.toJS() as Record<string, unknown> | null;
      const kind = raw?.["kind"];
      if (raw && (kind === "Service" || kind === "EndpointSlice" || kind === "Node")) out.push({ kind, raw });
    }
  }
  return (loaded = out);
}

/** JSON with `undefined` kept visible, so that a key present as undefined differs from an absent one. */
const shape = (x: unknown) => JSON.stringify(x, (_k, val) => (val === undefined ? "<undefined>" : val));

const compiled = new Map<KindName, (raw: unknown) => unknown>();
function compare(kind: KindName, raw: unknown): "accepted" | "rejected" {
  let fast = compiled.get(kind);
  if (fast === undefined) compiled.set(kind, (fast = compileSchema(Kinds[kind].schema as v.GenericSchema)!));
  const got = fast(raw);
  const want = v.safeParse(Kinds[kind].schema as v.GenericSchema, raw);
  expect(got !== undefined).toBe(want.success);
  if (!want.success) return "rejected";
  expect(shape(got)).toBe(shape(want.output));
  expect(got).toStrictEqual(want.output);
  return "accepted";
}

const oddValues: unknown[] = [
  null, undefined, 0, -1, 1.5, 65535, 65536, 70000, Number.NaN, "", "x", "TCP", "UDP", "IPv4", "FQDN", "80",
  true, false, [], ["a"], [1], {}, { name: "a" }, { ready: null }, "v1", "Service", "discovery.k8s.io/v1",
];

/** Every path (array of keys) to a value inside `x`. */
function paths(x: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  if (x && typeof x === "object") {
    for (const [k, val] of Object.entries(x)) {
      const p = [...prefix, Array.isArray(x) ? Number(k) : k];
      out.push(p);
      paths(val, p, out);
    }
  }
  return out;
}

function mutate(raw: unknown, random: () => number): unknown {
  const copy = structuredClone(raw) as Record<string, unknown>;
  const all = paths(copy);
  if (all.length === 0) return copy;
  const path = all[Math.floor(random() * all.length)]!;
  let parent: Record<string | number, unknown> = copy;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  const op = random();
  if (op < 0.25) delete parent[last];
  else if (op < 0.35) parent["__proto__"] = { injected: true }; // an own "__proto__" key, as JSON.parse makes
  else if (op < 0.45) parent[`extra${Math.floor(random() * 3)}`] = "unknown field";
  else parent[last] = oddValues[Math.floor(random() * oddValues.length)];
  return copy;
}

describe("compiled schemas", () => {
  test("every watched kind's schema compiles (the fast path is in use)", () => {
    for (const kind of Object.keys(Kinds) as KindName[]) expect(compileSchema(Kinds[kind].schema as v.GenericSchema)).toBeDefined();
  });

  test("the model fixtures parse exactly as with valibot", () => {
    const objects = fixtureObjects();
    expect(objects.length).toBeGreaterThan(100);
    const verdicts = objects.map(({ kind, raw }) => compare(kind, raw));
    // The fixtures hold malformed objects too: both verdicts are exercised.
    expect(verdicts).toContain("accepted");
    expect(verdicts).toContain("rejected");
  });

  test("random mutations get valibot's verdict and output", () => {
    const objects = fixtureObjects();
    const random = seeded(20240611);
    const counts = { accepted: 0, rejected: 0 };
    for (let i = 0; i < 6000; i++) {
      const { kind, raw } = objects[Math.floor(random() * objects.length)]!;
      let x: unknown = raw;
      const depth = 1 + Math.floor(random() * 3);
      for (let d = 0; d < depth; d++) x = mutate(x, random);
      counts[compare(kind, x)]++;
    }
    expect(counts.accepted).toBeGreaterThan(500);
    expect(counts.rejected).toBeGreaterThan(500);
  });

  test("a schema with a feature it does not know is not compiled", () => {
    expect(compileSchema(v.object({ at: v.date() }))).toBeUndefined();
    expect(compileSchema(v.object({ n: v.pipe(v.string(), v.transform((s) => s.length)) }))).toBeUndefined();
    expect(compileSchema(v.object({ n: v.optional(v.string(), () => "x") }))).toBeUndefined();
  });
});
