/**
 * Free ports for listeners whose port must be fixed up front (NodePorts in a snapshot). Uses
 * `node:net`, so it works under Bun and Deno.
 */
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";

/**
 * A port the OS just reported free on `host` (bound to port 0, then released). Another process may
 * take it before you bind it; on a test box that is rare enough.
 *
 * @example const port = await freePort(); // e.g. 41873
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: 0, exclusive: true }, resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A port that refuses connections on 127.0.0.1: a privileged port no test listens on. Never a port that was
 * bound and closed: the next `port: 0` listener (a proxy under test, say) may receive that very port, and a
 * proxy whose endpoint is itself forwards to itself until it runs out of file descriptors (seen in CI-like runs).
 */
export const REFUSED_PORT = 1;
