/**
 * `/api/events`: the page state as server-sent events. The first event is the state; then, on each
 * change notification and every `tickMs`, the state again when it changed (`event: state`) or a
 * small `event: tick` keep-alive; bursts of changes are coalesced to one event per 100 ms. A stream ends when the client goes away or `signal` aborts; either
 * way its subscription and timer are released.
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { TrafficHistory } from "./history.ts";
import { type PageQuery, type PageSource, type PageState, type TrafficRates, pageState } from "./state.ts";

/** What a page event stream needs. */
export interface PageEventsOptions {
  /** Interval of state checks and keep-alives (default 1000 ms). */
  readonly tickMs?: number | undefined;
  /** Register for "something changed" (e.g. a new snapshot); returns the unsubscribe function. */
  readonly subscribe?: ((onChange: () => void) => () => void) | undefined;
  /** Ends every stream (the admin server is closing). */
  readonly signal?: AbortSignal | undefined;
  readonly rates?: TrafficRates | undefined;
  readonly history?: TrafficHistory | undefined;
  /** Wall clock (ms). */
  readonly now?: (() => number) | undefined;
}

/** The SSE response for `query`. */
export function pageEvents(c: Context, view: PageSource, query: PageQuery, options: PageEventsOptions): Response {
  const tickMs = options.tickMs ?? 1_000;
  const minGapMs = Math.min(100, tickMs);
  const now = options.now ?? Date.now;
  c.header("X-Accel-Buffering", "no");
  return streamSSE(c, async (stream) => {
    let wake = Promise.withResolvers<void>();
    const notify = () => wake.resolve();
    const unsubscribe = options.subscribe?.(notify);
    stream.onAbort(notify);
    options.signal?.addEventListener("abort", notify);
    const ended = () => stream.aborted || stream.closed || options.signal?.aborted === true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const state = (): PageState => pageState(view, query, { now: now(), ...(options.rates ? { rates: options.rates } : {}), ...(options.history ? { history: options.history } : {}) });
      const first = state();
      let last = JSON.stringify({ ...first, at: 0 });
      let id = 0;
      /** Until `ms` pass, a change is announced or the stream ends. */
      const sleep = async (ms: number) => {
        timer = setTimeout(notify, ms);
        await wake.promise;
        clearTimeout(timer);
        wake = Promise.withResolvers<void>();
      };
      await stream.writeSSE({ event: "state", data: JSON.stringify(first), id: String(++id), retry: 1_000 });
      let sentAt = performance.now();
      while (!ended()) {
        await sleep(tickMs);
        // Coalesce bursts of changes (e.g. a relist): at most one event per `minGapMs`.
        for (let gap = minGapMs - (performance.now() - sentAt); gap > 0 && !ended(); gap = minGapMs - (performance.now() - sentAt)) await sleep(gap);
        if (ended()) break;
        const next = state();
        const comparable = JSON.stringify({ ...next, at: 0 });
        if (comparable === last) await stream.writeSSE({ event: "tick", data: JSON.stringify({ at: next.at, version: next.version }), id: String(++id) });
        else {
          last = comparable;
          await stream.writeSSE({ event: "state", data: JSON.stringify(next), id: String(++id) });
        }
        sentAt = performance.now();
      }
    } finally {
      clearTimeout(timer);
      unsubscribe?.();
      options.signal?.removeEventListener("abort", notify);
    }
  });
}
