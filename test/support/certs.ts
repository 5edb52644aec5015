/**
 * Throwaway PKI for the test API server: a CA, a server certificate for 127.0.0.1/::1/localhost and a
 * client certificate, made with the `openssl` CLI. Generated once per process (in a temp dir removed at
 * exit) because key generation is the slow part of starting a TLS test server.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** PEM texts of a CA and the certificates it signed. */
export interface TestCerts {
  /** CA certificate (PEM): trust anchor for the server cert and the issuer of the client cert. */
  readonly ca: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  /** Client certificate (CN `kubegate-test`, O `system:masters`), as a kubeconfig user would hold it. */
  readonly clientCert: string;
  readonly clientKey: string;
  /** Directory holding the files `ca.crt`, `server.crt`, `client.crt` and their keys (for curl). */
  readonly dir: string;
}

/** A key pair with its certificate, as PEM, and the files holding them. */
export interface IssuedCert {
  readonly cert: string;
  readonly key: string;
  readonly certFile: string;
  readonly keyFile: string;
}

let workDir: string | undefined;
let counter = 0;

function dir(): string {
  if (workDir) return workDir;
  const made = mkdtempSync(join(tmpdir(), "kubegate-certs-"));
  workDir = made;
  process.once("exit", () => rmSync(made, { recursive: true, force: true }));
  return made;
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run("openssl", args, { cwd: dir() });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? "";
    throw new Error(`Cannot run "openssl ${args[0]}": ${stderr.trim() || String(error)}`, { cause: error });
  }
}

const KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Make a self-signed CA. Files are named `<name>.crt` / `<name>.key` in the per-process cert dir. */
export async function createCertAuthority(name = `ca-${++counter}`, cn = "kubegate-test-ca"): Promise<IssuedCert> {
  const certFile = join(dir(), `${name}.crt`);
  const keyFile = join(dir(), `${name}.key`);
  await openssl([
    "req", "-x509", ...KEY_ARGS, "-keyout", keyFile, "-out", certFile, "-days", "3650", "-subj", `/CN=${cn}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return { cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8"), certFile, keyFile };
}

/**
 * Issue a leaf certificate signed by `ca`.
 * @example
 * const ca = await createCertAuthority();
 * const alice = await issueCert(ca, { cn: "alice", orgs: ["devs"], usage: "client" });
 */
export async function issueCert(
  ca: IssuedCert,
  options: { cn: string; orgs?: readonly string[]; usage: "server" | "client"; sans?: readonly string[]; name?: string },
): Promise<IssuedCert> {
  const name = options.name ?? `${options.usage}-${++counter}`;
  const certFile = join(dir(), `${name}.crt`);
  const keyFile = join(dir(), `${name}.key`);
  const csrFile = join(dir(), `${name}.csr`);
  const extFile = join(dir(), `${name}.ext`);
  const subject = `/CN=${options.cn}${(options.orgs ?? []).map((o) => `/O=${o}`).join("")}`;
  const ext = [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    `extendedKeyUsage=${options.usage === "server" ? "serverAuth" : "clientAuth"}`,
    ...(options.sans?.length ? [`subjectAltName=${options.sans.join(",")}`] : []),
  ];
  await writeFile(extFile, ext.join("\n") + "\n");
  await openssl(["req", "-new", ...KEY_ARGS, "-keyout", keyFile, "-out", csrFile, "-subj", subject]);
  const serial = `0x${crypto.getRandomValues(new Uint8Array(12)).reduce((s, b) => s + b.toString(16).padStart(2, "0"), "")}`;
  await openssl([
    "x509", "-req", "-in", csrFile, "-CA", ca.certFile, "-CAkey", ca.keyFile, "-set_serial", serial,
    "-days", "3650", "-out", certFile, "-extfile", extFile,
  ]);
  return { cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8"), certFile, keyFile };
}

let cached: Promise<TestCerts> | undefined;

/** The per-process test PKI (generated on first call, then reused). */
export function testCerts(): Promise<TestCerts> {
  cached ??= (async () => {
    const ca = await createCertAuthority("ca");
    const [server, client] = await Promise.all([
      issueCert(ca, {
        name: "server",
        cn: "kube-apiserver",
        usage: "server",
        sans: ["IP:127.0.0.1", "IP:::1", "DNS:localhost", "DNS:kubernetes.default.svc"],
      }),
      issueCert(ca, { name: "client", cn: "kubegate-test", orgs: ["system:masters"], usage: "client" }),
    ]);
    return {
      ca: ca.cert,
      caKey: ca.key,
      serverCert: server.cert,
      serverKey: server.key,
      clientCert: client.cert,
      clientKey: client.key,
      dir: dir(),
    };
  })();
  cached.catch(() => (cached = undefined));
  return cached;
}
