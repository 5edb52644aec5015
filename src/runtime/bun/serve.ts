/** Control-plane HTTP serving on Bun (`Bun.serve`); the data plane never goes through here. */
import type { HttpServeOptions, HttpServer } from "../types.ts";

export function serveHttp(options: HttpServeOptions): HttpServer {
  const server = Bun.serve({
    hostname: options.hostname,
    port: options.port,
    ...(options.reusePort ? { reusePort: true } : {}),
    fetch: (req, srv) => options.fetch(req, { remoteAddress: srv.requestIP(req)?.address ?? "" }),
  });
  return {
    hostname: options.hostname,
    port: server.port ?? options.port,
    [Symbol.asyncDispose]: () => server.stop(true),
  };
}
