/**
 * A whole gateway against a test API server, as the e2e suites start it: node "node-a", host address
 * 127.0.0.1, health and admin on free ports, a short drain. Extra flags override or add to these.
 */
import { parseFlags } from "../../src/config/flags.ts";
import { type Gateway, startGateway } from "../../src/gateway.ts";
import type { TestApiServer } from "./apiserver.ts";

/** Start a gateway on `api` and wait for its first snapshot. Dispose it (or `await using`) to stop it. */
export async function startTestGateway(api: TestApiServer, extraArgs: readonly string[] = []): Promise<Gateway> {
  const parsed = parseFlags(
    [
      "--kubeconfig", await api.writeKubeconfig(),
      "--hostname-override", "node-a",
      "--host-addresses", "127.0.0.1",
      "--healthz-bind-address", "127.0.0.1:0",
      "--metrics-bind-address", "127.0.0.1:0",
      "--drain-grace-period", "100ms",
      "--no-access-log", // keep the test runner's output readable
      ...extraArgs,
    ],
    { hostname: "node-a" },
  );
  if (parsed.kind !== "run") throw new Error(`Bad test gateway flags: ${JSON.stringify(parsed)}`);
  const gateway = await startGateway(parsed.config);
  await gateway.ready();
  return gateway;
}
