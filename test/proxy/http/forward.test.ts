/** The HTTP/1.1 forwarder against raw-socket upstreams and raw or real clients: what goes through, byte for byte. */
import { describe, expect, test } from "bun:test";
import { FRESH_DRAIN_MS } from "../../../src/proxy/http/downstream.ts";
import { idleUpstreams, poolSettings } from "../../../src/proxy/http/index.ts";
import { bytes, header, RawClient, RawUpstream, startProxy, text, waitFor } from "../../support/http-harness.ts";

describe("routing and connection reuse", () => {
  test("round robin across two upstreams, with keep-alive on both sides", async () => {
    await using a = new RawUpstream("A");
    await using b = new RawUpstream("B");
    await using px = startProxy([a.endpoint, b.endpoint]);
    await using c = await RawClient.connect(px.port);
    const bodies: string[] = [];
    for (let i = 0; i < 6; i++) {
      c.send(`GET /${i} HTTP/1.1\r\nHost: web\r\n\r\n`);
      const r = await c.readResponse();
      expect(r.status).toBe(200);
      bodies.push(r.body);
    }
    expect(bodies).toEqual(["A GET /0", "B GET /1", "A GET /2", "B GET /3", "A GET /4", "B GET /5"]);
    expect({ client: px.accepted, a: a.accepts, b: b.accepts }).toEqual({ client: 1, a: 1, b: 1 });
  });

  test("fetch clients reuse upstream connections across many requests", async () => {
    await using a = new RawUpstream("A");
    await using px = startProxy([a.endpoint]);
    for (let i = 0; i < 20; i++) {
      const r = await fetch(`${px.url}/n${i}`);
      expect(await r.text()).toBe(`A GET /n${i}`);
    }
    expect(a.accepts).toBe(1);
  });

  test("a route swap applies to the next request on an open keep-alive connection", async () => {
    await using a = new RawUpstream("A");
    await using b = new RawUpstream("B");
    await using px = startProxy([a.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /1 HTTP/1.1\r\nHost: web\r\n\r\n");
    expect((await c.readResponse()).body).toBe("A GET /1");
    px.setEndpoints([b.endpoint]);
    c.send("GET /2 HTTP/1.1\r\nHost: web\r\n\r\n");
    expect((await c.readResponse()).body).toBe("B GET /2");
    expect(px.accepted).toBe(1);
  });
});

describe("heads as forwarded", () => {
  test("hop-by-hop fields are dropped and forwarding fields replace the client's", async () => {
    await using up = new RawUpstream("up", (_req, s) => {
      s.write(
        bytes(
          "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Up\r\nKeep-Alive: timeout=5\r\nX-Up: secret\r\n" +
            "Proxy-Authenticate: Basic\r\nTrailer: X-T\r\nUpgrade: h2c\r\nServer: raw\r\nContent-Length: 2\r\n\r\nok",
        ),
      );
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(
      "GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nConnection: keep-alive, X-Custom\r\nKeep-Alive: timeout=5\r\n" +
        "X-Custom: drop me\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\n" +
        "Proxy-Authorization: Basic eHl6\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n" +
        "X-Forwarded-Host: evil\r\nForwarded: for=6.6.6.6\r\nAccept: */*\r\nx-keep:  1 \r\n\r\n",
    );
    const r = await c.readResponse();
    expect(r.head).toBe("HTTP/1.1 200 OK\r\nServer: raw\r\nContent-Length: 2\r\n\r\n");
    expect(up.requests[0]!.head).toBe(
      "GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nx-keep:  1 \r\n" +
        "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com:8080\r\n" +
        'Forwarded: for=127.0.0.1;host="example.com:8080";proto=http\r\n\r\n',
    );
  });

  test("a head and a pipelined request arriving in many small pieces are reassembled exactly", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    const first = `POST /pieces HTTP/1.1\r\nHost: h\r\n${"X-Pad: 0123456789abcdef\r\n".repeat(20)}Content-Length: 5\r\n\r\nhello`;
    const all = first + "GET /second HTTP/1.1\r\nHost: h\r\n\r\n";
    for (let i = 0; i < all.length; i += 23) {
      c.send(all.slice(i, i + 23));
      await Bun.sleep(1);
    }
    expect([(await c.readResponse()).body, (await c.readResponse()).body]).toEqual(["up POST /pieces", "up GET /second"]);
    const forwarded = up.requests[0]!;
    expect(forwarded.head.startsWith(first.slice(0, first.indexOf("\r\n\r\n") + 2))).toBe(true);
    expect(text(forwarded.body)).toBe("hello");
  });

  test("an unchanged response head is forwarded byte for byte", async () => {
    const head = "HTTP/1.1 201 Created\r\nx-odd-Case:  v \r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 3\r\n\r\n";
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes(head + "abc")));
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await c.readResponse();
    expect(r.head + r.rawBody).toBe(head + "abc");
  });

  test("a lone `Connection: keep-alive` passes as received while both connections stay open, and only then", async () => {
    const head = "HTTP/1.1 200 OK\r\nServer: raw\r\nconnection:  Keep-Alive \r\nContent-Length: 2\r\n\r\n";
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes(head + "ok")));
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    // Kept open: the response head goes as received, and so does the request's own keep-alive line.
    c.send("GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    const kept = await c.readResponse();
    expect(kept.head + kept.rawBody).toBe(head + "ok");
    expect(up.requests[0]!.head.startsWith("GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX-Forwarded-For: ")).toBe(true);
    // The client asks to close: our Connection replaces the upstream's.
    c.send("GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    const closing = await c.readResponse();
    expect(closing.head).toBe("HTTP/1.1 200 OK\r\nServer: raw\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
    expect(up.requests[1]!.head.startsWith("GET /b HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: ")).toBe(true);
  });

  test("`Connection: keep-alive` with another hop-by-hop field, twice, or from HTTP/1.0 is dropped", async () => {
    const heads = [
      "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
    ];
    let i = 0;
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes(heads[i++]! + "ok")));
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    const got: string[] = [];
    for (let n = 0; n < heads.length; n++) {
      c.send(`GET /${n} HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nKeep-Alive: timeout=9\r\n\r\n`);
      const r = await c.readResponse();
      got.push(r.head + r.rawBody);
    }
    expect(got).toEqual([
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
      "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ]);
    for (const r of up.requests) expect(r.head).not.toMatch(/keep-alive/i);
  });

  test("a rebuilt response head carries the first body bytes in the same write, from small to 16 KiB and beyond", async () => {
    const sizes = [1, 700, 16 * 1024, 16 * 1024 + 1, 100_000];
    let i = 0;
    await using up = new RawUpstream("up", (_req, s) => {
      const n = sizes[i++]!;
      const body = "0123456789abcdefghijklmnopqrstuvwxyz".repeat(Math.ceil(n / 36)).slice(0, n);
      s.write(bytes(`HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: ${n}\r\n\r\n${body}`));
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    for (const n of sizes) {
      c.send(`GET /${n} HTTP/1.1\r\nHost: h\r\n\r\n`);
      const r = await c.readResponse();
      expect(r.head).toBe(`HTTP/1.1 200 OK\r\nContent-Length: ${n}\r\n\r\n`);
      expect(r.body).toBe("0123456789abcdefghijklmnopqrstuvwxyz".repeat(Math.ceil(n / 36)).slice(0, n));
    }
  });

  test("a trusted peer's forwarding fields are kept and appended to", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], { trustForwarded: (peer) => peer === "127.0.0.1" });
    await using c = await RawClient.connect(px.port);
    c.send(
      "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Proto: https\r\n" +
        "Forwarded: for=6.6.6.6;proto=https\r\n\r\n",
    );
    await c.readResponse();
    expect(up.requests[0]!.head).toBe(
      "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6;proto=https\r\n" +
        "X-Forwarded-For: 6.6.6.6, 7.7.7.7, 127.0.0.1\r\nX-Forwarded-Host: h\r\n" +
        'Forwarded: for=127.0.0.1;host="h";proto=http\r\n\r\n',
    );
  });

  test("an IPv6 client is quoted in Forwarded", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint], {}, "::1");
    await using c = await RawClient.connect(px.port, "::1");
    c.send("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
    await c.readResponse();
    const req = up.requests[0]!;
    expect(header(req, "x-forwarded-for")).toBe("::1");
    expect(header(req, "forwarded")).toBe('for="[::1]";host="[::1]:80";proto=http');
  });

  test("an absolute-form target is sent in origin form with its authority as Host, to the service's endpoints", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET http://other.example:81?x=1 HTTP/1.1\r\nHost: ignored.example\r\nAccept: */*\r\n\r\n");
    expect((await c.readResponse()).body).toBe("up GET /?x=1");
    c.send("GET HTTP://Other.example/a/b HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).body).toBe("up GET /a/b");
    expect(up.requests[0]!.head).toBe(
      "GET /?x=1 HTTP/1.1\r\nAccept: */*\r\nHost: other.example:81\r\nX-Forwarded-For: 127.0.0.1\r\n" +
        'X-Forwarded-Proto: http\r\nX-Forwarded-Host: other.example:81\r\nForwarded: for=127.0.0.1;host="other.example:81";proto=http\r\n\r\n',
    );
    expect(header(up.requests[1]!, "host")).toBe("Other.example");
  });
});

