/**
 * The registry's families as an OTLP metrics export request, in OTLP/HTTP's JSON encoding: the same series `/metrics`
 * renders at the same moment, read through the same collect steps (an {@link OtlpWriter} is an `ExpositionWriter`
 * that keeps data instead of text), so every family — per-Service traffic summed over worker processes, process
 * metrics, kube-proxy's — is exported without a second set of instruments.
 *
 * Mapping (as the OpenTelemetry collector's Prometheus receiver does): a counter becomes a monotonic cumulative Sum,
 * a gauge a Gauge, a histogram a cumulative explicit-bounds Histogram with its exemplars (trace_id, span_id); label
 * pairs become string attributes; names stay as `/metrics` writes them (`kubegate_requests_total`), so queries are the
 * same on both paths. Every cumulative point starts at the process's start.
 *
 * JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): 64-bit integers (times, counts)
 * are decimal strings, enums are numbers, trace and span ids are hex (not base64), non-finite doubles are the strings
 * `NaN`, `Infinity`, `-Infinity`. Pure data building, no I/O (the export is `otlp-export.ts`).
 */
import { type Exemplar, ExpositionWriter, type MetricType } from "./exposition.ts";
import type { Registry } from "./registry.ts";

/** `AGGREGATION_TEMPORALITY_CUMULATIVE` in OTLP's enum. */
export const CUMULATIVE = 2;

export interface OtlpAnyValue {
  readonly stringValue: string;
}
export interface OtlpKeyValue {
  readonly key: string;
  readonly value: OtlpAnyValue;
}
/** A double as the protobuf JSON mapping writes it. */
export type OtlpDouble = number | "NaN" | "Infinity" | "-Infinity";
export interface OtlpNumberDataPoint {
  readonly attributes: OtlpKeyValue[];
  readonly startTimeUnixNano: string;
  readonly timeUnixNano: string;
  readonly asDouble: OtlpDouble;
}
export interface OtlpExemplar {
  readonly timeUnixNano: string;
  readonly asDouble: OtlpDouble;
  readonly traceId: string;
  readonly spanId: string;
}
export interface OtlpHistogramDataPoint {
  readonly attributes: OtlpKeyValue[];
  readonly startTimeUnixNano: string;
  readonly timeUnixNano: string;
  readonly count: string;
  readonly sum: OtlpDouble;
  readonly bucketCounts: string[];
  readonly explicitBounds: OtlpDouble[];
  exemplars?: OtlpExemplar[];
}
export interface OtlpMetric {
  readonly name: string;
  readonly description: string;
  readonly unit: string;
  sum?: { readonly dataPoints: OtlpNumberDataPoint[]; readonly aggregationTemporality: number; readonly isMonotonic: boolean };
  gauge?: { readonly dataPoints: OtlpNumberDataPoint[] };
  histogram?: { readonly dataPoints: OtlpHistogramDataPoint[]; readonly aggregationTemporality: number };
}
/** `ExportMetricsServiceRequest`, the body of a POST to `/v1/metrics`. */
export interface OtlpMetricsRequest {
  readonly resourceMetrics: {
    readonly resource: { readonly attributes: OtlpKeyValue[] };
    readonly scopeMetrics: { readonly scope: { readonly name: string; readonly version?: string }; readonly metrics: OtlpMetric[] }[];
  }[];
}

/** A double for the JSON mapping. */
export function otlpDouble(v: number): OtlpDouble {
  if (Number.isFinite(v)) return v;
  return v !== v ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
}

/**
 * Unix time in ms as OTLP's fixed64 nanoseconds (a decimal string), to the ms.
 * @example unixNano(1700000000123) // "1700000000123000000"
 */
export function unixNano(ms: number): string {
  const whole = Math.round(ms);
  return whole <= 0 ? "0" : `${whole}000000`;
}

/**
 * The label pairs of a series as the registry preformats them (`a="x",b="y"`, escaped as in the text format) back as
 * attributes.
 *
 * @example parseLabelPairs('code="2xx",path="a\\"b"') // [{ key: "code", value: { stringValue: "2xx" } }, { key: "path", value: { stringValue: 'a"b' } }]
 */
export function parseLabelPairs(text: string): OtlpKeyValue[] {
  const out: OtlpKeyValue[] = [];
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('="', i);
    if (eq < 0) throw new Error(`Invalid label pairs ${JSON.stringify(text)}: no value after position ${i}`);
    const key = text.slice(i, eq);
    let value = "";
    let j = eq + 2;
    for (;;) {
      const c = text[j];
      if (c === undefined) throw new Error(`Invalid label pairs ${JSON.stringify(text)}: unterminated value of "${key}"`);
      if (c === '"') break;
      if (c === "\\") {
        const next = text[j + 1];
        value += next === "n" ? "\n" : (next ?? "");
        j += 2;
        continue;
      }
      value += c;
      j++;
    }
    out.push({ key, value: { stringValue: value } });
    i = j + 1;
    if (text[i] === ",") i++;
  }
  return out;
}

interface Current {
  readonly name: string;
  readonly type: MetricType;
  readonly metric: OtlpMetric;
}

/**
 * An `ExpositionWriter` that builds OTLP metrics instead of text: hand it to `Registry.writeTo` (see
 * {@link otlpMetricsRequest}). It reports itself as OpenMetrics so collectors include their exemplars.
 */
