/**
 * The live admin page on the admin app: `/` (server-rendered first paint), `/assets/page.js` and
 * `/assets/page.css`, `/favicon.svg` (same origin, no CDN), `/api/state` (polling) and `/api/events` (SSE).
 * A strict Content-Security-Policy allows only same-origin scripts, styles and connections.
 */
import type { Hono } from "hono";
import { clientScript } from "./client.ts";
import { pageEvents } from "./events.ts";
import { assetPaths, pageHtml } from "./html.ts";
import { TrafficHistory } from "./history.ts";
import { type PageSource, TrafficRates, pageQuery, pageState } from "./state.ts";
import { pageCss, pageIcon } from "./style.ts";

export type { AdminHealth, AdminStateFile, PageState, TrafficSample } from "./state.ts";

/** Options of {@link pageRoutes}. */
export interface PageOptions {
  /** Interval of SSE state checks and keep-alives (default 1000 ms). */
  readonly tickMs?: number | undefined;
  /** Ends every open event stream (abort it before closing the admin server). */
  readonly signal?: AbortSignal | undefined;
  /** Wall clock (ms). */
  readonly now?: (() => number) | undefined;
}

const csp = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const securityHeaders = { "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer" };

/** Add the page's routes to `app`. */
export function pageRoutes(app: Hono, view: PageSource, options: PageOptions = {}): Hono {
  const rates = new TrafficRates();
  const history = new TrafficHistory();
  const now = options.now ?? Date.now;
  const script = clientScript();
  const state = (url: string) => pageState(view, pageQuery(new URL(url).searchParams), { now: now(), rates, history });

  app.get("/", (c) => c.html(pageHtml(state(c.req.url)), 200, { ...securityHeaders, "Cache-Control": "no-store" }));
  app.get(assetPaths.script, (c) =>
    c.body(script, 200, { ...securityHeaders, "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache" }),
  );
  app.get(assetPaths.style, (c) => c.body(pageCss, 200, { ...securityHeaders, "Content-Type": "text/css; charset=utf-8", "Cache-Control": "no-cache" }));
  app.get(assetPaths.icon, (c) => c.body(pageIcon, 200, { ...securityHeaders, "Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400" }));
  app.get("/favicon.ico", (c) => c.redirect(assetPaths.icon, 301));
  app.get("/api/state", (c) => c.json(state(c.req.url), 200, { ...securityHeaders, "Cache-Control": "no-store" }));
  app.get("/api/events", (c) =>
    pageEvents(c, view, pageQuery(new URL(c.req.url).searchParams), {
      tickMs: options.tickMs,
      subscribe: view.subscribe ? (onChange) => view.subscribe!(onChange) : undefined,
      signal: options.signal,
      rates,
      history,
      now,
    }),
  );
  return app;
}
