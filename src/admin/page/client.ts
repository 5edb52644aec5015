/**
 * The admin page's browser script: follows `/api/events` (server-sent events) and re-renders
 * `<main id="app">` with the shared `renderPage`; falls back to polling `/api/state` when
 * EventSource is missing, closed, or silent (e.g. a buffering proxy). Text goes into the DOM as
 * text nodes only; attributes named `on*` are refused.
 *
 * The script is built from the functions' own source (`Function.prototype.toString`, which Bun
 * and Deno give as transpiled JavaScript), so `clientMain` and `renderPage` must be self-contained.
 */
import { type Attrs, type Child, type H, renderPage } from "./render.ts";
import type { PageState } from "./state.ts";

/** Client timings (ms). */
export interface ClientTimings {
  /** Poll interval of the fallback. */
  readonly pollMs: number;
  /** Switch to polling when the event stream is silent this long (the server ticks every second). */
  readonly silentMs: number;
}

/** Runs in the browser. */
export function clientMain(render: typeof renderPage, timings: ClientTimings): void {
  const app = document.getElementById("app");
  const live = document.getElementById("live");
  if (!app || !live) return;
  const append = (el: Element, c: Child<Element>): void => {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) for (const x of c as readonly Child<Element>[]) append(el, x);
    else if (typeof c === "string" || typeof c === "number") el.appendChild(document.createTextNode(String(c)));
    else el.appendChild(c as Element);
  };
  // The charts are SVG: their elements need the SVG namespace.
  const svg = ["svg", "polyline", "line"];
  const h: H<Element> = (tag: string, attrs: Attrs | null, ...children: Child<Element>[]) => {
    const el = svg.includes(tag) ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (const [name, value] of Object.entries(attrs ?? {})) {
      if (value === undefined || value === false || /^on/i.test(name)) continue;
      el.setAttribute(name, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  };

  let mode: "connecting" | "live" | "reconnecting" | "polling" | "offline" = "connecting";
  let lastMessage = Date.now();
  let lastState = Date.now();
  let source: EventSource | undefined;
  let pollTimer: ReturnType<typeof setTimeout> | undefined;
  const query = location.search;

  const status = (): void => {
    const age = Math.round((Date.now() - lastState) / 1000);
    const text =
      mode === "live"
        ? `live · updated ${age} s ago`
        : mode === "polling"
          ? `polling every ${Math.round(timings.pollMs / 1000)} s · updated ${age} s ago`
          : mode === "reconnecting"
            ? "reconnecting…"
            : mode === "offline"
              ? `offline · last update ${age} s ago · retrying`
              : "connecting…";
    live.className = `live ${mode === "live" || mode === "polling" ? "on" : mode === "connecting" ? "off" : "warn"}`;
    live.textContent = text;
  };
  const show = (state: PageState): void => {
    lastMessage = Date.now();
    lastState = Date.now();
    app.setAttribute("data-version", String(state.version));
    app.replaceChildren(...render(h, state));
    status();
  };

  const poll = async (): Promise<void> => {
    try {
      const res = await fetch(`/api/state${query}`, { cache: "no-store" });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      mode = "polling";
      show((await res.json()) as PageState);
    } catch {
      mode = "offline";
      status();
    }
    pollTimer = setTimeout(poll, timings.pollMs);
  };
  const startPolling = (): void => {
    source?.close();
    source = undefined;
    if (pollTimer === undefined) void poll();
  };

  if (typeof EventSource === "undefined") startPolling();
  else {
    source = new EventSource(`/api/events${query}`);
    source.addEventListener("state", (e) => {
      mode = "live";
      show(JSON.parse((e as MessageEvent<string>).data) as PageState);
    });
    source.addEventListener("tick", () => {
      mode = "live";
      lastMessage = Date.now();
      lastState = Date.now();
      status();
    });
    source.onerror = () => {
      if (source?.readyState === EventSource.CLOSED) startPolling();
      else {
        mode = "reconnecting";
        status();
      }
    };
  }
  setInterval(() => {
    if (source && Date.now() - lastMessage > timings.silentMs) startPolling();
    status();
  }, 1000);
  status();
}

/** The script served at `/assets/page.js`. */
export function clientScript(timings: ClientTimings = { pollMs: 2_000, silentMs: 5_000 }): string {
  return `"use strict";\n(${clientMain.toString()})(\n${renderPage.toString()},\n${JSON.stringify(timings)});\n`;
}
