/**
 * The state file: its format (round trip, version and schema checks, bad objects skipped), atomic
 * writes, and PersistentSource's replay / reconcile / debounce over a real ManifestSource on temp files.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManifestSource } from "../../src/kube/manifests.ts";
import type { EndpointSlice, KindName, Node, Service } from "../../src/kube/objects.ts";
import type { CacheEvent, Source, SourceSink, SyncStatus } from "../../src/kube/source.ts";
import {
  decodeState,
  encodeState,
  PersistentSource,
  readStateFile,
  STATE_FILE_VERSION,
  type SavedState,
  StateFileError,
  writeStateFile,
} from "../../src/kube/state-file.ts";
import { buildSnapshot } from "../../src/model/build.ts";
import { ModelStore } from "../../src/model/store.ts";
import type { Logger } from "../../src/log.ts";
import { waitFor } from "../support/wait.ts";

const service = (name: string, nodePort = 30080): Service => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "shop", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
  spec: { type: "NodePort", ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080, nodePort }] },
} as unknown as Service);

const slice = (name: string, svc: string, ip: string): EndpointSlice => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: { name, namespace: "shop", labels: { "kubernetes.io/service-name": svc } },
  addressType: "IPv4",
  ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  endpoints: [{ addresses: [ip], conditions: { ready: true }, nodeName: "node-a" }],
} as unknown as EndpointSlice);

const node = (name = "node-a"): Node => ({ apiVersion: "v1", kind: "Node", metadata: { name }, status: { addresses: [] } } as unknown as Node);

/** A state from raw objects, parsed the way the sources parse them. */
function stateOf(objects: { services?: Service[]; slices?: EndpointSlice[]; nodes?: Node[] }, savedAt = Date.UTC(2026, 0, 2, 3, 4, 5)): SavedState {
  const text = JSON.stringify({
    kind: "KubegateState",
    version: 1,
    savedAt: new Date(savedAt).toISOString(),
    node: "node-a",
    objects: { Service: objects.services ?? [], EndpointSlice: objects.slices ?? [], Node: objects.nodes ?? [] },
  });
  return decodeState(text).state;
}

/** A logger that keeps lines. */
function memoryLog() {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, ...(fields ? { fields } : {}) });
  const log: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  return { log, lines };
}

/** A sink that records every call. */
function recordingSink() {
  const calls: (CacheEvent | { synced: KindName })[] = [];
  const sink: SourceSink = { apply: (e) => void calls.push(e), synced: (kind) => void calls.push({ synced: kind }) };
  return { sink, calls };
}

