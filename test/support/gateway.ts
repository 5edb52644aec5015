/**
 * A whole gateway against a test API server, as the e2e suites start it: node "node-a", host address
 * 127.0.0.1, health and admin on free ports, a short drain. Extra flags override or add to these.
 *
 * The gateway runs under the roles its flags imply (test/support/rbac.ts `deploymentFor`): the API server
 * must enforce that deployment's roles (a gateway without `--lb-controller` on a server granting the
 * lb-controller overlay would hide a request the edge deployment refuses), and any request RBAC refused while
 * the gateway ran fails the test when the gateway is disposed.
 */
import { parseFlags } from "../../src/config/flags.ts";
import { type Gateway, startGateway } from "../../src/gateway.ts";
import type { AccessRequest, TestApiServer } from "./apiserver.ts";
import { deploymentFor, sameRoles } from "./rbac.ts";

const describe = (a: AccessRequest): string =>
  `${a.verb} ${a.group || "core"}/${a.resource}${a.subresource ? `/${a.subresource}` : ""}${a.namespace ? ` in "${a.namespace}"` : ""}${a.name ? ` "${a.name}"` : ""}`;

/**
 * Start a gateway on `api` and wait for its first snapshot. Dispose it (or `await using`) to stop it; disposal
 * throws when RBAC refused any request meanwhile.
 * @example await using gw = await startTestGateway(api, ["--lb-controller", "--lb-pool", "127.0.0.2/32"]); // api: rbac "lb-controller"
 */
export async function startTestGateway(api: TestApiServer, extraArgs: readonly string[] = []): Promise<Gateway> {
  const needs = deploymentFor(extraArgs);
  if (api.rbac !== undefined && !sameRoles(api.rbac, needs)) {
    throw new Error(`The gateway's flags need the "${needs}" deployment's roles, but the test API server enforces "${api.rbac}": start it with rbac: "${needs}"`);
  }
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
  const deniedBefore = api.forbidden.length;
  const gateway = await startGateway(parsed.config);
  const dispose = async (): Promise<void> => {
    await gateway[Symbol.asyncDispose]();
    // clearRequests() may have emptied the list meanwhile: then everything in it is new.
    const denied = api.forbidden.slice(api.forbidden.length >= deniedBefore ? deniedBefore : 0);
    if (denied.length > 0) {
      throw new Error(`RBAC of the "${api.rbac}" deployment refused ${denied.length} request(s) of the gateway: ${[...new Set(denied.map(describe))].join("; ")}`);
    }
  };
  const checked = new Proxy(gateway, {
    get(target, key) {
      if (key === Symbol.asyncDispose) return dispose;
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  try {
    await gateway.ready();
  } catch (e) {
    await gateway[Symbol.asyncDispose]();
    throw e;
  }
  return checked;
}
