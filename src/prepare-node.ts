/**
 * `kubegate prepare-node`: the node settings a lossless hand-over needs, set once per node before the gateway
 * starts (the DaemonSet's privileged init container; `/proc/sys` is read-only in unprivileged containers). Today one:
 * `net.ipv4.tcp_migrate_req=1` (see `config/host.ts`). Prints what it found and did; exit 0 when the setting holds,
 * 1 when it cannot be made to (a kernel before 5.14, no privilege): the gateway still runs, with the limit the
 * README names.
 */
import { writeFileSync } from "node:fs";
import { TCP_MIGRATE_REQ, tcpMigrateReq } from "./config/host.ts";

/** Set `net.ipv4.tcp_migrate_req=1`; returns the exit code and prints one line. */
export function prepareNode(path = TCP_MIGRATE_REQ, print: (line: string) => void = console.log): number {
  const before = tcpMigrateReq(path);
  if (before === undefined) {
    print(`prepare-node: ${path} cannot be read (Linux 5.14 or later has it): connections queued on a closing listener are reset at a hand-over`);
    return 1;
  }
  if (before) {
    print("prepare-node: net.ipv4.tcp_migrate_req is already 1");
    return 0;
  }
  try {
    writeFileSync(path, "1\n");
  } catch (err) {
    print(`prepare-node: cannot set net.ipv4.tcp_migrate_req=1 (${(err as Error).message}): run privileged, or set it on the node`);
    return 1;
  }
  print("prepare-node: net.ipv4.tcp_migrate_req set to 1 (connections queued on a closing listener move to the other gateway's)");
  return 0;
}
