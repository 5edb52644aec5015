/**
 * A small Prometheus registry: counters, gauges and histograms with labels, collect-time callbacks
 * and custom collectors, exposed in text format 0.0.4 or OpenMetrics 1.0 (see `exposition.ts`).
 *
 * Why not prom-client: it needs Node's `cluster`/`v8` modules and costs a Map lookup and label
 * validation per labelled update. Here a labelled child is resolved once (`family.labels(...)`) and
 * updated with a field write; the per-Service data plane uses its own collector (`traffic.ts`) with
 * preallocated arrays.
 */
import { bucketIndex, checkBuckets } from "./buckets.ts";
import { checkLabelName, checkMetricName, ExpositionWriter, labelPairs, type MetricType } from "./exposition.ts";

/** Writes whole families into a scrape. Registered with {@link Registry.register}. */
export interface Collector {
  /** Metric family names this collector writes (checked for duplicates at registration). */
  readonly names: readonly string[];
  collect(out: ExpositionWriter): void;
}

/** Options shared by every family. */
export interface FamilyOptions<F> {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly string[] | undefined;
  /** Called at each scrape before the family is written: set collect-time values here. */
  readonly collect?: ((family: F) => void) | undefined;
}

export interface HistogramOptions extends FamilyOptions<Histogram> {
  /** Upper bounds, increasing; `+Inf` is added. */
  readonly buckets: readonly number[];
}

/** One labelled counter series. */
export class CounterChild {
  value = 0;
  /** Adds `n` (default 1); negative amounts are ignored (a counter never goes down). */
  inc(n = 1): void {
    if (n > 0) this.value += n;
  }
  /** Mirrors a monotonic source at collect time (e.g. a reflector's list count). */
  set(value: number): void {
    this.value = value;
  }
}

/** One labelled gauge series. */
export class GaugeChild {
  value = 0;
  set(value: number): void {
    this.value = value;
  }
  inc(n = 1): void {
    this.value += n;
  }
  dec(n = 1): void {
    this.value -= n;
  }
}

/** One labelled histogram series: per-bucket counts (not cumulative) and the sum. */
export class HistogramChild {
  readonly counts: Float64Array;
  sum = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  /** Records one observation; NaN is ignored. */
  observe(value: number): void {
    if (value !== value) return;
    this.counts[bucketIndex(this.bounds, value)]!++;
    this.sum += value;
  }
  /** Number of observations. */
  get count(): number {
    let n = 0;
    for (const c of this.counts) n += c;
    return n;
  }
}

/** A metric family with labelled children, created on first use and kept until removed. */
abstract class Family<C> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly collectHook: ((family: never) => void) | undefined;
  abstract readonly type: MetricType;
  readonly #children = new Map<string, { child: C; labels: string }>();
  #unlabelled: C | undefined;

  constructor(options: FamilyOptions<never>) {
    checkMetricName(options.name);
    this.name = options.name;
    this.help = options.help;
    this.labelNames = Object.freeze([...(options.labelNames ?? [])]);
    for (const l of this.labelNames) checkLabelName(options.name, l);
    if (this.labelNames.includes("le")) throw new Error(`Invalid label name "le" on metric "${options.name}": it is reserved for histogram buckets`);
    this.collectHook = options.collect;
  }

  protected abstract create(): C;

  /**
   * The child with these label values (one per label name, in order), created on first use.
   * Resolve it once and keep it: this costs a string join and a Map lookup.
   */
  labels(...values: string[]): C {
    if (values.length !== this.labelNames.length) {
      throw new Error(`Wrong number of label values for "${this.name}": expected ${this.labelNames.length} (${this.labelNames.join(", ")}), got ${values.length}`);
    }
    if (values.length === 0) return (this.#unlabelled ??= this.#add("", []));
    const key = values.join("\u0000");
    return this.#children.get(key)?.child ?? this.#add(key, values);
  }

  #add(key: string, values: readonly string[]): C {
    const child = this.create();
    this.#children.set(key, { child, labels: labelPairs(this.labelNames, values) });
    return child;
  }

  /** Drops the child with these label values (it is no longer exposed). */
  remove(...values: string[]): boolean {
    if (values.length === 0) {
      const had = this.#unlabelled !== undefined;
      this.#children.delete("");
      this.#unlabelled = undefined;
      return had;
    }
    return this.#children.delete(values.join("\u0000"));
  }

  /** Drops every child. */
  clear(): void {
    this.#children.clear();
    this.#unlabelled = undefined;
  }

  /** Number of children. */
  get size(): number {
    return this.#children.size;
  }

  /** Children with their preformatted label pairs, in creation order. */
  protected entries(): IterableIterator<{ child: C; labels: string }> {
    return this.#children.values();
  }

  /** Runs the collect hook, then writes HELP, TYPE and the samples. */
  write(out: ExpositionWriter): void {
    (this.collectHook as ((f: this) => void) | undefined)?.(this);
    out.family(this.name, this.help, this.type);
    this.writeSamples(out);
  }

  protected abstract writeSamples(out: ExpositionWriter): void;
}

