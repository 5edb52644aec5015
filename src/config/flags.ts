/**
 * Command-line flags -> Config. Where kube-proxy has a flag for the same thing, kubegate uses its
 * name. Parsing is pure (argv and env in, Config or error out) so it is testable without a process.
 */
import { parseArgs } from "node:util";
import * as v from "valibot";
import { BALANCER_ALGORITHMS } from "../model/annotations.ts";
import { parseCidr } from "../model/net.ts";

/** One flag: its name, type, default and help line. The single source of `--help` and parsing. */
export interface FlagSpec {
  readonly type: "string" | "boolean";
  readonly default?: string | boolean;
  readonly help: string;
  /** The key of this flag in the config file (`--config`), the camelCase of its name; absent: flag only. */
  readonly key?: string;
}

export const flagSpecs = {
  kubeconfig: { key: "kubeconfig", type: "string", help: "Path to a kubeconfig. Default: $KUBECONFIG, ~/.kube/config, then in-cluster." },
  manifests: { key: "manifests", type: "string", help: "Serve the Service/EndpointSlice/Node objects in this YAML/JSON file or directory instead of a cluster (watched for changes)." },
  local: { key: "local", type: "boolean", default: false, help: "Run on a developer's machine beside a local cluster (kind, k3d, minikube): serve every NodePort and LoadBalancer Service on 127.0.0.1, reach pods through the API server when they are not routable (--endpoint-access auto), watch no Node, one process, no hand-over. Flags given explicitly still win." },
  "endpoint-access": { key: "endpointAccess", type: "string", default: "direct", help: "How endpoints are reached: direct (TCP to the pod IP), port-forward (through the API server's pods/portforward over WebSocket, per client connection), or auto (direct where the pod network is routable, else port-forward; decided per endpoint network and logged). Default direct; auto with --local." },
  "lb-port-offset": { key: "lbPortOffset", type: "string", default: "0", help: "Serve LoadBalancer ports below 1024 on port + this (e.g. 8000: port 80 on 8080), for a gateway that may not bind privileged ports. 0: as declared." },
  "hostname-override": { key: "hostnameOverride", type: "string", help: "This node's name (matches Node and EndpointSlice nodeName). Default: the hostname." },
  "nodeport-addresses": { key: "nodePortAddresses", type: "string", default: "", help: "Comma-separated CIDRs; NodePort and LoadBalancer listeners bind only the host addresses inside them. Default: all host addresses." },
  "service-proxy-name": { key: "serviceProxyName", type: "string", default: "kubegate", help: "Serve Services labelled service.kubernetes.io/service-proxy-name=<this>." },
  "all-services": { key: "allServices", type: "boolean", default: false, help: "Serve every NodePort/LoadBalancer Service (for clusters without kube-proxy)." },
  "healthz-bind-address": { key: "healthzBindAddress", type: "string", default: "0.0.0.0:10356", help: "host:port of /healthz, /livez, /readyz (kube-proxy's contract; 10356 to sit beside kube-proxy's 10256)." },
  "metrics-bind-address": { key: "metricsBindAddress", type: "string", default: "127.0.0.1:10349", help: "host:port of the admin API (/api/snapshot) and metrics." },
  "host-addresses": { key: "hostAddresses", type: "string", default: "", help: "Comma-separated host addresses to consider (default: every interface address of this host)." },
  "drain-grace-period": { key: "drainGracePeriod", type: "string", default: "30s", help: "How long removed listeners and shutdown wait for open connections (e.g. 500ms, 30s, 1m)." },
  "connect-timeout": { key: "connectTimeout", type: "string", default: "2s", help: "Upstream connect timeout per attempt." },
  "idle-timeout": { key: "idleTimeout", type: "string", default: "5m", help: "Close TCP connections and idle keep-alive HTTP connections after this long without traffic." },
  "lb-controller": { key: "lbController", type: "boolean", default: false, help: "Write status.loadBalancer.ingress (ipMode: Proxy) for LoadBalancer Services, one writer per cluster through a Lease." },
  "lb-pool": { key: "lbPool", type: "string", default: "", help: "Comma-separated CIDRs or IPs: with --lb-controller, allocate one address per Service from this pool (MetalLB style) instead of writing node addresses (ServiceLB style)." },
  tracing: { key: "tracing", type: "boolean", default: false, help: "OpenTelemetry tracing over OTLP/HTTP (endpoint, headers, sampler from the standard OTEL_* variables). Also on whenever OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_SDK_DISABLED=true turns it off." },
  "tracing-sample-ratio": { key: "tracingSampleRatio", type: "string", default: "", help: "Sample this share (0..1) of new traces, overriding OTEL_TRACES_SAMPLER; incoming sampled traceparents are still followed. Default: from OTEL_* (parentbased_always_on)." },
  "access-log": { key: "accessLog", type: "boolean", default: true, help: "One JSON line per HTTP request and per TCP connection on stdout, with the trace id." },
  "access-log-sample": { key: "accessLogSample", type: "string", default: "1", help: "Log this share (0..1) of successful requests, connections and flows; failures (HTTP 5xx, gateway errors) are always logged." },
  "access-log-file": { key: "accessLogFile", type: "string", default: "", help: "Append the access log to this file instead of stdout; reopened on SIGUSR1 (logrotate)." },
  "lb-claim-unclassed": { key: "lbClaimUnclassed", type: "boolean", default: true, help: "With --lb-controller, also manage LoadBalancer Services without spec.loadBalancerClass (kubegate's class is kubegate.io/lb)." },
  "default-balancer": { key: "defaultBalancer", type: "string", default: "round-robin", help: "Balancing algorithm of Services without a kubegate.io/balancer annotation: round-robin, least-request, random, ring-hash or maglev." },
  "request-header-timeout": { key: "requestHeaderTimeout", type: "string", default: "30s", help: "HTTP: a client must send a whole request head within this (slowloris guard); 408 after." },
  "response-header-timeout": { key: "responseHeaderTimeout", type: "string", default: "60s", help: "HTTP: an upstream must send its response head within this after the request; 504 after." },
  "max-request-duration": { key: "maxRequestDuration", type: "string", default: "0s", help: "HTTP: a whole exchange may last at most this (0s: no limit); 504 (or a cut response) after." },
  "max-connections": { key: "maxConnections", type: "string", default: "0", help: "Max open client connections over all listeners, per data plane process (with --workers N the node admits up to N times this; 0: no limit); more are closed at accept." },
  "max-connections-per-listener": { key: "maxConnectionsPerListener", type: "string", default: "0", help: "Max open client connections per listener, per data plane process (0: no limit)." },
  "max-concurrent-requests": { key: "maxConcurrentRequests", type: "string", default: "0", help: "HTTP circuit breaking: max requests in flight per Service port, per data plane process (0: no limit); 503 with x-kubegate-reason beyond." },
  "max-header-bytes": { key: "maxHeaderBytes", type: "string", default: "65536", help: "HTTP: max request/response head size in bytes; 431 for a larger request head." },
  "max-body-bytes": { key: "maxBodyBytes", type: "string", default: "0", help: "HTTP: max request body size in bytes (0: no limit); 413 beyond." },
  "retry-idempotent": { key: "retryIdempotent", type: "boolean", default: true, help: "HTTP: retry an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE without a streamed body) once on another endpoint when it got no response bytes." },
  "outlier-consecutive-failures": { key: "outlierConsecutiveFailures", type: "string", default: "5", help: "Passive outlier detection: eject an endpoint after this many consecutive connect failures or 5xx (0: off)." },
  "outlier-ejection-time": { key: "outlierEjectionTime", type: "string", default: "30s", help: "Base ejection time; the n-th ejection in a row lasts n times this." },
  "outlier-max-ejection-percent": { key: "outlierMaxEjectionPercent", type: "string", default: "50", help: "At most this percentage of a Service port's endpoints is ejected at once." },
  "trusted-proxies": { key: "trustedProxies", type: "string", default: "", help: "Comma-separated CIDRs of peers whose X-Forwarded-*/Forwarded fields are kept (appended to); from other peers they are replaced." },
  "shutdown-delay": { key: "shutdownDelay", type: "string", default: "0s", help: "On SIGTERM, /healthz and /readyz turn 503 at once and listeners keep accepting for this long (so load balancers notice) before draining." },
  "state-file": { key: "stateFile", type: "string", default: "", help: "Persist the last applied objects here and serve them (marked stale) at start-up while the API server is unreachable." },
  "handover-socket": { key: "handoverSocket", type: "string", default: "auto", help: "Where a second kubegate on this node (the DaemonSet's surge pod) finds this one to take over from it: auto (Linux abstract socket @kubegate-handover-<health port>), @name, a file path, or none (no hand-over: on SIGTERM the node's service goes down with this process). Bun only." },
  "max-endpoints-per-service": { key: "maxEndpointsPerService", type: "string", default: "10000", help: "A Service port with more endpoints than this is reported (Event, admin, logs) and served with the first this-many (0: no limit)." },
  workers: { key: "workers", type: "string", default: "auto", help: "Data plane worker processes: a number, or auto (the CPUs this process may use: affinity and cgroup quota). Each binds every entrypoint with SO_REUSEPORT; one control plane feeds them. Bun only; 1 runs the data plane in the gateway's own process." },
  "metrics-max-series": { key: "metricsMaxSeries", type: "string", default: "20000", help: "At most this many Service ports get per-Service traffic series; past it they are counted in kubegate_metrics_series_dropped_total." },
  "log-level": { key: "logLevel", type: "string", default: "info", help: "debug, info, warn or error." },
  config: { type: "string", help: "A YAML/JSON config file whose keys are the camelCase of these flags (e.g. nodePortAddresses: [127.0.0.0/8]). Flags override it; it overrides the defaults. Reloaded on change: logLevel applies at once, other keys say that a restart is needed." },
  help: { type: "boolean", default: false, help: "Print this help and exit." },
  version: { type: "boolean", default: false, help: "Print the version and exit." },
} as const satisfies Record<string, FlagSpec>;

