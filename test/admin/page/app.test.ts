/**
 * The admin app's page routes through `app.request()` (no sockets): the server-rendered page, its
 * assets and headers, escaping of hostile names, `/api/state`, and the SSE stream on `/api/events`.
 */
import { describe, expect, test } from "bun:test";
import { type AdminView, adminApp } from "../../../src/admin/app.ts";
import { escapeHtml, hServer, toHtml } from "../../../src/admin/page/html.ts";
import type { PageState } from "../../../src/admin/page/state.ts";
import type { Entrypoint, Snapshot } from "../../../src/model/types.ts";
import { rt } from "../../../src/runtime/index.ts";
import { entrypoint } from "../../support/entrypoints.ts";
import { waitFor } from "../../support/wait.ts";

const hostile = "<img src=x onerror=alert(1)>";

function snap(version: number, entrypoints: Entrypoint[], errors: Snapshot["errors"] = []): Snapshot {
  return { version, entrypoints, errors, node: { name: "node-a" } };
}

/** A view whose snapshot tests can replace, with a change subscription they can observe. */
function testView(initial: Snapshot | undefined) {
  let current = initial;
  const subscribers = new Set<() => void>();
  const view: AdminView = {
    snapshot: () => current,
    listeners: () => (current?.entrypoints ?? []).map((e) => ({ key: e.key, listeners: e.addresses.map((address) => ({ address, port: e.port, bound: true })) })),
    sources: () => [{ kind: "Service", synced: true, phase: "watching", lists: 1, watches: 1, objects: current?.entrypoints.length ?? 0 }],
    subscribe(onChange) {
      subscribers.add(onChange);
      return () => subscribers.delete(onChange);
    },
  };
  return {
    view,
    subscribers,
    publish(next: Snapshot) {
      current = next;
      for (const s of subscribers) s();
    },
  };
}

interface SseEvent {
  event: string;
  data: string;
  id?: string;
  retry?: string;
}

/** Reads server-sent events from a response body, each within a deadline. */
function sse(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  return {
    async next(timeoutMs = 2_000): Promise<SseEvent> {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const end = buf.indexOf("\n\n");
        if (end >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const ev: SseEvent = { event: "message", data: "" };
          for (const line of block.split("\n")) {
            const [field, ...rest] = line.split(": ");
            const value = rest.join(": ");
            if (field === "data") ev.data += value;
            else if (field === "event" || field === "id" || field === "retry") ev[field] = value;
          }
          return ev;
        }
        const left = deadline - performance.now();
        if (left <= 0) throw new Error(`No server-sent event within ${timeoutMs} ms`);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`No server-sent event within ${timeoutMs} ms`)), left)));
        const chunk = await Promise.race([reader.read(), timeout]).finally(() => clearTimeout(timer));
        if (chunk.done) throw new Error("The event stream ended");
        buf += decoder.decode(chunk.value, { stream: true });
      }
    },
    /** Resolves true once the stream has ended. */
    async ended(): Promise<boolean> {
      for (;;) if ((await reader.read()).done) return true;
    },
    cancel: () => reader.cancel(),
  };
}

