/** Files, signals, environment on Deno. */
import type { SignalName, Watcher } from "../types.ts";

interface DenoFsWatcher extends AsyncIterable<unknown> {
  close(): void;
}
interface DenoNs {
  readTextFile(path: string): Promise<string>;
  watchFs(paths: string, options?: { recursive?: boolean }): DenoFsWatcher;
  addSignalListener(signal: SignalName, handler: () => void): void;
  removeSignalListener(signal: SignalName, handler: () => void): void;
  env: { get(name: string): string | undefined };
  exit(code?: number): never;
}
const Deno = (globalThis as unknown as { Deno: DenoNs }).Deno;

export const readTextFile = (path: string): Promise<string> => Deno.readTextFile(path);

export function watchPath(path: string, onChange: () => void): Watcher {
  let watcher: DenoFsWatcher | undefined;
  try {
    watcher = Deno.watchFs(path, { recursive: true });
  } catch {
    // A missing path cannot be watched; the source polls as a backstop.
    return { [Symbol.dispose]: () => {} };
  }
  const w = watcher;
  (async () => {
    try {
      for await (const _ of w) onChange();
    } catch {
      // The watch ended (path deleted or closed); the source polls as a backstop.
    }
  })();
  return {
    [Symbol.dispose]: () => {
      try {
        w.close();
      } catch {
        // Already closed.
      }
    },
  };
}

export function onSignal(signal: SignalName, handler: () => void): () => void {
  Deno.addSignalListener(signal, handler);
  return () => {
    try {
      Deno.removeSignalListener(signal, handler);
    } catch {
      // Already removed.
    }
  };
}

export function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
}

export const exit = (code: number): never => Deno.exit(code);
