/**
 * Runtime detection, in one place. Import `rt` to reach the port implementation for the runtime
 * this process runs on (Bun or Deno).
 */
import type { Runtime } from "./types.ts";

export type * from "./types.ts";

async function detect(): Promise<Runtime> {
  const g = globalThis as { Bun?: unknown; Deno?: unknown };
  if (g.Bun) return (await import("./bun/index.ts")).bunRuntime;
  if (g.Deno) return (await import("./deno/index.ts")).denoRuntime;
  throw new Error("Unsupported runtime: kubegate runs on Bun or Deno");
}

/** The runtime port for this process. */
export const rt: Runtime = await detect();
