/**
 * kube-proxy's healthCheckNodePort answer (pkg/proxy/healthcheck/service_health.go), byte for byte:
 * the body is Go's dedented template, tab-indented, without a trailing newline; 200 only when the
 * Service has local endpoints and the proxy is healthy, else 503. Pure.
 */

/** What one health check reports. */
export interface ServiceHealth {
  readonly namespace: string;
  readonly name: string;
  /** Ready endpoints of the Service on this node. */
  readonly localEndpoints: number;
  /** The proxy's own health (kube-proxy's `serviceProxyHealthy`). */
  readonly serviceProxyHealthy: boolean;
}

/**
 * The body kube-proxy writes. Go prints the names with `%q`; Kubernetes names are DNS labels, for
 * which that equals JSON quoting.
 *
 * @example
 * healthCheckBody({ namespace: "ns", name: "web", localEndpoints: 1, serviceProxyHealthy: true })
 * // '{\n\t"service": {\n\t\t"namespace": "ns",\n\t\t"name": "web"\n\t},\n\t"localEndpoints": 1,\n\t"serviceProxyHealthy": true\n}'
 */
export function healthCheckBody(h: ServiceHealth): string {
  return (
    `{\n\t"service": {\n\t\t"namespace": ${JSON.stringify(h.namespace)},\n\t\t"name": ${JSON.stringify(h.name)}\n\t},\n` +
    `\t"localEndpoints": ${h.localEndpoints},\n\t"serviceProxyHealthy": ${h.serviceProxyHealthy}\n}`
  );
}

/** 200 when there are local endpoints and the proxy is healthy, else 503 (kube-proxy's rule). */
export function healthCheckStatus(h: ServiceHealth): 200 | 503 {
  return h.localEndpoints !== 0 && h.serviceProxyHealthy ? 200 : 503;
}

/** The whole answer, with kube-proxy's headers. */
export function healthCheckResponse(h: ServiceHealth): Response {
  return new Response(healthCheckBody(h), {
    status: healthCheckStatus(h),
    headers: { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" },
  });
}
