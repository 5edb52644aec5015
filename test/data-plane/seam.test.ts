/**
 * The control plane / data plane seam carries plain data only (`src/data-plane/types.ts`): the settings and every
 * view survive a JSON round trip unchanged, and a data plane driven only by JSON copies of its settings and snapshots
 * (what one in another process would get: no shared objects, no `delta`) serves real requests, follows endpoint
 * changes and reports what it does.
 */
import { describe, expect, test } from "bun:test";
import { parseFlags } from "../../src/config/flags.ts";
import { dataPlaneSettings, startDataPlane } from "../../src/data-plane/index.ts";
import type { Config } from "../../src/config/flags.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

/** What crossing a pipe does to a value: functions, class identity, undefined and non-enumerable fields are lost. */
const overTheWire = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

function config(args: readonly string[] = [], env: Record<string, string> = {}): Config {
  const parsed = parseFlags(args, { hostname: "node-a", env });
  if (parsed.kind !== "run") throw new Error(`Bad flags: ${JSON.stringify(parsed)}`);
  return parsed.config;
}

/** An HTTP backend answering its tag. */
function backend(tag: string) {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(tag) });
  return { port: server.port!, [Symbol.asyncDispose]: () => server.stop(true) };
}

describe("the data plane seam", () => {
  test("settings are plain data, and carry every flag the data plane reads", () => {
    const settings = dataPlaneSettings(
      config(
        ["--trusted-proxies", "10.0.0.0/8", "--max-connections", "100", "--tracing-sample-ratio", "0.5", "--response-header-timeout", "7s", "--default-balancer", "maglev"],
        { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", PATH: "/bin" },
      ),
      "1.2.3",
    );
    expect(overTheWire(settings)).toEqual(settings);
    expect(settings.proxy).toMatchObject({ trustedProxies: ["10.0.0.0/8"], maxConnections: 100, responseHeaderTimeoutMs: 7_000 });
    expect(settings.defaultBalancer).toBe("maglev");
    // The OTEL_* environment arrives as data, read once in config parsing; nothing else of the environment does.
    expect(settings.tracing).toEqual({ wanted: true, sampleRatio: 0.5, env: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }, serviceVersion: "1.2.3" });
    expect(dataPlaneSettings(config(), "1.2.3").tracing.wanted).toBe(false);
  });

  test("driven by JSON copies of snapshots, it serves, follows an endpoint change, and its views are plain data", async () => {
    await using a = backend("a");
    await using b = backend("b");
    const port = await freePort();
    await using plane = await startDataPlane(overTheWire(dataPlaneSettings(config(["--no-access-log", "--max-connections", "10"]), "test")));
    const web = (endpoints: number[]) => entrypoint({ name: "web/site:http", protocol: "http", port, endpoints });
    const first = snapshot(web([a.port]));
    plane.apply(overTheWire(first));
    await plane.settled();
    const get = async () => (await fetch(`http://127.0.0.1:${port}/`)).text();
    expect(await get()).toBe("a");

    plane.apply(overTheWire(snapshot(web([b.port]))));
    await waitFor(async () => (await get()) === "b", { what: "requests to move to the new endpoint" });

    const key = first.entrypoints[0]!.key;
    expect(plane.listeners()).toEqual([{ key, listeners: [{ address: "127.0.0.1", port, bound: true }] }]);
    expect(plane.counts()).toMatchObject({ bound: 1, failed: 0, draining: 0 });
    expect(plane.balancing(key)).toMatchObject({ algorithm: "round-robin" });
    expect(plane.traffic().find((t) => t.key === "web/site:http")?.requests).toBeGreaterThanOrEqual(2);
    expect(plane.connections()).toMatchObject({ refused: 0 });
    for (const view of [plane.listeners(), plane.counts(), plane.balancing(key), plane.outliers(), plane.connections(), plane.traffic()]) {
      expect(overTheWire(view)).toEqual(view);
    }
    expect(plane.tracing).toBe("off");

    // Removed from the snapshot: the listener drains and goes.
    plane.apply(overTheWire(snapshot()));
    await waitFor(() => plane.counts().bound === 0 && plane.counts().draining === 0, { what: "the listener to go" });
    expect(plane.listeners()).toEqual([]);
  });
});
