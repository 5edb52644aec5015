/**
 * Prometheus text exposition format 0.0.4: escaping, number formatting and a writer that
 * collectors append families to. Pure string building, no I/O.
 *
 * Format reference: a family is `# HELP name text`, `# TYPE name type`, then its samples
 * `name{label="value",...} number`, one per line, all samples of a family together.
 */

/** The `Content-Type` of a scrape response. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

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

/** Collects the text of one scrape. Families must be written whole, one after the other. */
export class ExpositionWriter {
  #text = "";

  /** Starts a family: its HELP and TYPE lines. */
  family(name: string, help: string, type: MetricType): void {
    this.#text += `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
  }

  /** One sample; `labels` is the inside of the braces (see {@link labelPairs}), `""` for none. */
  sample(name: string, labels: string, value: number): void {
    this.#text += labels === "" ? `${name} ${formatValue(value)}\n` : `${name}{${labels}} ${formatValue(value)}\n`;
  }

  /**
   * The samples of one histogram series: cumulative `_bucket{le}` lines (the last is `+Inf`), `_sum`
   * and `_count`. `counts[i]` is the number of observations in (bounds[i-1], bounds[i]];
   * `counts[bounds.length]` those above the last bound. Reads `counts` from `offset`.
   */
  histogram(name: string, labels: string, bounds: readonly string[], counts: ArrayLike<number>, offset: number, sum: number): void {
    const prefix = labels === "" ? `${name}_bucket{le="` : `${name}_bucket{${labels},le="`;
    let cumulative = 0;
    for (let i = 0; i < bounds.length; i++) {
      cumulative += counts[offset + i] as number;
      this.#text += `${prefix}${bounds[i]}"} ${formatValue(cumulative)}\n`;
    }
    cumulative += counts[offset + bounds.length] as number;
    this.#text += `${prefix}+Inf"} ${formatValue(cumulative)}\n`;
    this.sample(`${name}_sum`, labels, sum);
    this.sample(`${name}_count`, labels, cumulative);
  }

  /** A comment line (`# ...`), e.g. why a family is missing. */
  comment(text: string): void {
    this.#text += `# ${text.replace(/\n/g, " ")}\n`;
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
