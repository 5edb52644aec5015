/**
 * `deno run -A src/main.ts --manifests deploy/demo ...` serves the demo: the gateway runs under Deno
 * (from npm, node_modules/.bin/deno); the demo backends run here under Bun; the HTTP and TCP
 * entrypoints answer real clients; SIGTERM drains it with exit code 0.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDemoBackends } from "../../src/demo-backends.ts";
import { lineMatching, tcpExchange } from "../support/child-io.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const deno = join(root, "node_modules/.bin/deno");

test("deno run src/main.ts serves the demo manifests over HTTP and TCP, and drains on SIGTERM", async () => {
  await using _backends = await startDemoBackends();
  const child = Bun.spawn(
    [
      deno, "run", "-A", "src/main.ts",
      "--manifests", "deploy/demo", "--hostname-override", "demo-node", "--nodeport-addresses", "127.0.0.0/8", "--host-addresses", "127.0.0.1",
      "--healthz-bind-address", "127.0.0.1:0", "--metrics-bind-address", "127.0.0.1:0", "--drain-grace-period", "1s",
    ],
    { cwd: root, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } },
  );
  await using _child = { [Symbol.asyncDispose]: async () => void (child.kill("SIGKILL"), await child.exited) };
  const log = child.stdout.getReader();
  const started = JSON.parse(await lineMatching(log, /"kubegate started"/, 20_000)) as { healthz: string };
  await lineMatching(log, /"Snapshot applied"/, 10_000);
  expect((await fetch(`http://${started.healthz}/readyz`)).status).toBe(200);

  const backends = new Set<string>();
  for (let i = 0; i < 4; i++) {
    const res = await fetch("http://127.0.0.1:30080/hello");
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^hello from web-[12] \(127\.0\.0\.1:1808[12]\) GET \/hello\n$/);
    backends.add(res.headers.get("x-backend")!);
  }
  expect([...backends].sort()).toEqual(["web-1", "web-2"]);
  expect(await tcpExchange(30090, "hello deno\n")).toBe("hello deno\n");

  child.kill("SIGTERM");
  expect(await child.exited).toBe(0);
}, 40_000);
