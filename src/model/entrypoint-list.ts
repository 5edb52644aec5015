/**
 * The sorted entrypoint list of a snapshot (sorted by key): lookup by binary search and the merge of changes that keeps
 * unchanged entrypoint objects. Light on purpose (types only besides this file): data planes use it without loading
 * the model's build.
 */
import type { Entrypoint } from "./types.ts";

const NO_KEYS: ReadonlySet<string> = new Set();

/** Orders strings by UTF-16 code units (locale-independent). */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Index of `key` in entrypoints sorted by key, or -1. */
function indexOfKey(entrypoints: readonly Entrypoint[], key: string): number {
  let lo = 0;
  let hi = entrypoints.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const k = (entrypoints[mid] as Entrypoint).key;
    if (k === key) return mid;
    if (k < key) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** The entrypoint with `key` in `entrypoints` (sorted by key, as in a snapshot), by binary search. */
export function entrypointByKey(entrypoints: readonly Entrypoint[], key: string): Entrypoint | undefined {
  const at = indexOfKey(entrypoints, key);
  return at === -1 ? undefined : entrypoints[at];
}

/**
 * The previous entrypoints with `changed` applied (null = removed), sorted by key (`prev` itself when
 * nothing differs), and exactly the keys whose entrypoint object differs between the two lists.
 */
export function mergeEntrypoints(
  prev: readonly Entrypoint[],
  changed: ReadonlyMap<string, Entrypoint | null>,
): { entrypoints: readonly Entrypoint[]; changed: ReadonlySet<string> } {
  if (changed.size === 0) return { entrypoints: prev, changed: NO_KEYS };
  const keys = new Set<string>();
  let replaceOnly = true;
  const positions: number[] = [];
  for (const [key, entrypoint] of changed) {
    const at = indexOfKey(prev, key);
    const old = at === -1 ? undefined : prev[at];
    if (old === (entrypoint ?? undefined)) continue;
    keys.add(key);
    if (at === -1 || entrypoint === null) replaceOnly = false;
    else positions.push(at);
  }
  if (keys.size === 0) return { entrypoints: prev, changed: NO_KEYS };
  if (replaceOnly) {
    /* not frozen: see "Immutability" in build.ts. One copy of the list per publish (about 0.3 ms at 10k). */
    const first = positions[0] as number;
    const out = prev.with(first, changed.get((prev[first] as Entrypoint).key) as Entrypoint);
    for (let i = 1; i < positions.length; i++) {
      const at = positions[i] as number;
      out[at] = changed.get((prev[at] as Entrypoint).key) as Entrypoint;
    }
    return { entrypoints: out, changed: keys };
  }
  const additions: Entrypoint[] = [];
  for (const entrypoint of changed.values()) if (entrypoint) additions.push(entrypoint);
  additions.sort((a, b) => compareKeys(a.key, b.key));
  const out: Entrypoint[] = [];
  let j = 0;
  for (const entrypoint of prev) {
    if (changed.has(entrypoint.key)) continue;
    while (j < additions.length && (additions[j] as Entrypoint).key < entrypoint.key) out.push(additions[j++] as Entrypoint);
    out.push(entrypoint);
  }
  while (j < additions.length) out.push(additions[j++] as Entrypoint);
  return { entrypoints: out, changed: keys };
}
