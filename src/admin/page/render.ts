/**
 * The admin page's view: one function from `PageState` to elements, used twice. The server renders
 * the first paint with a string-building `h` (every text and attribute escaped, see `html.ts`); the
 * browser re-renders each update with a DOM-building `h` (`createElement` + text nodes, never
 * `innerHTML`). The browser gets this very function through `renderPage.toString()` (see `client.ts`),
 * so it must stay self-contained: no imports, no references to module-level names, plain ES2020 at
 * runtime (types are erased by the runtime's TypeScript transpiler).
 */
import type { PageEndpoint, PageEntrypoint, PageState } from "./state.ts";

/** Attribute values; `undefined`/`false` omit the attribute, `true` sets it empty. */
export type Attrs = Readonly<Record<string, string | number | boolean | undefined>>;
/** A child of an element: text, an element, nothing, or a list of those. */
export type Child<N> = N | string | number | null | undefined | false | readonly Child<N>[];
/** Element factory (hyperscript): tag, attributes, children. Text children are always text, never markup. */
export type H<N> = (tag: string, attrs: Attrs | null, ...children: Child<N>[]) => N;

/**
 * The content of `<main id="app">` for `s`: summary, sync health, entrypoints, errors, traffic.
 * Self-contained on purpose (shipped to the browser as source).
 */
