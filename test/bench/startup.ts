/**
 * Start-up time: from spawning the gateway on the demo manifests to the first `/readyz` 200 (the
 * first snapshot is applied, listeners bound), median of N runs, for the compiled binary
 * (`dist/kubegate`, run `npm run build` first), `bun src/main.ts` and `deno run -A src/main.ts`.
 * Also prints the binary's size. Not a test: `bun test/bench/startup.ts [--runs 10]`.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const runsArg = process.argv.indexOf("--runs");
const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 10;
const healthPort = 10_457; // fixed, so the probe needs no log parsing (which would add its own latency)
const flags = [
  "--manifests", "deploy/demo", "--hostname-override", "demo-node", "--nodeport-addresses", "127.0.0.0/8", "--host-addresses", "127.0.0.1",
  "--healthz-bind-address", `127.0.0.1:${healthPort}`, "--metrics-bind-address", "127.0.0.1:0", "--log-level", "warn", "--drain-grace-period", "100ms",
];

/** ms from spawn to /readyz 200 (polled every 2 ms, for at most 20 s). */
async function once(cmd: string[]): Promise<number> {
  const t0 = performance.now();
  const child = Bun.spawn([...cmd, ...flags], { cwd: root, stdout: "ignore", stderr: "ignore" });
  try {
    const deadline = t0 + 20_000;
    while (performance.now() < deadline) {
      const ok = await fetch(`http://127.0.0.1:${healthPort}/readyz`).then((r) => r.status === 200, () => false);
      if (ok) return performance.now() - t0;
      await Bun.sleep(2);
    }
    throw new Error(`${cmd.join(" ")}: no /readyz 200 within 20 s`);
  } finally {
    child.kill("SIGTERM");
    await child.exited;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const binary = join(root, "dist/kubegate");
const size = await stat(binary).then((s) => s.size, () => undefined);
const targets: [string, string[]][] = [
  ["dist/kubegate", [binary]],
  ["bun src/main.ts", [process.execPath, "src/main.ts"]],
  ["deno run -A src/main.ts", [join(root, "node_modules/.bin/deno"), "run", "-A", "src/main.ts"]],
];
if (size === undefined) {
  console.error("dist/kubegate is missing: run `npm run build` first (measuring the others only)");
  targets.shift();
}
console.log(`start-up to /readyz 200, demo manifests, median of ${runs} (min..max)`);
for (const [name, cmd] of targets) {
  await once(cmd); // warm the page cache (and Deno's module cache)
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await once(cmd));
  console.log(`  ${name.padEnd(24)} ${median(times).toFixed(0).padStart(5)} ms  (${Math.min(...times).toFixed(0)}..${Math.max(...times).toFixed(0)})`);
}
if (size !== undefined) console.log(`binary size: ${(size / 1024 / 1024).toFixed(1)} MiB (${size} bytes)`);
