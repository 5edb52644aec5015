/**
 * Two workers, one snapshot: RouteBuilders that build their routes from the same entrypoints (one of them from a
 * JSON copy, in another order of arrival, with endpoint sets listed in another order and another rng) send every
 * client to the same endpoint under ring-hash, Maglev and ClientIP affinity, before and after an endpoint leaves;
 * and read each other's affinity cookies when they share the cookie secret.
 */
import { describe, expect, test } from "bun:test";
import { endpointKey } from "../../src/balancer/affinity.ts";
import type { Endpoint, Entrypoint, SessionAffinity, TrafficPolicy } from "../../src/model/types.ts";
import { RouteBuilder } from "../../src/routes/builder.ts";
import type { Route } from "../../src/routes/types.ts";
import { entrypoint } from "../support/entrypoints.ts";
import { seeded } from "../support/random.ts";

const clientIp: SessionAffinity = { mode: "ClientIP", timeoutSeconds: 600 };

/** An endpoint at 10.0.0.i:8080 (10.0.1.x past 200). */
function at(i: number): Endpoint {
  return { address: i <= 200 ? `10.0.0.${i}` : `10.0.1.${i - 200}`, port: 8080, ready: true, serving: true, terminating: false };
}

/** The Service ports under test: what they balance with, and whether picks carry a hash key. */
const cases: readonly { name: string; policy?: TrafficPolicy; affinity?: SessionAffinity; hashKey?: boolean }[] = [
  { name: "ns/ring:http", policy: { balancer: "ring-hash" } },
  { name: "ns/ring-header:http", policy: { balancer: "ring-hash", hashOn: { source: "header", name: "x-user" } }, hashKey: true },
  { name: "ns/maglev:http", policy: { balancer: "maglev" } },
  { name: "ns/maglev-header:http", policy: { balancer: "maglev", hashOn: { source: "header", name: "x-user" } }, hashKey: true },
  { name: "ns/affinity:http", affinity: clientIp },
  { name: "ns/affinity-least-request:http", policy: { balancer: "least-request", slowStartMs: 60_000 }, affinity: clientIp },
  { name: "ns/affinity-random:http", policy: { balancer: "random" }, affinity: clientIp },
  { name: "ns/affinity-maglev:http", policy: { balancer: "maglev" }, affinity: clientIp },
];

/** The snapshot's entrypoints over `endpoints` (in that order). */
function snapshot(endpoints: readonly Endpoint[]): Entrypoint[] {
  return cases.map((c) => ({
    ...entrypoint({ name: c.name, protocol: "http", endpoints }),
    ...(c.policy !== undefined ? { policy: c.policy } : {}),
    ...(c.affinity !== undefined ? { sessionAffinity: c.affinity } : {}),
  }));
}

