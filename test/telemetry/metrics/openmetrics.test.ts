/**
 * OpenMetrics exposition and request-latency exemplars: the exact OpenMetrics text of the registry, the
 * latest exemplar per bucket of a Service port's latency histogram (only in OpenMetrics; the 0.0.4 text
 * is byte-identical with or without them), the `Accept` negotiation of `/metrics`, and exemplars carried
 * from worker processes' dumps to the node's scrape.
 */
import { describe, expect, test } from "bun:test";
import {
  acceptsOpenMetrics,
  CONTENT_TYPE,
  metricsHandler,
  NodeTrafficMetrics,
  OPENMETRICS_CONTENT_TYPE,
  Registry,
  TrafficMetricNames as N,
  TrafficMetrics,
} from "../../../src/telemetry/metrics/index.ts";
import { entrypoint, snapshot } from "../../support/entrypoints.ts";

const PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const TRACE_A = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" };
const TRACE_B = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" };
const web = entrypoint({ name: "shop/web:http", protocol: "http", endpoints: [8080] });
const WEB = 'namespace="shop",service="web",port="http",protocol="http"';

/** The request-duration `_bucket` lines of the web Service port. */
function bucketLines(text: string): string[] {
  return text.split("\n").filter((l) => l.startsWith(`${N.requestDuration}_bucket{${WEB},`));
}

describe("registry in OpenMetrics", () => {
  test("counters are named without _total, a counter without it is unknown, no comments, # EOF at the end", () => {
    const r = new Registry({ onCollectError: () => {} });
    r.counter({ name: "app_events_total", help: 'Events "seen".', labelNames: ["kind"] }).labels("a").inc(3);
    r.counter({ name: "app_legacy_count", help: "Old." }).inc();
    r.gauge({ name: "app_temperature_celsius", help: "Temperature." }).set(-1.5);
    const h = r.histogram({ name: "app_wait_seconds", help: "Waits.", buckets: [0.1, 1] });
    h.observe(0.05);
    h.observe(7);
    r.register({
      names: ["app_broken"],
      collect() {
        throw new Error("boom");
      },
    });
    expect(r.expose({ openMetrics: true })).toBe(
      [
        '# HELP app_events Events \\"seen\\".',
        "# TYPE app_events counter",
        'app_events_total{kind="a"} 3',
        "# HELP app_legacy_count Old.",
        "# TYPE app_legacy_count unknown",
        "app_legacy_count 1",
        "# HELP app_temperature_celsius Temperature.",
        "# TYPE app_temperature_celsius gauge",
        "app_temperature_celsius -1.5",
        "# HELP app_wait_seconds Waits.",
        "# TYPE app_wait_seconds histogram",
        'app_wait_seconds_bucket{le="0.1"} 1',
        'app_wait_seconds_bucket{le="1"} 1',
        'app_wait_seconds_bucket{le="+Inf"} 2',
        "app_wait_seconds_sum 7.05",
        "app_wait_seconds_count 2",
        "# EOF",
        "",
      ].join("\n"),
    );
    // Text format 0.0.4 keeps the _total family name, the comment, and has no # EOF.
    const classic = r.expose();
    expect(classic).toContain("# TYPE app_events_total counter\n");
    expect(classic).toContain("# collect failed for app_broken: boom\n");
    expect(classic).not.toContain("# EOF");
  });
});

