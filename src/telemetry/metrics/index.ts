/**
 * Prometheus metrics: a small registry (text format 0.0.4, or OpenMetrics when asked), kube-proxy's metrics,
 * per-Service traffic metrics with a series cap and request-latency exemplars (summed over worker processes by
 * `NodeTrafficMetrics`), per-worker series, file descriptors and bind failures by reason, the `/metrics` handler, and
 * the optional OTLP export of the same series (`otlp-export.ts`).
 */
export { CONNECT_DURATION_BUCKETS, exponentialBuckets, linearBuckets, NETWORK_PROGRAMMING_BUCKETS, REQUEST_DURATION_BUCKETS, SYNC_DURATION_BUCKETS } from "./buckets.ts";
export {
  CONTENT_TYPE,
  escapeHelp,
  escapeLabelValue,
  type Exemplar,
  type ExemplarIds,
  ExpositionWriter,
  formatValue,
  labelPairs,
  OPENMETRICS_CONTENT_TYPE,
} from "./exposition.ts";
export { BIND_FAILURE_REASONS, FileDescriptorMetricNames, FileDescriptorMetrics, type FileDescriptorView } from "./file-descriptors.ts";
export { ProcessMetricNames, ProcessMetrics } from "./process.ts";
export { type OtlpMetricsRequest, OtlpWriter, otlpMetricsRequest } from "./otlp.ts";
export { type OtlpMetricsExport, type OtlpMetricsSettings, otlpMetricsSettings, startOtlpMetricsExport } from "./otlp-export.ts";
export { GatewayMetrics, type GatewayMetricsOptions, type ListenerCountsView, type StateFileView } from "./gateway-metrics.ts";
export { acceptsOpenMetrics, metricsHandler } from "./handler.ts";
export { type HealthCountsView, type IpFamily, ipFamiliesOf, KubeProxyMetricNames, KubeProxyMetrics, noLocalEndpoints } from "./kube-proxy.ts";
export { NodeTrafficMetrics } from "./node-traffic.ts";
export { type Collector, Counter, Gauge, Histogram, Registry } from "./registry.ts";
export {
  DEFAULT_MAX_SERIES,
  NOOP_TRAFFIC,
  PROXY_ERROR_REASONS,
  type ProxyErrorReason,
  type ServiceTraffic,
  type TrafficDump,
  TrafficMetricNames,
  TrafficMetrics,
  type TrafficSample,
} from "./traffic.ts";
export { WorkerMetricNames, WorkerMetrics, type WorkerView } from "./worker-metrics.ts";
