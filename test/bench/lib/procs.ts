/**
 * Child processes of the benchmark: long-running daemons (backends, proxies) with their output in
 * log files, and bounded runs (load generators) whose output is captured. Every process is tracked
 * by PID and killed by PID, with its descendants (nginx's workers), at the end or on a signal.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * `cmd` prefixed with `nice -n <nice>` and `taskset -c <core>` (each only when given). Both exec
 * the command, so the child's PID is the command's.
 * @example pinned(1, ["nginx"], -10) // ["nice", "-n", "-10", "taskset", "-c", "1", "nginx"]
 */
export function pinned(core: number | undefined, cmd: readonly string[], nice?: number): string[] {
  const withCore = core === undefined ? [...cmd] : ["taskset", "-c", String(core), ...cmd];
  return nice === undefined ? withCore : ["nice", "-n", String(nice), ...withCore];
}

/** PIDs of every descendant of `pid` (from /proc/<pid>/task/<tid>/children), breadth first (parents before their children). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  for (let guard = 0; queue.length > 0 && guard < 10_000; guard++) {
    const p = queue.shift()!;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      let text = "";
      try {
        text = readFileSync(`/proc/${p}/task/${tid}/children`, "utf8");
      } catch {
        continue;
      }
      for (const c of text.split(/\s+/).filter(Boolean).map(Number)) {
        if (!out.includes(c)) {
          out.push(c);
          queue.push(c);
        }
      }
    }
  }
  return out;
}

/** True while `pid` runs (a zombie, dead but not yet reaped, counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const p of pids) {
    try {
      process.kill(p, signal);
    } catch {
      // Already gone.
    }
  }
}

/** A long-running child process. */
export interface Daemon {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  /** Resolves with the exit code (null when killed by a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
  /** True once the process has exited. */
  hasExited(): boolean;
  /** The last lines of its stdout+stderr log. */
  logTail(lines?: number): string;
}

/** The outcome of a bounded run. */
export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly elapsedMs: number;
}

/** Options for starting a process. */
export interface SpawnOptions {
  /** Pin to this core with taskset. */
  readonly core?: number;
  readonly cwd?: string;
  /** Variables set for the child over this process's environment. */
  readonly env?: Readonly<Record<string, string>>;
}

