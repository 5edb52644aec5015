/**
 * `kubegate check` as a user runs it: a child process (`bun src/main.ts check ...`); stdout, stderr
 * and the exit code are asserted.
 */
import { describe, expect, test } from "bun:test";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startApiServer } from "./support/apiserver.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const demoFlags = ["--hostname-override", "demo-node", "--nodeport-addresses", "127.0.0.0/8", "--host-addresses", "127.0.0.1"];

async function check(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = Bun.spawn([process.execPath, "src/main.ts", "check", ...args], { cwd: root, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { code, stdout, stderr };
}

async function tempDir() {
  const dir = await mkdtemp(join(tmpdir(), "kubegate-check-"));
  return { dir, [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
}

const service = (name: string, nodePort: number, created: string, extra = "") => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: demo
  creationTimestamp: "${created}"
  labels: { service.kubernetes.io/service-proxy-name: kubegate }
spec:
  type: NodePort
  ports: [{ name: http, port: 80, nodePort: ${nodePort}, appProtocol: http }]
${extra}`;

describe("kubegate check", () => {
  test("the demo manifests: a summary of what would be served, exit 0", async () => {
    const r = await check(["--manifests", "deploy/demo", ...demoFlags]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'Source: manifests "deploy/demo"',
        "Node: demo-node (zone demo-zone-a)",
        "",
        "Entrypoints (2):",
        "  TYPE      NAME           PROTOCOL  LISTEN           ENDPOINTS",
        "  NodePort  demo/echo:tcp  tcp       127.0.0.1:30090  1 serving of 1",
        "  NodePort  demo/web:http  http      127.0.0.1:30080  2 serving of 2",
        "",
        "OK: 2 entrypoints, 0 warnings, 0 errors",
        "",
      ].join("\n"),
    );
  });

  test("a malformed Service, a port conflict and a YAML error: every one shown, the rest summarised, exit 1", async () => {
    await using tmp = await tempDir();
    await cp(join(root, "deploy/demo"), tmp.dir, { recursive: true });
    await writeFile(
      join(tmp.dir, "zz-bad.yaml"),
      [
        service("broken", 30081, "2026-01-01T00:00:00Z").replace(/ports: .*/, 'ports: "80"'),
        service("clash", 30080, "2026-02-01T00:00:00Z"), // younger than demo/web: loses port 30080
      ].join("---\n"),
    );
    await writeFile(join(tmp.dir, "zz-syntax.yaml"), "kind: Service\nmetadata: [\n");
    const r = await check(["--manifests", tmp.dir, ...demoFlags]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("  NodePort  demo/clash:http  http      127.0.0.1:30080  not served (see errors)\n");
    expect(r.stdout).toContain("  NodePort  demo/web:http    http      127.0.0.1:30080  2 serving of 2\n");
    expect(r.stdout).toEndWith("FAILED: 3 entrypoints, 0 warnings, 3 errors\n");
    const lines = r.stderr.split("\n").filter((l) => /^(error|warning): /.test(l));
    expect(lines).toEqual([
      expect.stringMatching(/^error: .*zz-syntax\.yaml document 0: .* at line 3, column 1$/),
      'error: Entrypoint "NodePort/demo/clash:http": Port 30080 on 127.0.0.1 is already used by "demo/web:http"',
      expect.stringMatching(/^error: Service "demo\/broken": .*zz-bad\.yaml document 0: × Invalid type: Expected Array but received "80"$/),
    ]);
    expect(r.stderr).toContain("    → at spec.ports"); // valibot's path, indented under its error
  });

  test("a bad flag is a usage error: exit 2, nothing on stdout", async () => {
    const r = await check(["--manifests", "deploy/demo", "--nodeport-addresses", "10.0.0.0/33"]);
    expect(r).toEqual({ code: 2, stdout: "", stderr: expect.stringContaining('Invalid --nodeport-addresses "10.0.0.0/33"') });
    expect((await check(["--bogus"])).code).toBe(2);
  });

  test("a bad config file is a finding: every problem with its key path, exit 1", async () => {
    await using tmp = await tempDir();
    const file = join(tmp.dir, "kubegate.yaml");
    await writeFile(file, 'nodeportAddresses: [127.0.0.0/8]\nhostAddresses: ["127.0.0.1"]\ndrainGracePeriod: 30\n');
    const r = await check(["--config", file, "--manifests", "deploy/demo"]);
    expect(r).toEqual({
      code: 1,
      stdout: "",
      stderr: [
        `Invalid config "${file}": Unknown key "nodeportAddresses" (did you mean "nodePortAddresses"?)`,
        `Invalid config "${file}": at "drainGracePeriod": expected a duration like 500ms, 30s or 5m, got 30`,
        "",
      ].join("\n"),
    });
  });

  test("a good config file supplies what the flags do not", async () => {
    await using tmp = await tempDir();
    const file = join(tmp.dir, "kubegate.yaml");
    await writeFile(file, "manifests: deploy/demo\nhostnameOverride: demo-node\nnodePortAddresses: [127.0.0.0/8]\nhostAddresses: 127.0.0.1, ::1\n");
    const r = await check(["--config", file, "--host-addresses", "127.0.0.1"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Source: manifests "deploy/demo", config file "${file}"\n`);
    expect(r.stdout).toContain("  NodePort  demo/web:http  http      127.0.0.1:30080  2 serving of 2\n"); // the flag's host address won
  });

  test("--kubeconfig: lists the cluster once through the API client", async () => {
    await using api = await startApiServer();
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a", labels: { "topology.kubernetes.io/zone": "z1" } } });
    api.create({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
      spec: { type: "NodePort", ports: [{ name: "http", port: 80, nodePort: 31080, appProtocol: "http" }] },
    });
    api.create({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "web-a", namespace: "e2e", labels: { "kubernetes.io/service-name": "web" } },
      addressType: "IPv4",
      ports: [{ name: "http", port: 8080, protocol: "TCP" }],
      endpoints: [
        { addresses: ["10.0.0.1"], conditions: { ready: true }, nodeName: "node-a" },
        { addresses: ["10.0.0.2"], conditions: { ready: false }, nodeName: "node-a" },
      ],
    });
    const kubeconfig = await api.writeKubeconfig();
    const r = await check(["--kubeconfig", kubeconfig, "--hostname-override", "node-a", "--host-addresses", "127.0.0.1"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Source: cluster (kubeconfig "${kubeconfig}")\nNode: node-a (zone z1)\n`);
    expect(r.stdout).toContain("  NodePort  e2e/web:http  http      127.0.0.1:31080  1 serving of 2\n");

    // A forbidden list is an error that says which list.
    api.setAuthorizer((a) => a.resource !== "endpointslices");
    const denied = await check(["--kubeconfig", kubeconfig, "--hostname-override", "node-a", "--host-addresses", "127.0.0.1"]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toStartWith("error: Cannot list endpointslices: ");
    expect(denied.stderr).toContain("403");
  });
});
