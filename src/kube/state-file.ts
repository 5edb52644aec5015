/**
 * The state file (`--state-file PATH`): the last objects the model consumed from the live source
 * (Services, EndpointSlices, Nodes), persisted so that a restarted gateway serves at once, without the
 * API server. kube-proxy's kernel rules survive a restart; this is how kubegate's do.
 *
 * - The inputs are persisted, not the snapshot: a restart replays them through the normal path (sink ->
 *   store -> snapshot), so the model is rebuilt exactly as it was, by the code that runs now.
 * - Written atomically (a temp file in the same directory, fsync, rename), at most once per
 *   `minIntervalMs` (default 1 s) after a change, and once more on shutdown. Only a fully synced live
 *   state is written: a half-listed cluster never replaces a good file.
 * - Versioned (`kind: KubegateState`, `version: 1`) and checked with valibot on read: a corrupt file, one
 *   of another version or one written for another node is reported and ignored; an object in it that no
 *   longer validates is reported and skipped. Reading never throws.
 * - {@link PersistentSource} wraps the live source: it replays the file into the sink before the live
 *   source starts (marked stale), and when the live source has listed every kind, deletes what the file
 *   had and the cluster no longer has. Then it is no longer stale.
 */
import { randomUUID } from "node:crypto";
import { open, readdir, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import * as v from "valibot";
import { type Logger, silentLogger } from "../log.ts";
import { type KindName, Kinds, objectKey, parseObject } from "./objects.ts";
import type { CacheEvent, KindObjects, Source, SourceSink, SyncStatus } from "./source.ts";

/** The `kind` field of a state file. */
export const STATE_FILE_KIND = "KubegateState";
/** The format version this build writes and reads. */
export const STATE_FILE_VERSION = 1;

const KINDS = Object.keys(Kinds) as KindName[];
/** After a failed write, the next attempt waits at least this long. */
const WRITE_RETRY_MS = 10_000;

/** A state file could not be used (unreadable, malformed, another version or another node's). */
export class StateFileError extends Error {
  override name = "StateFileError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** The envelope, checked before any object is looked at. */
export const StateFileEnvelope = v.object({
  kind: v.literal(STATE_FILE_KIND),
  version: v.pipe(v.number(), v.integer()),
  savedAt: v.pipe(v.string(), v.isoTimestamp()),
  node: v.string(),
  objects: v.object({
    Service: v.optional(v.array(v.unknown()), []),
    EndpointSlice: v.optional(v.array(v.unknown()), []),
    Node: v.optional(v.array(v.unknown()), []),
  }),
});
export type StateFileEnvelope = v.InferOutput<typeof StateFileEnvelope>;

/** The objects of a state, per kind and key. */
export type StateObjects = { readonly [K in KindName]: ReadonlyMap<string, KindObjects[K]> };

/** A decoded state file. */
export interface SavedState {
  /** When it was written (ms since the epoch). */
  readonly savedAt: number;
  /** The node it was written for. */
  readonly node: string;
  readonly objects: StateObjects;
}

/** {@link decodeState}'s result: the state, and the objects in it that were skipped (invalid now). */
export interface DecodedState {
  readonly state: SavedState;
  /** One message per skipped object: `Service "ns/name": <problem>`. */
  readonly skipped: readonly string[];
}

/** The number of objects in a state. */
export function stateSize(objects: StateObjects): number {
  return objects.Service.size + objects.EndpointSlice.size + objects.Node.size;
}

/**
 * The file text of a state: objects sorted by key, one object per line (diffable, and a torn write is
 * caught by the JSON parse).
 * @example encodeState({ savedAt: Date.now(), node: "node-a", objects: { Service: new Map(), EndpointSlice: new Map(), Node: new Map() } });
 */
export function encodeState(state: SavedState): string {
  const kinds = KINDS.map((kind) => {
    const entries = [...state.objects[kind]].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const items = entries.map(([, o]) => `    ${JSON.stringify(o)}`).join(",\n");
    return `    ${JSON.stringify(kind)}: [${items ? `\n${items}\n    ` : ""}]`;
  });
  return (
    `{\n  "kind": ${JSON.stringify(STATE_FILE_KIND)},\n  "version": ${STATE_FILE_VERSION},\n` +
    `  "savedAt": ${JSON.stringify(new Date(state.savedAt).toISOString())},\n  "node": ${JSON.stringify(state.node)},\n` +
    `  "objects": {\n${kinds.join(",\n")}\n  }\n}\n`
  );
}

/**
 * Decode and validate state file text. `expectedNode` refuses a file written for another node.
 * @throws {StateFileError} when the text is not a state file of this version (for this node).
 */
export function decodeState(text: string, options: { path?: string; expectedNode?: string } = {}): DecodedState {
  const where = options.path ? `State file "${options.path}"` : "State file";
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new StateFileError(`${where} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  // The version first: a newer or older format gets a message about the version, not about its fields.
  const version = typeof raw === "object" && raw !== null ? (raw as { version?: unknown }).version : undefined;
  if (typeof raw === "object" && raw !== null && (raw as { kind?: unknown }).kind === STATE_FILE_KIND && version !== STATE_FILE_VERSION) {
    throw new StateFileError(`${where} has format version ${JSON.stringify(version)}; this kubegate reads version ${STATE_FILE_VERSION}`);
  }
  const parsed = v.safeParse(StateFileEnvelope, raw);
  if (!parsed.success) throw new StateFileError(`${where} is not a kubegate state file: ${v.summarize(parsed.issues)}`);
  const file = parsed.output;
  if (options.expectedNode !== undefined && file.node !== options.expectedNode) {
    throw new StateFileError(`${where} was written for node "${file.node}", not "${options.expectedNode}"`);
  }
  const skipped: string[] = [];
  const objects = { Service: new Map(), EndpointSlice: new Map(), Node: new Map() } as { [K in KindName]: Map<string, KindObjects[K]> };
  for (const kind of KINDS) {
    file.objects[kind].forEach((item, i) => {
      const result = parseObject(kind, item);
      if (!result.ok) {
        const meta = (item as { metadata?: { name?: unknown; namespace?: unknown } } | null)?.metadata;
        const name = typeof meta?.name === "string" ? objectKey({ name: meta.name, namespace: typeof meta.namespace === "string" ? meta.namespace : undefined }) : `#${i}`;
        skipped.push(`${kind} "${name}": ${result.error}`);
        return;
      }
      (objects[kind] as Map<string, unknown>).set(objectKey(result.value.metadata), result.value);
    });
  }
  return { state: { savedAt: Date.parse(file.savedAt), node: file.node, objects }, skipped };
}

