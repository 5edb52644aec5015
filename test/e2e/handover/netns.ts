/**
 * Run the hand-over scenario in a network namespace of its own (`unshare --net`, inside a new user namespace so no
 * privilege is needed): its loopback, its fixed ports (10356, 30080, ...) and its net.ipv4.tcp_migrate_req are its
 * own, so nothing of the host's is touched and nothing of the host's is in the way.
 */
import { fileURLToPath } from "node:url";
import type { ScenarioOptions, ScenarioResult } from "./scenario.ts";

const scenario = fileURLToPath(new URL("./scenario.ts", import.meta.url));

/** Run {@link ScenarioOptions} in a fresh namespace; resolves with its result (rejects when it printed none). */
export async function runInNamespace(options: ScenarioOptions, timeoutMs = 120_000): Promise<ScenarioResult> {
  const child = Bun.spawn(["unshare", "--user", "--map-root-user", "--net", process.execPath, scenario, JSON.stringify(options)], {
    stdout: "pipe",
    stderr: "pipe",
    timeout: timeoutMs,
  });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  const last = out.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(last) as ScenarioResult;
  } catch {
    throw new Error(`The hand-over scenario printed no result (exit ${code}):\n${out.slice(-2000)}\n${err.slice(-2000)}`);
  }
}