/** A counter family. Without label names, use it directly: `counter.inc()`. */
export class Counter extends Family<CounterChild> {
  readonly type = "counter";
  protected create(): CounterChild {
    return new CounterChild();
  }
  /** Increments the unlabelled series. */
  inc(n = 1): void {
    this.labels().inc(n);
  }
  get value(): number {
    return this.labels().value;
  }
  protected writeSamples(out: ExpositionWriter): void {
    for (const { child, labels } of this.entries()) out.sample(this.name, labels, child.value);
  }
}

/** A gauge family. Without label names, use it directly: `gauge.set(v)`. */
export class Gauge extends Family<GaugeChild> {
  readonly type = "gauge";
  protected create(): GaugeChild {
    return new GaugeChild();
  }
  set(value: number): void {
    this.labels().set(value);
  }
  get value(): number {
    return this.labels().value;
  }
  protected writeSamples(out: ExpositionWriter): void {
    for (const { child, labels } of this.entries()) out.sample(this.name, labels, child.value);
  }
}

/** A histogram family. Without label names, use it directly: `histogram.observe(v)`. */
export class Histogram extends Family<HistogramChild> {
  readonly type = "histogram";
  readonly bounds: readonly number[];
  readonly #boundText: readonly string[];
  constructor(options: HistogramOptions) {
    super(options as FamilyOptions<never>);
    checkBuckets(options.name, options.buckets);
    this.bounds = Object.freeze([...options.buckets]);
    this.#boundText = this.bounds.map(String);
  }
  protected create(): HistogramChild {
    return new HistogramChild(this.bounds);
  }
  observe(value: number): void {
    this.labels().observe(value);
  }
  protected writeSamples(out: ExpositionWriter): void {
    for (const { child, labels } of this.entries()) out.histogram(this.name, labels, this.#boundText, child.counts, 0, child.sum);
  }
}

type Entry = { readonly kind: "family"; readonly family: Family<unknown> } | { readonly kind: "collector"; readonly collector: Collector };

/** Options of a {@link Registry}. */
export interface RegistryOptions {
  /** Called when a collect hook or collector throws; that family is left out of the scrape. */
  readonly onCollectError?: ((name: string, error: unknown) => void) | undefined;
}

/**
 * Holds metric families and collectors, in registration order, and renders a scrape.
 *
 * @example
 * const registry = new Registry();
 * const syncs = registry.counter({ name: "app_syncs_total", help: "Syncs." });
 * syncs.inc();
 * registry.expose(); // "# HELP app_syncs_total Syncs.\n# TYPE app_syncs_total counter\napp_syncs_total 1\n"
 */
export class Registry {
  readonly #entries: Entry[] = [];
  readonly #names = new Set<string>();
  readonly #onCollectError: ((name: string, error: unknown) => void) | undefined;

  constructor(options: RegistryOptions = {}) {
    this.#onCollectError = options.onCollectError;
  }

  #claim(names: readonly string[]): void {
    for (const name of names) {
      checkMetricName(name);
      if (this.#names.has(name)) throw new Error(`Cannot register metric "${name}": a metric with that name is already registered`);
    }
    for (const name of names) this.#names.add(name);
  }

  counter(options: FamilyOptions<Counter>): Counter {
    const family = new Counter(options as FamilyOptions<never>);
    this.#claim([family.name]);
    this.#entries.push({ kind: "family", family });
    return family;
  }

  gauge(options: FamilyOptions<Gauge>): Gauge {
    const family = new Gauge(options as FamilyOptions<never>);
    this.#claim([family.name]);
    this.#entries.push({ kind: "family", family });
    return family;
  }

  histogram(options: HistogramOptions): Histogram {
    const family = new Histogram(options);
    this.#claim([family.name]);
    this.#entries.push({ kind: "family", family });
    return family;
  }

  /** Adds a collector that writes whole families itself. */
  register(collector: Collector): void {
    this.#claim(collector.names);
    this.#entries.push({ kind: "collector", collector });
  }

  /** Every registered family name, in order. */
  names(): string[] {
    return [...this.#names];
  }

  /**
   * The scrape text: format 0.0.4, or OpenMetrics 1.0 with `openMetrics` (with exemplars where a collector keeps
   * them). A family whose collect step throws is left out and reported.
   */
  expose(options: { readonly openMetrics?: boolean | undefined } = {}): string {
    const out = this.writeTo(new ExpositionWriter(options), () => new ExpositionWriter(options));
    out.end();
    return out.text();
  }

  /**
   * Runs every collect step into `out`, each entry first into its own writer from `part` (appended to `out` when it
   * succeeds, so a throwing collector leaves no half-written family): how {@link expose} renders text, and how the
   * OTLP export (`otlp.ts`) reads the same families as data.
   */
  writeTo<W extends ExpositionWriter>(out: W, part: () => W): W {
    for (const entry of this.#entries) {
      const p = part();
      try {
        if (entry.kind === "family") entry.family.write(p);
        else entry.collector.collect(p);
      } catch (err) {
        const name = entry.kind === "family" ? entry.family.name : entry.collector.names.join(",");
        this.#onCollectError?.(name, err);
        out.comment(`collect failed for ${name}: ${(err as Error)?.message ?? String(err)}`);
        continue;
      }
      out.append(p);
    }
    return out;
  }
}
