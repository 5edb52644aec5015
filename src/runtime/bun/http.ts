/** Bun's fetch with TLS from the kubeconfig: `fetch(url, { tls })`. */
import type { HttpClient, TlsClientOptions } from "../types.ts";

export function createHttpClient(tls: TlsClientOptions): HttpClient {
  const tlsInit = {
    ...(tls.ca ? { ca: tls.ca } : {}),
    ...(tls.cert ? { cert: tls.cert } : {}),
    ...(tls.key ? { key: tls.key } : {}),
    ...(tls.serverName ? { serverName: tls.serverName } : {}),
    rejectUnauthorized: tls.rejectUnauthorized ?? true,
  };
  return {
    fetch: (url, init) => fetch(url, { ...init, tls: tlsInit } as RequestInit),
    close() {},
  };
}