/** {@link readStateFile}'s result. */
export type ReadStateResult =
  | { readonly kind: "missing" }
  | { readonly kind: "ok"; readonly state: SavedState; readonly skipped: readonly string[] }
  | { readonly kind: "invalid"; readonly error: StateFileError };

/**
 * Read and decode a state file. Never throws: a missing file is `missing`, anything else wrong `invalid`.
 * @example const r = await readStateFile("/var/lib/kubegate/state.json", { expectedNode: "node-a" });
 */
export async function readStateFile(path: string, options: { expectedNode?: string } = {}): Promise<ReadStateResult> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { kind: "missing" };
    return { kind: "invalid", error: new StateFileError(`Cannot read state file "${path}": ${(err as Error).message}`, { cause: err }) };
  }
  try {
    return { kind: "ok", ...decodeState(text, { path, ...options }) };
  } catch (err) {
    return { kind: "invalid", error: err instanceof StateFileError ? err : new StateFileError(String(err), { cause: err }) };
  }
}

const tempPrefix = (path: string) => `.${basename(path)}.`;
const TEMP_SUFFIX = ".tmp";

/**
 * Replace `path` with `text` atomically: write a temp file beside it, fsync it, rename it over `path`,
 * then fsync the directory (best effort). A crash leaves the old file or the new one, never a torn one.
 * @throws {StateFileError} when the file cannot be written (the old one is left as it was).
 */
export async function writeStateFile(path: string, text: string): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `${tempPrefix(path)}${randomUUID().slice(0, 8)}${TEMP_SUFFIX}`);
  try {
    const handle = await open(temp, "w", 0o600);
    try {
      await handle.writeFile(text, "utf8");
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => {});
    throw new StateFileError(`Cannot write state file "${path}": ${(err as Error).message}`, { cause: err });
  }
  try {
    const d = await open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // Not every platform can fsync a directory; the rename is atomic all the same.
  }
}

/** Remove temp files a crashed writer left beside `path` (best effort). */
async function removeStaleTemps(path: string): Promise<void> {
  const prefix = tempPrefix(path);
  try {
    for (const name of await readdir(dirname(path))) {
      if (name.startsWith(prefix) && name.endsWith(TEMP_SUFFIX)) await rm(join(dirname(path), name), { force: true });
    }
  } catch {
    // The directory may not exist yet; the first write reports that.
  }
}

