/**
 * Kubernetes Events (core v1) for failures users must see with `kubectl describe service`: a pool with no
 * address left, a port the data plane could not bind, a health check port that would not start.
 *
 * Like client-go's recorder, simplified:
 * - The Event names this node as its source (`source.host`, `reportingInstance`) and `kubegate` as the
 *   component, and the Service as `involvedObject`.
 * - Correlation: a repeat (same object, type, reason and message) is counted on the Event already created,
 *   with a merge PATCH of `count` and `lastTimestamp`, instead of creating another; when that Event is gone
 *   (404: expired or deleted), a new one is created. The cache of recent Events is an LRU of `cacheSize`.
 * - Spam filter: a token bucket per object and reason (default burst 25, then one per 5 minutes, client-go's
 *   numbers); what it drops is counted in `status()`.
 * - Writes are serialized and never throw: a failure is logged (rate-limited) and counted.
 */
import { KubeApiError, type KubeObject, type ResourceRef } from "../kube/client.ts";
import type { EventClient } from "./client.ts";
import type { Service } from "../kube/objects.ts";
import { createLogger, rateLimited, type LogFields, type Logger } from "../log.ts";

/** Core v1 Events. */
export const CORE_EVENTS: ResourceRef = { group: "", version: "v1", plural: "events", namespaced: true };

/** The object an Event is about. */
export interface InvolvedObject {
  readonly kind: string;
  readonly name: string;
  readonly namespace?: string | undefined;
  readonly uid?: string | undefined;
  readonly apiVersion?: string | undefined;
  readonly resourceVersion?: string | undefined;
}

export type EventType = "Normal" | "Warning";

/** What became of one `record` call. */
export type RecordOutcome = "created" | "counted" | "dropped" | "failed";

export interface EventRecorderOptions {
  readonly client: EventClient;
  /** This node's name: `source.host` and `reportingInstance`. */
  readonly nodeName: string;
  /** `source.component` and `reportingComponent` (default `kubegate`). */
  readonly component?: string | undefined;
  /** Events allowed at once per object and reason (default 25). */
  readonly burst?: number | undefined;
  /** One more Event per object and reason after this long (default 300 000 ms). */
  readonly refillMs?: number | undefined;
  /** Recent Events kept for correlation (default 4096). */
  readonly cacheSize?: number | undefined;
  /** Calls waiting to be written before new ones are dropped (default 1000). */
  readonly queueLimit?: number | undefined;
  /** Wall clock in ms (default `Date.now`). */
  readonly now?: (() => number) | undefined;
  readonly log?: Logger | undefined;
}

/** Counters for the admin API. */
export interface EventRecorderStatus {
  readonly created: number;
  readonly counted: number;
  readonly dropped: number;
  readonly failed: number;
  readonly lastError: string | undefined;
}

interface Correlated {
  readonly name: string;
  readonly namespace: string;
  count: number;
  readonly firstTimestamp: string;
}

/** The reference to a Service for {@link EventRecorder.record}. */
export function serviceRef(service: Pick<Service, "metadata">): InvolvedObject {
  return {
    kind: "Service",
    apiVersion: "v1",
    name: service.metadata.name,
    namespace: service.metadata.namespace,
    uid: service.metadata.uid,
    resourceVersion: service.metadata.resourceVersion,
  };
}

/**
 * @example
 * const events = new EventRecorder({ client, nodeName: "node-a" });
 * await events.warning(serviceRef(svc), "FailedToBindListener", `Cannot bind listener "0.0.0.0:80": port 80 is in use`);
 */
export class EventRecorder implements AsyncDisposable {
  readonly #o: EventRecorderOptions;
  readonly #component: string;
  readonly #now: () => number;
  readonly #warn: (key: string, msg: string, fields?: LogFields) => void;
  readonly #cache = new Map<string, Correlated>();
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  #chain: Promise<unknown> = Promise.resolve();
  #queued = 0;
  #closed = false;
  #created = 0;
  #counted = 0;
  #dropped = 0;
  #failed = 0;
  #lastError: string | undefined;

  constructor(options: EventRecorderOptions) {
    this.#o = options;
    this.#component = options.component ?? "kubegate";
    this.#now = options.now ?? Date.now;
    this.#warn = rateLimited((m, f) => (options.log ?? createLogger()).warn(m, f), 30_000, this.#now);
  }

  /** A Warning Event. */
  warning(object: InvolvedObject, reason: string, message: string): Promise<RecordOutcome> {
    return this.record(object, "Warning", reason, message);
  }

  /** A Normal Event. */
  normal(object: InvolvedObject, reason: string, message: string): Promise<RecordOutcome> {
    return this.record(object, "Normal", reason, message);
  }

