/** The Bun implementation of the runtime port. */
import type { Runtime } from "../types.ts";
import { createHttpClient } from "./http.ts";
import { serveHttp } from "./serve.ts";
import { bindUdp, connectTcp, connectUnix, listenTcp, listenUnix } from "./net.ts";
import { exit, env, onSignal, readTextFile, watchPath } from "./system.ts";
import { fileLimit, openFiles, raiseFileLimit } from "./files.ts";
import { execPath, parentChannel, spawnChild } from "./process.ts";

export const bunRuntime: Runtime = {
  name: "bun",
  createHttpClient,
  listenTcp,
  connectTcp,
  listenUnix,
  connectUnix,
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
  spawnChild,
  parentChannel,
  execPath,
};
