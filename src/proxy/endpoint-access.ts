/**
 * How the proxies reach an endpoint (`--endpoint-access`): a TCP connect to the pod's address (`direct`, kube-proxy's
 * way), a stream through the API server's `pods/{name}/portforward` (`port-forward`, for a gateway on a developer's
 * machine whose pod network is not routable: kind, k3d, minikube), or `auto`: direct where the pod network answers,
 * port-forward where it does not.
 *
 * Either way a proxy gets a {@link TcpSocket} and uses it the same: balancing, retries, outlier detection, drain and
 * telemetry do not know how the bytes travel (a port-forward error is a connect failure like a refused connect).
 *
 * `auto` decides per endpoint network (IPv4 /24, IPv6 /64: kind and k3d give each node a /24 of the pod CIDR, so in
 * practice per cluster) with the first connection to it, which is a real one: connected, or refused by the host (a
 * reset travels back, so the network is routable), means direct from then on; no route (`ENETUNREACH`,
 * `EHOSTUNREACH`; Bun reports them as `ECONNREFUSED`, so a refusal is checked against the kernel's routes) or no
 * answer within {@link AUTO_PROBE_TIMEOUT_MS} means port-forward from then on, and that
 * connection is made through the API server at once. Connections to a network being decided wait for the decision.
 * Each decision is logged with its reason and shown by {@link EndpointAccess.decisions}. Decisions last for the
 * process's life.
 */
import type { Logger } from "../log.ts";
import { formatCidr, formatIP, parseCidr, parseIP } from "../model/net.ts";
import type { Endpoint } from "../model/types.ts";
import type { TcpConnectOptions, TcpHandlers, TcpSocket } from "../runtime/types.ts";

/** `--endpoint-access`. */
export type EndpointAccessMode = "direct" | "port-forward" | "auto";
/** How one endpoint is reached. */
export type Via = "direct" | "port-forward";

/** What a proxy gives to open a connection to an endpoint. */
export interface DialOptions<T> {
  readonly handlers: TcpHandlers<T>;
  /** The initial `socket.data`. */
  readonly data: T;
  /** Reject when not connected within this many ms. */
  readonly timeoutMs?: number | undefined;
}

/** Open a connection to an endpoint. */
export type DialEndpoint = <T>(ep: Endpoint, options: DialOptions<T>) => Promise<TcpSocket<T>>;

/** The pod port a port-forward stream reaches. */
export interface PortForwardTarget {
  readonly namespace: string;
  readonly pod: string;
  readonly port: number;
}

/** Streams to pods through the API server (`src/kube/portforward.ts`). */
export interface PortForwarder {
  connect<T>(target: PortForwardTarget, options: DialOptions<T>): Promise<TcpSocket<T>>;
}

/** A connect to an address (the runtime's `connectTcp`). */
export type ConnectTcp = <T>(options: TcpConnectOptions<T>) => Promise<TcpSocket<T>>;

/** How long `auto`'s first connection to a network may take before the network counts as unroutable. */
export const AUTO_PROBE_TIMEOUT_MS = 1_000;

/** Connect errors that say no packet can reach the address (as opposed to a host that answered with a refusal). */
const UNROUTABLE = new Set(["ETIMEDOUT", "ENETUNREACH", "EHOSTUNREACH", "EADDRNOTAVAIL", "ENETDOWN", "EHOSTDOWN"]);

/** An endpoint that cannot be reached the way the gateway was asked to reach it. */
export class EndpointAccessError extends Error {
  constructor(
    /** `ENOTARGET`: the endpoint names no Pod, so port-forward cannot reach it. */
    readonly code: "ENOTARGET",
    message: string,
  ) {
    super(message);
    this.name = "EndpointAccessError";
  }
}

/** One `auto` decision. */
export interface AccessDecision {
  /** `10.244.1.0/24` or `fd00:10:244:1::/64`. */
  readonly network: string;
  readonly via: Via;
  /** Why, e.g. `connect to 10.244.1.5:8080 failed: ENETUNREACH`. */
  readonly reason: string;
  /** When it was decided (ms since the epoch). */
  readonly at: number;
}

/**
 * The network `auto` decides for: the /24 of an IPv4 address, the /64 of an IPv6 one (canonical CIDR text).
 * @example endpointNetwork("10.244.1.5") // "10.244.1.0/24"
 */
