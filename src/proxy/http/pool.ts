/**
 * Upstream connection pool, one per endpoint `address:port`, shared by every HTTP listener of the
 * process (the cluster owns its connection pool, Envoy-style). Idle sockets are kept LIFO, bounded per
 * endpoint, keep reading (so a close by the upstream is noticed at once), and are closed after an idle
 * timeout (the pool's, or the releasing Service's `idleTimeoutMs` policy) by one coarse sweep.
 */
import type { Endpoint } from "../../model/types.ts";
import { dialEndpoint } from "../dial.ts";
import type { TcpHandlers, TcpSocket } from "../../runtime/types.ts";

/** Receives the events of an upstream socket while it carries an exchange. */
export interface UpstreamOwner {
  onUpstreamData(u: Upstream, chunk: Uint8Array): void;
  onUpstreamDrain(u: Upstream): void;
  /** The upstream sent FIN (half-close). */
  onUpstreamEnd(u: Upstream): void;
  /** The socket closed; the owner is detached before this call. */
  onUpstreamClose(u: Upstream, error?: Error): void;
}

/** Pool-wide settings (module level, like the pools). */
export const poolSettings = {
  /** Idle sockets kept per endpoint. */
  maxIdlePerEndpoint: 128,
  /** Idle sockets are closed after this long unused, ms (unless the releasing route sets its own). */
  idleTimeoutMs: 30_000,
};

/** One upstream connection: `socket.data` of the upstream socket. */
export class Upstream {
  sock: TcpSocket<Upstream> | null = null;
  owner: UpstreamOwner | null = null;
  /** Bytes not yet accepted by the socket (backpressure), oldest first. */
  out: Uint8Array[] | null = null;
  paused = false;
  /** Peer sent FIN or the socket closed. */
  eof = false;
  closed = false;
  /** Completed exchanges on this connection (a reused connection may have gone stale). */
  uses = 0;
  /** Epoch ms after which an idle pooled connection is closed. */
  idleUntil = 0;

  constructor(readonly pool: EndpointPool) {}

  /** Write now or queue; returns false when bytes are left queued (caller should stop its source). */
  write(chunk: Uint8Array): boolean {
    if (this.out) {
      this.out.push(chunk);
      return false;
    }
    const n = this.sock!.write(chunk);
    if (n === chunk.length || n < 0) return n >= 0;
    this.out = [n === 0 ? chunk : chunk.subarray(n)];
    return false;
  }

  /** Flush queued bytes after `drain`; true when nothing is left. */
  flush(): boolean {
    const q = this.out;
    if (!q) return true;
    while (q.length) {
      const c = q[0]!;
      const n = this.sock!.write(c);
      if (n < 0) {
        this.out = null;
        return true;
      }
      if (n < c.length) {
        q[0] = c.subarray(n);
        return false;
      }
      q.shift();
    }
    this.out = null;
    return true;
  }

  setReading(on: boolean): void {
    if (on === !this.paused || this.closed) return;
    this.paused = !on;
    if (on) this.sock!.resume();
    else this.sock!.pause();
  }

  /** Close without returning to the pool. */
  destroy(): void {
    this.owner = null;
    this.out = null;
    if (!this.closed) this.sock?.terminate();
  }
}

/** The idle connections to one endpoint. */
export class EndpointPool {
  readonly idle: Upstream[] = [];
  /** The latest endpoint object of this `address:port` (its `targetRef` names the pod for port-forward). */
  constructor(public endpoint: Endpoint) {}

  /** An idle connection, most recently used first, or undefined. */
  take(): Upstream | undefined {
    for (;;) {
      const u = this.idle.pop();
      if (!u) return undefined;
      if (!u.eof && !u.closed) return u;
    }
  }

  /**
   * Return a connection whose exchange completed cleanly; closes it when the pool is full. It is closed
   * after `idleMs` unused (0: the pool's {@link poolSettings.idleTimeoutMs}).
   */
  release(u: Upstream, idleMs = 0): void {
    u.owner = null;
    u.uses++;
    if (u.eof || u.closed || u.out || this.idle.length >= poolSettings.maxIdlePerEndpoint) {
      u.destroy();
      return;
    }
    u.setReading(true);
    const ms = idleMs > 0 ? idleMs : poolSettings.idleTimeoutMs;
    u.idleUntil = Date.now() + ms;
    this.idle.push(u);
    startSweep(ms);
  }

