/**
 * kube-proxy's metrics (pkg/proxy/metrics/metrics.go), with its names, types, HELP texts, buckets and
 * labels, so dashboards and alerts written for kube-proxy keep working on kubegate.
 *
 * kube-proxy runs one proxier per IP family and labels most series `ip_family` ("IPv4"/"IPv6");
 * kubegate applies one snapshot for both families, so a sync is recorded under every family the node
 * serves (as a dual-stack kube-proxy records one sync per proxier). Network programming latency is
 * recorded once, under the first family (the store's trigger times carry no family).
 *
 * A "sync" is a snapshot applied: the store's build plus the listener reconcile.
 */
import type { CacheEvent } from "../../kube/source.ts";
import type { PublishInfo } from "../../model/store.ts";
import type { Endpoint, Snapshot } from "../../model/types.ts";
import { NETWORK_PROGRAMMING_BUCKETS, SYNC_DURATION_BUCKETS } from "./buckets.ts";
import type { Counter, GaugeChild, HistogramChild, Registry } from "./registry.ts";

export type IpFamily = "IPv4" | "IPv6";

/** The IP families of these address literals, IPv4 first; `["IPv4"]` when there are none. */
export function ipFamiliesOf(addresses: readonly string[]): IpFamily[] {
  const v4 = addresses.some((a) => !a.includes(":"));
  const v6 = addresses.some((a) => a.includes(":"));
  const out: IpFamily[] = [];
  if (v4 || !v6) out.push("IPv4");
  if (v6) out.push("IPv6");
  return out;
}

function familyOf(address: string): IpFamily {
  return address.includes(":") ? "IPv6" : "IPv4";
}

/** Answers counted by the health server, per endpoint and HTTP code (`admin/proxy-health.ts`' HealthCounts). */
export type HealthCountsView = Readonly<Record<"healthz" | "livez", Readonly<Record<string, number>>>>;

export interface KubeProxyMetricsOptions {
  /** IP families the node serves (default `["IPv4"]`); see {@link ipFamiliesOf}. */
  readonly ipFamilies?: readonly IpFamily[] | undefined;
  /** The health server's answer counts, read at scrape time. */
  readonly healthCounts?: HealthCountsView | undefined;
  /** The latest snapshot, read at scrape time (for the no-local-endpoints gauge). */
  readonly snapshot?: (() => Snapshot | undefined) | undefined;
  /** Wall clock in ms since the epoch (default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

/** kube-proxy's metric names, as exposed. */
export const KubeProxyMetricNames = Object.freeze({
  syncDuration: "kubeproxy_sync_proxy_rules_duration_seconds",
  networkProgramming: "kubeproxy_network_programming_duration_seconds",
  lastTimestamp: "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
  lastQueuedTimestamp: "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
  endpointChangesPending: "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
  endpointChangesTotal: "kubeproxy_sync_proxy_rules_endpoint_changes_total",
  serviceChangesPending: "kubeproxy_sync_proxy_rules_service_changes_pending",
  serviceChangesTotal: "kubeproxy_sync_proxy_rules_service_changes_total",
  noLocalEndpoints: "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
  healthz: "kubeproxy_proxy_healthz_total",
  livez: "kubeproxy_proxy_livez_total",
});

interface PerFamily {
  readonly syncDuration: HistogramChild;
  readonly lastTimestamp: GaugeChild;
  readonly lastQueued: GaugeChild;
}

/**
 * The kube-proxy metric families, fed by the sink (`queued`) and the store's publishes (`applied`).
 *
 * @example
 * const kp = new KubeProxyMetrics(registry, { ipFamilies: ["IPv4"], healthCounts, snapshot: () => store.current() });
 * sink.apply = (event) => { kp.queued(event); store.apply(event); };
 * onSnapshot = (snapshot, info) => { const t0 = performance.now(); listeners.apply(snapshot); kp.applied(info, (performance.now() - t0) / 1000); };
 */
export class KubeProxyMetrics {
  readonly ipFamilies: readonly IpFamily[];
  readonly #now: () => number;
  readonly #perFamily: readonly PerFamily[];
  readonly #networkProgramming: HistogramChild;
  readonly #endpointChangesTotal: Counter;
  readonly #serviceChangesTotal: Counter;
  /** Changes received since the last applied sync: EndpointSlice keys and Service keys. */
  readonly #pendingSlices = new Set<string>();
  readonly #pendingServices = new Set<string>();

