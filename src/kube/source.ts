/**
 * The contract between object sources (the cluster reflectors, the manifest source) and the model.
 * A source delivers parsed objects per kind; the model store (src/model/store.ts) consumes them.
 */
import type { EndpointSlice, KindName, Node, Service } from "./objects.ts";

export interface KindObjects {
  Service: Service;
  EndpointSlice: EndpointSlice;
  Node: Node;
}

/** One change to a cached object, keyed by `namespace/name` (`name` for Nodes). */
export type CacheEvent<K extends KindName = KindName> =
  | { readonly type: "upsert"; readonly kind: K; readonly key: string; readonly object: KindObjects[K] }
  | { readonly type: "delete"; readonly kind: K; readonly key: string }
  /** The object exists but failed validation: report it, and treat it as absent. */
  | { readonly type: "invalid"; readonly kind: K; readonly key: string; readonly message: string };

/** Where a source delivers its objects. */
export interface SourceSink {
  /** Apply one change. */
  apply(event: CacheEvent): void;
  /** The kind has been fully listed at least once (called again after a relist; idempotent). */
  synced(kind: KindName): void;
}

/** Sync state of one kind, shown on the admin API. */
export interface SyncStatus {
  readonly kind: KindName;
  readonly synced: boolean;
  readonly phase: "listing" | "watching" | "backoff" | "stopped" | "static";
  readonly resourceVersion?: string | undefined;
  readonly lastError?: string | undefined;
  readonly lastErrorAt?: string | undefined;
  /** Number of full relists so far (including the first list). */
  readonly lists: number;
  /** Number of watch (re)starts so far. */
  readonly watches: number;
  readonly objects: number;
}

/** A provider of Service/EndpointSlice/Node objects. */
export interface Source extends AsyncDisposable {
  start(sink: SourceSink): void;
  status(): readonly SyncStatus[];
}
