/**
 * Server-side rendering of the admin page: a string-building `h` for `renderPage` and the document
 * around it. Every text child and attribute value is escaped; tags and attribute names come only
 * from the code, never from data.
 */
import { type Attrs, type Child, type H, renderPage } from "./render.ts";
import type { PageState } from "./state.ts";

/** An element built on the server. */
export interface HtmlNode {
  readonly tag: string;
  readonly attrs: Attrs | null;
  readonly children: readonly Child<HtmlNode>[];
}

const escapes: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escape text for HTML text and double-quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => escapes[c]!);
}

const voidTags = new Set(["meta", "link", "input", "br", "hr", "img"]);
const safeName = /^[a-z][a-z0-9-]*$/;
/** Attribute names: lower-case, or camelCase as SVG has them (`viewBox`). */
const safeAttr = /^[a-zA-Z][a-zA-Z0-9-]*$/;

/** The server's element factory. */
export const hServer: H<HtmlNode> = (tag, attrs, ...children) => ({ tag, attrs, children });

/** Serialize `node` (and its children) to HTML. */
export function toHtml(node: Child<HtmlNode>): string {
  if (node === null || node === undefined || node === false) return "";
  if (typeof node === "string") return escapeHtml(node);
  if (typeof node === "number") return String(node);
  if (Array.isArray(node)) return node.map(toHtml).join("");
  const el = node as HtmlNode;
  if (!safeName.test(el.tag)) throw new Error(`Cannot render element: tag "${el.tag}" is not a plain name`);
  let out = `<${el.tag}`;
  for (const [name, value] of Object.entries(el.attrs ?? {})) {
    if (value === undefined || value === false) continue;
    if (!safeAttr.test(name) || /^on/i.test(name)) throw new Error(`Cannot render element: attribute "${name}" is not allowed`);
    out += value === true ? ` ${name}` : ` ${name}="${escapeHtml(String(value))}"`;
  }
  out += ">";
  if (voidTags.has(el.tag)) return out;
  return `${out}${el.children.map(toHtml).join("")}</${el.tag}>`;
}

/** Paths of the page's same-origin assets. */
export const assetPaths = { script: "/assets/page.js", style: "/assets/page.css", icon: "/favicon.svg" } as const;

/**
 * The whole page for `state`: readable without JavaScript (it then reloads itself every 10 s);
 * with JavaScript, `page.js` re-renders `<main id="app">` from the live state.
 */
export function pageHtml(state: PageState): string {
  const h = hServer;
  const doc = h(
    "html",
    { lang: "en" },
    h(
      "head",
      null,
      h("meta", { charset: "utf-8" }),
      h("meta", { name: "viewport", content: "width=device-width, initial-scale=1" }),
      h("title", null, `kubegate admin${state.node ? ` · ${state.node}` : ""}`),
      h("link", { rel: "stylesheet", href: assetPaths.style }),
      h("link", { rel: "icon", href: assetPaths.icon, type: "image/svg+xml" }),
      h("script", { src: assetPaths.script, defer: true }),
      h("noscript", null, h("meta", { "http-equiv": "refresh", content: "10" })),
    ),
    h(
      "body",
      null,
      h(
        "header",
        null,
        h("h1", null, "kubegate ", h("span", { class: "muted" }, "admin")),
        h("span", { id: "live", class: "live off", title: "State of the live updates" }, "static page: reloads every 10 s"),
        h(
          "form",
          { method: "get", action: "/", class: "filter", role: "search" },
          h("label", { for: "q" }, "Filter entrypoints"),
          h("input", { id: "q", name: "q", type: "search", value: state.filter.q, placeholder: "namespace/service, address or port" }),
          state.filter.limit !== 200 ? h("input", { type: "hidden", name: "limit", value: String(state.filter.limit) }) : null,
          h("button", { type: "submit" }, "Apply"),
        ),
      ),
      h("main", { id: "app", "data-version": String(state.version) }, renderPage(h, state)),
      h(
        "footer",
        null,
        "JSON: ",
        h("a", { href: "/api/snapshot" }, "/api/snapshot"),
        " · ",
        h("a", { href: "/api/status" }, "/api/status"),
        " · ",
        h("a", { href: "/api/state" }, "/api/state"),
        " · live: ",
        h("code", null, "/api/events"),
        " (server-sent events)",
      ),
    ),
  );
  return `<!doctype html>\n${toHtml(doc)}\n`;
}
