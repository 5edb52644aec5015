import { describe, expect, test } from "bun:test";
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Config } from "../../src/config/flags.ts";
import { classifyChange, configPathOf, hotReloadableKeys, loadConfig, reloadConfig, watchConfig } from "../../src/config/load.ts";
import type { Logger } from "../../src/log.ts";

/** loadConfig with an in-memory file system. */
const load = (argv: string[], files: Record<string, string>) =>
  loadConfig(argv, {
    hostname: "host-1",
    readTextFile: async (p) => {
      if (!(p in files)) throw new Error(`ENOENT: no such file "${p}"`);
      return files[p]!;
    },
  });

const configOf = async (argv: string[], files: Record<string, string>): Promise<Config> => {
  const r = await load(argv, files);
  if (r.kind !== "run") throw new Error(`Expected a config, got ${JSON.stringify(r)}`);
  return r.config;
};

function captureLog() {
  const lines: { level: string; msg: string; fields?: unknown }[] = [];
  const at = (level: string) => (msg: string, fields?: unknown) => void lines.push({ level, msg, fields });
  const log: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  return { log, lines };
}

describe("loadConfig: flags > file > defaults", () => {
  const file = "nodePortAddresses: [127.0.0.0/8]\nlogLevel: warn\ndrainGracePeriod: 5s\nallServices: true\nlbClaimUnclassed: false\n";

  test("the file overrides the defaults", async () => {
    const c = await configOf(["--config", "k.yaml"], { "k.yaml": file });
    expect(c).toMatchObject({ nodePortAddresses: ["127.0.0.0/8"], logLevel: "warn", drainGracePeriodMs: 5000, allServices: true, lbClaimUnclassed: false });
    expect(c.serviceProxyName).toBe("kubegate"); // default, not in the file
  });

  test("flags override the file, booleans in both directions", async () => {
    const c = await configOf(
      ["--config=k.yaml", "--log-level", "debug", "--nodeport-addresses", "10.0.0.0/8", "--lb-claim-unclassed", "--drain-grace-period", "1s"],
      { "k.yaml": file },
    );
    expect(c).toMatchObject({ nodePortAddresses: ["10.0.0.0/8"], logLevel: "debug", drainGracePeriodMs: 1000, allServices: true, lbClaimUnclassed: true });
    const off = await configOf(["--config", "k.yaml", "--no-lb-claim-unclassed"], { "k.yaml": "lbClaimUnclassed: true" });
    expect(off.lbClaimUnclassed).toBe(false);
  });

  test("run carries the config file path", async () => {
    const r = await load(["--config", "k.yaml"], { "k.yaml": "" });
    expect(r.kind === "run" && r.configFile).toBe("k.yaml");
    expect(configPathOf(["--log-level", "info", "--config", "a.yaml"])).toBe("a.yaml");
    expect(configPathOf(["--config=b.yaml"])).toBe("b.yaml");
    expect(configPathOf(["--", "--config", "c.yaml"])).toBeUndefined();
  });

  test("errors say where they come from: the file's key path, or the flag", async () => {
    const bad = await load(["--config", "k.yaml"], { "k.yaml": 'nodePortAddresses: ["127.0.0.0/8", "10.0.0.0/33"]\nnodeportAddresses: []' });
    expect(bad).toEqual({
      kind: "error",
      origin: "file",
      message: [
        'Invalid config "k.yaml": Unknown key "nodeportAddresses" (did you mean "nodePortAddresses"?)',
        'Invalid config "k.yaml": at "nodePortAddresses[1]": expected a CIDR, got "10.0.0.0/33"',
      ].join("\n"),
    });
    const flag = await load(["--config", "k.yaml", "--log-level", "loud"], { "k.yaml": "" });
    expect(flag.kind === "error" && [flag.origin, flag.message.split("\n")[0]]).toEqual(["flags", 'Invalid --log-level "loud": Invalid type: Expected ("debug" | "info" | "warn" | "error") but received "loud"']);
    const missing = await load(["--config", "nope.yaml"], {});
    expect(missing.kind === "error" && [missing.origin, missing.message]).toEqual(["file", 'Cannot read config file "nope.yaml": ENOENT: no such file "nope.yaml"']);
  });

  test("a conflict between the file and a flag names both", async () => {
    const r = await load(["--config", "k.yaml", "--kubeconfig", "kc"], { "k.yaml": "manifests: deploy/demo" });
    expect(r.kind === "error" && r.message).toBe('Options --kubeconfig and manifests in "k.yaml" are exclusive: pick one source');
  });
});

