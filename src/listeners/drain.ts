/**
 * Retiring listeners: a listener no longer wanted stops accepting at once; its open connections drain
 * in the background for up to a grace period, then what is left is closed. A UDP listener closes at once
 * (replies can only leave through its socket: there is nothing to drain).
 */
import type { Logger } from "../log.ts";
import type { Slot, SlotProxy } from "./slot.ts";

/** A removed listener waiting for its connections. */
interface Draining {
  readonly proxy: SlotProxy;
  readonly done: Promise<void>;
  /** End the grace period now. */
  readonly expire: () => void;
}

/**
 * The listeners being drained.
 *
 * @example
 * drains.retire(slot, 30_000, "removed"); // stops accepting now
 * drains.size; // 1 until its connections are gone or 30 s passed
 * await drains.close(5_000); // shutting down: at most 5 s more for every drain
 */
export class Drains {
  readonly #log: Logger;
  readonly #draining = new Set<Draining>();

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Listeners draining now. */
  get size(): number {
    return this.#draining.size;
  }

  /** Open connections of the draining listeners. */
  active(): number {
    let connections = 0;
    for (const d of this.#draining) connections += d.proxy.active();
    return connections;
  }

  /**
   * Stop accepting on `slot` now (it is unbound when this returns); drain in the background up to
   * `graceMs`, then close what is left. UDP closes at once. Nothing happens to a slot that is not bound.
   */
  retire(slot: Slot, graceMs: number, why: string): void {
    const { listener, proxy } = slot;
    if (listener === undefined || proxy === undefined) return;
    slot.listener = undefined;
    listener.stop();
    this.#log.info("Listener closed", {
      entrypoint: slot.entrypoint.key,
      address: slot.address,
      port: slot.port,
      reason: why,
      ...(slot.udp !== undefined ? { flows: slot.udp.active() } : { connections: proxy.active() }),
    });
    if (slot.udp !== undefined) {
      // Replies can only leave through the listener socket, which is gone: nothing to drain.
      slot.udp.closeAll();
      return;
    }
    const expired = Promise.withResolvers<void>();
    const timer = setTimeout(expired.resolve, graceMs);
    const draining: Draining = {
      proxy,
      expire: expired.resolve,
      done: Promise.race([proxy.drain(), expired.promise]).then(() => {
        clearTimeout(timer);
        const left = proxy.active();
        if (left > 0) this.#log.warn("Drain grace period over: closing connections", { address: slot.address, port: slot.port, connections: left });
        proxy.closeAll();
        this.#draining.delete(draining);
      }),
    };
    this.#draining.add(draining);
  }

  /** Wait for every drain (also those already running) up to `graceMs` from now, then close what is left. */
  async close(graceMs: number): Promise<void> {
    const pending = [...this.#draining];
    const timer = setTimeout(() => {
      for (const d of pending) d.expire();
    }, graceMs);
    try {
      await Promise.all(pending.map((d) => d.done));
    } finally {
      clearTimeout(timer);
    }
  }
}
