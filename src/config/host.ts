/** What the host is: its interface addresses and the CPUs this process may use (node:os and /sys work on Bun and Deno). */
import { readFileSync } from "node:fs";
import { availableParallelism, hostname, networkInterfaces } from "node:os";

/**
 * The name this gateway goes by in Events and telemetry (`service.instance.id`): its node, or off the cluster
 * (`--local`, no node name) the machine's host name.
 */
export function instanceName(nodeName: string): string {
  return nodeName || hostname();
}

/** Every IPv4/IPv6 address of this host's interfaces (link-local IPv6 excluded: it needs a zone to bind). */
export function hostAddresses(): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === "IPv6" && a.address.toLowerCase().startsWith("fe80:")) continue;
      out.add(a.address);
    }
  }
  return [...out];
}

/**
 * The CPUs this process may use, like nginx's `worker_processes auto`: the scheduler affinity
 * (`availableParallelism`), bounded by a cgroup v2 CPU quota (`/sys/fs/cgroup/cpu.max`, e.g. a pod's CPU limit),
 * rounded up; at least 1.
 */
export function availableCpus(readCpuMax: () => string | undefined = cgroupCpuMax): number {
  const affinity = Math.max(1, availableParallelism());
  const quota = cpuQuota(readCpuMax());
  return quota === undefined ? affinity : Math.max(1, Math.min(affinity, Math.ceil(quota)));
}

/** The CPUs a cgroup v2 `cpu.max` line allows (`"200000 100000"` -> 2), or undefined for `max` or no line. */
export function cpuQuota(line: string | undefined): number | undefined {
  const [quota, period] = (line ?? "").trim().split(/\s+/);
  if (!quota || quota === "max" || !period) return undefined;
  const q = Number(quota);
  const p = Number(period);
  return Number.isFinite(q) && Number.isFinite(p) && q > 0 && p > 0 ? q / p : undefined;
}

function cgroupCpuMax(): string | undefined {
  try {
    return readFileSync("/sys/fs/cgroup/cpu.max", "utf8");
  } catch {
    return undefined;
  }
}

/**
 * `net.ipv4.tcp_migrate_req` (Linux 5.14+, per network namespace): when 1, closing a listening socket of a
 * SO_REUSEPORT group moves the connections queued on it (accepted by the kernel, not yet by the process) to another
 * socket of the group instead of resetting them. A hand-over closes the old gateway's listening sockets under load,
 * so this decides whether it is lossless. Undefined where it cannot be read (not Linux, a kernel without it).
 */
export const TCP_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req";

/** The current value of {@link TCP_MIGRATE_REQ}; undefined where it cannot be read. */
export function tcpMigrateReq(path = TCP_MIGRATE_REQ): boolean | undefined {
  try {
    return readFileSync(path, "utf8").trim() === "1";
  } catch {
    return undefined;
  }
}
