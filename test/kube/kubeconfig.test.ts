import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { KubeConfigError, loadKubeConfig } from "../../src/kube/kubeconfig.ts";

const dir = mkdtempSync(join(tmpdir(), "kubegate-kc-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const plugin = join(import.meta.dir, "fixtures", "exec-plugin.sh");
const b64 = (s: string) => Buffer.from(s).toString("base64");
const noEnv = () => undefined;
let n = 0;

async function write(doc: unknown, name = `kc-${++n}.yaml`): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, typeof doc === "string" ? doc : stringify(doc));
  return path;
}

function config(opts: { name?: string; server?: string; cluster?: object; user?: object; current?: string | null }) {
  const name = opts.name ?? "one";
  return {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name, cluster: { server: opts.server ?? "https://127.0.0.1:6443/", ...opts.cluster } }],
    users: [{ name, user: opts.user ?? {} }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: `ns-${name}` } }],
    ...(opts.current === null ? {} : { "current-context": opts.current ?? name }),
  };
}

describe("loadKubeConfig", () => {
  test("an explicit path: server, TLS material and a static token", async () => {
    const path = await write(
      config({
        cluster: { "certificate-authority-data": b64("CA PEM"), "tls-server-name": "api.internal" },
        user: { "client-certificate-data": b64("CERT PEM"), "client-key-data": b64("KEY PEM"), token: "s3cret" },
      }),
    );
    const conn = await loadKubeConfig({ path, env: noEnv });
    expect(conn.server).toBe("https://127.0.0.1:6443");
    expect(conn.tls).toEqual({ ca: "CA PEM", cert: "CERT PEM", key: "KEY PEM", serverName: "api.internal" });
    expect(conn.origin).toEqual({ source: `kubeconfig "${path}"`, context: "one", cluster: "one", user: "one" });
    expect(conn.namespace).toBe("ns-one");
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer s3cret" } });
    expect(conn.auth.invalidate()).toBe(false);
  });

  test("CA and client certificate files are read, relative to the kubeconfig", async () => {
    await mkdir(join(dir, "pki"), { recursive: true });
    await writeFile(join(dir, "pki", "ca.crt"), "CA FROM FILE");
    await writeFile(join(dir, "pki", "c.crt"), "CERT FROM FILE");
    await writeFile(join(dir, "pki", "c.key"), "KEY FROM FILE");
    const path = await write(
      config({
        cluster: { "certificate-authority": "pki/ca.crt", "insecure-skip-tls-verify": true },
        user: { "client-certificate": "pki/c.crt", "client-key": "pki/c.key" },
      }),
    );
    const conn = await loadKubeConfig({ path, env: noEnv });
    expect(conn.tls).toEqual({ ca: "CA FROM FILE", cert: "CERT FROM FILE", key: "KEY FROM FILE", rejectUnauthorized: false });
    expect(conn.auth.description).toBe("a client certificate");
  });

  test("KUBECONFIG lists files merged like kubectl: the first to define a name wins", async () => {
    const a = await write(config({ name: "a", server: "https://a.example:6443" }));
    const b = await write({
      ...config({ name: "b", server: "https://b.example:6443", current: "b" }),
      clusters: [
        { name: "a", cluster: { server: "https://shadowed.example" } },
        { name: "b", cluster: { server: "https://b.example:6443" } },
      ],
    });
    const env = (k: string) => (k === "KUBECONFIG" ? `${join(dir, "missing.yaml")}:${a}:${b}` : undefined);
    const conn = await loadKubeConfig({ env });
    expect(conn.server).toBe("https://a.example:6443");
    expect(conn.origin.source).toBe(`kubeconfig "${a}", "${b}"`);
    const other = await loadKubeConfig({ env, context: "b" });
    expect(other.server).toBe("https://b.example:6443");
  });

  test("~/.kube/config when nothing else is given", async () => {
    const home = join(dir, "home");
    await mkdir(join(home, ".kube"), { recursive: true });
    await writeFile(join(home, ".kube", "config"), stringify(config({ server: "https://home.example" })));
    const conn = await loadKubeConfig({ env: noEnv, homeDir: home });
    expect(conn.server).toBe("https://home.example");
  });

  test("in-cluster: service host and port, CA, rotating token file, namespace", async () => {
    const sa = join(dir, "sa");
    await mkdir(sa, { recursive: true });
    await writeFile(join(sa, "token"), "tok-1\n");
    await writeFile(join(sa, "ca.crt"), "SA CA");
    await writeFile(join(sa, "namespace"), "kube-system");
    const env = (k: string) => ({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "6443" })[k];
    const conn = await loadKubeConfig({ env, homeDir: join(dir, "nowhere"), serviceAccountDir: sa });
    expect(conn.server).toBe("https://[fd00::1]:6443");
    expect(conn.tls).toEqual({ ca: "SA CA" });
    expect(conn.namespace).toBe("kube-system");
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer tok-1" } });
    await writeFile(join(sa, "token"), "tok-2\n");
    // Cached until it is stale or rejected.
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer tok-1" } });
    expect(conn.auth.invalidate()).toBe(true);
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer tok-2" } });
  });

  test("a token file is re-read once older than tokenFileMaxAgeMs", async () => {
    const tokenFile = join(dir, "age-token");
    await writeFile(tokenFile, "old");
    const path = await write(config({ user: { tokenFile: "age-token" } }));
    const conn = await loadKubeConfig({ path, env: noEnv, tokenFileMaxAgeMs: 0 });
    expect(conn.auth.description).toBe(`token file "${tokenFile}"`);
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer old" } });
    await writeFile(tokenFile, "new");
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer new" } });
  });

  test("an exec plugin is run once, reused until it expires, and re-run after invalidate", async () => {
    const tokenFile = join(dir, "exec-token");
    await writeFile(tokenFile, "exec-1");
    const path = await write(config({ user: { exec: { apiVersion: "client.authentication.k8s.io/v1", command: plugin, args: [tokenFile] } } }));
    const conn = await loadKubeConfig({ path, env: noEnv });
    expect(conn.auth.description).toBe(`exec plugin "${plugin}"`);
    const [first, second] = await Promise.all([conn.auth.credentials(), conn.auth.credentials()]);
    expect(first).toEqual({ headers: { authorization: "Bearer exec-1" } });
    expect(second).toEqual(first);
    expect(await conn.auth.credentials()).toEqual(first);
    expect((await readFile(`${tokenFile}.calls`, "utf8")).split("\n").filter(Boolean)).toHaveLength(1);
    await writeFile(tokenFile, "exec-2");
    expect(conn.auth.invalidate()).toBe(true);
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer exec-2" } });
    expect((await readFile(`${tokenFile}.calls`, "utf8")).split("\n").filter(Boolean)).toHaveLength(2);
  });

  test("an expired exec credential is fetched again", async () => {
    const tokenFile = join(dir, "exec-expiring");
    await writeFile(tokenFile, "short-1");
    const path = await write(config({ user: { exec: { command: plugin, args: [tokenFile, "0"] } } }));
    const conn = await loadKubeConfig({ path, env: noEnv });
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer short-1" } });
    await writeFile(tokenFile, "short-2");
    expect(await conn.auth.credentials()).toEqual({ headers: { authorization: "Bearer short-2" } });
  });

  test("a failing exec plugin is reported with its stderr", async () => {
    const path = await write(config({ user: { exec: { command: plugin, args: [join(dir, "no-such-token")] } } }));
    const conn = await loadKubeConfig({ path, env: noEnv });
    await expect(conn.auth.credentials()).rejects.toThrow(
      `Cannot get credentials from exec plugin "${plugin}": it exited with code 1: exec-plugin: cannot read token file ${join(dir, "no-such-token")}`,
    );
  });

  test.each([
    ["no kubeconfig anywhere", {}, "Cannot find a kubeconfig: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config, or run in a pod with a service account"],
    ["a missing explicit file", { path: "/nonexistent/kubeconfig" }, 'Cannot read kubeconfig "/nonexistent/kubeconfig": no such file'],
  ])("%s is a clear error", async (_name, opts, message) => {
    const err = await loadKubeConfig({ env: noEnv, homeDir: join(dir, "nowhere"), serviceAccountDir: join(dir, "nowhere"), ...opts }).catch((e) => e);
    expect(err).toBeInstanceOf(KubeConfigError);
    expect(err.message).toBe(message);
  });

  test("an unknown context and a missing current-context are clear errors", async () => {
    const path = await write(config({ current: null }));
    await expect(loadKubeConfig({ path, env: noEnv })).rejects.toThrow(
      `Cannot load kubeconfig "${path}": no current-context is set (pass a context or run "kubectl config use-context")`,
    );
    await expect(loadKubeConfig({ path, env: noEnv, context: "prod" })).rejects.toThrow(
      `Cannot use context "prod": kubeconfig "${path}" does not define it`,
    );
  });

  test("malformed YAML names the file", async () => {
    const path = await write("clusters: [unclosed\n");
    await expect(loadKubeConfig({ path, env: noEnv })).rejects.toThrow(`Cannot parse kubeconfig "${path}":`);
  });
});
