/**
 * A small LRU of consistent-hash tables by endpoint set: the NodePort and LoadBalancer routes of a Service
 * port, and routes rebuilt for a snapshot that kept the same endpoints, share one table instead of building
 * it again. Bounded by the total size of the tables held.
 */

/**
 * Tables by endpoint set (the endpoints' `address:port`s in order), least recently used first.
 *
 * @example
 * const rings = new TableCache<Ring>(16 << 20, (r) => r.hashes.byteLength + r.owners.byteLength);
 * const ring = rings.get(["10.0.0.1:80", "10.0.0.2:80"], buildRing);
 */
export class TableCache<T> {
  readonly #map = new Map<string, T>();
  #bytes = 0;

  /**
   * @param maxBytes most bytes of tables held (a larger table is built but not kept).
   * @param sizeOf the bytes of a table.
   */
  constructor(
    readonly maxBytes: number,
    readonly sizeOf: (table: T) => number,
  ) {}

  /** Tables held. */
  get size(): number {
    return this.#map.size;
  }

  /** Bytes of the tables held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The table of `keys`, built by `build` when not held. */
  get(keys: readonly string[], build: (keys: readonly string[]) => T): T {
    const id = keys.join("\n");
    const held = this.#map.get(id);
    if (held !== undefined) {
      this.#map.delete(id);
      this.#map.set(id, held);
      return held;
    }
    const table = build(keys);
    const bytes = this.sizeOf(table);
    if (bytes > this.maxBytes) return table;
    this.#map.set(id, table);
    this.#bytes += bytes;
    for (const [oldId, old] of this.#map) {
      if (this.#bytes <= this.maxBytes) break;
      this.#map.delete(oldId);
      this.#bytes -= this.sizeOf(old);
    }
    return table;
  }
}
