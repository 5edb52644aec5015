/**
 * Persisted state and health through API server outages, against the test API server over mTLS with
 * real sockets: a gateway restarted while the API server is down serves the state file (stale on the
 * admin API, the page and the metrics) until the API returns; then the live state replaces it. And
 * `/healthz` stays 200 through an outage, as kube-proxy's does.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseFlags } from "../../src/config/flags.ts";
import { type Gateway, startGateway } from "../../src/gateway.ts";
import { ApiServerSource } from "../../src/kube/apiserver-source.ts";
import { loadKubeConfig } from "../../src/kube/kubeconfig.ts";
import { silentLogger } from "../../src/log.ts";
import { startApiServer, type TestApiServer } from "../support/apiserver.ts";
import { tcpExchange } from "../support/child-io.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

/** HTTP backends that answer with their name. */
function backends(names: string[]) {
  const servers = names.map((name) => Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(name) }));
  return {
    port: (i: number) => servers[i]!.port!,
    [Symbol.dispose]: () => servers.forEach((s) => s.stop(true)),
  };
}

const service = (name: string, nodePort: number) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "e2e", labels: { "service.kubernetes.io/service-proxy-name": "kubegate" } },
  spec: { type: "NodePort", ports: [{ name: "http", port: 80, targetPort: "http", nodePort, appProtocol: "http" }] },
});

const slice = (name: string, svc: string, port: number) => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: { name, namespace: "e2e", labels: { "kubernetes.io/service-name": svc } },
  addressType: "IPv4",
  ports: [{ name: "http", port, protocol: "TCP" }],
  endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true }, nodeName: "node-a" }],
});

/**
 * A gateway on `api` (node "node-a"), its reflectors retrying fast (so the test need not wait out the default
 * back-off after `up()`), with `extraArgs`. Resolves once its first snapshot is live.
 */
async function gateway(api: TestApiServer, extraArgs: string[] = []): Promise<Gateway> {
  const kubeconfig = await api.writeKubeconfig();
  const parsed = parseFlags(
    [
      "--kubeconfig", kubeconfig, "--hostname-override", "node-a", "--host-addresses", "127.0.0.1",
      "--healthz-bind-address", "127.0.0.1:0", "--metrics-bind-address", "127.0.0.1:0", "--drain-grace-period", "100ms", "--no-access-log",
      ...extraArgs,
    ],
    { hostname: "node-a" },
  );
  if (parsed.kind !== "run") throw new Error(`Bad flags: ${JSON.stringify(parsed)}`);
  const source = new ApiServerSource({ kube: await loadKubeConfig(kubeconfig), nodeName: "node-a", backoff: { baseMs: 50, capMs: 200 }, log: silentLogger });
  const gw = await startGateway(parsed.config, { source });
  await gw.ready();
  return gw;
}

/** GET / on a new connection through the gateway's NodePort: the response body. */
async function body(port: number): Promise<string> {
  const raw = await tcpExchange(port, "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
  if (!raw.startsWith("HTTP/1.1 200")) throw new Error(`Expected 200 from port ${port}, got: ${raw.slice(0, 200)}`);
  return raw.slice(raw.indexOf("\r\n\r\n") + 4);
}

const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => (s.destroy(), resolve(false)));
    s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });

/** One sample of a metric without labels on `/metrics`. */
async function metric(gw: Gateway, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.adminPort}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`No sample of ${name} on /metrics`);
  return Number(line.slice(name.length + 1));
}

