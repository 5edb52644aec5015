/**
 * Fixture cases: test/fixtures/model/<case>/input.yaml (Services, EndpointSlices, Nodes; parsed with the
 * same schemas as the sources, so malformed ones become errors), optional options.yaml (over the defaults
 * below) and expected.yaml: the whole resulting snapshot (entrypoints, errors, node, healthChecks) as plain data.
 * `UPDATE_FIXTURES=1 bun test test/model/fixtures.test.ts` rewrites expected.yaml from the build: review the diff.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parse, parseAllDocuments, stringify } from "yaml";
import { type KindName, Kinds, parseObject } from "../../src/kube/objects.ts";
import { buildSnapshot, type InvalidObject, type ModelInput } from "../../src/model/build.ts";
import type { EndpointSlice, Node, Service } from "../../src/kube/objects.ts";
import type { ModelOptions } from "../../src/model/types.ts";

const root = fileURLToPath(new URL("../fixtures/model/", import.meta.url));
const defaults: ModelOptions = {
  nodeName: "node-a",
  hostAddresses: ["127.0.0.1", "192.168.1.10"],
  nodePortAddresses: [],
  serviceProxyName: "kubegate",
  allServices: true,
};

function load(dir: string): { input: ModelInput & { invalid: InvalidObject[] }; options: ModelOptions; docs: number } {
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  const nodes: Node[] = [];
  const invalid: InvalidObject[] = [];
  const docs = parseAllDocuments(readFileSync(`${dir}/input.yaml`, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`Invalid YAML in "${dir}/input.yaml": ${doc.errors[0]?.message}`);
    const raw = doc.toJS() as { kind?: string; metadata?: { name?: string; namespace?: string } };
    const kind = raw.kind as KindName;
    if (!(kind in Kinds)) throw new Error(`Unexpected kind "${raw.kind}" in "${dir}/input.yaml"`);
    const parsed = parseObject(kind, raw);
    if (!parsed.ok) {
      const name = raw.metadata?.name ?? "(no name)";
      const key = Kinds[kind].namespaced ? `${raw.metadata?.namespace ?? "default"}/${name}` : name;
      invalid.push({ kind, key, message: parsed.error });
    } else if (kind === "Service") services.push(parsed.value as Service);
    else if (kind === "EndpointSlice") endpointSlices.push(parsed.value as EndpointSlice);
    else nodes.push(parsed.value as Node);
  }
  const optionsFile = `${dir}/options.yaml`;
  const options = { ...defaults, ...(existsSync(optionsFile) ? (parse(readFileSync(optionsFile, "utf8")) as Partial<ModelOptions>) : {}) };
  return { input: { services, endpointSlices, nodes, invalid }, options, docs: docs.length };
}

function isDeepFrozen(value: unknown, seen = new Set<unknown>()): boolean {
  if (value === null || typeof value !== "object" || seen.has(value)) return true;
  seen.add(value);
  return Object.isFrozen(value) && Object.values(value).every((v) => isDeepFrozen(v, seen));
}

const cases = readdirSync(root, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

test("there are fixture cases", () => {
  expect(cases.length).toBeGreaterThanOrEqual(14);
});

describe.each(cases)("%s", (name) => {
  const dir = `${root}${name}`;
  const { input, options } = load(dir);
  test("builds the expected snapshot", () => {
    const snapshot = buildSnapshot(input, options, 1);
    if (process.env.UPDATE_FIXTURES === "1") {
      const { entrypoints, errors, node, healthChecks } = snapshot;
      writeFileSync(`${dir}/expected.yaml`, stringify({ entrypoints, errors, node, healthChecks }));
    }
    const expected = parse(readFileSync(`${dir}/expected.yaml`, "utf8")) as unknown;
    expect({ entrypoints: snapshot.entrypoints, errors: snapshot.errors, node: snapshot.node, healthChecks: snapshot.healthChecks }).toEqual(
      expected as never,
    );
    expect(snapshot.version).toBe(1);
  });

  test("is deterministic whatever the object order, and frozen below the entrypoints array", () => {
    const forward = buildSnapshot(input, options);
    const reversed = buildSnapshot(
      {
        services: [...input.services].reverse(),
        endpointSlices: [...input.endpointSlices].reverse(),
        nodes: [...input.nodes].reverse(),
        invalid: [...input.invalid].reverse(),
      },
      options,
    );
    expect(reversed).toEqual(forward);
    // Everything is frozen except the top-level entrypoints array (see build.ts for why).
    expect(Object.isFrozen(forward)).toBe(true);
    expect(forward.entrypoints.every((e) => isDeepFrozen(e))).toBe(true);
    expect(isDeepFrozen(forward.errors) && isDeepFrozen(forward.node) && isDeepFrozen(forward.healthChecks)).toBe(true);
  });
});