const Duration = v.pipe(
  v.string(),
  v.regex(/^\d+(\.\d+)?(ms|s|m|h)$/, "Expected a duration like 500ms, 30s, 5m"),
  v.transform((s) => {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(s)!;
    return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
  }),
);

/** A non-negative whole number given as text ("0" usually means no limit). */
const Count = v.pipe(
  v.string(),
  v.regex(/^\d{1,15}$/, "Expected a whole number (0 or more)"),
  v.transform(Number),
);

const Percent = v.pipe(Count, v.maxValue(100, "Expected a percentage from 0 to 100"));

export const BalancerName = v.picklist(BALANCER_ALGORITHMS, `Expected ${BALANCER_ALGORITHMS.join(", ")}`);

const HostPort = v.pipe(
  v.string(),
  v.regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, "Expected host:port, e.g. 127.0.0.1:10349 or [::1]:10349"),
  v.transform((s) => {
    const i = s.lastIndexOf(":");
    const host = s.slice(0, i).replace(/^\[(.*)\]$/, "$1");
    return { host, port: Number(s.slice(i + 1)) };
  }),
  v.check((hp) => hp.port >= 0 && hp.port <= 65535, "Port must be 0..65535"),
);

const CidrList = v.pipe(
  v.string(),
  v.transform((s) => s.split(",").map((x) => x.trim()).filter(Boolean)),
  v.check((list) => list.every((c) => parseCidr(c) !== undefined), "Expected comma-separated CIDRs, e.g. 127.0.0.0/8,::1/128"),
);

