/**
 * DNS for ExternalName entrypoints: one {@link NameResolver} per DNS name keeps that name's addresses
 * current, and hands them to the data plane as endpoints, so the TCP and HTTP proxies dial IPs through
 * their normal path (pooling, retries, affinity).
 *
 * - Resolution: `resolve4`/`resolve6` with `ttl: true` (real DNS, with record TTLs); when DNS has no answer
 *   (names only in /etc/hosts, such as `localhost` on Bun), `lookup` (getaddrinfo), whose answers carry no
 *   TTL. IP literals are used as they are. Works on Bun and Deno (both implement `node:dns/promises`).
 * - Refresh: on the smallest record TTL, bounded to [5 s, 300 s]; every 30 s when the TTL is unknown.
 * - Failure: the last good answer is kept (and served); the error is reported, and the name is retried
 *   sooner (from 5 s, doubling up to the refresh interval).
 */
import * as dns from "node:dns/promises";
import { sameList } from "../../model/equal.ts";
import type { Endpoint } from "../../model/types.ts";
import { isIP } from "../../model/net.ts";

/** What one resolution found. */
export interface DnsAnswer {
  /** IPv4 and IPv6 literals. */
  readonly addresses: readonly string[];
  /** Smallest TTL of the records, seconds; undefined when unknown (getaddrinfo, IP literals). */
  readonly ttlSeconds?: number | undefined;
}

/** Resolves a DNS name (injected in tests). */
export type ResolveFn = (hostname: string) => Promise<DnsAnswer>;