  /** Open a new connection (not pooled until released). */
  async connect(timeoutMs: number): Promise<Upstream> {
    const u = new Upstream(this);
    const sock = await dialEndpoint<Upstream>(this.endpoint, { handlers: upstreamHandlers, data: u, timeoutMs });
    u.sock = sock;
    return u;
  }

  remove(u: Upstream): void {
    const i = this.idle.indexOf(u);
    if (i >= 0) this.idle.splice(i, 1);
  }
}

const pools = new Map<string, EndpointPool>();
const byEndpoint = new WeakMap<Endpoint, EndpointPool>();

/** The pool of an endpoint (by `address:port`, so it survives snapshot changes). */
export function poolFor(ep: Endpoint): EndpointPool {
  let p = byEndpoint.get(ep);
  if (p) return p;
  const key = `${ep.address}:${ep.port}`;
  p = pools.get(key);
  if (!p) {
    p = new EndpointPool(ep);
    pools.set(key, p);
  } else p.endpoint = ep;
  byEndpoint.set(ep, p);
  return p;
}

/** Idle pooled connections across all endpoints (for tests and metrics). */
export function idleUpstreams(): number {
  let n = 0;
  for (const p of pools.values()) n += p.idle.length;
  return n;
}

/** Close every idle pooled connection (tests, shutdown). */
export function closeIdleUpstreams(): void {
  for (const p of pools.values()) {
    for (const u of p.idle.splice(0)) u.destroy();
  }
}

const upstreamHandlers: TcpHandlers<Upstream> = {
  open(s) {
    s.data.sock = s;
    s.setNoDelay(true);
  },
  data(s, chunk) {
    const u = s.data;
    if (u.owner) u.owner.onUpstreamData(u, chunk);
    else {
      // Bytes on an idle connection: the upstream is out of step; never reuse it.
      u.pool.remove(u);
      u.destroy();
    }
  },
  drain(s) {
    const u = s.data;
    if (u.flush() && u.owner) u.owner.onUpstreamDrain(u);
  },
  end(s) {
    const u = s.data;
    u.eof = true;
    if (u.owner) u.owner.onUpstreamEnd(u);
    else {
      u.pool.remove(u);
      s.end();
    }
  },
  close(s, error) {
    const u = s.data;
    u.closed = true;
    u.eof = true;
    u.pool.remove(u);
    const owner = u.owner;
    if (owner) {
      u.owner = null;
      owner.onUpstreamClose(u, error);
    }
  },
};

let sweepTimer: ReturnType<typeof setInterval> | undefined;
let sweepEvery = 0;

/** Run the sweep (again) at a quarter of the shortest idle timeout in use, between 50 ms and 1 s. */
function startSweep(idleMs: number): void {
  const every = Math.max(50, Math.min(1000, Math.floor(idleMs / 4)));
  if (sweepTimer !== undefined) {
    if (every >= sweepEvery) return;
    clearInterval(sweepTimer);
  }
  sweepEvery = every;
  sweepTimer = setInterval(sweep, every);
  (sweepTimer as { unref?: () => void }).unref?.();
}

function sweep(): void {
  const now = Date.now();
  let left = 0;
  for (const p of pools.values()) {
    const idle = p.idle;
    let kept = 0;
    let dead: Upstream[] | null = null;
    for (let i = 0; i < idle.length; i++) {
      const u = idle[i]!;
      if (u.idleUntil <= now) (dead ??= []).push(u);
      else idle[kept++] = u;
    }
    idle.length = kept;
    left += kept;
    // Out of the list first: a close callback removes its connection from `idle`.
    if (dead !== null) for (const u of dead) u.destroy();
  }
  if (left === 0 && sweepTimer !== undefined) {
    clearInterval(sweepTimer);
    sweepTimer = undefined;
  }
}