type Status = { state?: { stale: boolean; savedAt?: string; replayed: number; removed: number }; sources: { kind: string; synced: boolean; lastError?: string }[]; health?: { healthy: boolean } };
const adminStatus = async (gw: Gateway) => (await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/status`)).json()) as Status;
const pageState = async (gw: Gateway) => (await (await fetch(`http://127.0.0.1:${gw.adminPort}/api/state`)).json()) as { state?: { stale: boolean; savedAt?: number } };
const healthStatus = async (gw: Gateway, path: string) => (await fetch(`http://127.0.0.1:${gw.healthPort}${path}`)).status;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kubegate-state-e2e-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("--state-file against the test API server", () => {
  test("a gateway restarted while the API server is down serves the saved state, marked stale, until the API returns", async () => {
    await using api = await startApiServer({ bookmarkIntervalMs: 500 });
    using be = backends(["a", "b"]);
    const webPort = await freePort();
    const gonePort = await freePort();
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    api.create(service("web", webPort));
    api.create(slice("web-1", "web", be.port(0)));
    api.create(service("gone", gonePort));
    api.create(slice("gone-1", "gone", be.port(0)));
    const statePath = join(dir, "state.json");

    {
      await using first = await gateway(api, ["--state-file", statePath]);
      expect(await body(webPort)).toBe("a");
      expect(first.state()).toMatchObject({ stale: false, replayed: 0 });
      await waitFor(() => first.state()!.writes >= 1, { what: "the state file to be written" });
    } // stopped: writes the state a last time

    await api.down();
    // Meanwhile in the cluster: web's pod moves to backend b, and "gone" is deleted.
    api.patch("endpointslices.discovery.k8s.io", "e2e", "web-1", { ports: [{ name: "http", port: be.port(1), protocol: "TCP" }] });
    api.remove("services", "e2e", "gone");
    api.remove("endpointslices.discovery.k8s.io", "e2e", "gone-1");

    await using second = await gateway(api, ["--state-file", statePath]);
    // Serving the last endpoints it knew, with the API server down.
    expect(await body(webPort)).toBe("a");
    expect(await body(gonePort)).toBe("a");
    const stale = await adminStatus(second);
    expect(stale.state).toMatchObject({ stale: true, replayed: 5, removed: 0 });
    expect(Date.parse(stale.state!.savedAt!)).toBeLessThanOrEqual(Date.now());
    expect(stale.sources.every((s) => !s.synced)).toBe(true);
    expect((await pageState(second)).state).toMatchObject({ stale: true });
    expect(await metric(second, "kubegate_state_stale")).toBe(1);
    expect(await metric(second, "kubegate_state_age_seconds")).toBeGreaterThan(0);
    // Nothing is pending: the replayed state is applied. /healthz and /readyz say so.
    expect(await healthStatus(second, "/healthz")).toBe(200);
    expect(await healthStatus(second, "/readyz")).toBe(200);

    await api.up();
    await waitFor(() => second.state()!.stale === false, { timeoutMs: 10_000, what: "the live source to sync" });
    await waitFor(async () => (await body(webPort)) === "b", { what: "the change made during the outage" });
    await waitFor(() => refused(gonePort), { what: "the deleted Service's listener to close" });
    expect((await adminStatus(second)).state).toMatchObject({ stale: false, removed: 2 });
    expect((await pageState(second)).state).toMatchObject({ stale: false });
    expect(await metric(second, "kubegate_state_stale")).toBe(0);
    expect(await metric(second, "kubegate_state_age_seconds")).toBe(0);
  }, 30_000);

  test("/healthz stays 200 through an API server outage while traffic is served", async () => {
    await using api = await startApiServer({ bookmarkIntervalMs: 500 });
    using be = backends(["a"]);
    const webPort = await freePort();
    api.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    api.create(service("web", webPort));
    api.create(slice("web-1", "web", be.port(0)));
    await using gw = await gateway(api);
    expect(await body(webPort)).toBe("a");

    await api.down();
    // Every kind has noticed the outage (its watch failed and it is retrying).
    await waitFor(async () => (await adminStatus(gw)).sources.every((s) => s.lastError !== undefined), { what: "the reflectors to see the outage" });
    expect(await healthStatus(gw, "/healthz")).toBe(200);
    expect(await healthStatus(gw, "/livez")).toBe(200);
    expect(await healthStatus(gw, "/readyz")).toBe(200);
    expect(await metric(gw, "kubeproxy_sync_proxy_rules_endpoint_changes_pending")).toBe(0);
    expect(await metric(gw, "kubeproxy_sync_proxy_rules_service_changes_pending")).toBe(0);
    expect(await body(webPort)).toBe("a");

    await api.up();
    await waitFor(async () => (await adminStatus(gw)).sources.every((s) => s.synced), { what: "the reflectors to resync" });
    expect(await healthStatus(gw, "/healthz")).toBe(200);
  }, 30_000);
});
