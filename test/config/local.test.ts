/** `--local` (the laptop preset), `--endpoint-access` and `--lb-port-offset`. */
import { expect, test } from "bun:test";
import { parseConfigFile } from "../../src/config/file.ts";
import { flagSpecs, LOCAL_DEFAULTS, parseFlags } from "../../src/config/flags.ts";

const parse = (argv: string[], file?: Record<string, unknown>) => {
  const values = file === undefined ? undefined : parseConfigFile(JSON.stringify(file), "k.json");
  if (values !== undefined && !values.ok) throw new Error(values.errors.join("\n"));
  return parseFlags(argv, { hostname: "laptop", ...(values?.ok ? { file: { path: "k.json", values: values.values } } : {}) });
};
const run = (argv: string[], file?: Record<string, unknown>) => {
  const r = parse(argv, file);
  if (r.kind !== "run") throw new Error(`Expected a config, got ${JSON.stringify(r)}`);
  return r.config;
};
const error = (argv: string[]) => {
  const r = parse(argv);
  if (r.kind !== "error") throw new Error(`Expected an error, got ${r.kind}`);
  return r.message;
};

test("--local: no Node, every Service, loopback, one process, no hand-over, auto access", () => {
  const c = run(["--local"]);
  expect({
    local: c.local,
    nodeName: c.nodeName,
    allServices: c.allServices,
    hostAddresses: c.hostAddresses,
    healthz: c.healthzBindAddress,
    admin: c.metricsBindAddress,
    endpointAccess: c.endpointAccess,
    workers: c.workers,
    handoverSocket: c.handoverSocket,
    lbPortOffset: c.lbPortOffset,
  }).toEqual({
    local: true,
    nodeName: "",
    allServices: true,
    hostAddresses: ["127.0.0.1"],
    healthz: { host: "127.0.0.1", port: 10356 },
    admin: { host: "127.0.0.1", port: 10349 },
    endpointAccess: "auto",
    workers: 1,
    handoverSocket: "none",
    lbPortOffset: 0,
  });
});

test("--local's defaults give way to flags and to the config file", () => {
  const c = run(["--local", "--endpoint-access", "port-forward", "--workers", "2", "--lb-port-offset", "8000"], { hostAddresses: ["127.0.0.2"], local: true });
  expect([c.endpointAccess, c.workers, c.lbPortOffset, c.hostAddresses]).toEqual(["port-forward", 2, 8000, ["127.0.0.2"]]);
  expect(run([], { local: true }).endpointAccess).toBe("auto");
  expect(run(["--no-local"], { local: true }).allServices).toBe(false);
  // every preset key is a flag with a config key (so it can be given either way)
  for (const name of Object.keys(LOCAL_DEFAULTS)) expect((flagSpecs as Record<string, { key?: string }>)[name]?.key).toBeString();
});

test("without --local: direct access, a node name, offsets and modes validated", () => {
  const c = run([]);
  expect([c.local, c.endpointAccess, c.lbPortOffset, c.nodeName]).toEqual([false, "direct", 0, "laptop"]);
  expect(run(["--endpoint-access=auto", "--kubeconfig", "k"]).endpointAccess).toBe("auto");
  expect(error(["--endpoint-access", "tunnel"])).toBe('Invalid --endpoint-access "tunnel": Expected direct, port-forward or auto');
  expect(error(["--lb-port-offset", "70000"])).toContain("Invalid --lb-port-offset");
  expect(error(["--hostname-override", ""])).toBe('Invalid --hostname-override "": a node name is needed (empty only with --local, which watches no Node)');
  expect(error(["--manifests", "deploy/demo", "--endpoint-access", "port-forward"])).toBe(
    "Option --endpoint-access port-forward reaches pods through an API server: it cannot be used with --manifests",
  );
});

test("the config file takes endpointAccess and lbPortOffset and names a wrong mode", () => {
  expect(run([], { endpointAccess: "port-forward", lbPortOffset: 8000 }).lbPortOffset).toBe(8000);
  const bad = parseConfigFile(JSON.stringify({ endpointAccess: "vpn" }), "k.json");
  expect(bad.ok ? [] : bad.errors).toEqual([expect.stringContaining('expected direct, port-forward or auto')]);
});
