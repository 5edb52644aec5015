/**
 * healthCheckNodePort servers with real sockets and a real HTTP client: kube-proxy's exact body and
 * status codes, count updates without rebinding, removal, port changes and ports that cannot be bound.
 */
import { describe, expect, test } from "bun:test";
import { ServiceHealthServers } from "../../src/service-health/servers.ts";
import { healthCheckBody } from "../../src/service-health/response.ts";
import type { Logger } from "../../src/log.ts";
import type { HealthCheckService, Snapshot } from "../../src/model/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { snapshot } from "../support/entrypoints.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

function check(port: number, localEndpoints: number, extra: Partial<HealthCheckService> = {}): HealthCheckService {
  return { namespace: "ns", name: "web", port, addresses: ["127.0.0.1"], localEndpoints, ...extra };
}

function withChecks(...healthChecks: HealthCheckService[]): Snapshot {
  return { ...snapshot(), healthChecks };
}

function servers(options: { retryIntervalMs?: number } = {}) {
  const lines: { level: string; msg: string }[] = [];
  const at = (level: string) => (msg: string) => void lines.push({ level, msg });
  const log: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  const state = { healthy: true };
  const s = new ServiceHealthServers({ proxyHealthy: () => state.healthy, log, retryIntervalMs: options.retryIntervalMs ?? 0 });
  return Object.assign(s, { lines, state });
}

async function get(port: number, host = "127.0.0.1", path = "/"): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(`http://${host.includes(":") ? `[${host}]` : host}:${port}${path}`);
  return { status: res.status, body: await res.text(), headers: res.headers };
}

async function refused(port: number): Promise<boolean> {
  try {
    const s = await rt.connectTcp({ hostname: "127.0.0.1", port, handlers: { data() {} }, data: undefined });
    s.terminate();
    return false;
  } catch {
    return true;
  }
}

/** kube-proxy's template after dedent and trimming, written out by hand. */
const kubeProxyBody = (ns: string, name: string, n: number, healthy: boolean) =>
  `{
	"service": {
		"namespace": "${ns}",
		"name": "${name}"
	},
	"localEndpoints": ${n},
	"serviceProxyHealthy": ${healthy}
}`;

describe("healthCheckBody", () => {
  test("is kube-proxy's tab-indented body without a trailing newline", () => {
    expect(healthCheckBody({ namespace: "ns", name: "web", localEndpoints: 2, serviceProxyHealthy: false })).toBe(
      '{\n\t"service": {\n\t\t"namespace": "ns",\n\t\t"name": "web"\n\t},\n\t"localEndpoints": 2,\n\t"serviceProxyHealthy": false\n}',
    );
  });
});