/** A live source that never syncs (the API server is down). */
class DownSource implements Source {
  started = false;
  start(): void {
    this.started = true;
  }
  status(): readonly SyncStatus[] {
    return [];
  }
  async [Symbol.asyncDispose](): Promise<void> {}
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kubegate-state-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("format", () => {
  test("encode then decode gives the same objects, sorted by key, and the time and node", () => {
    const state = stateOf({ services: [service("web"), service("api", 30081)], slices: [slice("web-1", "web", "10.0.0.1")], nodes: [node()] });
    const text = encodeState(state);
    expect(text).toStartWith(`{\n  "kind": "KubegateState",\n  "version": ${STATE_FILE_VERSION},\n  "savedAt": "2026-01-02T03:04:05.000Z",\n  "node": "node-a",`);
    expect(text.indexOf('"name":"api"')).toBeLessThan(text.indexOf('"name":"web"'));
    const back = decodeState(text);
    expect(back.skipped).toEqual([]);
    expect(back.state).toEqual(state);
    expect([...back.state.objects.Service.keys()]).toEqual(["shop/api", "shop/web"]);
  });

  test("an empty state round-trips", () => {
    const state = stateOf({});
    expect(decodeState(encodeState(state)).state).toEqual(state);
  });

  test.each([
    ["a torn write (truncated JSON)", (t: string) => t.slice(0, t.length / 2), "node-a", /^State file "f" is not valid JSON: /],
    ["another format version", (t: string) => t.replace('"version": 1', '"version": 2'), "node-a", /^State file "f" has format version 2; this kubegate reads version 1$/],
    ["a missing version", (t: string) => t.replace('"version": 1,', ""), "node-a", /^State file "f" has format version undefined; this kubegate reads version 1$/],
    ["another kind of file", (t: string) => t.replace("KubegateState", "ConfigMap"), "node-a", /^State file "f" is not a kubegate state file: /],
    ["a bad savedAt", (t: string) => t.replace(/"savedAt": "[^"]+"/, '"savedAt": "yesterday"'), "node-a", /^State file "f" is not a kubegate state file: .*timestamp/],
    ["objects that are not lists", (t: string) => JSON.stringify({ ...JSON.parse(t), objects: { Service: {} } }), "node-a", /^State file "f" is not a kubegate state file: /],
    ["another node's file", (t: string) => t, "node-b", /^State file "f" was written for node "node-a", not "node-b"$/],
  ])("rejects %s with a clear message", (_, mangle, expectedNode, message) => {
    const text = mangle(encodeState(stateOf({ services: [service("web")] })));
    let error: unknown;
    try {
      decodeState(text, { path: "f", expectedNode });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(StateFileError);
    expect((error as Error).name).toBe("StateFileError");
    expect((error as Error).message).toMatch(message);
  });

  test("an object that no longer validates is skipped and reported; the others are kept", () => {
    const text = JSON.stringify({
      kind: "KubegateState",
      version: 1,
      savedAt: "2026-01-02T03:04:05.000Z",
      node: "node-a",
      objects: { Service: [service("web"), { metadata: { name: "broken", namespace: "shop" }, spec: { ports: "nope" } }, 42], EndpointSlice: [slice("web-1", "web", "10.0.0.1")] },
    });
    const { state, skipped } = decodeState(text);
    expect([...state.objects.Service.keys()]).toEqual(["shop/web"]);
    expect(state.objects.EndpointSlice.size).toBe(1);
    expect(state.objects.Node.size).toBe(0);
    expect(skipped).toHaveLength(2);
    expect(skipped[0]).toStartWith('Service "shop/broken": ');
    expect(skipped[1]).toStartWith('Service "#2": ');
  });
});

describe("reading and writing files", () => {
  test("a missing file is `missing`; a corrupt or unreadable one is `invalid`; neither throws", async () => {
    expect(await readStateFile(join(dir, "none.json"))).toEqual({ kind: "missing" });
    writeFileSync(join(dir, "bad.json"), "{ not json");
    const bad = await readStateFile(join(dir, "bad.json"));
    expect(bad.kind).toBe("invalid");
    expect(bad.kind === "invalid" && bad.error.message).toStartWith(`State file "${join(dir, "bad.json")}" is not valid JSON`);
    const unreadable = await readStateFile(dir); // a directory
    expect(unreadable.kind === "invalid" && unreadable.error.message).toStartWith(`Cannot read state file "${dir}": `);
  });

  test("writes replace the file atomically and leave no temp file behind", async () => {
    const path = join(dir, "state.json");
    const first = encodeState(stateOf({ services: [service("web")] }));
    await writeStateFile(path, first);
    expect(readFileSync(path, "utf8")).toBe(first);
    const second = encodeState(stateOf({ services: [service("web"), service("api", 30081)] }));
    await writeStateFile(path, second);
    expect(readFileSync(path, "utf8")).toBe(second);
    expect(readdirSync(dir)).toEqual(["state.json"]);
  });

  test("a write that cannot happen throws a StateFileError and leaves nothing behind", async () => {
    const path = join(dir, "missing-dir", "state.json");
    const error = await writeStateFile(path, "{}").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StateFileError);
    expect((error as Error).message).toStartWith(`Cannot write state file "${path}": `);
    expect((error as Error).cause).toBeDefined();
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe("PersistentSource", () => {
  const manifests = (path: string, objects: object[]) => writeFileSync(path, JSON.stringify({ kind: "List", items: objects }));

  test("without a state file: nothing is replayed, and the live state is written once every kind has synced", async () => {
    const statePath = join(dir, "state.json");
    const manifestPath = join(dir, "m.json");
    manifests(manifestPath, [service("web"), slice("web-1", "web", "10.0.0.1"), node()]);
    const inner = new ManifestSource(manifestPath);
    await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a" });
    const { sink, calls } = recordingSink();
    source.start(sink);
    expect(source.state().stale).toBe(false);
    await inner.settled();
    expect(calls.filter((c) => "type" in c).map((c) => `${(c as CacheEvent).type} ${(c as CacheEvent).key}`).sort()).toEqual(["upsert node-a", "upsert shop/web", "upsert shop/web-1"]);
    await waitFor(() => source.state().writes === 1, { what: "the first write" });
    const read = await readStateFile(statePath, { expectedNode: "node-a" });
    expect(read.kind).toBe("ok");
    if (read.kind !== "ok") return;
    expect([...read.state.objects.Service.keys()]).toEqual(["shop/web"]);
    expect([...read.state.objects.EndpointSlice.keys()]).toEqual(["shop/web-1"]);
    expect([...read.state.objects.Node.keys()]).toEqual(["node-a"]);
  });

  test("changes are written at most once per interval, the last one wins", async () => {
    const statePath = join(dir, "state.json");
    const manifestPath = join(dir, "m.json");
    manifests(manifestPath, [service("web"), node()]);
    const inner = new ManifestSource(manifestPath);
    await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", minIntervalMs: 400 });
    source.start(recordingSink().sink);
    await waitFor(() => source.state().writes === 1, { what: "the first write" });
    const firstAt = source.state().lastWriteAt!;
    for (let i = 1; i <= 5; i++) {
      manifests(manifestPath, [service("web"), node(), ...Array.from({ length: i }, (_, j) => service(`s${j}`, 30100 + j))]);
      await inner.reload();
    }
    expect(source.state().writes).toBe(1); // all five inside the interval
    await waitFor(() => source.state().writes === 2, { what: "the debounced write" });
    expect(source.state().lastWriteAt! - firstAt).toBeGreaterThanOrEqual(400);
    const read = await readStateFile(statePath);
    expect(read.kind === "ok" && read.state.objects.Service.size).toBe(6);
  });

  test("replays the file before the live source starts (stale), then deletes what the live source no longer has", async () => {
    const statePath = join(dir, "state.json");
    await writeStateFile(statePath, encodeState(stateOf({ services: [service("web"), service("gone", 30081)], slices: [slice("web-1", "web", "10.0.0.1")], nodes: [node()] })));
    const manifestPath = join(dir, "m.json");
    // Live: "gone" was deleted, web-1 moved to a new IP, and a new slice appeared.
    manifests(manifestPath, [service("web"), slice("web-1", "web", "10.0.0.9"), slice("web-2", "web", "10.0.0.2"), node()]);
    const inner = new ManifestSource(manifestPath);
    const { log, lines } = memoryLog();
    await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", log });
    const { sink, calls } = recordingSink();
    source.start(sink);
    // Synchronously: the replay, all kinds synced, before anything live.
    const replay = calls.splice(0);
    expect(replay.filter((c) => "type" in c).map((c) => (c as CacheEvent).key).sort()).toEqual(["node-a", "shop/gone", "shop/web", "shop/web-1"]);
    expect(replay.slice(-3)).toEqual([{ synced: "Service" }, { synced: "EndpointSlice" }, { synced: "Node" }]);
    expect(source.state()).toMatchObject({ stale: true, replayed: 4, removed: 0, savedAt: Date.UTC(2026, 0, 2, 3, 4, 5) });
    expect(lines.some((l) => l.msg.startsWith("State file replayed"))).toBe(true);

    await inner.settled();
    expect(source.state()).toMatchObject({ stale: false, removed: 1 });
    const deletes = calls.filter((c): c is CacheEvent => "type" in c && c.type === "delete").map((c) => `${c.kind} ${c.key}`);
    expect(deletes).toEqual(["Service shop/gone"]);
    await waitFor(() => source.state().writes === 1, { what: "the write after the live sync" });
    const read = await readStateFile(statePath);
    expect(read.kind === "ok" && [...read.state.objects.Service.keys()]).toEqual(["shop/web"]);
    expect(read.kind === "ok" && read.state.objects.EndpointSlice.get("shop/web-1")?.endpoints?.[0]?.addresses).toEqual(["10.0.0.9"]);
  });

  test("the replayed objects build the same model as the objects themselves", async () => {
    const objects = { services: [service("web"), service("api", 30081)], slices: [slice("web-1", "web", "10.0.0.1"), slice("api-1", "api", "10.0.0.2")], nodes: [node()] };
    const statePath = join(dir, "state.json");
    await writeStateFile(statePath, encodeState(stateOf(objects)));
    await using source = await PersistentSource.open(new DownSource(), { path: statePath, nodeName: "node-a" });
    const options = { nodeName: "node-a", hostAddresses: ["127.0.0.1"], nodePortAddresses: [], serviceProxyName: "kubegate", allServices: false };
    using store = new ModelStore(options, { onSnapshot: () => {}, schedule: () => {} });
    source.start(store);
    const replayed = store.flush()!;
    const parsed = stateOf(objects).objects;
    const direct = buildSnapshot({ services: [...parsed.Service.values()], endpointSlices: [...parsed.EndpointSlice.values()], nodes: [...parsed.Node.values()] }, options);
    expect(replayed.entrypoints.map((e) => [e.key, e.cluster.endpoints.map((x) => x.address)])).toEqual(direct.entrypoints.map((e) => [e.key, e.cluster.endpoints.map((x) => x.address)]));
    expect(replayed.entrypoints).toHaveLength(2);
  });

  test("while the live source has not synced, the file is never rewritten, not even on dispose", async () => {
    const statePath = join(dir, "state.json");
    const text = encodeState(stateOf({ services: [service("web")] }));
    await writeStateFile(statePath, text);
    const down = new DownSource();
    const source = await PersistentSource.open(down, { path: statePath, nodeName: "node-a", minIntervalMs: 0 });
    source.start(recordingSink().sink);
    expect(down.started).toBe(true);
    expect(source.state().stale).toBe(true);
    await source[Symbol.asyncDispose]();
    expect(source.state().writes).toBe(0);
    expect(readFileSync(statePath, "utf8")).toBe(text);
  });

  test("dispose writes the live state a last time", async () => {
    const statePath = join(dir, "state.json");
    const manifestPath = join(dir, "m.json");
    manifests(manifestPath, [service("web"), node()]);
    const inner = new ManifestSource(manifestPath);
    const source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", minIntervalMs: 60_000 });
    source.start(recordingSink().sink);
    await waitFor(() => source.state().writes === 1, { what: "the first write" });
    manifests(manifestPath, [service("web"), service("api", 30081), node()]);
    await inner.reload();
    expect(source.state().writes).toBe(1); // the interval holds the change back...
    await source[Symbol.asyncDispose]();
    expect(source.state().writes).toBe(2); // ...and shutdown writes it
    const read = await readStateFile(statePath);
    expect(read.kind === "ok" && read.state.objects.Service.size).toBe(2);
  });

  test("a corrupt file or another node's is reported and ignored, then replaced by the live state", async () => {
    for (const [content, error] of [
      ["{ torn", /is not valid JSON/],
      [encodeState({ ...stateOf({ services: [service("web")] }), node: "node-b" }), /was written for node "node-b", not "node-a"/],
    ] as const) {
      const statePath = join(dir, "state.json");
      writeFileSync(statePath, content);
      const manifestPath = join(dir, "m.json");
      manifests(manifestPath, [service("api", 30081), node()]);
      const { log, lines } = memoryLog();
      const inner = new ManifestSource(manifestPath);
      await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", log });
      const { sink, calls } = recordingSink();
      source.start(sink);
      expect(calls).toEqual([]); // nothing replayed
      expect(source.state()).toMatchObject({ stale: false, replayed: 0 });
      expect(source.state().loadError).toMatch(error);
      expect(lines.find((l) => l.level === "warn")?.msg).toBe("State file ignored");
      await waitFor(() => source.state().writes === 1, { what: "the live state to be written" });
      const read = await readStateFile(statePath, { expectedNode: "node-a" });
      expect(read.kind === "ok" && [...read.state.objects.Service.keys()]).toEqual(["shop/api"]);
    }
  });

  test("a failed write is counted and logged, and the next write succeeds; temp files of a crashed writer are removed at start", async () => {
    const sub = join(dir, "sub");
    mkdirSync(sub);
    writeFileSync(join(sub, ".state.json.deadbeef.tmp"), "half");
    const statePath = join(sub, "state.json");
    const manifestPath = join(dir, "m.json");
    manifests(manifestPath, [service("web"), node()]);
    const { log, lines } = memoryLog();
    const inner = new ManifestSource(manifestPath);
    const source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", log, minIntervalMs: 0 });
    expect(existsSync(join(sub, ".state.json.deadbeef.tmp"))).toBe(false);
    rmSync(sub, { recursive: true }); // the directory vanishes: writes fail
    source.start(recordingSink().sink);
    await waitFor(() => source.state().writeErrors === 1, { what: "a failed write" });
    expect(source.state().lastWriteError).toStartWith(`Cannot write state file "${statePath}"`);
    expect(lines.filter((l) => l.msg === "State file not written")).toHaveLength(1);
    mkdirSync(sub);
    await source[Symbol.asyncDispose](); // the shutdown write succeeds
    expect(source.state()).toMatchObject({ writes: 1, writeErrors: 1, lastWriteError: undefined });
    expect(lines.some((l) => l.msg === "State file written again")).toBe(true);
  });
});
