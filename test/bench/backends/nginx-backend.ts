/**
 * The HTTP backends: nginx instances (1 worker each) that answer `GET /` with a 2-byte "ok" and
 * `GET /64k` with a 64 KiB static file, with keep-alive that never runs out during a run.
 */

/** Where a backend nginx listens and keeps its files. */
export interface BackendConfig {
  readonly port: number;
  /** A directory for the pid file and temp paths. */
  readonly dir: string;
  /** The directory holding the file `64k`. */
  readonly wwwDir: string;
  /** Add `user root;` (when started as root, so workers can read a 0700 temp dir). */
  readonly runAsRoot: boolean;
  /** Serve HTTP/2 cleartext (prior knowledge) instead of HTTP/1.1 (for h2-servers.ts). */
  readonly http2?: boolean;
}

/** The path of the large response. */
export const largePath = "/64k";
/** The size of the large response. */
export const largeBytes = 64 * 1024;

/**
 * nginx.conf for one backend.
 * @example nginxBackendConf({ port: 18081, dir: "/tmp/b1", wwwDir: "/tmp/www", runAsRoot: true })
 */
export function nginxBackendConf(c: BackendConfig): string {
  return `# kubegate benchmark backend on 127.0.0.1:${c.port}
${c.runAsRoot ? "user root;\n" : ""}worker_processes 1;
daemon off;
master_process on;
pid ${c.dir}/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile 16384;
events { worker_connections 8000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path ${c.dir}/client_body;
  proxy_temp_path ${c.dir}/proxy;
  fastcgi_temp_path ${c.dir}/fastcgi;
  uwsgi_temp_path ${c.dir}/uwsgi;
  scgi_temp_path ${c.dir}/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${c.port}${c.http2 ? " http2" : ""} backlog=4096;
    location = / { default_type text/plain; return 200 "ok"; }
    location = ${largePath} { root ${c.wwwDir}; }
  }
}
`;
}
