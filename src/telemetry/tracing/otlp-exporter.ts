/**
 * kubegate's span exporter: OTLP/HTTP JSON, each batch encoded straight into one buffer (`otlp-json.ts`) and posted
 * with the runtime's `fetch`. It replaces `@opentelemetry/exporter-trace-otlp-http`, whose transformer objects,
 * `JSON.stringify` of them and node:http transport took about half of tracing's CPU on the proxy's core
 * (BENCHMARKS.md, "Tracing cost"). It sits behind the SDK's `BatchSpanProcessor`, which stays the bound: a queue
 * of at most `maxQueueSize` spans, one batch exported at a time.
 *
 * Settings (https://opentelemetry.io/docs/specs/otel/protocol/exporter/), from the environment given
 * (`config.otelEnv`), as the SDK's exporter read them:
 * - URL `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, else
 *   `http://localhost:4318/v1/traces`;
 * - headers `OTEL_EXPORTER_OTLP_HEADERS` + `OTEL_EXPORTER_OTLP_TRACES_HEADERS`;
 * - each request bounded by `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` ms (default 10000);
 * - `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION=gzip`.
 *
 * Failures are as in the metrics export (`metrics/otlp-export.ts`): no retry, the batch is dropped and counted by
 * reason ({@link OtlpTraceExporter.stats}), with one warning a minute at most; the batch processor is told the
 * export failed.
 */
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";
import { type Logger, rateLimited, silentLogger } from "../../log.ts";
import { envMillis, envValue, type OtelEnv, OtelEnvError, signalTransport } from "../otlp-env.ts";
import { Writer, writeTraceRequest } from "./otlp-json.ts";

/** Where and how the exporter sends. */
export interface OtlpTraceSettings {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  readonly gzip: boolean;
  /** Settings that were read but not followed (an unsupported protocol, ...), for the startup log. */
  readonly notes: readonly string[];
}

/** Where an OTLP/HTTP collector listens by default. */
export const DEFAULT_TRACES_URL = "http://localhost:4318/v1/traces";
/** The spec's default export timeout. */
export const DEFAULT_TRACES_TIMEOUT_MS = 10_000;
/** Requests in flight at most (the batch processor sends one at a time, except when flushing everything). */
export const MAX_IN_FLIGHT = 4;
/** A request buffer larger than this (a batch of ~4000 gateway spans) is not kept for the next request. */
const KEEP_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * The exporter's settings from the environment (see the module comment).
 *
 * @throws {OtelEnvError} on a malformed setting (headers, timeout, URL).
 * @example otlpTraceSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }).url // "http://c:4318/v1/traces"
 */
