/**
 * The registry and text format 0.0.4: exact exposition, escaping, histogram bucket math, kube-proxy's
 * bucket layouts, collect-time callbacks, and clear errors for bad definitions.
 */
import { describe, expect, test } from "bun:test";
import {
  CONTENT_TYPE,
  escapeHelp,
  escapeLabelValue,
  exponentialBuckets,
  formatValue,
  metricsHandler,
  NETWORK_PROGRAMMING_BUCKETS,
  Registry,
  SYNC_DURATION_BUCKETS,
} from "../../../src/telemetry/metrics/index.ts";

describe("exposition", () => {
  test("counters, gauges and histograms render in text format 0.0.4", () => {
    const r = new Registry();
    const c = r.counter({ name: "app_events_total", help: "Events seen.", labelNames: ["kind"] });
    const g = r.gauge({ name: "app_temperature_celsius", help: "Temperature." });
    const h = r.histogram({ name: "app_wait_seconds", help: "Waits.", buckets: [0.1, 1] });
    c.labels("a").inc();
    c.labels("a").inc(2);
    c.labels("b").inc();
    g.set(-1.5);
    h.observe(0.05);
    h.observe(0.1);
    h.observe(0.5);
    h.observe(7);
    expect(r.expose()).toBe(
      [
        "# HELP app_events_total Events seen.",
        "# TYPE app_events_total counter",
        'app_events_total{kind="a"} 3',
        'app_events_total{kind="b"} 1',
        "# HELP app_temperature_celsius Temperature.",
        "# TYPE app_temperature_celsius gauge",
        "app_temperature_celsius -1.5",
        "# HELP app_wait_seconds Waits.",
        "# TYPE app_wait_seconds histogram",
        'app_wait_seconds_bucket{le="0.1"} 2',
        'app_wait_seconds_bucket{le="1"} 3',
        'app_wait_seconds_bucket{le="+Inf"} 4',
        "app_wait_seconds_sum 7.65",
        "app_wait_seconds_count 4",
        "",
      ].join("\n"),
    );
  });

  test("a family with labels and no children yet has only its HELP and TYPE lines", () => {
    const r = new Registry();
    r.counter({ name: "app_errors_total", help: "Errors.", labelNames: ["reason"] });
    expect(r.expose()).toBe("# HELP app_errors_total Errors.\n# TYPE app_errors_total counter\n");
  });

  test("label values escape backslash, double quote and line feed; HELP escapes backslash and line feed", () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    expect(escapeLabelValue("plain-value.ok")).toBe("plain-value.ok");
    expect(escapeHelp('two\nlines \\ and "quotes"')).toBe('two\\nlines \\\\ and "quotes"');
    const r = new Registry();
    r.gauge({ name: "app_info", help: "Line one\nline two \\", labelNames: ["path"] }).labels('C:\\dir "x"\n').set(1);
    expect(r.expose()).toBe('# HELP app_info Line one\\nline two \\\\\n# TYPE app_info gauge\napp_info{path="C:\\\\dir \\"x\\"\\n"} 1\n');
  });

  test("special values use Prometheus spellings", () => {
    expect([Infinity, -Infinity, NaN, 0, 1e21, 1.5e-7, 42].map(formatValue)).toEqual(["+Inf", "-Inf", "NaN", "0", "1e+21", "1.5e-7", "42"]);
  });
});

describe("histograms", () => {
  test("an observation equal to a bound lands in that bucket; buckets are cumulative; NaN is ignored", () => {
    const r = new Registry();
    const h = r.histogram({ name: "t_seconds", help: "t", buckets: [1, 2, 4] });
    for (const v of [-3, 0, 1, 1.0000001, 2, 3.9, 4, 4.1, 1000, NaN]) h.observe(v);
    const child = h.labels();
    expect([...child.counts]).toEqual([3, 2, 2, 2]); // (-inf,1], (1,2], (2,4], (4,+inf)
    expect(child.count).toBe(9);
    expect(child.sum).toBeCloseTo(-3 + 0 + 1 + 1.0000001 + 2 + 3.9 + 4 + 4.1 + 1000, 9);
    const lines = r.expose().split("\n").filter((l) => l.startsWith("t_seconds_bucket") || l.startsWith("t_seconds_count"));
    expect(lines).toEqual(['t_seconds_bucket{le="1"} 3', 't_seconds_bucket{le="2"} 5', 't_seconds_bucket{le="4"} 7', 't_seconds_bucket{le="+Inf"} 9', "t_seconds_count 9"]);
  });

  test("kube-proxy's bucket layouts, as pkg/proxy/metrics/metrics.go defines them", () => {
    expect(SYNC_DURATION_BUCKETS).toEqual([0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384]);
    expect(exponentialBuckets(0.001, 2, 15)).toEqual([...SYNC_DURATION_BUCKETS]);
    // merge() starts from make([]float64, 1): a leading 0 bucket, then 2 + 59 + 12 + 7 bounds.
    expect(NETWORK_PROGRAMMING_BUCKETS.length).toBe(81);
    expect(NETWORK_PROGRAMMING_BUCKETS.slice(0, 5)).toEqual([0, 0.25, 0.5, 1, 2]);
    expect(NETWORK_PROGRAMMING_BUCKETS.slice(60, 64)).toEqual([58, 59, 60, 65]);
    expect(NETWORK_PROGRAMMING_BUCKETS.slice(-8)).toEqual([115, 120, 150, 180, 210, 240, 270, 300]);
  });

  test("bad buckets are refused with the reason", () => {
    const r = new Registry();
    expect(() => r.histogram({ name: "a_seconds", help: "a", buckets: [] })).toThrow('Invalid buckets for "a_seconds": at least one bound is needed');
    expect(() => r.histogram({ name: "b_seconds", help: "b", buckets: [1, 1] })).toThrow('Invalid buckets for "b_seconds": bounds must increase, got 1 then 1');
    expect(() => r.histogram({ name: "c_seconds", help: "c", buckets: [1, Infinity] })).toThrow("is not finite");
    expect(() => r.histogram({ name: "d_seconds", help: "d", labelNames: ["le"], buckets: [1] })).toThrow('Invalid label name "le" on metric "d_seconds"');
  });
});

