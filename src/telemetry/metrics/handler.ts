/**
 * The `/metrics` endpoint as a Web-standard handler (`Request` -> `Response`), for the admin app.
 */
import { CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE } from "./exposition.ts";
import type { Registry } from "./registry.ts";

/** Scrapes larger than this are gzipped when the scraper accepts it (Prometheus does). */
const GZIP_MIN_BYTES = 64 * 1024;

/**
 * Whether an `Accept` header asks for OpenMetrics: it lists `application/openmetrics-text` with a
 * quality above 0 (Prometheus sends it first, with text format 0.0.4 as a fallback).
 *
 * @example acceptsOpenMetrics("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5") // true
 */
export function acceptsOpenMetrics(accept: string | null): boolean {
  if (accept === null || !accept.includes("application/openmetrics-text")) return false;
  for (const range of accept.split(",")) {
    const params = range.split(";");
    if (params[0]!.trim().toLowerCase() !== "application/openmetrics-text") continue;
    const q = params.find((p) => p.trim().toLowerCase().startsWith("q="));
    if (q === undefined || Number(q.trim().slice(2)) > 0) return true;
  }
  return false;
}

/**
 * Serves `registry` in Prometheus text format 0.0.4, or in OpenMetrics 1.0 (with exemplars) when
 * the `Accept` header asks for it ({@link acceptsOpenMetrics}). GET and HEAD; large scrapes are
 * gzipped for clients that send `Accept-Encoding: gzip`.
 *
 * @example app.get("/metrics", (c) => metricsHandler(registry)(c.req.raw));
 */
export function metricsHandler(registry: Registry): (req: Request) => Response {
  return (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method not allowed: use GET\n", { status: 405, headers: { Allow: "GET, HEAD", "Content-Type": "text/plain; charset=utf-8" } });
    }
    const openMetrics = acceptsOpenMetrics(req.headers.get("accept"));
    const text = registry.expose({ openMetrics });
    const headers: Record<string, string> = { "Content-Type": openMetrics ? OPENMETRICS_CONTENT_TYPE : CONTENT_TYPE, "Cache-Control": "no-store", Vary: "Accept" };
    if (req.method === "HEAD") return new Response(null, { status: 200, headers });
    if (text.length >= GZIP_MIN_BYTES && /\bgzip\b/.test(req.headers.get("accept-encoding") ?? "")) {
      const body = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
      return new Response(body, { status: 200, headers: { ...headers, "Content-Encoding": "gzip", Vary: "Accept, Accept-Encoding" } });
    }
    return new Response(text, { status: 200, headers });
  };
}