describe("admin page", () => {
  test("/ renders the state server-side, with same-origin assets and a strict CSP", async () => {
    const { view } = testView(snap(3, [entrypoint({ name: "shop/web:http", protocol: "http", port: 30080, endpoints: [8080] })]));
    const app = adminApp(view);
    const res = await app.request("/");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=UTF-8");
    expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
    const html = await res.text();
    expect(html).toStartWith("<!doctype html>");
    expect(html).toContain("<strong>shop/web:http</strong>");
    expect(html).toContain("<code>127.0.0.1:30080</code> <span class=\"badge ok\">bound</span>");
    expect(html).toContain('<span class="badge ok">ready</span>');
    expect(html).toContain('<main id="app" data-version="3">');
    // No external resources: every src/href is same-origin.
    const refs = [...html.matchAll(/(?:src|href)="([^"]*)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) expect(ref).toMatch(/^[/#]/);
    // Without JavaScript the page refreshes itself.
    expect(html).toContain('<noscript><meta http-equiv="refresh" content="10"></noscript>');

    const js = await app.request("/assets/page.js");
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    const script = await js.text();
    expect(() => new Function(script)).not.toThrow();
    expect(script).not.toContain("innerHTML");
    expect(script).toContain('new EventSource(`/api/events${query}`)');
    const css = await app.request("/assets/page.css");
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect(await css.text()).not.toMatch(/url\(|@import/);
  });

  test("a hostile Service name and error message are escaped everywhere on the page", async () => {
    const bad = entrypoint({ name: `${hostile}/${hostile}:http`, protocol: "http", port: 30080, endpoints: [8080] });
    const quote = entrypoint({ name: `x"><script>alert(2)</script>/svc:http`, port: 30081 });
    const { view } = testView(snap(1, [bad, quote], [{ kind: "Service", object: `${hostile}/${hostile}`, message: `Annotation value ${hostile} is invalid` }]));
    const html = await (await adminApp(view).request("/")).text();
    expect(html).not.toContain("<img");
    expect(html).not.toContain("<script>alert");
    expect(html).toContain(`<strong>${escapeHtml(bad.name)}</strong>`);
    expect(escapeHtml(bad.name)).toBe("&lt;img src=x onerror=alert(1)&gt;/&lt;img src=x onerror=alert(1)&gt;:http");
    expect(html).toContain(`data-key="NodePort/x&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;/svc:http"`);
    expect(html).toContain(`Annotation value &lt;img src=x onerror=alert(1)&gt; is invalid`);
    // The filter echoes the query into an attribute: escaped too.
    const echoed = await (await adminApp(view).request(`/?q=${encodeURIComponent(`"><img src=x>`)}`)).text();
    expect(echoed).toContain('value="&quot;&gt;&lt;img src=x&gt;"');
    expect(echoed).not.toContain("<img");
  });

  test("the server renderer refuses event-handler attributes and odd tag names", () => {
    expect(() => toHtml(hServer("div", { onclick: "x" }))).toThrow('Cannot render element: attribute "onclick" is not allowed');
    expect(() => toHtml(hServer("di v", null))).toThrow('Cannot render element: tag "di v" is not a plain name');
    expect(toHtml(hServer("p", { title: `a"b`, hidden: true, class: undefined }, "1 < 2 & ", 3))).toBe('<p title="a&quot;b" hidden>1 &lt; 2 &amp; 3</p>');
  });

  test("/api/state is the page state as JSON, filtered by the query", async () => {
    const { view } = testView(snap(4, [entrypoint({ name: "a/one:http", port: 30001 }), entrypoint({ name: "b/two:http", port: 30002 })]));
    const res = await adminApp(view, { now: () => 42 }).request("/api/state?q=two");
    expect(res.headers.get("cache-control")).toBe("no-store");
    const state = (await res.json()) as PageState;
    expect(state).toMatchObject({ version: 4, at: 42, synced: true, filter: { q: "two", limit: 200, matched: 1 } });
    expect(state.entrypoints.map((e) => e.key)).toEqual(["NodePort/b/two:http"]);
  });

  test("/api/snapshot and /api/status keep their shape", async () => {
    const { view } = testView(snap(2, [entrypoint({ name: "a/one:http", port: 30001, endpoints: [8080] })]));
    expect(await (await adminApp(view).request("/api/snapshot")).json()).toEqual({
      version: 2,
      synced: true,
      node: { name: "node-a" },
      entrypoints: [
        {
          name: "a/one:http",
          key: "NodePort/a/one:http",
          type: "NodePort",
          protocol: "tcp",
          namespace: "a",
          service: "one",
          addresses: ["127.0.0.1"],
          port: 30001,
          externalTrafficPolicy: "Cluster",
          listeners: [{ address: "127.0.0.1", port: 30001, bound: true }],
          endpoints: [{ address: "127.0.0.1", port: 8080, ready: true, serving: true, terminating: false }],
          servingEndpoints: 1,
          chosen: ["127.0.0.1:8080"],
          sessionAffinity: { mode: "None" },
        },
      ],
      errors: [],
    });
    expect(await (await adminApp(view).request("/api/status")).json()).toEqual({
      sources: [{ kind: "Service", synced: true, phase: "watching", lists: 1, watches: 1, objects: 1 }],
      listeners: [{ key: "NodePort/a/one:http", listeners: [{ address: "127.0.0.1", port: 30001, bound: true }] }],
    });
  });

  test("/api/status shows health and the state file; the page shows a stale state and a shutdown", async () => {
    const { view } = testView(snap(2, [entrypoint({ name: "a/one:http", port: 30001, endpoints: [8080] })]));
    const at = Date.UTC(2026, 0, 2, 3, 4, 5);
    let stale = true;
    let shuttingDown = false;
    const full: AdminView = {
      ...view,
      health: () => ({ healthy: true, nodeEligible: true, ready: !shuttingDown, lastUpdated: at, shuttingDown }),
      state: () => ({ file: "/var/lib/kubegate/state.json", stale, savedAt: at - 90_000, replayed: 7, removed: stale ? 0 : 2, skipped: 0, writer: true, writes: stale ? 0 : 1, writeErrors: 0, ...(stale ? {} : { lastWriteAt: at }) }),
    };
    const app = adminApp(full, { now: () => at });
    expect(((await (await app.request("/api/status")).json()) as Record<string, unknown>).state).toEqual({
      file: "/var/lib/kubegate/state.json",
      stale: true,
      savedAt: "2026-01-02T03:02:35.000Z",
      replayed: 7,
      removed: 0,
      skipped: 0,
      writer: true,
      writes: 0,
      writeErrors: 0,
    });
    const page = await (await app.request("/")).text();
    expect(page).toContain("stale: saved state");
    expect(page).toContain("state file saved 2 min ago");
    expect(page).toContain("<code>/var/lib/kubegate/state.json</code>");
    expect(((await (await app.request("/api/state")).json()) as PageState).state).toEqual({ file: "/var/lib/kubegate/state.json", stale: true, savedAt: at - 90_000 });

    stale = false;
    shuttingDown = true;
    const status = (await (await app.request("/api/status")).json()) as { state: Record<string, unknown>; health: Record<string, unknown> };
    expect(status.state).toMatchObject({ stale: false, removed: 2, writes: 1, lastWriteAt: "2026-01-02T03:04:05.000Z" });
    expect(status.health).toMatchObject({ shuttingDown: true, ready: false });
    const after = await (await app.request("/")).text();
    expect(after).not.toContain("stale: saved state");
    expect(after).toContain("503 shutting down");
    expect(after).toContain("written 0 s ago");
  });
});

describe("admin page events (SSE)", () => {
  test("the first event is the whole state", async () => {
    const { view } = testView(snap(5, [entrypoint({ name: "shop/web:http", port: 30080 })]));
    const res = await adminApp(view, { now: () => 1_000 }).request("/api/events");
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    const events = sse(res);
    try {
      const first = await events.next();
      expect(first).toMatchObject({ event: "state", id: "1", retry: "1000" });
      const state = JSON.parse(first.data) as PageState;
      expect(state).toMatchObject({ version: 5, at: 1_000, synced: true });
      expect(state.entrypoints.map((e) => e.name)).toEqual(["shop/web:http"]);
    } finally {
      await events.cancel();
    }
  });

  test("a change notification pushes the new state at once; an unchanged state only ticks", async () => {
    const t = testView(snap(1, []));
    // Ticks far apart: the new state must come from the notification.
    const events = sse(await adminApp(t.view, { tickMs: 60_000 }).request("/api/events"));
    try {
      expect(JSON.parse((await events.next()).data).version).toBe(1);
      await waitFor(() => t.subscribers.size === 1, { what: "the stream to subscribe" });
      t.publish(snap(2, [entrypoint({ name: "shop/new:http", port: 30090 })]));
      const next = await events.next(1_000);
      expect(next.event).toBe("state");
      expect((JSON.parse(next.data) as PageState).entrypoints.map((e) => e.name)).toEqual(["shop/new:http"]);
      // A notification without a change: a tick carrying the time and version only.
      t.publish(snap(2, [entrypoint({ name: "shop/new:http", port: 30090 })]));
      const tick = await events.next(1_000);
      expect(tick.event).toBe("tick");
      expect(Object.keys(JSON.parse(tick.data)).sort()).toEqual(["at", "version"]);
    } finally {
      await events.cancel();
    }
  });

  test("a burst of changes is coalesced: at most one state per 100 ms, ending with the latest", async () => {
    const t = testView(snap(1, []));
    const events = sse(await adminApp(t.view, { tickMs: 60_000 }).request("/api/events"));
    try {
      await events.next();
      await waitFor(() => t.subscribers.size === 1, { what: "the stream to subscribe" });
      // Read while publishing, so the stream is never held back by an unread body.
      const versions: number[] = [];
      const reading = (async () => {
        while (versions.at(-1) !== 31) versions.push((JSON.parse((await events.next(2_000)).data) as PageState).version);
      })();
      const started = performance.now();
      for (let v = 2; v <= 31; v++) {
        t.publish(snap(v, [entrypoint({ name: `shop/s${v}:http`, port: 30000 + v })]));
        await new Promise((r) => setTimeout(r, 10));
      }
      await reading;
      const elapsed = performance.now() - started;
      expect(versions.length).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 1);
      // A burst with no gap at all is one state, the latest, however slow the box (no wall-time figure).
      for (let v = 32; v <= 41; v++) t.publish(snap(v, [entrypoint({ name: `shop/s${v}:http`, port: 30000 + v })]));
      expect((JSON.parse((await events.next(2_000)).data) as PageState).version).toBe(41);
    } finally {
      await events.cancel();
    }
  });

  test("the timer pushes changes the view does not announce (e.g. a listener bound later)", async () => {
    let bound = false;
    const ep = entrypoint({ name: "shop/web:http", port: 30080 });
    const view: AdminView = {
      snapshot: () => snap(1, [ep]),
      listeners: () => [{ key: ep.key, listeners: [{ address: "127.0.0.1", port: 30080, bound }] }],
      sources: () => [],
    };
    const events = sse(await adminApp(view, { tickMs: 20 }).request("/api/events"));
    try {
      expect((JSON.parse((await events.next()).data) as PageState).summary.listeners).toEqual({ bound: 0, unbound: 1 });
      bound = true;
      const state = await waitFor(async () => {
        const ev = await events.next();
        return ev.event === "state" && (JSON.parse(ev.data) as PageState);
      }, { what: "a state event with the listener bound" });
      expect(state.summary.listeners).toEqual({ bound: 1, unbound: 0 });
    } finally {
      await events.cancel();
    }
  });

  test("a client that disconnects is cleaned up: its subscription is released", async () => {
    const t = testView(snap(1, []));
    const app = adminApp(t.view, { tickMs: 20 });
    const a = sse(await app.request("/api/events"));
    const b = sse(await app.request("/api/events"));
    await a.next();
    await b.next();
    await waitFor(() => t.subscribers.size === 2, { what: "two subscriptions" });
    await a.cancel();
    await waitFor(() => t.subscribers.size === 1, { what: "the first stream to unsubscribe" });
    expect((await b.next()).event).toBe("tick");
    await b.cancel();
    await waitFor(() => t.subscribers.size === 0, { what: "the second stream to unsubscribe" });
  });

  test("aborting the app's signal ends every stream (so the server can close)", async () => {
    const t = testView(snap(1, []));
    const closing = new AbortController();
    const events = sse(await adminApp(t.view, { tickMs: 60_000, signal: closing.signal }).request("/api/events"));
    await events.next();
    closing.abort();
    expect(await events.ended()).toBe(true);
    await waitFor(() => t.subscribers.size === 0, { what: "the stream to unsubscribe" });
  });
});

describe("admin page events over a real server", () => {
  test("a browser that goes away releases its stream; the signal lets the server close with a stream open", async () => {
    const t = testView(snap(1, []));
    const closing = new AbortController();
    const app = adminApp(t.view, { tickMs: 50, signal: closing.signal });
    await using server = rt.serveHttp({ hostname: "127.0.0.1", port: 0, fetch: (r) => app.fetch(r) });
    const gone = new AbortController();
    const events = sse(await fetch(`http://127.0.0.1:${server.port}/api/events`, { signal: gone.signal }));
    expect((await events.next()).event).toBe("state");
    await waitFor(() => t.subscribers.size === 1, { what: "the stream to subscribe" });
    gone.abort();
    await waitFor(() => t.subscribers.size === 0, { what: "the server to notice the client left" });
    // One left open at shutdown: aborting the signal ends it.
    const open = sse(await fetch(`http://127.0.0.1:${server.port}/api/events`));
    await open.next();
    closing.abort();
    expect(await open.ended()).toBe(true);
    expect(t.subscribers.size).toBe(0);
  });
});
