/**
 * `connectTcp` with `tls` on Bun (src/runtime/bun/net.ts): the socket is handed over after the handshake, the
 * server certificate is verified against the given CA and name, a client certificate is presented, and a
 * handshake that never completes is cut at `timeoutMs`. (Deno's side runs in test/kube/portforward.deno.ts.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rt, type TcpHandlers } from "../../src/runtime/index.ts";
import { createCertAuthority, testCerts, type TestCerts } from "../support/certs.ts";
import { waitFor } from "../support/wait.ts";

let certs: TestCerts;
let echo: Bun.TCPSocketListener<undefined>;
let clientCN = "";
beforeAll(async () => {
  certs = await testCerts();
  echo = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requestCert: true, rejectUnauthorized: false },
    socket: {
      handshake(s) {
        clientCN = (s.getPeerCertificate() as { subject?: { CN?: string } } | undefined)?.subject?.CN ?? "";
      },
      data: (s, d) => void s.write(d),
    },
  });
});
afterAll(() => echo.stop(true));

function handlers() {
  const events: string[] = [];
  let text = "";
  const h: TcpHandlers<undefined> = {
    open: () => void events.push("open"),
    data: (_s, d) => void (text += new TextDecoder().decode(d)),
    close: (_s, err) => void events.push(err ? `close:${err.message}` : "close"),
  };
  return { h, events, text: () => text };
}

describe("connectTcp with tls (Bun)", () => {
  test("resolves after the handshake: open was called and a write right away is not lost; the client certificate is presented", async () => {
    const r = handlers();
    const s = await rt.connectTcp({
      hostname: "127.0.0.1",
      port: echo.port,
      handlers: r.h,
      data: undefined,
      tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey },
    });
    expect(r.events).toEqual(["open"]);
    expect(s.write(new TextEncoder().encode("ping"))).toBe(4);
    await waitFor(() => r.text() === "ping", { what: "the echo" });
    expect(clientCN).toBe("kubegate-test");
    s.terminate();
    await waitFor(() => r.events.length === 2, { what: "close" });
    expect(r.events).toEqual(["open", "close"]);
  });

  test("serverName is what the certificate is checked against", async () => {
    const ok = handlers();
    const s = await rt.connectTcp({ hostname: "127.0.0.1", port: echo.port, handlers: ok.h, data: undefined, tls: { ca: certs.ca, serverName: "localhost" } });
    s.terminate();
    const bad = handlers();
    const err = await rt
      .connectTcp({ hostname: "127.0.0.1", port: echo.port, handlers: bad.h, data: undefined, tls: { ca: certs.ca, serverName: "not-the-apiserver.example" } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toStartWith(`TLS handshake with 127.0.0.1:${echo.port} failed: `);
    expect(bad.events).toEqual([]);
  });

  test("a certificate from another CA is refused (with the library's code); rejectUnauthorized: false accepts it", async () => {
    const other = await createCertAuthority();
    const r = handlers();
    const err = (await rt
      .connectTcp({ hostname: "127.0.0.1", port: echo.port, handlers: r.h, data: undefined, tls: { ca: other.cert } })
      .catch((e: unknown) => e)) as Error & { code?: string };
    expect(err.message).toStartWith(`TLS handshake with 127.0.0.1:${echo.port} failed: `);
    expect(typeof err.code).toBe("string");
    expect(r.events).toEqual([]); // the caller never had a socket: no open, no close
    const s = await rt.connectTcp({ hostname: "127.0.0.1", port: echo.port, handlers: r.h, data: undefined, tls: { ca: other.cert, rejectUnauthorized: false } });
    expect(r.events).toEqual(["open"]);
    s.terminate();
  });

  test("a server that never completes the handshake: ETIMEDOUT at timeoutMs, and the connection is closed", async () => {
    let closed = 0;
    let accepted = 0;
    const mute = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: () => void accepted++, data() {}, close: () => void closed++ } });
    try {
      const started = performance.now();
      const err = (await rt
        .connectTcp({ hostname: "127.0.0.1", port: mute.port, handlers: handlers().h, data: undefined, timeoutMs: 200, tls: { ca: certs.ca } })
        .catch((e: unknown) => e)) as Error & { code?: string };
      expect(err.code).toBe("ETIMEDOUT");
      expect(performance.now() - started).toBeGreaterThanOrEqual(190);
      expect(accepted).toBe(1);
      await waitFor(() => closed === 1, { what: "the half-open TLS connection to be closed" });
    } finally {
      mute.stop(true);
    }
  });
});
