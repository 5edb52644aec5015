/**
 * Proxy health: kube-proxy's health contract (pkg/proxy/healthcheck/proxy_health.go), for load balancers and
 * kubelet probes that already speak it: `/healthz` (sync health and node eligibility), `/livez`
 * (sync health only), plus `/readyz` (200 once the first snapshot is live).
 *
 * Healthy means no change has been pending longer than `healthTimeoutMs`. An API-server outage with
 * nothing pending keeps us healthy: we serve the last good state.
 *
 * Shutting down (SIGTERM, see `Gateway.shutdown`): `/healthz` and `/readyz` answer 503 at once, with the
 * same bodies, so load balancers and the kubelet take the node out while the listeners still serve
 * (`--shutdown-delay`). `/livez` is unchanged: a draining gateway must not be restarted.
 */
import { Hono } from "hono";
import type { Node } from "../kube/objects.ts";

/** kube-proxy's taint for nodes the cluster autoscaler is about to delete. */
export const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler";

/** The health state machine, with an injected clock. */
export class HealthState {
  #lastUpdated: number | undefined;
  #oldestPending: number | undefined;
  #nodeEligible = true;
  #ready = false;
  #shuttingDown = false;
  #bound = true;
  #serving: () => boolean = () => true;
  #yielding: () => boolean = () => false;

  constructor(
    readonly healthTimeoutMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** A change arrived that is not yet applied (kube-proxy's QueuedUpdate). */
  queued(): void {
    this.#oldestPending ??= this.now();
  }

  /** Everything received so far is applied (kube-proxy's Updated). */
  updated(): void {
    this.#oldestPending = undefined;
    this.#lastUpdated = this.now();
    this.#ready = true;
  }

  /** Node eligibility: not being deleted and not tainted for deletion. */
  syncNode(node: Node | undefined): void {
    this.#nodeEligible = !node || (!node.metadata.deletionTimestamp && !node.spec.taints?.some((t) => t.key === toBeDeletedTaint));
  }

  /** The gateway is shutting down: `/healthz` and `/readyz` fail from now on (there is no way back). */
  shutdown(): void {
    this.#shuttingDown = true;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /**
   * Gate `/readyz` on the listeners too: from this call until {@link listenersBound}, readiness waits for the
   * first snapshot's listeners to be bound (at 10k Services they bind in batches after the snapshot is live).
   */
  awaitListeners(): void {
    this.#bound = false;
  }

  /** The first snapshot's listeners are bound (or failed and reported): `/readyz` may turn 200. */
  listenersBound(): void {
    this.#bound = true;
  }

  /**
   * Whether anything serves traffic now (worker processes: at least one is up), read at each probe. While it says
   * no, `/healthz` and `/readyz` answer 503 so load balancers and the kubelet send elsewhere; `/livez` is unchanged
   * (the gateway is alive and restarting its workers).
   */
  servingWhen(serving: () => boolean): void {
    this.#serving = serving;
  }

  /** See {@link servingWhen}. */
  get serving(): boolean {
    return this.#serving();
  }

  /**
   * Gate `/readyz` on a successor (see `control-plane/succession.ts`): while `starting` says a newer gateway on this
   * node is starting, `/readyz` answers 503, because the kubelet's readiness probe for the new pod reaches the
   * node's shared health port and may land on this process: a 200 from here would mark it ready early.
   */
  yieldWhile(starting: () => boolean): void {
    this.#yielding = starting;
  }

  /** A successor on this node is starting (see {@link yieldWhile}). */
  get yielding(): boolean {
    return this.#yielding();
  }

  /**
   * `/readyz`: the first snapshot is live, its listeners are bound, something serves, not shutting down, and no
   * successor is starting.
   */
  get ready(): boolean {
    return this.#ready && this.#bound && !this.#shuttingDown && this.#serving() && !this.#yielding();
  }

  get nodeEligible(): boolean {
    return this.#nodeEligible;
  }

  /**
   * Healthy unless a change has been pending for `healthTimeoutMs` or more. Like kube-proxy, healthy
   * while starting up: before the first sync there is nothing to be late against.
   */
  healthy(): { healthy: boolean; lastUpdated: number; currentTime: number } {
    const currentTime = this.now();
    const late =
      this.#lastUpdated !== undefined && this.#oldestPending !== undefined && currentTime - this.#oldestPending >= this.healthTimeoutMs;
    return { healthy: !late, lastUpdated: this.#lastUpdated ?? 0, currentTime };
  }
}

/** Go's `time.Time.String()` layout (UTC, nanoseconds trimmed), which kube-proxy's `%q` prints. */
export function goTime(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  const frac = d.getUTCMilliseconds() ? `.${pad(d.getUTCMilliseconds(), 3).replace(/0+$/, "")}` : "";
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${frac} +0000 UTC`;
}

const jsonHeaders = { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" };

/** Counters of answers per endpoint and code, for kube-proxy's `proxy_healthz_total`/`proxy_livez_total`. */
export type HealthCounts = Record<"healthz" | "livez", Record<string, number>>;

/** The health server's routes: byte-for-byte kube-proxy's bodies. */
export function healthApp(state: HealthState, counts: HealthCounts = { healthz: {}, livez: {} }): Hono {
  const count = (which: "healthz" | "livez", code: number) => {
    counts[which][code] = (counts[which][code] ?? 0) + 1;
  };
  const app = new Hono();
  app.get("/healthz", () => {
    const h = state.healthy();
    const ok = h.healthy && state.nodeEligible && !state.shuttingDown && state.serving;
    const lastUpdated = ok ? h.currentTime : h.lastUpdated;
    count("healthz", ok ? 200 : 503);
    return new Response(
      `{"lastUpdated": ${JSON.stringify(goTime(lastUpdated))},"currentTime": ${JSON.stringify(goTime(h.currentTime))}, "nodeEligible": ${state.nodeEligible}}`,
      { status: ok ? 200 : 503, headers: jsonHeaders },
    );
  });
  app.get("/livez", () => {
    const h = state.healthy();
    const lastUpdated = h.healthy ? h.currentTime : h.lastUpdated;
    count("livez", h.healthy ? 200 : 503);
    return new Response(
      `{"lastUpdated": ${JSON.stringify(goTime(lastUpdated))},"currentTime": ${JSON.stringify(goTime(h.currentTime))}}`,
      { status: h.healthy ? 200 : 503, headers: jsonHeaders },
    );
  });
  app.get("/readyz", () =>
    state.ready
      ? new Response("ok\n", { status: 200, headers: { "Content-Type": "text/plain" } })
      : new Response(
          state.shuttingDown
            ? "shutting down\n"
            : !state.serving
              ? "no data plane worker is serving\n"
              : state.yielding
                ? "successor starting: a newer gateway on this node is not ready yet\n"
                : "waiting for the first snapshot\n",
          { status: 503, headers: { "Content-Type": "text/plain" } },
        ),
  );
  return app;
}
