/**
 * HTTP cookie affinity through real sockets: the gateway sets an opaque cookie naming the endpoint that
 * served, and a request carrying it goes back there; a bogus or stale cookie gets a new pick and a new cookie.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cookieToken } from "../../../src/balancer/cookie.ts";
import { RouteBuilder } from "../../../src/routes/builder.ts";
import type { Entrypoint } from "../../../src/model/types.ts";
import { entrypoint } from "../../support/entrypoints.ts";
import { bytes, endpoint, header, RawClient, RawUpstream, startProxy } from "../../support/http-harness.ts";

const SECRET = "test-secret";
const NAME = "test/svc:tcp"; // entrypoint()'s default name

function cookieEntrypoint(ports: readonly number[], ttlSeconds = 3600): Entrypoint {
  return { ...entrypoint({ protocol: "http", endpoints: ports }), sessionAffinity: { mode: "None", timeoutSeconds: 10_800, cookie: { name: "kg", ttlSeconds } } };
}

const tokenOf = (port: number) => cookieToken(SECRET, NAME, endpoint(port));

async function threeUpstreams() {
  const ups = [new RawUpstream("A"), new RawUpstream("B"), new RawUpstream("C")] as const;
  const routes = new RouteBuilder({ rng: () => 0, cookieSecret: SECRET });
  const px = startProxy([]);
  px.ref.current = routes.route(cookieEntrypoint(ups.map((u) => u.port)));
  return {
    ups,
    px,
    routes,
    async [Symbol.asyncDispose]() {
      await px[Symbol.asyncDispose]();
      for (const u of ups) await u[Symbol.asyncDispose]();
    },
  };
}

describe("cookie affinity", () => {
  test("a response without the cookie sets it; requests carrying it stick and set nothing", async () => {
    await using t = await threeUpstreams();
    const [a] = t.ups;
    await using c = await RawClient.connect(t.px.port);
    c.send("GET /1 HTTP/1.1\r\nHost: web\r\n\r\n");
    const first = await c.readResponse();
    expect(first.body).toBe("A GET /1");
    expect(header(first, "set-cookie")).toBe(`kg=${tokenOf(a.port)}; Path=/; Max-Age=3600; HttpOnly`);
    expect(first.head).toBe(
      `HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Type: text/plain\r\nSet-Cookie: kg=${tokenOf(a.port)}; Path=/; Max-Age=3600; HttpOnly\r\n\r\n`,
    );
    for (let i = 2; i <= 5; i++) {
      c.send(`GET /${i} HTTP/1.1\r\nHost: web\r\nCookie: kg=${tokenOf(a.port)}\r\n\r\n`);
      const r = await c.readResponse();
      expect(r.body).toBe(`A GET /${i}`);
      expect(header(r, "set-cookie")).toBeUndefined();
    }
    // The cookie reaches the upstream unchanged.
    expect(header(a.requests[1]!, "cookie")).toBe(`kg=${tokenOf(a.port)}`);
  });

  test.each([
    ["among other cookies", (t: string) => `Cookie: sid=1; kg=${t}; theme=dark\r\n`],
    ["in a second Cookie field", (t: string) => `Cookie: sid=1\r\nCookie: kg=${t}\r\n`],
    ["quoted", (t: string) => `Cookie: kg="${t}"\r\n`],
    ["with odd spacing and a pair without =", (t: string) => `Cookie:  flag ;kg = ${t} ;x=y\r\n`],
    ["after a bogus kg in the same field", (t: string) => `Cookie: kg=bogus; kg=${t}\r\n`],
  ])("the cookie is found %s", async (_case, cookie) => {
    await using t = await threeUpstreams();
    const [, b] = t.ups;
    await using c = await RawClient.connect(t.px.port);
    c.send(`GET /x HTTP/1.1\r\nHost: web\r\n${cookie(tokenOf(b.port))}\r\n`);
    const r = await c.readResponse();
    expect(r.body).toBe("B GET /x");
    expect(header(r, "set-cookie")).toBeUndefined();
  });

  test.each([
    ["a bogus value", "kg=bogus"],
    ["a name in another case", "KG=TOKEN_B"],
    ["a token forged with another key", "kg=FORGED"],
    ["an empty value", "kg="],
  ])("%s gets a normal pick and a new cookie", async (_case, value) => {
    await using t = await threeUpstreams();
    const [a, b] = t.ups;
    const forged = cookieToken("other-secret", NAME, endpoint(b.port));
    await using c = await RawClient.connect(t.px.port);
    c.send(`GET /x HTTP/1.1\r\nHost: web\r\nCookie: ${value.replace("TOKEN_B", tokenOf(b.port)).replace("FORGED", forged)}\r\n\r\n`);
    const r = await c.readResponse();
    expect(r.body).toBe("A GET /x");
    expect(header(r, "set-cookie")).toBe(`kg=${tokenOf(a.port)}; Path=/; Max-Age=3600; HttpOnly`);
  });

  test("a cookie naming a removed endpoint gets a new pick and a new cookie; the upstream's own Set-Cookie is kept", async () => {
    await using a = new RawUpstream("A");
    await using b = new RawUpstream("B", (req, s) => {
      s.write(bytes(`HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nContent-Length: 1\r\n\r\nB`));
      void req;
    });
    const routes = new RouteBuilder({ rng: () => 0, cookieSecret: SECRET });
    await using px = startProxy([]);
    px.ref.current = routes.route(cookieEntrypoint([a.port, b.port], 0));
    px.ref.current = routes.route(cookieEntrypoint([b.port], 0), px.ref.current);
    await using c = await RawClient.connect(px.port);
    c.send(`GET / HTTP/1.1\r\nHost: web\r\nCookie: kg=${tokenOf(a.port)}\r\n\r\n`);
    const r = await c.readResponse();
    expect(r.body).toBe("B");
    // A session cookie (ttl 0): no Max-Age.
    expect(r.head).toBe(`HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nContent-Length: 1\r\nSet-Cookie: kg=${tokenOf(b.port)}; Path=/; HttpOnly\r\n\r\n`);
  });

  test("when the cookie's endpoint refuses, another serves and the cookie is re-issued for it", async () => {
    await using t = await threeUpstreams();
    const [a, b, c3] = t.ups;
    const deadPort = a.port;
    await a[Symbol.asyncDispose]();
    await using c = await RawClient.connect(t.px.port);
    c.send(`GET /x HTTP/1.1\r\nHost: web\r\nCookie: kg=${tokenOf(deadPort)}\r\n\r\n`);
    const r = await c.readResponse();
    expect(["B GET /x", "C GET /x"]).toContain(r.body);
    const served = r.body.startsWith("B") ? b : c3;
    expect(header(r, "set-cookie")).toBe(`kg=${tokenOf(served.port)}; Path=/; Max-Age=3600; HttpOnly`);
  });

  test("curl with a cookie jar sticks to one endpoint; without it, requests rotate", async () => {
    await using t = await threeUpstreams();
    const dir = mkdtempSync(join(tmpdir(), "kg-cookie-"));
    await using _dir = { [Symbol.asyncDispose]: async () => rmSync(dir, { recursive: true, force: true }) };
    const jar = join(dir, "jar.txt");
    const curl = async (withJar: boolean) => {
      const args = ["curl", "-sS", "--max-time", "5", ...(withJar ? ["-b", jar, "-c", jar] : []), `${t.px.url}/`];
      const p = Bun.spawn(args, { stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      expect({ err, code }).toEqual({ err: "", code: 0 });
      return out.split(" ")[0];
    };
    const jarred = [];
    for (let i = 0; i < 4; i++) jarred.push(await curl(true));
    expect(jarred).toEqual(["A", "A", "A", "A"]);
    const bare = [await curl(false), await curl(false), await curl(false)];
    expect(bare).toEqual(["B", "C", "A"]);
  });
});
