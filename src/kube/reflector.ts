/**
 * A reflector keeps one kind's objects in sync with the API server: LIST (paginated), then WATCH
 * from the list's resourceVersion, forever.
 *
 * - A watch that ends normally is restarted from the last resourceVersion (bookmarks advance it).
 * - A watch silent for longer than `inactivityTimeoutMs` is aborted and restarted (a half-dead
 *   connection never ends on its own).
 * - 410 Expired (HTTP status or an ERROR event): list again and diff against the cache, so objects
 *   deleted meanwhile are delivered as deletes.
 * - No answer at all (connection refused, timed out or broken, or a silent watch): wait on the client's shared
 *   probe (`KubeClient.untilReachable`, ~1 request/s per node), then resume from the last resourceVersion after a
 *   random 0-`resumeSpreadMs` (500 ms), so thousands of nodes do not come back in the same instant.
 * - Any other failure (the server answered: 5xx, 403, 429...): retry with jittered exponential backoff, honouring
 *   `Retry-After`. Every error is kept in `status()` and logged (rate-limited). It never stops until `stop()`.
 *
 * Each object is validated against its schema in objects.ts (compiled, see compiled-schema.ts; valibot
 * itself words the error); a malformed one becomes an `invalid` event and the rest are unaffected. A
 * relist does not validate again the objects whose resourceVersion it already holds.
 */
import { Backoff, maxRetryAfterMs, sleep, type BackoffOptions, type Now, type Random } from "./backoff.ts";
import { KubeApiError, type KubeClient, type KubeObject, type WatchEvent } from "./client.ts";
import { compileSchema } from "./compiled-schema.ts";
import { Kinds, objectKey, parseObject, type KindName } from "./objects.ts";
import type { CacheEvent, SourceSink, SyncStatus } from "./source.ts";
import { createLogger, rateLimited, type LogFields, type Logger } from "../log.ts";

/** Timing knobs, shared by all reflectors of a source. */
export interface ReflectorTuning {
  /** Objects per list page (default 500). */
  readonly pageSize?: number | undefined;
  /** Watch `timeoutSeconds` is drawn from this range (default [300, 600]). */
  readonly watchTimeoutSeconds?: readonly [min: number, max: number] | undefined;
  /** Restart a watch that received nothing (not even a bookmark) for this long (default 90 000 ms). */
  readonly inactivityTimeoutMs?: number | undefined;
  /** Retry delays after errors the server answered (default 250 ms doubling to 30 s, reset after 60 s healthy). */
  readonly backoff?: BackoffOptions | undefined;
  /** Once an unreachable server answers again, resume after a random delay up to this (default 500 ms). */
  readonly resumeSpreadMs?: number | undefined;
  /** The same problem is logged at most once per this interval (default 30 000 ms). */
  readonly logIntervalMs?: number | undefined;
  /** Where problems are logged (default: JSON lines on stderr). */
  readonly log?: Logger | undefined;
  readonly random?: Random | undefined;
  readonly now?: Now | undefined;
}

export interface ReflectorOptions<K extends KindName> extends ReflectorTuning {
  /**
   * What the reflector uses of the client: list and watch, and `untilReachable` when it has it (a `KubeClient`
   * does); without it (in-memory fakes) an unreachable server is retried on the backoff like any other error.
   */
  readonly client: Pick<KubeClient, "list" | "watch"> & Partial<Pick<KubeClient, "untilReachable">>;
  readonly kind: K;
  readonly sink: SourceSink;
  readonly namespace?: string | undefined;
  readonly labelSelector?: string | undefined;
  readonly fieldSelector?: string | undefined;
}

/** The watch went silent for longer than the inactivity bound. */
export class WatchStalledError extends Error {
  override name = "WatchStalledError";
}

/** Per kind: the schema compiled for speed (undefined when it cannot be compiled: valibot alone then). */
const compiled: { readonly [K in KindName]: ((raw: unknown) => unknown) | undefined } = {
  Service: compileSchema(Kinds.Service.schema),
  EndpointSlice: compileSchema(Kinds.EndpointSlice.schema),
  Node: compileSchema(Kinds.Node.schema),
};

