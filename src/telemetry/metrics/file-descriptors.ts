/**
 * File descriptors as a resource, on `/metrics`: how many are open, the limit and the reserve kept back from
 * listeners (per process: the control plane's, and each worker's when the data plane runs as worker processes),
 * and the listeners that cannot be bound now, by reason, so that an alert can say "too many open files" rather
 * than "something failed".
 *
 *   kubegate_file_descriptors{kind="open"} 212
 *   kubegate_file_descriptors{kind="limit"} 300
 *   kubegate_file_descriptors{kind="reserve"} 75
 *   kubegate_listener_bind_failures{reason="too_many_open_files"} 181
 */
import type { ExpositionWriter } from "./exposition.ts";
import type { Collector } from "./registry.ts";

/** One process's descriptors (a field left out is unknown and not written). */
export interface FileDescriptorView {
  /** The worker's index; absent for the process serving `/metrics` (the control plane, or the one process). */
  readonly worker?: number | undefined;
  readonly open?: number | undefined;
  /** The soft limit (RLIMIT_NOFILE), the one that counts. */
  readonly limit?: number | undefined;
  /** Descriptors kept back from new listeners. */
  readonly reserve?: number | undefined;
}

/** The `reason` labels of {@link FileDescriptorMetricNames.bindFailures}, each written (0 when none fail for it). */
export const BIND_FAILURE_REASONS = ["address_in_use", "address_not_available", "permission_denied", "too_many_open_files", "other"] as const;

/** Metric family names. */
export const FileDescriptorMetricNames = Object.freeze({
  files: "kubegate_file_descriptors",
  bindFailures: "kubegate_listener_bind_failures",
});

export interface FileDescriptorMetricsOptions {
  /** The processes' descriptors, read at each scrape. */
  readonly files: () => readonly FileDescriptorView[];
  /** Listeners that cannot be bound now, by reason (a missing reason is 0), read at each scrape. */
  readonly bindFailures: () => ReadonlyMap<string, number>;
}

/**
 * The collector.
 *
 * @example
 * registry.register(new FileDescriptorMetrics({
 *   files: () => [{ open: rt.openFiles(), limit: rt.fileLimit()?.soft, reserve: 256 }],
 *   bindFailures: () => bindFailuresByReason(dataPlane.listeners()),
 * }));
 */
export class FileDescriptorMetrics implements Collector {
  readonly names: readonly string[] = Object.freeze(Object.values(FileDescriptorMetricNames));
  readonly #files: () => readonly FileDescriptorView[];
  readonly #bindFailures: () => ReadonlyMap<string, number>;

  constructor(options: FileDescriptorMetricsOptions) {
    this.#files = options.files;
    this.#bindFailures = options.bindFailures;
  }

  collect(out: ExpositionWriter): void {
    const N = FileDescriptorMetricNames;
    out.family(
      N.files,
      "File descriptors of the gateway's process (with a worker label: of that worker process, when reported): open now, the soft limit (RLIMIT_NOFILE), and the reserve kept from new listeners for health, admin and the API watch.",
      "gauge",
    );
    const files = [...this.#files()].sort((a, b) => (a.worker ?? -1) - (b.worker ?? -1));
    for (const f of files) {
      const worker = f.worker === undefined ? "" : `,worker="${f.worker}"`;
      for (const kind of ["open", "limit", "reserve"] as const) {
        const value = f[kind];
        if (value !== undefined && Number.isFinite(value)) out.sample(N.files, `kind="${kind}"${worker}`, value);
      }
    }
    out.family(
      N.bindFailures,
      "Listeners that cannot be bound now, by reason; too_many_open_files: raise the nofile limit or narrow --nodeport-addresses.",
      "gauge",
    );
    const failures = this.#bindFailures();
    for (const reason of BIND_FAILURE_REASONS) out.sample(N.bindFailures, `reason="${reason}"`, failures.get(reason) ?? 0);
  }
}