export class OtlpWriter extends ExpositionWriter {
  readonly metrics: OtlpMetric[] = [];
  /** Samples that belong to no family they were written under (none from kubegate's collectors; tests check it). */
  unmapped = 0;
  #current: Current | undefined;
  readonly #attrs: Map<string, OtlpKeyValue[]>;

  /** `attrs`: parsed attributes by label text, shared by the writers of one request (a Service's labels recur in every traffic family). */
  constructor(
    readonly startTimeUnixNano: string,
    readonly timeUnixNano: string,
    attrs: Map<string, OtlpKeyValue[]> = new Map(),
  ) {
    super({ openMetrics: true });
    this.#attrs = attrs;
  }

  #attributes(labels: string): OtlpKeyValue[] {
    if (labels === "") return [];
    let a = this.#attrs.get(labels);
    if (a === undefined) this.#attrs.set(labels, (a = parseLabelPairs(labels)));
    return a;
  }

  override family(name: string, help: string, type: MetricType): void {
    const metric: OtlpMetric = { name, description: help, unit: "" };
    if (type === "counter") metric.sum = { dataPoints: [], aggregationTemporality: CUMULATIVE, isMonotonic: true };
    else if (type === "gauge") metric.gauge = { dataPoints: [] };
    else metric.histogram = { dataPoints: [], aggregationTemporality: CUMULATIVE };
    this.metrics.push(metric);
    this.#current = { name, type, metric };
  }

  override sample(name: string, labels: string, value: number): void {
    const cur = this.#current;
    if (cur === undefined || cur.name !== name || cur.type === "histogram") {
      this.unmapped++;
      return;
    }
    const point: OtlpNumberDataPoint = { attributes: this.#attributes(labels), startTimeUnixNano: this.startTimeUnixNano, timeUnixNano: this.timeUnixNano, asDouble: otlpDouble(value) };
    (cur.metric.sum ?? cur.metric.gauge)!.dataPoints.push(point);
  }

  override histogram(
    name: string,
    labels: string,
    bounds: readonly string[],
    counts: ArrayLike<number>,
    offset: number,
    sum: number,
    exemplars?: ArrayLike<Exemplar | undefined>,
  ): void {
    const cur = this.#current;
    if (cur === undefined || cur.name !== name || cur.type !== "histogram") {
      this.unmapped++;
      return;
    }
    const bucketCounts: string[] = [];
    let total = 0;
    for (let i = 0; i <= bounds.length; i++) {
      const c = counts[offset + i] as number;
      total += c;
      bucketCounts.push(String(c));
    }
    const point: OtlpHistogramDataPoint = {
      attributes: this.#attributes(labels),
      startTimeUnixNano: this.startTimeUnixNano,
      timeUnixNano: this.timeUnixNano,
      count: String(total),
      sum: otlpDouble(sum),
      bucketCounts,
      explicitBounds: bounds.map((b) => otlpDouble(Number(b))),
    };
    if (exemplars !== undefined) {
      const ex: OtlpExemplar[] = [];
      for (let i = 0; i < exemplars.length; i++) {
        const e = exemplars[i];
        if (e !== undefined) ex.push({ timeUnixNano: unixNano(e.timestamp * 1000), asDouble: otlpDouble(e.value), traceId: e.traceId, spanId: e.spanId });
      }
      if (ex.length > 0) point.exemplars = ex;
    }
    cur.metric.histogram!.dataPoints.push(point);
  }

  override comment(_text: string): void {}

  override end(): void {}

  override append(other: ExpositionWriter): void {
    if (!(other instanceof OtlpWriter)) throw new Error("An OtlpWriter appends only other OtlpWriters");
    for (const m of other.metrics) this.metrics.push(m);
    this.unmapped += other.unmapped;
  }

  override text(): string {
    return "";
  }
}

/** What an export request says besides the metrics. */
export interface OtlpRequestContext {
  /** Resource attributes (`service.name`, ...; see `otlp-env.ts`). */
  readonly resource: Readonly<Record<string, string>>;
  /** Instrumentation scope. */
  readonly scope: { readonly name: string; readonly version?: string | undefined };
  /** Start of every cumulative series: the process's start, ms since the epoch. */
  readonly startMs: number;
}

/**
 * Everything `registry` holds now, as an OTLP export request (families without series are left out: OTLP has no
 * empty metric). A family whose collect step throws is left out, as in a scrape.
 */
export function otlpMetricsRequest(registry: Registry, context: OtlpRequestContext, nowMs: number): { request: OtlpMetricsRequest; points: number; unmapped: number } {
  const start = unixNano(context.startMs);
  const now = unixNano(nowMs);
  const attrs = new Map<string, OtlpKeyValue[]>();
  const out = registry.writeTo(new OtlpWriter(start, now, attrs), () => new OtlpWriter(start, now, attrs));
  let points = 0;
  const metrics = out.metrics.filter((m) => {
    const n = (m.sum ?? m.gauge ?? m.histogram)!.dataPoints.length;
    points += n;
    return n > 0;
  });
  const scope = context.scope.version ? { name: context.scope.name, version: context.scope.version } : { name: context.scope.name };
  const attributes = Object.entries(context.resource).map(([key, v]) => ({ key, value: { stringValue: v } }));
  return { request: { resourceMetrics: [{ resource: { attributes }, scopeMetrics: [{ scope, metrics }] }] }, points, unmapped: out.unmapped };
}
