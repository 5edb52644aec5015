/**
 * Issue 17: `--endpoint-access auto` against pod networks that are really unroutable. The scenario
 * (local-auto/auto.netns.ts) runs as a `bun test` of its own in a new network namespace (`unshare --user
 * --map-root-user --net`: no privilege needed), where it sets up the routes it needs; this test fails with its output
 * when it does.
 */
import { expect, test } from "bun:test";
import { fileURLToPath } from "node:url";

const scenario = fileURLToPath(new URL("./local-auto/auto.netns.ts", import.meta.url));
const setup = [
  "ip link set lo up",
  // 10.245.0.0/16 goes to a tun device that nobody reads: connects there get no answer.
  "ip tuntap add dev tun0 mode tun",
  "ip addr add 10.245.0.1/16 dev tun0",
  "ip link set tun0 up",
].join(" && ");

test("auto decides per pod network in a network namespace with no route and a silent route", async () => {
  const child = Bun.spawn(["unshare", "--user", "--map-root-user", "--net", "sh", "-c", `${setup} && exec "$0" test "$1"`, process.execPath, `./${scenario.slice(process.cwd().length + 1)}`], {
    stdout: "pipe",
    stderr: "pipe",
    timeout: 90_000,
    env: { ...process.env, CI: "true" },
  });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  if (code !== 0) throw new Error(`The scenario failed (exit ${code}):\n${out.slice(-3000)}\n${err.slice(-6000)}`);
  expect(err).toContain("1 pass");
  expect(err).toContain("0 fail");
}, 120_000);
