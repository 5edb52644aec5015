/**
 * A small LRU of consistent-hash tables by endpoint set: the NodePort and LoadBalancer routes of a Service
 * port, and routes rebuilt for a snapshot that kept the same endpoints, share one table instead of building
 * it again. Bounded by the total size of the tables held. Tables are built over the endpoints' keys in
 * {@link canonicalKeys} order, so the same set gives the same table whatever order it came in (in every
 * worker process, and across snapshots that list it differently).
 */
import type { Endpoint } from "../model/types.ts";
import { endpointKey } from "./affinity.ts";

/** An endpoint set's keys in canonical order, and where each is in the set. */
export interface CanonicalKeys {
  /** The endpoints' `address:port`s, sorted (code-unit order). */
  readonly keys: readonly string[];
  /** `order[j]` is the index in the endpoint array of `keys[j]`; undefined when the array is in this order already. */
  readonly order: Uint32Array | undefined;
}

/**
 * The keys a consistent-hash table is built over: sorted, so that nothing about the order in which the
 * endpoints arrived feeds the table (two workers, or two snapshots, with the same set build the same table).
 *
 * @example
 * const { keys, order } = canonicalKeys([ep("10.0.0.2"), ep("10.0.0.1")]);
 * // keys: ["10.0.0.1:80", "10.0.0.2:80"], order: [1, 0]
 */
export function canonicalKeys(endpoints: readonly Endpoint[]): CanonicalKeys {
  const n = endpoints.length;
  const raw = endpoints.map(endpointKey);
  let sorted = true;
  for (let i = 1; i < n && sorted; i++) sorted = raw[i - 1]! <= raw[i]!;
  if (sorted) return { keys: raw, order: undefined };
  const idx = Array.from({ length: n }, (_, i) => i);
  // Ties (one address:port listed twice) keep their relative order; both map to the same key.
  idx.sort((a, b) => (raw[a]! < raw[b]! ? -1 : raw[a]! > raw[b]! ? 1 : a - b));
  return { keys: idx.map((i) => raw[i]!), order: Uint32Array.from(idx) };
}

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
