/**
 * The balancer conformance suite: every {@link Balancer} runs these cases (hono's shared router cases, for
 * balancers). Call {@link balancerConformance} from a `*.test.ts` file with a factory per algorithm.
 *
 * @example
 * balancerConformance("RoundRobin", (eps, env) => new RoundRobin(eps, env.rng), { spreads: "per-pick" });
 */
import { describe, expect, test } from "bun:test";
import type { Balancer, PickContext } from "../../src/balancer/types.ts";
import type { Endpoint } from "../../src/model/types.ts";

/** What a factory gets: deterministic sources of randomness and time. */
export interface BalancerEnv {
  readonly rng: () => number;
  readonly now: () => number;
}

export type BalancerFactory = (endpoints: readonly Endpoint[], env: BalancerEnv) => Balancer;

export interface ConformanceOptions {
  /**
   * How the algorithm spreads load: `per-pick` (successive picks from one client cover every endpoint, e.g.
   * round robin) or `per-client` (one client sticks to one endpoint; distinct clients cover them all).
   */
  readonly spreads: "per-pick" | "per-client";
}

/** A ready endpoint on 10.0.0.x. */
export function ep(i: number, port = 8080): Endpoint {
  return { address: `10.0.0.${i}`, port, ready: true, serving: true, terminating: false };
}

/** A seeded PRNG (mulberry32): the same seed gives the same sequence. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A manual clock, ms. */
export function manualClock(start = 1_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

function env(seed = 42): BalancerEnv {
  return { rng: seeded(seed), now: manualClock().now };
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
    } else {
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
