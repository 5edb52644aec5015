/**
 * The OTLP metrics export against a real OTLP/HTTP sink on loopback: what the collector receives is, series for
 * series, what `/metrics` says at the same moment (names, types, values, attributes; the per-worker traffic summed by
 * the main process, exemplars included), in OTLP's JSON encoding; the standard environment configures it; a
 * collector that answers 500, is down or hangs costs a counted, rate-limited failure and nothing else.
 *
 * The OpenTelemetry JS packages only encode requests and decode responses, so the request is decoded here, by the
 * protobuf JSON mapping's rules (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding), independently of
 * the module's own writer.
 */
import { describe, expect, test } from "bun:test";
import type { Logger } from "../../../src/log.ts";
import {
  escapeLabelValue,
  GatewayMetrics,
  NodeTrafficMetrics,
  ProcessMetrics,
  type TrafficDump,
  TrafficMetricNames as N,
  TrafficMetrics,
} from "../../../src/telemetry/metrics/index.ts";
import { type OtlpMetricsSettings, otlpMetricsSettings, partialRejection, startOtlpMetricsExport } from "../../../src/telemetry/metrics/otlp-export.ts";
import { parseLabelPairs } from "../../../src/telemetry/metrics/otlp.ts";
import { OtelEnvError } from "../../../src/telemetry/otlp-env.ts";
import { entrypoint, snapshot } from "../../support/entrypoints.ts";
import { parseScrape } from "../../support/metrics-parse.ts";
import { waitFor } from "../../support/wait.ts";

const TRACE_A = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" };
const TRACE_B = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" };

// ---- the sink: a real OTLP/HTTP receiver ----

interface Received {
  readonly path: string;
  readonly headers: Headers;
  readonly body: unknown;
}

/** An OTLP/HTTP receiver on 127.0.0.1:0; `answer` decides each response (default 200 `{}`); gzip bodies are inflated. */
function startSink(answer: (n: number) => Response | Promise<Response> = () => Response.json({})) {
  const received: Received[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      let bytes = new Uint8Array(await req.arrayBuffer());
      if (req.headers.get("content-encoding") === "gzip") bytes = Bun.gunzipSync(bytes);
      received.push({ path: new URL(req.url).pathname, headers: req.headers, body: JSON.parse(new TextDecoder().decode(bytes)) });
      return answer(received.length);
    },
  });
  return { received, url: `http://127.0.0.1:${server.port}`, [Symbol.asyncDispose]: async () => void (await server.stop(true)) };
}

/** A logger that keeps its warnings. */
function recordingLog() {
  const warnings: { msg: string; fields?: Record<string, unknown> }[] = [];
  const log: Logger = { debug() {}, info() {}, error() {}, warn: (msg, fields) => void warnings.push({ msg, ...(fields ? { fields: { ...fields } } : {}) }) };
  return { log, warnings };
}

// ---- an independent decoder: OTLP JSON -> the text format's series ids ----

type Json = Record<string, unknown>;
const DECIMAL = /^(0|[1-9][0-9]*)$/;

/** A double of the JSON mapping: a number, or "NaN" / "Infinity" / "-Infinity". */
function double(v: unknown): number {
  if (typeof v === "number") return v;
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  throw new Error(`Not an OTLP JSON double: ${JSON.stringify(v)}`);
}

/** A fixed64 of the JSON mapping: a decimal string. */
function fixed64(v: unknown): number {
  if (typeof v !== "string" || !DECIMAL.test(v)) throw new Error(`Not an OTLP JSON fixed64 (decimal string): ${JSON.stringify(v)}`);
  return Number(v);
}

function labelsOf(attrs: unknown, extra?: [string, string]): string {
  const pairs = (attrs as { key: string; value: { stringValue?: unknown } }[]).map((a) => {
    if (typeof a.value.stringValue !== "string") throw new Error(`Attribute ${a.key} is not a string value`);
    return `${a.key}="${escapeLabelValue(a.value.stringValue)}"`;
  });
  if (extra) pairs.push(`${extra[0]}="${extra[1]}"`);
  return pairs.length ? `{${pairs.join(",")}}` : "";
}

interface Decoded {
  readonly types: Map<string, string>;
  readonly samples: Map<string, number>;
  readonly times: Set<string>;
  readonly starts: Set<string>;
  readonly exemplars: { series: string; traceId: string; spanId: string; value: number; timeUnixNano: string }[];
  readonly resource: Record<string, string>;
  readonly scope: Json;
}

