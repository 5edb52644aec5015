/** Shared pieces of the kube suites: a sink that applies events to maps, and a cache-vs-server comparison. */
import { expect } from "bun:test";
import { KubeClient } from "../../src/kube/client.ts";
import { silentLogger, type Logger } from "../../src/log.ts";
import { loadKubeConfig } from "../../src/kube/kubeconfig.ts";
import { Kinds, parseObject, type KindName } from "../../src/kube/objects.ts";
import type { Reflector, ReflectorTuning } from "../../src/kube/reflector.ts";
import type { CacheEvent, SourceSink } from "../../src/kube/source.ts";
import type { KubeconfigOptions, TestApiServer } from "./apiserver.ts";
import { waitFor } from "./wait.ts";

/** What the sink holds for one key: the parsed object, or the validation message. */
export type Held = { object: unknown } | { invalid: string };

/** Applies every event to a map per kind, and keeps the event log. */
export class RecordingSink implements SourceSink {
  readonly events: CacheEvent[] = [];
  readonly state: Record<KindName, Map<string, Held>> = { Service: new Map(), EndpointSlice: new Map(), Node: new Map() };
  readonly syncs: KindName[] = [];

  apply(ev: CacheEvent): void {
    this.events.push(ev);
    const m = this.state[ev.kind];
    if (ev.type === "upsert") m.set(ev.key, { object: ev.object });
    else if (ev.type === "invalid") m.set(ev.key, { invalid: ev.message });
    else m.delete(ev.key);
  }

  synced(kind: KindName): void {
    this.syncs.push(kind);
  }

  /** Events of one kind and type, as keys. */
  keys(kind: KindName, type: CacheEvent["type"]): string[] {
    return this.events.filter((e) => e.kind === kind && e.type === type).map((e) => e.key);
  }
}

/** What the sink must hold for a kind, computed from the server's objects with the same schema. */
export function expected(server: TestApiServer, kind: KindName): Map<string, Held> {
  const out = new Map<string, Held>();
  for (const raw of server.items(Kinds[kind].plural) as { metadata: { name: string; namespace?: string } }[]) {
    const key = raw.metadata.namespace ? `${raw.metadata.namespace}/${raw.metadata.name}` : raw.metadata.name;
    const parsed = parseObject(kind, raw);
    out.set(key, parsed.ok ? { object: parsed.value } : { invalid: parsed.error });
  }
  return out;
}

/** Wait until the sink (and the reflector's own cache) equal the server's objects exactly. */
export async function expectInSync(
  server: TestApiServer,
  sink: RecordingSink,
  reflector: Reflector,
  timeoutMs = 5_000,
): Promise<void> {
  const kind = reflector.kind;
  await waitFor(
    () => Bun.deepEquals(sink.state[kind], expected(server, kind)) && sameVersions(server, reflector),
    { timeoutMs, what: `the ${kind} cache to match the server` },
  ).catch(() => {});
  expect(sink.state[kind]).toEqual(expected(server, kind));
  expect(versions(reflector)).toEqual(serverVersions(server, kind));
}

function versions(r: Reflector): Map<string, string | undefined> {
  return new Map([...r.entries()].map(([k, e]) => [k, e.resourceVersion]));
}

function serverVersions(server: TestApiServer, kind: KindName): Map<string, string | undefined> {
  return new Map(
    (server.items(Kinds[kind].plural) as { metadata: { name: string; namespace?: string; resourceVersion: string } }[]).map(
      (o) => [o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name, o.metadata.resourceVersion],
    ),
  );
}

function sameVersions(server: TestApiServer, r: Reflector): boolean {
  return Bun.deepEquals(versions(r), serverVersions(server, r.kind));
}

/** A client for the server from its own kubeconfig (mTLS by default). */
export async function clientFor(server: TestApiServer, options?: KubeconfigOptions): Promise<KubeClient> {
  const path = await server.writeKubeconfig(options);
  return new KubeClient(await loadKubeConfig({ path, env: () => undefined }));
}

/** Fast timings for tests: small bookmarks, a short watchdog, quick retries. */
export const fastTuning: ReflectorTuning = {
  pageSize: 500,
  inactivityTimeoutMs: 600,
  backoff: { baseMs: 20, capMs: 200 },
  log: silentLogger,
};

/** Server options matching {@link fastTuning}. */
export const BOOKMARK_MS = 150;

/** A minimal valid Service. */
export function service(name: string, ns = "default", port = 80): object {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: ns, labels: { app: name } },
    spec: { type: "ClusterIP", ports: [{ name: "http", port, protocol: "TCP" }] },
  };
}

/** A minimal valid EndpointSlice for `svc`. */
export function slice(name: string, svc: string, ips: string[], ns = "default"): object {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: ns, labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  };
}

/** A logger that keeps `level: msg {fields}` lines. */
export function captureLog(): { lines: string[]; log: Logger } {
  const lines: string[] = [];
  const at = (level: string) => (msg: string, fields?: object) => void lines.push(`${level}: ${msg} ${JSON.stringify(fields ?? {})}`);
  return { lines, log: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") } };
}
