/** Ports for the benchmark's servers, each handed out once. */
import { freePort } from "../../support/ports.ts";

/**
 * Hands out ports the OS reports free, never the same one twice (the OS may report a port free
 * again until something binds it, and the benchmark binds several before starting any).
 *
 * @example const ports = new PortAllocator(); const [a, b] = [await ports.next(), await ports.next()];
 */
export class PortAllocator {
  readonly #taken = new Set<number>();

  /**
   * A free port on 127.0.0.1 not handed out before.
   * @throws {Error} when 100 tries only found ports already handed out.
   */
  async next(): Promise<number> {
    for (let i = 0; i < 100; i++) {
      const port = await freePort();
      if (!this.#taken.has(port)) {
        this.#taken.add(port);
        return port;
      }
    }
    throw new Error("Cannot find a free port: 100 tries returned ports already handed out");
  }
}