const AddressList = v.pipe(
  v.string(),
  v.transform((s) => s.split(",").map((x) => x.trim()).filter(Boolean)),
);

export const Config = v.object({
  kubeconfig: v.optional(v.string()),
  manifests: v.optional(v.string()),
  /** Empty only with `--local` (no Node: see {@link LOCAL_DEFAULTS}). */
  nodeName: v.string(),
  nodePortAddresses: CidrList,
  serviceProxyName: v.pipe(v.string(), v.minLength(1)),
  allServices: v.boolean(),
  healthzBindAddress: HostPort,
  metricsBindAddress: HostPort,
  hostAddresses: AddressList,
  drainGracePeriodMs: Duration,
  connectTimeoutMs: Duration,
  idleTimeoutMs: Duration,
  logLevel: v.picklist(["debug", "info", "warn", "error"]),
  lbController: v.boolean(),
  lbPool: AddressList,
  lbClaimUnclassed: v.boolean(),
  tracing: v.boolean(),
  tracingSampleRatio: v.pipe(
    v.string(),
    v.check((x) => x === "" || (/^\d*\.?\d+$/.test(x) && Number(x) <= 1), "Expected a ratio from 0 to 1"),
    v.transform((x) => (x === "" ? undefined : Number(x))),
  ),
  accessLog: v.boolean(),
  accessLogSample: v.pipe(
    v.string(),
    v.check((x) => /^\d*\.?\d+$/.test(x) && Number(x) <= 1, "Expected a ratio from 0 to 1"),
    v.transform(Number),
  ),
  accessLogFile: v.pipe(v.string(), v.transform((x) => (x === "" ? undefined : x))),
  defaultBalancer: BalancerName,
  requestHeaderTimeoutMs: Duration,
  responseHeaderTimeoutMs: Duration,
  maxRequestDurationMs: Duration,
  maxConnections: Count,
  maxConnectionsPerListener: Count,
  maxConcurrentRequests: Count,
  maxHeaderBytes: v.pipe(Count, v.minValue(1024, "Expected at least 1024 bytes")),
  maxBodyBytes: Count,
  retryIdempotent: v.boolean(),
  outlierConsecutiveFailures: Count,
  outlierEjectionTimeMs: Duration,
  outlierMaxEjectionPercent: Percent,
  trustedProxies: CidrList,
  shutdownDelayMs: Duration,
  stateFile: v.pipe(v.string(), v.transform((x) => (x === "" ? undefined : x))),
  /** `--handover-socket`: "auto", "none", `@name` (abstract) or a path; resolved at start (`control-plane/succession.ts`). */
  handoverSocket: v.pipe(v.string(), v.minLength(1, 'Expected "auto", "none", @name or a path')),
  maxEndpointsPerService: Count,
  metricsMaxSeries: Count,
  /** `--local`: the laptop preset (its defaults are applied in {@link parseFlags}; the model serves off-cluster). */
  local: v.boolean(),
  endpointAccess: v.picklist(["direct", "port-forward", "auto"], 'Expected direct, port-forward or auto'),
  lbPortOffset: v.pipe(Count, v.maxValue(64_512, "Expected an offset from 0 to 64512 (port 1023 + offset must be a port)")),
  /** `--workers`: a number of worker processes, or 0 for auto (resolved at start, see `config/host.ts`). */
  workers: v.pipe(
    v.string(),
    v.check((x) => x === "auto" || (/^\d+$/.test(x) && Number(x) >= 1 && Number(x) <= 1024), 'Expected a number from 1 to 1024 or "auto"'),
    v.transform((x) => (x === "auto" ? 0 : Number(x))),
  ),
  /** The `OTEL_*` environment variables (tracing's endpoint, headers, sampler), read once here. */
  otelEnv: v.optional(v.record(v.string(), v.string()), {}),
});
export type Config = v.InferOutput<typeof Config>;

