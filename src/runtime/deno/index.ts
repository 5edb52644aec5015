/** The Deno implementation of the runtime port. */
import type { Runtime } from "../types.ts";
import { createHttpClient } from "./http.ts";
import { serveHttp } from "./serve.ts";
import { bindUdp, connectTcp, listenTcp } from "./net.ts";
import { exit, env, onSignal, readTextFile, watchPath } from "./system.ts";
import { fileLimit, openFiles, raiseFileLimit } from "./files.ts";

export const denoRuntime: Runtime = {
  name: "deno",
  createHttpClient,
  listenTcp,
  connectTcp,
  serveHttp,
  bindUdp,
  readTextFile,
  watchPath,
  onSignal,
  env,
  exit,
  fileLimit,
  raiseFileLimit,
  openFiles,
  spawnChild() {
    throw new Error("Worker processes need Bun: on Deno kubegate runs one process (--workers 1)");
  },
  parentChannel: () => undefined,
  execPath: (globalThis as unknown as { Deno: { execPath(): string } }).Deno.execPath(),
};