export function renderPage<N>(h: H<N>, s: PageState): N[] {
  const num = (n: number): string => {
    if (!Number.isFinite(n)) return "—";
    const r = Math.round(n * 100) / 100;
    return String(r).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  };
  const rate = (n: number | undefined): string => (n === undefined ? "—" : n < 10 ? `${num(n)}/s` : `${num(Math.round(n))}/s`);
  const bytes = (n: number): string => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) (v /= 1024), i++;
    return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
  };
  const hostPort = (a: string, p: number): string => (a.includes(":") ? `[${a}]:${p}` : `${a}:${p}`);
  const ago = (ms: number): string => {
    const sec = Math.max(0, Math.round((s.at - ms) / 1000));
    return sec < 60 ? `${sec} s ago` : sec < 3600 ? `${Math.round(sec / 60)} min ago` : `${Math.round(sec / 3600)} h ago`;
  };
  /** A state marker: colour from `tone`, meaning always in the text. */
  const badge = (tone: "ok" | "warn" | "bad" | "info", text: string): N => h("span", { class: `badge ${tone}` }, text);
  /** A table; a heading written `#Name` marks a numeric (right-aligned) column. */
  const table = (head: string[], rows: N[], cls?: string): N =>
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        cls ? { class: cls } : null,
        h("thead", null, h("tr", null, head.map((c) => (c.startsWith("#") ? h("th", { scope: "col", class: "n" }, c.slice(1)) : h("th", { scope: "col" }, c))))),
        h("tbody", null, rows),
      ),
    );
  const section = (id: string, title: string, ...body: Child<N>[]): N => h("section", { id, "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), ...body);
  const muted = (text: string): N => h("span", { class: "muted" }, text);

  const traffic = new Map((s.traffic ?? []).map((t) => [t.key, t]));

  // ---- summary cards
  const allSynced = s.sources.length > 0 && s.sources.every((x) => x.synced);
  const sourceErrors = s.sources.filter((x) => x.lastError).length;
  const health = s.health;
  const healthz = health ? health.healthy && health.nodeEligible : undefined;
  const stale = s.state?.stale === true;
  const card = (title: string, value: Child<N>, detail: Child<N>): N =>
    h("div", { class: "card" }, h("div", { class: "card-title" }, title), h("div", { class: "card-value" }, value), h("div", { class: "card-detail" }, detail));
  const summary = h(
    "div",
    { class: "cards", id: "summary" },
    card(
      "Sync",
      !s.synced
        ? badge("warn", "waiting for first snapshot")
        : stale
          ? badge("warn", "stale: saved state")
          : allSynced
            ? badge(sourceErrors ? "warn" : "ok", sourceErrors ? "synced, with errors" : "synced")
            : badge("warn", "syncing"),
      stale && s.state?.savedAt ? `snapshot v${s.version} · state file saved ${ago(s.state.savedAt)}` : `snapshot v${s.version}`,
    ),
    card(
      "/healthz",
      healthz === undefined
        ? "—"
        : health?.shuttingDown
          ? badge("bad", "503 shutting down")
          : healthz
            ? badge("ok", "200 healthy")
            : badge("bad", health && !health.healthy ? "503 stale" : "503 node not eligible"),
      health ? (health.lastUpdated ? `updated ${ago(health.lastUpdated)}` : "no update yet") : "not reported",
    ),
    card("Entrypoints", num(s.summary.entrypoints), s.summary.failing ? badge("bad", `${num(s.summary.failing)} failing`) : "all served"),
    card(
      "Listeners",
      num(s.summary.listeners.bound),
      s.summary.listeners.unbound ? badge("bad", `${num(s.summary.listeners.unbound)} not bound`) : "all bound",
    ),
    card(
      "Endpoints",
      num(s.summary.endpoints.total),
      `${num(s.summary.endpoints.ready)} ready · ${num(s.summary.endpoints.terminating)} terminating · ${num(s.summary.endpoints.notServing)} not serving`,
    ),
    card("Errors", s.summary.errors ? badge("bad", num(s.summary.errors)) : badge("ok", "0"), s.summary.errors ? h("a", { href: "#errors" }, "see below") : "none"),
  );

  // ---- sync health
  const phaseTone = (p: string, synced: boolean): "ok" | "warn" | "bad" | "info" =>
    p === "backoff" || p === "stopped" ? "bad" : p === "listing" || !synced ? "warn" : p === "static" ? "info" : "ok";
  const sync = section(
    "sync",
    "Sync health",
    h(
      "p",
      { class: "meta" },
      `Node ${s.node ?? "—"}`,
      s.zone ? ` (zone ${s.zone})` : "",
      ` · snapshot version ${s.version}`,
      health ? ` · /livez ${health.healthy ? "200" : "503"} · /readyz ${health.ready ? "200" : "503"}` : "",
    ),
    s.state
      ? h(
          "p",
          { class: "meta", id: "state-file" },
          "State file ",
          h("code", null, s.state.file),
          ": ",
          s.state.stale
            ? badge("warn", "stale")
            : badge("ok", "live"),
          s.state.stale
            ? ` serving the objects it held${s.state.savedAt ? ` (saved ${ago(s.state.savedAt)})` : ""} until the live source has synced`
            : s.state.lastWriteAt
              ? ` · written ${ago(s.state.lastWriteAt)}`
              : " · not written yet",
          s.state.error ? h("span", { class: "err" }, ` · ${s.state.error}`) : null,
        )
      : null,
    s.sources.length
      ? table(
          ["Kind", "Phase", "Synced", "#Objects", "#Lists", "#Watches", "Resource version", "Last error"],
          s.sources.map((x) =>
            h(
              "tr",
              null,
              h("td", null, x.kind),
              h("td", null, badge(phaseTone(x.phase, x.synced), x.phase)),
              h("td", null, x.synced ? badge("ok", "yes") : badge("warn", "no")),
              h("td", { class: "n" }, num(x.objects)),
              h("td", { class: "n" }, num(x.lists)),
              h("td", { class: "n" }, num(x.watches)),
              h("td", null, x.resourceVersion ? h("code", null, x.resourceVersion) : "—"),
              h("td", { class: x.lastError ? "err" : undefined }, x.lastError ? [x.lastError, x.lastErrorAt ? muted(` (${x.lastErrorAt})`) : null] : "—"),
            ),
          ),
        )
      : h("p", null, muted("No sources reported.")),
    s.controller
      ? h(
          "p",
          { class: "meta" },
          `LoadBalancer controller: ${s.controller.mode}, `,
          s.controller.leading ? badge("ok", "leading") : badge("info", "standby"),
          ` · ${s.controller.synced ? "synced" : "syncing"} · ${num(s.controller.services)} Services`,
          s.controller.lastError ? h("span", { class: "err" }, ` · last error: ${s.controller.lastError}`) : null,
        )
      : null,
    s.workers && s.workers.length
      ? [
          h("h3", null, "Data plane workers"),
          table(
            ["Worker", "#PID", "State", "#Restarts", "#Connections", "#Requests"],
            [
              ...s.workers.map((w) =>
                h(
                  "tr",
                  null,
                  h("td", null, String(w.worker)),
                  h("td", { class: "n" }, String(w.pid)),
                  h("td", null, w.ready ? badge("ok", "serving") : badge("warn", "starting")),
                  h("td", { class: "n" }, num(w.restarts)),
                  h("td", { class: "n" }, num(w.connections)),
                  h("td", { class: "n" }, num(w.requests)),
                ),
              ),
              h(
                "tr",
                null,
                h("td", null, "total"),
                h("td", null, ""),
                h("td", null, `${s.workers.filter((w) => w.ready).length} of ${s.workers.length} serving`),
                h("td", { class: "n" }, num(s.workers.reduce((n, w) => n + w.restarts, 0))),
                h("td", { class: "n" }, num(s.workers.reduce((n, w) => n + w.connections, 0))),
                h("td", { class: "n" }, num(s.workers.reduce((n, w) => n + w.requests, 0))),
              ),
            ],
          ),
        ]
      : null,
    s.endpointAccess
      ? [
          h("h3", null, `Endpoint access: ${s.endpointAccess.mode}`),
          h(
            "p",
            { class: "meta" },
            `port-forward streams: ${num(s.endpointAccess.portForward.ok)} opened, ${num(s.endpointAccess.portForward.failed)} failed · direct connects: ${num(s.endpointAccess.direct.ok)} opened, ${num(s.endpointAccess.direct.failed)} failed`,
          ),
          s.endpointAccess.decisions.length
            ? table(
                ["Pod network", "Reached", "Why"],
                s.endpointAccess.decisions.map((d) =>
                  h("tr", null, h("td", null, d.network), h("td", null, d.via === "direct" ? badge("ok", "direct") : badge("info", d.via)), h("td", null, d.reason)),
                ),
              )
            : null,
        ]
      : null,
    s.healthChecks && s.healthChecks.length
      ? [
          h("h3", null, "healthCheckNodePort servers"),
          table(
            ["Service", "#Port", "#Local endpoints", "State"],
            s.healthChecks.map((hc) =>
              h(
                "tr",
                null,
                h("td", null, hc.service),
                h("td", { class: "n" }, String(hc.port)),
                h("td", { class: "n" }, num(hc.localEndpoints)),
                h("td", null, hc.bound ? badge("ok", "bound") : badge("bad", "not bound"), hc.error ? h("div", { class: "err" }, hc.error) : null),
              ),
            ),
          ),
        ]
      : null,
  );

  // ---- entrypoints
  const endpointState = (e: PageEndpoint): N =>
    e.ready
      ? badge("ok", "ready")
      : e.terminating
        ? e.serving
          ? badge("warn", "terminating, serving")
          : badge("bad", "terminating")
        : e.serving
          ? badge("warn", "serving, not ready")
          : badge("bad", "not ready");
  const policyCell = (ep: PageEntrypoint): Child<N>[] => {
    const a = ep.affinity;
    return [
      h("div", null, ep.policy),
      ep.balancer ? h("div", null, ep.balancer) : null,
      a && a.mode !== "None" ? h("div", null, `affinity ${a.mode} ${a.timeoutSeconds}s`) : null,
      a && a.cookie ? h("div", null, `cookie ${a.cookie.name}`) : null,
      ep.sourceRanges ? h("div", null, `from ${ep.sourceRanges.join(", ")}`) : null,
      ep.proxyProtocol ? h("div", null, `PROXY ${ep.proxyProtocol}`) : null,
      ep.externalName ? h("div", null, `ExternalName ${ep.externalName}`) : null,
      ep.selection ? h("div", { class: "muted" }, ep.selection) : null,
    ];
  };
  const listenCell = (ep: PageEntrypoint): Child<N>[] => {
    const ls = ep.listeners.length ? ep.listeners : ep.addresses.map((a) => ({ address: a, port: ep.port, bound: false, pending: true }));
    return [
      h(
        "ul",
        { class: "plain" },
        ls.map((l) =>
          h(
            "li",
            null,
            h("code", null, hostPort(l.address, l.port)),
            " ",
            "pending" in l ? badge("info", ep.error ? "not served" : "no listener") : l.bound ? badge("ok", "bound") : badge("bad", "not bound"),
            "flows" in l && l.flows !== undefined ? muted(` ${num(l.flows)} flows`) : null,
            "error" in l && l.error ? h("div", { class: "err" }, l.error) : null,
          ),
        ),
      ),
      ep.refused ? h("div", { class: "muted" }, `${num(ep.refused)} refused by source ranges`) : null,
    ];
  };
  const endpointsCell = (ep: PageEntrypoint): Child<N>[] => [
    h("div", null, `${num(ep.serving)} of ${num(ep.endpointCount)} receive traffic`),
    ep.endpoints.length
      ? h(
          "ul",
          { class: "plain endpoints" },
          ep.endpoints.map((e) =>
            h(
              "li",
              null,
              h("code", null, hostPort(e.address, e.port)),
              " ",
              endpointState(e),
              e.used ? badge("info", "in use") : null,
              e.ejectedUntil ? badge("bad", `ejected until ${e.ejectedUntil.slice(11, 19)}`) : null,
              e.target || e.node || e.zone ? muted(` ${[e.target, e.node, e.zone].filter(Boolean).join(" · ")}`) : null,
            ),
          ),
          ep.endpointCount > ep.endpoints.length ? h("li", { class: "muted" }, `… and ${num(ep.endpointCount - ep.endpoints.length)} more`) : null,
        )
      : h("div", { class: "muted" }, ep.externalName ? "DNS target" : "no endpoints"),
  ];
  const trafficCell = (ep: PageEntrypoint): Child<N> => {
    const t = traffic.get(ep.name);
    if (!t) return muted("—");
    return h(
      "div",
      null,
      h("div", null, `${rate(t.requestRate)} req`),
      h("div", { class: t.errorRate ? "err" : undefined }, `${rate(t.errorRate)} err`),
      h("div", null, `${num(t.active)} active`),
    );
  };
  const shownNote =
    s.filter.q || s.filter.matched > s.entrypoints.length
      ? h(
          "p",
          { class: "meta" },
          `Showing ${num(s.entrypoints.length)} of ${num(s.filter.matched)} matching`,
          s.filter.q ? ` “${s.filter.q}”` : "",
          ` (${num(s.summary.entrypoints)} in total).`,
        )
      : null;
  const entrypoints = section(
    "entrypoints",
    "Entrypoints",
    shownNote,
    s.entrypoints.length
      ? table(
          ["Entrypoint", "Type", "Protocol", "Listen", "Policy", "Endpoints", "#Traffic"],
          s.entrypoints.map((ep) =>
            h(
              "tr",
              { class: ep.error || ep.listeners.some((l) => !l.bound) ? "row-bad" : undefined, "data-key": ep.key },
              h("td", null, h("strong", null, ep.name), ep.error ? h("div", { class: "err" }, ep.error) : null),
              h("td", null, ep.type),
              h("td", null, ep.protocol),
              h("td", null, listenCell(ep)),
              h("td", null, policyCell(ep)),
              h("td", null, endpointsCell(ep)),
              h("td", { class: "n" }, trafficCell(ep)),
            ),
          ),
          "entrypoints",
        )
      : h("p", null, muted(s.synced ? (s.filter.q ? "No entrypoint matches the filter." : "No entrypoints: no Service in scope has a NodePort or LoadBalancer port.") : "Waiting for the first snapshot…")),
  );

  // ---- errors
  const errors = section(
    "errors",
    "Errors",
    s.errors.length
      ? table(
          ["Kind", "Object", "Message"],
          s.errors.map((e) => h("tr", null, h("td", null, e.kind), h("td", null, h("code", null, e.object)), h("td", { class: "err" }, e.message))),
        )
      : h("p", null, badge("ok", "none"), " No model or bind errors."),
    s.summary.errors > s.errors.length ? h("p", { class: "muted" }, `… and ${num(s.summary.errors - s.errors.length)} more (see /api/snapshot).`) : null,
  );

  // ---- traffic
  const trafficSection = section(
    "traffic",
    "Traffic per Service port",
    s.traffic === undefined
      ? h("p", null, "— ", muted("No metrics view is connected."))
      : s.traffic.length
        ? table(
            ["Service port", "#Requests", "#Errors", "#Active", "#Requests total", "#Errors total", "#Bytes in", "#Bytes out"],
            s.traffic.map((t) =>
              h(
                "tr",
                null,
                h("td", null, h("code", null, t.key)),
                h("td", { class: "n" }, rate(t.requestRate)),
                h("td", { class: t.errorRate ? "n err" : "n" }, rate(t.errorRate)),
                h("td", { class: "n" }, num(t.active)),
                h("td", { class: "n" }, num(t.requests)),
                h("td", { class: "n" }, num(t.errors)),
                h("td", { class: "n" }, bytes(t.bytesIn)),
                h("td", { class: "n" }, bytes(t.bytesOut)),
              ),
            ),
          )
        : h("p", null, muted("No traffic yet for the entrypoints shown.")),
  );

  // ---- charts: requests/s (and errors/s in red) over the last 15 minutes, endpoint changes as ticks
  const W = 300;
  const H = 56;
  const chart = (c: NonNullable<PageState["charts"]>[number]): N => {
    const n = c.requests.length;
    const top = Math.max(0, ...c.requests);
    const peak = Math.max(1, top);
    const x = (i: number): number => Math.round((n <= 1 ? W : (i * W) / (n - 1)) * 10) / 10;
    const y = (v: number): number => Math.round((H - 2 - (v / peak) * (H - 6)) * 10) / 10;
    const line = (vs: readonly number[]): string => vs.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    const now = c.requests.at(-1) ?? 0;
    // p99 latency (HTTP): its own strip below, on its own scale; steps without requests leave gaps.
    const p99 = c.p99 ?? [];
    const p99Top = Math.max(0, ...p99.map((v) => v ?? 0));
    const p99Now = [...p99].reverse().find((v) => v !== null);
    const PH = 28;
    const p99Line = p99
      .map((v, i) => (v === null ? null : `${x(i)},${Math.round((PH - 2 - (v / Math.max(p99Top, 0.001)) * (PH - 6)) * 10) / 10}`))
      .filter((p) => p !== null)
      .join(" ");
    const ms = (v: number): string => (v < 10 ? `${Math.round(v * 10) / 10} ms` : `${num(Math.round(v))} ms`);
    return h(
      "figure",
      { class: "chart" },
      h(
        "svg",
        { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": `${c.key}: requests per second over 15 minutes, now ${rate(now)}, peak ${rate(top)}` },
        c.changes.map((i) => h("line", { class: "change", x1: x(i), x2: x(i), y1: 0, y2: H })),
        h("polyline", { class: "req", points: line(c.requests) }),
        c.errors.some((e) => e > 0) ? h("polyline", { class: "errs", points: line(c.errors) }) : null,
      ),
      p99Line
        ? h(
            "svg",
            { viewBox: `0 0 ${W} ${PH}`, width: W, height: PH, role: "img", "aria-label": `${c.key}: p99 latency over 15 minutes, peak ${ms(p99Top)}` },
            h("polyline", { class: "p99", points: p99Line }),
          )
        : null,
      h(
        "figcaption",
        null,
        h("code", null, c.key),
        " ",
        rate(now),
        muted(` peak ${rate(top)}`),
        p99Now !== undefined && p99Now !== null ? muted(` · p99 ${ms(p99Now)}`) : null,
        c.changes.length ? muted(` · endpoints changed ${c.changes.length}×`) : null,
      ),
    );
  };
  const charts = s.charts?.length
    ? section("charts", "Traffic over the last 15 minutes", h("p", { class: "muted" }, "Requests per second (errors in red) and, for HTTP, p99 latency below, busiest first; ticks mark endpoint changes."), h("div", { class: "charts" }, s.charts.map(chart)))
    : null;

  return charts ? [summary, sync, charts, entrypoints, errors, trafficSection] : [summary, sync, entrypoints, errors, trafficSection];
}