/** The request as `parseScrape` would read the same series from the text format. */
function decode(body: unknown): Decoded {
  const d: Decoded = { types: new Map(), samples: new Map(), times: new Set(), starts: new Set(), exemplars: [], resource: {}, scope: {} };
  const rms = (body as Json).resourceMetrics as Json[];
  expect(rms).toHaveLength(1);
  for (const a of (rms[0]!.resource as Json).attributes as { key: string; value: { stringValue: string } }[]) d.resource[a.key] = a.value.stringValue;
  const sms = rms[0]!.scopeMetrics as Json[];
  expect(sms).toHaveLength(1);
  Object.assign(d.scope, sms[0]!.scope);
  for (const m of sms[0]!.metrics as Json[]) {
    const name = m.name as string;
    expect(typeof m.description).toBe("string");
    const point = (p: Json) => {
      d.times.add(p.timeUnixNano as string);
      d.starts.add(p.startTimeUnixNano as string);
    };
    if (m.sum) {
      const sum = m.sum as Json;
      expect(sum.aggregationTemporality).toBe(2); // CUMULATIVE, as a number
      expect(sum.isMonotonic).toBe(true);
      d.types.set(name, "counter");
      for (const p of sum.dataPoints as Json[]) {
        point(p);
        d.samples.set(name + labelsOf(p.attributes), double(p.asDouble));
      }
    } else if (m.gauge) {
      d.types.set(name, "gauge");
      for (const p of (m.gauge as Json).dataPoints as Json[]) {
        point(p);
        d.samples.set(name + labelsOf(p.attributes), double(p.asDouble));
      }
    } else if (m.histogram) {
      const h = m.histogram as Json;
      expect(h.aggregationTemporality).toBe(2);
      d.types.set(name, "histogram");
      for (const p of h.dataPoints as Json[]) {
        point(p);
        const bounds = (p.explicitBounds as unknown[]).map(double);
        const counts = (p.bucketCounts as unknown[]).map(fixed64);
        expect(counts).toHaveLength(bounds.length + 1);
        let cumulative = 0;
        for (let i = 0; i <= bounds.length; i++) {
          cumulative += counts[i]!;
          const le = i < bounds.length ? String(bounds[i]) : "+Inf";
          d.samples.set(`${name}_bucket${labelsOf(p.attributes, ["le", le])}`, cumulative);
        }
        expect(fixed64(p.count)).toBe(cumulative);
        d.samples.set(`${name}_sum${labelsOf(p.attributes)}`, double(p.sum));
        d.samples.set(`${name}_count${labelsOf(p.attributes)}`, fixed64(p.count));
        for (const e of (p.exemplars as Json[] | undefined) ?? []) {
          d.exemplars.push({ series: name + labelsOf(p.attributes), traceId: e.traceId as string, spanId: e.spanId as string, value: double(e.asDouble), timeUnixNano: e.timeUnixNano as string });
        }
      }
    } else {
      throw new Error(`Metric ${name} has no sum, gauge or histogram`);
    }
  }
  return d;
}

// ---- a main process's registry: control-plane families, process metrics, traffic summed over two workers ----

const web = entrypoint({ name: "shop/web:http", protocol: "http", endpoints: [8080] });
const db = entrypoint({ name: "shop/db:tcp", protocol: "tcp", endpoints: [5432] });

function mainProcessMetrics() {
  const node = new NodeTrafficMetrics();
  const metrics = new GatewayMetrics({ traffic: node, workers: () => [], listeners: () => ({ bound: 2, failed: 0, draining: 0 }) });
  const processMetrics = new ProcessMetrics();
  metrics.registry.register(processMetrics);
  // A family with label values that need escaping, and a value the JSON mapping spells as a string.
  const odd = metrics.registry.gauge({ name: "test_odd", help: 'Odd "values".', labelNames: ["v"] });
  odd.labels('a"b\\c\nd,e="f"').set(1.5);
  odd.labels("nan").set(NaN);
  odd.labels("inf").set(-Infinity);
  const snap = snapshot(web, db);
  node.sync(snap);
  const workers = [new TrafficMetrics(), new TrafficMetrics()];
  for (const w of workers) w.sync(snap);
  const [w0, w1] = workers.map((w) => w.forEntrypoint(web));
  w0!.request(200, 0.003, TRACE_A);
  w0!.request(503, 0.7);
  w1!.request(200, 0.03, TRACE_B);
  w1!.request(404, 2.5, TRACE_A);
  const d1 = workers[1]!.forEntrypoint(db);
  d1.connOpened();
  d1.bytes(100, 2_000);
  d1.connectDuration(0.0007);
  d1.error("no_endpoints");
  const dumps: TrafficDump[] = workers.map((w) => JSON.parse(JSON.stringify(w.dump())) as TrafficDump);
  dumps.forEach((dump, i) => node.update(i, dump));
  return { metrics, processMetrics, [Symbol.dispose]: () => processMetrics[Symbol.dispose]() };
}