describe("registry", () => {
  test("collect hooks run at every scrape", () => {
    const r = new Registry();
    let n = 0;
    r.gauge({ name: "app_scrapes", help: "Scrapes so far.", collect: (g) => g.set(++n) });
    expect(r.expose()).toContain("app_scrapes 1\n");
    expect(r.expose()).toContain("app_scrapes 2\n");
  });

  test("a throwing collect hook drops only its family and is reported", () => {
    const errors: string[] = [];
    const r = new Registry({ onCollectError: (name, err) => errors.push(`${name}: ${(err as Error).message}`) });
    r.counter({ name: "ok_before_total", help: "b" }).inc();
    r.gauge({
      name: "broken",
      help: "x",
      labelNames: ["a"],
      collect: (g) => {
        g.labels("half").set(1);
        throw new Error("view is gone");
      },
    });
    r.counter({ name: "ok_after_total", help: "a" }).inc(2);
    const text = r.expose();
    expect(text).toContain("ok_before_total 1\n");
    expect(text).toContain("ok_after_total 2\n");
    expect(text).not.toContain("TYPE broken");
    expect(text).toContain("# collect failed for broken: view is gone\n");
    expect(errors).toEqual(["broken: view is gone"]);
  });

  test("names, label names and duplicates are checked", () => {
    const r = new Registry();
    r.counter({ name: "dup_total", help: "d" });
    expect(() => r.counter({ name: "dup_total", help: "d" })).toThrow('Cannot register metric "dup_total": a metric with that name is already registered');
    expect(() => r.gauge({ name: "9lives", help: "x" })).toThrow('Invalid metric name "9lives"');
    expect(() => r.gauge({ name: "ok", help: "x", labelNames: ["__reserved"] })).toThrow('Invalid label name "__reserved" on metric "ok"');
    const c = r.counter({ name: "two_total", help: "x", labelNames: ["a", "b"] });
    expect(() => c.labels("only-one")).toThrow('Wrong number of label values for "two_total": expected 2 (a, b), got 1');
  });

  test("counters never go down; removed children disappear", () => {
    const r = new Registry();
    const c = r.counter({ name: "c_total", help: "c", labelNames: ["k"] });
    c.labels("x").inc(5);
    c.labels("x").inc(-3);
    c.labels("y").inc();
    expect(c.labels("x").value).toBe(5);
    expect(c.remove("y")).toBe(true);
    expect(r.expose()).toBe('# HELP c_total c\n# TYPE c_total counter\nc_total{k="x"} 5\n');
  });
});

describe("metricsHandler", () => {
  test("GET answers the exposition with the 0.0.4 content type; HEAD has no body; others get 405", async () => {
    const r = new Registry();
    r.counter({ name: "hits_total", help: "h" }).inc(3);
    const handle = metricsHandler(r);
    const res = handle(new Request("http://x/metrics"));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe(CONTENT_TYPE);
    expect(CONTENT_TYPE).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(await res.text()).toBe("# HELP hits_total h\n# TYPE hits_total counter\nhits_total 3\n");
    const head = handle(new Request("http://x/metrics", { method: "HEAD" }));
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    const post = handle(new Request("http://x/metrics", { method: "POST" }));
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });

  test("large scrapes are gzipped for clients that accept gzip", async () => {
    const r = new Registry();
    const g = r.gauge({ name: "big", help: "b", labelNames: ["i"] });
    for (let i = 0; i < 5_000; i++) g.labels(String(i)).set(i);
    const plain = r.expose();
    const res = metricsHandler(r)(new Request("http://x/metrics", { headers: { "Accept-Encoding": "gzip, deflate" } }));
    expect(res.headers.get("content-encoding")).toBe("gzip");
    const zipped = new Uint8Array(await res.arrayBuffer());
    expect(zipped.length).toBeLessThan(plain.length / 3);
    const unzipped = await new Response(new Blob([zipped]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
    expect(unzipped).toBe(plain);
    const identity = metricsHandler(r)(new Request("http://x/metrics"));
    expect(identity.headers.get("content-encoding")).toBeNull();
    expect(await identity.text()).toBe(plain);
  });
});
