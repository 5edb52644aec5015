/** Child processes with a message channel on Bun (`Bun.spawn` with `ipc`; the child uses `process.send`). */
import type { ChildProcess, ParentChannel, SpawnChildOptions } from "../types.ts";

export function spawnChild(options: SpawnChildOptions): ChildProcess {
  const proc = Bun.spawn([...options.cmd], {
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "inherit", "inherit"],
    serialization: "json",
    ipc: (message) => options.onMessage(message),
  });
  return {
    pid: proc.pid,
    send(message) {
      try {
        proc.send(message);
        return true;
      } catch {
        return false;
      }
    },
    kill: (signal = "SIGTERM") => proc.kill(signal),
    exited: proc.exited,
  };
}

export function parentChannel(): ParentChannel | undefined {
  if (typeof process.send !== "function") return undefined;
  return {
    send: (message) => void process.send!(message),
    onMessage: (handler) => void process.on("message", handler),
    onDisconnect: (handler) => void process.once("disconnect", handler),
  };
}

export const execPath = process.execPath;
