/**
 * The balancer conformance suite: every {@link Balancer} runs these cases (hono's shared router cases, for
 * balancers). Call {@link balancerConformance} from a `*.test.ts` file with a factory per algorithm.
 *
 * @example
 * balancerConformance("RoundRobin", (eps, env) => new RoundRobin(eps, env.rng), { spreads: "per-pick" });
 */
import { describe, expect, test } from "bun:test";
import { ClusterState } from "../../src/balancer/cluster-state.ts";
import type { Balancer, PickContext } from "../../src/balancer/types.ts";
import type { Endpoint } from "../../src/model/types.ts";
import { seeded } from "../support/random.ts";

/** What a factory gets: deterministic sources of randomness and time, and a cluster state on that clock. */
export interface BalancerEnv {
  readonly rng: () => number;
  readonly now: () => number;
  /**
   * A cluster state with outlier detection that ejects at the first failure for {@link EJECTION_MS}, all
   * endpoints allowed out at once. Factories with `outlier: true` must build their balancer on it.
   */
  readonly state: ClusterState;
  /** Moves {@link now} forward. */
  advance(ms: number): void;
}

/** How long the conformance state's first ejection lasts, ms. */
export const EJECTION_MS = 10_000;

export type BalancerFactory = (endpoints: readonly Endpoint[], env: BalancerEnv) => Balancer;

export interface ConformanceOptions {
  /**
   * How the algorithm spreads load: `per-pick` (successive picks from one client cover every endpoint, e.g.
   * round robin) or `per-client` (one client sticks to one endpoint; distinct clients cover them all).
   */
  /**
   * How the algorithm spreads load: `per-pick` (successive picks from one client cycle through every endpoint
   * exactly, e.g. round robin), `random` (successive picks spread evenly within a tolerance, e.g. random,
   * least-request) or `per-client` (one client sticks to one endpoint; distinct clients spread evenly within a
   * tolerance, e.g. consistent hashes, affinity).
   */
  readonly spreads: "per-pick" | "random" | "per-client";
  /** The balancer is built on `env.state`: run the outlier-detection cases (ejected skipped, panic, readmission). */
  readonly outlier?: boolean;
}

/** A ready endpoint on 10.0.0.x. */
export function ep(i: number, port = 8080): Endpoint {
  return { address: `10.0.0.${i}`, port, ready: true, serving: true, terminating: false };
}


/** A manual clock, ms. */
export function manualClock(start = 1_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

function env(seed = 42): BalancerEnv {
  const clock = manualClock();
  const state = new ClusterState("test/svc:http", {
    now: clock.now,
    outlier: { consecutiveFailures: 1, baseEjectionMs: EJECTION_MS, maxEjectionPercent: 100 },
  });
  return { rng: seeded(seed), now: clock.now, state, advance: clock.advance };
}

/** Distinct client addresses 10.1.x.y. */
function manyClients(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
}

/** Picks per endpoint (in `eps` order). */
function tally(eps: readonly Endpoint[], picks: Iterable<Endpoint | undefined>): number[] {
  const counts = eps.map(() => 0);
  for (const p of picks) {
    const i = eps.indexOf(p!);
    if (i < 0) throw new Error(`Picked an endpoint outside the set: ${JSON.stringify(p)}`);
    counts[i]!++;
  }
  return counts;
}

const clients = Array.from({ length: 40 }, (_, i) => `192.0.2.${i + 1}`);

/** Every subset of `eps` (eps.length <= 4). */
function subsets<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let mask = 0; mask < 1 << items.length; mask++) out.push(items.filter((_, i) => (mask & (1 << i)) !== 0));
  return out;
}