/** The state file's status, for the admin API and metrics. */
export interface StateStatus {
  readonly file: string;
  /**
   * Serving objects replayed from the file that the live source has not confirmed yet (from start-up
   * until the live source has listed every kind).
   */
  readonly stale: boolean;
  /** When the replayed state was written (ms since the epoch); absent when nothing was replayed. */
  readonly savedAt?: number | undefined;
  /** Objects replayed at start-up. */
  readonly replayed: number;
  /** Replayed objects the live source no longer had (deleted when it synced). */
  readonly removed: number;
  /** Why the file was not used at start-up (a missing file is not a problem). */
  readonly loadError?: string | undefined;
  /** Objects in the file skipped because they no longer validate. */
  readonly skipped: number;
  /** This process writes the file (false while another gateway of the node does: it started beside the incumbent). */
  readonly writer: boolean;
  /** Successful and failed writes so far. */
  readonly writes: number;
  readonly writeErrors: number;
  /** When the file was last written by this process (ms since the epoch). */
  readonly lastWriteAt?: number | undefined;
  readonly lastWriteError?: string | undefined;
}

/** Options of {@link PersistentSource.open}. */
export interface PersistentSourceOptions {
  /** The state file. Its directory must exist and be writable. */
  readonly path: string;
  /** This node's name: written into the file; a file of another node is ignored. */
  readonly nodeName: string;
  readonly log?: Logger | undefined;
  /** At most one write per this interval (default 1000 ms). */
  readonly minIntervalMs?: number | undefined;
  /** Wall clock in ms (default `Date.now`). */
  readonly now?: (() => number) | undefined;
  /**
   * Start with writes held (default false): another process of this node writes the file now (see
   * {@link PersistentSource.pauseWrites}); its temp files are left alone too.
   */
  readonly paused?: boolean | undefined;
}

type Mirror = { [K in KindName]: Map<string, KindObjects[K]> };

/**
 * A {@link Source} that persists what `inner` delivers and replays it at start-up.
 *
 * @example
 * await using source = await PersistentSource.open(new ApiServerSource({ client, nodeName }), { path: "/var/lib/kubegate/state.json", nodeName, log });
 * source.start(store); // replays the file (stale), then lists and watches the cluster
 * source.state().stale; // true until the cluster has been listed
 */
export class PersistentSource implements Source {
  readonly #inner: Source;
  readonly #path: string;
  readonly #node: string;
  readonly #log: Logger;
  readonly #minInterval: number;
  readonly #now: () => number;
  readonly #loaded: DecodedState | undefined;
  readonly #loadError: string | undefined;
  readonly #mirror: Mirror = { Service: new Map(), EndpointSlice: new Map(), Node: new Map() };
  /** Keys replayed from the file that the live source has not delivered yet, per kind. */
  readonly #unconfirmed = new Map<KindName, Set<string>>();
  readonly #liveSynced = new Set<KindName>();
  #sink: SourceSink | undefined;
  #stale = false;
  #removed = 0;
  #dirty = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #writing: Promise<void> | undefined;
  #lastWriteAt: number | undefined;
  /** No write before this time (the interval after the last write, longer after a failure). */
  #nextWriteAt = 0;
  #lastWriteError: string | undefined;
  #writes = 0;
  #writeErrors = 0;
  #closed = false;
  #paused = false;

  private constructor(inner: Source, options: PersistentSourceOptions, loaded: ReadStateResult) {
    this.#inner = inner;
    this.#path = options.path;
    this.#node = options.nodeName;
    this.#log = options.log ?? silentLogger;
    this.#minInterval = options.minIntervalMs ?? 1_000;
    this.#now = options.now ?? Date.now;
    if (loaded.kind === "ok") this.#loaded = loaded;
    if (loaded.kind === "invalid") this.#loadError = loaded.error.message;
    this.#paused = options.paused ?? false;
  }

  /** Read the state file (never throws: a bad file is logged and ignored) and wrap `inner`. */
  static async open(inner: Source, options: PersistentSourceOptions): Promise<PersistentSource> {
    if (!options.paused) await removeStaleTemps(options.path);
    const loaded = await readStateFile(options.path, { expectedNode: options.nodeName });
    const log = options.log ?? silentLogger;
    if (loaded.kind === "invalid") log.warn("State file ignored", { file: options.path, error: loaded.error.message });
    if (loaded.kind === "ok" && loaded.skipped.length > 0) {
      log.warn("State file objects skipped", { file: options.path, skipped: loaded.skipped.length, first: loaded.skipped.slice(0, 5) });
    }
    return new PersistentSource(inner, options, loaded);
  }

