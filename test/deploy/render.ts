/**
 * A minimal kustomize for the subset deploy/ uses, so the tests and the RBAC-enforcing test API server do not
 * need `kubectl` (test/deploy/render.test.ts checks it agrees with `kubectl kustomize` where that exists):
 *
 * - `resources`: YAML files (multi-document) and directories holding a `kustomization.yaml`, in order;
 * - `patches` with a `target` and an inline JSON 6902 `patch` (add, remove, replace; `-` appends).
 *
 * Anything else (strategic merge patches, generators, transformers) is refused with an error naming it,
 * rather than rendered differently from kustomize.
 */
import { readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parse as parseYaml, parseAllDocuments } from "yaml";

/** A rendered Kubernetes object. */
export type Manifest = Record<string, unknown> & {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly [k: string]: unknown };
};

/** The kustomization or a manifest cannot be rendered. */
export class KustomizeError extends Error {
  override name = "KustomizeError";
}

interface Target {
  readonly group?: string;
  readonly version?: string;
  readonly kind?: string;
  readonly name?: string;
  readonly namespace?: string;
}

type Op = { op: "add" | "replace"; path: string; value: unknown } | { op: "remove"; path: string };

const KNOWN_FIELDS = new Set(["apiVersion", "kind", "resources", "patches"]);

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** The repository's root (two levels above this file). */
export const repoRoot = resolve(import.meta.dir, "..", "..");

/**
 * Render the kustomization in `dir` (absolute, or relative to the repository root).
 * @example const objects = await renderKustomization("deploy/overlays/lb-controller");
 */
export async function renderKustomization(dir: string): Promise<Manifest[]> {
  const root = resolve(repoRoot, dir);
  const file = join(root, "kustomization.yaml");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new KustomizeError(`Cannot read "${file}": ${(err as Error).message}`, { cause: err });
  }
  const k: unknown = parseYaml(text);
  if (!isObj(k)) throw new KustomizeError(`"${file}" is not a mapping`);
  for (const key of Object.keys(k)) {
    if (!KNOWN_FIELDS.has(key)) throw new KustomizeError(`Unsupported kustomization field "${key}" in "${file}": extend test/deploy/render.ts or avoid it`);
  }
  if (k["kind"] !== undefined && k["kind"] !== "Kustomization") throw new KustomizeError(`Unsupported kind "${String(k["kind"])}" in "${file}"`);
  const out: Manifest[] = [];
  for (const entry of asList(k["resources"], `${file}: resources`)) {
    if (typeof entry !== "string") throw new KustomizeError(`${file}: resources must be paths, got ${JSON.stringify(entry)}`);
    const p = resolve(root, entry);
    const isDir = (await stat(p).catch(() => undefined))?.isDirectory();
    if (isDir === undefined) throw new KustomizeError(`${file}: resource "${entry}" does not exist`);
    out.push(...(isDir ? await renderKustomization(p) : await readManifests(p)));
  }
  const seen = new Set<string>();
  for (const m of out) {
    const id = idOf(m);
    if (seen.has(id)) throw new KustomizeError(`${file}: ${id} is defined twice`);
    seen.add(id);
  }
  for (const [i, patch] of asList(k["patches"], `${file}: patches`).entries()) {
    const where = `${file}: patches[${i}]`;
    if (!isObj(patch) || !isObj(patch["target"]) || typeof patch["patch"] !== "string") {
      throw new KustomizeError(`${where}: only inline JSON 6902 patches with a target are supported`);
    }
    const ops: unknown = parseYaml(patch["patch"]);
    if (!Array.isArray(ops)) throw new KustomizeError(`${where}: a strategic merge patch is not supported; write JSON 6902 operations`);
    const target = patch["target"] as Target;
    const hits = out.filter((m) => matches(m, target));
    if (hits.length === 0) throw new KustomizeError(`${where}: no resource matches target ${JSON.stringify(target)}`);
    for (const m of hits) applyOps(m, ops as Op[], where);
  }
  return out;
}

