/**
 * API server outage recovery (issue 14), a benchmark (not a test). One node's source (Services, EndpointSlices and
 * its own Node, over mTLS, shipped tuning) against the test API server, which refuses connections for D seconds
 * (listener closed, then reopened on the same port) while an EndpointSlice is created. Per outage it prints:
 *   - recovery: ms from the port answering again to that change reaching the sink,
 *   - the requests the node sent while the server was away (every fetch, a refused connect included), and per second.
 *
 *   bun test/bench/apiserver-recovery.ts [--outages 3,30] [--repeats 3]
 *
 * The server runs in this process (its work during an outage is nil, and a recovery is one node's few requests).
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { ApiServerSource } from "../../src/kube/apiserver-source.ts";
import { silentLogger } from "../../src/log.ts";
import { startApiServer } from "../support/apiserver.ts";
import { RequestLog, TimedSink, loggedClientFor, outage } from "../support/apiserver-outage.ts";
import { service, slice } from "../support/kube-sinks.ts";
import { waitFor } from "../support/wait.ts";
import { median } from "./lib/stats.ts";

const { values } = parseArgs({
  options: { outages: { type: "string", default: "3,30" }, repeats: { type: "string", default: "3" } },
  strict: true,
});
const outagesS = values.outages.split(",").map(Number);
const repeats = Number(values.repeats);
if (outagesS.some((s) => !(s > 0 && s <= 600)) || !(Number.isInteger(repeats) && repeats > 0 && repeats <= 20)) {
  process.stderr.write(`Invalid --outages "${values.outages}" or --repeats "${values.repeats}": seconds in (0, 600], 1-20 repeats\n`);
  process.exit(2);
}

interface Run {
  readonly outageS: number;
  readonly recoveryMs: number;
  readonly sent: number;
  readonly probes: number;
}

const progress = (m: string) => process.stderr.write(`apiserver-recovery: ${m}\n`);

async function main(): Promise<void> {
  await using server = await startApiServer();
  server.create({ apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
  server.create(service("web"));
  server.create(slice("web-0", "web", ["10.0.0.1"]));
  const log = new RequestLog();
  using client = await loggedClientFor(server, log);
  const sink = new TimedSink();
  await using source = new ApiServerSource({ client, nodeName: "node-a", log: silentLogger });
  source.start(sink);

  const runs: Run[] = [];
  let n = 0;
  for (let r = 0; r < repeats; r++) {
    for (const outageS of outagesS) {
      await server.waitForWatches(3, { exact: true, timeoutMs: 20_000 });
      await waitFor(() => source.status().every((s) => s.phase === "watching"), { what: "every kind watching", timeoutMs: 20_000 });
      n++;
      const o = await outage(server, { ms: outageS * 1000, sink, change: slice(`web-${n}`, "web", [`10.0.${n}.1`]), timeoutMs: 120_000 });
      const away = log.between(o.downAt, o.upAt);
      const run = { outageS, recoveryMs: o.recoveredAt - o.upAt, sent: away.length, probes: away.filter((q) => q.path === "/readyz").length };
      runs.push(run);
      progress(`${outageS} s outage: back ${Math.round(run.recoveryMs)} ms after the server's return; ${run.sent} requests while away`);
    }
  }
  const lists = source.status().map((s) => `${s.kind} ${s.lists}`).join(", ");

  const rows = runs.map((r) => [
    `${r.outageS} s`,
    String(Math.round(r.recoveryMs)),
    String(r.sent),
    String(r.probes),
    (r.sent / r.outageS).toFixed(2),
  ]);
  const head = ["outage", "recovery (ms)", "requests while away", "of which /readyz", "requests/s"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i]!)).join(" | ")} |`;
  const out = [line(head), `|${widths.map((w) => "-".repeat(w + 1) + ":").join("|")}|`, ...rows.map(line)];
  for (const outageS of outagesS) {
    const of = runs.filter((r) => r.outageS === outageS);
    const rec = of.map((r) => r.recoveryMs);
    out.push(
      "",
      `${outageS} s outage, ${of.length} runs: recovery median ${Math.round(median(rec))} ms, max ${Math.round(Math.max(...rec))} ms; ` +
        `requests/s while away median ${median(of.map((r) => r.sent / r.outageS)).toFixed(2)}`,
    );
  }
  out.push(`Lists per kind over all runs (1 = resumed every time, no relist): ${lists}`);
  process.stdout.write(`${out.join("\n")}\n`);
}

await main();