/** A flag's name. */
export type FlagName = keyof typeof flagSpecs;

/** Values from the config file, keyed by flag name, in the flags' string/boolean form (lists comma-joined). */
export type FlagValues = Readonly<Partial<Record<FlagName, string | boolean>>>;

/** The Config key each value flag sets (the durations carry `Ms`; `hostname-override` sets `nodeName`). */
const configKeyOf = {
  kubeconfig: "kubeconfig", manifests: "manifests", "hostname-override": "nodeName", "nodeport-addresses": "nodePortAddresses",
  "service-proxy-name": "serviceProxyName", "all-services": "allServices", "healthz-bind-address": "healthzBindAddress",
  "metrics-bind-address": "metricsBindAddress", "host-addresses": "hostAddresses", "drain-grace-period": "drainGracePeriodMs",
  "connect-timeout": "connectTimeoutMs", "idle-timeout": "idleTimeoutMs", "log-level": "logLevel", "lb-controller": "lbController",
  "lb-pool": "lbPool", "lb-claim-unclassed": "lbClaimUnclassed", tracing: "tracing", "tracing-sample-ratio": "tracingSampleRatio",
  "access-log": "accessLog", "access-log-sample": "accessLogSample", "access-log-file": "accessLogFile", "default-balancer": "defaultBalancer", "request-header-timeout": "requestHeaderTimeoutMs",
  "response-header-timeout": "responseHeaderTimeoutMs", "max-request-duration": "maxRequestDurationMs", "max-connections": "maxConnections",
  "max-connections-per-listener": "maxConnectionsPerListener", "max-concurrent-requests": "maxConcurrentRequests",
  "max-header-bytes": "maxHeaderBytes", "max-body-bytes": "maxBodyBytes", "retry-idempotent": "retryIdempotent",
  "outlier-consecutive-failures": "outlierConsecutiveFailures", "outlier-ejection-time": "outlierEjectionTimeMs",
  "outlier-max-ejection-percent": "outlierMaxEjectionPercent", "trusted-proxies": "trustedProxies", "shutdown-delay": "shutdownDelayMs",
  "state-file": "stateFile", "handover-socket": "handoverSocket", "max-endpoints-per-service": "maxEndpointsPerService", "metrics-max-series": "metricsMaxSeries", workers: "workers",
  local: "local", "endpoint-access": "endpointAccess", "lb-port-offset": "lbPortOffset",
} as const satisfies Partial<Record<FlagName, keyof Config>>;