/** A DNS name could not be resolved. */
export class ResolveError extends Error {
  override readonly name = "ResolveError";
  constructor(
    readonly hostname: string,
    cause: unknown,
  ) {
    super(`Cannot resolve "${hostname}": ${describe(cause)}`, { cause });
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

type TtlRecord = { readonly address: string; readonly ttl: number };

/**
 * Resolve `hostname` the way kubegate dials ExternalName targets: A and AAAA records with their TTLs, else
 * getaddrinfo (/etc/hosts), else an error. A trailing dot is ignored.
 *
 * @example
 * await systemResolve("localhost"); // { addresses: ["127.0.0.1"] } (Bun: from /etc/hosts, no TTL)
 * @throws {ResolveError} when neither DNS nor getaddrinfo knows the name.
 */
export async function systemResolve(hostname: string): Promise<DnsAnswer> {
  const name = hostname.endsWith(".") ? hostname.slice(0, -1) : hostname;
  const literal = name.startsWith("[") && name.endsWith("]") ? name.slice(1, -1) : name;
  if (isIP(literal)) return { addresses: [literal] };
  const [v4, v6] = await Promise.allSettled([
    dns.resolve4(name, { ttl: true }) as Promise<TtlRecord[]>,
    dns.resolve6(name, { ttl: true }) as Promise<TtlRecord[]>,
  ]);
  const addresses: string[] = [];
  let ttl = Infinity;
  for (const r of [v4, v6]) {
    if (r.status !== "fulfilled") continue;
    for (const rec of r.value) {
      addresses.push(rec.address);
      if (Number.isFinite(rec.ttl) && rec.ttl < ttl) ttl = rec.ttl;
    }
  }
  if (addresses.length !== 0) return { addresses, ttlSeconds: Number.isFinite(ttl) ? ttl : undefined };
  // Not in DNS: names from /etc/hosts (or other NSS sources) are only visible to getaddrinfo.
  try {
    const all = await dns.lookup(name, { all: true });
    if (all.length !== 0) return { addresses: all.map((a) => a.address) };
  } catch (err) {
    throw new ResolveError(hostname, err);
  }
  throw new ResolveError(hostname, v4.status === "rejected" ? v4.reason : new Error("no addresses"));
}

export interface NameResolverOptions {
  /** Default {@link systemResolve}. */
  readonly resolve?: ResolveFn | undefined;
  /** Shortest refresh interval (lower bound of a record TTL), ms. Default 5 000. */
  readonly minRefreshMs?: number | undefined;
  /** Longest refresh interval (upper bound of a record TTL), ms. Default 300 000. */
  readonly maxRefreshMs?: number | undefined;
  /** Refresh interval when the TTL is unknown, ms. Default 30 000. */
  readonly refreshMs?: number | undefined;
  /** Called on each failed resolution, with the addresses kept. */
  readonly onError?: ((error: ResolveError, kept: readonly string[]) => void) | undefined;
  /** Called when the address set changes. */
  readonly onChange?: ((addresses: readonly string[], previous: readonly string[]) => void) | undefined;
  /** Clock for the status, ms (default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

export const DEFAULT_MIN_REFRESH_MS = 5_000;
export const DEFAULT_MAX_REFRESH_MS = 300_000;
export const DEFAULT_REFRESH_MS = 30_000;

/** A resolver's state, for the admin API. */
export interface NameStatus {
  readonly hostname: string;
  readonly addresses: readonly string[];
  /** TTL of the last good answer, seconds, when known. */
  readonly ttlSeconds?: number | undefined;
  /** Clock time of the last good answer, ms. */
  readonly resolvedAt?: number | undefined;
  /** Clock time of the next refresh, ms. */
  readonly nextRefreshAt?: number | undefined;
  /** The last resolution's error, when it failed (the previous addresses are still served). */
  readonly error?: string | undefined;
}

/** IPv4 before IPv6, each in string order: a stable order, so an unchanged answer is recognised. */
function compareAddresses(a: string, b: string): number {
  const fa = a.includes(":") ? 1 : 0;
  const fb = b.includes(":") ? 1 : 0;
  return fa - fb || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * Keeps one DNS name's addresses current. Resolution starts on construction; dispose to stop.
 *
 * @example
 * using r = new NameResolver("db.example.com", { onError: (e) => log.warn(e.message) });
 * await r.ready();
 * r.endpoints(5432); // [{ address: "192.0.2.10", port: 5432, ready: true, ... }]
 */
export class NameResolver implements Disposable {
  readonly #resolve: ResolveFn;
  readonly #min: number;
  readonly #max: number;
  readonly #interval: number;
  readonly #options: NameResolverOptions;
  readonly #now: () => number;
  #addresses: readonly string[] = [];
  #byPort = new Map<number, readonly Endpoint[]>();
  #ttl: number | undefined;
  #resolvedAt: number | undefined;
  #nextAt: number | undefined;
  #error: string | undefined;
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inflight: Promise<void> = Promise.resolve();
  #running = false;
  #disposed = false;
  readonly #first = Promise.withResolvers<void>();
  /** Resolutions completed (good or bad); tests await it. */
  attempts = 0;

  constructor(
    readonly hostname: string,
    options: NameResolverOptions = {},
  ) {
    this.#options = options;
    this.#resolve = options.resolve ?? systemResolve;
    this.#min = Math.max(1, options.minRefreshMs ?? DEFAULT_MIN_REFRESH_MS);
    this.#max = Math.max(this.#min, options.maxRefreshMs ?? DEFAULT_MAX_REFRESH_MS);
    this.#interval = Math.min(this.#max, Math.max(this.#min, options.refreshMs ?? DEFAULT_REFRESH_MS));
    this.#now = options.now ?? Date.now;
    void this.refresh();
  }

  /** The addresses served now (the last good answer; empty before the first). */
  get addresses(): readonly string[] {
    return this.#addresses;
  }

  /** Endpoints at the current addresses on `port`: the same array until the address set changes. */
  endpoints(port: number): readonly Endpoint[] {
    let eps = this.#byPort.get(port);
    if (eps === undefined) {
      eps = Object.freeze(this.#addresses.map((address) => Object.freeze({ address, port, ready: true, serving: true, terminating: false })));
      this.#byPort.set(port, eps);
    }
    return eps;
  }

  /** Resolves once the first resolution has finished (whether it found addresses or not). */
  ready(): Promise<void> {
    return this.#first.promise;
  }

  /** Resolve now (joins a resolution in flight). Never rejects: failures are reported through `onError`. */
  refresh(): Promise<void> {
    if (this.#disposed) return Promise.resolve();
    if (this.#running) return this.#inflight;
    this.#running = true;
    this.#inflight = this.#run();
    return this.#inflight;
  }

  status(): NameStatus {
    return {
      hostname: this.hostname,
      addresses: this.#addresses,
      ttlSeconds: this.#ttl,
      resolvedAt: this.#resolvedAt,
      nextRefreshAt: this.#nextAt,
      error: this.#error,
    };
  }

  [Symbol.dispose](): void {
    this.#disposed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#nextAt = undefined;
    this.#first.resolve();
  }

  async #run(): Promise<void> {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    let delay: number;
    try {
      const answer = await this.#resolve(this.hostname);
      if (this.#disposed) return;
      const addresses = [...new Set(answer.addresses)].sort(compareAddresses);
      if (addresses.length === 0) throw new ResolveError(this.hostname, new Error("the answer has no addresses"));
      this.#failures = 0;
      this.#error = undefined;
      this.#ttl = answer.ttlSeconds;
      this.#resolvedAt = this.#now();
      const ttlMs = answer.ttlSeconds === undefined ? undefined : answer.ttlSeconds * 1000;
      delay = ttlMs === undefined ? this.#interval : Math.min(this.#max, Math.max(this.#min, ttlMs));
      if (!sameList(addresses, this.#addresses)) {
        const previous = this.#addresses;
        this.#addresses = Object.freeze(addresses);
        this.#byPort = new Map();
        this.#options.onChange?.(this.#addresses, previous);
      }
    } catch (err) {
      if (this.#disposed) return;
      const error = err instanceof ResolveError ? err : new ResolveError(this.hostname, err);
      this.#error = error.message;
      this.#failures++;
      // Retry sooner than a normal refresh: from the minimum, doubling, up to the interval.
      delay = Math.min(this.#interval, this.#min * 2 ** Math.min(this.#failures - 1, 16));
      this.#options.onError?.(error, this.#addresses);
    } finally {
      this.#running = false;
      this.attempts++;
      this.#first.resolve();
    }
    if (this.#disposed) return;
    this.#nextAt = this.#now() + delay;
    this.#timer = setTimeout(() => void this.refresh(), delay);
    (this.#timer as { unref?: () => void }).unref?.();
  }
}
