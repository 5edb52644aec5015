/**
 * A worker process: one data plane (`startDataPlane`) with every listener bound with SO_REUSEPORT, driven by the
 * control plane over the runtime's parent channel (`protocol.ts`). It reports its views every `REPORT_MS` and after
 * each settled snapshot. When the control plane goes away the worker exits at once: it never serves routes nobody
 * updates (the pod restarts as a whole; see ARCHITECTURE.md).
 */
import type { LogFields, Logger, LogLevel } from "../log.ts";
import type { ParentChannel } from "../runtime/types.ts";
import { startDataPlane, type LocalDataPlane } from "./index.ts";
import { SnapshotDecoder, type FromWorker, type ToWorker, type WorkerReport } from "./protocol.ts";
import type { EntrypointListeners } from "./types.ts";

/** How often a worker reports its counters when nothing else prompts it, ms. */
export const REPORT_MS = 250;
/** A settled snapshot is reported within this, ms (several settling meanwhile share one message). */
export const SETTLE_REPORT_MS = 10;

/** Run a worker on `channel` until the control plane drains it or goes away. */
export function runWorker(channel: ParentChannel, exit: (code: number) => void): void {
  const send = (m: FromWorker) => channel.send(m);
  const decoder = new SnapshotDecoder();
  let plane: LocalDataPlane | undefined;
  let worker = -1;
  const log: Logger = channelLogger(send);
  let timer: ReturnType<typeof setInterval> | undefined;
  /** The next traffic dump is whole (the first, and after the control plane asked for a resync). */
  let fullDump = true;
  /** Failed listeners in the last report: when a settled snapshot changes it, the report goes at once. */
  let reportedFailed = 0;

  /** The periodic report: listener counts and failures, outliers of ejecting Service ports, changed traffic series. */
  const report = () => {
    if (!plane) return;
    const counts = plane.counts();
    reportedFailed = counts.failed;
    const failed: EntrypointListeners[] = [];
    if (counts.failed > 0) for (const e of plane.listeners()) if (e.listeners.some((l) => l.error)) failed.push(e);
    const connections = plane.connections();
    const message: WorkerReport = {
      type: "report",
      worker,
      pid: process.pid,
      counts,
      ...(connections ? { connections } : {}),
      failed,
      // Only Service ports that have ejected (the node's metrics show only those), not one row per port.
      outliers: plane.outliers().filter((o) => o.ejected > 0 || o.ejectionsTotal > 0),
      traffic: plane.trafficMetrics.dump({ full: fullDump }), // the only caller: a dump holds what changed since the last
      accessLogDropped: plane.accessLogDropped(),
    };
    fullDump = false;
    send(message);
  };

  // Under endpoint churn snapshots settle many times a second: one `settled` message per SETTLE_REPORT_MS at most.
  let settled = 0;
  let sentSettled = 0;
  let pending: ReturnType<typeof setTimeout> | undefined;
  const sendSettled = () => {
    pending = undefined;
    // Bind failures that came or went with this snapshot go first (Events, admin), not with the next periodic report.
    if (!plane) return;
    const { bound, failed, draining } = plane.counts(); // these three are kept as listeners bind; no walk
    if (failed !== reportedFailed) report();
    if (settled > sentSettled) send({ type: "settled", worker, version: (sentSettled = settled), listeners: { bound, failed, draining } });
  };

  const handle = async (m: ToWorker): Promise<void> => {
    switch (m.type) {
      case "start":
        return;
      case "snapshot": {
        const snapshot = decoder.apply(m);
        plane!.apply(snapshot);
        const version = snapshot.version;
        void plane!.settled().then(() => {
          if (version > settled) settled = version;
          pending ??= setTimeout(sendSettled, SETTLE_REPORT_MS);
        });
        return;
      }
      case "closing":
        plane!.closing();
        return;
      case "resync":
        fullDump = true;
        return;
      case "reopen":
        plane!.reopenAccessLog();
        return;
      case "drain": {
        // Reports go on while the connections finish, so the traffic of the drain is counted; one more at the end.
        await plane!.drain(m.graceMs);
        if (timer) clearInterval(timer);
        if (pending) clearTimeout(pending);
        report();
        await plane![Symbol.asyncDispose]();
        exit(0);
        return;
      }
    }
  };

  // Messages are handled in order: a drain waits for the snapshot before it, a snapshot for the start.
  let chain = Promise.resolve();
  const enqueue = (m: ToWorker) => {
    chain = chain
      .then(() => handle(m))
      .catch((err: unknown) => {
        log.error("Worker failed to handle a message from the control plane", { worker, type: m.type, error: String(err) });
        exit(1);
      });
  };
  /** Messages that arrived while the data plane was starting. */
  const queue: ToWorker[] = [];
  let starting = false;
  channel.onMessage((raw) => {
    const m = raw as ToWorker;
    if (m.type === "start" && !starting) {
      starting = true;
      worker = m.worker;
      startDataPlane(m.settings, { log, worker }).then(
        (p) => {
          plane = p;
          send({ type: "ready", worker, pid: process.pid, tracing: p.tracing });
          timer = setInterval(report, REPORT_MS);
          for (const q of queue.splice(0)) enqueue(q);
        },
        (err: unknown) => {
          log.error("Worker failed to start its data plane", { worker, error: String(err) });
          exit(1);
        },
      );
      return;
    }
    if (plane) enqueue(m);
    else queue.push(m);
  });
  channel.onDisconnect(() => {
    log.warn("The control plane went away: the worker stops serving and exits", { worker });
    exit(1);
  });
}

/** A logger that hands each line to the control plane, whose logger writes it (with the worker's number). */
function channelLogger(send: (m: FromWorker) => void): Logger {
  const at = (level: LogLevel) => (msg: string, fields?: LogFields) => send({ type: "log", level, msg, ...(fields ? { fields } : {}) });
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