interface Entry {
  readonly rv: string | undefined;
  readonly valid: boolean;
}

/**
 * List-and-watch one kind into a {@link SourceSink}.
 *
 * @example
 * await using r = new Reflector({ client, kind: "Service", sink });
 * r.start();
 * r.status(); // { kind: "Service", phase: "watching", synced: true, ... }
 */
export class Reflector<K extends KindName = KindName> implements AsyncDisposable {
  readonly kind: K;
  readonly #o: ReflectorOptions<K>;
  readonly #plural: string;
  readonly #backoff: Backoff;
  readonly #random: Random;
  readonly #now: Now;
  readonly #warn: (key: string, msg: string, fields?: LogFields) => void;
  readonly #info: (key: string, msg: string, fields?: LogFields) => void;
  readonly #stop = new AbortController();
  #cache = new Map<string, Entry>();
  #rv: string | undefined;
  #running: Promise<void> | undefined;
  #phase: SyncStatus["phase"] = "listing";
  #synced = false;
  #lists = 0;
  #watches = 0;
  #lastError: string | undefined;
  #lastErrorAt: string | undefined;
  /** Whether the last watch delivered any event (then a following 410 is not "in a row"). */
  #watchDelivered = false;

  constructor(options: ReflectorOptions<K>) {
    this.#o = options;
    this.kind = options.kind;
    this.#plural = Kinds[options.kind].plural;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? (() => performance.now());
    this.#backoff = new Backoff({ random: this.#random, now: this.#now, ...options.backoff });
    const log = options.log ?? createLogger();
    const interval = options.logIntervalMs ?? 30_000;
    this.#warn = rateLimited((m, f) => log.warn(m, f), interval, this.#now);
    this.#info = rateLimited((m, f) => log.info(m, f), interval, this.#now);
  }

