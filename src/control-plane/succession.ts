/**
 * Succession on one node. One kubegate is the node's *incumbent*; a second one started with the same flags (the
 * DaemonSet's surge pod during a rollout) comes up beside it, binds every port too (SO_REUSEPORT) and takes over
 * when the incumbent goes. They find each other on the node's hand-over socket: a Unix socket in Linux's abstract
 * namespace named after the health port (no file; shared by the processes of one network namespace, so with
 * hostNetwork by the node's; freed by the kernel when its holder exits, however it exits). The process that holds
 * it is the incumbent; a process that finds it taken connects as a successor, says hello, and says when it is
 * ready. When the incumbent exits, the successor's connection ends and it takes the socket.
 *
 * What each side does with it: the incumbent answers `/readyz` 503 while a successor is starting (the kubelet's
 * probe for the new pod may reach the old process) and, on SIGTERM with a ready successor, hands over instead of
 * taking the node's service down (`gateway.ts`); only the incumbent writes the state file.
 *
 * The wire: one JSON object per line. successor -> incumbent `{"type":"hello","pid":1,"version":"0.1.0"}`, later
 * `{"type":"ready"}`; incumbent -> successor `{"type":"hello","pid":1,"version":"0.1.0"}`. Nothing secret crosses
 * it: any process of the network namespace can connect.
 */
import { rmSync } from "node:fs";
import { type Logger, silentLogger } from "../log.ts";
import type { Runtime, TcpListener, TcpSocket } from "../runtime/types.ts";

/** The hand-over socket of the gateway whose health server listens on `healthPort` (abstract namespace). */
export function handoverSocketPath(healthPort: number): string {
  return `\0kubegate-handover-${healthPort}`;
}

/**
 * The socket `--handover-socket` names: undefined when hand-over is off (`none`, or `auto` with an ephemeral health
 * port: no second gateway could share it). `@name` is in the abstract namespace; anything else is a file path.
 *
 * @example
 * handoverSocket("auto", 10356); // "\0kubegate-handover-10356"
 * handoverSocket("/run/kubegate/handover.sock", 10356); // the path
 */
export function handoverSocket(setting: string, healthPort: number): string | undefined {
  if (setting === "none") return undefined;
  if (setting === "auto") return healthPort === 0 ? undefined : handoverSocketPath(healthPort);
  return setting.startsWith("@") ? `\0${setting.slice(1)}` : setting;
}

/** A peer on the hand-over socket, as it introduced itself. */
export interface SuccessionPeer {
  readonly pid: number;
  readonly version: string;
  /** A successor: it has said it is ready (its listeners are bound). */
  readonly ready: boolean;
}

/** What {@link Succession.status} reports (the admin API). */
export interface SuccessionStatus {
  readonly role: "incumbent" | "successor";
  /** The incumbent this successor waits on. */
  readonly incumbent?: SuccessionPeer | undefined;
  /** The successors connected to this incumbent. */
  readonly successors: readonly SuccessionPeer[];
}

export interface SuccessionOptions {
  /** The socket, e.g. {@link handoverSocketPath}. */
  readonly path: string;
  readonly net: Required<Pick<Runtime, "listenUnix" | "connectUnix">>;
  readonly pid: number;
  readonly version: string;
  readonly log?: Logger | undefined;
  /** Pause before taking the socket again when it was gone but not yet free (default 50 ms). */
  readonly retryMs?: number | undefined;
}

/** The per-connection state of a peer: its line buffer and what it said. */
interface Peer {
  pending: string;
  /** 0 until its hello. */
  pid: number;
  version: string;
  ready: boolean;
}

/** Messages larger than this end the connection (a peer that is not a kubegate). */
const MAX_LINE = 4096;
/** A peer that has not said hello this long after connecting is cut (it is not a kubegate). */
const HELLO_TIMEOUT_MS = 5_000;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/**
 * This process's place in the node's succession.
 *
 * @example
 * await using succession = await Succession.start({ path: handoverSocketPath(10356), net: rt, pid: process.pid, version });
 * succession.incumbent; // false: another kubegate holds the node; we are its successor
 * succession.announceReady(); // our listeners are bound: the incumbent may hand over
 * succession.onIncumbent(() => state.resumeWrites()); // it exited: we hold the node now
 */
