/**
 * Issue 17 on Deno: `deno run -A src/main.ts --local --endpoint-access port-forward` against the test API server (in
 * this process, TLS with a client certificate), whose pods have kind-like addresses: the Deno gateway reaches them only
 * through pods/portforward over its own WebSocket client on `Deno.connectTls` with the kubeconfig's client
 * certificate, balancing over both pods, and drains on SIGTERM with exit code 0.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startApiServer } from "../support/apiserver.ts";
import { lineMatching } from "../support/child-io.ts";
import { forwardedPod, podSlice } from "../support/forwarded-pods.ts";
import { startHttpPod } from "../support/pod-backends.ts";
import { freePort } from "../support/ports.ts";
import { waitFor } from "../support/wait.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const deno = join(root, "node_modules/.bin/deno");

test("a Deno gateway with --local reaches unroutable pods through port-forward with the kubeconfig's client certificate", async () => {
  await using api = await startApiServer({ rbac: "local" });
  await using a = startHttpPod({ name: "web-0", hostname: "127.0.0.1" });
  await using b = startHttpPod({ name: "web-1", hostname: "127.0.0.1" });
  const nodePort = await freePort();
  for (const [i, p] of [a, b].entries()) {
    forwardedPod(api, "dev", p.name, `10.244.1.${10 + i}`, 8080, { hostname: "127.0.0.1", port: p.port });
  }
  api.create({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "dev" }, spec: { type: "NodePort", ports: [{ name: "http", port: 80, targetPort: 8080, nodePort, appProtocol: "http" }] } });
  api.create(podSlice("dev", "web-a", "web", { name: "http", port: 8080 }, [a, b].map((p, i) => ({ ip: `10.244.1.${10 + i}`, pod: p.name }))));
  const child = Bun.spawn(
    [
      deno, "run", "-A", "src/main.ts",
      "--kubeconfig", await api.writeKubeconfig(), "--local", "--endpoint-access", "port-forward", "--no-access-log",
      "--healthz-bind-address", "127.0.0.1:0", "--metrics-bind-address", "127.0.0.1:0", "--drain-grace-period", "1s",
    ],
    { cwd: root, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } },
  );
  await using _child = { [Symbol.asyncDispose]: async () => void (child.kill("SIGKILL"), await child.exited) };
  const log = child.stdout.getReader();
  await lineMatching(log, /"kubegate started"/, 30_000);
  await lineMatching(log, /"Ready: the first snapshot's listeners are bound"/, 15_000);

  const pods = new Map<string, number>();
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`http://127.0.0.1:${nodePort}/hello`, { headers: { connection: i % 2 ? "close" : "keep-alive" } });
    expect(res.status).toBe(200);
    const pod = res.headers.get("x-pod")!;
    pods.set(pod, (pods.get(pod) ?? 0) + 1);
    await res.text();
  }
  expect([...pods.keys()].sort()).toEqual(["web-0", "web-1"]);
  expect(new Set(api.portForwards.map((f) => f.pod))).toEqual(new Set(["web-0", "web-1"]));
  await waitFor(() => api.portForwardTotal >= 2, { what: "port-forward streams" });

  child.kill("SIGTERM");
  expect(await child.exited).toBe(0);
}, 60_000);