export function otlpTraceSettings(env: OtelEnv): OtlpTraceSettings {
  const { url, headers, gzip, notes } = signalTransport(env, "traces", DEFAULT_TRACES_URL);
  const timeoutName = envValue(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") !== undefined ? "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" : "OTEL_EXPORTER_OTLP_TIMEOUT";
  const timeout = envMillis(env, timeoutName, DEFAULT_TRACES_TIMEOUT_MS);
  return { url, headers, timeoutMs: timeout > 0 ? timeout : DEFAULT_TRACES_TIMEOUT_MS, gzip, notes };
}

/** Why an export failed. */
export type TraceExportFailure = "status" | "network" | "timeout" | "busy" | "encode" | "shutdown";
const REASONS: readonly TraceExportFailure[] = ["status", "network", "timeout", "busy", "encode", "shutdown"];

/** What the exporter did so far. */
export interface TraceExportStats {
  /** Requests the collector accepted, and the spans in them. */
  readonly exports: number;
  readonly spans: number;
  /** Spans the collector reported rejecting in a `partialSuccess`. */
  readonly rejectedSpans: number;
  /** Batches dropped, by reason. */
  readonly failures: Readonly<Record<TraceExportFailure, number>>;
  /** Spans in the dropped batches. */
  readonly droppedSpans: number;
}

export interface OtlpTraceExporterOptions {
  readonly settings: OtlpTraceSettings;
  readonly log?: Logger | undefined;
  /** Wall clock, ms (default `Date.now`; for the warnings' rate limit). */
  readonly now?: (() => number) | undefined;
}

class ExportError extends Error {
  override name = "OtlpTraceExportError";
  constructor(
    readonly reason: TraceExportFailure,
    message: string,
  ) {
    super(message);
  }
}

/** A `SpanExporter` for the SDK's batch processor (see the module comment). */
export class OtlpTraceExporter implements SpanExporter {
  readonly settings: OtlpTraceSettings;
  readonly #log: Logger;
  readonly #warn: (key: string, msg: string, fields?: Readonly<Record<string, unknown>>) => void;
  readonly #headers: Record<string, string>;
  readonly #inFlight = new Set<Promise<void>>();
  readonly #aborts = new Set<AbortController>();
  /** Request buffers not in use (one per request in flight at most), reused: see `writeTraceRequest`. */
  readonly #buffers: Writer[] = [];
  #stopped = false;
  #exports = 0;
  #spans = 0;
  #rejected = 0;
  #dropped = 0;
  readonly #failures = Object.fromEntries(REASONS.map((r) => [r, 0])) as Record<TraceExportFailure, number>;

  constructor(options: OtlpTraceExporterOptions) {
    this.settings = options.settings;
    this.#log = options.log ?? silentLogger;
    this.#warn = rateLimited((msg, fields) => this.#log.warn(msg, fields), 60_000, options.now);
    this.#headers = { ...this.settings.headers, "Content-Type": "application/json", ...(this.settings.gzip ? { "Content-Encoding": "gzip" } : {}) };
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    if (this.#stopped) return resultCallback(this.#fail(new ExportError("shutdown", "the exporter is shut down"), spans.length));
    if (this.#inFlight.size >= MAX_IN_FLIGHT) {
      return resultCallback(this.#fail(new ExportError("busy", `${MAX_IN_FLIGHT} exports are still in flight`), spans.length));
    }
    const w = this.#buffers.pop() ?? new Writer(64 * 1024);
    let body: Uint8Array<ArrayBuffer>;
    try {
      body = writeTraceRequest(spans, w);
    } catch (err) {
      this.#release(w);
      return resultCallback(this.#fail(new ExportError("encode", (err as Error)?.message ?? String(err)), spans.length));
    }
    const p = this.#send(body, spans.length)
      .finally(() => this.#release(w))
      .then(resultCallback, (err: unknown) => resultCallback({ code: ExportResultCode.FAILED, error: err as Error }))
      .catch((err: unknown) => this.#log.error("OTLP trace export: the batch processor's callback threw", { error: (err as Error)?.message ?? String(err) }));
    const tracked = p.finally(() => this.#inFlight.delete(tracked));
    this.#inFlight.add(tracked);
  }

  /** Waits for the requests in flight. */
  async forceFlush(): Promise<void> {
    await Promise.all(this.#inFlight);
  }

  /** Takes no more batches; waits for those in flight (each bounded by the timeout). */
  async shutdown(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#inFlight);
  }

  /** Cuts short the requests in flight (they fail as timed out). */
  abort(): void {
    for (const a of this.#aborts) a.abort();
  }

  stats(): TraceExportStats {
    return { exports: this.#exports, spans: this.#spans, rejectedSpans: this.#rejected, failures: { ...this.#failures }, droppedSpans: this.#dropped };
  }

  #release(w: Writer): void {
    if (w.buf.length <= KEEP_BUFFER_BYTES && this.#buffers.length < MAX_IN_FLIGHT) this.#buffers.push(w);
  }

  #fail(error: ExportError, spans: number): ExportResult {
    this.#failures[error.reason]++;
    this.#dropped += spans;
    this.#warn(`otlp-traces-${error.reason}`, "OTLP trace export failed: spans dropped", { url: this.settings.url, reason: error.reason, spans, error: error.message });
    return { code: ExportResultCode.FAILED, error };
  }

  async #send(json: Uint8Array<ArrayBuffer>, spans: number): Promise<ExportResult> {
    let body: Uint8Array<ArrayBuffer> | ArrayBuffer = json;
    if (this.settings.gzip) {
      try {
        body = await new Response(new Blob([json]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
      } catch (err) {
        return this.#fail(new ExportError("encode", `gzip: ${(err as Error)?.message ?? String(err)}`), spans);
      }
    }
    const abort = new AbortController();
    const timeoutMs = this.settings.timeoutMs;
    const deadline = setTimeout(() => abort.abort(), timeoutMs);
    this.#aborts.add(abort);
    const signal = abort.signal;
    try {
      const res = await fetch(this.settings.url, { method: "POST", headers: this.#headers, body, signal });
      const reply = await res.text();
      if (!res.ok) return this.#fail(new ExportError("status", `HTTP ${res.status}: ${reply.slice(0, 200)}`), spans);
      this.#exports++;
      this.#spans += spans;
      const rejected = partialRejection(reply);
      if (rejected !== undefined) {
        this.#rejected += rejected.rejectedSpans;
        this.#warn("otlp-traces-partial", "OTLP trace export: the collector rejected some spans", { url: this.settings.url, ...rejected });
      }
      return { code: ExportResultCode.SUCCESS };
    } catch (err) {
      if (signal.aborted) return this.#fail(new ExportError("timeout", `no answer within ${timeoutMs} ms`), spans);
      return this.#fail(new ExportError("network", (err as Error)?.message ?? String(err)), spans);
    } finally {
      clearTimeout(deadline);
      this.#aborts.delete(abort);
    }
  }
}

/** The collector's `partialSuccess` when it rejected spans (`{ rejectedSpans, errorMessage }`), else undefined. */
export function partialRejection(body: string): { rejectedSpans: number; errorMessage: string } | undefined {
  if (!body.includes("partialSuccess")) return undefined;
  try {
    const p = (JSON.parse(body) as { partialSuccess?: { rejectedSpans?: string | number; errorMessage?: string } }).partialSuccess;
    const n = Number(p?.rejectedSpans ?? 0);
    return n > 0 || p?.errorMessage ? { rejectedSpans: Number.isFinite(n) ? n : 0, errorMessage: p?.errorMessage ?? "" } : undefined;
  } catch {
    return undefined;
  }
}
