/**
 * PersistentSource's writer role (issue 14): a gateway that starts beside the node's incumbent opens the state file
 * `paused` (it reads and replays it, but neither writes it nor removes the incumbent's temp files) until it holds the
 * node; `pauseWrites`/`resumeWrites` switch the role at run time. A real ManifestSource on temp files.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManifestSource } from "../../src/kube/manifests.ts";
import { PersistentSource, readStateFile } from "../../src/kube/state-file.ts";
import { rawNode } from "../support/controller-objects.ts";
import { RecordingSink, service } from "../support/kube-sinks.ts";
import { waitFor } from "../support/wait.ts";

let dir: string;
let statePath: string;
let manifestPath: string;
/** A temp file of a write in flight (the incumbent's), beside the state file. */
let tempPath: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kubegate-state-writer-"));
  statePath = join(dir, "state.json");
  manifestPath = join(dir, "m.json");
  tempPath = join(dir, ".state.json.deadbeef.tmp");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** The live cluster (as `path` says it): these Services and the node. */
const clusterAt = (path: string, ...services: string[]) =>
  writeFileSync(path, JSON.stringify({ kind: "List", items: [...services.map((s) => service(s)), rawNode("node-a", ["10.0.0.1"])] }));
const cluster = (...services: string[]) => clusterAt(manifestPath, ...services);

/** The Services the state file holds. */
async function savedServices(): Promise<string[]> {
  const read = await readStateFile(statePath, { expectedNode: "node-a" });
  if (read.kind !== "ok") throw new Error(`Expected a state file, got ${read.kind}`);
  return [...read.state.objects.Service.keys()];
}

/** The incumbent's file: its live state of `services`, written by a source that then stopped (and wrote it again). */
async function incumbentWrote(...services: string[]): Promise<string> {
  const path = join(dir, "incumbent.json");
  clusterAt(path, ...services);
  {
    await using source = await PersistentSource.open(new ManifestSource(path), { path: statePath, nodeName: "node-a" });
    source.start(new RecordingSink());
    await waitFor(() => source.state().writes === 1, { what: "the incumbent's write" });
  }
  return readFileSync(statePath, "utf8");
}

describe("PersistentSource writer role", () => {
  test("paused at open: the file is replayed but never written, not even on dispose, and temp files beside it are left alone", async () => {
    const text = await incumbentWrote("web");
    writeFileSync(tempPath, "half");
    cluster("web", "api"); // what this process's source says
    const inner = new ManifestSource(manifestPath);
    await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", minIntervalMs: 0, paused: true });
    expect(existsSync(tempPath)).toBe(true);
    const sink = new RecordingSink();
    source.start(sink);
    expect(sink.keys("Service", "upsert")).toEqual(["default/web"]); // the replay
    await inner.settled();
    expect(source.state()).toMatchObject({ stale: false, writer: false, writes: 0 });
    expect(sink.keys("Service", "upsert")).toContain("default/api"); // the live state is served...
    await source.flush();
    await source[Symbol.asyncDispose]();
    expect(source.state()).toMatchObject({ writer: false, writes: 0, writeErrors: 0 }); // ...but not written
    expect(readFileSync(statePath, "utf8")).toBe(text);
    expect(readFileSync(tempPath, "utf8")).toBe("half");
  });

  test("resumeWrites: the writer role, and the live state is written at once (not after the interval)", async () => {
    await incumbentWrote("web");
    cluster("web", "api");
    const inner = new ManifestSource(manifestPath);
    await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", minIntervalMs: 60_000, paused: true });
    source.start(new RecordingSink());
    await inner.settled();
    await source.flush();
    expect(source.state()).toMatchObject({ writer: false, writes: 0 });
    source.resumeWrites();
    expect(source.state().writer).toBe(true);
    await waitFor(() => source.state().writes === 1, { what: "the write after resumeWrites" });
    expect(await savedServices()).toEqual(["default/api", "default/web"]);
  });

  test("pauseWrites holds further writes until resumeWrites, which writes what changed meanwhile", async () => {
    cluster("web");
    const inner = new ManifestSource(manifestPath);
    await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", minIntervalMs: 0 });
    source.start(new RecordingSink());
    await waitFor(() => source.state().writes === 1, { what: "the first write" });
    expect(source.state().writer).toBe(true);
    source.pauseWrites();
    expect(source.state().writer).toBe(false);
    cluster("web", "api");
    await inner.reload();
    await source.flush();
    expect(source.state().writes).toBe(1);
    expect(await savedServices()).toEqual(["default/web"]);
    source.resumeWrites();
    await waitFor(() => source.state().writes === 2, { what: "the write after resumeWrites" });
    expect(source.state()).toMatchObject({ writer: true, writes: 2, writeErrors: 0 });
    expect(await savedServices()).toEqual(["default/api", "default/web"]);
  });

  test("resumeWrites writes the file even when nothing changed since the pause (the other process wrote it meanwhile)", async () => {
    cluster("web");
    const inner = new ManifestSource(manifestPath);
    await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", minIntervalMs: 0 });
    source.start(new RecordingSink());
    await waitFor(() => source.state().writes === 1, { what: "the first write" });
    source.pauseWrites();
    expect(await incumbentWrote("other")).toContain('"name":"other"');
    source.resumeWrites();
    await waitFor(() => source.state().writes === 2, { what: "the write after resumeWrites" });
    expect(await savedServices()).toEqual(["default/web"]);
  });

  test("pauseWrites cancels a write the interval held back: its time passes without a write, and dispose writes nothing", async () => {
    cluster("web");
    const inner = new ManifestSource(manifestPath);
    await using source = await PersistentSource.open(inner, { path: statePath, nodeName: "node-a", minIntervalMs: 300 });
    source.start(new RecordingSink());
    await waitFor(() => source.state().writes === 1, { what: "the first write" });
    cluster("web", "api");
    await inner.reload(); // held back by the interval: a write is due within 300 ms
    source.pauseWrites();
    // A timer armed after the source's, for at least as long, fires after the held-back write was due.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await source.flush(); // waits for a write in flight, if one started
    expect(source.state()).toMatchObject({ writer: false, writes: 1 });
    await source[Symbol.asyncDispose]();
    expect(source.state()).toMatchObject({ writer: false, writes: 1 });
    expect(await savedServices()).toEqual(["default/web"]);
  });
});
