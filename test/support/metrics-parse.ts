/**
 * A reader for the text exposition in tests: families with their TYPE, and sample values by
 * `name{labels}` exactly as written (label order as the registry writes them).
 */
import { escapeLabelValue } from "../../src/telemetry/metrics/index.ts";

export interface Scrape {
  readonly types: ReadonlyMap<string, string>;
  readonly samples: ReadonlyMap<string, number>;
}

/** Parses a scrape; throws on a line that is neither a comment nor `series value`. */
export function parseScrape(text: string): Scrape {
  const types = new Map<string, string>();
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("# TYPE ")) {
      const [, , name, type] = line.split(" ");
      types.set(name!, type!);
      continue;
    }
    if (line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    if (at <= 0) throw new Error(`Not a sample line: ${JSON.stringify(line)}`);
    const raw = line.slice(at + 1);
    const value = raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
    samples.set(line.slice(0, at), value);
  }
  return { types, samples };
}

/** The series id as the registry writes it: `name{a="x",b="y"}` (labels in the given order). */
export function series(name: string, labels: Readonly<Record<string, string>> = {}): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return pairs.length === 0 ? name : `${name}{${pairs.join(",")}}`;
}

/** The value of one series, or undefined when it is not in the scrape. */
export function valueOf(scrape: Scrape, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  return scrape.samples.get(series(name, labels));
}

/** Sample ids of `name` (exactly that name, e.g. `x_bucket` for buckets). */
export function seriesOf(scrape: Scrape, name: string): string[] {
  return [...scrape.samples.keys()].filter((k) => k === name || k.startsWith(`${name}{`));
}
