/** Every balancer passes the conformance suite (`conformance.ts`). */
import { AffinityTable, ClientIpAffinity } from "../../src/balancer/affinity.ts";
import { DynamicRoundRobin } from "../../src/balancer/dynamic.ts";
import { RoundRobin } from "../../src/balancer/round-robin.ts";
import { balancerConformance } from "./conformance.ts";

balancerConformance("RoundRobin", (eps, env) => new RoundRobin(eps, env.rng), { spreads: "per-pick" });

balancerConformance("DynamicRoundRobin", (eps, env) => new DynamicRoundRobin({ endpoints: eps }, env.rng), { spreads: "per-pick" });

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
