/**
 * The compiled binary, as an operator runs it: `npm run build` output (`dist/kubegate`, built here
 * when missing or older than the sources), `--help`, `--version`, `check`, and serving the demo
 * manifests to real clients (curl, a TCP socket) until SIGTERM drains it with exit code 0.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDemoBackends } from "../../src/demo-backends.ts";
import { lineMatching, tcpExchange } from "../support/child-io.ts";
import { flagSpecs } from "../../src/config/flags.ts";
import pkg from "../../package.json" with { type: "json" };

const root = fileURLToPath(new URL("../..", import.meta.url));
const binary = join(root, "dist/kubegate");

/** Newest mtime under `dir` (recursively). */
async function newest(dir: string): Promise<number> {
  let max = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    max = Math.max(max, e.isDirectory() ? await newest(p) : (await stat(p)).mtimeMs);
  }
  return max;
}

/** Build dist/kubegate unless it is newer than src/ and package.json. */
async function ensureBinary(): Promise<void> {
  const built = await stat(binary).then((s) => s.mtimeMs, () => 0);
  const sources = Math.max(await newest(join(root, "src")), (await stat(join(root, "package.json"))).mtimeMs);
  if (built > sources) return;
  const build = Bun.spawn(["bash", "scripts/build.sh"], { cwd: root, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(build.stdout).text(), new Response(build.stderr).text(), build.exited]);
  if (code !== 0) throw new Error(`scripts/build.sh failed (${code}): ${out}${err}`);
}


async function run(args: string[]) {
  const child = Bun.spawn([binary, ...args], { cwd: root, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { stdout, stderr, code };
}

const demoFlags = ["--manifests", "deploy/demo", "--hostname-override", "demo-node", "--nodeport-addresses", "127.0.0.0/8", "--host-addresses", "127.0.0.1"];

describe("dist/kubegate", () => {
  beforeAll(ensureBinary, 60_000);

  test("--version and --help", async () => {
    expect(await run(["--version"])).toEqual({ stdout: `kubegate ${pkg.version} (bun)\n`, stderr: "", code: 0 });
    const help = await run(["--help"]);
    expect(help.code).toBe(0);
    for (const name of Object.keys(flagSpecs)) expect(help.stdout).toMatch(new RegExp(`--(\\[no-\\])?${name}\\b`));
    expect(help.stdout).toContain('(default "0.0.0.0:10356")');
    expect((await run(["--nodeport-addresses", "x"])).code).toBe(2);
  });

  test("check on the demo manifests", async () => {
    const r = await run(["check", ...demoFlags]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("  NodePort  demo/web:http  http      127.0.0.1:30080  2 serving of 2\n");
  });

  test("serves the demo manifests, then drains on SIGTERM with exit code 0", async () => {
    await using _backends = await startDemoBackends();
    const child = Bun.spawn([binary, ...demoFlags, "--healthz-bind-address", "127.0.0.1:0", "--metrics-bind-address", "127.0.0.1:0", "--drain-grace-period", "1s"], {
      cwd: root,
      stdout: "pipe",
      stderr: "pipe",
    });
    await using _child = { [Symbol.asyncDispose]: async () => void (child.kill("SIGKILL"), await child.exited) };
    const log = child.stdout.getReader();
    const started = JSON.parse(await lineMatching(log, /"kubegate started"/, 10_000)) as { healthz: string };
    await lineMatching(log, /"Ready: the first snapshot's listeners are bound"/, 10_000);
    expect((await fetch(`http://${started.healthz}/readyz`)).status).toBe(200);

    const backends = new Set<string>();
    for (let i = 0; i < 4; i++) {
      // Async spawn: the backends run in this process and must keep answering while curl waits.
      const curl = Bun.spawn(["curl", "-sS", "--max-time", "5", "-D", "-", "http://127.0.0.1:30080/"], { stdout: "pipe" });
      const [text, code] = await Promise.all([new Response(curl.stdout).text(), curl.exited]);
      expect(code).toBe(0);
      expect(text).toStartWith("HTTP/1.1 200");
      backends.add(/x-backend: (\S+)/i.exec(text)![1]!);
    }
    expect([...backends].sort()).toEqual(["web-1", "web-2"]);
    expect(await tcpExchange(30090, "hello binary\n")).toBe("hello binary\n");

    child.kill("SIGTERM");
    expect(await child.exited).toBe(0);
  }, 20_000);
});