/** The flag that sets each Config key. */
export const flagOfConfigKey = Object.fromEntries(Object.entries(configKeyOf).map(([f, k]) => [k, f])) as Record<keyof Config, FlagName>;

export type ParsedArgs =
  | { readonly kind: "help"; readonly text: string }
  | { readonly kind: "version" }
  /** `configFile`: the `--config` path, when given (the caller reads it and parses again with `file`). */
  | { readonly kind: "run"; readonly config: Config; readonly configFile?: string }
  | { readonly kind: "error"; readonly message: string };

/**
 * What `--local` changes (a layer between the config file and the flags' defaults: anything given explicitly wins).
 * A developer's machine is not a Node: no Node is watched (`hostname-override` empty), every NodePort and
 * LoadBalancer Service is served (the local cluster runs its own kube-proxy, so the scoping label means nothing
 * here), on loopback only, in one process, without the DaemonSet's hand-over, and pods are reached through the API
 * server when their network is not routable from here.
 */
export const LOCAL_DEFAULTS: FlagValues = {
  "hostname-override": "",
  "all-services": true,
  "host-addresses": "127.0.0.1",
  "healthz-bind-address": "127.0.0.1:10356",
  "endpoint-access": "auto",
  workers: "1",
  "handover-socket": "none",
};

/** `--help` text, generated from {@link flagSpecs}. */
export function helpText(): string {
  const lines = [
    "Usage: kubegate [flags]          serve the entrypoints of this node",
    "       kubegate check [flags]    validate the config and print what would be served; exit 1 on any error",
    "       kubegate prepare-node     set net.ipv4.tcp_migrate_req=1 for lossless hand-overs (privileged; exit 1 if it cannot)",
    "",
    "Flags:",
  ];
  for (const [name, spec] of Object.entries(flagSpecs) as [string, FlagSpec][]) {
    const def = spec.default === undefined || spec.default === "" ? "" : ` (default ${JSON.stringify(spec.default)})`;
    const flag = spec.type === "boolean" && spec.default === true ? `--[no-]${name}` : `--${name}`;
    const key = spec.key ? `  [config file: ${spec.key}]` : "";
    lines.push(`  ${flag}${spec.type === "string" ? " VALUE" : ""}${key}`, `      ${spec.help}${def}`);
  }
  return lines.join("\n");
}

/** Where the values come from besides argv. */
export interface FlagDefaults {
  /** The default of `--hostname-override`. */
  readonly hostname: string;
  /** Values of the config file (already validated by `parseConfigFile`); flags override them. */
  readonly file?: { readonly path: string; readonly values: FlagValues } | undefined;
  /** The process environment; its `OTEL_*` variables become {@link Config.otelEnv} (default: none). */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined;
}

