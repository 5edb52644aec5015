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
/** A settled snapshot is reported within this, ms (several settling meanwhile share one report). */
export const SETTLE_REPORT_MS = 10;

/** Run a worker on `channel` until the control plane drains it or goes away; resolves with the exit code. */
export function runWorker(channel: ParentChannel, exit: (code: number) => void): void {
  const send = (m: FromWorker) => channel.send(m);
  const decoder = new SnapshotDecoder();
  let plane: LocalDataPlane | undefined;
  let worker = -1;
  const log: Logger = channelLogger(send);
  let settled = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  /** Messages that arrived while the data plane was starting. */
  const queue: ToWorker[] = [];
  let starting: Promise<void> | undefined;

  /** Send a report: `full` (the periodic one) with outliers and traffic, else listener states only (cheap). */
  const report = (full = true) => {
    if (!plane) return;
    const counts = plane.counts();
    const failed: EntrypointListeners[] = [];
    if (counts.failed > 0) for (const e of plane.listeners()) if (e.listeners.some((l) => l.error)) failed.push(e);
    const connections = plane.connections();
    const message: WorkerReport = {
      type: "report",
      worker,
      pid: process.pid,
      settledVersion: settled,
      counts,
      ...(connections ? { connections } : {}),
      failed,
      ...(full
        ? {
            // Only Service ports that have ejected (the node's metrics show only those), not one row per port.
            outliers: plane.outliers().filter((o) => o.ejected > 0 || o.ejectionsTotal > 0),
            traffic: plane.trafficMetrics.dump(), // the only caller: each dump holds what changed since the last
          }
        : {}),
    };
    send(message);
  };

  // Under endpoint churn snapshots settle many times a second: one report per SETTLE_REPORT_MS at most.
  let pending: ReturnType<typeof setTimeout> | undefined;
  let lastReport = 0;
  const reportSoon = () => {
    if (pending) return;
    const wait = lastReport + SETTLE_REPORT_MS - performance.now();
    if (wait <= 0) return void ((lastReport = performance.now()), report(false));
    pending = setTimeout(() => {
      pending = undefined;
      lastReport = performance.now();
      report(false);
    }, wait);
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
          reportSoon();
        });
        return;
      }
      case "closing":
        plane!.closing();
        return;
      case "drain": {
        if (timer) clearInterval(timer);
        if (pending) clearTimeout(pending);
        await plane!.drain(m.graceMs);
        await plane![Symbol.asyncDispose]();
        send({ type: "drained", worker });
        exit(0);
        return;
      }
      case "query": {
        const value = m.what === "listeners" ? plane!.listeners() : m.key !== undefined ? plane!.balancing(m.key) : undefined;
        send({ type: "answer", id: m.id, value: value ?? null });
        return;
      }
    }
  };

  // Messages are handled in order: a drain waits for the snapshot before it, a snapshot for the start.
  let chain = Promise.resolve();
  channel.onMessage((raw) => {
    const m = raw as ToWorker;
    if (m.type === "start" && !starting) {
      worker = m.worker;
      starting = startDataPlane(m.settings, { log, worker }).then((p) => {
        plane = p;
        send({ type: "ready", worker, pid: process.pid, tracing: p.tracing });
        timer = setInterval(() => report(true), REPORT_MS);
        for (const q of queue.splice(0)) chain = chain.then(() => handle(q));
      });
      return;
    }
    if (!plane) {
      queue.push(m);
      return;
    }
    chain = chain.then(() => handle(m)).catch((err: unknown) => {
      log.error("Worker failed to handle a message from the control plane", { worker, type: m.type, error: String(err) });
      exit(1);
    });
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
