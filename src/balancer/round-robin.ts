/** Round robin over a cluster's serving endpoints, starting at a random offset (like kube-proxy's shuffled list). */
import type { Endpoint } from "../model/types.ts";
import type { Balancer, Outcome, PickContext } from "./types.ts";

export class RoundRobin implements Balancer {
  #next: number;

  /** @param rng injected for tests; the start offset is random so gateways don't all hit endpoint 0 first. */
  constructor(readonly endpoints: readonly Endpoint[], rng: () => number = Math.random) {
    this.#next = endpoints.length ? Math.floor(rng() * endpoints.length) : 0;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    const n = this.endpoints.length;
    for (let i = 0; i < n; i++) {
      const ep = this.endpoints[this.#next++ % n]!;
      if (this.#next >= n) this.#next = 0;
      if (!ctx.exclude?.has(ep)) return ep;
    }
    return undefined;
  }

  begin(_ep: Endpoint): void {}

  end(_ep: Endpoint, _outcome: Outcome): void {}
}
