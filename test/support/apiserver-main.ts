/**
 * The test API server as a process, for suites that cannot import it (Deno) or that need it out of process.
 *
 *   bun test/support/apiserver-main.ts [--port N] [--no-tls] [--no-client-cert] [--token T]...
 *       [--bookmark-ms N] [--kubeconfig-out PATH] [--control-port N]
 *
 * Prints ONE JSON line once listening — `{"url","port","kubeconfig","controlUrl","ca","clientCert","clientKey",
 * "certDir"}` (PEMs are empty without TLS; certDir holds ca.crt, client.crt, client.key for curl) — then serves until SIGTERM/SIGINT. Controls answer `POST /_control/<name>`
 * on the API port and on `controlUrl` (plain HTTP on 127.0.0.1, up even between `down` and `up`).
 */
import { parseArgs } from "node:util";
import { writeFile } from "node:fs/promises";
import { startApiServer } from "./apiserver.ts";
import { testCerts } from "./certs.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    "no-tls": { type: "boolean", default: false },
    "no-client-cert": { type: "boolean", default: false },
    token: { type: "string", multiple: true },
    "bookmark-ms": { type: "string" },
    "kubeconfig-out": { type: "string" },
    "control-port": { type: "string", default: "0" },
  },
  strict: true,
});

function intFlag(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`Invalid --${name} "${text}": expected a non-negative integer\n`);
    process.exit(2);
  }
  return n;
}

const tls = !values["no-tls"];
const tokens = values.token ?? [];
const bookmarkIntervalMs = intFlag("bookmark-ms", values["bookmark-ms"]);
const api = await startApiServer({
  tls,
  requireClientCert: tls && !values["no-client-cert"],
  port: intFlag("port", values.port) ?? 0,
  controlPort: intFlag("control-port", values["control-port"]) ?? 0,
  ...(tokens.length ? { tokens } : {}),
  ...(bookmarkIntervalMs !== undefined ? { bookmarkIntervalMs } : {}),
});

const kubeconfigOptions = tokens[0] !== undefined ? { token: tokens[0] } : {};
let kubeconfig: string;
if (values["kubeconfig-out"]) {
  kubeconfig = values["kubeconfig-out"];
  await writeFile(kubeconfig, api.kubeconfig(kubeconfigOptions), { mode: 0o600 });
} else {
  kubeconfig = await api.writeKubeconfig(kubeconfigOptions);
}

process.stdout.write(
  JSON.stringify({
    url: api.url,
    port: api.port,
    kubeconfig,
    controlUrl: api.controlUrl,
    ca: api.ca,
    clientCert: api.clientCert,
    clientKey: api.clientKey,
    certDir: tls ? (await testCerts()).dir : undefined,
  }) + "\n",
);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await api[Symbol.asyncDispose]();
  process.exit(0);
}
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
