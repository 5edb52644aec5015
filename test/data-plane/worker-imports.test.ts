/**
 * What a worker process loads. With tracing off: no npm package at all (no OpenTelemetry, and none of the control
 * plane's: valibot, hono, yaml, the Kubernetes client), so an added worker costs only the data plane's own code. With
 * tracing on: the OTel SDK and API load, and a request through the worker gets its spans as in one process.
 *
 * The worker is started as `--workers` starts it (`WorkerPool`, `workerCommand`, the real protocol), its command
 * wrapped to write, as it exits, the modules it loaded (Bun lists ES modules in `require.cache` too).
 */
import { describe, expect, test } from "bun:test";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseFlags } from "../../src/config/flags.ts";
import { dataPlaneSettings } from "../../src/data-plane/settings.ts";
import { WorkerPool, workerCommand } from "../../src/data-plane/workers.ts";
import { rt } from "../../src/runtime/index.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING = `00-${TRACE}-00f067aa0ba902b7-01`;

interface WorkerRun {
  /** npm packages the worker loaded, sorted (`@scope/name` or `name`). */
  readonly packages: readonly string[];
  /** The sampler the worker reported, or "off". */
  readonly tracing: string;
  /** The `traceparent` the upstream got for a request that came with {@link INCOMING}. */
  readonly upstreamTraceparent: string;
}

/** The package a module path belongs to, when it is under node_modules. */
function packageOf(path: string): string | undefined {
  const at = path.lastIndexOf("/node_modules/");
  if (at < 0) return undefined;
  const [scope = "", name = ""] = path.slice(at + "/node_modules/".length).split("/");
  return scope.startsWith("@") ? `${scope}/${name}` : scope;
}

/** One worker with these flags and `env` serves one traced request, drains, and tells what it loaded. */
async function runWorker(args: readonly string[], env: Record<string, string> = {}): Promise<WorkerRun> {
  const dir = await mkdtemp(join(tmpdir(), "kubegate-worker-imports-"));
  await using _dir = { [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
  const out = join(dir, "modules.json");
  const [execPath, main] = workerCommand(rt.execPath);
  const record = `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(out)}, JSON.stringify(Object.keys(require.cache))));`;
  const command = [execPath!, "-e", `${record} await import(${JSON.stringify(main)});`];

  const upstream = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => new Response(req.headers.get("traceparent") ?? "") });
  await using _upstream = { [Symbol.asyncDispose]: () => upstream.stop(true) };
  const parsed = parseFlags(["--no-access-log", ...args], { hostname: "node-a", env });
  if (parsed.kind !== "run") throw new Error(`Bad flags: ${JSON.stringify(parsed)}`);
  const pool = new WorkerPool(dataPlaneSettings(parsed.config, "test"), { workers: 1, command, spawn: rt.spawnChild });
  let upstreamTraceparent: string;
  try {
    await pool.started(20_000);
    const port = await freePort();
    pool.apply(snapshot(entrypoint({ name: "web/site:http", protocol: "http", port, endpoints: [upstream.port!] })));
    await pool.settled();
    const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { traceparent: INCOMING, connection: "close" } });
    expect(res.status).toBe(200);
    upstreamTraceparent = await res.text();
  } finally {
    await pool.drain(0); // the worker exits, writing its module list
  }
  const modules = JSON.parse(await readFile(out, "utf8")) as string[];
  expect(modules).toContain(main!); // the list is the worker's
  const packages = [...new Set(modules.map(packageOf).filter((p) => p !== undefined))].sort();
  return { packages, tracing: pool.tracing, upstreamTraceparent };
}

describe("a worker process's modules", () => {
  test("tracing off: no npm package loads (no OpenTelemetry, nothing of the control plane's); trace context passes untouched", async () => {
    const run = await runWorker([]);
    expect(run.tracing).toBe("off");
    expect(run.packages).toEqual([]);
    expect(run.upstreamTraceparent).toBe(INCOMING);
  });

  test("tracing on: the OTel SDK loads in the worker, and the request's spans are exported when it drains", async () => {
    const spans: { kind: number; traceId: string; parentSpanId?: string }[] = [];
    const collector = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const body = (await req.json()) as { resourceSpans: { scopeSpans: { spans: typeof spans }[] }[] };
        spans.push(...body.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)));
        return Response.json({});
      },
    });
    await using _collector = { [Symbol.asyncDispose]: () => collector.stop(true) };
    const run = await runWorker(["--tracing"], { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.port}` });
    expect(run.tracing).toStartWith("ParentBased{");
    expect(run.packages).toContain("@opentelemetry/api");
    expect(run.packages).toContain("@opentelemetry/sdk-trace-base");
    // The CLIENT span's id replaces the client's parent span id upstream; the trace is the client's.
    expect(run.upstreamTraceparent).toMatch(new RegExp(`^00-${TRACE}-(?!00f067aa0ba902b7)[0-9a-f]{16}-01$`));
    // Exported by the batch processor's flush as the worker shut down: SERVER (2) under the client's span, CLIENT (3).
    const server = spans.find((s) => s.kind === 2);
    expect(server).toMatchObject({ traceId: TRACE, parentSpanId: "00f067aa0ba902b7" });
    expect(spans.find((s) => s.kind === 3)?.traceId).toBe(TRACE);
  });
});
