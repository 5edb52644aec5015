/** Every balancer passes the conformance suite (`conformance.ts`). */
import { AffinityTable, ClientIpAffinity } from "../../src/balancer/affinity.ts";
import { createBalancer } from "../../src/balancer/algorithms.ts";
import type { ClusterState } from "../../src/balancer/cluster-state.ts";
import { DynamicRoundRobin } from "../../src/balancer/dynamic.ts";
import { LeastRequest } from "../../src/balancer/least-request.ts";
import { Maglev } from "../../src/balancer/maglev.ts";
import { RandomBalancer } from "../../src/balancer/random.ts";
import { RingHash } from "../../src/balancer/ring-hash.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import type { BalancerAlgorithm, Endpoint } from "../../src/model/types.ts";
import { type BalancerEnv, balancerConformance, ep } from "./conformance.ts";

/**
 * `env.state` after a cluster that served only 10.0.0.200: the endpoints given next are all new and ramp up
 * together (equal weights below 1), so the algorithms run their weighted paths.
 */
function ramping(env: BalancerEnv): ClusterState {
  env.state.sync([ep(200)]);
  return env.state;
}

balancerConformance("RoundRobin", (eps, env) => new RoundRobin(eps, env.rng), { spreads: "per-pick" });
balancerConformance("RoundRobin with outlier detection", (eps, env) => new RoundRobin(eps, env.rng, { state: env.state }), { spreads: "per-pick", outlier: true });
balancerConformance(
  "RoundRobin during slow start (smooth weighted round robin)",
  (eps, env) => new RoundRobin(eps, env.rng, { state: ramping(env), slowStartMs: 60_000 }),
  { spreads: "per-pick", outlier: true },
);

balancerConformance("LeastRequest", (eps, env) => new LeastRequest(eps, env.rng, { state: env.state }), { spreads: "random", outlier: true });
balancerConformance(
  "LeastRequest during slow start",
  (eps, env) => new LeastRequest(eps, env.rng, { state: ramping(env), slowStartMs: 60_000 }),
  { spreads: "random", outlier: true },
);

balancerConformance("RandomBalancer", (eps, env) => new RandomBalancer(eps, env.rng, { state: env.state }), { spreads: "random", outlier: true });
balancerConformance(
  "RandomBalancer during slow start",
  (eps, env) => new RandomBalancer(eps, env.rng, { state: ramping(env), slowStartMs: 60_000 }),
  { spreads: "random", outlier: true },
);

balancerConformance("RingHash", (eps, env) => new RingHash(eps, env.rng, { state: env.state }), { spreads: "per-client", outlier: true });
balancerConformance("Maglev", (eps, env) => new Maglev(eps, env.rng, { state: env.state }), { spreads: "per-client", outlier: true });

balancerConformance("DynamicRoundRobin", (eps, env) => new DynamicRoundRobin({ endpoints: eps }, env.rng), { spreads: "per-pick" });
balancerConformance(
  "DynamicRoundRobin with outlier detection",
  (eps, env) => new DynamicRoundRobin({ endpoints: eps }, env.rng, { state: env.state }),
  { spreads: "per-pick", outlier: true },
);

balancerConformance(
  "ClientIpAffinity over RoundRobin",
  (eps, env) => new ClientIpAffinity(new RoundRobin(eps, env.rng), new AffinityTable(), 10_800_000, env.now),
  { spreads: "per-client" },
);

balancerConformance(
  "ClientIpAffinity over DynamicRoundRobin",
  (eps, env) => new ClientIpAffinity(new DynamicRoundRobin({ endpoints: eps }, env.rng), new AffinityTable({ maxEntries: 8 }), 1_000, env.now),
  { spreads: "per-client" },
);

const affine = (algorithm: BalancerAlgorithm) => (eps: readonly Endpoint[], env: BalancerEnv) =>
  new ClientIpAffinity(createBalancer(algorithm, eps, env.rng, { state: env.state }), new AffinityTable(), 10_800_000, env.now);

for (const algorithm of ["round-robin", "least-request", "random", "ring-hash", "maglev"] as const) {
  balancerConformance(`ClientIpAffinity over ${algorithm} with outlier detection`, affine(algorithm), { spreads: "per-client", outlier: true });
}