function settingsFor(url: string, env: Record<string, string> = {}): OtlpMetricsSettings {
  return otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_ENDPOINT: url, ...env })!;
}

/** Families whose values move between two reads (the process's own CPU, memory, loop lag; the export's own counter). */
const MOVING = /^(process_|kubegate_otlp_metrics_exports_total)/;

describe("OTLP metrics export: what the collector receives", () => {
  test("the series of /metrics at the same moment: names, types, values, attributes, exemplars, resource", async () => {
    await using sink = startSink();
    using main = mainProcessMetrics();
    const registry = main.metrics.registry;
    const env = { OTEL_SERVICE_NAME: "edge", OTEL_EXPORTER_OTLP_METRICS_HEADERS: "authorization=Bearer%20t0k,x-tenant=a" };
    const otlp = startOtlpMetricsExport(registry, { settings: settingsFor(sink.url, env), env, serviceVersion: "1.2.3", instanceId: "node-a" });
    const before = Date.now();
    expect(await otlp.exportNow()).toBe(true);
    const scrape = parseScrape(registry.expose());
    const after = Date.now();
    await otlp.shutdown();

    const first = sink.received[0]!;
    expect(first.path).toBe("/v1/metrics");
    expect(first.headers.get("content-type")).toBe("application/json");
    expect(first.headers.get("authorization")).toBe("Bearer t0k");
    expect(first.headers.get("x-tenant")).toBe("a");
    const d = decode(first.body);

    // Every family of the scrape that has series, with its type (OTLP has no empty metric); nothing else.
    const keys = [...scrape.samples.keys()];
    const hasSeries = (name: string, type: string) => keys.some((k) => k === name || k.startsWith(`${name}{`) || (type === "histogram" && k.startsWith(`${name}_count`)));
    expect(new Map([...d.types].sort())).toEqual(new Map([...scrape.types].filter(([name, type]) => hasSeries(name, type)).sort()));
    // Every series with its value (those that move between two reads: present, not compared).
    const stable = (m: Map<string, number>) => new Map([...m].filter(([k]) => !MOVING.test(k)).sort(([a], [b]) => (a < b ? -1 : 1)));
    expect(stable(d.samples)).toEqual(stable(new Map(scrape.samples)));
    expect([...d.samples.keys()].filter((k) => MOVING.test(k)).sort()).toEqual([...scrape.samples.keys()].filter((k) => MOVING.test(k)).sort());
    expect(d.samples.size).toBeGreaterThan(40);

    // The two workers' requests, summed by the main process, as the text says them.
    const WEB = 'namespace="shop",service="web",port="http",protocol="http"';
    expect(d.samples.get(`${N.requestDuration}_count{${WEB}}`)).toBe(4);
    expect(d.samples.get(`${N.requestDuration}_bucket{${WEB},le="0.05"}`)).toBe(2);
    expect(d.samples.get('test_odd{v="a\\"b\\\\c\\nd,e=\\"f\\""}')).toBe(1.5);
    expect(d.samples.get('test_odd{v="nan"}')).toBeNaN();
    expect(d.samples.get('test_odd{v="inf"}')).toBe(-Infinity);

    // Exemplars: hex ids, the observed value, a time of this test.
    expect(d.exemplars.map((e) => [e.series, e.traceId, e.spanId, e.value]).sort()).toEqual(
      [
        [`${N.requestDuration}{${WEB}}`, TRACE_A.traceId, TRACE_A.spanId, 2.5],
        [`${N.requestDuration}{${WEB}}`, TRACE_A.traceId, TRACE_A.spanId, 0.003],
        [`${N.requestDuration}{${WEB}}`, TRACE_B.traceId, TRACE_B.spanId, 0.03],
      ].sort(),
    );
    for (const e of d.exemplars) {
      expect(Number(BigInt(e.timeUnixNano) / 1_000_000n)).toBeWithin(before - 5_000, after + 1);
    }

    // One export time for every point, between the two reads; every cumulative start is the process's start.
    expect(d.times.size).toBe(1);
    const time = [...d.times][0]!;
    expect(time).toMatch(DECIMAL);
    expect(Number(BigInt(time) / 1_000_000n)).toBeWithin(before, after + 1);
    expect(d.starts.size).toBe(1);
    const startS = Number(BigInt([...d.starts][0]!) / 1_000_000n) / 1000;
    expect(Math.abs(startS - scrape.samples.get("process_start_time_seconds")!)).toBeLessThan(0.02);

    expect(d.resource).toEqual({ "service.name": "edge", "service.version": "1.2.3", "service.instance.id": "node-a" });
    expect(d.scope).toEqual({ name: "kubegate", version: "1.2.3" });

    // The final export on shutdown counts the first one.
    expect(sink.received).toHaveLength(2);
    expect(decode(sink.received[1]!.body).samples.get("kubegate_otlp_metrics_exports_total")).toBe(1);
    expect(otlp.stats()).toEqual({ exported: 2, failures: { status: 0, network: 0, timeout: 0, busy: 0 } });
  });

  test("on a timer every OTEL_METRIC_EXPORT_INTERVAL; gzip when asked; shutdown stops the timer after a last export", async () => {
    await using sink = startSink();
    using main = mainProcessMetrics();
    const settings = settingsFor(sink.url, { OTEL_METRIC_EXPORT_INTERVAL: "40", OTEL_EXPORTER_OTLP_COMPRESSION: "gzip" });
    expect(settings.timeoutMs).toBe(40); // at most the interval
    const otlp = startOtlpMetricsExport(main.metrics.registry, { settings });
    await waitFor(() => sink.received.length >= 3, { what: "three timed exports" });
    expect(sink.received[0]!.headers.get("content-encoding")).toBe("gzip");
    await otlp.shutdown();
    await otlp.shutdown(); // idempotent
    const n = sink.received.length;
    const counted = decode(sink.received[n - 1]!.body).samples.get("kubegate_otlp_metrics_exports_total")!;
    expect(counted).toBe(n - 1); // the last one was sent before it was counted
    // No tick after shutdown: a burst of 0-ms timers gives the interval (40 ms) every chance to fire.
    const until = performance.now() + 150;
    while (performance.now() < until) await new Promise((r) => setTimeout(r, 5));
    expect(sink.received).toHaveLength(n);
  });
});

