/**
 * The kube client and reflector on Deno (`Deno.createHttpClient` with the kubeconfig's CA and client
 * certificate), against the test API server run by Bun as a separate process: mTLS sync, watch adds,
 * dropped watches, an outage, 410 relists. The Bun suite beside it (`reflector.test.ts`) covers the reflector itself.
 * Run by scripts/test.sh: `deno test -A --unstable-net --config tsconfig.deno.json test/kube/reflector.deno.ts`.
 */
import { KubeClient } from "../../src/kube/client.ts";
import { loadKubeConfig } from "../../src/kube/kubeconfig.ts";
import { Kinds, type KindName } from "../../src/kube/objects.ts";
import { Reflector } from "../../src/kube/reflector.ts";
import type { CacheEvent, SourceSink } from "../../src/kube/source.ts";
import { silentLogger } from "../../src/log.ts";
import { waitFor } from "../support/wait.ts";
import { startBunChild } from "../support/bun-child.deno.ts";


function assertEquals(actual: unknown, expected: unknown, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}:\n  expected ${e}\n  actual   ${a}`);
}

/** Start `bun test/support/apiserver-main.ts` and read its one JSON line. */
async function startApiServerProcess() {
  const info = await startBunChild<{ url: string; kubeconfig: string; controlUrl: string }>("test/support/apiserver-main.ts", ["--port", "0", "--bookmark-ms", "150"], "The test API server");
  const control = async (name: string, body: unknown = {}) => {
    const res = await fetch(`${info.controlUrl}/_control/${name}`, { method: "POST", body: JSON.stringify(body) });
    const json = await res.json();
    if (!res.ok) throw new Error(`Control "${name}" failed: ${JSON.stringify(json)}`);
    return json;
  };
  return Object.assign(info, { control });
}

class Sink implements SourceSink {
  readonly state = new Map<string, string | undefined>();
  readonly events: CacheEvent[] = [];
  synced_ = false;
  apply(ev: CacheEvent): void {
    this.events.push(ev);
    if (ev.type === "delete") this.state.delete(ev.key);
    else if (ev.type === "upsert") this.state.set(ev.key, ev.object.metadata.resourceVersion);
    else this.state.set(ev.key, "invalid");
  }
  synced(_kind: KindName): void {
    this.synced_ = true;
  }
}

const service = (name: string) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "default" },
  spec: { ports: [{ name: "http", port: 80 }] },
});

Deno.test("reflector under Deno: mTLS sync, adds, dropped watches, an outage, 410 relist", async (t) => {
  await using api = await startApiServerProcess();
  for (const name of ["a", "b", "c"]) await api.control("create", service(name));

  const conn = await loadKubeConfig({ path: api.kubeconfig, env: () => undefined });
  using client = new KubeClient(conn);
  const sink = new Sink();
  await using reflector = new Reflector({
    client,
    kind: "Service",
    sink,
    log: silentLogger,
    inactivityTimeoutMs: 1000,
    backoff: { baseMs: 20, capMs: 200 },
  });

  const serverState = async () => {
    const { items } = (await api.control("items", { resource: Kinds.Service.plural })) as {
      items: { metadata: { name: string; namespace: string; resourceVersion: string } }[];
    };
    return new Map(items.map((o) => [`${o.metadata.namespace}/${o.metadata.name}`, o.metadata.resourceVersion]));
  };
  const inSync = async (what: string) => {
    await waitFor(async () => JSON.stringify([...sink.state].sort()) === JSON.stringify([...(await serverState())].sort()), {
      what,
      timeoutMs: 10_000,
    }).catch(() => {});
    assertEquals([...sink.state].sort(), [...(await serverState())].sort(), what);
  };

  reflector.start();

  await t.step("initial sync over mTLS", async () => {
    await waitFor(() => sink.synced_, { what: "the first list", timeoutMs: 10_000 });
    await inSync("the initial sync");
    assertEquals([...sink.state.keys()], ["default/a", "default/b", "default/c"], "keys");
  });

  await t.step("an object added on the server arrives through the watch", async () => {
    await api.control("waitForWatches", { count: 1, resource: "services" });
    await api.control("create", service("d"));
    await inSync("the add");
    assertEquals(reflector.status().lists, 1, "lists");
  });

  await t.step("a dropped watch reconnects", async () => {
    const before = reflector.status().watches;
    await api.control("dropWatches");
    await api.control("create", service("e"));
    await api.control("remove", { resource: "services", namespace: "default", name: "a" });
    await inSync("recovery after the drop");
    await waitFor(() => reflector.status().watches > before, { what: "a new watch" });
  });

  await t.step("after a 3 s outage the watch is back within 3 s of the server's return, without a relist", async () => {
    await api.control("waitForWatches", { count: 1, resource: "services" });
    await api.control("down");
    await waitFor(() => reflector.status().phase === "backoff", { what: "the outage to be noticed", timeoutMs: 10_000 });
    await api.control("create", service("during-outage"));
    await new Promise((resolve) => setTimeout(resolve, 3000)); // the outage itself
    await api.control("up");
    const upAt = performance.now();
    await waitFor(() => sink.state.has("default/during-outage"), { what: "the change made during the outage", timeoutMs: 10_000 });
    const took = performance.now() - upAt;
    if (took >= 3000) throw new Error(`Back ${Math.round(took)} ms after the server's return: expected under 3000 ms`);
    await inSync("recovery after the outage");
    assertEquals(reflector.status().lists, 1, "lists");
  });

  await t.step("410 after compaction relists and emits the deletes", async () => {
    await api.control("waitForWatches", { count: 1, resource: "services" });
    await api.control("down");
    await waitFor(() => reflector.status().phase === "backoff", { what: "the outage to be noticed", timeoutMs: 10_000 });
    await api.control("remove", { resource: "services", namespace: "default", name: "b" });
    await api.control("create", service("f"));
    await api.control("compact", { notifyWatchers: false });
    await api.control("up");
    await waitFor(() => reflector.status().lists === 2, { what: "a relist", timeoutMs: 10_000 });
    await inSync("the relist");
    const deletes = sink.events.filter((e) => e.type === "delete").map((e) => e.key);
    assertEquals(deletes, ["default/a", "default/b"], "delete events");
  });

  await reflector.stop();
  assertEquals(reflector.status().phase, "stopped", "phase after stop");
});
