/**
 * A real Prometheus server (Debian's `prometheus`) scrapes the gateway's `/metrics` every second:
 * the request count driven through the data-plane API is what PromQL reads, it follows new traffic,
 * the alert rules load and evaluate, and every query of the Grafana dashboard runs. With exemplar storage
 * on, it scrapes OpenMetrics and keeps the trace id of a request proxied with tracing on as an exemplar of
 * the latency histogram.
 */
import { expect, test } from "bun:test";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { SpanKind } from "@opentelemetry/api";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { rt } from "../../src/runtime/index.ts";
import { GatewayMetrics } from "../../src/telemetry/metrics/index.ts";
import { setupTracing } from "../../src/telemetry/tracing/setup.ts";
import { entrypoint } from "../support/entrypoints.ts";
import { endpoint, RawUpstream, startProxy } from "../support/http-harness.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

const observability = fileURLToPath(new URL("../../deploy/observability/", import.meta.url));

interface PromResponse<T> {
  status: "success" | "error";
  data: T;
  error?: string;
}
type Vector = { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };

/** Starts `prometheus` with this config (and extra flags); disposing kills it by PID and removes its data. */
async function startPrometheus(config: string, flags: readonly string[] = []) {
  if (!Bun.which("prometheus")) throw new Error('Cannot run "prometheus": not found on PATH (scripts/pretest.sh installs Debian\'s prometheus package)');
  const dir = mkdtempSync(join(tmpdir(), "kubegate-prometheus-"));
  writeFileSync(join(dir, "prometheus.yml"), config);
  const port = await freePort();
  const child = Bun.spawn(
    ["prometheus", `--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn", ...flags],
    { stdout: "ignore", stderr: "pipe" },
  );
  let stderr = "";
  void (async () => {
    const reader = child.stderr.getReader();
    const decoder = new TextDecoder();
    for (let r = await reader.read(); !r.done; r = await reader.read()) stderr += decoder.decode(r.value, { stream: true });
  })();
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    stderr: () => stderr,
    async query<T = Vector>(promql: string, api = "query"): Promise<PromResponse<T>> {
      const res = await fetch(`${base}/api/v1/${api}?query=${encodeURIComponent(promql)}`);
      return (await res.json()) as PromResponse<T>;
    },
    async [Symbol.asyncDispose]() {
      process.kill(child.pid, "SIGTERM");
      const exited = await Promise.race([child.exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 3_000))]);
      if (!exited) {
        process.kill(child.pid, "SIGKILL");
        await child.exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The single value of an instant query, once it has one. */
function scalarOf(res: PromResponse<Vector>): number | undefined {
  if (res.status !== "success" || res.data.result.length !== 1) return undefined;
  return Number(res.data.result[0]!.value[1]);
}

test("a real Prometheus scrapes /metrics and reads back the traffic sent", async () => {
  const metrics = new GatewayMetrics({ ipFamilies: ["IPv4"], healthCounts: { healthz: { 200: 1 }, livez: {} } });
  const web = entrypoint({ name: "shop/web:http", protocol: "http", endpoints: [8080, 8081] });
  metrics.applied({ version: 1, entrypoints: [web], errors: [], node: { name: "node-a" } }, { serviceChanges: 1, endpointChanges: 1, triggerTimes: [Date.now() - 700], buildMs: 1 }, 0.001);
  const traffic = metrics.traffic.forEntrypoint(web);
  const N = 137;
  for (let i = 0; i < N; i++) {
    traffic.connOpened();
    traffic.request(i % 10 === 0 ? 503 : 200, 0.002 + i / 10_000);
    traffic.bytes(100, 1_000);
    traffic.connClosed();
  }

  await using server = rt.serveHttp({ hostname: "127.0.0.1", port: 0, fetch: (req) => metrics.handler(req) });
  await using prom = await startPrometheus(
    [
      "global:",
      "  scrape_interval: 1s",
      "  evaluation_interval: 1s",
      "rule_files:",
      `  - ${JSON.stringify(join(observability, "prometheus-rules.yaml"))}`,
      "scrape_configs:",
      "  - job_name: kubegate",
      "    static_configs:",
      `      - targets: ["127.0.0.1:${server.port}"]`,
      "",
    ].join("\n"),
  );

  // Prometheus' target discovery sends its first update after ~5 s: the first scrape comes ~6 s in.
  await waitFor(async () => (await fetch(`${prom.base}/-/ready`).catch(() => undefined))?.ok, { timeoutMs: 10_000, intervalMs: 100, what: `Prometheus to be ready (stderr: ${prom.stderr()})` });
  const sel = 'job="kubegate",namespace="shop",service="web",port="http",protocol="http"';
  const total = await waitFor(async () => scalarOf(await prom.query(`sum(kubegate_requests_total{${sel}})`)), { timeoutMs: 8_000, intervalMs: 200, what: "the first scrape" });
  expect(total).toBe(N);
  expect(scalarOf(await prom.query(`kubegate_requests_total{${sel},code_class="5xx"}`))).toBe(Math.ceil(N / 10));
  expect(scalarOf(await prom.query(`kubegate_request_duration_seconds_count{${sel}}`))).toBe(N);
  expect(scalarOf(await prom.query(`kubegate_received_bytes_total{${sel}}`))).toBe(N * 100);
  expect(scalarOf(await prom.query(`kubegate_connections_total{${sel}}`))).toBe(N);
  expect(scalarOf(await prom.query(`kubegate_active_connections{${sel}}`))).toBe(0);
  expect(scalarOf(await prom.query(`kubegate_endpoints{${sel},state="serving"}`))).toBe(2);
  expect(scalarOf(await prom.query(`up{job="kubegate"}`))).toBe(1);
  expect(scalarOf(await prom.query('kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}'))).toBe(1);
  expect(scalarOf(await prom.query('kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="1"}'))).toBe(1);
  expect(scalarOf(await prom.query('kubeproxy_proxy_healthz_total{code="200"}'))).toBe(1);

  // More traffic: the next scrapes see it.
  for (let i = 0; i < 63; i++) traffic.request(200, 0.001);
  const after = await waitFor(async () => scalarOf(await prom.query(`sum(kubegate_requests_total{${sel}})`)) === N + 63 || undefined, { timeoutMs: 5_000, intervalMs: 200, what: "the new requests to be scraped" });
  expect(after).toBe(true);

  // The alert rules loaded and evaluate without errors.
  const rules = await waitFor(
    async () => {
      const res = (await (await fetch(`${prom.base}/api/v1/rules`)).json()) as PromResponse<{ groups: { rules: { name: string; health: string; lastError?: string }[] }[] }>;
      const all = res.data.groups.flatMap((g) => g.rules);
      return all.length > 0 && all.every((r) => r.health !== "unknown") ? all : undefined;
    },
    { timeoutMs: 5_000, intervalMs: 200, what: "the rules to be evaluated" },
  );
  expect(rules.map((r) => [r.name, r.health, r.lastError ?? ""])).toEqual(
    ["KubegateSyncStale", "KubegateHighErrorRate", "KubegateNoEndpoints", "KubegateWatchRelisting", "KubegateMetricsSeriesDropped", "KubegateServingSavedState"].map((n) => [n, "ok", ""]),
  );

  // Every dashboard query parses and runs (Grafana's variables filled in as "All").
  const dashboard = JSON.parse(await Bun.file(join(observability, "grafana-dashboard.json")).text()) as { panels: { title: string; targets?: { expr: string }[] }[] };
  const failures: string[] = [];
  for (const panel of dashboard.panels) {
    for (const { expr } of panel.targets ?? []) {
      const promql = expr.replaceAll("$__rate_interval", "1m").replace(/\$(namespace|service|instance)\b/g, ".*");
      const res = await prom.query(promql);
      if (res.status !== "success") failures.push(`${panel.title}: ${res.error}`);
    }
  }
  expect(failures).toEqual([]);
  const requestRate = await prom.query('sum by (namespace, service, port) (rate(kubegate_requests_total{namespace=~".*"}[1m]))');
  expect(requestRate.status).toBe("success");
}, 20_000);

type Exemplars = { seriesLabels: Record<string, string>; exemplars: { labels: Record<string, string>; value: string; timestamp: number }[] }[];

test("with exemplar storage, Prometheus keeps the trace of a proxied request as a latency exemplar", async () => {
  const exporter = new InMemorySpanExporter();
  const tracing = setupTracing({ exporter, simpleProcessor: true, sampleRatio: 1 })!;
  await using _tracing = { [Symbol.asyncDispose]: () => tracing.shutdown() };
  const metrics = new GatewayMetrics({ ipFamilies: ["IPv4"] });
  await using up = new RawUpstream("a");
  await using proxy = startProxy([endpoint(up.port)], {
    telemetry: { tracing: tracing.proxy, traffic: (ep) => metrics.traffic.forEntrypoint(ep) },
  });
  metrics.applied({ version: 1, entrypoints: [proxy.ref.current.entrypoint], errors: [], node: { name: "node-a" } }, { serviceChanges: 1, endpointChanges: 1, triggerTimes: [], buildMs: 1 }, 0.001);
  const res = await fetch(`${proxy.url}/checkout`);
  expect(res.status).toBe(200);
  await res.text();
  await waitFor(() => exporter.getFinishedSpans().some((s) => s.kind === SpanKind.SERVER) || undefined, { timeoutMs: 2_000, intervalMs: 20, what: "the request's SERVER span" });
  const server = exporter.getFinishedSpans().find((s) => s.kind === SpanKind.SERVER)!.spanContext();

  await using gateway = rt.serveHttp({ hostname: "127.0.0.1", port: 0, fetch: (req) => metrics.handler(req) });
  await using prom = await startPrometheus(
    ["global:", "  scrape_interval: 1s", "scrape_configs:", "  - job_name: kubegate", "    static_configs:", `      - targets: ["127.0.0.1:${gateway.port}"]`, ""].join("\n"),
    ["--enable-feature=exemplar-storage"],
  );
  await waitFor(async () => (await fetch(`${prom.base}/-/ready`).catch(() => undefined))?.ok, { timeoutMs: 10_000, intervalMs: 100, what: `Prometheus to be ready (stderr: ${prom.stderr()})` });
  const found = await waitFor(
    async () => {
      const r = await prom.query<Exemplars>('kubegate_request_duration_seconds_bucket{job="kubegate"}', "query_exemplars");
      return r.status === "success" && r.data.length > 0 ? r.data : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 200, what: `an exemplar of the latency histogram (stderr: ${prom.stderr()})` },
  );
  const exemplars = found.flatMap((s) => s.exemplars.map((e) => ({ series: s.seriesLabels, ...e })));
  expect(exemplars).toHaveLength(1);
  expect(exemplars[0]!.labels).toEqual({ trace_id: server.traceId, span_id: server.spanId });
  expect(exemplars[0]!.series).toMatchObject({ __name__: "kubegate_request_duration_seconds_bucket", namespace: "default", service: "web", protocol: "http" });
  expect(Number(exemplars[0]!.value)).toBeGreaterThan(0);
  expect(Number(exemplars[0]!.value)).toBeLessThanOrEqual(Number(exemplars[0]!.series.le));
  // The scrape was OpenMetrics (exemplars exist only there) and healthy.
  expect(scalarOf(await prom.query('up{job="kubegate"}'))).toBe(1);
}, 20_000);
