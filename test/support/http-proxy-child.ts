/**
 * A child process hosting only the HTTP forwarder, so a test can measure the gateway's own memory
 * (/proc/<pid>/status) while its clients and upstreams run in the parent.
 *
 * Usage: bun http-proxy-child.ts <upstream-port>. Prints `{"port":N}` once listening; exits on stdin EOF.
 */
import { createHttpProxy } from "../../src/proxy/http/index.ts";
import { defaultProxyOptions } from "../../src/proxy/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { endpoint, route } from "./http-harness.ts";

const upstreamPort = Number(process.argv[2]);
if (!Number.isInteger(upstreamPort) || upstreamPort <= 0) {
  console.error(`Invalid upstream port: "${process.argv[2]}"`);
  process.exit(2);
}
const proxy = createHttpProxy({ current: route([endpoint(upstreamPort)]) }, defaultProxyOptions);
const listener = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
console.log(JSON.stringify({ port: listener.port }));
// The parent closes stdin to stop us (and we stop if the parent dies).
const stdin = Bun.stdin.stream().getReader();
while (!(await stdin.read()).done) {
  // ignore input
}
listener.stop(true);
proxy.closeAll();
process.exit(0);
