/**
 * A TCP proxy in its own process, for throughput and memory tests: `bun tcp-proxy-child.ts <upstream port>`.
 * Prints `{"port":N}` once listening. Samples its RSS every 10 ms; on a `report` line on stdin it
 * prints `{"baseline":B,"peak":P}` (bytes; baseline measured after a full GC at start).
 */
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { defaultProxyOptions } from "../../src/proxy/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { entrypoint, route } from "./entrypoints.ts";

const upstream = Number(process.argv[2]);
const proxy = createTcpProxy({ current: route(entrypoint({ endpoints: [upstream] })) }, defaultProxyOptions);
const listener = rt.listenTcp({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
Bun.gc(true);
const baseline = process.memoryUsage.rss();
let peak = baseline;
const sampler = setInterval(() => {
  const rss = process.memoryUsage.rss();
  if (rss > peak) peak = rss;
}, 10);
console.log(JSON.stringify({ port: listener.port }));
for await (const line of console) {
  if (line.trim() !== "report") continue;
  peak = Math.max(peak, process.memoryUsage.rss());
  console.log(JSON.stringify({ baseline, peak, active: proxy.active() }));
  break;
}
clearInterval(sampler);
listener.stop(true);
proxy.closeAll();
