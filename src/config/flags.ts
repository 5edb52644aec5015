/**
 * Command-line flags -> Config. Where kube-proxy has a flag for the same thing, kubegate uses its
 * name. Parsing is pure (argv and env in, Config or error out) so it is testable without a process.
 */
import { parseArgs } from "node:util";
import * as v from "valibot";
import { parseCidr } from "../model/net.ts";

/** One flag: its name, type, default and help line. The single source of `--help` and parsing. */
interface FlagSpec {
  readonly type: "string" | "boolean";
  readonly default?: string | boolean;
  readonly help: string;
}

export const flagSpecs = {
  kubeconfig: { type: "string", help: "Path to a kubeconfig. Default: $KUBECONFIG, ~/.kube/config, then in-cluster." },
  manifests: { type: "string", help: "Serve the Service/EndpointSlice/Node objects in this YAML/JSON file or directory instead of a cluster (watched for changes)." },
  "hostname-override": { type: "string", help: "This node's name (matches Node and EndpointSlice nodeName). Default: the hostname." },
  "nodeport-addresses": { type: "string", default: "", help: "Comma-separated CIDRs; NodePort and LoadBalancer listeners bind only the host addresses inside them. Default: all host addresses." },
  "service-proxy-name": { type: "string", default: "kubegate", help: "Serve Services labelled service.kubernetes.io/service-proxy-name=<this>." },
  "all-services": { type: "boolean", default: false, help: "Serve every NodePort/LoadBalancer Service (for clusters without kube-proxy)." },
  "healthz-bind-address": { type: "string", default: "0.0.0.0:10356", help: "host:port of /healthz, /livez, /readyz (kube-proxy's contract; 10356 to sit beside kube-proxy's 10256)." },
  "metrics-bind-address": { type: "string", default: "127.0.0.1:10349", help: "host:port of the admin API (/api/snapshot) and metrics." },
  "host-addresses": { type: "string", default: "", help: "Comma-separated host addresses to consider (default: every interface address of this host)." },
  "drain-grace-period": { type: "string", default: "30s", help: "How long removed listeners and shutdown wait for open connections (e.g. 500ms, 30s, 1m)." },
  "connect-timeout": { type: "string", default: "2s", help: "Upstream connect timeout per attempt." },
  "idle-timeout": { type: "string", default: "5m", help: "Close TCP connections and idle keep-alive HTTP connections after this long without traffic." },
  "lb-controller": { type: "boolean", default: false, help: "Write status.loadBalancer.ingress (ipMode: Proxy) for LoadBalancer Services, one writer per cluster through a Lease." },
  "lb-pool": { type: "string", default: "", help: "Comma-separated CIDRs or IPs: with --lb-controller, allocate one address per Service from this pool (MetalLB style) instead of writing node addresses (ServiceLB style)." },
  "lb-claim-unclassed": { type: "boolean", default: true, help: "With --lb-controller, also manage LoadBalancer Services without spec.loadBalancerClass (kubegate's class is kubegate.io/lb)." },
  "log-level": { type: "string", default: "info", help: "debug, info, warn or error." },
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
  nodeName: v.pipe(v.string(), v.minLength(1)),
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
});
export type Config = v.InferOutput<typeof Config>;

export type ParsedArgs =
  | { readonly kind: "help"; readonly text: string }
  | { readonly kind: "version" }
  | { readonly kind: "run"; readonly config: Config }
  | { readonly kind: "error"; readonly message: string };

/** `--help` text, generated from {@link flagSpecs}. */
export function helpText(): string {
  const lines = ["Usage: kubegate [flags]", "", "Flags:"];
  for (const [name, spec] of Object.entries(flagSpecs) as [string, FlagSpec][]) {
    const def = spec.default === undefined || spec.default === "" ? "" : ` (default ${JSON.stringify(spec.default)})`;
    const flag = spec.type === "boolean" && spec.default === true ? `--[no-]${name}` : `--${name}`;
    lines.push(`  ${flag}${spec.type === "string" ? " VALUE" : ""}`, `      ${spec.help}${def}`);
  }
  return lines.join("\n");
}

/**
 * Parse argv (without the runtime and script) into a Config.
 * @example parseFlags(["--manifests", "deploy/demo"], { hostname: "node-a" })
 */
export function parseFlags(argv: readonly string[], defaults: { readonly hostname: string }): ParsedArgs {
  let values: Record<string, string | boolean | undefined>;
  try {
    const opts = { args: [...argv], options: flagSpecs, strict: true, allowPositionals: false, allowNegative: true };
    values = parseArgs(opts as Parameters<typeof parseArgs>[0]).values as typeof values;
  } catch (err) {
    return { kind: "error", message: `${(err as Error).message}\nRun with --help for the list of flags.` };
  }
  const get = <T extends string | boolean>(name: keyof typeof flagSpecs): T =>
    (values[name] ?? (flagSpecs[name] as FlagSpec).default) as T;
  if (get<boolean>("help")) return { kind: "help", text: helpText() };
  if (get<boolean>("version")) return { kind: "version" };
  const raw = {
    kubeconfig: values.kubeconfig,
    manifests: values.manifests,
    nodeName: (values["hostname-override"] as string | undefined) ?? defaults.hostname,
    nodePortAddresses: get("nodeport-addresses"),
    serviceProxyName: get("service-proxy-name"),
    allServices: get("all-services"),
    healthzBindAddress: get("healthz-bind-address"),
    metricsBindAddress: get("metrics-bind-address"),
    hostAddresses: get("host-addresses"),
    drainGracePeriodMs: get("drain-grace-period"),
    connectTimeoutMs: get("connect-timeout"),
    idleTimeoutMs: get("idle-timeout"),
    logLevel: get("log-level"),
    lbController: get("lb-controller"),
    lbPool: get("lb-pool"),
    lbClaimUnclassed: get("lb-claim-unclassed"),
  };
  for (const k of ["kubeconfig", "manifests"] as const) if (raw[k] === undefined) delete raw[k];
  const result = v.safeParse(Config, raw);
  if (!result.success) {
    const flagOf: Record<string, string> = {
      nodeName: "hostname-override", nodePortAddresses: "nodeport-addresses", serviceProxyName: "service-proxy-name",
      allServices: "all-services", healthzBindAddress: "healthz-bind-address", metricsBindAddress: "metrics-bind-address",
      hostAddresses: "host-addresses", drainGracePeriodMs: "drain-grace-period", connectTimeoutMs: "connect-timeout",
      idleTimeoutMs: "idle-timeout", logLevel: "log-level", lbController: "lb-controller", lbPool: "lb-pool",
      lbClaimUnclassed: "lb-claim-unclassed",
    };
    const message = result.issues
      .map((i) => {
        const key = i.path?.[0]?.key as string | undefined;
        const flag = key ? (flagOf[key] ?? key) : "flags";
        const given = key && key in raw ? raw[key as keyof typeof raw] : i.input;
        return `Invalid --${flag} ${JSON.stringify(given)}: ${i.message}`;
      })
      .join("\n");
    return { kind: "error", message };
  }
  if (result.output.kubeconfig && result.output.manifests) {
    return { kind: "error", message: "Flags --kubeconfig and --manifests are exclusive: pick one source" };
  }
  if (result.output.lbController && result.output.manifests) {
    return { kind: "error", message: "Flag --lb-controller needs a cluster: it cannot be used with --manifests" };
  }
  return { kind: "run", config: result.output };
}
