/**
 * The port-forward dialer on Deno (`Deno.connectTls` with the kubeconfig's CA and client certificate under the
 * runtime port, the RFC 6455 client over it), against the Bun emulation of the API server's pods/portforward
 * run as a separate process (portforward-server-main.ts): an HTTP exchange over mTLS with a bearer token, a
 * refused port, and a certificate from another CA. The Bun suite beside it (`portforward.test.ts`) covers the rest.
 * Run by scripts/test.sh: `deno test -A --unstable-net --config tsconfig.deno.json test/kube/portforward.deno.ts`.
 */
import assert from "node:assert/strict";
import type { KubeConnection } from "../../src/kube/kubeconfig.ts";
import { PortForwardDialer, PortForwardError } from "../../src/kube/portforward.ts";
import type { TcpHandlers } from "../../src/runtime/index.ts";
import { startBunChild } from "../support/bun-child.deno.ts";


/** Start `bun test/kube/portforward-server-main.ts` and read its one JSON line. */
function startServerProcess(args: string[]) {
  return startBunChild<{ url: string; port: number; ca: string; clientCert: string; clientKey: string }>("test/kube/portforward-server-main.ts", args, "The port-forward server");
}

function connection(server: string, tls: KubeConnection["tls"], token: string): KubeConnection {
  return {
    server,
    tls,
    auth: { description: "a static token", credentials: async () => ({ headers: { authorization: `Bearer ${token}` } }), invalidate: () => false },
    origin: { source: "test", context: "test", cluster: "test", user: "test" },
  };
}

function recorder() {
  const events: string[] = [];
  let text = "";
  const closed = Promise.withResolvers<Error | undefined>();
  const handlers: TcpHandlers<undefined> = {
    open: () => void events.push("open"),
    data: (_s, chunk) => {
      text += new TextDecoder().decode(chunk);
      if (events.at(-1) !== "data") events.push("data");
    },
    end: () => void events.push("end"),
    close: (_s, err) => {
      events.push("close");
      closed.resolve(err);
    },
  };
  return { handlers, events, closed: closed.promise, text: () => text };
}

Deno.test("port-forward under Deno: an HTTP exchange over mTLS and a token, a refused port, a wrong CA", async (t) => {
  await using api = await startServerProcess(["--require-client-cert", "--token", "deno-token"]);
  const dialer = new PortForwardDialer(connection(api.url, { ca: api.ca, cert: api.clientCert, key: api.clientKey }, "deno-token"));

  await t.step("an HTTP exchange", async () => {
    const r = recorder();
    const s = await dialer.connect({ namespace: "default", pod: "web-0", port: 8080 }, { handlers: r.handlers, data: undefined, timeoutMs: 10_000 });
    assert.deepEqual(r.events, ["open"]);
    const req = new TextEncoder().encode("GET /from-deno HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
    assert.equal(s.write(req), req.length);
    assert.equal(await r.closed, undefined);
    assert.match(r.text(), /^HTTP\/1\.1 200 OK/);
    assert.match(r.text(), /pod says hi to \/from-deno$/);
    assert.deepEqual(r.events, ["open", "data", "end", "close"]);
    assert.equal(s.remotePort, api.port);
  });

  await t.step("a port nothing listens on is ECONNREFUSED", async () => {
    const r = recorder();
    const outcome = await dialer
      .connect({ namespace: "default", pod: "closed-0", port: 9999 }, { handlers: r.handlers, data: undefined, timeoutMs: 10_000 })
      .then(() => r.closed, (e: unknown) => e);
    assert.ok(outcome instanceof PortForwardError, `not a PortForwardError: ${String(outcome)}`);
    assert.equal(outcome.code, "ECONNREFUSED");
    assert.match(outcome.message, /could not connect to port 9999 in the pod/);
  });

  await t.step("a server certificate from another CA fails the TLS handshake", async () => {
    const other = connection(api.url, { cert: api.clientCert, key: api.clientKey }, "deno-token"); // system roots only
    const err = await new PortForwardDialer(other)
      .connect({ namespace: "default", pod: "web-0", port: 8080 }, { handlers: recorder().handlers, data: undefined, timeoutMs: 10_000 })
      .catch((e: unknown) => e);
    assert.ok(err instanceof PortForwardError);
    assert.equal(err.code, "EPORTFORWARD");
    assert.match(err.message, /cannot reach the API server/);
  });
});