describe("request-latency exemplars", () => {
  function traffic() {
    const registry = new Registry();
    const metrics = new TrafficMetrics();
    registry.register(metrics);
    metrics.sync(snapshot(web));
    return { registry, t: metrics.forEntrypoint(web), metrics };
  }

  test("the latest sampled request per bucket is its exemplar, in OpenMetrics only", () => {
    const { registry, t } = traffic();
    const before = Date.now() / 1000;
    t.request(200, 0.003, TRACE_A); // (0.0025, 0.005]
    t.request(200, 0.004, TRACE_B); // same bucket: replaces A
    t.request(500, 0.7, TRACE_A); // (0.5, 1]
    t.request(200, 0.004); // not sampled: counted, the exemplar stays B
    t.request(200, 120, TRACE_A); // +Inf
    const after = Date.now() / 1000;

    const lines = bucketLines(registry.expose({ openMetrics: true }));
    const withExemplar = lines.filter((l) => l.includes(" # {"));
    expect(withExemplar.map((l) => l.replace(/ [0-9.]+$/, ""))).toEqual([
      `${N.requestDuration}_bucket{${WEB},le="0.005"} 3 # {trace_id="${TRACE_B.traceId}",span_id="${TRACE_B.spanId}"} 0.004`,
      `${N.requestDuration}_bucket{${WEB},le="1"} 4 # {trace_id="${TRACE_A.traceId}",span_id="${TRACE_A.spanId}"} 0.7`,
      `${N.requestDuration}_bucket{${WEB},le="+Inf"} 5 # {trace_id="${TRACE_A.traceId}",span_id="${TRACE_A.spanId}"} 120`,
    ]);
    for (const line of withExemplar) {
      const ts = Number(line.slice(line.lastIndexOf(" ") + 1));
      expect(ts).toBeGreaterThanOrEqual(Math.floor(before * 1000) / 1000);
      expect(ts).toBeLessThanOrEqual(after + 0.001);
    }
    expect(lines.length - withExemplar.length).toBe(14); // the other buckets carry none
    expect(registry.expose()).not.toContain("trace_id");
  });

  test("text format 0.0.4 is byte-identical with or without exemplars for the same observations", () => {
    const sampled = traffic();
    const plain = traffic();
    const seconds = [0.0001, 0.003, 0.004, 0.7, 1.5, 45, 120];
    for (const [i, s] of seconds.entries()) {
      sampled.t.request(200 + (i % 4) * 100, s, i % 2 === 0 ? TRACE_A : TRACE_B);
      plain.t.request(200 + (i % 4) * 100, s);
    }
    const text = sampled.registry.expose();
    expect(text).toBe(plain.registry.expose());
    expect(text).toContain(`${N.requestDuration}_bucket{${WEB},le="0.005"} 3\n`);
    // And the OpenMetrics text differs from the plain twin's only by the exemplars on bucket lines.
    const stripped = sampled.registry.expose({ openMetrics: true }).replace(/ # \{[^}]*\} \S+ \S+\n/g, "\n");
    expect(stripped).toBe(plain.registry.expose({ openMetrics: true }));
  });

  test("/metrics answers OpenMetrics to Prometheus' Accept header and text format 0.0.4 otherwise", async () => {
    const { registry, t } = traffic();
    t.request(200, 0.003, TRACE_A);
    const handler = metricsHandler(registry);
    const om = handler(new Request("http://127.0.0.1/metrics", { headers: { Accept: PROMETHEUS_ACCEPT } }));
    expect(om.headers.get("content-type")).toBe(OPENMETRICS_CONTENT_TYPE);
    expect(om.headers.get("vary")).toBe("Accept");
    const omText = await om.text();
    expect(omText).toContain(`trace_id="${TRACE_A.traceId}"`);
    expect(omText.endsWith("# EOF\n")).toBe(true);
    for (const accept of [undefined, "text/plain;version=0.0.4", "*/*", "application/openmetrics-text;q=0,text/plain"]) {
      const res = handler(new Request("http://127.0.0.1/metrics", { headers: accept === undefined ? {} : { Accept: accept } }));
      expect(res.headers.get("content-type")).toBe(CONTENT_TYPE);
      expect(await res.text()).toBe(registry.expose());
    }
  });

  test("acceptsOpenMetrics reads media ranges and their quality", () => {
    expect(acceptsOpenMetrics(PROMETHEUS_ACCEPT)).toBe(true);
    expect(acceptsOpenMetrics("Application/OpenMetrics-Text; version=1.0.0")).toBe(false); // the cheap pre-check is case-sensitive
    expect(acceptsOpenMetrics("text/plain;q=0.9, application/openmetrics-text ; q=0.1")).toBe(true);
    expect(acceptsOpenMetrics("application/openmetrics-text;q=0")).toBe(false);
    expect(acceptsOpenMetrics("application/openmetrics-textual")).toBe(false);
    expect(acceptsOpenMetrics(null)).toBe(false);
  });
});

describe("exemplars from worker processes", () => {
  test("the node shows the latest exemplar per bucket over its workers; a removed worker's go with it", () => {
    const registry = new Registry();
    const node = new NodeTrafficMetrics();
    registry.register(node);
    const snap = snapshot(web);
    node.sync(snap);
    const planes = [new TrafficMetrics(), new TrafficMetrics()];
    for (const p of planes) p.sync(snap);
    const [t0, t1] = planes.map((p) => p.forEntrypoint(web));

    t0!.request(200, 0.003, TRACE_A);
    t0!.request(200, 0.7, TRACE_A);
    node.update(0, planes[0]!.dump());
    const at = Date.now();
    while (Date.now() === at); // timestamps have millisecond steps: B's must be later than A's (at most 1 ms)
    t1!.request(200, 0.004, TRACE_B); // in A's bucket, later
    node.update(1, planes[1]!.dump());
    let lines = bucketLines(registry.expose({ openMetrics: true })).filter((l) => l.includes(" # {"));
    expect(lines.map((l) => l.slice(0, l.indexOf(" # {") + 4) + l.slice(l.indexOf("trace_id"), l.indexOf(",span_id")))).toEqual([
      `${N.requestDuration}_bucket{${WEB},le="0.005"} 2 # {trace_id="${TRACE_B.traceId}"`,
      `${N.requestDuration}_bucket{${WEB},le="1"} 3 # {trace_id="${TRACE_A.traceId}"`,
    ]);

    // A change dump without new sampled requests (no exemplars in it) keeps them; a dump is JSON on the wire.
    t0!.request(200, 0.004);
    node.update(0, JSON.parse(JSON.stringify(planes[0]!.dump())));
    expect(bucketLines(registry.expose({ openMetrics: true })).filter((l) => l.includes(" # {"))).toHaveLength(2);
    // One bucket's new exemplar joins the ones held for the others.
    t0!.request(200, 120, TRACE_B);
    node.update(0, planes[0]!.dump());
    expect(bucketLines(registry.expose({ openMetrics: true })).filter((l) => l.includes(" # {")).map((l) => l.slice(l.indexOf("le="), l.indexOf("}")))).toEqual([
      'le="0.005"',
      'le="1"',
      'le="+Inf"',
    ]);

    node.remove(1); // B's worker is gone: its exemplar with it, its counts kept
    lines = bucketLines(registry.expose({ openMetrics: true })).filter((l) => l.includes(" # {"));
    expect(lines.map((l) => l.slice(0, l.indexOf(" # {")))).toEqual([
      `${N.requestDuration}_bucket{${WEB},le="0.005"} 3`,
      `${N.requestDuration}_bucket{${WEB},le="1"} 4`,
      `${N.requestDuration}_bucket{${WEB},le="+Inf"} 5`,
    ]);
    expect(lines[0]).toContain(TRACE_A.traceId);
  });

  test("a dump carries only the exemplars that changed since the last one (a full dump: all of them)", () => {
    const plane = new TrafficMetrics();
    const db = entrypoint({ name: "shop/db:5432", protocol: "tcp", endpoints: [5432] });
    plane.sync(snapshot(web, db));
    plane.forEntrypoint(db).connOpened();
    expect(plane.dump().exemplars).toBeUndefined();
    plane.forEntrypoint(web).request(200, 0.003, TRACE_A);
    const dump = plane.dump();
    expect(Object.keys(dump.exemplars ?? {})).toEqual([`shop/web:http\u0000http`]);
    const ex = dump.exemplars![`shop/web:http\u0000http`]!;
    expect(ex).toHaveLength(17);
    expect(ex.filter((e) => e !== null)).toEqual([{ ...TRACE_A, value: 0.003, timestamp: expect.any(Number) }]);

    plane.forEntrypoint(web).request(200, 0.003); // not sampled: the series changed, its exemplars did not
    const next = plane.dump();
    expect(Object.keys(next.series)).toEqual([`shop/web:http\u0000http`]);
    expect(next.exemplars).toBeUndefined();
    plane.forEntrypoint(web).request(200, 0.7, TRACE_B); // another bucket: only that one is sent
    expect(plane.dump().exemplars![`shop/web:http\u0000http`]!.filter((e) => e !== null)).toEqual([{ ...TRACE_B, value: 0.7, timestamp: expect.any(Number) }]);
    expect(plane.dump({ full: true }).exemplars![`shop/web:http\u0000http`]!.filter((e) => e !== null).map((e) => e!.traceId)).toEqual([TRACE_A.traceId, TRACE_B.traceId]);
  });
});
