/**
 * Flags + config file -> Config, and reloading the file on change. `loadConfig` reads the file named
 * by `--config` (the read is injected, so tests need no files); `watchConfig` watches it;
 * `reloadConfig` decides what a changed file may change in a running gateway.
 */
import { dirname } from "node:path";
import type { Logger } from "../log.ts";
import { rt } from "../runtime/index.ts";
import { parseConfigFile } from "./file.ts";
import { type Config, type FlagName, type ParsedArgs, flagOfConfigKey, flagSpecs, parseFlags } from "./flags.ts";

/**
 * The outcome of loading: `ParsedArgs`, where `run` also carries the config file's path and an error
 * says whether the flags or the file caused it (`kubegate check` exits 2 for bad flags, 1 for a bad file).
 */
export type LoadedArgs =
  | Exclude<ParsedArgs, { kind: "error" }>
  | { readonly kind: "error"; readonly message: string; readonly origin: "flags" | "file" };

export interface LoadOptions {
  /** The default node name. */
  readonly hostname: string;
  /** The process environment (its `OTEL_*` variables configure tracing); default: none. */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined;
  /** Reads the config file (default: the runtime's). */
  readonly readTextFile?: ((path: string) => Promise<string>) | undefined;
}

/**
 * Parse argv and, with `--config`, the config file: flags override the file, the file overrides the
 * defaults. Every problem is an `error` with a message naming the flag or the file's key path.
 * @example const parsed = await loadConfig(["--config", "kubegate.yaml"], { hostname: "node-a" });
 */
export async function loadConfig(argv: readonly string[], options: LoadOptions): Promise<LoadedArgs> {
  const first = parseFlags(argv, { hostname: options.hostname, env: options.env });
  if (first.kind === "help" || first.kind === "version") return first;
  const path = configPathOf(argv);
  // The file cannot fix a bad flag (flags win), so a flag error is reported without reading it.
  if (first.kind === "error") return { ...first, origin: "flags" };
  if (path === undefined) return first;
  let text: string;
  try {
    text = await (options.readTextFile ?? rt.readTextFile)(path);
  } catch (err) {
    return { kind: "error", message: `Cannot read config file "${path}": ${(err as Error).message}`, origin: "file" };
  }
  const file = parseConfigFile(text, path);
  if (!file.ok) return { kind: "error", message: file.errors.join("\n"), origin: "file" };
  const merged = parseFlags(argv, { hostname: options.hostname, env: options.env, file: { path, values: file.values } });
  return merged.kind === "error" ? { ...merged, origin: "file" } : merged;
}

/** The value of `--config PATH` / `--config=PATH` in argv, if any. */
export function configPathOf(argv: readonly string[]): string | undefined {
  let path: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") break;
    if (a === "--config") path = argv[++i];
    else if (a.startsWith("--config=")) path = a.slice("--config=".length);
  }
  return path;
}

/** Config keys a running gateway applies from a changed file; every other key needs a restart. */
export const hotReloadableKeys: ReadonlySet<keyof Config> = new Set<keyof Config>(["logLevel"]);

/** How a new config differs from the running one. */
export interface ConfigChange {
  /** The config to run with: the running one with the hot-reloadable changes applied. */
  readonly config: Config;
  /** Keys applied now. */
  readonly applied: readonly (keyof Config)[];
  /** Keys that changed but apply only after a restart. */
  readonly restartNeeded: readonly (keyof Config)[];
}

/** Compare two configs key by key (pure). */
export function classifyChange(running: Config, next: Config): ConfigChange {
  const keys = new Set([...Object.keys(running), ...Object.keys(next)]) as Set<keyof Config>;
  const applied: (keyof Config)[] = [];
  const restartNeeded: (keyof Config)[] = [];
  const config: Record<string, unknown> = { ...running };
  for (const key of [...keys].sort()) {
    if (JSON.stringify(running[key]) === JSON.stringify(next[key])) continue;
    if (hotReloadableKeys.has(key)) {
      applied.push(key);
      config[key] = next[key];
    } else {
      restartNeeded.push(key);
    }
  }
  return { config: config as Config, applied, restartNeeded };
}

/** The config file key of a Config key, for messages (`drainGracePeriodMs` -> `drainGracePeriod`). */
export function fileKeyOf(key: keyof Config): string {
  const flag: FlagName | undefined = flagOfConfigKey[key];
  const spec = flag ? (flagSpecs[flag] as { key?: string }) : undefined;
  return spec?.key ?? key;
}

export interface ReloadOptions {
  /** The argv the gateway started with (its flags still override the file). */
  readonly argv: readonly string[];
  readonly hostname: string;
  /** The process environment, as given to {@link loadConfig}. */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined;
  /** The file, as given to `--config`. */
  readonly path: string;
  readonly log: Logger;
  /** Called with the new running config and the keys applied, when any hot-reloadable key changed. */
  readonly onReload: (config: Config, changedKeys: readonly (keyof Config)[]) => void;
  readonly readTextFile?: ((path: string) => Promise<string>) | undefined;
}

/**
 * Re-read the config file and apply what can be applied: returns the new running config. A bad file
 * is logged and changes nothing; a changed restart-only key logs
 * `Config key "x" changed in "kubegate.yaml": restart kubegate to apply it`.
 */
export async function reloadConfig(running: Config, options: ReloadOptions): Promise<Config> {
  const parsed = await loadConfig(options.argv, options);
  if (parsed.kind !== "run") {
    const error = parsed.kind === "error" ? parsed.message : `unexpected ${parsed.kind}`;
    options.log.error(`Config file "${options.path}" not reloaded: the running config is kept`, { error });
    return running;
  }
  const change = classifyChange(running, parsed.config);
  for (const key of change.restartNeeded) {
    options.log.warn(`Config key "${fileKeyOf(key)}" changed in "${options.path}": restart kubegate to apply it`);
  }
  if (change.applied.length) {
    options.log.info(`Config file "${options.path}" reloaded`, { applied: change.applied.map(fileKeyOf) });
    options.onReload(change.config, change.applied);
  }
  return change.config;
}

/** A running {@link watchConfig}. */
export interface ConfigWatcher extends Disposable {
  /** Resolves once the content to compare against has been read (a change before that may be missed). */
  readonly ready: Promise<void>;
}

/**
 * Watch a config file: `onChange` runs (debounced) when its content changes. Watches the directory,
 * so an editor's rename-into-place and a ConfigMap's `..data` symlink swap are both seen.
 */
export function watchConfig(path: string, onChange: () => void, options: { debounceMs?: number } = {}): ConfigWatcher {
  const debounceMs = options.debounceMs ?? 100;
  let last: Promise<string | undefined> = rt.readTextFile(path).catch(() => undefined);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const check = () => {
    const previous = last;
    last = rt.readTextFile(path).catch(() => undefined);
    void Promise.all([previous, last]).then(([before, now]) => {
      if (!closed && now !== undefined && now !== before) onChange();
    });
  };
  const watcher = rt.watchPath(dirname(path), () => {
    clearTimeout(timer);
    timer = setTimeout(check, debounceMs);
  });
  return {
    ready: last.then(() => {}),
    [Symbol.dispose]() {
      closed = true;
      clearTimeout(timer);
      watcher[Symbol.dispose]();
    },
  };
}