/** Register the conformance cases for one balancer. */
export function balancerConformance(name: string, make: BalancerFactory, options: ConformanceOptions): void {
  describe(`${name} conformance`, () => {
    const four = [ep(1), ep(2), ep(3), ep(4)];

    test("exposes the endpoints it was given", () => {
      expect(make(four, env()).endpoints).toEqual(four);
    });

    test("an empty set picks nothing", () => {
      const b = make([], env());
      expect(b.pick({ clientAddress: "192.0.2.1" })).toBeUndefined();
      expect(b.pick({ clientAddress: "192.0.2.1", exclude: new Set() })).toBeUndefined();
    });

    test("only returns endpoints of its set (the same objects)", () => {
      const b = make(four, env());
      for (let i = 0; i < 200; i++) {
        const got = b.pick({ clientAddress: clients[i % clients.length]! });
        expect(four.includes(got!)).toBe(true);
      }
    });

    test("never returns an excluded endpoint; undefined when all are excluded", () => {
      for (const excluded of subsets(four)) {
        const b = make(four, env());
        const exclude = new Set(excluded);
        for (const clientAddress of clients) {
          const got = b.pick({ clientAddress, exclude });
          if (excluded.length === four.length) expect(got).toBeUndefined();
          else {
            expect(got).toBeDefined();
            expect(exclude.has(got!)).toBe(false);
          }
        }
      }
    });

    test("with a hash key: only endpoints of its set, exclusions honoured", () => {
      const b = make(four, env());
      for (let i = 0; i < 100; i++) {
        const exclude = new Set([four[i % 4]!]);
        const got = b.pick({ clientAddress: clients[i % clients.length]!, hashKey: `user-${i % 7}`, exclude });
        expect(four.includes(got!)).toBe(true);
        expect(exclude.has(got!)).toBe(false);
      }
      expect(b.pick({ clientAddress: "192.0.2.1", hashKey: "k", exclude: new Set(four) })).toBeUndefined();
    });

    test("a retry that excludes the previous pick gets another endpoint, until none is left", () => {
      const b = make(four, env());
      const tried = new Set<Endpoint>();
      const ctx: PickContext = { clientAddress: "192.0.2.9", exclude: tried };
      for (let i = 0; i < four.length; i++) {
        const got = b.pick(ctx);
        expect(got).toBeDefined();
        expect(tried.has(got!)).toBe(false);
        tried.add(got!);
      }
      expect(b.pick(ctx)).toBeUndefined();
      expect(tried.size).toBe(four.length);
    });

    test("deterministic given the same rng and clock", () => {
      const run = () => {
        const b = make(four, env(7));
        return Array.from({ length: 60 }, (_, i) => b.pick({ clientAddress: clients[(i * 7) % clients.length]! })!.address);
      };
      expect(run()).toEqual(run());
    });

    test("begin/end pairs leave the choices as they were (balanced in-flight bookkeeping)", () => {
      const a = make(four, env(11));
      const b = make(four, env(11));
      const plain: string[] = [];
      const tracked: string[] = [];
      for (let i = 0; i < 200; i++) {
        const clientAddress = clients[i % clients.length]!;
        plain.push(a.pick({ clientAddress })!.address);
        const got = b.pick({ clientAddress })!;
        tracked.push(got.address);
        b.begin(got);
        b.end(got, "success");
      }
      expect(tracked).toEqual(plain);
      // Feedback about an endpoint the balancer does not know is ignored.
      const stranger = ep(99);
      b.begin(stranger);
      b.end(stranger, "connect-failure");
      expect(four.includes(b.pick({ clientAddress: "192.0.2.1" })!)).toBe(true);
    });

    if (options.spreads === "random") {
      test("successive picks spread evenly (each endpoint within 10% of its share of 8000)", () => {
        const b = make(four, env());
        const counts = tally(four, Array.from({ length: 8000 }, () => b.pick({ clientAddress: "192.0.2.1" })));
        for (const c of counts) expect(Math.abs(c - 2000)).toBeLessThan(200);
      });

      test("a retry excluding an endpoint spreads over the others", () => {
        const b = make(four, env());
        const exclude = new Set([four[0]!]);
        const counts = tally(four, Array.from({ length: 3000 }, () => b.pick({ clientAddress: "192.0.2.1", exclude })));
        expect(counts[0]).toBe(0);
        for (const c of counts.slice(1)) expect(Math.abs(c - 1000)).toBeLessThan(120);
      });
    }

    if (options.spreads === "per-client") {
      test("distinct clients spread evenly (each endpoint within 15% of its share of 8000 clients)", () => {
        const b = make(four, env());
        const counts = tally(four, manyClients(8000).map((clientAddress) => b.pick({ clientAddress })));
        for (const c of counts) expect(Math.abs(c - 2000)).toBeLessThan(300);
      });
    }

    if (options.outlier === true) {
      test("an ejected endpoint gets no picks until its ejection ends", () => {
        const e = env();
        const b = make(four, e);
        const bad = four[1]!;
        const all = () => [...clients.map((clientAddress) => b.pick({ clientAddress })), ...clients.map((clientAddress) => b.pick({ clientAddress }))];
        expect(all()).toContain(bad);
        b.begin(bad);
        b.end(bad, "server-error");
        expect(e.state.ejectedCount).toBe(1);
        expect(b.ejected?.(bad)).toBe(true);
        for (const got of all()) {
          expect(got).toBeDefined();
          expect(got).not.toBe(bad);
        }
        e.advance(EJECTION_MS - 1);
        expect(all()).not.toContain(bad);
        e.advance(1);
        expect(b.ejected?.(bad)).toBe(false);
        expect(e.state.ejectedCount).toBe(0);
        // Readmitted: per-pick and random algorithms use it again at once; sticky ones for new clients at least.
        expect([...all(), ...manyClients(400).map((clientAddress) => b.pick({ clientAddress }))]).toContain(bad);
      });

      test("panic: when every endpoint left is ejected, they are used rather than failing; exclusions still hold", () => {
        const e = env();
        const b = make(four, e);
        for (const x of four) {
          b.begin(x);
          b.end(x, "connect-failure");
        }
        expect(e.state.ejectedCount).toBe(4);
        const seen = new Set(manyClients(200).map((clientAddress) => b.pick({ clientAddress })));
        expect(seen.has(undefined)).toBe(false);
        expect(seen.size).toBeGreaterThan(1);
        const exclude = new Set([four[0]!, four[1]!, four[2]!]);
        for (const clientAddress of clients) expect(b.pick({ clientAddress, exclude })).toBe(four[3]!);
        expect(b.pick({ clientAddress: "192.0.2.1", exclude: new Set(four) })).toBeUndefined();
        // With some endpoints ejected and the rest excluded, the ejected ones serve the retry.
        e.advance(EJECTION_MS);
        b.end(four[0]!, "connect-failure");
        for (const clientAddress of clients) expect(b.pick({ clientAddress, exclude: new Set(four.slice(1)) })).toBe(four[0]!);
      });
    }

    if (options.spreads === "per-pick") {
      test("successive picks cover every endpoint evenly", () => {
        const b = make(four, env());
        const counts = new Map<Endpoint, number>();
        for (let i = 0; i < 400; i++) {
          const got = b.pick({ clientAddress: "192.0.2.1" })!;
          counts.set(got, (counts.get(got) ?? 0) + 1);
        }
        expect([...counts.values()]).toEqual([100, 100, 100, 100]);
      });
    } else if (options.spreads === "per-client") {
      test("one client sticks to one endpoint; distinct clients cover every endpoint", () => {
        const b = make(four, env());
        const first = b.pick({ clientAddress: "192.0.2.1" });
        for (let i = 0; i < 20; i++) expect(b.pick({ clientAddress: "192.0.2.1" })).toBe(first!);
        const seen = new Set(clients.map((clientAddress) => b.pick({ clientAddress })));
        expect(seen.size).toBe(four.length);
      });
    }
  });
}
