/**
 * Prometheus text exposition format 0.0.4, and OpenMetrics 1.0 text: escaping, number formatting and a
 * writer that collectors append families to. Pure string building, no I/O.
 *
 * Format reference: a family is `# HELP name text`, `# TYPE name type`, then its samples
 * `name{label="value",...} number`, one per line, all samples of a family together. OpenMetrics
 * differs in what this writer emits: a counter's family name has no `_total` (its samples keep it),
 * histogram buckets may carry an exemplar (`# {trace_id="...",span_id="..."} value timestamp`), no
 * other comments, and the text ends with `# EOF`.
 */

/** The `Content-Type` of a scrape response. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** The `Content-Type` of an OpenMetrics scrape response. */
export const OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/**
 * The trace of one sampled observation, shown with its histogram bucket in OpenMetrics. An OpenTelemetry
 * `SpanContext` is one (pass it as is: nothing is copied until it is stored).
 */
export interface ExemplarIds {
  /** 32 lowercase hex digits. */
  readonly traceId: string;
  /** 16 lowercase hex digits. */
  readonly spanId: string;
}

/** An exemplar as stored: the ids, the observed value and when (Unix time, seconds). */
export interface Exemplar extends ExemplarIds {
  readonly value: number;
  readonly timestamp: number;
}

export type MetricType = "counter" | "gauge" | "histogram";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Throws unless `name` is a valid metric name. */
export function checkMetricName(name: string): void {
  if (!METRIC_NAME.test(name)) throw new Error(`Invalid metric name "${name}": use letters, digits, "_" and ":", not starting with a digit`);
}

/** Throws unless `name` is a valid label name (and not reserved). */
export function checkLabelName(metric: string, name: string): void {
  if (!LABEL_NAME.test(name) || name.startsWith("__")) {
    throw new Error(`Invalid label name "${name}" on metric "${metric}": use letters, digits and "_", not starting with a digit or "__"`);
  }
}

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return /[\\"\n]/.test(value) ? value.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`)) : value;
}

/** Escapes HELP text: backslash and line feed. */
export function escapeHelp(text: string): string {
  return /[\\\n]/.test(text) ? text.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\")) : text;
}

/** A sample value as Prometheus reads it: `+Inf`, `-Inf`, `NaN`, or the shortest decimal. */
export function formatValue(value: number): string {
  if (Number.isFinite(value)) return String(value);
  if (Number.isNaN(value)) return "NaN";
  return value > 0 ? "+Inf" : "-Inf";
}

/**
 * The inside of a label set, `a="x",b="y"`, escaped; `""` for no labels.
 *
 * @example labelPairs(["code"], ["200"]) // 'code="200"'
 */
export function labelPairs(names: readonly string[], values: readonly string[]): string {
  let out = "";
  for (let i = 0; i < names.length; i++) {
    if (i > 0) out += ",";
    out += `${names[i]}="${escapeLabelValue(values[i] ?? "")}"`;
  }
  return out;
}

/** The exemplar part of a bucket line: ` # {trace_id="...",span_id="..."} value timestamp`; `""` for none. */
function exemplarText(e: Exemplar | undefined): string {
  if (e === undefined) return "";
  return ` # {trace_id="${escapeLabelValue(e.traceId)}",span_id="${escapeLabelValue(e.spanId)}"} ${formatValue(e.value)} ${e.timestamp.toFixed(3)}`;
}

/**
 * Collects the text of one scrape. Families must be written whole, one after the other.
 *
 * @example
 * const out = new ExpositionWriter({ openMetrics: true });
 * out.family("app_syncs_total", "Syncs.", "counter"); // "# HELP app_syncs Syncs.\n# TYPE app_syncs counter\n"
 * out.sample("app_syncs_total", "", 1);
 * out.end(); // "# EOF\n" (nothing in text format 0.0.4)
 */
export class ExpositionWriter {
  #text = "";
  /** OpenMetrics 1.0 text instead of format 0.0.4. */
  readonly openMetrics: boolean;

  constructor(options: { readonly openMetrics?: boolean | undefined } = {}) {
    this.openMetrics = options.openMetrics === true;
  }

  /** Starts a family: its HELP and TYPE lines. */
  family(name: string, help: string, type: MetricType): void {
    if (!this.openMetrics) {
      this.#text += `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
      return;
    }
    // An OpenMetrics counter is named without its samples' `_total`; one whose samples lack it can only be "unknown".
    let family = name;
    let omType: string = type;
    if (type === "counter") {
      if (name.endsWith("_total")) family = name.slice(0, -6);
      else omType = "unknown";
    }
    this.#text += `# HELP ${family} ${escapeLabelValue(help)}\n# TYPE ${family} ${omType}\n`;
  }

  /** One sample; `labels` is the inside of the braces (see {@link labelPairs}), `""` for none. */
  sample(name: string, labels: string, value: number): void {
    this.#text += labels === "" ? `${name} ${formatValue(value)}\n` : `${name}{${labels}} ${formatValue(value)}\n`;
  }

  /**
   * The samples of one histogram series: cumulative `_bucket{le}` lines (the last is `+Inf`), `_sum`
   * and `_count`. `counts[i]` is the number of observations in (bounds[i-1], bounds[i]];
   * `counts[bounds.length]` those above the last bound. Reads `counts` from `offset`. In OpenMetrics,
   * `exemplars[i]` (if any) is shown on bucket `i`'s line.
   */
  histogram(
    name: string,
    labels: string,
    bounds: readonly string[],
    counts: ArrayLike<number>,
    offset: number,
    sum: number,
    exemplars?: ArrayLike<Exemplar | undefined>,
  ): void {
    const prefix = labels === "" ? `${name}_bucket{le="` : `${name}_bucket{${labels},le="`;
    const ex = this.openMetrics ? exemplars : undefined;
    let cumulative = 0;
    for (let i = 0; i < bounds.length; i++) {
      cumulative += counts[offset + i] as number;
      this.#text += `${prefix}${bounds[i]}"} ${formatValue(cumulative)}${exemplarText(ex?.[i])}\n`;
    }
    cumulative += counts[offset + bounds.length] as number;
    this.#text += `${prefix}+Inf"} ${formatValue(cumulative)}${exemplarText(ex?.[bounds.length])}\n`;
    this.sample(`${name}_sum`, labels, sum);
    this.sample(`${name}_count`, labels, cumulative);
  }

  /** A comment line (`# ...`), e.g. why a family is missing. OpenMetrics has no comments: left out there. */
  comment(text: string): void {
    if (!this.openMetrics) this.#text += `# ${text.replace(/\n/g, " ")}\n`;
  }

  /** Ends the scrape: `# EOF` in OpenMetrics, nothing in format 0.0.4. */
  end(): void {
    if (this.openMetrics) this.#text += "# EOF\n";
  }

  /** Appends everything `other` has written. */
  append(other: ExpositionWriter): void {
    this.#text += other.text();
  }

  /** The text so far. */
  text(): string {
    return this.#text;
  }
}
