/**
 * `deno run -A src/main.ts --manifests deploy/demo ...` serves the demo: the gateway runs under Deno
 * (from npm, node_modules/.bin/deno); the demo backends run here under Bun; the HTTP and TCP
 * entrypoints answer real clients; SIGTERM drains it with exit code 0.
 */
import { expect, test } from "bun:test";
import { connect } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDemoBackends } from "../../src/demo-backends.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const deno = join(root, "node_modules/.bin/deno");

/** Read lines from a stream until one matches; returns that line. Rejects at EOF or after `timeoutMs`. */
async function lineMatching(reader: ReadableStreamDefaultReader<Uint8Array>, re: RegExp, timeoutMs: number): Promise<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  let seen = "";
  const timer = setTimeout(() => void reader.cancel(), timeoutMs);
  try {
    for (;;) {
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      const hit = lines.find((l) => re.test(l));
      if (hit) return hit;
      seen += lines.join("\n");
      const { value, done } = await reader.read();
      if (done) throw new Error(`No line matching ${re} within ${timeoutMs} ms; got: ${seen}${buffered}`);
      buffered += decoder.decode(value, { stream: true });
    }
  } finally {
    clearTimeout(timer);
  }
}

function tcpExchange(port: number, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port });
    let got = "";
    s.on("data", (d) => (got += d.toString()));
    s.on("end", () => resolve(got));
    s.on("error", reject);
    s.end(payload);
  });
}

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
