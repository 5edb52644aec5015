/**
 * haproxy (1 thread, or N with `--multi N`) in both modes: an HTTP frontend with connection reuse to the
 * backends, a TCP frontend to the same backends, a TCP frontend to the iperf3 server and one to the echo server,
 * and an HTTP/2 cleartext frontend (`proto h2` on the bind line) to the h2c origins (`proto h2` on the server lines,
 * connections reused: streams multiplexed).
 */

/** Ports of the haproxy frontends and of what they forward to. */
export interface HaproxyConfig {
  readonly httpPort: number;
  readonly tcpPort: number;
  readonly iperfPort: number;
  readonly backends: readonly number[];
  readonly iperfBackend: number;
  readonly echoPort: number;
  readonly echoBackend: number;
  readonly h2cPort: number;
  readonly h2cBackends: readonly number[];
  /** `nbthread` (default 1). */
  readonly threads?: number;
}

/** haproxy.cfg for the proxy under test. */
export function haproxyConf(c: HaproxyConfig): string {
  const servers = c.backends.map((p, i) => `  server b${i + 1} 127.0.0.1:${p}`).join("\n");
  const threads = c.threads ?? 1;
  return `# kubegate benchmark: haproxy, ${threads} thread${threads === 1 ? "" : "s"}, http and tcp mode
global
  nbthread ${threads}
  maxconn 8000
  log stderr format raw local0 err

defaults
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  maxconn 8000

frontend http_in
  mode http
  bind 127.0.0.1:${c.httpPort}
  default_backend http_be

backend http_be
  mode http
  balance roundrobin
  http-reuse always
${servers}

frontend tcp_in
  mode tcp
  bind 127.0.0.1:${c.tcpPort}
  default_backend tcp_be

backend tcp_be
  mode tcp
  balance roundrobin
${servers}

frontend iperf_in
  mode tcp
  bind 127.0.0.1:${c.iperfPort}
  default_backend iperf_be

backend iperf_be
  mode tcp
  server iperf 127.0.0.1:${c.iperfBackend}

frontend echo_in
  mode tcp
  bind 127.0.0.1:${c.echoPort}
  default_backend echo_be

backend echo_be
  mode tcp
  server echo 127.0.0.1:${c.echoBackend}

frontend h2c_in
  mode http
  bind 127.0.0.1:${c.h2cPort} proto h2
  default_backend h2c_be

backend h2c_be
  mode http
  balance roundrobin
  http-reuse always
${c.h2cBackends.map((p, i) => `  server h${i + 1} 127.0.0.1:${p} proto h2`).join("\n")}
`;
}