/** Thrown when a bounded run does not exit in time or exits non-zero. */
export class RunError extends Error {
  override readonly name = "RunError";
  constructor(message: string, readonly result: RunResult, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * The benchmark's children. `killAllSync` is safe to call from an `exit` handler.
 *
 * @example
 * const group = new ProcessGroup("/tmp/bench");
 * const nginx = group.start("nginx", ["nginx", "-c", conf], { core: 0 });
 * const wrk = await group.run("wrk", ["wrk", url], { core: 0, timeoutMs: 15_000 });
 * await group.stopAll();
 */
export class ProcessGroup implements AsyncDisposable {
  readonly #live = new Map<number, string>();
  readonly #logDir: string;
  readonly #nice: number | undefined;

  /** Children log to `logDir`; with `nice`, every child runs at that niceness (negative needs root). */
  constructor(logDir: string, { nice }: { readonly nice?: number } = {}) {
    this.#logDir = logDir;
    this.#nice = nice;
  }

  /** PIDs of the children still running (not their descendants). */
  pids(): number[] {
    return [...this.#live.keys()];
  }

  /** Start a daemon with stdout and stderr appended to `<logDir>/<name>.log`. */
  start(name: string, cmd: readonly string[], options: SpawnOptions = {}): Daemon {
    const logPath = join(this.#logDir, `${name}.log`);
    const fd = openSync(logPath, "a");
    const argv = pinned(options.core, cmd, this.#nice);
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), {
        stdio: ["ignore", fd, fd],
        ...(options.cwd ? { cwd: options.cwd } : {}),
        ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
      });
    } finally {
      closeSync(fd);
    }
    const pid = child.pid;
    if (pid === undefined) throw new Error(`Cannot start "${name}": spawn of "${argv[0]}" failed`);
    this.#live.set(pid, name);
    let done = false;
    const exited = new Promise<number | null>((resolve) => {
      child.once("error", () => {
        done = true;
        this.#live.delete(pid);
        resolve(null);
      });
      child.once("exit", (code) => {
        done = true;
        this.#live.delete(pid);
        resolve(code);
      });
    });
    return {
      name,
      pid,
      logPath,
      exited,
      hasExited: () => done,
      logTail: (lines = 20) => {
        try {
          return readFileSync(logPath, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
        } catch {
          return "";
        }
      },
    };
  }

  /**
   * Run `cmd` to completion, capturing its output; killed (with its descendants) after `timeoutMs`.
   * Resolves even on a non-zero exit: check `code` and `timedOut`.
   */
  run(name: string, cmd: readonly string[], options: SpawnOptions & { readonly timeoutMs: number }): Promise<RunResult> {
    const argv = pinned(options.core, cmd, this.#nice);
    const started = performance.now();
    return new Promise((resolve) => {
      const child = spawn(argv[0]!, argv.slice(1), {
        stdio: ["ignore", "pipe", "pipe"],
        ...(options.cwd ? { cwd: options.cwd } : {}),
        ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
      });
      const pid = child.pid;
      if (pid !== undefined) this.#live.set(pid, name);
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on("data", (b: Buffer) => out.push(b));
      child.stderr?.on("data", (b: Buffer) => err.push(b));
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        if (pid !== undefined) signalAll([pid, ...descendants(pid)], "SIGKILL");
      }, options.timeoutMs);
      const finish = (code: number | null) => {
        clearTimeout(timer);
        if (pid !== undefined) this.#live.delete(pid);
        resolve({
          code,
          stdout: Buffer.concat(out).toString("utf8"),
          stderr: Buffer.concat(err).toString("utf8"),
          timedOut,
          elapsedMs: performance.now() - started,
        });
      };
      child.once("error", (e) => {
        err.push(Buffer.from(String(e.message)));
        finish(null);
      });
      child.once("close", (code) => finish(code));
    });
  }

  /** Like {@link run}, but throws a {@link RunError} unless the command exits 0 in time. */
  async runOk(name: string, cmd: readonly string[], options: SpawnOptions & { readonly timeoutMs: number }): Promise<RunResult> {
    const r = await this.run(name, cmd, options);
    if (r.timedOut) throw new RunError(`Command "${name}" did not finish within ${options.timeoutMs} ms`, r);
    if (r.code !== 0) throw new RunError(`Command "${name}" exited with code ${r.code}: ${(r.stderr || r.stdout).trim().slice(-500)}`, r);
    return r;
  }

  /** Stop one daemon: SIGTERM to it and its descendants, SIGKILL to whatever is left after `graceMs`. */
  async stop(daemon: Daemon, graceMs = 3_000): Promise<void> {
    if (daemon.hasExited()) return;
    const tree = [daemon.pid, ...descendants(daemon.pid)];
    signalAll(tree, "SIGTERM");
    const deadline = performance.now() + graceMs;
    while (tree.some(alive) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    signalAll(tree.filter(alive), "SIGKILL");
    await Promise.race([daemon.exited, new Promise((r) => setTimeout(r, 1_000))]);
  }

  /** Stop every tracked child (and descendants): SIGTERM, then SIGKILL after `graceMs`. */
  async stopAll(graceMs = 3_000): Promise<void> {
    const tree = this.#tree();
    signalAll(tree, "SIGTERM");
    const deadline = performance.now() + graceMs;
    while (tree.some(alive) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    signalAll(tree.filter(alive), "SIGKILL");
  }

  /** SIGKILL every tracked child and its descendants, synchronously (for `process.on("exit")`). */
  killAllSync(): void {
    signalAll(this.#tree(), "SIGKILL");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopAll();
  }

  /** Roots first, then their descendants parents-first: SIGKILL in this order leaves no parent alive to respawn a child (nginx's master would). */
  #tree(): number[] {
    const roots = [...this.#live.keys()];
    return [...new Set([...roots, ...roots.flatMap((p) => descendants(p))])];
  }
}

/**
 * A process group in a fresh temp dir for a benchmark script, cleaned up (children SIGKILLed by PID, the dir removed)
 * on exit and on SIGINT/SIGTERM/SIGHUP.
 *
 * `cleanup` does the same at once (idempotent).
 *
 * @example const { tmp, group, cleanup } = scriptGroup("kubegate-bench-", log, { nice: -10 });
 */
export function scriptGroup(
  prefix: string,
  log: (line: string) => void,
  options: { readonly nice?: number } = {},
): { tmp: string; group: ProcessGroup; cleanup: () => void } {
  const tmp = mkdtempSync(join(tmpdir(), prefix));
  const group = new ProcessGroup(tmp, options);
  let cleaned = false;
  const cleanupSync = (): void => {
    if (cleaned) return;
    cleaned = true;
    group.killAllSync();
    rmSync(tmp, { recursive: true, force: true });
  };
  process.on("exit", cleanupSync);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      log(`${sig}: stopping`);
      cleanupSync();
      process.exit(130);
    });
  }
  return { tmp, group, cleanup: cleanupSync };
}

/**
 * Run a benchmark script's `main` and exit the process: 0 when it resolved, 1 with `<name> failed: <message>` when it
 * threw; either way the script's process group is stopped and its temp dir removed first.
 * @example await runBenchMain("grpc benchmark", main, { group, cleanup });
 */
export async function runBenchMain(name: string, main: () => Promise<void>, script: { readonly group: ProcessGroup; readonly cleanup: () => void }): Promise<never> {
  let code = 1;
  try {
    await main();
    code = 0;
  } catch (err) {
    console.error(`${name} failed: ${(err as Error).message}`);
  } finally {
    await script.group.stopAll();
    script.cleanup();
  }
  process.exit(code);
}
