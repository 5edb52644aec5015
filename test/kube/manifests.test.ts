/**
 * The manifest source: files in, the same CacheEvents a cluster would produce out; edits on disk are
 * picked up by the watcher; bad input is reported and loses nothing else.
 */
import { describe, expect, test } from "bun:test";
import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KindName } from "../../src/kube/objects.ts";
import { ManifestSource, parseManifests } from "../../src/kube/manifests.ts";
import type { CacheEvent, SourceSink } from "../../src/kube/source.ts";
import { waitFor } from "../support/wait.ts";

class Recorder implements SourceSink {
  events: CacheEvent[] = [];
  synced = (_kind: KindName) => void this.syncs++;
  syncs = 0;
  apply(event: CacheEvent) {
    this.events.push(event);
  }
  /** "type kind key" lines, for whole-list assertions. */
  lines() {
    return this.events.map((e) => `${e.type} ${e.kind} ${e.key}`);
  }
}

const svc = (name: string, port = 80) => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: demo }
spec:
  type: NodePort
  ports: [{ name: http, port: ${port}, nodePort: 30080 }]
`;
const slice = (name: string) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${name}, namespace: demo, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
endpoints: [{ addresses: [127.0.0.1] }]
ports: [{ name: http, port: 8080 }]
`;

async function tempDir() {
  const dir = await mkdtemp(join(tmpdir(), "kubegate-manifests-"));
  return { dir, [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
}

describe("parseManifests", () => {
  test("multi-document YAML, JSON arrays and Lists; other kinds are ignored", () => {
    const yaml = parseManifests(`${svc("a")}---\n${slice("a-1")}---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\n`, "f.yaml");
    expect(yaml.objects.map((o) => `${o.kind} ${o.key} ${o.event.type}`)).toEqual([
      "Service demo/a upsert",
      "EndpointSlice demo/a-1 upsert",
    ]);
    const list = parseManifests(
      JSON.stringify({ kind: "List", items: [{ apiVersion: "v1", kind: "Node", metadata: { name: "n1" } }] }),
      "l.json",
    );
    expect(list.objects.map((o) => `${o.kind} ${o.key}`)).toEqual(["Node n1"]);
    expect(list.errors).toEqual([]);
  });

  test("a malformed object is an invalid event naming the file; a syntax error is a file error", () => {
    const r = parseManifests(`${svc("good")}---\napiVersion: v1\nkind: Service\nmetadata: { name: bad, namespace: demo }\nspec: { ports: [{ port: 99999 }] }\n`, "f.yaml");
    expect(r.objects.map((o) => o.event.type)).toEqual(["upsert", "invalid"]);
    const bad = r.objects[1]!.event;
    expect(bad.type === "invalid" && bad.message).toStartWith("f.yaml document 1: ");
    expect(parseManifests("kind: [unclosed", "broken.yaml").errors[0]).toStartWith("broken.yaml document 0:");
    expect(parseManifests("{ nope", "broken.json").errors[0]).toStartWith("broken.json: invalid JSON");
  });
});

describe("ManifestSource", () => {
  test("loads a directory, then follows edits, additions and deletions with the matching events", async () => {
    await using tmp = await tempDir();
    await writeFile(join(tmp.dir, "svc.yaml"), svc("web"));
    await writeFile(join(tmp.dir, "slices.yaml"), slice("web-1"));
    await writeFile(join(tmp.dir, "notes.txt"), "not a manifest");
    const sink = new Recorder();
    await using source = new ManifestSource(tmp.dir, { debounceMs: 10 });
    source.start(sink);
    await source.settled();
    expect(sink.lines().sort()).toEqual(["upsert EndpointSlice demo/web-1", "upsert Service demo/web"]);
    expect(sink.syncs).toBe(3);
    expect(source.status().every((s) => s.synced && s.phase === "static")).toBe(true);

    sink.events = [];
    await writeFile(join(tmp.dir, "svc.yaml"), svc("web", 81)); // changed
    await waitFor(() => sink.events.length > 0, { what: "the edit to be picked up" });
    await source.settled();
    expect(sink.lines()).toEqual(["upsert Service demo/web"]);

    sink.events = [];
    await unlink(join(tmp.dir, "slices.yaml"));
    await waitFor(() => sink.events.length > 0, { what: "the deletion to be picked up" });
    await source.settled();
    expect(sink.lines()).toEqual(["delete EndpointSlice demo/web-1"]);
  });

  test("a broken file is reported and everything else keeps being served", async () => {
    await using tmp = await tempDir();
    await writeFile(join(tmp.dir, "a.yaml"), svc("web"));
    await writeFile(join(tmp.dir, "b.yaml"), "kind: [unclosed");
    const errors: string[] = [];
    const sink = new Recorder();
    await using source = new ManifestSource(tmp.dir, { onError: (m) => errors.push(m) });
    source.start(sink);
    await source.settled();
    expect(sink.lines()).toEqual(["upsert Service demo/web"]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain("b.yaml document 0");
    expect(source.status()[0]!.lastError).toContain("b.yaml");
  });

  test("a path that does not exist is an error, not a crash; the kinds still count as synced", async () => {
    const errors: string[] = [];
    const sink = new Recorder();
    await using source = new ManifestSource("/nonexistent/kubegate", { onError: (m) => errors.push(m) });
    source.start(sink);
    await source.settled();
    expect(errors.sort()).toEqual([
      expect.stringMatching(/^Cannot load manifests from "\/nonexistent\/kubegate"/),
      expect.stringMatching(/^Cannot watch "\/nonexistent\/kubegate"/),
    ]);
    expect(sink.syncs).toBe(3);
  });
});
