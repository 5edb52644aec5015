/**
 * The resolvers of every ExternalName entrypoint, shared per DNS name: entrypoints that dial the same name
 * (a Service's NodePort and LoadBalancer entrypoints, or its ports) share one resolver, which stops when the
 * last of them releases it.
 */
import type { ExternalNameLease, ExternalNames } from "../types.ts";
import type { Endpoint } from "../../model/types.ts";
import { type Logger, silentLogger } from "../../log.ts";
import { NameResolver, type NameResolverOptions, type NameStatus } from "./resolver.ts";

export interface DnsRegistryOptions extends Omit<NameResolverOptions, "onError" | "onChange"> {
  /** Failures are logged as warnings, address changes at info. */
  readonly log?: Logger | undefined;
}

/**
 * Ref-counted {@link NameResolver}s by DNS name (lower-cased, without a trailing dot).
 *
 * @example
 * using dnsNames = new DnsRegistry({ log });
 * const lease = dnsNames.acquire("db.example.com");
 * lease.endpoints(5432); // current addresses as endpoints
 * lease.release();
 */
export class DnsRegistry implements ExternalNames, Disposable {
  readonly #resolvers = new Map<string, { resolver: NameResolver; refs: number }>();
  readonly #options: DnsRegistryOptions;

  constructor(options: DnsRegistryOptions = {}) {
    this.#options = options;
  }

  /** Start (or share) the resolver of `hostname`. Call `release` on the lease when done. */
  acquire(hostname: string): ExternalNameLease {
    const name = hostname.toLowerCase().replace(/\.$/, "");
    let slot = this.#resolvers.get(name);
    if (slot === undefined) {
      const log = this.#options.log ?? silentLogger;
      const resolver = new NameResolver(name, {
        ...this.#options,
        onError: (error, kept) => log.warn("ExternalName resolution failed", { hostname: name, error: error.message, kept }),
        onChange: (addresses, previous) => log.info("ExternalName addresses changed", { hostname: name, addresses, previous }),
      });
      slot = { resolver, refs: 0 };
      this.#resolvers.set(name, slot);
    }
    slot.refs++;
    const { resolver } = slot;
    let released = false;
    return {
      hostname: name,
      endpoints: (port: number): readonly Endpoint[] => resolver.endpoints(port),
      status: () => resolver.status(),
      ready: () => resolver.ready(),
      release: () => {
        if (released) return;
        released = true;
        const s = this.#resolvers.get(name);
        if (s === undefined || s.resolver !== resolver || --s.refs > 0) return;
        this.#resolvers.delete(name);
        resolver[Symbol.dispose]();
      },
    };
  }

  /** The resolver of `hostname`, if one runs (tests, admin). */
  resolver(hostname: string): NameResolver | undefined {
    return this.#resolvers.get(hostname.toLowerCase().replace(/\.$/, ""))?.resolver;
  }

  /** Every running resolver's state, sorted by name (admin API). */
  status(): NameStatus[] {
    return [...this.#resolvers.values()].map((s) => s.resolver.status()).sort((a, b) => (a.hostname < b.hostname ? -1 : 1));
  }

  [Symbol.dispose](): void {
    for (const { resolver } of this.#resolvers.values()) resolver[Symbol.dispose]();
    this.#resolvers.clear();
  }
}
