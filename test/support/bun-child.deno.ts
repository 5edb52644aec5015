/**
 * For Deno suites: a Bun script as a child process that prints ONE JSON line once ready (the test API server, the
 * port-forward emulation), read here; disposing the result stops the child. Bun from node_modules, else from PATH.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * Start `bun <script> ...args` (script relative to the repository root) and resolve with its first stdout line parsed.
 * @example await using api = await startBunChild<{ url: string }>("test/support/apiserver-main.ts", ["--port", "0"], "The test API server");
 */
export async function startBunChild<T extends object>(script: string, args: readonly string[], what: string): Promise<T & AsyncDisposable> {
  const localBun = join(root, "node_modules", ".bin", "bun");
  const bun = (await Deno.stat(localBun).then(() => true, () => false)) ? localBun : "bun";
  const child = new Deno.Command(bun, { args: [join(root, script), ...args], cwd: root, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`${what} exited before printing its address: ${JSON.stringify(text)}`);
    text += decoder.decode(value, { stream: true });
  }
  reader.releaseLock();
  return {
    ...(JSON.parse(text.slice(0, text.indexOf("\n"))) as T),
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.stdout.cancel().catch(() => {});
      await child.status;
    },
  };
}
