/**
 * What the data plane needs from tracing: a tracer from `@opentelemetry/api` plus what the sampler can
 * ever sample, so requests that cannot be sampled skip span creation entirely (near-zero cost at ratio 0).
 */
import type { Tracer } from "@opentelemetry/api";

/** Tracing as the proxies see it. Built by `setupTracing` (or by tests around an in-memory exporter). */
export interface ProxyTracing {
  readonly tracer: Tracer;
  /** A request without an incoming `traceparent` may be sampled (the root sampler is not off / ratio > 0). */
  readonly sampleRoots: boolean;
  /** A request with an incoming `traceparent` may be sampled (parent-based sampler, or ratio > 0). */
  readonly sampleParents: boolean;
}