/** The `OTEL_*` variables of `env` (OpenTelemetry's SDK configuration: endpoint, headers, sampler, service name). */
export function otelEnvOf(env: Readonly<Record<string, string | undefined>> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (k.startsWith("OTEL_") && v !== undefined) out[k] = v;
  return out;
}

/**
 * Parse argv (without the runtime and script) into a Config: flags override `defaults.file`, which
 * overrides the flags' defaults.
 * @example parseFlags(["--manifests", "deploy/demo"], { hostname: "node-a" })
 */
export function parseFlags(argv: readonly string[], defaults: FlagDefaults): ParsedArgs {
  let values: Record<string, string | boolean | undefined>;
  try {
    // Types only (no defaults): a value present here was given on the command line.
    const options = Object.fromEntries(Object.entries(flagSpecs).map(([name, spec]) => [name, { type: spec.type }]));
    const opts = { args: [...argv], options, strict: true, allowPositionals: false, allowNegative: true };
    values = parseArgs(opts as Parameters<typeof parseArgs>[0]).values as typeof values;
  } catch (err) {
    return { kind: "error", message: `${(err as Error).message}\nRun with --help for the list of flags.` };
  }
  const fileValues: FlagValues = defaults.file?.values ?? {};
  const fromFile = (name: FlagName) => values[name] === undefined && fileValues[name] !== undefined;
  const local = (values.local ?? fileValues.local) === true;
  const get = (name: FlagName): string | boolean | undefined =>
    values[name] ?? fileValues[name] ?? (local ? LOCAL_DEFAULTS[name] : undefined) ?? (flagSpecs[name] as FlagSpec).default;
  if (values.help) return { kind: "help", text: helpText() };
  if (values.version) return { kind: "version" };
  const raw: Record<string, string | boolean | undefined> = {};
  for (const [flag, key] of Object.entries(configKeyOf) as [FlagName, keyof Config][]) raw[key] = get(flag);
  raw.nodeName ??= defaults.hostname;
  for (const k of ["kubeconfig", "manifests"] as const) if (raw[k] === undefined) delete raw[k];
  const parsedRaw: Record<string, unknown> = { ...raw, otelEnv: otelEnvOf(defaults.env) };
  const result = v.safeParse(Config, parsedRaw);
  if (!result.success) {
    const message = result.issues
      .map((i) => {
        const key = i.path?.[0]?.key as keyof Config | undefined;
        const flag = key ? flagOfConfigKey[key] : undefined;
        const given = key && key in raw ? raw[key] : i.input;
        if (flag && defaults.file && fromFile(flag)) {
          return `Invalid config "${defaults.file.path}": at "${(flagSpecs[flag] as FlagSpec).key}": ${i.message}, got ${JSON.stringify(given)}`;
        }
        return `Invalid --${flag ?? key ?? "flags"} ${JSON.stringify(given)}: ${i.message}`;
      })
      .join("\n");
    return { kind: "error", message };
  }
  const origin = (flag: FlagName) => (fromFile(flag) ? `${(flagSpecs[flag] as FlagSpec).key} in "${defaults.file?.path}"` : `--${flag}`);
  if (result.output.kubeconfig && result.output.manifests) {
    return { kind: "error", message: `Options ${origin("kubeconfig")} and ${origin("manifests")} are exclusive: pick one source` };
  }
  if (result.output.nodeName === "" && !result.output.local) {
    return { kind: "error", message: `Invalid ${origin("hostname-override")} "": a node name is needed (empty only with --local, which watches no Node)` };
  }
  if (result.output.endpointAccess !== "direct" && result.output.manifests) {
    return { kind: "error", message: `Option ${origin("endpoint-access")} ${result.output.endpointAccess} reaches pods through an API server: it cannot be used with ${origin("manifests")}` };
  }
  if (result.output.lbController && result.output.manifests) {
    return { kind: "error", message: `Option ${origin("lb-controller")} needs a cluster: it cannot be used with ${origin("manifests")}` };
  }
  const configFile = values.config as string | undefined;
  return configFile === undefined ? { kind: "run", config: result.output } : { kind: "run", config: result.output, configFile };
}