describe("reload", () => {
  const base = async (text: string) => configOf(["--config", "k.yaml", "--hostname-override", "n"], { "k.yaml": text });

  test("only logLevel is hot-reloadable; everything else needs a restart", async () => {
    expect([...hotReloadableKeys]).toEqual(["logLevel"]);
    const a = await base("logLevel: info\nnodePortAddresses: 127.0.0.0/8\ndrainGracePeriod: 30s");
    const b = await base("logLevel: debug\nnodePortAddresses: 10.0.0.0/8\ndrainGracePeriod: 10s\nallServices: true");
    const change = classifyChange(a, b);
    expect(change.applied).toEqual(["logLevel"]);
    expect(change.restartNeeded).toEqual(["allServices", "drainGracePeriodMs", "nodePortAddresses"]);
    expect(change.config).toEqual({ ...a, logLevel: "debug" });
    expect(classifyChange(a, a)).toEqual({ config: a, applied: [], restartNeeded: [] });
  });

  test("reloadConfig applies logLevel, warns about restart-only keys by their file key, keeps flags winning", async () => {
    const argv = ["--config", "k.yaml", "--hostname-override", "n", "--service-proxy-name", "edge"];
    const files: Record<string, string> = { "k.yaml": "logLevel: info\ndrainGracePeriod: 30s" };
    const readTextFile = async (p: string) => files[p]!;
    const running = await configOf(argv, files);
    files["k.yaml"] = "logLevel: debug\ndrainGracePeriod: 10s\nserviceProxyName: other"; // serviceProxyName: the flag still wins
    const { log, lines } = captureLog();
    const reloads: [Config, readonly string[]][] = [];
    const next = await reloadConfig(running, { argv, hostname: "h", path: "k.yaml", log, readTextFile, onReload: (c, k) => void reloads.push([c, k]) });
    expect(next).toEqual({ ...running, logLevel: "debug" });
    expect(reloads).toEqual([[next, ["logLevel"]]]);
    expect(lines.filter((l) => l.level === "warn").map((l) => l.msg)).toEqual([
      'Config key "drainGracePeriod" changed in "k.yaml": restart kubegate to apply it',
    ]);
  });

  test("a bad file on reload is logged and changes nothing", async () => {
    const files: Record<string, string> = { "k.yaml": "logLevel: info" };
    const running = await configOf(["--config", "k.yaml"], files);
    files["k.yaml"] = "logLevel: loud";
    const { log, lines } = captureLog();
    let called = false;
    const next = await reloadConfig(running, { argv: ["--config", "k.yaml"], hostname: "host-1", path: "k.yaml", log, readTextFile: async (p) => files[p]!, onReload: () => void (called = true) });
    expect(next).toBe(running);
    expect(called).toBe(false);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.msg).toBe('Config file "k.yaml" not reloaded: the running config is kept');
    expect(JSON.stringify(lines[0]!.fields)).toContain('at \\"logLevel\\": expected debug, info, warn or error');
  });

  test("watchConfig fires on a content change, also when the file is replaced by rename, not on a touch", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kubegate-config-"));
    await using _ = { [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
    const path = join(dir, "kubegate.yaml");
    await writeFile(path, "logLevel: info\n");
    let changes = 0;
    let signal = Promise.withResolvers<void>();
    using watcher = watchConfig(path, () => {
      changes++;
      signal.resolve();
    }, { debounceMs: 20 });
    const next = async (what: string) => {
      const timeout = setTimeout(() => signal.reject(new Error(`No change seen after ${what} within 3 s`)), 3000);
      await signal.promise.finally(() => clearTimeout(timeout));
      signal = Promise.withResolvers<void>();
    };
    await watcher.ready;
    await writeFile(path, "logLevel: debug\n");
    await next("a write");
    expect(changes).toBe(1);
    await writeFile(join(dir, "tmp.yaml"), "logLevel: warn\n");
    await rename(join(dir, "tmp.yaml"), path);
    await next("a rename into place");
    expect(changes).toBe(2);
    // Same content again: a watch event, but no change. Followed by a real change that must be the third.
    await writeFile(path, "logLevel: warn\n");
    await writeFile(join(dir, "other.txt"), "x");
    await Bun.sleep(100); // a window for a wrong call (asserting that nothing happens needs one)
    await writeFile(path, "logLevel: error\n");
    await next("a second write");
    expect(changes).toBe(3);
  });
});
