/**
 * Where the API server is and how to authenticate to it: kubeconfig (explicit path, `$KUBECONFIG`,
 * `~/.kube/config`) or the in-cluster service account.
 *
 * @kubernetes/client-node's kubeconfig types (`config_types`) validate and normalize the clusters,
 * users and contexts; the files are merged and the context picked here, like kubectl. The credentials
 * are handled here too because client-node's are not refreshable: it reads `token-file` once at load
 * (and ignores kubectl's `tokenFile`), and caches exec credentials with no way to drop them after a 401.
 * Here a token file is re-read every minute and after a 401 (rotated projected service-account tokens),
 * and an exec plugin is re-run when its credential expires and after a 401.
 *
 * Start-up cost: client-node's package entry point loads its whole generated API (about 0.7 s of CPU
 * and 50 MiB), so only `dist/config_types.js` is imported, and only when a kubeconfig file is read; the
 * full package is imported for auth providers (oidc, gcp, azure) alone. A `--manifests` run loads none of it.
 */
import { execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import process from "node:process";
import type { Cluster, Context, User } from "@kubernetes/client-node/dist/config_types.js";
import { parse as parseYaml } from "yaml";
import { rt, type TlsClientOptions } from "../runtime/index.ts";

/** Where the in-cluster service account is mounted. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** The credentials to send with one request. */
export interface Credentials {
  /** Extra request headers (`Authorization`). */
  readonly headers: Readonly<Record<string, string>>;
  /** A client certificate from an exec plugin (overrides the kubeconfig's). */
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
}

/** A source of credentials that can be refreshed after the API server rejects them. */
export interface Authenticator {
  /** Where the credentials come from, for messages: `token file "/var/run/.../token"`. */
  readonly description: string;
  /** The current credentials (cached; re-read or re-run when stale). */
  credentials(): Promise<Credentials>;
  /**
   * The API server answered 401 with the last credentials: forget them. Returns true when fetching
   * them again may help (a file or plugin), false for static credentials.
   */
  invalidate(): boolean;
}

/** Everything needed to talk to one API server. */
export interface KubeConnection {
  /** `https://host:port` without a trailing slash. */
  readonly server: string;
  readonly tls: TlsClientOptions;
  readonly auth: Authenticator;
  /** Where this came from, for error messages. */
  readonly origin: {
    /** The kubeconfig path(s), or `in-cluster service account`. */
    readonly source: string;
    readonly context: string;
    readonly cluster: string;
    readonly user: string;
  };
  /** The context's default namespace. */
  readonly namespace?: string | undefined;
}

export interface LoadKubeConfigOptions {
  /** An explicit kubeconfig file (`--kubeconfig`); wins over everything else. */
  readonly path?: string | undefined;
  /** A context other than `current-context`. */
  readonly context?: string | undefined;
  /** Environment lookup (default: the process environment). */
  readonly env?: ((name: string) => string | undefined) | undefined;
  /** Home directory for `~/.kube/config` (default: the user's). */
  readonly homeDir?: string | undefined;
  /** The in-cluster service-account directory (default {@link SERVICE_ACCOUNT_DIR}). */
  readonly serviceAccountDir?: string | undefined;
  /** How long a token file's content is used before it is read again (default 60 000 ms). */
  readonly tokenFileMaxAgeMs?: number | undefined;
  /** How long an exec plugin may run (default 30 000 ms). */
  readonly execTimeoutMs?: number | undefined;
}

/** The kubeconfig is missing or unusable. */
export class KubeConfigError extends Error {
  override name = "KubeConfigError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * Find and load the kubeconfig (a path is short for `{ path }`): `options.path`, then `$KUBECONFIG` (a list, merged like kubectl),
 * then `~/.kube/config`, then the in-cluster service account (`$KUBERNETES_SERVICE_HOST`).
 *
 * @example
 * const conn = await loadKubeConfig({ path: flags.kubeconfig });
 * const client = new KubeClient(conn);
 */
export async function loadKubeConfig(pathOrOptions?: string | LoadKubeConfigOptions): Promise<KubeConnection> {
  const options: LoadKubeConfigOptions =
    typeof pathOrOptions === "string" ? { path: pathOrOptions } : (pathOrOptions ?? {});
  const env = options.env ?? rt.env;
  const files = await kubeconfigFiles(options, env);
  if (files.length > 0) return fromFiles(files, options);
  const saDir = options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  if (env("KUBERNETES_SERVICE_HOST") && (await exists(join(saDir, "token")))) {
    return inCluster(env, saDir, options);
  }
  throw new KubeConfigError(
    "Cannot find a kubeconfig: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config, " +
      "or run in a pod with a service account",
  );
}

async function kubeconfigFiles(
  options: LoadKubeConfigOptions,
  env: (name: string) => string | undefined,
): Promise<string[]> {
  if (options.path) {
    if (!(await exists(options.path))) throw new KubeConfigError(`Cannot read kubeconfig "${options.path}": no such file`);
    return [resolve(options.path)];
  }
  const list = env("KUBECONFIG");
  if (list) {
    const files: string[] = [];
    for (const f of list.split(process.platform === "win32" ? ";" : ":")) {
      if (f && (await exists(f))) files.push(resolve(f));
    }
    if (files.length === 0) throw new KubeConfigError(`Cannot read kubeconfig: no file of KUBECONFIG="${list}" exists`);
    return files;
  }
  const home = options.homeDir ?? safeHomedir();
  if (home) {
    const file = join(home, ".kube", "config");
    if (await exists(file)) return [file];
  }
  return [];
}

/** The clusters, users and contexts of one or more kubeconfig files, merged like kubectl. */
interface MergedConfig {
  currentContext: string | undefined;
  readonly clusters: Map<string, Cluster>;
  readonly users: Map<string, User>;
  readonly contexts: Map<string, Context>;
}

async function fromFiles(files: readonly string[], options: LoadKubeConfigOptions): Promise<KubeConnection> {
  // Deep import: the package entry point would load all of client-node (see the module comment).
  const { newClusters, newContexts, newUsers } = await import("@kubernetes/client-node/dist/config_types.js");
  const kc: MergedConfig = { currentContext: undefined, clusters: new Map(), users: new Map(), contexts: new Map() };
  const raws: { file: string; doc: RawKubeConfig }[] = [];
  for (const [i, file] of files.entries()) {
    let text: string;
    try {
      text = await rt.readTextFile(file);
    } catch (err) {
      throw new KubeConfigError(`Cannot read kubeconfig "${file}": ${message(err)}`, { cause: err });
    }
    try {
      const parsed: unknown = parseYaml(text);
      const doc = (parsed !== null && typeof parsed === "object" ? parsed : {}) as RawKubeConfig;
      const dir = dirname(file);
      // client-node would read `token-file` here, once and relative to the working directory: token files
      // are read (and re-read) by tokenFileAuth instead.
      const users = Array.isArray(doc.users)
        ? doc.users.map((u) => (u?.user && "token-file" in u.user ? { ...u, user: { ...u.user, "token-file": undefined } } : u))
        : undefined;
      const current = doc["current-context"];
      // Like kubectl, the first file to set current-context or define a name wins.
      if (i === 0 || !kc.currentContext) kc.currentContext = typeof current === "string" && current ? current : undefined;
      for (const c of newClusters(doc.clusters)) {
        if (c.caFile) c.caFile = absoluteTo(dir, c.caFile);
        if (!kc.clusters.has(c.name)) kc.clusters.set(c.name, c);
      }
      for (const u of newUsers(users)) {
        if (u.certFile) u.certFile = absoluteTo(dir, u.certFile);
        if (u.keyFile) u.keyFile = absoluteTo(dir, u.keyFile);
        if (!kc.users.has(u.name)) kc.users.set(u.name, u);
      }
      for (const c of newContexts(doc.contexts)) if (!kc.contexts.has(c.name)) kc.contexts.set(c.name, c);
      raws.push({ file, doc });
    } catch (err) {
      throw new KubeConfigError(`Cannot parse kubeconfig "${file}": ${message(err)}`, { cause: err });
    }
  }
  const source = files.map((f) => `"${f}"`).join(", ");
  if (options.context) {
    if (!kc.contexts.has(options.context)) {
      throw new KubeConfigError(`Cannot use context "${options.context}": kubeconfig ${source} does not define it`);
    }
    kc.currentContext = options.context;
  }
  const contextName = kc.currentContext ?? "";
  const context = kc.contexts.get(contextName);
  if (!context) {
    throw new KubeConfigError(
      contextName
        ? `Cannot use context "${contextName}": kubeconfig ${source} does not define it`
        : `Cannot load kubeconfig ${source}: no current-context is set (pass a context or run "kubectl config use-context")`,
    );
  }
  const cluster = kc.clusters.get(context.cluster);
  if (!cluster) {
    throw new KubeConfigError(`Cannot use context "${contextName}": cluster "${context.cluster}" is not defined in ${source}`);
  }
  const user = (context.user !== undefined ? kc.users.get(context.user) : undefined) ?? null;
  const rawUser = findRawUser(raws, context.user);
  const origin = { source: `kubeconfig ${source}`, context: contextName, cluster: cluster.name, user: context.user };
  return {
    server: cluster.server.replace(/\/+$/, ""),
    tls: await tlsOptions(cluster, user, origin.source),
    auth: authenticatorFor(user, rawUser, cluster, options),
    origin,
    namespace: context.namespace,
  };
}

/** `file` relative to the kubeconfig's directory, like client-node's `makePathsAbsolute`. */
function absoluteTo(dir: string, file: string): string {
  return isAbsolute(file) ? file : join(dir, file);
}

async function inCluster(
  env: (name: string) => string | undefined,
  saDir: string,
  options: LoadKubeConfigOptions,
): Promise<KubeConnection> {
  const host = env("KUBERNETES_SERVICE_HOST") ?? "";
  const port = env("KUBERNETES_SERVICE_PORT") || "443";
  const server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  const caFile = join(saDir, "ca.crt");
  const tls: TlsClientOptions = (await exists(caFile)) ? { ca: await readFileFor(caFile, "CA bundle") } : {};
  const nsFile = join(saDir, "namespace");
  const namespace = (await exists(nsFile)) ? (await rt.readTextFile(nsFile)).trim() : undefined;
  return {
    server,
    tls,
    auth: tokenFileAuth(join(saDir, "token"), options.tokenFileMaxAgeMs ?? 60_000),
    origin: { source: "in-cluster service account", context: "in-cluster", cluster: server, user: "service account" },
    namespace,
  };
}

async function tlsOptions(cluster: Cluster, user: User | null, source: string): Promise<TlsClientOptions> {
  const ca = cluster.caData
    ? decodeBase64(cluster.caData, `certificate-authority-data of cluster "${cluster.name}" in ${source}`)
    : cluster.caFile
      ? await readFileFor(cluster.caFile, `certificate-authority of cluster "${cluster.name}"`)
      : undefined;
  const cert = user?.certData
    ? decodeBase64(user.certData, `client-certificate-data of user "${user.name}" in ${source}`)
    : user?.certFile
      ? await readFileFor(user.certFile, `client-certificate of user "${user.name}"`)
      : undefined;
  const key = user?.keyData
    ? decodeBase64(user.keyData, `client-key-data of user "${user.name}" in ${source}`)
    : user?.keyFile
      ? await readFileFor(user.keyFile, `client-key of user "${user.name}"`)
      : undefined;
  return {
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(cluster.skipTLSVerify ? { rejectUnauthorized: false } : {}),
    ...(cluster.tlsServerName ? { serverName: cluster.tlsServerName } : {}),
  };
}

interface RawKubeConfig {
  "current-context"?: unknown;
  clusters?: unknown;
  contexts?: unknown;
  users?: { name?: string; user?: Record<string, unknown> }[];
}

function findRawUser(
  raws: readonly { file: string; doc: RawKubeConfig }[],
  name: string,
): { dir: string; user: Record<string, unknown> } | undefined {
  for (const { file, doc } of raws) {
    const found = Array.isArray(doc.users) ? doc.users.find((u) => u?.name === name) : undefined;
    if (found?.user) return { dir: dirname(file), user: found.user };
  }
  return undefined;
}

interface ExecConfig {
  readonly command: string;
  readonly args?: readonly string[];
  readonly env?: readonly { name: string; value: string }[] | null;
  readonly apiVersion?: string;
  readonly provideClusterInfo?: boolean;
}

function authenticatorFor(
  user: User | null,
  raw: { dir: string; user: Record<string, unknown> } | undefined,
  cluster: Cluster,
  options: LoadKubeConfigOptions,
): Authenticator {
  const maxAge = options.tokenFileMaxAgeMs ?? 60_000;
  if (!user) return staticAuth({}, "no credentials");
  const rawTokenFile = raw?.user["tokenFile"] ?? raw?.user["token-file"];
  const rawToken = raw?.user["token"];
  if (typeof rawToken === "string" && rawToken) return staticAuth({ authorization: `Bearer ${rawToken}` }, "a static token");
  if (typeof rawTokenFile === "string" && rawTokenFile) {
    return tokenFileAuth(isAbsolute(rawTokenFile) ? rawTokenFile : join(raw?.dir ?? ".", rawTokenFile), maxAge);
  }
  if (user.exec) {
    const exec = user.exec as ExecConfig;
    const command =
      exec.command.includes("/") && !isAbsolute(exec.command) && raw ? join(raw.dir, exec.command) : exec.command;
    return execAuth({ ...exec, command }, cluster, options.execTimeoutMs ?? 30_000);
  }
  const provider = user.authProvider as { name?: string; config?: { tokenFile?: string } } | undefined;
  if (provider?.config?.tokenFile) return tokenFileAuth(provider.config.tokenFile, maxAge);
  if (provider) return clientNodeAuth(user, cluster, provider.name ?? "unnamed");
  if (user.token) return staticAuth({ authorization: `Bearer ${user.token}` }, "a static token");
  if (user.username) {
    const basic = btoa(`${user.username}:${user.password ?? ""}`);
    return staticAuth({ authorization: `Basic ${basic}` }, `basic auth for "${user.username}"`);
  }
  return staticAuth({}, user.certData || user.certFile ? "a client certificate" : "no credentials");
}

function staticAuth(headers: Record<string, string>, description: string): Authenticator {
  const creds: Credentials = { headers };
  return { description, credentials: async () => creds, invalidate: () => false };
}

/** A bearer token read from a file; re-read after `maxAgeMs` and after a 401. */
export function tokenFileAuth(path: string, maxAgeMs: number): Authenticator {
  let cached: { creds: Credentials; at: number } | undefined;
  return {
    description: `token file "${path}"`,
    async credentials() {
      if (cached && performance.now() - cached.at < maxAgeMs) return cached.creds;
      let token: string;
      try {
        token = (await rt.readTextFile(path)).trim();
      } catch (err) {
        throw new KubeConfigError(`Cannot read token file "${path}": ${message(err)}`, { cause: err });
      }
      if (!token) throw new KubeConfigError(`Cannot use token file "${path}": it is empty`);
      cached = { creds: { headers: { authorization: `Bearer ${token}` } }, at: performance.now() };
      return cached.creds;
    },
    invalidate() {
      cached = undefined;
      return true;
    },
  };
}

/**
 * An exec credential plugin (`users[].user.exec`), run like kubectl runs it: the kubeconfig's
 * env added to ours, `KUBERNETES_EXEC_INFO` set, stdout parsed as an `ExecCredential`. The result
 * is reused until `status.expirationTimestamp` and dropped after a 401.
 */
function execAuth(exec: ExecConfig, cluster: Cluster, timeoutMs: number): Authenticator {
  const description = `exec plugin "${exec.command}"`;
  let cached: { creds: Credentials; expiresAt: number } | undefined;
  let running: Promise<Credentials> | undefined;

  const run = async (): Promise<Credentials> => {
    const apiVersion = exec.apiVersion ?? "client.authentication.k8s.io/v1";
    const info = {
      apiVersion,
      kind: "ExecCredential",
      spec: {
        interactive: false,
        ...(exec.provideClusterInfo
          ? {
              cluster: {
                server: cluster.server,
                ...(cluster.tlsServerName ? { "tls-server-name": cluster.tlsServerName } : {}),
                ...(cluster.caData ? { "certificate-authority-data": cluster.caData } : {}),
                "insecure-skip-tls-verify": cluster.skipTLSVerify,
              },
            }
          : {}),
      },
    };
    const env: Record<string, string> = { ...(process.env as Record<string, string>) };
    for (const e of exec.env ?? []) env[e.name] = e.value;
    env["KUBERNETES_EXEC_INFO"] = JSON.stringify(info);
    const stdout = await new Promise<string>((resolveOut, reject) => {
      execFile(
        exec.command,
        [...(exec.args ?? [])],
        { env, timeout: timeoutMs, maxBuffer: 4 << 20, encoding: "utf8" },
        (err, out, errOut) => {
          if (!err) return resolveOut(out);
          const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: unknown };
          const why =
            e.code === "ENOENT"
              ? "the command was not found"
              : e.killed
                ? `it did not finish within ${timeoutMs} ms`
                : `it exited with code ${String(e.code)}${errOut.trim() ? `: ${errOut.trim()}` : ""}`;
          reject(new KubeConfigError(`Cannot get credentials from ${description}: ${why}`, { cause: err }));
        },
      );
    });
    let cred: { kind?: string; status?: Record<string, unknown> };
    try {
      cred = JSON.parse(stdout);
    } catch (err) {
      throw new KubeConfigError(`Cannot get credentials from ${description}: its output is not JSON`, { cause: err });
    }
    const status = cred?.status;
    if (cred?.kind !== "ExecCredential" || !status || typeof status !== "object") {
      throw new KubeConfigError(`Cannot get credentials from ${description}: its output is not an ExecCredential with a status`);
    }
    const token = typeof status["token"] === "string" ? status["token"] : undefined;
    const cert = typeof status["clientCertificateData"] === "string" ? status["clientCertificateData"] : undefined;
    const key = typeof status["clientKeyData"] === "string" ? status["clientKeyData"] : undefined;
    if (!token && !(cert && key)) {
      throw new KubeConfigError(
        `Cannot get credentials from ${description}: the ExecCredential has neither status.token nor clientCertificateData and clientKeyData`,
      );
    }
    const exp = typeof status["expirationTimestamp"] === "string" ? Date.parse(status["expirationTimestamp"]) : NaN;
    const creds: Credentials = {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      ...(cert && key ? { cert, key } : {}),
    };
    cached = { creds, expiresAt: Number.isNaN(exp) ? Infinity : exp };
    return creds;
  };

  return {
    description,
    credentials() {
      if (cached && Date.now() < cached.expiresAt) return Promise.resolve(cached.creds);
      running ??= run().finally(() => (running = undefined));
      return running;
    },
    invalidate() {
      cached = undefined;
      return true;
    },
  };
}

/**
 * Other auth providers (oidc, gcp, azure): delegate to client-node's authenticators (the whole package,
 * imported on first use).
 */
function clientNodeAuth(user: User, cluster: Cluster, provider: string): Authenticator {
  let loaded: Promise<{ applyToHTTPSOptions(opts: { headers: Record<string, string> }): Promise<void> }> | undefined;
  return {
    description: `auth-provider "${provider}"`,
    async credentials() {
      loaded ??= import("@kubernetes/client-node").then(({ KubeConfig }) => {
        const kc = new KubeConfig();
        kc.loadFromClusterAndUser(cluster, user);
        return kc;
      });
      const kc = await loaded.catch((err: unknown) => {
        loaded = undefined;
        throw new KubeConfigError(`Cannot use auth-provider "${provider}": ${message(err)}`, { cause: err });
      });
      const opts: { headers: Record<string, string> } = { headers: {} };
      await kc.applyToHTTPSOptions(opts);
      const authorization = opts.headers["Authorization"];
      return { headers: authorization ? { authorization } : {} };
    },
    invalidate: () => true,
  };
}

function decodeBase64(data: string, what: string): string {
  try {
    const bin = atob(data.replace(/\s+/g, ""));
    return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
  } catch (err) {
    throw new KubeConfigError(`Cannot decode ${what}: it is not valid base64`, { cause: err });
  }
}

async function readFileFor(path: string, what: string): Promise<string> {
  try {
    return await rt.readTextFile(path);
  } catch (err) {
    throw new KubeConfigError(`Cannot read ${what} "${path}": ${message(err)}`, { cause: err });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

function safeHomedir(): string | undefined {
  try {
    return homedir() || undefined;
  } catch {
    return undefined;
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
