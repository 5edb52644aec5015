/**
 * nginx as the reference reverse proxy: 1 worker (or N with `reuseport`: one listening socket per worker,
 * as kubegate's workers have), an upstream pool with `keepalive 64`, HTTP/1.1
 * to the backends with the Connection header cleared (the documented way to reuse upstream
 * connections). Buffers are large enough that a 64 KiB response never touches a temp file.
 */

/** Where the nginx proxy listens and what it proxies to. */
export interface NginxProxyConfig {
  readonly port: number;
  readonly backends: readonly number[];
  readonly dir: string;
  readonly runAsRoot: boolean;
  /** `worker_processes` (default 1); above 1 the listener gets `reuseport`. */
  readonly workers?: number;
}

/** nginx.conf for the proxy under test. */
export function nginxProxyConf(c: NginxProxyConfig): string {
  const workers = c.workers ?? 1;
  return `# kubegate benchmark: nginx reverse proxy on 127.0.0.1:${c.port}
${c.runAsRoot ? "user root;\n" : ""}worker_processes ${workers};
daemon off;
master_process on;
pid ${c.dir}/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile 16384;
events { worker_connections 8000; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path ${c.dir}/client_body;
  proxy_temp_path ${c.dir}/proxy;
  fastcgi_temp_path ${c.dir}/fastcgi;
  uwsgi_temp_path ${c.dir}/uwsgi;
  scgi_temp_path ${c.dir}/scgi;
  upstream backends {
${c.backends.map((p) => `    server 127.0.0.1:${p};`).join("\n")}
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:${c.port} backlog=4096${workers > 1 ? " reuseport" : ""};
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_max_temp_file_size 0;
    }
  }
}
`;
}
