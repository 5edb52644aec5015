/**
 * The entry point of a worker process (`bun src/data-plane/worker-main.ts`, or `kubegate worker` in the compiled
 * binary): a data plane driven by the control plane that started it (`workers.ts`). Not for running by hand.
 */
import { rt } from "../runtime/index.ts";
import { runWorker } from "./worker.ts";

const channel = rt.parentChannel();
if (!channel) {
  console.error("kubegate worker: this process is started by the gateway (--workers), not by hand");
  rt.exit(2);
}
// Signals are the control plane's to handle: it drains the workers (a terminal's Ctrl-C reaches the whole process
// group, a kubelet's SIGTERM only the control plane). A worker whose control plane is gone exits by itself.
rt.onSignal("SIGINT", () => {});
rt.onSignal("SIGTERM", () => {});
runWorker(channel, (code) => rt.exit(code));
