/**
 * The HTTP/2 proxy of one listener (src/proxy/h2/) bound on 127.0.0.1:0 through the runtime port, for the proxy
 * suites (Bun and Deno): its route swapped as the listeners layer does, a recording balancer when asked, and a
 * bounded child-process runner for curl and h2load.
 */
import { spawn } from "node:child_process";
import type { Endpoint } from "../../../src/model/types.ts";
import type { HttpProxyOptions } from "../../../src/proxy/http/options.ts";
import { H2Proxy } from "../../../src/proxy/h2/index.ts";
import { defaultProxyOptions } from "../../../src/proxy/types.ts";
import type { RouteRef } from "../../../src/routes/types.ts";
import { rt } from "../../../src/runtime/index.ts";
import { RecordingBalancer, route } from "../../support/http-harness.ts";
import { waitFor } from "../../support/wait.ts";

/** The entrypoint every proxy of these suites serves (namespace `default`, Service `grpc`). */
export const H2_ENTRYPOINT = "default/grpc:grpc";

export interface H2ProxyHarness extends AsyncDisposable {
  readonly port: number;
  readonly proxy: H2Proxy;
  readonly ref: RouteRef;
  /** The route's balancer (when started with `recording`; the latest route's). */
  readonly balancer: RecordingBalancer;
  /** Swap the route (what the listeners layer does on a new snapshot). */
  setEndpoints(endpoints: readonly Endpoint[]): void;
}

/**
 * An h2c listener on 127.0.0.1:0 over `endpoints` (round robin from the first, or a {@link RecordingBalancer}).
 * Dispose stops the listener, closes every connection and waits for the proxy to count none.
 *
 * @example
 * await using px = startH2Proxy([endpoint(server.port)], { idleTimeoutMs: 200 });
 * await runGrpcClient(px.port, { kind: "unary", count: 1 });
 */
export function startH2Proxy(endpoints: readonly Endpoint[], options: Partial<HttpProxyOptions> = {}, recording = false): H2ProxyHarness {
  let balancer: RecordingBalancer | undefined;
  const make = (eps: readonly Endpoint[]) => {
    const r = route(eps, H2_ENTRYPOINT, recording ? { balancer: (e) => (balancer = new RecordingBalancer(e)) } : {});
    return { ...r, entrypoint: { ...r.entrypoint, protocol: "h2c" as const } };
  };
  const ref: RouteRef = { current: make(endpoints) };
  const proxy = new H2Proxy(ref, { ...defaultProxyOptions, ...options });
  const listener = rt.listenTcp<unknown>({ hostname: "127.0.0.1", port: 0, handlers: proxy.handlers });
  return {
    port: listener.port,
    proxy,
    ref,
    get balancer() {
      if (balancer === undefined) throw new Error("startH2Proxy: started without a recording balancer");
      return balancer;
    },
    setEndpoints(eps) {
      ref.current = make(eps);
    },
    async [Symbol.asyncDispose]() {
      listener.stop(true);
      proxy.closeAll();
      await waitFor(() => proxy.active() === 0, { what: "proxy connections to close" });
    },
  };
}

/** Run a command (killed by PID after `timeoutMs`); resolve with its exit code and output (stdout then stderr as they came). */
export function run(cmd: string, args: readonly string[], timeoutMs = 20_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => (clearTimeout(timer), resolve({ code, out })));
  });
}
