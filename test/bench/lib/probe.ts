/** Readiness probes for the benchmark's servers. */
import { execFile } from "node:child_process";
import { connect } from "node:net";
import type { Daemon } from "./procs.ts";

/**
 * Poll `probe` every `intervalMs` until it returns true; stop early when `daemon` exits.
 * @throws {Error} naming `what` on timeout or exit.
 */
async function pollUntil(daemon: Daemon, probe: () => boolean | Promise<boolean>, what: string, timeoutMs: number, intervalMs = 50): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (daemon.hasExited()) throw new Error(`"${daemon.name}" exited before ${what}`);
    if (await probe()) return;
    if (performance.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** GET `url` once; the status, or undefined on a connection error or after 1 s. */
export async function httpStatus(url: string): Promise<number | undefined> {
  try {
    // Connection: close, so that no idle probe connection stays open to hold up a proxy's drain.
    const res = await fetch(url, { signal: AbortSignal.timeout(1_000), headers: { connection: "close" } });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return undefined;
  }
}

/**
 * True when one HTTP/2 request (prior knowledge, by h2load) gets a 2xx within 2 s: to `request`, a URL or h2load's
 * arguments after the load flags (e.g. a gRPC call's headers, body and URL).
 */
export function h2Answers(request: string | readonly string[]): Promise<boolean> {
  return new Promise((resolve) => {
    execFile("h2load", ["-n", "1", "-c", "1", ...(typeof request === "string" ? [request] : request)], { timeout: 2_000 }, (err, stdout) => {
      resolve(!err && /requests: 1 total, 1 started, 1 done, 1 succeeded/.test(stdout) && /status codes: 1 2xx/.test(stdout));
    });
  });
}

/** True when a TCP connection to `port` on 127.0.0.1 is accepted within 1 s (closed right away). */
export function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1_000, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

/**
 * Wait until `url` answers `status` (default 200), failing early if `daemon` exits.
 * @throws {Error} with the daemon's log tail when it exits or the deadline passes.
 */
export async function waitForHttp(url: string, daemon: Daemon, { status = 200, timeoutMs = 15_000 } = {}): Promise<void> {
  try {
    await pollUntil(daemon, async () => (await httpStatus(url)) === status, `${url} to answer ${status}`, timeoutMs);
  } catch (err) {
    throw new Error(`"${daemon.name}" is not serving ${url}: ${(err as Error).message}\n${daemon.logTail()}`, { cause: err });
  }
}

/** Wait until `port` accepts TCP connections, failing early if `daemon` exits. */
export async function waitForPort(port: number, daemon: Daemon, timeoutMs = 15_000): Promise<void> {
  try {
    await pollUntil(daemon, () => tcpAccepts(port), `port ${port} to accept connections`, timeoutMs);
  } catch (err) {
    throw new Error(`"${daemon.name}" is not listening on ${port}: ${(err as Error).message}\n${daemon.logTail()}`, { cause: err });
  }
}

/** Wait until `daemon`'s log matches `pattern` (for servers that must not be probed by connecting). */
export async function waitForLog(daemon: Daemon, pattern: RegExp, timeoutMs = 15_000): Promise<void> {
  try {
    await pollUntil(daemon, () => pattern.test(daemon.logTail(50)), `"${daemon.name}" to log ${pattern}`, timeoutMs);
  } catch (err) {
    throw new Error(`"${daemon.name}" did not start: ${(err as Error).message}\n${daemon.logTail()}`, { cause: err });
  }
}

/**
 * Wait until an HTTP/2 request (prior knowledge; see {@link h2Answers}) answers 2xx, failing early if `daemon` exits.
 * @throws {Error} with the daemon's log tail when it exits or the deadline passes.
 */
export async function waitForH2(request: string | readonly string[], daemon: Daemon, timeoutMs = 15_000): Promise<void> {
  const url = typeof request === "string" ? request : request[request.length - 1];
  try {
    await pollUntil(daemon, () => h2Answers(request), `${url} to answer 2xx over HTTP/2`, timeoutMs);
  } catch (err) {
    throw new Error(`"${daemon.name}" is not serving ${url} over HTTP/2: ${(err as Error).message}\n${daemon.logTail()}`, { cause: err });
  }
}
