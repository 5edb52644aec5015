/**
 * The surge hand-over under load (issue 14; a benchmark, not a test): the e2e scenario (test/e2e/handover/) in a
 * network namespace of its own, with a heavier, unpaced HTTP load (32 keep-alive clients, 8 opening a new connection
 * per request, GETs and POSTs), TCP and UDP load and probes, three hand-overs in a row. Per hand-over: HTTP
 * throughput and latency in the 2 s before SIGTERM, from SIGTERM to the old gateway's exit, and the 2 s after; failures
 * of every kind.
 * Cases: `--workers 1`, `--workers 2`, and `--workers 1` without net.ipv4.tcp_migrate_req (the trap it avoids).
 * Everything (load, backends, API server, both gateways) shares the machine's cores.
 *
 *   bun test/bench/handover.ts [--cases w1,w2,w1-no-migrate] [--rounds 3]
 */
import { parseArgs } from "node:util";
import { runInNamespace } from "../e2e/handover/netns.ts";
import type { ScenarioOptions, ScenarioResult } from "../e2e/handover/scenario.ts";

const CASES: Record<string, ScenarioOptions> = {
  w1: { workers: 1 },
  w2: { workers: 2 },
  "w1-no-migrate": { workers: 1, migrate: false },
};

const { values } = parseArgs({
  args: process.argv.slice(2),
  strict: true,
  options: { cases: { type: "string", default: Object.keys(CASES).join(",") }, rounds: { type: "string", default: "3" } },
});
const rounds = Number(values.rounds);
const rows: string[] = [];
const failures: string[] = [];
for (const name of values.cases.split(",")) {
  const c = CASES[name];
  if (!c) throw new Error(`Unknown case "${name}" (${Object.keys(CASES).join(", ")})`);
  console.error(`[handover ${new Date().toISOString().slice(11, 19)}] ${name}`);
  const r: ScenarioResult = await runInNamespace({ ...c, rounds, timeline: true, keepAliveWorkers: 32, newConnectionWorkers: 8, paceMs: 0 }, 300_000);
  if (r.error) failures.push(`${name}: ${r.error}`);
  const errs = `HTTP ${r.http?.failed ?? "?"} (${r.http?.resets ?? "?"} resets), TCP ${r.tcp?.failed ?? "?"} (${r.tcp?.resets ?? "?"} resets), UDP lost ${r.udp?.lost ?? "?"}/${r.udp?.sent ?? "?"}, probes ${r.probes?.violations.length ?? "?"}`;
  for (const w of r.timeline ?? []) {
    const { before: b, during: d, after: a } = w;
    const n = (x: number) => x.toLocaleString("en-US");
    rows.push(
      `| ${name} | ${w.round} | ${n(b.rps)} | ${n(d.rps)} (${(d.rps / b.rps).toFixed(2)}×) | ${n(a.rps)} | ${n(d.worst250msRps)} | ${b.p50} / ${d.p50} / ${a.p50} | ${b.p99} / ${d.p99} / ${a.p99} | ${b.max} / ${d.max} / ${a.max} | ${(d.ms / 1000).toFixed(1)} s | ${b.failed + d.failed + a.failed} |`,
    );
  }
  rows.push(`| ${name} | all | | | | | | | | | ${errs} |`);
}
console.log(`## Surge hand-over under load (${new Date().toISOString()})\n`);
console.log("Before: the 2 s before SIGTERM (both gateways serve); during: SIGTERM to the old one's exit; after: the 2 s after (the new one alone).\n");
console.log("| Case | Hand-over | req/s before | req/s during (× before) | req/s after | worst 250 ms during (req/s) | p50 ms before / during / after | p99 ms before / during / after | max ms before / during / after | SIGTERM -> exit | Failed |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
for (const r of rows) console.log(r);
if (failures.length) console.log(`\nErrors: ${failures.join("; ")}`);
