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
runWorker(channel, (code) => rt.exit(code));
