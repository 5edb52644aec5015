/**
 * The controller's own view of the cluster: a {@link SourceSink} that keeps the parsed objects of each kind
 * in a map and tells a listener that something changed. The controller needs all Nodes (not only its own,
 * which is all the model watches), so it runs its own reflectors into this cache.
 */
import type { EndpointSlice, KindName, Node, Service } from "../kube/objects.ts";
import type { CacheEvent, KindObjects, SourceSink } from "../kube/source.ts";

/**
 * @example
 * const cache = new ObjectCache((ev) => reconciler.kick());
 * new Reflector({ client, kind: "Service", sink: cache }).start();
 */
export class ObjectCache implements SourceSink {
  readonly services = new Map<string, Service>();
  readonly endpointSlices = new Map<string, EndpointSlice>();
  readonly nodes = new Map<string, Node>();
  readonly #synced = new Set<KindName>();
  readonly #onChange: (event: CacheEvent | { type: "synced"; kind: KindName }) => void;

  constructor(onChange: (event: CacheEvent | { type: "synced"; kind: KindName }) => void = () => {}) {
    this.#onChange = onChange;
  }

  apply(event: CacheEvent): void {
    const map = this.#map(event.kind);
    if (event.type === "upsert") map.set(event.key, event.object as never);
    else map.delete(event.key);
    this.#onChange(event);
  }

  synced(kind: KindName): void {
    this.#synced.add(kind);
    this.#onChange({ type: "synced", kind });
  }

  /** Whether every one of `kinds` has been listed at least once. */
  isSynced(kinds: readonly KindName[]): boolean {
    return kinds.every((k) => this.#synced.has(k));
  }

  #map<K extends KindName>(kind: K): Map<string, KindObjects[K]> {
    return (kind === "Service" ? this.services : kind === "EndpointSlice" ? this.endpointSlices : this.nodes) as Map<string, KindObjects[K]>;
  }
}
