/** The admin page's stylesheet (served at `/assets/page.css`: system fonts, no external resources) and icon. */
export const pageCss = `
:root {
  color-scheme: light dark;
  --fg: #1d2125; --muted: #5c6670; --bg: #fbfbfc; --panel: #fff; --line: #d9dde1;
  --ok: #1a7f37; --ok-bg: #dafbe1; --warn: #8a5a00; --warn-bg: #fff4d4;
  --bad: #b42318; --bad-bg: #ffe4e0; --info: #0b5cad; --info-bg: #e3efff;
}
@media (prefers-color-scheme: dark) {
  :root {
    --fg: #e6e8ea; --muted: #9aa4ad; --bg: #15181b; --panel: #1d2125; --line: #353b41;
    --ok: #6fdd8b; --ok-bg: #12361e; --warn: #f0c45b; --warn-bg: #3d3010;
    --bad: #ff8a7a; --bad-bg: #47160f; --info: #79b8ff; --info-bg: #10294a;
  }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: var(--fg); background: var(--bg); }
code, td.n { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
header { display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: center; padding: 10px 20px; border-bottom: 1px solid var(--line); background: var(--panel); position: sticky; top: 0; z-index: 1; }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 16px; margin: 24px 0 8px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
main { padding: 4px 20px 20px; }
footer { padding: 12px 20px 24px; color: var(--muted); border-top: 1px solid var(--line); }
a { color: var(--info); }
.muted { color: var(--muted); }
.meta { margin: 4px 0 8px; color: var(--muted); }
.err { color: var(--bad); overflow-wrap: anywhere; }
.filter { display: flex; gap: 6px; align-items: center; margin-left: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart { margin: 0; padding: 8px; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; }
.chart svg { display: block; max-width: 100%; height: auto; }
.chart .req { fill: none; stroke: var(--info); stroke-width: 1.5; }
.chart .errs { fill: none; stroke: var(--bad); stroke-width: 1.5; }
.chart .p99 { fill: none; stroke: var(--warn); stroke-width: 1.5; }
.chart .change { stroke: var(--warn); stroke-width: 1; stroke-dasharray: 2 2; }
.chart figcaption { margin-top: 4px; font-size: 12px; }
.filter input { min-width: 18em; padding: 4px 6px; font: inherit; color: inherit; background: var(--bg); border: 1px solid var(--line); border-radius: 4px; }
.filter button { padding: 4px 10px; font: inherit; color: inherit; background: var(--bg); border: 1px solid var(--line); border-radius: 4px; cursor: pointer; }
.live { padding: 2px 8px; border-radius: 10px; font-size: 12px; border: 1px solid var(--line); }
.live.on { color: var(--ok); background: var(--ok-bg); }
.live.warn { color: var(--warn); background: var(--warn-bg); }
.live.off { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin-top: 14px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.card-title { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card-value { font-size: 20px; font-weight: 600; margin: 2px 0; }
.card-value .badge { font-size: 14px; }
.card-detail { color: var(--muted); font-size: 12px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; background: var(--panel); border: 1px solid var(--line); }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: var(--bg); }
td.n, th.n { text-align: right; white-space: nowrap; }
tr.row-bad td:first-child { box-shadow: inset 3px 0 0 var(--bad); }
ul.plain { list-style: none; margin: 0; padding: 0; }
ul.endpoints li { white-space: nowrap; }
.badge { display: inline-block; padding: 0 6px; margin-right: 4px; border-radius: 3px; font-size: 12px; font-weight: 600; border: 1px solid currentColor; }
.badge.ok { color: var(--ok); background: var(--ok-bg); }
.badge.warn { color: var(--warn); background: var(--warn-bg); }
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.badge.info { color: var(--info); background: var(--info-bg); }
`;

/** The page's icon (served at `/favicon.svg`): a gate. */
export const pageIcon = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#0b5cad"/><path d="M4 13V5h8v8M6.5 13V8h3v5" fill="none" stroke="#fff" stroke-width="1.5"/></svg>`;
