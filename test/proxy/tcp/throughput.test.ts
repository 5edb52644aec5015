/**
 * Bulk data through the TCP proxy running in its own process: 1 GiB each way at once, hashed on
 * both ends, with the proxy's RSS growth bounded (it streams; it does not buffer).
 */
import { expect, test } from "bun:test";
import { rt } from "../../../src/runtime/index.ts";
import { patternSha256, randomPattern, transferClient, transferUpstream } from "../../support/tcp-transfer.ts";
import { jsonLines } from "../../support/child-io.ts";

const GiB = 1024 * 1024 * 1024;


test("1 GiB each way through the proxy arrives intact, and the proxy's RSS grows < 64 MiB", async () => {
  const pattern = randomPattern();
  const expected = patternSha256(pattern, GiB);
  await using upstream = transferUpstream(rt, pattern, GiB);
  await using child = Bun.spawn([process.execPath, `${import.meta.dir}/../../support/tcp-proxy-child.ts`, String(upstream.port)], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  const lines = jsonLines<Record<string, number>>(child.stdout);
  const { port } = (await lines.next()).value!;
  const started = performance.now();
  const [down, up] = await Promise.all([transferClient(rt, port!, pattern, GiB), upstream.received]);
  const seconds = (performance.now() - started) / 1000;
  child.stdin.write("report\n");
  await child.stdin.flush();
  const { baseline, peak } = (await lines.next()).value!;
  expect(down).toEqual({ bytes: GiB, sent: GiB, sha256: expected });
  expect(up).toEqual({ bytes: GiB, sent: GiB, sha256: expected });
  const growthMiB = (peak! - baseline!) / 1024 / 1024;
  console.log(`2 GiB through the proxy in ${seconds.toFixed(2)} s (${((2 * 1024) / seconds).toFixed(0)} MiB/s); proxy RSS +${growthMiB.toFixed(1)} MiB`);
  expect(growthMiB).toBeLessThan(64);
  expect(await child.exited).toBe(0);
}, 30_000);