describe("ServiceHealthServers", () => {
  test("200 with kube-proxy's exact body and headers when there is a ready local endpoint", async () => {
    const port = await freePort();
    await using hc = servers();
    hc.apply(withChecks(check(port, 1)));
    const res = await get(port, "127.0.0.1", "/any/path");
    expect(res.status).toBe(200);
    expect(res.body).toBe(kubeProxyBody("ns", "web", 1, true));
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(hc.status()).toEqual([{ namespace: "ns", name: "web", port, addresses: ["127.0.0.1"], localEndpoints: 1, bound: true }]);
  });

  test("503 when no local endpoint is ready (e.g. only terminating ones)", async () => {
    const port = await freePort();
    await using hc = servers();
    hc.apply(withChecks(check(port, 0)));
    const res = await get(port);
    expect(res.status).toBe(503);
    expect(res.body).toBe(kubeProxyBody("ns", "web", 0, true));
  });

  test("503 when the proxy is unhealthy, even with local endpoints", async () => {
    const port = await freePort();
    await using hc = servers();
    hc.apply(withChecks(check(port, 3)));
    hc.state.healthy = false;
    const res = await get(port);
    expect(res.status).toBe(503);
    expect(res.body).toBe(kubeProxyBody("ns", "web", 3, false));
    hc.state.healthy = true;
    expect((await get(port)).status).toBe(200);
  });

  test("a new snapshot updates the count without rebinding", async () => {
    const port = await freePort();
    await using hc = servers();
    hc.apply(withChecks(check(port, 2)));
    expect((await get(port)).status).toBe(200);
    hc.apply(withChecks(check(port, 0)));
    const res = await get(port);
    expect([res.status, res.body]).toEqual([503, kubeProxyBody("ns", "web", 0, true)]);
    hc.apply(withChecks(check(port, 1)));
    expect((await get(port)).status).toBe(200);
    expect(hc.lines.filter((l) => l.msg.startsWith("Health check"))).toEqual([{ level: "info", msg: "Health check started" }]);
  });

  test("a removed health check closes its port; the others keep serving", async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    await using hc = servers();
    hc.apply(withChecks(check(p1, 1), check(p2, 1, { name: "api" })));
    expect((await get(p1)).status).toBe(200);
    expect((await get(p2)).body).toBe(kubeProxyBody("ns", "api", 1, true));
    hc.apply(withChecks(check(p2, 1, { name: "api" })));
    await waitFor(() => refused(p1), { what: `port ${p1} to close` });
    expect((await get(p2)).status).toBe(200);
    expect(hc.status().map((s) => s.name)).toEqual(["api"]);
  });

  test("a changed port closes the old one and serves on the new one", async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    await using hc = servers();
    hc.apply(withChecks(check(p1, 1)));
    expect((await get(p1)).status).toBe(200);
    hc.apply(withChecks(check(p2, 1)));
    expect((await get(p2)).status).toBe(200);
    await waitFor(() => refused(p1), { what: `port ${p1} to close` });
  });

  test("every address is served (IPv4 and IPv6)", async () => {
    const port = await freePort();
    await using hc = servers();
    hc.apply(withChecks(check(port, 1, { addresses: ["127.0.0.1", "::1"] })));
    expect((await get(port, "::1")).body).toBe(kubeProxyBody("ns", "web", 1, true));
    expect((await get(port, "127.0.0.1")).status).toBe(200);
  });

  test("a port that cannot be bound is an error; the addresses already opened are closed; bound once free", async () => {
    const port = await freePort("::1");
    const squatter = rt.listenTcp({ hostname: "::1", port, handlers: { data() {} } });
    await using _s = { [Symbol.asyncDispose]: async () => squatter.stop(true) };
    await using hc = servers();
    const snap = withChecks(check(port, 1, { addresses: ["127.0.0.1", "::1"] }));
    hc.apply(snap);
    expect(hc.status()).toEqual([
      {
        namespace: "ns",
        name: "web",
        port,
        addresses: ["127.0.0.1", "::1"],
        localEndpoints: 1,
        bound: false,
        error: `Cannot start health check "ns/web" on [::1]:${port}: address already in use`,
      },
    ]);
    await waitFor(() => refused(port), { what: "127.0.0.1 to be closed again" });
    // Retried on each apply, logged once.
    hc.apply(snap);
    expect(hc.lines.filter((l) => l.level === "error")).toEqual([{ level: "error", msg: "Health check not started" }]);
    squatter.stop(true);
    hc.apply(snap);
    expect(hc.status()[0]).toMatchObject({ bound: true });
    expect(hc.status()[0]?.error).toBeUndefined();
    expect((await get(port, "::1")).status).toBe(200);
  });

  test("a failed health check is retried on a timer", async () => {
    const port = await freePort();
    const squatter = rt.listenTcp({ hostname: "127.0.0.1", port, handlers: { data() {} } });
    await using hc = servers({ retryIntervalMs: 20 });
    hc.apply(withChecks(check(port, 1)));
    expect(hc.status()[0]?.bound).toBe(false);
    squatter.stop(true);
    await waitFor(() => hc.status()[0]?.bound, { what: "the retry to bind" });
    expect((await get(port)).status).toBe(200);
  });

  test("close closes every port and ignores later snapshots", async () => {
    const port = await freePort();
    const hc = servers();
    hc.apply(withChecks(check(port, 1)));
    expect((await get(port)).status).toBe(200);
    await hc.close();
    expect(await refused(port)).toBe(true);
    hc.apply(withChecks(check(port, 1)));
    expect(await refused(port)).toBe(true);
    expect(hc.status()).toEqual([]);
  });
});
