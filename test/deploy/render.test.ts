/**
 * The kustomizations render, and test/deploy/render.ts (which the RBAC enforcement relies on) renders them
 * exactly as `kubectl kustomize` does, where kubectl is installed.
 */
import { describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { idOf, KustomizeError, renderKustomization, repoRoot, type Manifest } from "./render.ts";

const KUSTOMIZATIONS = ["deploy/base", "deploy/overlays/edge", "deploy/overlays/lb-controller", "deploy/local"] as const;
const kubectl = Bun.which("kubectl");

const byId = (objects: readonly Manifest[]) => new Map(objects.map((o) => [idOf(o), o]));

async function kubectlKustomize(dir: string): Promise<Manifest[]> {
  const proc = Bun.spawn([kubectl!, "kustomize", join(repoRoot, dir)], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`kubectl kustomize ${dir} exited with ${code}: ${err}`);
  return parseAllDocuments(out).map((d) => d.toJS() as Manifest);
}

describe("kustomizations", () => {
  for (const dir of KUSTOMIZATIONS) {
    test(`${dir} renders Kubernetes objects with unique ids`, async () => {
      const objects = await renderKustomization(dir);
      expect(objects.length).toBeGreaterThan(0);
      for (const o of objects) {
        expect(o.apiVersion).toMatch(/^([a-z0-9.]+\/)?v\d+(beta\d+)?$/);
        expect(o.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
      }
      expect(byId(objects).size).toBe(objects.length);
    });

    test(`${dir}: the renderer agrees with kubectl kustomize`, async () => {
      const ours = byId(await renderKustomization(dir));
      const theirs = byId(await kubectlKustomize(dir));
      expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
      for (const [id, o] of ours) expect({ id, o }).toEqual({ id, o: theirs.get(id)! });
    });
  }
});

describe("the renderer refuses what it does not implement", () => {
  async function withKustomization(text: string, extra: Record<string, string> = {}) {
    const dir = await mkdtemp(join(tmpdir(), "kubegate-kustomize-"));
    await writeFile(join(dir, "kustomization.yaml"), text);
    for (const [name, body] of Object.entries(extra)) await writeFile(join(dir, name), body);
    return { dir, async [Symbol.asyncDispose]() { await rm(dir, { recursive: true, force: true }); } };
  }
  const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n";

  test("an unknown field is named", async () => {
    await using k = await withKustomization("namespace: other\nresources: [cm.yaml]\n", { "cm.yaml": cm });
    await expect(renderKustomization(k.dir)).rejects.toThrow(new KustomizeError(`Unsupported kustomization field "namespace" in "${join(k.dir, "kustomization.yaml")}": extend test/deploy/render.ts or avoid it`));
  });

  test("a strategic merge patch is refused, a JSON 6902 one applied", async () => {
    const smp = "resources: [cm.yaml]\npatches:\n  - target: {kind: ConfigMap}\n    patch: |-\n      data:\n        a: c\n";
    await using bad = await withKustomization(smp, { "cm.yaml": cm });
    await expect(renderKustomization(bad.dir)).rejects.toThrow("a strategic merge patch is not supported");
    const json = "resources: [cm.yaml]\npatches:\n  - target: {kind: ConfigMap, name: x}\n    patch: |-\n      - op: replace\n        path: /data/a\n        value: c\n      - op: add\n        path: /data/b\n        value: d\n";
    await using good = await withKustomization(json, { "cm.yaml": cm });
    expect((await renderKustomization(good.dir))[0]!["data"]).toEqual({ a: "c", b: "d" });
  });

  test("a patch whose target matches nothing, or whose path is missing, is an error", async () => {
    await using k = await withKustomization("resources: [cm.yaml]\npatches:\n  - target: {kind: Secret}\n    patch: '[]'\n", { "cm.yaml": cm });
    await expect(renderKustomization(k.dir)).rejects.toThrow("no resource matches target");
    await using p = await withKustomization("resources: [cm.yaml]\npatches:\n  - target: {kind: ConfigMap}\n    patch: '[{op: replace, path: /data/zz, value: 1}]'\n", { "cm.yaml": cm });
    await expect(renderKustomization(p.dir)).rejects.toThrow(`cannot replace "/data/zz": it does not exist`);
  });
});
