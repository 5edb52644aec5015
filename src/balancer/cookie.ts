/**
 * Cookie affinity for HTTP entrypoints (annotation `kubegate.io/affinity-cookie`): a request whose cookie
 * names a serving endpoint goes there; any other request is balanced as usual and its response sets the
 * cookie for the endpoint that served it.
 *
 * The cookie value is an opaque token: HMAC-SHA256 over `service-port|address:port` with a secret key,
 * truncated to 96 bits (base64url, 16 characters). It does not reveal the endpoint's address, cannot be
 * forged for an endpoint without the key, and maps back to an endpoint only through this table. Processes
 * that must read each other's cookies need the same secret: the workers of one node (the data plane hands one
 * to all of them), and replicas if configured so. With the default per-process random key, another process
 * (a restarted gateway, another worker, another replica) sees the cookie as unknown and re-pins the client.
 */
import type * as NodeCrypto from "node:crypto";
import type { Endpoint, SessionAffinity } from "../model/types.ts";
import { endpointKey } from "./affinity.ts";
import type { Balancer } from "./types.ts";

/** The per-process secret used when none is configured. */
const processSecret: Uint8Array = crypto.getRandomValues(new Uint8Array(32));

/**
 * `node:crypto`'s HMAC, loaded on first use: most data planes have no cookie affinity, and node:crypto brings
 * node:stream with it (~1 MiB per worker process, BENCHMARKS.md "Idle memory per worker").
 */
let createHmac: typeof NodeCrypto.createHmac | undefined;

/** The settings of a cookie affinity. */
export type CookieSettings = NonNullable<SessionAffinity["cookie"]>;

/** The cookie token of an endpoint of Service port `service` (`ns/svc:port`). */
export function cookieToken(secret: Uint8Array | string, service: string, ep: Endpoint): string {
  createHmac ??= (process.getBuiltinModule("node:crypto") as typeof NodeCrypto).createHmac;
  return createHmac("sha256", secret).update(`${service}|${endpointKey(ep)}`).digest().subarray(0, 12).toString("base64url");
}

const encoder = new TextEncoder();

/**
 * The cookie table of one route: token <-> endpoint over the balancer's current endpoints (re-indexed when
 * they change, reusing tokens already computed), and the `Set-Cookie` line per endpoint.
 *
 * @example
 * const cookie = new CookieAffinity({ name: "kg", ttlSeconds: 3600 }, "ns/web:http", balancer);
 * cookie.endpointFor(token); // the endpoint, when it still serves
 * cookie.setCookieLine(ep); // "Set-Cookie: kg=Xy...; Path=/; Max-Age=3600; HttpOnly\r\n" as bytes
 */
export class CookieAffinity {
  /** The cookie name as bytes (compared against request cookies without decoding them). */
  readonly nameBytes: Uint8Array;
  readonly #secret: Uint8Array | string;
  #indexed: readonly Endpoint[] | undefined;
  /** address:port -> token, kept across re-indexing (and handed on to the next route's table). */
  #tokens: Map<string, string>;
  #byToken = new Map<string, Endpoint>();
  #lines = new Map<Endpoint, Uint8Array>();

  /**
   * @param settings cookie name and Max-Age (0: a session cookie).
   * @param service `ns/svc:port`: tokens differ per Service port.
   * @param balancer whose `endpoints` are the ones a cookie may pick.
   * @param secret HMAC key (default: random per process).
   * @param previous the previous route's table of the same entrypoint, to reuse its tokens.
   */
  constructor(
    readonly settings: CookieSettings,
    readonly service: string,
    readonly balancer: Balancer,
    secret: Uint8Array | string = processSecret,
    previous?: CookieAffinity,
  ) {
    this.nameBytes = encoder.encode(settings.name);
    this.#secret = secret;
    this.#tokens = previous !== undefined && previous.service === service && previous.#secret === secret ? previous.#tokens : new Map();
  }

  /**
   * The serving endpoint a cookie value stands for, or undefined (unknown token, endpoint gone, or ejected by
   * outlier detection: the request is then balanced and the response re-pins the client).
   */
  endpointFor(token: string): Endpoint | undefined {
    const eps = this.balancer.endpoints;
    if (eps !== this.#indexed) this.#index(eps);
    const ep = this.#byToken.get(token);
    return ep !== undefined && this.balancer.ejected?.(ep) === true ? undefined : ep;
  }

  /** The token of `ep`. */
  tokenFor(ep: Endpoint): string {
    const key = endpointKey(ep);
    let token = this.#tokens.get(key);
    if (token === undefined) {
      token = cookieToken(this.#secret, this.service, ep);
      this.#tokens.set(key, token);
    }
    return token;
  }

  /** The `Set-Cookie` field line (with CRLF) that pins a client to `ep`. */
  setCookieLine(ep: Endpoint): Uint8Array {
    let line = this.#lines.get(ep);
    if (line === undefined) {
      const { name, ttlSeconds } = this.settings;
      const maxAge = ttlSeconds > 0 ? `; Max-Age=${ttlSeconds}` : "";
      line = encoder.encode(`Set-Cookie: ${name}=${this.tokenFor(ep)}; Path=/${maxAge}; HttpOnly\r\n`);
      this.#lines.set(ep, line);
    }
    return line;
  }

  #index(eps: readonly Endpoint[]): void {
    this.#indexed = eps;
    const byToken = new Map<string, Endpoint>();
    const tokens = new Map<string, string>();
    for (const ep of eps) {
      const key = endpointKey(ep);
      const token = this.#tokens.get(key) ?? cookieToken(this.#secret, this.service, ep);
      tokens.set(key, token);
      byToken.set(token, ep);
    }
    // Only the current endpoints' tokens are kept: the map cannot grow with endpoint churn.
    this.#tokens = tokens;
    this.#byToken = byToken;
    if (this.#lines.size > eps.length * 2 + 16) this.#lines = new Map();
  }
}
