/**
 * Credentials against the real test API server: rotated token files and exec plugins recover without a
 * restart; rejected credentials are surfaced in status and logs with what to do, and retried with backoff.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Reflector } from "../../src/kube/reflector.ts";
import { startApiServer } from "../support/apiserver.ts";
import { waitFor } from "../support/wait.ts";
import { BOOKMARK_MS, RecordingSink, captureLog, clientFor, expectInSync, fastTuning, service } from "../support/kube-sinks.ts";

const dir = mkdtempSync(join(tmpdir(), "kubegate-auth-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const plugin = join(import.meta.dir, "fixtures", "exec-plugin.sh");
let n = 0;

async function tokenFile(token: string): Promise<string> {
  const path = join(dir, `token-${++n}`);
  await writeFile(path, `${token}\n`);
  return path;
}

/** 401s answered on `path`, or on any path (after a dropped watch the client's first request is its /readyz probe). */
const unauthorized = (server: { requests: readonly { status: number; path: string }[] }, path?: string) =>
  server.requests.filter((r) => r.status === 401 && (path === undefined || r.path === path)).length;

describe("credentials", () => {
  test("a rotated token file is picked up after a 401, without a restart", async () => {
    await using server = await startApiServer({ tokens: ["token-1"], requireClientCert: false, bookmarkIntervalMs: BOOKMARK_MS });
    const file = await tokenFile("token-1");
    using client = await clientFor(server, { tokenFile: file, skipClientCert: true });
    expect(client.connection.auth.description).toBe(`token file "${file}"`);
    const sink = new RecordingSink();
    await using r = new Reflector({ client, kind: "Service", sink, ...fastTuning });
    r.start();
    await server.waitForWatches(1, { resource: "services" });

    await writeFile(file, "token-2\n");
    server.setTokens(["token-2"]);
    server.dropWatches(); // the next request must authenticate again
    server.create(service("after-rotation"));
    await expectInSync(server, sink, r);
    expect(unauthorized(server)).toBeGreaterThanOrEqual(1);
    // The 401 was absorbed by re-reading the file: it never became the reflector's error.
    expect(r.status().lastError ?? "").not.toContain("401");
  });

  test("an exec plugin is re-run after a 401 and its new token is used", async () => {
    await using server = await startApiServer({ tokens: ["exec-1"], requireClientCert: false, bookmarkIntervalMs: BOOKMARK_MS });
    const file = await tokenFile("exec-1");
    using client = await clientFor(server, { exec: { command: plugin, args: [file] }, skipClientCert: true });
    const sink = new RecordingSink();
    await using r = new Reflector({ client, kind: "Service", sink, ...fastTuning });
    r.start();
    await server.waitForWatches(1, { resource: "services" });
    const runs = async () => (await readFile(`${file}.calls`, "utf8")).split("\n").filter(Boolean).length;
    expect(await runs()).toBe(1); // the credential is cached (it expires in an hour)

    await writeFile(file, "exec-2\n");
    server.setTokens(["exec-2"]);
    server.dropWatches();
    server.create(service("after-rotation"));
    await expectInSync(server, sink, r);
    expect(await runs()).toBe(2);
    expect(unauthorized(server)).toBeGreaterThanOrEqual(1);
    expect(r.status().lastError ?? "").not.toContain("401");
  });

  test("rejected credentials are surfaced with guidance, logged once, retried, and recover when fixed", async () => {
    await using server = await startApiServer({ tokens: ["good"], requireClientCert: false, bookmarkIntervalMs: BOOKMARK_MS });
    const file = await tokenFile("stale");
    using client = await clientFor(server, { tokenFile: file, skipClientCert: true });
    const log = captureLog();
    const sink = new RecordingSink();
    await using r = new Reflector({ client, kind: "Service", sink, ...fastTuning, log: log.log });
    r.start();
    // Between retries the reflector is in backoff; a retry in flight shows "listing". Await the former.
    const status = await waitFor(() => unauthorized(server, "/api/v1/services") >= 6 && r.status().phase === "backoff" && r.status(), {
      what: "several retries, then backoff",
    });
    expect(status).toMatchObject({ phase: "backoff", synced: false, lists: 0 });
    const source = client.connection.origin.source;
    expect(source).toStartWith("kubeconfig ");
    expect(status.lastError).toBe(
      `API server answered 401 Unauthorized for "list services": the credentials in ${source} ` +
        `(context "${client.connection.origin.context}", user "${client.connection.origin.user}", token file "${file}") ` +
        `were rejected; refresh them (kubectl config view) or check the token file "${file}"`,
    );
    expect(status.lastErrorAt).toBeString();
    // Logged, but not once per retry.
    expect(log.lines.filter((l) => l.includes("401"))).toEqual([
      `warn: Kubernetes sync failed; retrying ${JSON.stringify({ kind: "Service", error: status.lastError })}`,
    ]);

    await writeFile(file, "good\n");
    await waitFor(() => sink.syncs.includes("Service"), { what: "recovery after fixing the token", timeoutMs: 5000 });
    await expectInSync(server, sink, r);
  });

  test("a 403 names the missing permission", async () => {
    await using server = await startApiServer({ bookmarkIntervalMs: BOOKMARK_MS });
    server.setAuthorizer((a) => !(a.resource === "endpointslices" && a.verb === "list"));
    using client = await clientFor(server);
    const sink = new RecordingSink();
    await using r = new Reflector({ client, kind: "EndpointSlice", sink, ...fastTuning });
    r.start();
    await waitFor(() => r.status().lastError, { what: "the error" });
    expect(r.status().lastError).toStartWith(
      `API server answered 403 Forbidden for "list endpointslices": the credentials in ${client.connection.origin.source}`,
    );
    expect(r.status().lastError).toContain("are not allowed to list endpointslices; grant the access with RBAC");
    server.setAuthorizer(undefined);
    await waitFor(() => sink.syncs.includes("EndpointSlice"), { what: "recovery after the grant" });
  });
});
