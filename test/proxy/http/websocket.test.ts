/** Upgrades through the HTTP forwarder: after 101 both sockets become a raw pipe. */
import { expect, test } from "bun:test";
import { bytes, endpoint, header, RawClient, RawUpstream, startProxy, waitFor } from "../../support/http-harness.ts";

test("a WebSocket echo works through the proxy (Bun.serve upstream, WebSocket client)", async () => {
  const seen: { upgrade?: string | null; xff?: string | null } = {};
  await using server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, srv) {
      seen.upgrade = req.headers.get("upgrade");
      seen.xff = req.headers.get("x-forwarded-for");
      return srv.upgrade(req) ? undefined : new Response("not a websocket", { status: 400 });
    },
    websocket: {
      message(ws, msg) {
        ws.send(typeof msg === "string" ? `echo: ${msg}` : msg);
      },
    },
  });
  await using px = startProxy([endpoint(server.port!)]);
  const ws = new WebSocket(`ws://127.0.0.1:${px.port}/ws`);
  const messages: string[] = [];
  const opened = Promise.withResolvers<void>();
  const closed = Promise.withResolvers<number>();
  ws.onopen = () => opened.resolve();
  ws.onerror = () => opened.reject(new Error("WebSocket failed"));
  ws.onmessage = (e) => messages.push(typeof e.data === "string" ? e.data : `binary ${(e.data as ArrayBuffer).byteLength}`);
  ws.onclose = (e) => closed.resolve(e.code);
  await opened.promise;
  ws.send("hello");
  ws.send("x".repeat(100_000));
  ws.binaryType = "arraybuffer";
  ws.send(new Uint8Array(70_000));
  await waitFor(() => messages.length === 3, "three echoes");
  expect(messages).toEqual(["echo: hello", `echo: ${"x".repeat(100_000)}`, "binary 70000"]);
  ws.close(1000);
  expect(await closed.promise).toBe(1000);
  expect(seen).toEqual({ upgrade: "websocket", xff: "127.0.0.1" });
  await waitFor(() => px.proxy.active() === 0, "the tunnel to close");
});

test("a 101 is a raw pipe both ways with half-close passed on", async () => {
  await using up = new RawUpstream("up", (_req, s) => {
    // Only the first "request" is HTTP; later bytes are the raw protocol (recorded in `received`).
    if (s.data.served > 1) return;
    s.write(bytes("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\nhello from upstream|"));
  });
  await using px = startProxy([up.endpoint]);
  await using c = await RawClient.connect(px.port);
  c.send("GET /raw HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\nearly bytes|");
  const r = await c.readResponse();
  expect(r.status).toBe(101);
  expect({ conn: header(r, "connection"), upgrade: header(r, "upgrade") }).toEqual({ conn: "upgrade", upgrade: "raw" });
  await waitFor(() => c.unread === "hello from upstream|", "upstream bytes after the 101");
  const req = up.requests[0]!;
  expect({ conn: header(req, "connection"), upgrade: header(req, "upgrade") }).toEqual({ conn: "upgrade", upgrade: "raw" });
  await waitFor(() => new TextDecoder().decode(up.received).endsWith("early bytes|"), "client bytes sent with the request");
  c.send("\x00\x01 not http \r\n\r\n");
  await waitFor(() => new TextDecoder().decode(up.received).endsWith("\x00\x01 not http \r\n\r\n"), "raw client bytes upstream");
  // The client half-closes: the upstream sees FIN (and the harness upstream closes), so the tunnel ends.
  (c.socket as unknown as { shutdown(): void }).shutdown();
  await c.whenClosed;
  await waitFor(() => up.sockets.size === 0 && px.proxy.active() === 0, "both sides to close");
});

test("an upgrade the upstream declines is an ordinary response and the connection stays usable", async () => {
  await using up = new RawUpstream();
  await using px = startProxy([up.endpoint]);
  await using c = await RawClient.connect(px.port);
  c.send("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  expect((await c.readResponse()).body).toBe("up GET /ws");
  c.send("GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
  expect((await c.readResponse()).body).toBe("up GET /next");
});

test("a 101 to a request that did not ask for an upgrade is a 502", async () => {
  await using up = new RawUpstream("up", (_req, s) => void s.write(bytes("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")));
  await using px = startProxy([up.endpoint]);
  await using c = await RawClient.connect(px.port);
  c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  expect((await c.readResponse()).status).toBe(502);
  await c.whenClosed;
});
