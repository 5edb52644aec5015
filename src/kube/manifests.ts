/**
 * The manifest source (`--manifests PATH`): Service, EndpointSlice and Node objects from a YAML or
 * JSON file, or a directory of them, served without a cluster and watched for changes. Used by the
 * demo, by standalone users and by tests. Each load is diffed against the last, so the model sees
 * the same upsert/delete events a cluster would produce.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { rt } from "../runtime/index.ts";
import type { Watcher } from "../runtime/types.ts";
import { type KindName, Kinds, objectKey, parseObject } from "./objects.ts";
import type { CacheEvent, Source, SourceSink, SyncStatus } from "./source.ts";

const kindNames = Object.keys(Kinds) as KindName[];
const isKind = (k: unknown): k is KindName => typeof k === "string" && (kindNames as string[]).includes(k);

/** One object found in the files: either parsed, or invalid with a message. */
type Loaded = { kind: KindName; key: string; event: CacheEvent };

/** Files under `path` that hold manifests, sorted (a directory is read recursively). */
export async function manifestFiles(path: string): Promise<string[]> {
  const info = await stat(path);
  if (!info.isDirectory()) return [path];
  const out: string[] = [];
  for (const entry of (await readdir(path, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const full = join(path, entry.name);
    if (entry.isDirectory()) out.push(...(await manifestFiles(full)));
    else if (/\.(ya?ml|json)$/i.test(entry.name)) out.push(full);
  }
  return out;
}

/**
 * Parse manifest text (multi-document YAML, JSON, or `kind: List`) into cache events. Objects of
 * other kinds are ignored; a malformed object becomes an `invalid` event; a YAML syntax error
 * becomes one error for the file.
 */
export function parseManifests(text: string, file: string): { objects: Loaded[]; errors: string[] } {
  const objects: Loaded[] = [];
  const errors: string[] = [];
  const visit = (raw: unknown, where: string): void => {
    if (raw === null || raw === undefined) return;
    if (typeof raw !== "object" || Array.isArray(raw)) {
      errors.push(`${where}: expected a Kubernetes object, got ${Array.isArray(raw) ? "an array" : typeof raw}`);
      return;
    }
    const obj = raw as { kind?: unknown; items?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
    if (obj.kind === "List" || (typeof obj.kind === "string" && obj.kind.endsWith("List") && Array.isArray(obj.items))) {
      (obj.items as unknown[]).forEach((item, i) => visit(item, `${where} item ${i}`));
      return;
    }
    if (!isKind(obj.kind)) return;
    const kind = obj.kind;
    const name = typeof obj.metadata?.name === "string" ? obj.metadata.name : "";
    const ns = Kinds[kind].namespaced
      ? typeof obj.metadata?.namespace === "string" ? obj.metadata.namespace : "default"
      : undefined;
    const key = objectKey({ name: name || `<unnamed in ${where}>`, namespace: ns });
    const parsed = parseObject(kind, raw);
    objects.push({
      kind,
      key,
      event: parsed.ok
        ? { type: "upsert", kind, key, object: parsed.value } as CacheEvent
        : { type: "invalid", kind, key, message: `${where}: ${parsed.error}` },
    });
  };
  const trimmed = text.trimStart();
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      const json: unknown = JSON.parse(text);
      (Array.isArray(json) ? json : [json]).forEach((o, i) => visit(o, `${file} object ${i}`));
    } catch (err) {
      errors.push(`${file}: invalid JSON: ${(err as Error).message}`);
    }
    return { objects, errors };
  }
  parseAllDocuments(text).forEach((doc, i) => {
    if (doc.errors.length) {
      errors.push(`${file} document ${i}: ${doc.errors[0]!.message}`);
      return;
    }
    visit(doc.toJS(), `${file} document ${i}`);
  });
  return { objects, errors };
}

/**
 * Read and parse every manifest file under `path` once: the objects by `kind|key` (a later definition
 * wins, and is reported) and the problems found. Throws when `path` itself cannot be read.
 */
export async function loadManifests(path: string): Promise<{ objects: Map<string, CacheEvent>; errors: string[] }> {
  const objects = new Map<string, CacheEvent>();
  const errors: string[] = [];
  for (const file of await manifestFiles(path)) {
    let text: string;
    try {
      text = await rt.readTextFile(file);
    } catch (err) {
      errors.push(`Cannot read "${file}": ${(err as Error).message}`);
      continue;
    }
    const parsed = parseManifests(text, file);
    errors.push(...parsed.errors);
    for (const o of parsed.objects) {
      const id = `${o.kind}|${o.key}`;
      if (objects.has(id)) errors.push(`${o.kind} "${o.key}" is defined more than once; the last definition wins`);
      objects.set(id, o.event);
    }
  }
  return { objects, errors };
}

export interface ManifestSourceOptions {
  /** Debounce for bursts of file events, ms. */
  readonly debounceMs?: number;
  /** Report load problems (YAML errors, unreadable files). */
  readonly onError?: (message: string) => void;
}

/** Serves objects from manifest files; reloads and diffs on change. */
export class ManifestSource implements Source {
  #sink: SourceSink | undefined;
  #current = new Map<string, CacheEvent>(); // `${kind}|${key}` -> last event delivered
  #watcher: Watcher | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #loading: Promise<void> = Promise.resolve();
  #lastError: string | undefined;
  #lastErrorAt: string | undefined;
  #loads = 0;
  readonly #debounceMs: number;

  constructor(readonly path: string, private readonly options: ManifestSourceOptions = {}) {
    this.#debounceMs = options.debounceMs ?? 50;
  }

  start(sink: SourceSink): void {
    this.#sink = sink;
    this.#loading = this.reload();
    try {
      this.#watcher = rt.watchPath(this.path, () => this.#schedule());
    } catch (err) {
      this.#fail(`Cannot watch "${this.path}": ${(err as Error).message}`);
    }
  }

  /** Resolves when the load in progress (if any) has been delivered. */
  settled(): Promise<void> {
    return this.#loading;
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#loading = this.#loading.then(() => this.reload());
    }, this.#debounceMs);
  }

  #fail(message: string): void {
    this.#lastError = message;
    this.#lastErrorAt = new Date().toISOString();
    this.options.onError?.(message);
  }

  /** Read every file again and deliver the difference to the sink. */
  async reload(): Promise<void> {
    const sink = this.#sink;
    if (!sink) return;
    let next: Map<string, CacheEvent>;
    let errors: string[];
    try {
      ({ objects: next, errors } = await loadManifests(this.path));
    } catch (err) {
      // The path itself is unreadable: keep serving what we had, and say so.
      this.#fail(`Cannot load manifests from "${this.path}": ${(err as Error).message}`);
      for (const kind of kindNames) sink.synced(kind);
      return;
    }
    if (errors.length) this.#fail(errors.join("\n"));
    else this.#lastError = undefined;
    for (const [id, event] of this.#current) {
      if (!next.has(id)) sink.apply({ type: "delete", kind: event.kind, key: event.key });
    }
    for (const [id, event] of next) {
      const prev = this.#current.get(id);
      if (!prev || JSON.stringify(prev) !== JSON.stringify(event)) sink.apply(event);
    }
    this.#current = next;
    this.#loads++;
    for (const kind of kindNames) sink.synced(kind);
  }

  status(): readonly SyncStatus[] {
    return kindNames.map((kind) => ({
      kind,
      synced: this.#loads > 0,
      phase: "static" as const,
      lastError: this.#lastError,
      lastErrorAt: this.#lastErrorAt,
      lists: this.#loads,
      watches: 0,
      objects: [...this.#current.values()].filter((e) => e.kind === kind).length,
    }));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    clearTimeout(this.#timer);
    this.#watcher?.[Symbol.dispose]();
    this.#sink = undefined;
    await this.#loading;
  }
}
