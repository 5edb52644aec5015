/** Files, signals, environment on Bun (node: builtins, which Bun implements natively). */
import { watch } from "node:fs";
import { readFile } from "node:fs/promises";
import type { SignalName, Watcher } from "../types.ts";

export const readTextFile = (path: string): Promise<string> => readFile(path, "utf8");

export function watchPath(path: string, onChange: () => void): Watcher {
  const w = watch(path, { recursive: true }, () => onChange());
  w.on("error", () => {}); // a deleted path ends the watch; the source polls as a backstop
  return { [Symbol.dispose]: () => w.close() };
}

export function onSignal(signal: SignalName, handler: () => void): () => void {
  process.on(signal, handler);
  return () => void process.off(signal, handler);
}

export const env = (name: string): string | undefined => process.env[name];
export const exit = (code: number): never => process.exit(code);
