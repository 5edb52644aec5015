/**
 * Upstream HTTP/2 connections of one endpoint: calls are multiplexed as streams on an open session up to the
 * endpoint's SETTINGS_MAX_CONCURRENT_STREAMS, and another connection is opened when every session is full (one
 * connect at a time per endpoint). A session that received GOAWAY takes no new stream; an idle session closes after
 * the idle timeout; {@link H2EndpointPool.retire} sends GOAWAY to every session (an endpoint removed from the
 * Service: its calls in flight finish, new ones go elsewhere).
 */
import type { Endpoint } from "../../model/types.ts";
import { dialEndpoint } from "../dial.ts";
import type { TcpSocket } from "../../runtime/types.ts";
import { type H2Limits, H2Session } from "./session.ts";

/** At most this many connections per endpoint (each carries up to the endpoint's max concurrent streams). */
const MAX_SESSIONS = 64;

interface Upstream {
  readonly session: H2Session;
  /** Epoch ms of the last time it had no stream left (for the idle timeout); 0 while in use. */
  idleSince: number;
  goingAway: boolean;
}

/**
 * The sessions to one endpoint.
 *
 * @example
 * const pool = new H2EndpointPool(ep, limits);
 * const session = pool.available() ?? (await pool.connect(2_000));
 * const stream = session.request(headers, false, handlers);
 */
export class H2EndpointPool {
  readonly #ups: Upstream[] = [];
  #connecting: Promise<H2Session> | null = null;
  #retired = false;
  #dropped = false;

  constructor(
    readonly endpoint: Endpoint,
    readonly limits: Partial<H2Limits>,
  ) {}

  /** Retired ({@link retire}), or empty and dropped by its owner ({@link drop}): a caller must get another pool. */
  get stale(): boolean {
    return this.#retired || this.#dropped;
  }

  /** The owner forgot this pool (it was empty): calls that still hold it ask the owner again. */
  drop(): void {
    this.#dropped = true;
  }

  /** Open sessions (for the admin view and tests). */
  get size(): number {
    return this.#ups.length;
  }

  /** A session that can take another stream now, or undefined. */
  available(): H2Session | undefined {
    for (const u of this.#ups) {
      if (!u.goingAway && u.session.canRequest) {
        u.idleSince = 0;
        return u.session;
      }
    }
    return undefined;
  }

  /**
   * A session with room for a stream: the one being connected when there is one (it may fill up meanwhile: the
   * caller checks `canRequest` and asks again), else a new connection. Rejects when the connect fails.
   */
  connect(timeoutMs: number): Promise<H2Session> {
    if (this.#connecting) return this.#connecting;
    if (this.#ups.length >= MAX_SESSIONS) return Promise.reject(new Error(`${MAX_SESSIONS} HTTP/2 connections to the endpoint are all busy`));
    const ep = this.endpoint;
    const connecting = dialEndpoint<H2Session | null>(ep, {
      data: null,
      timeoutMs,
      handlers: {
        open: (s) => {
          s.setNoDelay(true);
          const up: Upstream = { session: undefined as unknown as H2Session, idleSince: 0, goingAway: false };
          const session = new H2Session(s as TcpSocket<unknown>, "client", this.limits, {
            goaway: () => {
              up.goingAway = true;
            },
            close: () => {
              const i = this.#ups.indexOf(up);
              if (i !== -1) this.#ups.splice(i, 1);
            },
          });
          (up as { session: H2Session }).session = session;
          s.data = session;
          this.#ups.push(up);
          if (this.#retired) session.goaway();
        },
        data: (s, chunk) => s.data?.receive(chunk),
        drain: (s) => s.data?.socketDrained(),
        end: (s) => s.data?.close(),
        close: (s) => s.data?.close(),
      },
    }).then((s) => s.data!);
    this.#connecting = connecting;
    const done = () => {
      if (this.#connecting === connecting) this.#connecting = null;
    };
    connecting.then(done, done);
    return connecting;
  }

  /** Close sessions without a stream for `idleMs` or more; true when the pool is empty afterwards. */
  sweep(now: number, idleMs: number): boolean {
    for (const u of [...this.#ups]) {
      if (u.session.activeStreams > 0) {
        u.idleSince = 0;
        continue;
      }
      if (u.idleSince === 0) u.idleSince = now;
      else if (now - u.idleSince >= idleMs || u.goingAway) u.session.close();
    }
    return this.#ups.length === 0 && this.#connecting === null;
  }

  /** The endpoint left the Service: GOAWAY on every session (in-flight streams finish, then they close). */
  retire(): void {
    this.#retired = true;
    for (const u of this.#ups) {
      u.goingAway = true;
      u.session.goaway();
    }
  }

  /** Close every session now. */
  closeAll(): void {
    for (const u of [...this.#ups]) u.session.close();
  }
}
