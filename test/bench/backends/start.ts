/**
 * Start the backends on the load core: two nginx HTTP backends, one iperf3 server, one echo server (for the
 * pipelined case) and two h2c origins (for the h2c case). The direct path is the load generator straight to the
 * first of each.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { PortAllocator } from "../lib/ports.ts";
import type { Daemon, ProcessGroup } from "../lib/procs.ts";
import { waitForH2, waitForHttp, waitForLog } from "../lib/probe.ts";
import { largeBytes, largePath, nginxBackendConf } from "./nginx-backend.ts";

/** The running backends. */
export interface Backends {
  /** Ports of the HTTP backends. */
  readonly http: readonly number[];
  /** Port of the iperf3 server. */
  readonly iperf: number;
  /** Port of the echo server. */
  readonly echo: number;
  /** Ports of the HTTP/2 cleartext origins (h2c-backend.ts). */
  readonly h2c: readonly number[];
  readonly daemons: readonly Daemon[];
}

/** The echo server's script. */
export const echoServerScript = fileURLToPath(new URL("./echo-server.ts", import.meta.url));

/** The h2c origin's script (kubegate's HTTP/2 session in the server role; faster here than nginx's HTTP/2). */
export const h2cBackendScript = fileURLToPath(new URL("./h2c-backend.ts", import.meta.url));

/**
 * Start `count` nginx backends, an iperf3 server, an echo server and `count` h2c origins pinned to `core` (unpinned
 * when undefined), and wait until they serve.
 * @throws {Error} when one does not come up.
 */
export async function startBackends(group: ProcessGroup, ports: PortAllocator, dir: string, core: number | undefined, count = 2): Promise<Backends> {
  const on = core === undefined ? {} : { core };
  const www = join(dir, "www");
  mkdirSync(www, { recursive: true });
  const body = Buffer.alloc(largeBytes);
  for (let i = 0; i < body.length; i++) body[i] = 97 + (i % 26);
  writeFileSync(join(www, largePath.slice(1)), body);
  const runAsRoot = process.getuid?.() === 0;

  const httpPorts: number[] = [];
  const daemons: Daemon[] = [];
  for (let i = 1; i <= count; i++) {
    const port = await ports.next();
    const bdir = join(dir, `backend-${i}`);
    mkdirSync(bdir, { recursive: true });
    const conf = join(bdir, "nginx.conf");
    writeFileSync(conf, nginxBackendConf({ port, dir: bdir, wwwDir: www, runAsRoot }));
    const d = group.start(`backend-${i}`, ["nginx", "-p", bdir, "-e", "stderr", "-c", conf], on);
    httpPorts.push(port);
    daemons.push(d);
  }
  const iperfPort = await ports.next();
  const iperf = group.start("iperf3-server", ["iperf3", "-s", "-p", String(iperfPort), "--forceflush"], on);
  daemons.push(iperf);
  const echoPort = await ports.next();
  const bun = process.versions.bun ? process.execPath : "bun";
  const echo = group.start("echo-server", [bun, echoServerScript, String(echoPort)], on);
  daemons.push(echo);
  const h2cPorts: number[] = [];
  const h2cDaemons: Daemon[] = [];
  for (let i = 1; i <= count; i++) {
    const port = await ports.next();
    h2cDaemons.push(group.start(`h2c-backend-${i}`, [bun, h2cBackendScript, String(port)], on));
    h2cPorts.push(port);
  }
  daemons.push(...h2cDaemons);

  await Promise.all(httpPorts.map((p, i) => waitForHttp(`http://127.0.0.1:${p}/`, daemons[i]!)));
  await Promise.all(h2cPorts.map((p, i) => waitForH2(`http://127.0.0.1:${p}/`, h2cDaemons[i]!)));
  // iperf3 is not probed by connecting: a probe would be a failed test for it.
  await waitForLog(iperf, /Server listening on/);
  await waitForLog(echo, /echo server listening/);
  const dead = daemons.filter((d) => d.hasExited());
  if (dead.length) throw new Error(`Backend "${dead[0]!.name}" exited while starting:\n${dead[0]!.logTail()}`);
  return { http: httpPorts, iperf: iperfPort, echo: echoPort, h2c: h2cPorts, daemons };
}