export function endpointNetwork(address: string): string {
  const ip = parseIP(address);
  const cidr = ip && parseCidr(`${formatIP(ip)}/${ip.family === 4 ? 24 : 64}`);
  return cidr ? formatCidr(cidr) : address;
}

/** The port-forward target of an endpoint: its `targetRef` Pod. */
export function portForwardTarget(ep: Endpoint): PortForwardTarget | EndpointAccessError {
  const ref = ep.targetRef;
  if (ref?.name && (ref.kind === undefined || ref.kind === "Pod") && ref.namespace) return { namespace: ref.namespace, pod: ref.name, port: ep.port };
  const what = ref === undefined ? "has no targetRef" : `has targetRef ${JSON.stringify(ref)}, not a Pod with a namespace and name`;
  return new EndpointAccessError(
    "ENOTARGET",
    `Endpoint ${ep.address}:${ep.port} ${what}: port-forward reaches pods by name, so it cannot reach this endpoint (an EndpointSlice written by hand? Give its endpoints a targetRef, or run with --endpoint-access direct where the address is routable)`,
  );
}

export interface EndpointAccessOptions {
  readonly mode: EndpointAccessMode;
  readonly connectTcp: ConnectTcp;
  /** Needed unless `mode` is `direct`. */
  readonly portForward?: PortForwarder | undefined;
  readonly log?: Logger | undefined;
  /**
   * The kernel's answer to "is there a route to `address`" (a UDP connect: sends nothing): an errno code such as
   * `ENETUNREACH`, or undefined when there is one. Bun reports a TCP connect without a route as `ECONNREFUSED`,
   * the same as a host that refused; `auto` asks this to tell the two apart.
   */
  readonly routeError?: ((address: string) => Promise<string | undefined>) | undefined;
  /** `auto`'s probe timeout (default {@link AUTO_PROBE_TIMEOUT_MS}). */
  readonly probeTimeoutMs?: number | undefined;
  /** The clock (tests). */
  readonly now?: (() => number) | undefined;
}

/** Dial counts by how the endpoint was reached and how the dial ended. */
export interface DialCounts {
  direct: { ok: number; failed: number };
  portForward: { ok: number; failed: number };
}

/**
 * The data plane's way to its endpoints: one per data plane process ({@link useEndpointAccess} in `dial.ts`).
 * @example
 * const access = new EndpointAccess({ mode: "auto", connectTcp: rt.connectTcp, portForward: new PortForwardDialer(connection), log });
 * const socket = await access.dial(ep, { handlers, data, timeoutMs: 2_000 });
 */
export class EndpointAccess {
  readonly mode: EndpointAccessMode;
  readonly counts: DialCounts = { direct: { ok: 0, failed: 0 }, portForward: { ok: 0, failed: 0 } };
  readonly #o: EndpointAccessOptions;
  readonly #decided = new Map<string, AccessDecision>();
  readonly #deciding = new Map<string, Promise<unknown>>();
  readonly #warned = new Map<string, number>();

  constructor(options: EndpointAccessOptions) {
    if (options.mode !== "direct" && options.portForward === undefined) throw new Error(`--endpoint-access ${options.mode} needs a port-forwarder`);
    this.mode = options.mode;
    this.#o = options;
  }

  /** How `ep` is reached now (`direct` while `auto` has not decided its network). */
  via(ep: Endpoint): Via {
    if (this.mode !== "auto") return this.mode;
    return this.#decided.get(endpointNetwork(ep.address))?.via ?? "direct";
  }

