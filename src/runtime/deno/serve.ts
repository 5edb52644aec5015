/** Control-plane HTTP serving on Deno (`Deno.serve`); the data plane never goes through here. */
import type { HttpServeOptions, HttpServer } from "../types.ts";

interface DenoServe {
  serve(
    options: { hostname: string; port: number; reusePort?: boolean; onListen?: () => void },
    handler: (req: Request, info: { remoteAddr: { hostname: string } }) => Response | Promise<Response>,
  ): { addr: { hostname: string; port: number }; shutdown(): Promise<void> };
}
const Deno = (globalThis as unknown as { Deno: DenoServe }).Deno;

export function serveHttp(options: HttpServeOptions): HttpServer {
  const server = Deno.serve({ hostname: options.hostname, port: options.port, ...(options.reusePort ? { reusePort: true } : {}), onListen: () => {} }, (req, info) =>
    options.fetch(req, { remoteAddress: info.remoteAddr.hostname }),
  );
  return {
    hostname: options.hostname,
    port: server.addr.port,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}