/** `items` shuffled by `rng` (Fisher-Yates), a new array. */
function shuffled<T>(items: readonly T[], rng: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * The same entrypoints as a worker in another process gets them: a JSON copy, in reverse order, each serving
 * set listed in another order.
 */
function asReceived(entrypoints: readonly Entrypoint[], rng: () => number): Entrypoint[] {
  const copy = JSON.parse(JSON.stringify(entrypoints)) as Entrypoint[];
  return copy.reverse().map((e) => {
    const serving = shuffled(e.cluster.serving, rng);
    return { ...e, cluster: { ...e.cluster, endpoints: serving, serving } };
  });
}

/** A worker: a RouteBuilder and its routes by Service port, applying snapshots as the data plane does. */
class Worker {
  readonly routes: RouteBuilder;
  #byName = new Map<string, Route>();

  constructor(seed: number, cookieSecret?: string) {
    this.routes = new RouteBuilder({ rng: seeded(seed), ...(cookieSecret !== undefined ? { cookieSecret } : {}) });
  }

  apply(entrypoints: readonly Entrypoint[]): void {
    for (const e of entrypoints) this.#byName.set(e.name, this.routes.route(e, this.#byName.get(e.name)));
    this.routes.retain(entrypoints);
  }

  route(name: string): Route {
    return this.#byName.get(name)!;
  }

  /** The `address:port` the route of `name` picks for `client` (and hash key `user-<client>` when the case hashes one). */
  pick(name: string, client: string, hashKey: boolean): string | undefined {
    const ep = this.route(name).balancer.pick({ clientAddress: client, ...(hashKey ? { hashKey: `user-${client}` } : {}) });
    return ep === undefined ? undefined : endpointKey(ep);
  }
}

const clients = Array.from({ length: 1000 }, (_, i) => `172.16.${i >> 8}.${i & 255}`);

/** Every case's picks for `order` of clients, by client (so two orders compare). */
function picks(w: Worker, order: readonly string[]): Map<string, (string | undefined)[]> {
  const out = new Map<string, (string | undefined)[]>();
  for (const c of cases) {
    for (const client of order) {
      const row = out.get(client) ?? [];
      row.push(w.pick(c.name, client, c.hashKey === true));
      out.set(client, row);
    }
  }
  return out;
}

/** Distinct endpoints of the picks (to show they spread). */
function spread(all: Map<string, (string | undefined)[]>, caseIndex: number): number {
  return new Set([...all.values()].map((row) => row[caseIndex])).size;
}

describe("two workers from one snapshot", () => {
  const twelve = Array.from({ length: 12 }, (_, i) => at(i * 17 + 3));

  test("ring-hash, maglev and ClientIP affinity pick the same endpoint for each of 1000 clients; they agree after an endpoint leaves", () => {
    const a = new Worker(1);
    const b = new Worker(2);
    const first = snapshot(twelve);
    a.apply(first);
    b.apply(asReceived(first, seeded(7)));
    const pa = picks(a, clients);
    // Worker b meets the clients in the reverse order (its affinity tables fill in another order).
    const pb = picks(b, [...clients].reverse());
    for (const client of clients) expect(pb.get(client)).toEqual(pa.get(client)!);
    for (let i = 0; i < cases.length; i++) expect(spread(pa, i)).toBe(12);
    // The endpoint with most ClientIP clients leaves.
    const tally = new Map<string, number>();
    for (const row of pa.values()) tally.set(row[4]!, (tally.get(row[4]!) ?? 0) + 1);
    const [busiest] = [...tally.entries()].sort((x, y) => y[1] - x[1])[0]!;
    const next = snapshot(twelve.filter((e) => endpointKey(e) !== busiest));
    a.apply(next);
    b.apply(asReceived(next, seeded(8)));
    const qa = picks(a, clients);
    const qb = picks(b, [...clients].reverse());
    let moved = 0;
    for (const client of clients) {
      expect(qb.get(client)).toEqual(qa.get(client)!);
      expect(qa.get(client)!).not.toContain(busiest);
      // ClientIP: only the clients of the endpoint that left move.
      const before = pa.get(client)![4];
      if (before !== busiest) expect(qa.get(client)![4]).toBe(before);
      else moved++;
    }
    expect(moved).toBe(tally.get(busiest)!);
  });

  test("ClientIP: a worker that never saw a client sends it where the worker that did pinned it, across removals", () => {
    const a = new Worker(3);
    const b = new Worker(4);
    const first = snapshot(twelve);
    a.apply(first);
    b.apply(asReceived(first, seeded(9)));
    const affine = cases.flatMap((c, i) => (c.affinity !== undefined ? [i] : []));
    const pinned = new Map(clients.map((client) => [client, affine.map((i) => a.pick(cases[i]!.name, client, false))]));
    // Two endpoints leave; b now meets the clients for the first time.
    const next = snapshot(twelve.filter((_, i) => i !== 2 && i !== 7));
    a.apply(next);
    b.apply(asReceived(next, seeded(10)));
    for (const client of clients) {
      const got = affine.map((i) => b.pick(cases[i]!.name, client, false));
      expect(got).toEqual(affine.map((i) => a.pick(cases[i]!.name, client, false)));
      const was = pinned.get(client)!;
      for (let k = 0; k < got.length; k++) if (was[k] !== endpointKey(twelve[2]!) && was[k] !== endpointKey(twelve[7]!)) expect(got[k]).toBe(was[k]);
    }
  });

  test("ClientIP, an endpoint joins: workers agree on clients both or neither saw; one pinned before the join stays, a new one may go to the newcomer", () => {
    const a = new Worker(5);
    const b = new Worker(6);
    const first = snapshot(twelve);
    a.apply(first);
    b.apply(asReceived(first, seeded(11)));
    const name = cases[4]!.name;
    const seenByBoth = clients.slice(0, 300);
    const seenByA = clients.slice(300, 600);
    for (const c of seenByBoth) expect(b.pick(name, c, false)).toBe(a.pick(name, c, false)!);
    for (const c of seenByA) a.pick(name, c, false);
    const newcomer = at(250);
    const next = snapshot([...twelve, newcomer]);
    a.apply(next);
    b.apply(asReceived(next, seeded(12)));
    for (const c of [...seenByBoth, ...clients.slice(600)]) expect(b.pick(name, c, false)).toBe(a.pick(name, c, false)!);
    // Seen by one worker only: they differ exactly for the clients whose first choice is now the newcomer
    // (the documented limit: affinity tables are per worker).
    let differ = 0;
    for (const c of seenByA) {
      const pa = a.pick(name, c, false);
      const pb = b.pick(name, c, false);
      if (pb === endpointKey(newcomer)) {
        expect(pa).not.toBe(pb!);
        differ++;
      } else expect(pb).toBe(pa!);
    }
    expect(differ).toBeGreaterThan(0);
  });

  test("cookie affinity: with one cookie secret, a cookie set by one worker names the same endpoint in the other", () => {
    const aff: SessionAffinity = { mode: "None", timeoutSeconds: 10_800, cookie: { name: "kg", ttlSeconds: 60 } };
    const e: Entrypoint = { ...entrypoint({ name: "ns/web:http", protocol: "http", endpoints: twelve }), sessionAffinity: aff };
    const a = new Worker(7, "node-secret");
    const b = new Worker(8, "node-secret");
    a.apply([e]);
    b.apply(asReceived([e], seeded(13)));
    for (const ep of twelve) {
      const token = a.route(e.name).cookie!.tokenFor(ep);
      expect(endpointKey(b.route(e.name).cookie!.endpointFor(token)!)).toBe(endpointKey(ep));
    }
    // Another secret (a process's own random default): the cookie means nothing there, the request is balanced.
    const c = new Worker(9, "other-secret");
    c.apply([e]);
    expect(c.route(e.name).cookie!.endpointFor(a.route(e.name).cookie!.tokenFor(twelve[0]!))).toBeUndefined();
  });
});