  /** `auto`'s decisions so far, by network. */
  decisions(): AccessDecision[] {
    return [...this.#decided.values()];
  }

  dial<T>(ep: Endpoint, options: DialOptions<T>): Promise<TcpSocket<T>> {
    if (this.mode === "direct") return this.#direct(ep, options);
    if (this.mode === "port-forward") return this.#forward(ep, options);
    const network = endpointNetwork(ep.address);
    const decided = this.#decided.get(network);
    if (decided !== undefined) return decided.via === "direct" ? this.#direct(ep, options) : this.#forward(ep, options);
    const deciding = this.#deciding.get(network);
    if (deciding !== undefined) return deciding.then(() => this.dial(ep, options));
    const attempt = this.#probe(network, ep, options);
    const settled = attempt.catch(() => undefined);
    this.#deciding.set(network, settled);
    void settled.then(() => this.#deciding.delete(network));
    return attempt;
  }

  /** `auto`'s first connection to a network: a real one, that decides how the network is reached. */
  async #probe<T>(network: string, ep: Endpoint, options: DialOptions<T>): Promise<TcpSocket<T>> {
    const limit = this.#o.probeTimeoutMs ?? AUTO_PROBE_TIMEOUT_MS;
    const timeoutMs = Math.min(options.timeoutMs ?? limit, limit);
    const started = performance.now();
    // A connect that completes after the timeout is closed by the runtime (open, then close): by then this
    // connection goes through port-forward with the same `data`, so that late socket must not reach the caller.
    let abandoned = false;
    const h = options.handlers;
    const handlers: TcpHandlers<T> = {
      open: (s) => void (abandoned || h.open?.(s)),
      data: (s, chunk) => h.data(s, chunk),
      drain: (s) => h.drain?.(s),
      end: (s) => h.end?.(s),
      close: (s, err) => void (abandoned || h.close?.(s, err)),
    };
    try {
      const socket = await this.#direct(ep, { handlers, data: options.data, timeoutMs });
      this.#decide(network, "direct", `connected to ${ep.address}:${ep.port} in ${Math.round(performance.now() - started)} ms`);
      return socket;
    } catch (err) {
      let code = String((err as { code?: unknown }).code ?? "");
      if (code === "ECONNREFUSED" && this.#o.routeError !== undefined) code = (await this.#o.routeError(ep.address).catch(() => undefined)) ?? code;
      if (!UNROUTABLE.has(code)) {
        // The host answered (a refusal travels back): the network is routable, this endpoint just failed.
        this.#decide(network, "direct", `${ep.address}:${ep.port} answered the connect (${code || (err as Error).message})`);
        throw err;
      }
      abandoned = true;
      const why = code === "ETIMEDOUT" ? `no answer within ${timeoutMs} ms` : code;
      this.#decide(network, "port-forward", `connect to ${ep.address}:${ep.port} failed: ${why}`);
      return this.#forward(ep, options);
    }
  }

  #decide(network: string, via: Via, reason: string): void {
    const decision: AccessDecision = { network, via, reason, at: (this.#o.now ?? Date.now)() };
    this.#decided.set(network, decision);
    this.#o.log?.info(via === "direct" ? "Endpoint network routable: connecting directly" : "Endpoint network not routable: reaching its pods through the API server (port-forward)", {
      network,
      via,
      reason,
    });
  }

  async #direct<T>(ep: Endpoint, options: DialOptions<T>): Promise<TcpSocket<T>> {
    try {
      const socket = await this.#o.connectTcp({ hostname: ep.address, port: ep.port, handlers: options.handlers, data: options.data, timeoutMs: options.timeoutMs });
      this.counts.direct.ok++;
      return socket;
    } catch (err) {
      this.counts.direct.failed++;
      throw err;
    }
  }

  async #forward<T>(ep: Endpoint, options: DialOptions<T>): Promise<TcpSocket<T>> {
    const target = portForwardTarget(ep);
    try {
      if (target instanceof EndpointAccessError) throw target;
      const socket = await this.#o.portForward!.connect(target, options);
      this.counts.portForward.ok++;
      return socket;
    } catch (err) {
      this.counts.portForward.failed++;
      this.#warn(err as Error, ep);
      throw err;
    }
  }

  /** Port-forward failures a developer acts on (RBAC, an old API server, a missing targetRef): logged once a minute per kind. */
  #warn(err: Error, ep: Endpoint): void {
    const code = String((err as { code?: unknown }).code ?? "");
    if (code === "ETIMEDOUT" || code === "ECONNREFUSED") return; // an endpoint's own trouble: outlier detection's business
    const now = (this.#o.now ?? Date.now)();
    if ((this.#warned.get(code) ?? -Infinity) > now - 60_000) return;
    this.#warned.set(code, now);
    this.#o.log?.warn("Port-forward to an endpoint failed", { endpoint: `${ep.address}:${ep.port}`, pod: ep.targetRef?.name, code, error: err.message });
  }
}