export class Succession implements AsyncDisposable {
  readonly #o: SuccessionOptions;
  readonly #log: Logger;
  #listener: TcpListener<Peer> | undefined;
  #upstream: TcpSocket<Peer> | undefined;
  readonly #successors = new Set<TcpSocket<Peer>>();
  #ready = false;
  #closed = false;
  #becameIncumbent: (() => void) | undefined;
  #changed: (() => void) | undefined;

  private constructor(options: SuccessionOptions) {
    this.#o = options;
    this.#log = options.log ?? silentLogger;
  }

  /** Take the node's hand-over socket, or connect to its holder as a successor. */
  static async start(options: SuccessionOptions): Promise<Succession> {
    const s = new Succession(options);
    await s.#claim();
    return s;
  }

  /** This process holds the node (it writes the state file; a successor waits on it). */
  get incumbent(): boolean {
    return this.#listener !== undefined;
  }

  /** Call `f` when this successor becomes the incumbent (its incumbent exited). */
  onIncumbent(f: () => void): void {
    this.#becameIncumbent = f;
  }

  /** Call `f` when a successor connects, says it is ready, or goes (the admin page and `/readyz` follow). */
  onChange(f: () => void): void {
    this.#changed = f;
  }

  /** Our listeners are bound: tell the incumbent it may hand over to us (now and after any reconnect). */
  announceReady(): void {
    this.#ready = true;
    this.#upstream?.write(line({ type: "ready" }));
  }