  constructor(registry: Registry, options: KubeProxyMetricsOptions = {}) {
    const families = options.ipFamilies?.length ? [...new Set(options.ipFamilies)] : (["IPv4"] as IpFamily[]);
    this.ipFamilies = Object.freeze(families);
    this.#now = options.now ?? Date.now;
    const N = KubeProxyMetricNames;

    const syncDuration = registry.histogram({
      name: N.syncDuration,
      help: "[ALPHA] SyncProxyRules latency in seconds",
      labelNames: ["ip_family"],
      buckets: SYNC_DURATION_BUCKETS,
    });
    const networkProgramming = registry.histogram({
      name: N.networkProgramming,
      help: "[ALPHA] In Cluster Network Programming Latency in seconds",
      labelNames: ["ip_family"],
      buckets: NETWORK_PROGRAMMING_BUCKETS,
    });
    const lastTimestamp = registry.gauge({ name: N.lastTimestamp, help: "[ALPHA] The last time proxy rules were successfully synced", labelNames: ["ip_family"] });
    const lastQueued = registry.gauge({ name: N.lastQueuedTimestamp, help: "[ALPHA] The last time a sync of proxy rules was queued", labelNames: ["ip_family"] });
    registry.gauge({
      name: N.endpointChangesPending,
      help: "[ALPHA] Pending proxy rules Endpoint changes",
      collect: (g) => g.set(this.#pendingSlices.size),
    });
    this.#endpointChangesTotal = registry.counter({ name: N.endpointChangesTotal, help: "[ALPHA] Cumulative proxy rules Endpoint changes" });
    registry.gauge({
      name: N.serviceChangesPending,
      help: "[ALPHA] Pending proxy rules Service changes",
      collect: (g) => g.set(this.#pendingServices.size),
    });
    this.#serviceChangesTotal = registry.counter({ name: N.serviceChangesTotal, help: "[ALPHA] Cumulative proxy rules Service changes" });
    const snapshot = options.snapshot;
    registry.gauge({
      name: N.noLocalEndpoints,
      help: "[ALPHA] Number of services with a Local traffic policy and no endpoints",
      labelNames: ["ip_family", "traffic_policy"],
      collect: (g) => {
        const counts = noLocalEndpoints(snapshot?.());
        for (const f of families) g.labels(f, "external").set(counts[f]);
      },
    });
    const health = options.healthCounts;
    const mirror = (which: "healthz" | "livez") => (c: Counter) => {
      for (const [code, n] of Object.entries(health?.[which] ?? {})) c.labels(code).set(n);
    };
    registry.counter({ name: N.healthz, help: "[ALPHA] Cumulative proxy healthz HTTP status", labelNames: ["code"], collect: mirror("healthz") });
    registry.counter({ name: N.livez, help: "[ALPHA] Cumulative proxy livez HTTP status", labelNames: ["code"], collect: mirror("livez") });

    this.#perFamily = families.map((f) => ({ syncDuration: syncDuration.labels(f), lastTimestamp: lastTimestamp.labels(f), lastQueued: lastQueued.labels(f) }));
    this.#networkProgramming = networkProgramming.labels(families[0] as IpFamily);
  }

  /** A change reached the store (kube-proxy's `Sync()` being queued). Call from the sink, per event. */
  queued(event: CacheEvent): void {
    const t = this.#now() / 1000;
    for (const f of this.#perFamily) f.lastQueued.set(t);
    if (event.kind === "EndpointSlice") this.#pendingSlices.add(event.key);
    else if (event.kind === "Service") this.#pendingServices.add(event.key);
  }

  /**
   * A snapshot was published and applied: `info` from the store's `onSnapshot`, `applySeconds` the
   * time the gateway spent applying it (listeners, health checks). Records the sync duration
   * (build + apply), the last sync time, the change counters and one network programming latency per
   * trigger time.
   */
  applied(info: PublishInfo, applySeconds: number): void {
    const nowMs = this.#now();
    const duration = info.buildMs / 1000 + applySeconds;
    for (const f of this.#perFamily) {
      f.syncDuration.observe(duration);
      f.lastTimestamp.set(nowMs / 1000);
    }
    this.#serviceChangesTotal.inc(info.serviceChanges);
    this.#endpointChangesTotal.inc(info.endpointChanges);
    for (const t of info.triggerTimes) this.#networkProgramming.observe((nowMs - t) / 1000);
    this.#pendingSlices.clear();
    this.#pendingServices.clear();
  }

  /**
   * The store flushed and nothing changed (no publish): everything received is applied. kube-proxy
   * records such no-op syncs too; without this call, pending counts stay up until the next publish.
   */
  settled(buildMs = 0): void {
    const nowMs = this.#now();
    for (const f of this.#perFamily) {
      f.syncDuration.observe(buildMs / 1000);
      f.lastTimestamp.set(nowMs / 1000);
    }
    this.#pendingSlices.clear();
    this.#pendingServices.clear();
  }

  /** Pending change counts (as exposed). */
  get pending(): { services: number; endpoints: number } {
    return { services: this.#pendingServices.size, endpoints: this.#pendingSlices.size };
  }

  /** Counter values (as exposed), for tests and the admin page. */
  get changes(): { services: number; endpoints: number } {
    return { services: this.#serviceChangesTotal.value, endpoints: this.#endpointChangesTotal.value };
  }

  /** The sync-duration histogram of the first family (tests). */
  get syncDuration(): HistogramChild {
    return (this.#perFamily[0] as PerFamily).syncDuration;
  }

  /** The network programming histogram (tests). */
  get networkProgramming(): HistogramChild {
    return this.#networkProgramming;
  }
}

/** An endpoint kube-proxy would use at all: ready, or serving and terminating (KEP-1669 fallback). */
function usable(e: Endpoint): boolean {
  return e.ready || (e.serving && e.terminating);
}

/**
 * kube-proxy's count of Service ports with an external Local traffic policy that have usable
 * endpoints of a family somewhere but none selected on this node, per family. Each Service port
 * counts once (NodePort and LoadBalancer entrypoints share it).
 */
export function noLocalEndpoints(snapshot: Snapshot | undefined): Record<IpFamily, number> {
  const counts: Record<IpFamily, number> = { IPv4: 0, IPv6: 0 };
  if (snapshot === undefined) return counts;
  const seen = new Set<string>();
  for (const ep of snapshot.entrypoints) {
    if (ep.externalTrafficPolicy !== "Local" || ep.externalName !== undefined) continue;
    const cluster = ep.cluster;
    if (seen.has(cluster.name)) continue;
    seen.add(cluster.name);
    const has = { IPv4: false, IPv6: false };
    const local = { IPv4: false, IPv6: false };
    for (const e of cluster.endpoints) if (usable(e)) has[familyOf(e.address)] = true;
    for (const e of cluster.serving) local[familyOf(e.address)] = true;
    if (has.IPv4 && !local.IPv4) counts.IPv4++;
    if (has.IPv6 && !local.IPv6) counts.IPv6++;
  }
  return counts;
}