  /** Begin listing and watching (idempotent). */
  start(): void {
    if (this.#running || this.#stop.signal.aborted) return;
    this.#running = this.#run();
  }

  /** Abort the current request and stop for good. */
  async stop(): Promise<void> {
    this.#stop.abort(new Error(`Reflector for ${this.#plural} stopped`));
    await this.#running;
    this.#phase = "stopped";
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Current sync state. */
  status(): SyncStatus {
    let objects = 0;
    for (const e of this.#cache.values()) if (e.valid) objects++;
    return {
      kind: this.kind,
      synced: this.#synced,
      phase: this.#stop.signal.aborted ? "stopped" : this.#phase,
      resourceVersion: this.#rv,
      lastError: this.#lastError,
      lastErrorAt: this.#lastErrorAt,
      lists: this.#lists,
      watches: this.#watches,
      objects,
    };
  }

  /** Keys of the cached objects (valid or not) with their resourceVersions. */
  entries(): Map<string, { resourceVersion: string | undefined; valid: boolean }> {
    return new Map([...this.#cache].map(([k, e]) => [k, { resourceVersion: e.rv, valid: e.valid }]));
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    let needList = true;
    let expiredInARow = 0;
    while (!signal.aborted) {
      try {
        if (needList) {
          this.#phase = "listing";
          await this.#list();
          needList = false;
        }
        this.#phase = "watching";
        await this.#watch();
        expiredInARow = 0;
      } catch (err) {
        if (signal.aborted) break;
        if (this.#watchDelivered) expiredInARow = 0;
        if (err instanceof KubeApiError && err.expired) {
          // Routine: the resourceVersion fell out of the server's window. Relist now; back off only if it repeats.
          needList = true;
          this.#record(err, "info");
          if (++expiredInARow < 2) continue;
        } else {
          this.#record(err, "warn");
        }
        this.#phase = "backoff";
        const { client } = this.#o;
        const unreachable = (err instanceof KubeApiError && err.unreachable) || err instanceof WatchStalledError;
        if (unreachable && client.untilReachable) {
          // No answer: the shared probe paces the node, and the spread keeps nodes from all arriving at once.
          await client.untilReachable(signal);
          await sleep(this.#random() * (this.#o.resumeSpreadMs ?? 500), signal);
          continue;
        }
        const retryAfterMs = err instanceof KubeApiError && err.retryAfter ? err.retryAfter * 1000 : 0;
        await sleep(Math.min(Math.max(this.#backoff.next(), retryAfterMs), maxRetryAfterMs), signal);
      }
    }
    this.#phase = "stopped";
  }

  /** List every page, then diff against the cache (emitting deletes for what is gone). */
  async #list(): Promise<void> {
    const { client, kind } = this.#o;
    const signal = this.#stop.signal;
    const fresh = new Map<string, Entry>();
    const events: CacheEvent<K>[] = [];
    let cont: string | undefined;
    let restarts = 0;
    let rv = "";
    for (;;) {
      let page;
      try {
        page = await client.list(kind, {
          limit: this.#o.pageSize ?? 500,
          continue: cont,
          namespace: this.#o.namespace,
          labelSelector: this.#o.labelSelector,
          fieldSelector: this.#o.fieldSelector,
          signal,
        });
      } catch (err) {
        // The continue token expired mid-list: start over from the first page.
        if (cont !== undefined && err instanceof KubeApiError && err.expired && restarts++ < 3) {
          this.#info("list-restart", "List restarted from the first page: its continue token expired", { kind });
          cont = undefined;
          fresh.clear();
          events.length = 0;
          continue;
        }
        throw err;
      }
      const { group, version } = Kinds[kind];
      for (const raw of page.items) {
        // A relist: what the cache holds at this resourceVersion needs no second validation (nor an event).
        const itemRv = rvOf(raw);
        const key = itemRv === undefined ? undefined : rawKey(kind, raw);
        const old = key === undefined ? undefined : this.#cache.get(key);
        if (old !== undefined && old.rv === itemRv && !fresh.has(key as string)) {
          fresh.set(key as string, old);
          continue;
        }
        // List items come without apiVersion/kind (watch events carry them): make both paths deliver the same.
        raw["apiVersion"] ??= group ? `${group}/${version}` : version;
        raw["kind"] ??= kind;
        const ev = this.#parse(raw);
        if (!ev) continue;
        fresh.set(ev.key, { rv: itemRv, valid: ev.type === "upsert" });
        events.push(ev);
      }
      rv = page.resourceVersion;
      if (!page.continue) break;
      cont = page.continue;
    }
    for (const ev of events) {
      const old = this.#cache.get(ev.key);
      const now = fresh.get(ev.key);
      if (old && now && old.rv !== undefined && old.rv === now.rv && old.valid === now.valid) continue;
      this.#emit(ev);
    }
    for (const key of this.#cache.keys()) {
      if (!fresh.has(key)) this.#emit({ type: "delete", kind, key });
    }
    this.#cache = fresh;
    this.#rv = rv;
    this.#lists++;
    this.#synced = true;
    this.#o.sink.synced(kind);
  }

  /** One watch stream, from the last resourceVersion until it ends (returns) or fails (throws). */
  async #watch(): Promise<void> {
    const { client, kind } = this.#o;
    const [min, max] = this.#o.watchTimeoutSeconds ?? [300, 600];
    const inactivityMs = this.#o.inactivityTimeoutMs ?? 90_000;
    const abort = new AbortController();
    const onStop = () => abort.abort(this.#stop.signal.reason);
    this.#stop.signal.addEventListener("abort", onStop, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        abort.abort(
          new WatchStalledError(`Watch of ${this.#plural} received nothing for ${inactivityMs} ms; restarting it`),
        );
      }, inactivityMs);
    };
    const startedAt = this.#now();
    let received = 0;
    this.#watchDelivered = false;
    this.#watches++;
    arm();
    try {
      const stream = client.watch(kind, {
        resourceVersion: this.#rv,
        allowWatchBookmarks: true,
        timeoutSeconds: min + Math.floor(this.#random() * (max - min + 1)),
        namespace: this.#o.namespace,
        labelSelector: this.#o.labelSelector,
        fieldSelector: this.#o.fieldSelector,
        signal: abort.signal,
        onOpen: () => this.#backoff.healthy(),
      });
      for await (const ev of stream) {
        arm();
        received++;
        this.#handle(ev);
      }
    } catch (err) {
      if (abort.signal.reason instanceof WatchStalledError) throw abort.signal.reason;
      throw err;
    } finally {
      this.#watchDelivered = received > 0;
      clearTimeout(timer);
      this.#stop.signal.removeEventListener("abort", onStop);
    }
    // A stream the server closes at once, again and again, must not become a hot loop.
    const lasted = this.#now() - startedAt;
    if (received === 0 && lasted < 1000) {
      throw new Error(`Watch of ${this.#plural} ended after ${Math.round(lasted)} ms without any event`);
    }
  }

  #handle(ev: WatchEvent): void {
    const rv = rvOf(ev.object);
    if (ev.type === "BOOKMARK") {
      if (rv) this.#rv = rv;
      return;
    }
    if (ev.type === "DELETED") {
      const key = rawKey(this.kind, ev.object);
      if (key !== undefined && this.#cache.delete(key)) this.#emit({ type: "delete", kind: this.kind, key });
    } else {
      const parsed = this.#parse(ev.object);
      if (parsed) {
        this.#cache.set(parsed.key, { rv, valid: parsed.type === "upsert" });
        this.#emit(parsed);
      }
    }
    if (rv) this.#rv = rv;
  }

  /** Validate one raw object into an upsert or invalid event (undefined when it has no name at all). */
  #parse(raw: KubeObject): CacheEvent<K> | undefined {
    const kind = this.kind;
    const fast = compiled[kind]?.(raw) as { metadata: { name: string; namespace?: string } } | undefined;
    if (fast !== undefined) return { type: "upsert", kind, key: objectKey(fast.metadata), object: fast } as CacheEvent<K>;
    const result = parseObject(kind, raw);
    if (result.ok) {
      const key = objectKey((result.value as { metadata: { name: string; namespace?: string } }).metadata);
      return { type: "upsert", kind, key, object: result.value } as CacheEvent<K>;
    }
    const key = rawKey(kind, raw);
    this.#warn(`invalid:${key}:${rvOf(raw)}`, "Object skipped: it is not valid", { kind, key: key ?? "(unnamed)", error: result.error });
    if (key === undefined) return undefined;
    return { type: "invalid", kind, key, message: result.error };
  }

  #emit(ev: CacheEvent<K>): void {
    try {
      this.#o.sink.apply(ev);
    } catch (err) {
      this.#warn(`sink:${errText(err)}`, "Sink failed to apply an event", { kind: ev.kind, key: ev.key, type: ev.type, error: errText(err) });
    }
  }

  #record(err: unknown, level: "warn" | "info"): void {
    const msg = errText(err);
    this.#lastError = msg;
    this.#lastErrorAt = new Date().toISOString();
    const log = level === "warn" ? this.#warn : this.#info;
    log(msg, level === "warn" ? "Kubernetes sync failed; retrying" : "Kubernetes watch expired; listing again", {
      kind: this.kind,
      error: msg,
    });
  }
}

function rvOf(obj: KubeObject): string | undefined {
  const rv = (obj["metadata"] as { resourceVersion?: unknown } | undefined)?.resourceVersion;
  return typeof rv === "string" && rv ? rv : undefined;
}

/** The cache key of a raw (possibly invalid) object; undefined when it has no name. */
function rawKey(kind: KindName, obj: KubeObject): string | undefined {
  const meta = obj["metadata"] as { name?: unknown; namespace?: unknown } | undefined;
  if (typeof meta?.name !== "string" || !meta.name) return undefined;
  if (!Kinds[kind].namespaced) return meta.name;
  const ns = typeof meta.namespace === "string" && meta.namespace ? meta.namespace : "default";
  return `${ns}/${meta.name}`;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
