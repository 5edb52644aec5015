/**
 * `npm run demo` end to end, as a user runs it: a child process that prints what to curl; every
 * printed URL answers; SIGTERM stops it cleanly.
 */
import { expect, test } from "bun:test";
import { fileURLToPath } from "node:url";
import { tcpExchange } from "../support/child-io.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** Read a child's stdout until `marker` appears; returns all text so far. */
async function readUntil(stream: ReadableStream<Uint8Array>, marker: string, timeoutMs: number): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const timer = setTimeout(() => reader.cancel(`no "${marker}" within ${timeoutMs} ms; got: ${text}`), timeoutMs);
  try {
    while (!text.includes(marker)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`Demo output ended before "${marker}": ${text}`);
      text += decoder.decode(value, { stream: true });
    }
    return text;
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}


test("npm run demo serves the URLs it prints and stops on SIGTERM", async () => {
  const child = Bun.spawn(["npm", "run", "--silent", "demo", "--", "--log-level", "warn"], {
    cwd: root,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, PATH: `${root}/node_modules/.bin:${process.env.PATH}` },
  });
  let demoPid = 0; // npm's child; killed too if the test fails midway, so nothing is left behind
  await using _ = {
    [Symbol.asyncDispose]: async () => {
      if (demoPid) try { process.kill(demoPid, "SIGKILL"); } catch {}
      child.kill("SIGKILL");
      await child.exited;
    },
  };

  const banner = await readUntil(child.stdout, "to stop.", 30_000).catch(async (err: Error) => {
    child.kill("SIGKILL");
    throw new Error(`${err.message}\nstderr: ${await new Response(child.stderr).text()}`);
  });
  demoPid = Number(/SIGTERM to pid (\d+)/.exec(banner)?.[1]);
  const httpUrls = [...banner.matchAll(/curl (http:\/\/[^\s]+)/g)].map((m) => m[1]!);
  expect(httpUrls).toContain("http://127.0.0.1:30080/");

  // The HTTP entrypoint round-robins over both demo backends.
  const backends = new Set<string>();
  for (let i = 0; i < 4; i++) {
    const res = await fetch("http://127.0.0.1:30080/");
    expect(res.status).toBe(200);
    backends.add(res.headers.get("x-backend")!);
  }
  expect([...backends].sort()).toEqual(["web-1", "web-2"]);

  // Every printed admin/health URL answers 200.
  for (const url of httpUrls) expect((await fetch(url)).status).toBe(200);
  const snap = (await (await fetch("http://127.0.0.1:10349/api/snapshot")).json()) as { entrypoints: { name: string }[] };
  expect(snap.entrypoints.map((e) => e.name).sort()).toEqual(["demo/echo:tcp", "demo/web:http"]);

  // The TCP entrypoint echoes.
  expect(banner).toContain("127.0.0.1 30090");
  expect(await tcpExchange(30090, "hello kubegate\n")).toBe("hello kubegate\n");

  // SIGTERM to the demo process (the pid it prints) drains it; it exits 0, and so does npm.
  expect(demoPid).toBeGreaterThan(0);
  process.kill(demoPid, "SIGTERM");
  expect(await child.exited).toBe(0);
});