describe("OTLP metrics export: failures are dropped and counted", () => {
  test("a collector answering 500: counted by reason, one warning a minute, /metrics shows the count", async () => {
    await using sink = startSink(() => new Response("overloaded", { status: 500 }));
    using main = mainProcessMetrics();
    const { log, warnings } = recordingLog();
    const otlp = startOtlpMetricsExport(main.metrics.registry, { settings: settingsFor(sink.url), log });
    expect(await otlp.exportNow()).toBe(false);
    expect(await otlp.exportNow()).toBe(false);
    expect(sink.received).toHaveLength(2);
    expect(otlp.stats().failures.status).toBe(2);
    expect(warnings.filter((w) => w.msg.startsWith("OTLP metrics export failed"))).toHaveLength(1);
    expect(warnings[0]!.fields).toMatchObject({ reason: "status", status: 500, body: "overloaded" });
    const scrape = parseScrape(main.metrics.registry.expose());
    expect(scrape.samples.get('kubegate_otlp_metrics_export_failures_total{reason="status"}')).toBe(2);
    expect(scrape.samples.get("kubegate_otlp_metrics_exports_total")).toBe(0);
    await otlp.shutdown();
  });

  test("a collector that is down: a network failure", async () => {
    const sink = startSink();
    const url = sink.url;
    await sink[Symbol.asyncDispose]();
    using main = mainProcessMetrics();
    const { log, warnings } = recordingLog();
    const otlp = startOtlpMetricsExport(main.metrics.registry, { settings: settingsFor(url), log });
    expect(await otlp.exportNow()).toBe(false);
    expect(otlp.stats().failures).toEqual({ status: 0, network: 1, timeout: 0, busy: 0 });
    expect(warnings[0]!.fields).toMatchObject({ reason: "network", url: `${url}/v1/metrics` });
    await otlp.shutdown();
  });

  test("a collector that hangs: the export times out; a tick while it is in flight is dropped as busy", async () => {
    const hung: (() => void)[] = [];
    await using sink = startSink(() => new Promise<Response>((resolve) => hung.push(() => resolve(Response.json({})))));
    using main = mainProcessMetrics();
    const otlp = startOtlpMetricsExport(main.metrics.registry, { settings: settingsFor(sink.url, { OTEL_METRIC_EXPORT_TIMEOUT: "300" }) });
    const t0 = performance.now();
    const first = otlp.exportNow();
    await waitFor(() => hung.length === 1, { what: "the request at the sink" });
    expect(await otlp.exportNow()).toBe(false); // busy: one request in flight at most
    expect(await first).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(otlp.stats().failures).toEqual({ status: 0, network: 0, timeout: 1, busy: 1 });
    for (const release of hung) release();
    await otlp.shutdown();
  });

  test("shutdown cuts short an export in flight and sends the final values at once", async () => {
    const hung: (() => void)[] = [];
    // The first request hangs; later ones are answered.
    await using sink = startSink((n) => (n === 1 ? new Promise<Response>((resolve) => hung.push(() => resolve(Response.json({})))) : Response.json({})));
    using main = mainProcessMetrics();
    const otlp = startOtlpMetricsExport(main.metrics.registry, { settings: settingsFor(sink.url, { OTEL_METRIC_EXPORT_TIMEOUT: "20000" }) });
    const first = otlp.exportNow();
    await waitFor(() => hung.length === 1, { what: "the request at the sink" });
    const t0 = performance.now();
    await otlp.shutdown();
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(await first).toBe(false);
    expect(sink.received).toHaveLength(2);
    expect(otlp.stats()).toEqual({ exported: 1, failures: { status: 0, network: 0, timeout: 1, busy: 0 } });
    for (const release of hung) release();
  });

  test("a partial success is accepted and warned about", async () => {
    await using sink = startSink(() => Response.json({ partialSuccess: { rejectedDataPoints: "3", errorMessage: "bad points" } }));
    using main = mainProcessMetrics();
    const { log, warnings } = recordingLog();
    const otlp = startOtlpMetricsExport(main.metrics.registry, { settings: settingsFor(sink.url), log });
    expect(await otlp.exportNow()).toBe(true);
    expect(warnings.map((w) => w.fields)).toContainEqual(expect.objectContaining({ rejectedDataPoints: 3, errorMessage: "bad points" }));
    expect(partialRejection("{}")).toBeUndefined();
    expect(partialRejection('{"partialSuccess":{}}')).toBeUndefined();
    await otlp.shutdown();
  });
});

