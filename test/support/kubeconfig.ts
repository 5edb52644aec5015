/**
 * Kubeconfig YAML for tests: one cluster, one user, one context, in the shape `kubectl config view --raw`
 * prints, with the credential variants kubegate must read (client cert, token, tokenFile, exec plugin).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";

/** An exec credential plugin entry (client.authentication.k8s.io/v1). */
export interface KubeconfigExec {
  readonly command: string;
  readonly args?: readonly string[];
  readonly env?: readonly { readonly name: string; readonly value: string }[];
}

/** What goes into a test kubeconfig. */
export interface KubeconfigSpec {
  /** Server URL, e.g. `https://127.0.0.1:6443`. */
  readonly server: string;
  /** CA certificate PEM; omitted for plain HTTP. */
  readonly ca?: string | undefined;
  readonly clientCert?: string | undefined;
  readonly clientKey?: string | undefined;
  readonly token?: string | undefined;
  readonly tokenFile?: string | undefined;
  readonly exec?: KubeconfigExec | undefined;
  /** Default namespace of the context. */
  readonly namespace?: string | undefined;
  /** Name used for the cluster, user and context (default `kubegate-test`). */
  readonly name?: string | undefined;
  readonly insecureSkipTlsVerify?: boolean | undefined;
}

const b64 = (text: string): string => Buffer.from(text, "utf8").toString("base64");

/** Render a kubeconfig as YAML text. */
export function kubeconfigYaml(spec: KubeconfigSpec): string {
  const name = spec.name ?? "kubegate-test";
  const cluster: Record<string, unknown> = { server: spec.server };
  if (spec.ca) cluster["certificate-authority-data"] = b64(spec.ca);
  if (spec.insecureSkipTlsVerify) cluster["insecure-skip-tls-verify"] = true;
  const user: Record<string, unknown> = {};
  if (spec.clientCert && spec.clientKey) {
    user["client-certificate-data"] = b64(spec.clientCert);
    user["client-key-data"] = b64(spec.clientKey);
  }
  if (spec.token) user["token"] = spec.token;
  if (spec.tokenFile) user["tokenFile"] = spec.tokenFile;
  if (spec.exec) {
    user["exec"] = {
      apiVersion: "client.authentication.k8s.io/v1",
      command: spec.exec.command,
      ...(spec.exec.args ? { args: [...spec.exec.args] } : {}),
      ...(spec.exec.env ? { env: spec.exec.env.map((e) => ({ name: e.name, value: e.value })) } : {}),
      interactiveMode: "Never",
      provideClusterInfo: false,
    };
  }
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    preferences: {},
    clusters: [{ name, cluster }],
    users: [{ name, user }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: spec.namespace ?? "default" } }],
    "current-context": name,
  });
}

let workDir: string | undefined;
let counter = 0;

/** Write kubeconfig text to a fresh file in a per-process temp dir (removed at exit); returns its path. */
export async function writeKubeconfigFile(text: string, fileName?: string): Promise<string> {
  if (!workDir) {
    const made = mkdtempSync(join(tmpdir(), "kubegate-kubeconfig-"));
    workDir = made;
    process.once("exit", () => rmSync(made, { recursive: true, force: true }));
  }
  const path = join(workDir, fileName ?? `kubeconfig-${++counter}.yaml`);
  await writeFile(path, text, { mode: 0o600 });
  return path;
}