  /** Record one occurrence; resolves when it was written (or dropped). Never rejects. */
  record(object: InvolvedObject, type: EventType, reason: string, message: string): Promise<RecordOutcome> {
    if (this.#closed || this.#queued >= (this.#o.queueLimit ?? 1000) || !this.#allow(object, reason)) {
      this.#dropped++;
      return Promise.resolve("dropped");
    }
    this.#queued++;
    const at = this.#now();
    const run = this.#chain.then(() => this.#write(object, type, reason, truncate(message), at));
    this.#chain = run;
    return run.finally(() => this.#queued--);
  }

  /** Wait for every recorded Event to be written. */
  async flush(): Promise<void> {
    for (let chain = this.#chain; ; chain = this.#chain) {
      await chain;
      if (chain === this.#chain) return;
    }
  }

  status(): EventRecorderStatus {
    return { created: this.#created, counted: this.#counted, dropped: this.#dropped, failed: this.#failed, lastError: this.#lastError };
  }

  /** Stop accepting Events and write those queued. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  /** Token bucket per object and reason. */
  #allow(object: InvolvedObject, reason: string): boolean {
    const key = `${object.kind}/${object.namespace ?? ""}/${object.name}/${object.uid ?? ""}/${reason}`;
    const burst = this.#o.burst ?? 25;
    const refill = this.#o.refillMs ?? 300_000;
    const now = this.#now();
    const b = this.#buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + (now - b.at) / refill);
    b.at = now;
    this.#buckets.delete(key);
    this.#buckets.set(key, b);
    if (this.#buckets.size > (this.#o.cacheSize ?? 4096)) this.#buckets.delete(this.#buckets.keys().next().value!);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  async #write(object: InvolvedObject, type: EventType, reason: string, message: string, at: number): Promise<RecordOutcome> {
    const { client, nodeName } = this.#o;
    const namespace = object.namespace || "default";
    const key = JSON.stringify([object.kind, namespace, object.name, object.uid ?? "", type, reason, message]);
    const stamp = new Date(at).toISOString().replace(/\.\d+Z$/, "Z");
    const seen = this.#cache.get(key);
    try {
      if (seen) {
        try {
          await client.patch(CORE_EVENTS, seen.namespace, seen.name, { count: seen.count + 1, lastTimestamp: stamp, message }, { type: "merge" });
          seen.count++;
          this.#touch(key, seen);
          this.#counted++;
          return "counted";
        } catch (err) {
          if (!(err instanceof KubeApiError && err.status === 404)) throw err;
          this.#cache.delete(key);
        }
      }
      const count = seen ? seen.count + 1 : 1;
      const event: KubeObject = {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: `${object.name}.${(BigInt(at) * 1_000_000n + BigInt(this.#created % 1_000_000)).toString(16)}`, namespace },
        involvedObject: {
          kind: object.kind,
          name: object.name,
          namespace,
          ...(object.uid ? { uid: object.uid } : {}),
          ...(object.apiVersion ? { apiVersion: object.apiVersion } : {}),
          ...(object.resourceVersion ? { resourceVersion: object.resourceVersion } : {}),
        },
        type,
        reason,
        message,
        source: { component: this.#component, host: nodeName },
        reportingComponent: this.#component,
        reportingInstance: nodeName,
        firstTimestamp: seen?.firstTimestamp ?? stamp,
        lastTimestamp: stamp,
        count,
      };
      const created = await client.create(CORE_EVENTS, event, namespace);
      const meta = (created["metadata"] ?? {}) as { name?: string };
      this.#touch(key, { name: meta.name ?? String((event["metadata"] as { name: string }).name), namespace, count, firstTimestamp: seen?.firstTimestamp ?? stamp });
      this.#created++;
      return "created";
    } catch (err) {
      this.#failed++;
      this.#lastError = err instanceof Error ? err.message : String(err);
      this.#warn(`event:${reason}`, "Cannot record a Kubernetes Event", { reason, object: `${namespace}/${object.name}`, error: this.#lastError });
      return "failed";
    }
  }

  /** Keep `key` as most recent in the LRU. */
  #touch(key: string, entry: Correlated): void {
    this.#cache.delete(key);
    this.#cache.set(key, entry);
    if (this.#cache.size > (this.#o.cacheSize ?? 4096)) this.#cache.delete(this.#cache.keys().next().value!);
  }
}

/** Event messages are kept under 1 KiB (the events.k8s.io limit for `note`). */
function truncate(message: string): string {
  return message.length <= 1024 ? message : `${message.slice(0, 1021)}...`;
}
