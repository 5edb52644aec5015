/**
 * The pure half of listener reconciliation: which sockets a snapshot asks for. One listener per
 * (address, port, transport) of every servable entrypoint; `manager.ts` and its parts bind, swap and drain.
 */
import type { Entrypoint, Snapshot } from "../model/types.ts";

/** The data plane a listener runs: HTTP or TCP on a TCP socket, or UDP. */
export type ListenerProtocol = "http" | "h2c" | "tcp" | "udp";

/** One socket a snapshot asks for. */
export interface ListenerSpec {
  /**
   * `${address}|${port}|${transport}` (transport `tcp` for http and tcp, `udp` for udp): http/tcp is not
   * part of it, so a change between them is a rebind of the same key; TCP and UDP on one port coexist.
   */
  readonly key: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: ListenerProtocol;
  readonly entrypoint: Entrypoint;
}

/** An entrypoint (or one of its addresses) that gets no listener, and why. */
export interface SkippedListener {
  readonly entrypoint: Entrypoint;
  /** Set when only this address is skipped. */
  readonly address?: string | undefined;
  readonly reason: string;
}

export interface DesiredListeners {
  /** By {@link ListenerSpec.key}, in snapshot (entrypoint key) order. */
  readonly listeners: ReadonlyMap<string, ListenerSpec>;
  readonly skipped: readonly SkippedListener[];
}

/** The listener key of an address, port and transport. */
export function listenerKey(address: string, port: number, transport: "tcp" | "udp" = "tcp"): string {
  return `${address}|${port}|${transport}`;
}

/** `127.0.0.1:80` or `[::1]:80`. */
export function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

export interface DesiredOptions {
  /** Whether UDP entrypoints get listeners (default true); false skips them with a reason. */
  readonly udp?: boolean | undefined;
}

/**
 * The listeners `snapshot` asks for. Entrypoints with `error` are not served (the model already
 * reports them). Two entrypoints claiming one address:port:transport should not happen (the model
 * resolves conflicts); if it does, the first by key wins.
 *
 * @example
 * desiredListeners(snapshot).listeners.get("127.0.0.1|30080|tcp")?.entrypoint.name // "ns/web:http"
 */
export function desiredListeners(snapshot: Snapshot, options: DesiredOptions = {}): DesiredListeners {
  const listeners = new Map<string, ListenerSpec>();
  const skipped: SkippedListener[] = [];
  const udp = options.udp ?? true;
  for (const entrypoint of snapshot.entrypoints) {
    if (entrypoint.error !== undefined) continue;
    const { protocol } = entrypoint;
    if (protocol === "udp" && !udp) {
      skipped.push({ entrypoint, reason: "UDP entrypoints are not served: no UDP proxy is configured" });
      continue;
    }
    for (const address of entrypoint.addresses) {
      const key = listenerKey(address, entrypoint.port, protocol === "udp" ? "udp" : "tcp");
      const taken = listeners.get(key);
      if (taken !== undefined) {
        skipped.push({
          entrypoint,
          address,
          reason: `Port ${entrypoint.port} on ${address} is already used by "${taken.entrypoint.name}"`,
        });
        continue;
      }
      listeners.set(key, { key, address, port: entrypoint.port, protocol, entrypoint });
    }
  }
  return { listeners, skipped };
}
