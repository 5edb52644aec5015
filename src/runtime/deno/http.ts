/**
 * Deno's fetch with TLS from the kubeconfig: `Deno.createHttpClient({ caCerts, cert, key })` and
 * `fetch(url, { client })`.
 *
 * Deno has no per-client switch to skip verification or to override the server name: for
 * `insecure-skip-tls-verify` run Deno with `--unsafely-ignore-certificate-errors=<host>`;
 * `tls-server-name` is not supported (a warning is printed once).
 */
import type { HttpClient, TlsClientOptions } from "../types.ts";

interface DenoHttpClient {
  close(): void;
}
interface DenoNs {
  createHttpClient(options: { caCerts?: string[]; cert?: string; key?: string }): DenoHttpClient;
}
const Deno = (globalThis as unknown as { Deno: DenoNs }).Deno;

let warned = false;

export function createHttpClient(tls: TlsClientOptions): HttpClient {
  if (!warned && (tls.rejectUnauthorized === false || tls.serverName)) {
    warned = true;
    console.warn(
      tls.rejectUnauthorized === false
        ? "kubegate: Deno cannot skip TLS verification per client; run with --unsafely-ignore-certificate-errors=<api server host> for insecure-skip-tls-verify"
        : `kubegate: Deno cannot override the TLS server name; tls-server-name "${tls.serverName}" is ignored`,
    );
  }
  const client = Deno.createHttpClient({
    ...(tls.ca ? { caCerts: [tls.ca] } : {}),
    ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
  });
  return {
    fetch: (url, init) => fetch(url, { ...init, client } as RequestInit),
    close: () => client.close(),
  };
}