describe("bodies and framing", () => {
  test("a chunked request body reaches the upstream exactly as sent, across writes", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    const body = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    c.send("POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body.slice(0, 7));
    await waitFor(() => up.received.length > 0, "the head upstream");
    for (const piece of [body.slice(7, 20), body.slice(20, 33), body.slice(33)]) {
      c.send(piece);
      await Bun.sleep(1); // separate segments on the wire
    }
    const r = await c.readResponse();
    expect(r.body).toBe("up POST /up");
    expect(text(up.requests[0]!.body)).toBe(body);
    expect(header(up.requests[0]!, "transfer-encoding")).toBe("chunked");
  });

  test("a chunked response reaches the client exactly as sent, and the connection stays open", async () => {
    const chunks = ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab", "cd\r\n3;x=y\r\nefg\r\n", "0\r\nT: 1\r\n\r\n"];
    await using up = new RawUpstream("up", (req, s) => {
      if (req.target === "/again") return void s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain"));
      let i = 0;
      const next = () => {
        s.write(bytes(chunks[i++]!));
        if (i < chunks.length) setTimeout(next, 5);
      };
      next();
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await c.readResponse();
    expect(r.body).toBe("abcdefg");
    expect(r.rawBody).toBe("4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\nT: 1\r\n\r\n");
    c.send("GET /again HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).body).toBe("again");
    expect(up.accepts).toBe(1);
  });

  test("curl uploads and downloads chunked bodies through the proxy", async () => {
    await using up = new RawUpstream("up", (req, s) => {
      const echo = text(req.body);
      s.write(bytes(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${echo.length.toString(16)}\r\n${echo}\r\n0\r\n\r\n`));
    });
    await using px = startProxy([up.endpoint]);
    const proc = Bun.spawn(["curl", "-sS", "-H", "Transfer-Encoding: chunked", "--data-binary", "payload", `${px.url}/c`], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect({ out, err, code }).toEqual({ out: "7\r\npayload\r\n0\r\n\r\n", err: "", code: 0 });
  });

  test("Expect: 100-continue is forwarded and the upstream's 100 Continue relayed", async () => {
    await using up = new RawUpstream("up", undefined, (head, s) => {
      if (/expect: 100-continue/i.test(head)) s.write(bytes("HTTP/1.1 100 Continue\r\n\r\n"));
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    const interim = await c.readResponse();
    expect(interim.head).toBe("HTTP/1.1 100 Continue\r\n\r\n");
    c.send("hello");
    const r = await c.readResponse();
    expect(r.body).toBe("up PUT /e");
    expect(text(up.requests[0]!.body)).toBe("hello");
    expect(header(up.requests[0]!, "expect")).toBe("100-continue");
    // The connection is still usable.
    c.send("GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).body).toBe("up GET /next");
  });

  test("a final response without 100 Continue closes the connection when the body was not sent", async () => {
    await using up = new RawUpstream("up", undefined, (_head, s) => {
      s.write(bytes("HTTP/1.1 417 Expectation Failed\r\nContent-Length: 4\r\n\r\nnope"));
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    const r = await c.readResponse();
    expect(r.status).toBe(417);
    expect(header(r, "connection")).toBe("close");
    await c.whenClosed;
  });

  test("curl's Expect: 100-continue upload works end to end", async () => {
    await using up = new RawUpstream("up", (req, s) => {
      s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${req.body.length}\r\n\r\n`));
      s.write(req.body);
    }, (head, s) => {
      if (/expect: 100-continue/i.test(head)) s.write(bytes("HTTP/1.1 100 Continue\r\n\r\n"));
    });
    await using px = startProxy([up.endpoint]);
    const payload = "x".repeat(2 * 1024 * 1024);
    const proc = Bun.spawn(["curl", "-sS", "-H", "Expect: 100-continue", "--data-binary", "@-", `${px.url}/big`], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    proc.stdin.write(payload);
    await proc.stdin.end();
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect({ len: out.length, same: out === payload, err, code }).toEqual({ len: payload.length, same: true, err: "", code: 0 });
    expect(header(up.requests[0]!, "expect")).toBe("100-continue");
  });

  test("HEAD, 204 and 304 responses carry no body and keep the connection", async () => {
    await using up = new RawUpstream("up", (req, s) => {
      if (req.method === "HEAD") s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"));
      else if (req.target === "/204") s.write(bytes("HTTP/1.1 204 No Content\r\nX: y\r\n\r\n"));
      else if (req.target === "/304") s.write(bytes('HTTP/1.1 304 Not Modified\r\nETag: "a"\r\nContent-Length: 55\r\n\r\n'));
      else s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast"));
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    const head = await c.readResponse({ head: true });
    expect({ status: head.status, cl: header(head, "content-length") }).toEqual({ status: 200, cl: "1000" });
    c.send("GET /204 HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).head).toBe("HTTP/1.1 204 No Content\r\nX: y\r\n\r\n");
    c.send("GET /304 HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).status).toBe(304);
    c.send("GET /last HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).body).toBe("last");
    expect(c.unread).toBe("");
    expect(up.accepts).toBe(1);
  });

  test("a close-delimited response is relayed and then the client connection closes", async () => {
    await using up = new RawUpstream("up", (_req, s) => {
      s.write(bytes("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close"));
      s.end();
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.whenClosed;
    const r = await c.readResponse();
    expect(r.body).toBe("until close");
    expect(header(r, "connection")).toBe("close");
  });

  test("Connection: close from the client closes after the response", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    const r = await c.readResponse();
    expect(header(r, "connection")).toBe("close");
    await c.whenClosed;
    // The upstream connection was not closed because of the client: it was pooled.
    expect(header(up.requests[0]!, "connection")).toBeUndefined();
  });
});

describe("HTTP/1.0 clients", () => {
  test("a 1.0 request goes upstream as 1.1 with a Host, and the connection closes after", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n");
    const r = await c.readResponse();
    expect(r.body).toBe("up GET /old");
    expect(header(r, "connection")).toBe("close");
    await c.whenClosed;
    expect(up.requests[0]!.head).toBe(
      `GET /old HTTP/1.1\r\nUser-Agent: x\r\nHost: 127.0.0.1:${px.port}\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n` +
        `X-Forwarded-Host: 127.0.0.1:${px.port}\r\nForwarded: for=127.0.0.1;host="127.0.0.1:${px.port}";proto=http\r\n\r\n`,
    );
  });

  test("a 1.0 keep-alive client keeps its connection for length-delimited responses", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    for (const path of ["/a", "/b"]) {
      c.send(`GET ${path} HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n`);
      const r = await c.readResponse();
      expect({ body: r.body, conn: header(r, "connection") }).toEqual({ body: `up GET ${path}`, conn: "keep-alive" });
    }
    expect(c.closed).toBe(false);
  });

  test("a chunked response to a 1.0 client is de-chunked and close-delimited", async () => {
    await using up = new RawUpstream("up", (_req, s) => {
      s.write(bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n3\r\nabc\r\n"));
      setTimeout(() => s.write(bytes("2;e=1\r\nde\r\n0\r\nT: x\r\n\r\n")), 5);
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    await c.whenClosed;
    expect(c.unread).toBe("HTTP/1.1 200 OK\r\nX: 1\r\nConnection: close\r\n\r\nabcde");
  });
});

describe("pipelining", () => {
  test("three requests in one write are answered in order", async () => {
    let first = true;
    await using up = new RawUpstream("up", (req, s) => {
      const body = `${req.method} ${req.target} ${text(req.body)}`;
      const send = () => s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
      // Delay the first answer: the later requests must still wait their turn.
      if (first) setTimeout(send, 30);
      else send();
      first = false;
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send(
      "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" +
        "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody" +
        "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    const bodies = [(await c.readResponse()).body, (await c.readResponse()).body, (await c.readResponse()).body];
    expect(bodies).toEqual(["GET /1 ", "POST /2 body", "GET /3 "]);
    expect(up.accepts).toBe(2); // the POST goes on a new connection (see "upstream connection pool")
  });

  test("pipelined requests after Connection: close are not answered", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.whenClosed;
    expect((await c.readResponse()).body).toBe("up GET /1");
    expect(c.unread).toBe("");
    expect(up.requests.map((r) => r.target)).toEqual(["/1"]);
  });

  test("requests sent before a client half-close are all answered", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    (c.socket as unknown as { shutdown(): void }).shutdown();
    await c.whenClosed;
    expect([(await c.readResponse()).body, (await c.readResponse()).body]).toEqual(["up GET /1", "up GET /2"]);
  });
});

describe("client half-close", () => {
  test("a client that half-closes after an answered request, or after blank lines only, is closed", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using a = await RawClient.connect(px.port);
    a.send("\r\n\r\n");
    (a.socket as unknown as { shutdown(): void }).shutdown();
    await a.whenClosed;
    expect(a.unread).toBe("");
    await using b = await RawClient.connect(px.port);
    b.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await b.readResponse();
    (b.socket as unknown as { shutdown(): void }).shutdown();
    await b.whenClosed;
    await waitFor(() => px.proxy.active() === 0, "both connections to be gone");
  });
});

describe("upstream connection pool", () => {
  test("a request on a pooled connection the upstream has dropped is retried once on a new one", async () => {
    await using up = new RawUpstream("up", (req, s) => {
      // Drop the connection on its second request without answering (the keep-alive race).
      if (s.data.served === 2) return void s.terminate();
      s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${req.target.length}\r\n\r\n${req.target}`));
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /one HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).body).toBe("/one");
    c.send("GET /two HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).body).toBe("/two");
    expect(up.accepts).toBe(2);
    expect(up.requests.map((r) => r.target)).toEqual(["/one", "/two", "/two"]);
  });

  test("a POST never goes on a pooled connection (it could not be resent after the keep-alive race): it gets a new one", async () => {
    await using up = new RawUpstream("up", (req, s) => {
      // A pooled connection would be dropped on its second request, as a backend closing it idle would.
      if (s.data.served === 2) return void s.terminate();
      s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${req.target.length}\r\n\r\n${req.target}`));
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /one HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).body).toBe("/one");
    c.send("POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok");
    expect((await c.readResponse()).body).toBe("/pay");
    expect(up.requests.map((r) => `${r.target}@${r.conn}`)).toEqual(["/one@0", "/pay@1"]);
  });

  test("a streamed request body is not resent, even for an idempotent method: the client gets 502", async () => {
    await using up = new RawUpstream("up", (req, s) => {
      // The request arrives complete only after its body was streamed: drop it unanswered.
      if (req.target === "/stream") return void s.terminate();
      s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok`));
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET /one HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.readResponse();
    c.send("PUT /stream HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n");
    await waitFor(() => up.received.length > 0 && text(up.received).includes("/stream"), "the head upstream");
    c.send("0123456789");
    const r = await c.readResponse();
    expect(r.status).toBe(502);
    await c.whenClosed;
    expect(up.requests.map((q) => `${q.target}@${q.conn}`)).toEqual(["/one@0", "/stream@1"]);
  });
});

describe("upstream connection pool limits", () => {
  test("an upstream that closes an idle pooled connection is noticed, and the next request opens a new one", async () => {
    await using up = new RawUpstream("up", (req, s) => {
      s.write(bytes(`HTTP/1.1 200 OK\r\nContent-Length: ${req.target.length}\r\n\r\n${req.target}`));
      setTimeout(() => s.end(), 5); // the upstream's own keep-alive timeout
    });
    await using px = startProxy([up.endpoint]);
    expect((await fetch(`${px.url}/a`).then((r) => r.text()))).toBe("/a");
    await waitFor(() => up.sockets.size === 0 && idleUpstreams() === 0, "the pooled connection to be dropped");
    expect((await fetch(`${px.url}/b`).then((r) => r.text()))).toBe("/b");
    expect({ accepts: up.accepts, requests: up.requests.length }).toEqual({ accepts: 2, requests: 2 });
  });

  test("Connection: close from the upstream keeps its connection out of the pool", async () => {
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")));
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    for (let i = 0; i < 3; i++) {
      c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
      const r = await c.readResponse();
      expect({ body: r.body, conn: header(r, "connection") }).toEqual({ body: "ok", conn: undefined });
    }
    expect(up.accepts).toBe(3);
  });

  test("idle pooled connections are closed after the pool's idle timeout, and at most maxIdlePerEndpoint are kept", async () => {
    const saved = { ...poolSettings };
    poolSettings.idleTimeoutMs = 150;
    poolSettings.maxIdlePerEndpoint = 2;
    try {
      const release: (() => void)[] = [];
      await using up = new RawUpstream("up", (_req, s) => {
        release.push(() => s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")));
      });
      await using px = startProxy([up.endpoint]);
      const clients = await Promise.all([0, 1, 2, 3].map(() => RawClient.connect(px.port)));
      for (const c of clients) c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
      await waitFor(() => release.length === 4, "four concurrent upstream requests");
      for (const r of release) r();
      for (const c of clients) expect((await c.readResponse()).body).toBe("ok");
      expect(up.accepts).toBe(4);
      await waitFor(() => up.sockets.size === 2, "two of four connections to be pooled");
      expect(idleUpstreams()).toBe(2);
      await waitFor(() => up.sockets.size === 0 && idleUpstreams() === 0, "the idle timeout");
      for (const c of clients) await c[Symbol.asyncDispose]();
    } finally {
      Object.assign(poolSettings, saved);
    }
  });
});

describe("interim responses", () => {
  test("103 Early Hints goes to HTTP/1.1 clients, not to HTTP/1.0 ones", async () => {
    await using up = new RawUpstream("up", (_req, s) => {
      s.write(bytes("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    });
    await using px = startProxy([up.endpoint]);
    await using c = await RawClient.connect(px.port);
    c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.readResponse()).head).toBe("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
    expect((await c.readResponse()).body).toBe("ok");
    c.send("GET / HTTP/1.0\r\nHost: h\r\n\r\n");
    const r = await c.readResponse();
    expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: "ok" });
  });
});

describe("drain and close", () => {
  test("drain closes idle connections now and busy ones after their response", async () => {
    let release: (() => void) | undefined;
    await using up = new RawUpstream("up", (req, s) => {
      const answer = () => s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow"));
      if (req.target === "/slow") release = answer;
      else answer();
    });
    await using px = startProxy([up.endpoint]);
    // Idle: kept alive after one exchange.
    await using idle = await RawClient.connect(px.port);
    idle.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await idle.readResponse()).body).toBe("slow");
    await using busy = await RawClient.connect(px.port);
    busy.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    await waitFor(() => release !== undefined && px.proxy.active() === 2, "the busy request upstream");
    const drained = px.proxy.drain();
    await idle.whenClosed;
    await waitFor(() => px.proxy.active() === 1, "the idle connection to be gone");
    expect(busy.closed).toBe(false);
    release!();
    const r = await busy.readResponse();
    expect({ body: r.body, conn: header(r, "connection") }).toEqual({ body: "slow", conn: "close" });
    await drained;
    expect(px.proxy.active()).toBe(0);
  });

  test("drain answers a new connection's first request (sent after the drain began), then closes it", async () => {
    await using up = new RawUpstream("up", (_req, s) => void s.write(bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")));
    await using px = startProxy([up.endpoint]);
    // Accepted just before the drain; its request is still on the way (a listener closing at a hand-over).
    await using fresh = await RawClient.connect(px.port);
    await waitFor(() => px.proxy.active() === 1, "the connection to be accepted");
    const drained = px.proxy.drain();
    expect(fresh.closed).toBe(false);
    fresh.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await fresh.readResponse();
    expect({ body: r.body, conn: header(r, "connection") }).toEqual({ body: "ok", conn: "close" });
    await fresh.whenClosed;
    await drained;
  });

  test("drain closes a new connection whose client stays silent after a short grace", async () => {
    await using up = new RawUpstream();
    await using px = startProxy([up.endpoint]);
    await using silent = await RawClient.connect(px.port);
    await waitFor(() => px.proxy.active() === 1, "the connection to be accepted");
    const started = performance.now();
    await px.proxy.drain();
    await silent.whenClosed;
    // Not at once (its request may be on the way), and long before the 30 s request head timeout.
    expect(performance.now() - started).toBeGreaterThanOrEqual(FRESH_DRAIN_MS - 50);
    expect(performance.now() - started).toBeLessThan(FRESH_DRAIN_MS + 2_000);
  });

  test("closeAll closes every connection at once", async () => {
    await using up = new RawUpstream("up", () => {});
    await using px = startProxy([up.endpoint]);
    await using a = await RawClient.connect(px.port);
    await using b = await RawClient.connect(px.port);
    b.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await waitFor(() => up.requests.length === 1 && px.proxy.active() === 2, "connections");
    px.proxy.closeAll();
    await Promise.all([a.whenClosed, b.whenClosed]);
    await waitFor(() => px.proxy.active() === 0, "bookkeeping");
  });
});
