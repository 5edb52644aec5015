/**
 * The Deno port's file descriptor limit (`src/runtime/deno/files.ts`): RLIMIT_NOFILE through `Deno.dlopen`
 * (libc's getrlimit/setrlimit), the open descriptor count, and a listen that finds no descriptor failing with
 * code EMFILE (Deno names it itself), under `ulimit -n` in a child process.
 * Run by scripts/test.sh: `deno test -A --unstable-net --config tsconfig.deno.json test/runtime/deno/file-limit.deno.ts`.
 */
import assert from "node:assert/strict";
import { parseProcLimits } from "../../../src/runtime/file-limit.ts";
import * as files from "../../../src/runtime/deno/files.ts";

Deno.test("fileLimit is RLIMIT_NOFILE as /proc/self/limits shows it; raiseFileLimit leaves it at the hard limit", () => {
  const limit = files.fileLimit();
  assert.deepEqual(limit, parseProcLimits(Deno.readTextFileSync("/proc/self/limits")));
  // Deno raises the soft limit to the hard one as it starts: nothing left to raise.
  assert.deepEqual(files.raiseFileLimit(), { before: limit, after: { soft: limit!.hard, hard: limit!.hard } });
});

Deno.test("openFiles counts /proc/self/fd and sees a new listener", () => {
  const before = files.openFiles()!;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    assert.equal(files.openFiles(), before + 1);
  } finally {
    listener.close();
  }
});

Deno.test("under `ulimit -n 40` the limit reads 40 and a listen past it fails with EMFILE", async () => {
  const script = `
    import * as files from "./src/runtime/deno/files.ts";
    const out = { limit: files.fileLimit(), bound: 0, code: undefined };
    const held = [];
    try { for (let i = 0; i < 100; i++) (held.push(Deno.listen({ hostname: "127.0.0.1", port: 0 })), out.bound++); }
    catch (err) { out.code = err.code; }
    console.log(JSON.stringify(out));
  `;
  const root = new URL("../../..", import.meta.url).pathname;
  const { code, stdout, stderr } = await new Deno.Command("bash", {
    args: ["-c", `ulimit -n 40; exec "${Deno.execPath()}" eval --ext=ts '${script}'`],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  const out = JSON.parse(new TextDecoder().decode(stdout));
  assert.deepEqual(out.limit, { soft: 40, hard: 40 });
  assert.ok(out.bound > 0 && out.bound < 40);
  assert.equal(out.code, "EMFILE");
});
