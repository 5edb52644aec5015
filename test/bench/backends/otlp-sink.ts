/**
 * The OTLP/HTTP trace sink of the tracing rows (not a test): answers `200 {}` to every `POST /v1/traces` on
 * 127.0.0.1:PORT, as a collector that keeps up would, and counts requests, bytes and spans (roughly: the
 * `"spanId":` keys of OTLP JSON; a link carries one too). `GET /stats` answers the counts as JSON. Runs until killed.
 *
 *   bun test/bench/backends/otlp-sink.ts PORT
 */
const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65_535) {
  console.error(`Usage: bun test/bench/backends/otlp-sink.ts PORT (got "${process.argv[2] ?? ""}")`);
  process.exit(2);
}

const stats = { requests: 0, bytes: 0, spans: 0, other: 0 };
const KEY = '"spanId":';

/** Occurrences of {@link KEY} in `text` (indexOf is native: cheap next to receiving the bytes). */
function spansIn(text: string): number {
  let n = 0;
  for (let i = text.indexOf(KEY); i >= 0; i = text.indexOf(KEY, i + KEY.length)) n++;
  return n;
}

Bun.serve({
  hostname: "127.0.0.1",
  port,
  async fetch(req) {
    const path = new URL(req.url).pathname;
    if (req.method === "POST" && path === "/v1/traces") {
      const text = await req.text();
      stats.requests++;
      stats.bytes += text.length;
      stats.spans += spansIn(text);
      return Response.json({});
    }
    if (req.method === "GET" && path === "/stats") return Response.json(stats);
    stats.other++;
    return new Response("not found\n", { status: 404 });
  },
});
console.log(`otlp sink listening on 127.0.0.1:${port}`);
