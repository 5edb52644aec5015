/** What a call needs of its listener's proxy (`index.ts`): kept apart so `call.ts` does not import the proxy. */
import type { Endpoint } from "../../model/types.ts";
import type { RouteRef, Route } from "../../routes/types.ts";
import type { RouteSettings } from "../http/settings.ts";
import type { HttpProxyOptions } from "../http/options.ts";
import type { Call } from "./call.ts";
import type { H2EndpointPool } from "./pool.ts";

export interface H2Host {
  readonly ref: RouteRef;
  readonly options: HttpProxyOptions;
  /** The route's settings (timeouts, circuit breaker, hash key), resolved once per route. */
  settings(route: Route): RouteSettings;
  /** The name of the header a route hashes on, lower-case. */
  hashHeader(settings: RouteSettings): string;
  /** The upstream sessions of `endpoint`. */
  pool(endpoint: Endpoint): H2EndpointPool;
  /** A call ended (answered, failed or cancelled): access log and bookkeeping. */
  callDone(call: Call, status: number, reason: string, seconds: number): void;
}
