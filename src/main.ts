/**
 * kubegate's command line: `bun run gateway [flags]` or the compiled `kubegate [flags]`.
 * Parses flags, starts the gateway, and drains on SIGINT/SIGTERM.
 */
import { hostname } from "node:os";
import { parseFlags } from "./config/flags.ts";
import { startGateway } from "./gateway.ts";
import { createLogger } from "./log.ts";
import { rt } from "./runtime/index.ts";
import pkg from "../package.json" with { type: "json" };

const parsed = parseFlags(process.argv.slice(2), { hostname: hostname() });
switch (parsed.kind) {
  case "help":
    console.log(parsed.text);
    rt.exit(0);
  case "version":
    console.log(`kubegate ${pkg.version} (${rt.name})`);
    rt.exit(0);
  case "error":
    console.error(parsed.message);
    rt.exit(2);
}

const { config } = parsed;
const log = createLogger(config.logLevel);
let gateway;
try {
  gateway = await startGateway(config, { log });
} catch (err) {
  log.error("kubegate failed to start", { error: (err as Error).message });
  rt.exit(1);
}

let stopping = false;
const stop = (signal: string) => async () => {
  if (stopping) return;
  stopping = true;
  log.info("Signal received", { signal });
  await gateway[Symbol.asyncDispose]();
  rt.exit(0);
};
rt.onSignal("SIGINT", stop("SIGINT"));
rt.onSignal("SIGTERM", stop("SIGTERM"));
