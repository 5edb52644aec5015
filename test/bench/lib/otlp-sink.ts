/**
 * A loopback OTLP/HTTP trace sink for kubegate rows with tracing on (`backends/otlp-sink.ts`, on the load core like
 * the backends): the harness passes its address in `OTEL_EXPORTER_OTLP_ENDPOINT` to those rows only, and reads how
 * many spans arrived at the end.
 */
import { fileURLToPath } from "node:url";
import type { PortAllocator } from "./ports.ts";
import type { Daemon, ProcessGroup } from "./procs.ts";
import { waitForLog } from "./probe.ts";

/** The sink's script. */
export const otlpSinkScript = fileURLToPath(new URL("../backends/otlp-sink.ts", import.meta.url));

/** What the sink received so far. */
export interface OtlpSinkStats {
  readonly requests: number;
  readonly bytes: number;
  readonly spans: number;
}

export interface OtlpSink {
  readonly daemon: Daemon;
  /** The value for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  readonly endpoint: string;
  stats(): Promise<OtlpSinkStats | undefined>;
}

/**
 * Whether kubegate's `args` turn tracing on (`--tracing`, `--tracing=true`; the last one wins). The benchmark's
 * default row has it off; such a row gets the sink's endpoint.
 *
 * @example tracingOn(["--tracing", "--tracing-sample-ratio", "1"]) // true
 */
export function tracingOn(args: readonly string[]): boolean {
  let on = false;
  for (const a of args) {
    if (a === "--tracing" || a === "--tracing=true") on = true;
    else if (a === "--tracing=false" || a === "--no-tracing") on = false;
  }
  return on;
}

/** Start the sink on `core` (unpinned when undefined) and wait until it listens. */
export async function startOtlpSink(group: ProcessGroup, ports: PortAllocator, core: number | undefined): Promise<OtlpSink> {
  const port = await ports.next();
  const bun = process.versions.bun ? process.execPath : "bun";
  const daemon = group.start("otlp-sink", [bun, otlpSinkScript, String(port)], core === undefined ? {} : { core });
  await waitForLog(daemon, /otlp sink listening/);
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    daemon,
    endpoint,
    stats: async () => {
      try {
        return (await (await fetch(`${endpoint}/stats`)).json()) as OtlpSinkStats;
      } catch {
        return undefined;
      }
    },
  };
}
