/**
 * kubegate's command line: `bun run gateway [flags]` or the compiled `kubegate [flags]`, and
 * `kubegate check [flags]` and `kubegate prepare-node`. Loads flags and the config file, starts the gateway, reloads the config
 * file on change, and shuts down gracefully on SIGINT/SIGTERM (docs/operations.md).
 *
 * Exit codes: 0 done (also after a graceful shutdown), 1 failed to start (or `check` found a problem),
 * 2 bad flags or config file, 130/143 a second SIGINT/SIGTERM cut the shutdown short.
 */
import { hostname } from "node:os";
import { runCheck } from "./check.ts";
import type { Config } from "./config/flags.ts";
import { loadConfig, reloadConfig, watchConfig } from "./config/load.ts";
import { startGateway } from "./gateway.ts";
import { createLogger, type Logger, type LogLevel } from "./log.ts";
import { rt } from "./runtime/index.ts";
import pkg from "../package.json" with { type: "json" };

/** A logger whose level can change while running (config file reloads). */
function levelledLogger(initial: LogLevel): Logger & { setLevel(level: LogLevel): void } {
  let inner = createLogger(initial);
  return {
    debug: (msg, fields) => inner.debug(msg, fields),
    info: (msg, fields) => inner.info(msg, fields),
    warn: (msg, fields) => inner.warn(msg, fields),
    error: (msg, fields) => inner.error(msg, fields),
    setLevel(level) {
      inner = createLogger(level);
    },
  };
}

const args = process.argv.slice(2);
if (args[0] === "worker") {
  // A worker process of the compiled binary (`--workers`): it runs until its control plane drains it or goes away.
  await import("./data-plane/worker-main.ts");
  await new Promise(() => {});
}
if (args[0] === "prepare-node") {
  const { prepareNode } = await import("./prepare-node.ts");
  rt.exit(prepareNode());
}
const isCheck = args[0] === "check";
const argv = isCheck ? args.slice(1) : args;
const host = hostname();
const parsed = await loadConfig(argv, { hostname: host, env: process.env });
switch (parsed.kind) {
  case "help":
    console.log(parsed.text);
    rt.exit(0);
  case "version":
    console.log(`kubegate ${pkg.version} (${rt.name})`);
    rt.exit(0);
  case "error":
    console.error(parsed.message);
    // `check` reports a bad config file as a finding (1); a bad flag is a usage error (2).
    rt.exit(isCheck && parsed.origin === "file" ? 1 : 2);
}

if (isCheck) {
  const code = await runCheck(parsed.config, { out: (t) => console.log(t), err: (t) => console.error(t) }, { configFile: parsed.configFile });
  rt.exit(code);
}

let config: Config = parsed.config;
const log = levelledLogger(config.logLevel);
// File descriptors are a resource like memory: every listener and connection is one. Raise the soft limit to the
// hard one (Bun and Deno already do as they start; this makes sure, and says what the limit is).
const files = rt.raiseFileLimit();
if (files !== undefined) {
  log.info("File descriptor limit", {
    soft: files.after.soft,
    hard: files.after.hard,
    before: files.before.soft,
    open: rt.openFiles(),
    ...(files.error !== undefined ? { error: files.error } : {}),
  });
}
let gateway;
try {
  gateway = await startGateway(config, { log });
} catch (err) {
  log.error("kubegate failed to start", { error: (err as Error).message });
  rt.exit(1);
}

let configWatch: Disposable | undefined;
if (parsed.configFile) {
  const path = parsed.configFile;
  let reloading = Promise.resolve();
  const onReload = (next: Config, changed: readonly (keyof Config)[]) => {
    if (changed.includes("logLevel")) log.setLevel(next.logLevel);
  };
  try {
    configWatch = watchConfig(path, () => {
      reloading = reloading.then(async () => {
        config = await reloadConfig(config, { argv, hostname: host, env: process.env, path, log, onReload });
      });
    });
  } catch (err) {
    log.warn(`Cannot watch config file "${path}": changes need a restart`, { error: (err as Error).message });
  }
}

/**
 * SIGTERM/SIGINT: the graceful sequence (see `Gateway.shutdown`), then exit 0. A second signal while it
 * runs exits at once with 128 + the signal number (130 for SIGINT, 143 for SIGTERM), dropping what is open.
 */
const signalCodes = { SIGINT: 130, SIGTERM: 143 } as const;
let stopping = false;
const stop = (signal: keyof typeof signalCodes) => async () => {
  if (stopping) {
    log.warn("Second signal: exiting now, open connections are dropped", { signal });
    rt.exit(signalCodes[signal]);
  }
  stopping = true;
  log.info("Signal received: shutting down", { signal });
  configWatch?.[Symbol.dispose]();
  try {
    await gateway.shutdown(signal);
  } catch (err) {
    log.error("Shutdown failed", { error: (err as Error).message });
    rt.exit(1);
  }
  rt.exit(0);
};
rt.onSignal("SIGINT", stop("SIGINT"));
rt.onSignal("SIGTERM", stop("SIGTERM"));
