/**
 * `npm run demo`: the gateway on the bundled demo manifests (deploy/demo), with the demo backends
 * started by the same command. Prints what to curl; Ctrl-C stops everything.
 */
import { fileURLToPath } from "node:url";
import { parseFlags } from "./config/flags.ts";
import { startDemoBackends } from "./demo-backends.ts";
import { startGateway } from "./gateway.ts";
import { createLogger } from "./log.ts";
import { rt } from "./runtime/index.ts";

const manifests = fileURLToPath(new URL("../deploy/demo", import.meta.url));
const parsed = parseFlags(
  [
    "--manifests", manifests,
    "--hostname-override", "demo-node",
    "--nodeport-addresses", "127.0.0.0/8",
    "--host-addresses", "127.0.0.1",
    "--healthz-bind-address", "127.0.0.1:10356",
    "--drain-grace-period", "1s",
    ...process.argv.slice(2),
  ],
  { hostname: "demo-node", env: process.env },
);
if (parsed.kind !== "run") {
  console.error(parsed.kind === "error" ? parsed.message : "The demo takes gateway flags only");
  rt.exit(2);
}
const { config } = parsed;
const log = createLogger(config.logLevel);
const backends = await startDemoBackends();
const gateway = await startGateway(config, { log });
await gateway.ready();

const admin = `http://${config.metricsBindAddress.host}:${config.metricsBindAddress.port}`;
const health = `http://${config.healthzBindAddress.host}:${config.healthzBindAddress.port}`;
console.log(`kubegate demo is serving (manifests: ${manifests})

  HTTP  demo/web:http   curl http://127.0.0.1:30080/
  TCP   demo/echo:tcp   echo hello | nc -q1 127.0.0.1 30090     (or: curl telnet://127.0.0.1:30090)

  snapshot  curl ${admin}/api/snapshot
  health    curl ${health}/healthz   ${health}/readyz

Edit deploy/demo/*.yaml and the gateway follows. Ctrl-C (or SIGTERM to pid ${process.pid}) to stop.`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await gateway[Symbol.asyncDispose]();
  await backends[Symbol.asyncDispose]();
  rt.exit(0);
};
rt.onSignal("SIGINT", stop);
rt.onSignal("SIGTERM", stop);
