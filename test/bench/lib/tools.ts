/**
 * The external programs the benchmark drives, installed from Debian's packages when missing, and
 * a description of the machine and the versions for the report.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { scriptGroup } from "./procs.ts";

/** A command and the Debian package that provides it. */
export interface Tool {
  readonly command: string;
  readonly pkg: string;
}

export const benchTools: readonly Tool[] = [
  { command: "nginx", pkg: "nginx" },
  { command: "haproxy", pkg: "haproxy" },
  { command: "wrk", pkg: "wrk" },
  { command: "iperf3", pkg: "iperf3" },
  { command: "h2load", pkg: "nghttp2-client" },
  { command: "taskset", pkg: "util-linux" },
];

/** True when `command` is on PATH. */
export function hasCommand(command: string): boolean {
  return spawnSync("sh", ["-c", `command -v "$1" >/dev/null`, "sh", command]).status === 0;
}

/** The tools in `tools` that are missing, by `has`. */
export function missingTools(tools: readonly Tool[], has: (command: string) => boolean = hasCommand): Tool[] {
  return tools.filter((t) => !has(t.command));
}

/**
 * Install the missing tools with apt-get (as root), after `apt-get update`.
 * @throws {Error} when something is missing and cannot be installed.
 */
export function ensureTools(tools: readonly Tool[] = benchTools, log: (line: string) => void = console.error): void {
  const missing = missingTools(tools);
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map((t) => t.pkg))];
  if (process.getuid?.() !== 0) {
    throw new Error(`Missing ${missing.map((t) => `"${t.command}"`).join(", ")}: install them (apt-get install -y ${pkgs.join(" ")}) or run as root`);
  }
  log(`Installing ${pkgs.join(", ")} from Debian's packages`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const update = spawnSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"], env, timeout: 300_000 });
  if (update.status !== 0) throw new Error(`"apt-get update" failed with code ${update.status}`);
  const install = spawnSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...pkgs], { stdio: ["ignore", "ignore", "inherit"], env, timeout: 600_000 });
  if (install.status !== 0) throw new Error(`"apt-get install ${pkgs.join(" ")}" failed with code ${install.status}`);
  const still = missingTools(tools);
  if (still.length) throw new Error(`Still missing after install: ${still.map((t) => `"${t.command}"`).join(", ")}`);
}

function firstLine(cmd: string, args: readonly string[], pattern: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
  const text = `${r.stdout ?? ""}\n${r.stderr ?? ""}`;
  return pattern.exec(text)?.[0]?.trim() ?? "unknown";
}

/** Versions of the programs under test and of the load generators. */
export function toolVersions(): Record<string, string> {
  return {
    bun: process.versions.bun ?? "not bun",
    nginx: firstLine("nginx", ["-v"], /nginx\/\S+/),
    haproxy: firstLine("haproxy", ["-v"], /HAProxy version \S+/).replace("HAProxy version ", ""),
    wrk: firstLine("wrk", ["-v"], /wrk \S+/),
    h2load: firstLine("h2load", ["--version"], /nghttp2\/\S+/),
    iperf3: firstLine("iperf3", ["-v"], /iperf \S+/),
  };
}

/** What the machine is, for the report. */
export interface MachineInfo {
  readonly nproc: number;
  readonly cpuModel: string;
  readonly kernel: string;
  readonly os: string;
  readonly memGiB: number;
  readonly loadavg: readonly number[];
}

/** nproc, CPU model, kernel, OS, memory and the current load average. */
export function machineInfo(): MachineInfo {
  let os = "unknown";
  try {
    os = /PRETTY_NAME="([^"]*)"/.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? os;
  } catch {
    // Not Linux-standard; keep "unknown".
  }
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? "unknown",
    kernel: release(),
    os,
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    loadavg: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/**
 * The start of a load benchmark script: the tools it needs checked (exit 1 naming what is missing), then its process
 * group ({@link scriptGroup}) in a fresh temp dir, at nice -10 when run as root so that the benchmark's processes win
 * the CPU from other work on a shared machine.
 *
 * @example const { tmp, group, cleanup, nice } = startBench("kubegate-bench-", log);
 */
export function startBench(prefix: string, log: (line: string) => void): ReturnType<typeof scriptGroup> & { nice: number | undefined } {
  try {
    ensureTools(undefined, log);
  } catch (err) {
    console.error((err as Error).message);
    process.exit(1);
  }
  const nice = process.getuid?.() === 0 ? -10 : undefined;
  return { ...scriptGroup(prefix, log, nice === undefined ? {} : { nice }), nice };
}