  /** Replay the file into `sink` (all kinds synced, stale), then start the live source. Calling it again does nothing. */
  start(sink: SourceSink): void {
    if (this.#sink || this.#closed) return;
    this.#sink = sink;
    const loaded = this.#loaded;
    if (loaded) {
      const { state } = loaded;
      this.#stale = true;
      for (const kind of KINDS) {
        const keys = new Set<string>();
        for (const [key, object] of state.objects[kind]) {
          keys.add(key);
          this.#deliver({ type: "upsert", kind, key, object } as CacheEvent);
        }
        this.#unconfirmed.set(kind, keys);
      }
      for (const kind of KINDS) sink.synced(kind);
      this.#log.info("State file replayed: serving it (stale) until the live source has synced", {
        file: this.#path,
        savedAt: new Date(state.savedAt).toISOString(),
        ageSeconds: Math.max(0, Math.round((this.#now() - state.savedAt) / 1000)),
        services: state.objects.Service.size,
        endpointSlices: state.objects.EndpointSlice.size,
        nodes: state.objects.Node.size,
      });
    }
    this.#inner.start({
      apply: (event) => {
        this.#unconfirmed.get(event.kind)?.delete(event.key);
        this.#deliver(event);
      },
      synced: (kind) => this.#synced(kind),
    });
  }

  /** The live source's sync state. */
  status(): readonly SyncStatus[] {
    return this.#inner.status();
  }

  /** The state file's status. */
  state(): StateStatus {
    return {
      file: this.#path,
      stale: this.#stale,
      savedAt: this.#loaded?.state.savedAt,
      replayed: this.#loaded ? stateSize(this.#loaded.state.objects) : 0,
      removed: this.#removed,
      loadError: this.#loadError,
      skipped: this.#loaded?.skipped.length ?? 0,
      writer: !this.#paused,
      writes: this.#writes,
      writeErrors: this.#writeErrors,
      lastWriteAt: this.#lastWriteAt,
      lastWriteError: this.#lastWriteError,
    };
  }

  /**
   * Write the current state now (after a write in flight), when the live source has synced every kind;
   * else leave the file as it is. Resolves when written; a failure is logged and counted, not thrown.
   */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.#writable()) return;
    await this.#write();
  }

  /**
   * Hold writes while another process writes this file (a gateway starting beside the node's incumbent, see
   * `control-plane/succession.ts`): the file is read and the state kept, but not written until {@link resumeWrites}.
   */
  pauseWrites(): void {
    this.#paused = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** This process writes the file from now on: the state is written soon (at once when it is behind). */
  resumeWrites(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#dirty = true;
    this.#schedule();
  }

  /** Stop the live source, then write the state a last time. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#inner[Symbol.asyncDispose]();
    if (this.#closed) return;
    this.#closed = true;
    await this.flush();
  }

  #deliver(event: CacheEvent): void {
    const map = this.#mirror[event.kind] as Map<string, unknown>;
    if (event.type === "upsert") map.set(event.key, event.object);
    else map.delete(event.key);
    this.#sink!.apply(event);
    this.#dirty = true;
    this.#schedule();
  }

  #synced(kind: KindName): void {
    const unconfirmed = this.#unconfirmed.get(kind);
    if (unconfirmed) {
      // The first live list of this kind: what the file had and the cluster has not is gone.
      this.#unconfirmed.delete(kind);
      for (const key of unconfirmed) {
        this.#removed++;
        this.#deliver({ type: "delete", kind, key });
      }
    }
    this.#liveSynced.add(kind);
    this.#sink!.synced(kind);
    if (this.#stale && KINDS.every((k) => this.#liveSynced.has(k))) {
      this.#stale = false;
      this.#log.info("Live source synced: the state file's objects are replaced", { file: this.#path, removed: this.#removed });
    }
    this.#schedule();
  }

  #writable(): boolean {
    return !this.#paused && KINDS.every((k) => this.#liveSynced.has(k));
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#writing || this.#closed || !this.#dirty || !this.#writable()) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#write();
    }, Math.max(0, this.#nextWriteAt - this.#now()));
  }

  /** Write the mirror now; never rejects (a failure is logged, counted and retried later). */
  #write(): Promise<void> {
    this.#dirty = false;
    const savedAt = this.#now();
    const text = encodeState({ savedAt, node: this.#node, objects: this.#mirror });
    const writing = writeStateFile(this.#path, text).then(
      () => {
        this.#writes++;
        this.#lastWriteAt = savedAt;
        this.#nextWriteAt = savedAt + this.#minInterval;
        if (this.#lastWriteError) this.#log.info("State file written again", { file: this.#path });
        this.#lastWriteError = undefined;
      },
      (err: Error) => {
        this.#writeErrors++;
        // Try again later even if nothing changes meanwhile: the file on disk is behind.
        this.#dirty = true;
        this.#nextWriteAt = savedAt + Math.max(this.#minInterval, WRITE_RETRY_MS);
        if (this.#lastWriteError !== err.message) this.#log.warn("State file not written", { file: this.#path, error: err.message });
        this.#lastWriteError = err.message;
      },
    );
    this.#writing = writing;
    return writing.finally(() => {
      if (this.#writing === writing) this.#writing = undefined;
      this.#schedule();
    });
  }
}