  /** A successor has said hello and is not ready yet: the kubelet's probe for it may reach us. */
  successorStarting(): boolean {
    for (const s of this.#successors) if (s.data.pid !== 0 && !s.data.ready) return true;
    return false;
  }

  /** A connected successor has said it is ready: we may hand over. */
  successorReady(): boolean {
    for (const s of this.#successors) if (s.data.ready) return true;
    return false;
  }

  /**
   * Another gateway serves this node besides us: a ready successor, or (we are a successor) the incumbent. On
   * SIGTERM we then hand over: our health and admin answers stop at once and our listeners drain.
   */
  peerServes(): boolean {
    return this.#upstream !== undefined || this.successorReady();
  }

  status(): SuccessionStatus {
    const peer = (p: Peer): SuccessionPeer => ({ pid: p.pid, version: p.version, ready: p.ready });
    return {
      role: this.incumbent ? "incumbent" : "successor",
      ...(this.#upstream ? { incumbent: peer(this.#upstream.data) } : {}),
      successors: [...this.#successors].map((s) => peer(s.data)),
    };
  }

  /** Give the socket up (the successor takes it) or leave the incumbent. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#closed = true;
    this.#listener?.stop(true);
    this.#listener = undefined;
    this.#upstream?.end();
    this.#upstream = undefined;
  }

  /** Hold the socket, or follow its holder; after the holder goes, try again (the loop ends as incumbent). */
  async #claim(): Promise<void> {
    while (!this.#closed) {
      if (this.#listen()) return;
      const following = await this.#follow();
      if (following) return;
      // A socket file whose holder died stays behind (an abstract name goes with its holder).
      if (!this.#o.path.startsWith("\0")) rmSync(this.#o.path, { force: true });
      await new Promise((resolve) => setTimeout(resolve, this.#o.retryMs ?? 50));
    }
  }

  /** Take the socket; false when another process holds it. */
  #listen(): boolean {
    const hello = line({ type: "hello", pid: this.#o.pid, version: this.#o.version });
    try {
      this.#listener = this.#o.net.listenUnix<Peer>(this.#o.path, {
        open: (s) => {
          s.data = { pending: "", pid: 0, version: "", ready: false };
          this.#successors.add(s);
          s.write(hello);
          setTimeout(() => {
            if (s.data.pid === 0 && this.#successors.has(s)) s.terminate();
          }, HELLO_TIMEOUT_MS).unref?.();
        },
        data: (s, chunk) => this.#receive(s, chunk, (m) => this.#fromSuccessor(s, m)),
        end: (s) => s.end(),
        close: (s) => {
          if (!this.#successors.delete(s)) return;
          if (s.data.pid) this.#log.info("Successor gone", { pid: s.data.pid, ready: s.data.ready });
          this.#changed?.();
        },
      });
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === "EADDRINUSE") return false;
      throw err;
    }
  }

  /** Connect to the holder; false when it went away before we could (take the socket instead). */
  async #follow(): Promise<boolean> {
    const peer: Peer = { pending: "", pid: 0, version: "", ready: false };
    try {
      await this.#o.net.connectUnix<Peer>(
        this.#o.path,
        {
          open: (s) => {
            this.#upstream = s;
            s.write(line({ type: "hello", pid: this.#o.pid, version: this.#o.version }));
            if (this.#ready) s.write(line({ type: "ready" }));
          },
          data: (s, chunk) => this.#receive(s, chunk, (m) => this.#fromIncumbent(s, m)),
          end: (s) => s.end(),
          close: (s) => {
            if (this.#upstream !== s) return;
            this.#upstream = undefined;
            if (this.#closed) return;
            this.#log.info("Incumbent gone: taking over the node's hand-over socket", { pid: s.data.pid });
            void this.#claim().then(() => {
              if (this.incumbent) {
                this.#log.info("This gateway now holds the node", { socket: printable(this.#o.path) });
                this.#becameIncumbent?.();
              }
            });
          },
        },
        peer,
      );
    } catch {
      return false;
    }
    return true;
  }

  #fromSuccessor(s: TcpSocket<Peer>, m: Record<string, unknown>): void {
    if (m.type === "hello" && typeof m.pid === "number" && typeof m.version === "string") {
      s.data.pid = m.pid;
      s.data.version = m.version;
      this.#log.info("A successor is starting beside this gateway: /readyz answers 503 until it is ready", { pid: m.pid, version: m.version });
    } else if (m.type === "ready" && !s.data.ready) {
      if (s.data.pid === 0) return; // ready before hello: not the protocol
      s.data.ready = true;
      this.#log.info("Successor ready: on SIGTERM this gateway hands the node over", { pid: s.data.pid, version: s.data.version });
    } else return;
    this.#changed?.();
  }

  #fromIncumbent(s: TcpSocket<Peer>, m: Record<string, unknown>): void {
    if (m.type !== "hello" || typeof m.pid !== "number" || typeof m.version !== "string") return;
    s.data.pid = m.pid;
    s.data.version = m.version;
    this.#log.info("Starting beside the node's incumbent gateway: it hands over once we are ready", { pid: m.pid, version: m.version });
  }

  /** Split `chunk` into lines and pass each parsed object on; a peer that does not speak the protocol is cut. */
  #receive(s: TcpSocket<Peer>, chunk: Uint8Array, handle: (m: Record<string, unknown>) => void): void {
    const text = s.data.pending + decoder.decode(chunk);
    const lines = text.split("\n");
    s.data.pending = lines.pop()!;
    try {
      if (s.data.pending.length > MAX_LINE || lines.some((l) => l.length > MAX_LINE)) throw new Error("line too long");
      for (const l of lines) {
        const m: unknown = JSON.parse(l);
        if (typeof m === "object" && m !== null) handle(m as Record<string, unknown>);
      }
    } catch (err) {
      this.#log.warn("Hand-over socket: a peer that does not speak the protocol; closing it", { error: String(err) });
      s.terminate();
    }
  }
}

function line(m: Record<string, unknown>): Uint8Array {
  return encoder.encode(`${JSON.stringify(m)}\n`);
}

/** The socket's name for logs (`@name` for the abstract namespace, as `ss` prints it). */
export function printable(path: string): string {
  return path.startsWith("\0") ? `@${path.slice(1)}` : path;
}