describe("OTLP metrics settings from the standard environment", () => {
  test("on with OTEL_METRICS_EXPORTER=otlp or a metrics endpoint; a bare OTLP endpoint (tracing's) is not enough", () => {
    expect(otlpMetricsSettings({})).toBeUndefined();
    expect(otlpMetricsSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })).toBeUndefined();
    expect(otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp" })?.url).toBe("http://localhost:4318/v1/metrics");
    expect(otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/" })?.url).toBe("http://c:4318/v1/metrics");
    expect(otlpMetricsSettings({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "https://m:443/custom" })?.url).toBe("https://m:443/custom");
    expect(otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c", OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://m/x" })?.url).toBe("http://m/x");
    expect(otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "none", OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://m" })).toBeUndefined();
    expect(otlpMetricsSettings({ OTEL_SDK_DISABLED: "TRUE", OTEL_METRICS_EXPORTER: "otlp" })).toBeUndefined();
  });

  test("interval, timeout, headers (per signal wins), compression, and notes for what is not supported", () => {
    const s = otlpMetricsSettings({
      OTEL_METRICS_EXPORTER: "otlp,prometheus",
      OTEL_EXPORTER_OTLP_HEADERS: "a=1,b=2",
      OTEL_EXPORTER_OTLP_METRICS_HEADERS: "b=3",
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: "zstd",
    })!;
    expect(s).toMatchObject({ intervalMs: 60_000, timeoutMs: 30_000, gzip: false, headers: { a: "1", b: "3" } });
    expect(s.notes).toHaveLength(3);
    expect(otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_METRIC_EXPORT_INTERVAL: "10000", OTEL_METRIC_EXPORT_TIMEOUT: "2500" })).toMatchObject({ intervalMs: 10_000, timeoutMs: 2_500 });
    expect(otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })!.notes).toEqual([]);
    expect(() => otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_METRIC_EXPORT_INTERVAL: "1m" })).toThrow(OtelEnvError);
    expect(() => otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_METRIC_EXPORT_INTERVAL: "0" })).toThrow("OTEL_METRIC_EXPORT_INTERVAL");
    expect(() => otlpMetricsSettings({ OTEL_METRICS_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_HEADERS: "novalue" })).toThrow('entry "novalue"');
    expect(() => otlpMetricsSettings({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "collector:4318" })).toThrow("http:// or https://");
  });

  test("label pairs parse back as the text format escaped them", () => {
    expect(parseLabelPairs("")).toEqual([]);
    expect(parseLabelPairs('a="",b="x\\\\y\\"z\\n",c="=,"')).toEqual([
      { key: "a", value: { stringValue: "" } },
      { key: "b", value: { stringValue: 'x\\y"z\n' } },
      { key: "c", value: { stringValue: "=," } },
    ]);
    expect(() => parseLabelPairs('a="x')).toThrow("unterminated");
  });
});
