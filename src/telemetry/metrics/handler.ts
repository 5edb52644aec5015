/**
 * The `/metrics` endpoint as a Web-standard handler (`Request` -> `Response`), for the admin app.
 */
import { CONTENT_TYPE } from "./exposition.ts";
import type { Registry } from "./registry.ts";

/** Scrapes larger than this are gzipped when the scraper accepts it (Prometheus does). */
const GZIP_MIN_BYTES = 64 * 1024;

/**
 * Serves `registry` in Prometheus text format 0.0.4. GET and HEAD; large scrapes are gzipped for
 * clients that send `Accept-Encoding: gzip`.
 *
 * @example app.get("/metrics", (c) => metricsHandler(registry)(c.req.raw));
 */
export function metricsHandler(registry: Registry): (req: Request) => Response {
  return (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method not allowed: use GET\n", { status: 405, headers: { Allow: "GET, HEAD", "Content-Type": "text/plain; charset=utf-8" } });
    }
    const text = registry.expose();
    const headers: Record<string, string> = { "Content-Type": CONTENT_TYPE, "Cache-Control": "no-store" };
    if (req.method === "HEAD") return new Response(null, { status: 200, headers });
    if (text.length >= GZIP_MIN_BYTES && /\bgzip\b/.test(req.headers.get("accept-encoding") ?? "")) {
      const body = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
      return new Response(body, { status: 200, headers: { ...headers, "Content-Encoding": "gzip", Vary: "Accept-Encoding" } });
    }
    return new Response(text, { status: 200, headers });
  };
}