/** Every document of a YAML file (empty documents skipped). */
async function readManifests(path: string): Promise<Manifest[]> {
  const docs = parseAllDocuments(await readFile(path, "utf8"));
  const out: Manifest[] = [];
  for (const [i, doc] of docs.entries()) {
    if (doc.errors.length > 0) throw new KustomizeError(`"${path}" document ${i + 1}: ${doc.errors[0]!.message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (!isObj(value) || typeof value["apiVersion"] !== "string" || typeof value["kind"] !== "string" || !isObj(value["metadata"]) || typeof value["metadata"]["name"] !== "string") {
      throw new KustomizeError(`"${path}" document ${i + 1} is not a Kubernetes object (apiVersion, kind, metadata.name)`);
    }
    out.push(value as Manifest);
  }
  return out;
}

function asList(v: unknown, where: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new KustomizeError(`${where} must be a list`);
  return v;
}

/** `group/version/kind namespace/name`, like kustomize's resource id. */
export function idOf(m: Manifest): string {
  return `${m.apiVersion}/${m.kind} ${m.metadata.namespace ?? ""}/${m.metadata.name}`;
}

function matches(m: Manifest, t: Target): boolean {
  const [group, version] = m.apiVersion.includes("/") ? m.apiVersion.split("/") : ["", m.apiVersion];
  return (
    (t.group === undefined || t.group === group) &&
    (t.version === undefined || t.version === version) &&
    (t.kind === undefined || t.kind === m.kind) &&
    (t.name === undefined || t.name === m.metadata.name) &&
    (t.namespace === undefined || t.namespace === m.metadata.namespace)
  );
}

/** Apply JSON 6902 operations in place. */
function applyOps(doc: Record<string, unknown>, ops: Op[], where: string): void {
  for (const op of ops) {
    if (!isObj(op) || typeof op.path !== "string") throw new KustomizeError(`${where}: bad operation ${JSON.stringify(op)}`);
    const keys = op.path.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
    const last = keys.pop();
    if (last === undefined) throw new KustomizeError(`${where}: cannot ${op.op} the whole document`);
    let parent: unknown = doc;
    for (const key of keys) {
      parent = Array.isArray(parent) ? parent[Number(key)] : isObj(parent) ? parent[key] : undefined;
      if (parent === undefined) throw new KustomizeError(`${where}: path "${op.path}" does not exist`);
    }
    const has = Array.isArray(parent) ? last === "-" || Number(last) < parent.length : isObj(parent) && last in parent;
    switch (op.op) {
      case "add":
        if (Array.isArray(parent)) parent.splice(last === "-" ? parent.length : Number(last), 0, structuredClone(op.value));
        else if (isObj(parent)) parent[last] = structuredClone(op.value);
        else throw new KustomizeError(`${where}: path "${op.path}" does not exist`);
        break;
      case "replace":
      case "remove":
        if (!has) throw new KustomizeError(`${where}: cannot ${op.op} "${op.path}": it does not exist`);
        if (Array.isArray(parent)) {
          if (op.op === "remove") parent.splice(Number(last), 1);
          else parent[Number(last)] = structuredClone(op.value);
        } else if (isObj(parent)) {
          if (op.op === "remove") delete parent[last];
          else parent[last] = structuredClone(op.value);
        }
        break;
      default:
        throw new KustomizeError(`${where}: unsupported operation "${(op as { op: unknown }).op}"`);
    }
  }
}

/** The one object of `kind` (and `name`), or an error naming what is missing. */
export function only(objects: readonly Manifest[], kind: string, name?: string): Manifest {
  const hits = objects.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  if (hits.length !== 1) throw new KustomizeError(`Expected one ${kind}${name ? ` "${name}"` : ""}, found ${hits.length}`);
  return hits[0]!;
}

