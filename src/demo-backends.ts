/**
 * Small demo backends for `npm run demo`: two HTTP servers that say who they are, and a TCP echo
 * server, on the 127.0.0.1 ports named in deploy/demo/endpointslices.yaml.
 */
import { rt } from "./runtime/index.ts";
import type { HttpServer, TcpListener } from "./runtime/types.ts";

export const demoHttpPorts = [18081, 18082] as const;
export const demoTcpPort = 18091;

/** Start the demo backends; dispose to stop them. */
export async function startDemoBackends(hostname = "127.0.0.1"): Promise<AsyncDisposable> {
  const servers: HttpServer[] = demoHttpPorts.map((port, i) =>
    rt.serveHttp({
      hostname,
      port,
      fetch: (req) => {
        const url = new URL(req.url);
        const body = `hello from web-${i + 1} (127.0.0.1:${port}) ${req.method} ${url.pathname}\n`;
        return new Response(body, { headers: { "content-type": "text/plain", "x-backend": `web-${i + 1}` } });
      },
    }),
  );
  const echo: TcpListener = rt.listenTcp({
    hostname,
    port: demoTcpPort,
    handlers: {
      data(socket, chunk) {
        socket.write(chunk); // small demo: lines are tiny, a short write is not worth handling here
      },
      end(socket) {
        socket.end();
      },
    },
  });
  return {
    async [Symbol.asyncDispose]() {
      echo.stop(true);
      await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
    },
  };
}
