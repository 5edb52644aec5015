/**
 * API server outages, timed: what a client sends while the test API server refuses connections, and how long after
 * the port answers again the first change reaches a sink. Shared by the outage tests (test/kube/) and the recovery
 * benchmark (test/bench/apiserver-recovery.ts).
 *
 * @example
 * const sent = new RequestLog();
 * using client = new KubeClient(connection, { createHttpClient: sent.createHttpClient });
 * const sink = new TimedSink();
 * // ... start a source on client and sink, await its watches ...
 * const o = await outage(server, { ms: 3000, sink, change: service("during-outage") });
 * o.recoveredAt - o.upAt; // ms from the port answering to the change delivered
 * sent.between(o.downAt, o.upAt); // what the client sent meanwhile
 */
import { KubeClient, type KubeClientOptions } from "../../src/kube/client.ts";
import { loadKubeConfig } from "../../src/kube/kubeconfig.ts";
import { rt, type HttpClient, type TlsClientOptions } from "../../src/runtime/index.ts";
import type { CacheEvent } from "../../src/kube/source.ts";
import type { TestApiServer } from "./apiserver.ts";
import { RecordingSink } from "./kube-sinks.ts";
import { waitFor } from "./wait.ts";

/** One request as the client sent it (before any answer: a refused connection counts too). */
export interface SentRequest {
  /** `performance.now()` when fetch was called. */
  readonly at: number;
  readonly method: string;
  readonly path: string;
  readonly watch: boolean;
}

/** Records every request of the clients made with {@link RequestLog.createHttpClient}. */
export class RequestLog {
  readonly sent: SentRequest[] = [];

  /** For `KubeClientOptions.createHttpClient`: the runtime's client, logging each fetch. */
  readonly createHttpClient = (tls: TlsClientOptions): HttpClient => {
    const inner = rt.createHttpClient(tls);
    return {
      fetch: (url, init) => {
        const u = new URL(url);
        this.sent.push({ at: performance.now(), method: init?.method ?? "GET", path: u.pathname, watch: u.searchParams.has("watch") });
        return inner.fetch(url, init);
      },
      close: () => inner.close(),
    };
  };

  /** Requests sent in `[from, to)`. */
  between(from: number, to: number): SentRequest[] {
    return this.sent.filter((r) => r.at >= from && r.at < to);
  }
}

/** A client for `server` (mTLS, from its kubeconfig) whose requests `log` records. */
export async function loggedClientFor(server: TestApiServer, log: RequestLog, options: KubeClientOptions = {}): Promise<KubeClient> {
  const path = await server.writeKubeconfig();
  return new KubeClient(await loadKubeConfig({ path, env: () => undefined }), { ...options, createHttpClient: log.createHttpClient });
}

/** A {@link RecordingSink} that also keeps when each key last changed (`performance.now()`). */
export class TimedSink extends RecordingSink {
  readonly changedAt = new Map<string, number>();

  override apply(ev: CacheEvent): void {
    super.apply(ev);
    this.changedAt.set(ev.key, performance.now());
  }
}

/** When an outage began and ended, and when its change was delivered (`performance.now()` times). */
export interface OutageTimes {
  readonly downAt: number;
  readonly upAt: number;
  readonly recoveredAt: number;
}

/**
 * Take `server` down (connections refused) for `ms`, create `change` (a Service or EndpointSlice, stored while
 * down), bring it up on the same port and await the change in `sink`. `upAt` is when the port answers again.
 */
export async function outage(
  server: TestApiServer,
  { ms, sink, change, timeoutMs = 10_000 }: { ms: number; sink: TimedSink; change: object; timeoutMs?: number },
): Promise<OutageTimes> {
  const meta = (change as { metadata: { name: string; namespace?: string } }).metadata;
  const key = `${meta.namespace ?? "default"}/${meta.name}`;
  const downAt = performance.now();
  await server.down();
  server.create(change);
  await new Promise((resolve) => setTimeout(resolve, ms - (performance.now() - downAt)));
  await server.up();
  const upAt = performance.now();
  const recoveredAt = await waitFor(() => sink.changedAt.get(key), {
    timeoutMs,
    intervalMs: 20,
    what: `"${key}" to arrive after the outage`,
  });
  return { downAt, upAt, recoveredAt };
}
